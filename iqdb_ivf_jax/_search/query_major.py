"""Search kernels over an :class:`IvfState` (query-major path).

One query: rank centroids (:func:`_assign.probe`), list the blocks of the probed
lists in a fixed-size buffer of ``scan_blocks`` block ids, gather and score
them (IVF-Flat: a fast matrix-vector scan, then the best ``k + RESCORE_MARGIN``
re-scored with the exact kernel; IVF-PQ: ADC, then optionally the best
``refine * k`` re-scored exactly), and keep the ``k`` smallest by
``(distance, seq)``. The batch kernel runs the same
per-query body under ``lax.map``, so it equals ``jax.vmap`` of the single-query
kernel exactly.
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax

from .._assign import coarse_kind, probe, probe_one
from .._config import Metric
from .._metrics import RESCORE_MARGIN, distances, fast_distances
from .._pq import (
    adc_from_total,
    adc_scores,
    adc_scores_by_row,
    adc_tables,
    lookup_sum_direct,
    pq_decode,
    residual_adc,
    residual_base,
    residual_finish,
)
from .._state import IvfState
from .topk import smallest_k


def adc_kind(metric: Metric) -> str:
    """ADC table kind for a PQ metric."""
    return {Metric.EUCLIDEAN: "l2", Metric.DOT_PRODUCT: "dot", Metric.MANHATTAN: "l1"}[metric]


def scan_block_ids(
    state: IvfState, probes: jax.Array, scan_blocks: int
) -> tuple[jax.Array, jax.Array]:
    """Block ids of the probed lists, concatenated in probe order.

    Args:
        state: the index state.
        probes: ``i32[P]`` probed lists.
        scan_blocks: static buffer size ``T``.

    Returns:
        ``(blocks i32[T], needed i32)``: ``-1`` pads the tail; ``needed`` is the
        number of blocks the probes own. If ``needed > T`` the tail of the last
        lists was not scanned.
    """
    blk, needed, _ = _scan_block_probes(state, probes, scan_blocks)
    return blk, needed


def _scan_block_probes(state: IvfState, probes: jax.Array, scan_blocks: int):
    """:func:`scan_block_ids` plus the probe position ``i32[T]`` of each block."""
    counts = state.list_nblocks[probes]
    ends = jnp.cumsum(counts)
    starts = ends - counts
    j = jnp.arange(scan_blocks, dtype=jnp.int32)
    p = jnp.minimum(jnp.searchsorted(ends, j, side="right"), probes.shape[0] - 1).astype(jnp.int32)
    col = jnp.clip(j - starts[p], 0, state.table_width - 1)
    blk = state.list_blocks[probes[p], col]
    return jnp.where(j < ends[-1], blk, -1), ends[-1], p


def exact_rows(state: IvfState, q: jax.Array, slots: jax.Array) -> jax.Array:
    """Exact distances ``f32[n]`` from ``q`` to the stored vectors of ``slots``
    ``i32[n]`` (any value for a slot ``< 0``): the re-score's kernel."""
    b, r = jnp.maximum(slots, 0) // state.block_size, jnp.maximum(slots, 0) % state.block_size
    return distances(q, state.vectors[b, r], state.norms[b, r], state.metric)


def search_one(
    state: IvfState,
    q: jax.Array,
    probes: jax.Array,
    mask: jax.Array,
    *,
    k: int,
    scan_blocks: int,
    refine: int = 0,
) -> tuple[jax.Array, jax.Array]:
    """Search one query ``f32[d]`` in the given probed lists.

    Args:
        state: the index state.
        q: ``f32[d]``.
        probes: ``i32[P]`` lists to scan.
        mask: ``bool[n_blocks, B]`` rows allowed (a filter); ANDed with ``valid``.
        k: static number of results.
        scan_blocks: static block buffer size (see :func:`scan_block_ids`).
        refine: static PQ re-rank factor (0 = ADC distances); ignored for Flat.

    Returns:
        ``(distances f32[k], slots i32[k])`` nearest first, padded ``(+inf, -1)``.
    """
    approx, seq, ok, slot_of = scan_candidates(state, q, probes, mask, scan_blocks=scan_blocks)
    if not state.is_pq:
        return rescore(state, q, approx, seq, ok, slot_of, k, k + RESCORE_MARGIN)
    return finish_adc(state, q, approx, seq, ok, slot_of, k=k, refine=refine)


