"""The coarse criterion of each metric, and the assignment and probing built on it.

**Criterion kinds.** ``"l2"`` (EUCLIDEAN, MANHATTAN, HAMMING) ranks centroids by
squared L2; ``"cosine"`` (COSINE) by cosine distance to unit centroids (spherical
k-means); ``"dot"`` (DOT_PRODUCT) by ``-<x, c>`` (faiss IVF with an inner-product
quantizer). k-means training (:mod:`._train.lloyd`), insertion (assignment) and
search (probing) all use these scores; ties go to the lower cluster id
(semantics §4a).

**Batch invariance.** :func:`coarse_scores` computes every row in a fixed
``SCORE_TILE``-row GEMM, whatever the batch size and also under ``jax.vmap`` (a
custom batching rule keeps the tiling), so a vector's scores have the same bits
at insert time (a batch) and at search time (one query): a stored vector's own
list is its top-1 probe.

**Fast assignment.** Those 16-row products run at a fraction of XLA's large-GEMM
speed, so :func:`assign` ranks rows first with large tiles and re-ranks with the
batch-invariant kernel only the rows whose two best scores are closer than a
bound on the rounding of both computations; every other row provably has the
same winner. The result equals ``probe(x, centroids, kind, 1)[:, 0]`` bit for bit.
"""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from ._config import Metric
from ._metrics import COSINE_EPS, HIGHEST, UNIT_ROUNDOFF
from ._tiles import (
    batch_invariant,
    isolated_sq_norms,
    kept_top_k,
    recheck_rows,
    tile_rows,
    two_smallest,
)

KIND_L2 = "l2"
KIND_COSINE = "cosine"
KIND_DOT = "dot"
KINDS = (KIND_L2, KIND_COSINE, KIND_DOT)
SCORE_TILE = 16  # rows per batch-invariant criterion GEMM


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def score_tile(q: jax.Array, centroids: jax.Array, c_sq: jax.Array, kind: str) -> jax.Array:
    """Criterion scores ``f32[T, k]`` of a tile ``f32[T, d]``; smaller is better.

    ``c_sq`` (``f32[k]``) holds the centroids' squared norms.
    """
    dots = jnp.dot(q, centroids.T, precision=HIGHEST)
    if kind == KIND_DOT:
        return -dots
    q_sq = jnp.sum(q * q, axis=1)
    if kind == KIND_L2:
        return jnp.maximum(q_sq[:, None] - 2.0 * dots + c_sq[None, :], 0.0)
    denom = jnp.sqrt(q_sq)[:, None] * jnp.sqrt(c_sq)[None, :]
    ok = denom > COSINE_EPS
    cos_d = jnp.clip(1.0 - dots / jnp.where(ok, denom, 1.0), 0.0, 2.0)
    return jnp.where(ok, cos_d, 1.0)


@functools.cache
def _score_fn(kind: str) -> Callable:
    return functools.partial(score_tile, kind=kind)


@jax.jit
def centroid_sq_norms(centroids: jax.Array) -> jax.Array:
    """``f32[nlist]`` squared norms of the centroids, as :func:`coarse_scores`
    computes them when not given (keep them with the centroids to skip that)."""
    return isolated_sq_norms(jnp.asarray(centroids, jnp.float32))


