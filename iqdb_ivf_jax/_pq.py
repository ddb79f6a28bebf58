"""Product quantizer: codebooks, encode/decode and ADC (semantics §3.5, §3.6).

Plain PQ on raw vectors: subvector ``j`` covers dims ``[j*d/M, (j+1)*d/M)`` and
has 256 codewords, so a code is ``M`` bytes (faiss ``PQ{M}x8``; ScaNN
``num_blocks``). Codebooks are fitted (:func:`~._train.pq_codebooks.pq_train`) by
squared-L2 :func:`~._train.lloyd.kmeans_fit` on the coarse working set in 128-row
tiles (``tile=128``), subvector ``j`` with key ``fold_in(pq_key, j)``; the seeding
runs per subvector under ``lax.map``, the Lloyd rounds for all ``M`` under one
``jax.vmap``.

**Precision.** Encoding is an exact path: its distance GEMMs run at
``Precision.HIGHEST`` in fixed 16-row tiles, so a vector's code does not depend on
the batch it was encoded in. Inserts use :func:`pq_encode_fast` (128-row tiles,
then the 16-row kernel again for rows with a near tie), which gives the same
codes at less cost (large tiles run XLA's GEMM nearer its peak). ADC tables and
scores are computed elementwise in float32 (no GEMM, so no TF32/bf16 passes on any
backend) with sums in a fixed order, so one query and a vmapped batch give the
same bits; they equal the exact values up to float32 rounding.

See also: ``_train/lloyd.py`` (coarse quantizer), ``_train/pq_codebooks.py``
(codebook training), ``_search/query_major.py`` (ADC scan, refine).
"""

import functools

import jax
import jax.numpy as jnp

from ._assign import gap_bound
from ._metrics import HIGHEST, no_contract, tree_sum
from ._tiles import batch_invariant, min_and_index, recheck_rows, tile_rows, two_smallest

N_CODEWORDS = 256
ADC_KINDS = ("l2", "dot", "l1")

_ENCODE_TILE = 16


def _check_adc_kind(kind: str) -> None:
    if kind not in ADC_KINDS:
        raise ValueError(f"kind must be one of {ADC_KINDS}, got {kind!r}")