def scan_candidates(
    state: IvfState, q: jax.Array, probes: jax.Array, mask: jax.Array, *, scan_blocks: int
):
    """Score every row of the probed lists: the first half of :func:`search_one`.

    Returns:
        ``(approx f32[T * B], seq i32[T * B], ok bool[T * B], slots i32[T * B])``
        (``T = scan_blocks``): each row's scan score (IVF-Flat: the fast
        distance; IVF-PQ: ADC), seq, whether it is a candidate (live, allowed,
        in a probed list, not a spilled copy of a probed list's vector) and
        slot. Rows with ``ok`` False hold arbitrary scores.
    """
    B = state.block_size
    blk, needed, blk_probe = _scan_block_probes(state, probes, scan_blocks)
    safe = jnp.maximum(blk, 0)
    ok = ((blk >= 0)[:, None] & state.valid[safe] & mask[safe]).reshape(-1)
    if state.spills:  # score each vector once: skip spilled copies of probed lists
        ok = ok & ~spilled_twin(state, probes, safe).reshape(-1)
    seq = state.seqs[safe].reshape(-1)
    slot_of = (safe[:, None] * B + jnp.arange(B, dtype=jnp.int32)[None, :]).reshape(-1)
    n = jnp.minimum(needed, scan_blocks)
    if not state.is_pq:
        return _scan_blocks(state, q, safe, n), seq, ok, slot_of
    return _adc_blocks(state, q, probes, safe, blk_probe, n), seq, ok, slot_of


def candidate_count(state: IvfState, k: int, refine: int) -> int:
    """How many of the best scan scores :func:`search_one` keeps before its
    final step: ``k + RESCORE_MARGIN`` re-scored exactly (IVF-Flat),
    ``refine * k`` re-scored exactly (IVF-PQ with refine), or ``k``, final
    (IVF-PQ by ADC)."""
    if not state.is_pq:
        return k + RESCORE_MARGIN
    return refine * k if refine > 0 else k


def _adc_blocks(state, q, probes, blocks, blk_probe, n) -> jax.Array:
    """ADC distances to the rows of the first ``n`` of ``blocks`` (``f32[T * B]``;
    rows past them are 0 or scores of block 0, and must be masked); block ``t``
    lies in list ``probes[blk_probe[t]]``.

    The tables are built once; then, like :func:`_scan_blocks`, each loop step
    scores ``R`` blocks (~512 rows) and the dynamic trip count skips the padding
    of the static budget (sized for the ``n_probes`` largest lists, so usually
    well above the blocks a query's probes own). Every row's
    score is elementwise (:func:`_pq.adc_scores`, :func:`_pq.residual_adc`), so
    its bits do not depend on the step it falls in.
    """
    B = state.block_size
    kind = adc_kind(state.metric)
    if not state.by_residual:
        tables = adc_tables(q, state.codebooks, kind=kind)

        def score(codes, row_probe, terms):
            return adc_scores(tables, codes, kind=kind)
    elif kind == "l1":  # one L1 table per probed list (q - centroid)
        cents = state.centroids[probes]
        tables = jax.vmap(lambda c: adc_tables(q - c, state.codebooks, kind=kind))(cents)

        def score(codes, row_probe, terms):
            return adc_scores_by_row(tables, row_probe, codes, kind=kind)
    else:  # one "dot" table of the query, plus per-list and per-row terms
        tables = adc_tables(q, state.codebooks, kind="dot")
        base = residual_base(q, state.centroids[probes], kind)

        def score(codes, row_probe, terms):
            return residual_adc(tables, base[row_probe], codes, terms, kind=kind)

    def step(blk, blk_probe):
        codes = state.codes[blk].reshape(blk.shape[0] * B, -1)
        terms = state.pq_terms[blk].reshape(-1) if state.keeps_pq_terms else None
        return score(codes, jnp.repeat(blk_probe, B), terms)

    return _block_steps(B, step, n, blocks, blk_probe)