@functools.partial(jax.jit, static_argnames=("kind",))
def coarse_scores(
    q: jax.Array, centroids: jax.Array, *, kind: str, c_sq: jax.Array | None = None
) -> jax.Array:
    """Coarse criterion scores (semantics §4a), smaller is better.

    Used for assignment (insert) and probing (search) alike, so a stored vector's
    own list is its top-1 probe. Each row is computed in a fixed 16-row GEMM at
    ``Precision.HIGHEST``, so its float32 bits do not depend on the batch size or
    on ``jax.vmap``.

    Args:
        q: ``f32[d]`` one query, or ``f32[n, d]`` a batch.
        centroids: ``f32[nlist, d]`` the coarse centroids (faiss ``nlist``,
            ScaNN ``num_leaves``).
        kind: ``"l2"``: squared L2 ``||q||^2 - 2 q.c + ||c||^2`` clamped at 0;
            ``"cosine"``: ``1 - q.c / (||q|| ||c||)`` clamped to ``[0, 2]``, 1.0
            when the norm product is ``<= 1.1754944e-38`` (a zero query scores 1.0
            everywhere); ``"dot"``: ``-q.c``.
        c_sq: optional ``f32[nlist]`` centroid squared norms from
            :func:`centroid_sq_norms` (computed here when omitted; passing them
            saves a reduction over the centroids per call).

    Returns:
        ``f32[nlist]`` for one query, ``f32[n, nlist]`` for a batch.

    >>> import jax.numpy as jnp
    >>> coarse_scores(jnp.array([1.0, 0.0]), jnp.eye(2), kind="l2").tolist()
    [0.0, 2.0]

    See also: :func:`assign`.
    """
    check_kind(kind)
    g = batch_invariant(_score_fn(kind), SCORE_TILE)
    q = jnp.asarray(q, jnp.float32)
    centroids = jnp.asarray(centroids, jnp.float32)
    c_sq = isolated_sq_norms(centroids) if c_sq is None else jnp.asarray(c_sq, jnp.float32)
    if q.ndim == 1:
        return g(q[None, :], centroids, c_sq)[0]
    if q.ndim != 2:
        raise ValueError(f"q must be f32[d] or f32[n, d], got shape {q.shape}")
    return g(q, centroids, c_sq)


def coarse_kind(metric: Metric) -> str:
    """The k-means / probing criterion used for ``metric``."""
    if metric is Metric.COSINE:
        return KIND_COSINE
    if metric is Metric.DOT_PRODUCT:
        return KIND_DOT
    return KIND_L2


def probe(
    q: jax.Array, centroids: jax.Array, kind: str, n_probes: int, c_sq: jax.Array | None = None
) -> jax.Array:
    """The ``n_probes`` best lists, best first: ``i32[n_probes]`` for one query
    ``f32[d]``, ``i32[n, n_probes]`` for ``f32[n, d]``.

    Equal scores go to the lower cluster id (``lax.top_k`` is stable).
    """
    scores = coarse_scores(q, centroids, kind=kind, c_sq=c_sq)
    _, idx = kept_top_k(-scores, n_probes)
    return idx.astype(jnp.int32)


_FAST_TILE = 1024  # rows per large-tile GEMM of the fast ranking


def gap_bound(q_sq: jax.Array, c_sq_max: jax.Array, d: int, kind: str) -> jax.Array:
    """Twice the largest difference between two float32 computations of a score.

    Each computation of ``||q||^2 - 2 q.c + ||c||^2`` (or of ``||c||^2 - 2 q.c``,
    which ranks the same) is within
    ``(gamma_d + 2u) * 2 (||q||^2 + ||c||^2)`` of the real value whatever the
    summation order (``gamma_d = d u / (1 - d u)``); ``-q.c`` within a quarter
    of that; a cosine distance within ``gamma_d + 6u``. The bound below has a
    factor of two to spare.
    """
    g = (d + 8) * UNIT_ROUNDOFF
    if kind == KIND_COSINE:
        return jnp.full(q_sq.shape, 16.0 * g, jnp.float32)
    return 16.0 * g * (q_sq * (1.0 + 1e-3) + c_sq_max)


def _fast_scores(x, centroids, c_sq, kind):
    """Large-tile scores ``f32[T, nlist]`` that rank like the batch-invariant ones."""
    if kind == KIND_L2:  # ||x||^2 is common to the row: rank by ||c||^2 - 2 x.c
        return c_sq[None, :] - 2.0 * jnp.dot(x, centroids.T, precision=lax.Precision.HIGHEST)
    return score_tile(x, centroids, c_sq, kind)


def _unsure(gap, x, c_sq, c_sq_max, kind):
    """``bool[T]``: rows whose ranking gap ``gap`` is within the rounding bound."""
    q_sq = jnp.sum(x * x, axis=1)
    unsure = gap <= gap_bound(q_sq, c_sq_max, x.shape[1], kind)
    if kind == KIND_COSINE:  # a norm product near the cut-off may flip 1.0 <-> cosine
        denom = jnp.sqrt(q_sq)[:, None] * jnp.sqrt(c_sq)[None, :]
        near = (denom > COSINE_EPS * 2.0**-8) & (denom < COSINE_EPS * 2.0**8)
        unsure |= jnp.any(near, axis=1)
    return unsure