def split_subvectors(x: jax.Array, m: int) -> jax.Array:
    """``f32[..., d] -> f32[..., m, d // m]``."""
    d = x.shape[-1]
    if d % m:
        raise ValueError(f"m ({m}) must divide d ({d})")
    return x.reshape(x.shape[:-1] + (m, d // m))


def _code_dists(xt: jax.Array, codebooks: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Squared L2 from each subvector of a tile ``f32[T, d]`` to each codeword,
    ``f32[m, 256, T]`` (expanded form, clamped at 0), and the subvectors'
    squared norms ``f32[m, T]``.

    The ``[m, 256, T]`` layout makes the codeword minimum reduce a non-minor
    axis, which XLA CPU vectorises across the tile's rows (the row-minor layout
    does not).
    """
    m = codebooks.shape[0]
    xs = split_subvectors(xt, m)  # [T, m, dsub]
    dots = jnp.einsum("mcj,tmj->mct", codebooks, xs, precision=HIGHEST)
    x_sq = jnp.sum(xs * xs, axis=2).T  # [m, T]
    c_sq = jnp.sum(codebooks * codebooks, axis=2)  # [m, 256]
    return jnp.maximum(x_sq[:, None, :] - 2.0 * dots + c_sq[:, :, None], 0.0), x_sq


def _encode_tile(xt: jax.Array, codebooks: jax.Array) -> jax.Array:
    """Codes ``u8[T, m]`` of a tile ``f32[T, d]``; ties to the lowest codeword."""
    code = min_and_index(_code_dists(xt, codebooks)[0], axis=1)[1]  # [m, T]
    return jnp.minimum(code, N_CODEWORDS - 1).astype(jnp.uint8).T


@jax.jit
def pq_encode(x: jax.Array, codebooks: jax.Array) -> jax.Array:
    """PQ codes: the nearest codeword (squared L2) of each subvector.

    Args:
        x: ``f32[n, d]`` vectors (or ``f32[d]`` one vector).
        codebooks: ``f32[m, 256, d // m]``.

    Returns:
        ``u8[n, m]`` (``u8[m]`` for one vector); ties go to the lowest codeword.
        Distances use the expanded form at ``Precision.HIGHEST`` in fixed 16-row
        tiles, so a row's code does not depend on the batch (or ``jax.vmap``).

    >>> import jax.numpy as jnp
    >>> cb = jnp.zeros((1, 256, 2)).at[0, 1].set(jnp.array([1.0, 1.0]))
    >>> pq_encode(jnp.array([[0.9, 1.2], [0.0, 0.1]]), cb).tolist()
    [[1], [0]]
    """
    x = jnp.asarray(x, jnp.float32)
    codebooks = jnp.asarray(codebooks, jnp.float32)
    g = batch_invariant(_encode_tile, _ENCODE_TILE)
    if x.ndim == 1:
        return g(x[None, :], codebooks)[0]
    return g(x, codebooks)


_FAST_ENCODE_TILE = 128  # rows per tile of the fast (checked) encoder


def _encode_tile_checked(xt: jax.Array, codebooks: jax.Array, c_sq_max: jax.Array) -> jax.Array:
    """``i32[T, m + 1]``: :func:`_encode_tile`'s codes of a tile ``f32[T, d]``
    computed in a large tile, and last a flag, 1 where some subvector's two best
    codewords are within the rounding bound of each other (so the 16-row kernel
    might pick the other one)."""
    dsub = codebooks.shape[2]
    dist, x_sq = _code_dists(xt, codebooks)
    best_d, code, second = two_smallest(dist, axis=1)  # each [m, T]
    bound = gap_bound(x_sq, c_sq_max[:, None], dsub, "l2")
    unsure = jnp.any(second - best_d <= bound, axis=0)  # [T]
    code = jnp.minimum(code, N_CODEWORDS - 1)
    return jnp.concatenate([code.T, unsure[:, None].astype(jnp.int32)], axis=1)


@jax.jit
def pq_encode_fast(x: jax.Array, codebooks: jax.Array, n_rows: jax.Array | None = None):
    """:func:`pq_encode` of ``f32[n, d]``, bit for bit, cheaper on large batches:
    codes come from 128-row tiles, and only the rows where some subvector's best
    two codewords are within the rounding bound are re-encoded by the
    batch-invariant 16-row kernel. With ``n_rows`` (a traced count; the
    rest is padding) tiles past the first ``n_rows`` rows are skipped and the
    codes of the padding rows are unspecified."""
    x = jnp.asarray(x, jnp.float32)
    codebooks = jnp.asarray(codebooks, jnp.float32)
    n, m = x.shape[0], codebooks.shape[0]
    if n <= 4 * _FAST_ENCODE_TILE:
        return pq_encode(x, codebooks)
    c_sq_max = jnp.max(jnp.sum(codebooks * codebooks, axis=2), axis=1)  # [m]
    out = tile_rows(_encode_tile_checked, x, (codebooks, c_sq_max), _FAST_ENCODE_TILE, n_rows)
    unsure = out[:, m].astype(bool)
    if n_rows is not None:
        unsure &= jnp.arange(n) < n_rows
    codes = out[:, :m].astype(jnp.uint8)
    return recheck_rows(x, codes, unsure, lambda r: pq_encode(r, codebooks))


@jax.jit
def pq_decode(codes: jax.Array, codebooks: jax.Array) -> jax.Array:
    """Reconstruct vectors from PQ codes.

    Args:
        codes: ``u8[n, m]``.
        codebooks: ``f32[m, 256, dsub]``.

    Returns:
        ``f32[n, m * dsub]``: codeword ``codes[i, j]`` of subvector ``j`` in dims
        ``[j*dsub, (j+1)*dsub)``.

    >>> import jax.numpy as jnp
    >>> cb = jnp.arange(2 * 256 * 1, dtype=jnp.float32).reshape(2, 256, 1)
    >>> pq_decode(jnp.array([[3, 4]], jnp.uint8), cb).tolist()
    [[3.0, 260.0]]
    """
    m, _, dsub = codebooks.shape
    return _codewords(codebooks, codes).reshape(codes.shape[:-1] + (m * dsub,))


def _codewords(codebooks: jax.Array, codes: jax.Array) -> jax.Array:
    """``f32[..., M, dsub]``: codeword ``codes[..., j]`` of subvector ``j``, by one
    flat row index per (row, subvector) (a single gather, no index pairs)."""
    m = codebooks.shape[0]
    flat = jnp.asarray(codebooks, jnp.float32).reshape(m * N_CODEWORDS, -1)
    offsets = N_CODEWORDS * jnp.arange(m, dtype=jnp.int32)
    lead = (1,) * (codes.ndim - 1)
    return flat[codes.astype(jnp.int32) + offsets.reshape(lead + (m,))]


@functools.partial(jax.jit, static_argnames=("kind",))
def adc_tables(q: jax.Array, codebooks: jax.Array, *, kind: str) -> jax.Array:
    """Asymmetric-distance lookup table of one query (faiss ``compute_distance_table``).

    Computed elementwise in float32 (no GEMM, so no reduced-precision passes on
    any backend), summing the ``d // m`` terms in index order, so the bits are
    the same for one query and under ``jax.vmap`` (the batch form).

    Args:
        q: ``f32[d]`` the query.
        codebooks: ``f32[m, 256, d // m]``.
        kind: ``"l2"``: ``T[j, c] = ||q_j - C_j[c]||^2``; ``"dot"``:
            ``T[j, c] = q_j . C_j[c]``; ``"l1"``: ``T[j, c] = sum |q_j - C_j[c]|``.

    Returns:
        ``f32[m, 256]``.

    >>> import jax.numpy as jnp
    >>> cb = jnp.zeros((1, 256, 2)).at[0, 1].set(jnp.array([1.0, 1.0]))
    >>> adc_tables(jnp.array([1.0, 3.0]), cb, kind="l2")[0, :2].tolist()
    [10.0, 4.0]
    """
    _check_adc_kind(kind)
    qs = split_subvectors(jnp.asarray(q, jnp.float32), codebooks.shape[0])  # [m, dsub]
    return _entries(qs[:, None, :], jnp.asarray(codebooks, jnp.float32), kind)


def _entries(qs: jax.Array, cs: jax.Array, kind: str) -> jax.Array:
    """Table entries of subvectors ``qs`` against codewords ``cs`` (broadcasting,
    ``dsub`` last): the ``dsub`` terms summed in index order, products kept out
    of FMAs, so an entry's bits do not depend on which entries are computed."""

    def term(i):
        qi, ci = qs[..., i], cs[..., i]
        if kind == "dot":
            return no_contract(qi * ci)
        diff = qi - ci
        return no_contract(diff * diff) if kind == "l2" else jnp.abs(diff)

    return _ordered_sum([term(i) for i in range(cs.shape[-1])])


def lookup_sum_direct(q: jax.Array, codebooks: jax.Array, codes: jax.Array, kind: str):
    """``sum_j adc_tables(q, codebooks, kind)[j, codes[i, j]]`` bit for bit, computing
    only the ``n * M`` entries the codes select instead of the whole ``[M, 256]``
    table: cheaper when a query scores few rows (a re-rank shortlist).

    Args:
        q: ``f32[d]`` one query, or ``f32[n, d]`` one per row (residual L1).
        codebooks: ``f32[M, 256, d // M]``.
        codes: ``u8[n, M]``.
        kind: an ADC kind (see :func:`adc_tables`).

    Returns:
        ``f32[n]``, the same bits as the table lookup sum.
    """
    _check_adc_kind(kind)
    m = codebooks.shape[0]
    qs = split_subvectors(jnp.asarray(q, jnp.float32), m)  # [(n,) m, dsub]
    qs = qs if qs.ndim == 3 else qs[None]
    ent = _entries(qs, _codewords(codebooks, codes), kind)  # [n, m]
    return _ordered_sum([ent[..., j] for j in range(m)])


def _ordered_sum(terms: list) -> jax.Array:
    """``((t0 + t1) + t2) + ...`` as elementwise adds.

    An XLA reduction may vectorise differently for different outer shapes (a
    single query vs a vmapped batch); a chain of elementwise adds gives the same
    float32 bits for every shape, so batch and per-query ADC agree exactly.
    """
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    return total


@functools.partial(jax.jit, static_argnames=("kind",))
def adc_scores(tables: jax.Array, codes: jax.Array, *, kind: str) -> jax.Array:
    """ADC distances of coded vectors to the query of ``tables``; smaller is nearer.

    Args:
        tables: ``f32[m, 256]`` from :func:`adc_tables` with the same ``kind``.
        codes: ``u8[n, m]``.
        kind: ``"l2"``: ``sqrt(sum_j T[j, code_j])`` (clamped at 0), the L2
            distance to the decoded vector; ``"dot"``: ``-sum_j T[j, code_j]``;
            ``"l1"``: ``sum_j T[j, code_j]``.

    Returns:
        ``f32[n]``: the metric on :func:`pq_decode` ``(codes)`` up to float32
        rounding; the ``m`` terms are summed in index order, so a row's bits do
        not depend on ``n`` or on ``jax.vmap`` over ``tables`` (many queries).

    >>> import jax.numpy as jnp
    >>> t = jnp.zeros((2, 256)).at[0, 1].set(9.0).at[1, 2].set(16.0)
    >>> adc_scores(t, jnp.array([[1, 2], [0, 0]], jnp.uint8), kind="l2").tolist()
    [5.0, 0.0]
    """
    _check_adc_kind(kind)
    return adc_from_total(_lookup_sum(tables, codes), kind)


def _lookup_sum(tables: jax.Array, codes: jax.Array) -> jax.Array:
    """``sum_j tables[j, codes[..., j]]`` in index order (``f32[...]``)."""
    idx = codes.astype(jnp.int32)
    return _ordered_sum([tables[j][idx[..., j]] for j in range(tables.shape[0])])


def adc_from_total(total: jax.Array, kind: str) -> jax.Array:
    """The ADC distance from the summed table terms."""
    if kind == "l2":
        return jnp.sqrt(jnp.maximum(total, 0.0))
    if kind == "dot":
        return -total
    return total


@functools.partial(jax.jit, static_argnames=("kind",))
def adc_scores_by_row(
    tables: jax.Array, which: jax.Array, codes: jax.Array, *, kind: str
) -> jax.Array:
    """:func:`adc_scores` with a table per row: row ``i`` uses ``tables[which[i]]``.

    Args:
        tables: ``f32[P, m, 256]`` (e.g. one per probed list, residual PQ).
        which: ``i32[n]`` table of each row.
        codes: ``u8[n, m]``.
    """
    _check_adc_kind(kind)
    idx = codes.astype(jnp.int32)
    total = _ordered_sum([tables[which, j, idx[..., j]] for j in range(tables.shape[1])])
    return adc_from_total(total, kind)


_TERM_TILE = 64  # rows per tile of residual_terms


def residual_terms(
    codes: jax.Array, lists: jax.Array, centroids: jax.Array, codebooks: jax.Array
) -> jax.Array:
    """``f32[n]``: ``|r|^2 + 2 c . r`` of each row's decoded residual ``r`` and the
    centroid ``c = centroids[lists]`` of its list (``i32[n]``): the per-row term
    of faiss's precomputed tables, stored at insert so that residual ADC never
    decodes (see :func:`residual_adc`). Plain sums (cheaper than fixed-tree sums)
    in fixed tiles of ``_TERM_TILE`` rows, so a row's bits do not depend on ``n``.
    """

    def tile(t, cents, cb):
        r = pq_decode(t[0], cb)
        return jnp.sum(r * r, axis=1) + 2.0 * jnp.sum(cents[t[1]] * r, axis=1)

    return tile_rows(tile, (codes, lists), (centroids, codebooks), _TERM_TILE)


def residual_base(q: jax.Array, cents: jax.Array, kind: str) -> jax.Array:
    """Per-list part of residual ADC for the centroids ``f32[P, d]``:
    ``"l2"``: ``|q - c|^2``; ``"dot"``: ``q . c`` (fixed-tree sums)."""
    if kind == "l2":
        diff = cents - q[None, :]
        return tree_sum(diff * diff)
    return tree_sum(cents * q[None, :])


def residual_adc(
    tables: jax.Array, base: jax.Array, codes: jax.Array, terms: jax.Array | None, *, kind: str
) -> jax.Array:
    """ADC distances of residual codes (faiss's precomputed-table form).

    With ``r`` the decoded residual of a row in list ``c``:
    ``|q - c - r|^2 = |q - c|^2 + (|r|^2 + 2 c . r) - 2 q . r`` and
    ``q . (c + r) = q . c + q . r``, where ``q . r`` is the sum of ``M`` lookups
    in ONE ``"dot"`` table of the query, whatever the list.

    Args:
        tables: ``f32[M, 256]``: :func:`adc_tables` of the query, kind ``"dot"``.
        base: ``f32[n]``: :func:`residual_base` of each row's list.
        codes: ``u8[n, M]``.
        terms: ``f32[n]`` :func:`residual_terms` (``"l2"``; unused for ``"dot"``).
        kind: ``"l2"`` (L2 distance, clamped at 0) or ``"dot"`` (``-q . x``).

    Returns:
        ``f32[n]``: the metric on ``c + decode(code)`` up to float32 rounding;
        every step is elementwise (``2 s`` is exact, so contracting into an FMA
        cannot change a bit), so one query and a vmapped batch agree exactly.
    """
    return residual_finish(_lookup_sum(tables, codes), base, terms, kind=kind)


def residual_finish(s: jax.Array, base: jax.Array, terms: jax.Array | None, *, kind: str):
    """:func:`residual_adc` from the summed ``"dot"`` lookups ``s`` (``f32[n]``)."""
    if kind == "l2":
        return jnp.sqrt(jnp.maximum((base + terms) - 2.0 * s, 0.0))
    return -(base + s)