def spilled_twin(state: IvfState, probes: jax.Array, blocks: jax.Array) -> jax.Array:
    """``bool[T, B]``: rows of ``blocks`` (``i32[T]``) that are spilled copies of
    vectors whose own list is among ``probes`` (``i32[P]``), so already scored."""
    probed = jnp.zeros((state.n_lists,), bool).at[probes].set(True)
    tw = state.twin[blocks]
    return (tw >= 0) & probed[jnp.maximum(tw, 0)]


def adc_rows(state: IvfState, q, probes, row_probe, codes, terms) -> jax.Array:
    """ADC distances ``f32[n]`` of a short list of rows ``u8[n, M]`` (a shortlist
    to re-score): the query-major scan's (:func:`_adc_blocks`) values bit for
    bit, computing only the table entries the rows' codes select
    (:func:`_pq.lookup_sum_direct`). With residual codes row ``i`` lies in list
    ``probes[row_probe[i]]`` and ``terms`` ``f32[n]`` are its stored
    :func:`_pq.residual_terms` (EUCLIDEAN); both are ignored otherwise."""
    kind = adc_kind(state.metric)
    cb = state.codebooks
    if not state.by_residual:
        return adc_from_total(lookup_sum_direct(q, cb, codes, kind), kind)
    cents = state.centroids[probes]  # [P, d]
    if kind == "l1":
        return lookup_sum_direct(q[None, :] - cents[row_probe], cb, codes, kind)
    base = residual_base(q, cents, kind)[row_probe]
    return residual_finish(lookup_sum_direct(q, cb, codes, "dot"), base, terms, kind=kind)


def shortlist_size(state: IvfState, k: int, refine: int) -> int:
    """Candidates a search keeps before its final re-score: ``refine * k`` for
    IVF-PQ with refine, else ``k``."""
    return refine * k if state.is_pq and refine > 0 else k


def decode_rows(state: IvfState, codes: jax.Array, lists: jax.Array) -> jax.Array:
    """PQ-decoded vectors ``f32[n, d]`` of ``codes`` ``u8[n, M]``; with residual
    codes plus the centroid of ``lists`` (``i32[n]``, or one list ``i32[]``)."""
    dec = pq_decode(codes, state.codebooks)
    if not state.by_residual:
        return dec
    cents = state.centroids[lists]
    return dec + (cents[None, :] if cents.ndim == 1 else cents)


def finish_adc(state, q, adc, seq, ok, slots, *, k: int, refine: int):
    """Finish an IVF-PQ search from candidates scored by ADC: the best ``k`` by
    ``(ADC, seq)``, or with ``refine`` the best ``refine * k`` re-scored exactly."""
    if refine == 0:
        d, p = smallest_k(adc, seq, ok, k)
        return d, jnp.where(p >= 0, slots[jnp.maximum(p, 0)], -1)
    return rescore(state, q, adc, seq, ok, slots, k, refine * k)


_SCAN_STEP_ROWS = 512  # rows scored per loop step of the single-query scan


def _scan_blocks(state: IvfState, q: jax.Array, blocks: jax.Array, n: jax.Array) -> jax.Array:
    """Fast distances to the rows of the first ``n`` of ``blocks`` (``f32[T * B]``;
    rows past them are 0 or scores of block 0, and must be masked).

    Each loop step gathers ``R`` blocks (``R * B`` ~ 512 rows) and scores them with
    one matrix-vector product; the dynamic trip count skips the padding of a
    generous static budget. Several blocks per step amortise the loop overhead;
    gathering the whole budget at once would copy every padding block too.
    """
    B = state.block_size

    def step(blk):
        xb = state.vectors[blk].reshape(blk.shape[0] * B, -1)
        return fast_distances(q, xb, state.norms[blk].reshape(-1), state.metric)

    return _block_steps(B, step, n, blocks)


