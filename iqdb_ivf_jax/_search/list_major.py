"""List-major batch search: score each probed list against all its queries as one
dense matrix product, then take each query's best candidates with ONE top-k over
everything it scanned.

The query-major path re-reads every probed list once per query (memory bound).
For a large batch many queries probe the same list, so here the (query, list)
pairs are grouped by list and each list is scored against a *tile* of its
queries with one GEMM.

Why this shape (the measurements are in ``benchmarks/NOTES.md``):

* ``lax.top_k`` costs more per element on short rows than on long ones, so a
  top-k per (query, list) pair would cost more than the GEMM. Instead every
  pair writes its scores into its query's row of a score buffer ``[nq, L]``
  (one windowed scatter per size class), and one two-stage selection per query
  (:func:`~.topk.smallest_k_rows`: minima of 32-column chunks, then ``top_k``
  inside the best chunks) takes the shortlist.
* Larger query tiles run the GEMM faster, so the query tile adapts to how many
  queries each class of lists has.
* A list's blocks are gathered (cheap next to the GEMM), and
  :data:`UNIT_GROUP` units are scored as one batched GEMM.

Shapes are bounded and bucketed: lists fall into size classes (their block count
rounded up by :func:`scan_bucket`, at most +25%), each class runs as one jitted
loop over groups of its (list, query-tile) units, the unit arrays and the
buffer width are bucketed the same way, and the loop's trip count is the real
unit count (bucket padding costs no arithmetic). The merge re-scores the best
``k + margin`` with the exact kernel (the query-major path's, so reported
distances are bit-identical to it) and keeps the top ``k`` by ``(distance, seq)``.

GEMM scores (expanded ``|x|^2 - 2 q.x``) differ from exact distances by
rounding only; the ``margin`` extra candidates absorb that. EUCLIDEAN IVF-Flat
selects only ``k + 4`` and proves instead that no unselected row can beat the
``k``-th exact distance (a bound on both roundings; a row it cannot prove is
re-run query-major), since selection cost grows with its size. A query whose
shortlist boundary falls inside a run of equal scores (many duplicate vectors)
is flagged *ambiguous*: the selection there was by position, not insertion
order, so the caller re-runs it on the query-major path. Used for EUCLIDEAN,
COSINE and DOT_PRODUCT in IVF-Flat, and EUCLIDEAN and DOT_PRODUCT in IVF-PQ:
there each unit decodes its list's codes and the GEMM scores the decoded
vectors, which is ADC up to float32 rounding (a dense product instead of ``M``
table lookups per row, much cheaper on XLA CPU). Without refine the merge
re-scores the best ``k + margin`` by ADC, computing only the table entries
their codes select (:func:`~.query_major.adc_rows`: the query-major path's bits,
without building a ``[M, 256]`` table per query), so reported ADC distances are
that path's. With refine the ``refine * k`` shortlist is taken by the GEMM
scores themselves and re-scored exactly (an ADC re-score first would cost more
than the exact one); it can differ from the query-major path's (by ADC) only
where two ADC scores at its boundary are within float32 rounding.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .._config import Metric
from .._layout import BlockLayout, pow2_at_least, scan_bucket
from .._metrics import HIGHEST, RESCORE_MARGIN, UNIT_ROUNDOFF, distances_from_dot, row_norms
from .._state import IvfState
from .plan import buffer_width, pair_columns, plan_units
from .query_major import adc_rows, decode_rows, finish_adc, rescore, shortlist_size
from .topk import smallest_k_rows

GEMM_METRICS = (Metric.EUCLIDEAN, Metric.COSINE, Metric.DOT_PRODUCT)
PQ_GEMM_METRICS = (Metric.EUCLIDEAN, Metric.DOT_PRODUCT)


def list_path_ok(state: IvfState) -> bool:
    """Whether the list-major path serves this index (its metric has a GEMM form)."""
    return state.metric in (PQ_GEMM_METRICS if state.is_pq else GEMM_METRICS)


_F32_MAX = float(np.finfo(np.float32).max)
# units scored by one batched GEMM (cheaper than the same products one after another)
UNIT_GROUP = 4
_SCATTER = lax.ScatterDimensionNumbers(
    update_window_dims=(1,), inserted_window_dims=(0,), scatter_dims_to_operand_dims=(0, 1)
)


def _rank_key(metric: Metric, qx: jax.Array, q_norm: jax.Array, x_norm: jax.Array) -> jax.Array:
    """A per-query monotone stand-in for the distance (EUCLIDEAN drops ``|q|^2`` and the root)."""
    if metric is Metric.EUCLIDEAN:
        return x_norm * x_norm - 2.0 * qx
    return distances_from_dot(metric, qx, q_norm, x_norm)


@functools.partial(jax.jit, static_argnames=("n_blocks",), donate_argnames=("buf",))
def scan_class(
    state: IvfState,
    queries: jax.Array,
    q_norms: jax.Array,
    mask: jax.Array,
    unit_list: jax.Array,
    unit_q: jax.Array,
    unit_off: jax.Array,
    n_units: jax.Array,
    buf: jax.Array,
    probed: jax.Array,
    *,
    n_blocks: int,
) -> jax.Array:
    """Score the units of one size class into the score buffer.

    The loop runs over groups of :data:`UNIT_GROUP` units (one batched GEMM
    each), then over the last ``n_units % UNIT_GROUP`` units one by one, and
    stops at ``n_units``: the padding that buckets the unit arrays' shapes
    costs no arithmetic.

    Args:
        state: index state.
        queries: ``f32[nq_pad, d]`` all queries of the chunk.
        q_norms: ``f32[nq_pad]`` their norms.
        mask: ``bool[n_blocks_total, B]`` allowed rows.
        unit_list: ``i32[U]`` list of each unit.
        unit_q: ``i32[U, Qt]`` query rows of each unit (out of range = padding,
            dropped).
        unit_off: ``i32[U, Qt]`` column in the query's buffer row where this
            list's ``n_blocks * B`` scores start.
        n_units: ``i32[]`` units in use (the rest is padding, skipped).
        buf: ``f32[nq_pad, L]`` score buffer (donated); ``+inf`` = no candidate.
        probed: ``bool[nq_pad, nlist]`` the lists each query probes, when the
            state spills (a spilled copy whose own list the query probes is
            skipped); otherwise unused (any shape).
        n_blocks: static block count of this class (>= every unit's list).

    Returns:
        The buffer with this class's scores written: finite (clamped to the
        float32 range) for allowed rows, ``+inf`` for padding and masked rows.
    """
    B, G = state.block_size, min(UNIT_GROUP, unit_list.shape[0])
    nq, tile = queries.shape[0], unit_q.shape[1]
    rows = n_blocks * B

    def score(start, g, buf):
        """Score units ``start .. start + g`` with one batched GEMM into ``buf``."""
        lst = lax.dynamic_slice_in_dim(unit_list, start, g)
        qrows = lax.dynamic_slice_in_dim(unit_q, start, g)
        if n_blocks <= state.table_width:
            blk = state.list_blocks[lst, :n_blocks]
        else:
            blk = jnp.pad(
                state.list_blocks[lst],
                ((0, 0), (0, n_blocks - state.table_width)),
                constant_values=-1,
            )
        safe = jnp.maximum(blk, 0)  # [g, n_blocks]
        if state.is_pq:  # decode: ADC equals the metric on decoded vectors
            codes = state.codes[safe].reshape(g * rows, -1)
            x = decode_rows(state, codes, jnp.repeat(lst, rows)).reshape(g, rows, -1)
            xn = jnp.sqrt(jnp.sum(x * x, axis=2))
        else:
            x = state.vectors[safe].reshape(g, rows, -1)
            xn = state.norms[safe].reshape(g, rows)
        ok = ((blk >= 0)[:, :, None] & state.valid[safe] & mask[safe]).reshape(g, 1, rows)
        qi = jnp.clip(qrows, 0, nq - 1)
        if state.spills:  # [g, tile, rows]: skip spilled copies of lists the query probes
            tw = state.twin[safe].reshape(g, 1, rows)
            ok = ok & ~((tw >= 0) & probed[qi[:, :, None], jnp.maximum(tw, 0)])
        qx = lax.dot_general(
            queries[qi], x, (((2,), (2,)), ((0,), (0,))), precision=HIGHEST
        )  # [g, tile, rows]
        key = _rank_key(state.metric, qx, q_norms[qi][:, :, None], xn[:, None, :])
        key = jnp.where(jnp.isnan(key), _F32_MAX, jnp.minimum(key, _F32_MAX))
        scores = jnp.where(ok, key, jnp.inf).reshape(g * tile, rows)
        off = lax.dynamic_slice_in_dim(unit_off, start, g)
        idx = jnp.stack([qrows.reshape(-1), off.reshape(-1)], axis=-1)
        return lax.scatter(
            buf,
            idx,
            scores,
            _SCATTER,
            indices_are_sorted=False,
            unique_indices=True,
            mode=lax.GatherScatterMode.FILL_OR_DROP,
        )

    # whole groups, then the last n_units % G units one by one (no padding units)
    full = n_units // G
    buf = lax.fori_loop(0, full, lambda i, b: score(i * G, G, b), buf)
    return lax.fori_loop(full * G, n_units, lambda i, b: score(i, 1, b), buf)


@functools.partial(jax.jit, static_argnames=("rows", "width"))
def empty_buffer(*, rows: int, width: int) -> jax.Array:
    """Score buffer ``f32[rows, width]`` of ``+inf``."""
    return jnp.full((rows, width), jnp.inf, jnp.float32)


@functools.partial(jax.jit, donate_argnums=(0,))
def _refill(buf: jax.Array) -> jax.Array:
    # an update of the input (not jnp.full: an unused argument is not donated)
    return buf.at[:, :].set(jnp.inf)


def score_buffer(rows: int, width: int, scratch: jax.Array | None = None) -> jax.Array:
    """A ``+inf`` score buffer ``f32[rows, width]``, refilled in place from
    ``scratch`` (donated) when that has the shape.

    Reusing matters for large buffers: a fresh one above glibc's mmap threshold
    page-faults as it is first filled, a kept one does not. A ``scratch``
    of another shape is freed first (the caller hands it over), so two
    buffers are never alive at once.
    """
    if scratch is not None and not scratch.is_deleted() and scratch.shape != (rows, width):
        scratch.delete()
    if scratch is None or scratch.is_deleted():
        # a new buffer also passes through _refill (one cheap pass over memory
        # just written), so the first search compiles everything a repeat uses
        scratch = empty_buffer(rows=rows, width=width)
    return _refill(scratch)


_MERGE_BATCH = 128  # queries merged per step (see merge_rescore)

# EUCLIDEAN IVF-Flat re-scores only k + this many, and proves the result (see merge_rescore)
PROVEN_MARGIN = 4


def _proves_top_k(state: IvfState) -> bool:
    """Whether the merge checks its exact top-k against a rounding bound (EUCLIDEAN
    IVF-Flat) instead of trusting a wide margin."""
    return not state.is_pq and state.metric is Metric.EUCLIDEAN


def selection_size(state: IvfState, k: int, refine: int, margin: int = RESCORE_MARGIN) -> int:
    """Scores the merge selects per query: the shortlist plus ``margin`` to re-score
    (IVF-Flat, IVF-PQ without refine; EUCLIDEAN IVF-Flat only
    :data:`PROVEN_MARGIN`, see :func:`merge_rescore`), or, for IVF-PQ with refine,
    the shortlist plus one (only to detect a run of equal scores across its
    boundary)."""
    short = shortlist_size(state, k, refine)
    if state.is_pq and refine > 0:
        return short + 1
    return short + (min(margin, PROVEN_MARGIN) if _proves_top_k(state) else margin)


def _unproven(state: IvfState, key_last, q_norms, d_k) -> jax.Array:
    """``bool[nq]``: rows where a candidate left out of the selection might beat
    the ``k``-th exact distance ``d_k`` (EUCLIDEAN).

    Every row outside the selection has a scan key ``>= key_last``; its true
    squared distance is its key plus ``|q|^2`` up to rounding, and so is a
    selected row's exact distance squared. ``e`` bounds every such rounding
    generously (``(d + 16) u`` per product, 4x over, scaled by the largest
    ``|x|^2 + 2 |q| |x| + |q|^2``), so a row is proven when
    ``key_last + |q|^2 - e > d_k^2 + e``.
    """
    x_max = jnp.max(state.norms)
    scale = x_max * x_max + 2.0 * q_norms * x_max + q_norms * q_norms
    e = 4.0 * (state.dim + 16) * UNIT_ROUNDOFF * scale
    bound = key_last + q_norms * q_norms - e
    return (key_last < jnp.inf) & ~(bound > d_k * d_k + e)


@functools.partial(jax.jit, static_argnames=("k", "kk", "refine"))
def merge_rescore(
    state: IvfState,
    queries: jax.Array,
    buf: jax.Array,
    probes: jax.Array,
    starts: jax.Array,
    q_norms: jax.Array,
    *,
    k: int,
    kk: int,
    refine: int = 0,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Select each query's best ``kk`` scores and finish as the query-major path does.

    IVF-Flat: re-score the ``kk`` exactly, keep ``k``. IVF-PQ without refine:
    re-score them by ADC (:func:`~.query_major.adc_rows`, the query-major path's
    bits), keep the ``k`` best by ``(ADC, seq)``. IVF-PQ with refine: re-score
    the first ``refine * k`` (by GEMM score; ``kk`` is one more, see
    :func:`selection_size`) exactly, keep ``k``.

    Args:
        buf: ``f32[nq, L]`` scores (see :func:`scan_class`).
        probes: ``i32[nq, P]`` probed lists.
        starts: ``i32[nq, P]`` buffer column where each probe's scores start
            (non-decreasing along a row).
        q_norms: ``f32[nq]`` the queries' norms (as :func:`scan_class` takes them).

    Returns:
        ``(f32[nq, k], slots i32[nq, k], ambiguous bool[nq])``, padded
        ``(+inf, -1)``. ``ambiguous`` marks rows whose ``kk``-th score equals
        their shortlist's last (a run of equal scores crosses the boundary),
        and, for EUCLIDEAN IVF-Flat (which selects only ``k +``
        :data:`PROVEN_MARGIN`), rows whose ``k``-th exact distance is not
        provably below every unselected row's (:func:`_unproven`): the
        caller re-runs those query-major.
    """
    B = state.block_size
    short = shortlist_size(state, k, refine)
    key, pos = smallest_k_rows(buf, kk)
    ambiguous = (key[:, kk - 1] < jnp.inf) & (key[:, kk - 1] <= key[:, short - 1])

    def one(q, key_row, pos_row, probe_row, start_row):
        pair = jnp.searchsorted(start_row, pos_row, side="right").astype(jnp.int32) - 1
        r = pos_row - start_row[pair]
        lst = probe_row[pair]
        col = jnp.minimum(r // B, state.table_width - 1)
        blk = state.list_blocks[lst, col]
        ok = (key_row < jnp.inf) & (blk >= 0)
        slot = jnp.where(ok, blk * B + r % B, -1)
        b, rr = jnp.maximum(blk, 0), r % B
        seq = state.seqs[b, rr]
        if not state.is_pq:
            return rescore(state, q, key_row, seq, ok, slot, k, kk)
        if refine > 0:  # the shortlist by the scan's key; all of it re-scored exactly
            return rescore(
                state, q, key_row[:short], seq[:short], ok[:short], slot[:short], k, short
            )
        terms = state.pq_terms[b, rr] if state.keeps_pq_terms else None
        adc = adc_rows(state, q, probe_row, pair, state.codes[b, rr], terms)
        return finish_adc(state, q, adc, seq, ok, slot, k=k, refine=refine)

    # in batches of _MERGE_BATCH queries, whose gathered rows stay in cache
    d, s = lax.map(
        lambda a: one(*a),
        (queries, key, pos, probes, starts),
        batch_size=min(_MERGE_BATCH, queries.shape[0]),
    )
    if _proves_top_k(state) and k > 0:
        ambiguous = ambiguous | _unproven(state, key[:, kk - 1], q_norms, d[:, k - 1])
    return d, s, ambiguous


@jax.jit
def _norms(queries: jax.Array) -> jax.Array:
    return row_norms(queries)


def list_major_search(
    state: IvfState,
    layout: BlockLayout,
    queries: np.ndarray,
    probes: np.ndarray,
    mask: jax.Array,
    *,
    k: int,
    refine: int = 0,
    margin: int = RESCORE_MARGIN,
    scratch: jax.Array | None = None,
    width: int = 0,
):
    """Search a batch list-major (``refine``: the IVF-PQ re-rank factor).

    Args:
        queries: ``f32[nq, d]`` host queries.
        probes: ``i32[nq, P]`` their probed lists.
        scratch: a score buffer returned by an earlier call, reused (donated)
            if its shape fits, else freed (see :func:`score_buffer`).
        width: score-buffer width to use when at least this batch's own
            (:func:`buffer_width`): chunks of one search pass the whole
            search's, so they share one buffer shape.

    Returns:
        ``(D f32[nq, k], slots i64[nq, k], ambiguous bool[nq], scored, buffer)``
        (the first three on the host): ``scored`` counts the (query, row)
        scores computed, padding included; ``ambiguous`` rows must be re-run on
        the query-major path; ``buffer`` is the score buffer, to pass as the
        next call's ``scratch``.
    """
    nq, P = probes.shape
    kk = selection_size(state, k, refine, margin)
    starts, widths = pair_columns(probes, layout)
    width = max(buffer_width(widths), width, kk)
    nq_pad = pow2_at_least(nq)
    q_pad = np.zeros((nq_pad, queries.shape[1]), np.float32)
    q_pad[:nq] = queries
    p_pad = np.zeros((nq_pad, P), np.int32)
    p_pad[:nq] = probes
    s_pad = np.zeros((nq_pad, P), np.int32)
    s_pad[:nq] = starts
    q_dev = jnp.asarray(q_pad)
    qn = _norms(q_dev)
    buf = score_buffer(nq_pad, width, scratch)
    probed = np.zeros((nq_pad, state.n_lists) if state.spills else (1, 1), bool)
    if state.spills:
        probed[np.arange(nq)[:, None], probes] = True
    probed = jnp.asarray(probed)
    scored = 0
    for cu in plan_units(probes, starts, layout):
        U, tile = cu.unit_q.shape
        U_pad = scan_bucket(U)
        ul = np.zeros(U_pad, np.int32)
        ul[:U] = cu.unit_list
        uq = np.full((U_pad, tile), nq_pad, np.int32)  # out of range: dropped
        uq[:U] = np.where(cu.unit_q >= 0, cu.unit_q, nq_pad)
        uo = np.zeros((U_pad, tile), np.int32)
        uo[:U] = np.maximum(cu.unit_off, 0)
        buf = scan_class(
            state, q_dev, qn, mask, ul, uq, uo, np.int32(U), buf, probed, n_blocks=cu.n_blocks
        )
        scored += U * cu.n_blocks * state.block_size * tile
    D, S, amb = merge_rescore(state, q_dev, buf, p_pad, s_pad, qn, k=k, kk=kk, refine=refine)
    return (
        np.asarray(D)[:nq],
        np.asarray(S)[:nq].astype(np.int64),
        np.asarray(amb)[:nq],
        scored,
        buf,
    )