def _fast_tile(x, centroids, c_sq, c_sq_max, kind):
    """``i32[T, 2]``: (best list, 1 if the runner-up is within the bound)."""
    best_s, best, second = two_smallest(_fast_scores(x, centroids, c_sq, kind), axis=1)
    unsure = _unsure(second - best_s, x, c_sq, c_sq_max, kind)
    return jnp.stack([best, unsure.astype(jnp.int32)], axis=1)


@functools.partial(jax.jit, static_argnames=("kind",))
def assign(
    x: jax.Array,
    centroids: jax.Array,
    kind: str,
    c_sq: jax.Array | None = None,
    n_rows: jax.Array | None = None,
) -> jax.Array:
    """The list of each row of ``f32[n, d]``: its top-1 probe, ``i32[n]`` (one row
    ``f32[d]`` gives ``i32[]``).

    Equal, bit for bit, to ``probe(x, centroids, kind, 1)[:, 0]`` (see the module
    docstring): rows are ranked with large GEMM tiles, and the rows whose best two
    scores are within the rounding bound are re-ranked by the batch-invariant
    kernel (gathered into a buffer of ``n // 32`` rows; if more are unsure, every
    row is re-ranked). With ``n_rows`` (a traced count; the rest is padding) the
    large tiles past the first ``n_rows`` rows are skipped and the labels of
    those padding rows are unspecified.
    """
    if x.ndim == 1:
        return probe(x, centroids, kind, 1, c_sq)[0]
    n = x.shape[0]
    if n <= 4 * _FAST_TILE:
        return probe(x, centroids, kind, 1, c_sq)[:, 0]
    x = jnp.asarray(x, jnp.float32)
    centroids = jnp.asarray(centroids, jnp.float32)
    c_sq = isolated_sq_norms(centroids) if c_sq is None else c_sq
    out = tile_rows(
        functools.partial(_fast_tile, kind=kind),
        x,
        (centroids, c_sq, jnp.max(c_sq)),
        _FAST_TILE,
        n_rows,
    )
    best, unsure = out[:, 0], out[:, 1].astype(bool)
    if n_rows is not None:
        unsure &= jnp.arange(n) < n_rows

    def exact(rows: jax.Array) -> jax.Array:
        # in tiles: one top_k over [n, nlist] scores would hold them all at once
        # (a 1M-row re-check at 4,096 lists asked XLA for 32 GiB)
        return tile_rows(
            lambda t, c, cs: probe(t, c, kind, 1, cs)[:, 0], rows, (centroids, c_sq), _FAST_TILE
        )

    return recheck_rows(x, best, unsure, exact)


# Batches for assignment/probing are padded to at least this many rows (fewer
# shapes to compile; the scores themselves are batch-invariant).
MIN_ROWS = 64


@functools.partial(jax.jit, static_argnames=("kind", "n_probes"))
def probe_one(
    q: jax.Array, centroids: jax.Array, kind: str, n_probes: int, c_sq: jax.Array | None = None
) -> jax.Array:
    """The probed lists ``i32[n_probes]`` of one query ``f32[d]``: the same *set*
    as :func:`probe`, bit for bit, in the order of a faster ranking.

    The scores come from one matrix-vector product, cheaper than :func:`probe`'s
    16-row batch-invariant product, which a single query pays in full. Only when
    the ``n_probes``-th and next scores are within the rounding bound of
    :func:`gap_bound` (so another computation might probe another set) does
    :func:`probe` decide. Batches use :func:`probe` directly.
    """
    q = jnp.asarray(q, jnp.float32)
    centroids = jnp.asarray(centroids, jnp.float32)
    c_sq = isolated_sq_norms(centroids) if c_sq is None else c_sq
    x = q[None, :]  # a 1-row product: XLA CPU's matrix-vector kernel
    k1 = min(n_probes + 1, centroids.shape[0])
    neg, idx = kept_top_k(-_fast_scores(x, centroids, c_sq, kind)[0], k1)
    if k1 == n_probes:  # every list is probed: no boundary
        return idx.astype(jnp.int32)
    gap = (neg[n_probes - 1] - neg[n_probes])[None]
    unsure = _unsure(gap, x, c_sq, jnp.max(c_sq), kind)[0]
    fast = idx[:n_probes].astype(jnp.int32)
    return lax.cond(unsure, lambda: probe(q, centroids, kind, n_probes, c_sq), lambda: fast)