def _block_steps(B: int, step, n: jax.Array, blocks: jax.Array, *per_block) -> jax.Array:
    """``step`` over the first ``n`` of ``blocks`` (``i32[T]``), ``R`` blocks
    (``R * B`` ~ :data:`_SCAN_STEP_ROWS` rows) per loop step, under a dynamic
    trip count: ``f32[T * B]``, rows past the ``n`` blocks 0 or scores of
    block 0 (to be masked). ``step(blk i32[R], *extras)`` returns the scores
    ``f32[R * B]`` of those blocks' rows; ``per_block`` arrays (``[T]``) are
    cut into the same steps and passed as ``extras``."""
    R = max(1, _SCAN_STEP_ROWS // B)
    T = blocks.shape[0]
    Tp = -(-T // R) * R
    steps = [jnp.pad(a, (0, Tp - T)).reshape(Tp // R, R) for a in (blocks, *per_block)]

    def body(i, acc):
        return acc.at[i].set(
            step(*(lax.dynamic_index_in_dim(a, i, 0, keepdims=False) for a in steps))
        )

    init = jnp.zeros((Tp // R, R * B), jnp.float32)
    return lax.fori_loop(0, (n + R - 1) // R, body, init).reshape(-1)[: T * B]


def rescore(state, q, approx, seq, ok, slot_of, k: int, shortlist: int):
    """Top ``shortlist`` by ``(approx, seq)``, re-scored exactly, top ``k`` by ``(exact, seq)``.

    With ``shortlist >= len(approx)`` every candidate is re-scored: the first
    selection would only reorder them, and the second (by ``(exact, seq)``, seqs
    distinct) does not depend on the order, so it is skipped.
    """
    if shortlist >= approx.shape[0]:
        short, short_seq = jnp.where(ok, slot_of, -1), seq
    else:
        _, pos = smallest_k(approx, seq, ok, shortlist)
        short = jnp.where(pos >= 0, slot_of[jnp.maximum(pos, 0)], -1)
        short_seq = seq[jnp.maximum(pos, 0)]
    return select_exact(exact_rows(state, q, short), short_seq, short, k)


def select_exact(exact: jax.Array, seqs: jax.Array, slots: jax.Array, k: int):
    """The ``k`` best candidates ``slots`` ``i32[S]`` (``-1``: none) by
    ``(exact distance, seq)``: ``(distances f32[k], slots i32[k])``, padded
    ``(+inf, -1)``."""
    dist, pos = smallest_k(exact, seqs, slots >= 0, k)
    return dist, jnp.where(pos >= 0, slots[jnp.maximum(pos, 0)], -1)


@functools.partial(jax.jit, static_argnames=("n_probes",))
def probe_batch(state: IvfState, queries: jax.Array, *, n_probes: int) -> jax.Array:
    """Probed lists ``i32[nq, n_probes]`` of each query, best first."""
    return probe(queries, state.centroids, coarse_kind(state.metric), n_probes, state.centroid_sq)


@functools.partial(jax.jit, static_argnames=("k", "scan_blocks", "refine"))
def search_probed(
    state: IvfState,
    queries: jax.Array,
    probes: jax.Array,
    mask: jax.Array,
    *,
    k: int,
    scan_blocks: int,
    refine: int = 0,
) -> tuple[jax.Array, jax.Array]:
    """Batch form of :func:`search_one`: ``f32[nq, d]``, ``i32[nq, P]`` ->
    ``(f32[nq, k], i32[nq, k])``, one query at a time (bounded memory)."""

    def body(args):
        q, p = args
        return search_one(state, q, p, mask, k=k, scan_blocks=scan_blocks, refine=refine)

    return lax.map(body, (queries, probes))


@functools.partial(jax.jit, static_argnames=("k", "n_probes", "scan_blocks", "refine"))
def search_single(
    state: IvfState,
    query: jax.Array,
    mask: jax.Array,
    *,
    k: int,
    n_probes: int,
    scan_blocks: int,
    refine: int = 0,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Probe and search one query ``f32[d]`` in one call -> ``(f32[k], i32[k], probes i32[P])``."""
    # the probed set is probe()'s; only the order (which nothing depends on) may differ
    probes = probe_one(
        query, state.centroids, coarse_kind(state.metric), n_probes, state.centroid_sq
    )
    d, s = search_one(state, query, probes, mask, k=k, scan_blocks=scan_blocks, refine=refine)
    return d, s, probes
