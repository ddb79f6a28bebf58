"""Coarse criterion per metric (behaviour §4a), for assignment and probing.

EUCLIDEAN, MANHATTAN and HAMMING use squared L2 to the centroids; COSINE uses
cosine distance to unit centroids; DOT_PRODUCT uses ``-<x, c>``. Insertion
(assignment) and search (probing) rank centroids by the same batch-invariant
scores, so a stored vector's own list is its top-1 probe, bit for bit. Ties go to
the lower cluster id.

**Fast assignment.** The batch-invariant scores come from 16-row matrix products,
which run at a fraction of XLA's large-GEMM speed. :func:`assign` therefore ranks
rows first with large tiles, and re-ranks with the batch-invariant kernel only the
rows whose two best scores are closer than a bound on the rounding of both
computations; every other row provably has the same winner. The result equals
``probe(x, centroids, kind, 1)[:, 0]`` bit for bit.
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax

from ._config import Metric
from ._kmeans import _score_tile, coarse_scores
from ._metrics import COSINE_EPS
from ._tiles import _isolated_sq_norms, _map_tiles, _two_smallest, recheck_rows

KIND_L2 = "l2"
KIND_COSINE = "cosine"
KIND_DOT = "dot"


def coarse_kind(metric: Metric) -> str:
    """The k-means / probing criterion used for ``metric``."""
    if metric is Metric.COSINE:
        return KIND_COSINE
    if metric is Metric.DOT_PRODUCT:
        return KIND_DOT
    return KIND_L2


def centroid_scores(
    q: jax.Array, centroids: jax.Array, kind: str, c_sq: jax.Array | None = None
) -> jax.Array:
    """Smaller-is-better scores of queries ``f32[d]`` or ``f32[n, d]`` against the
    centroids: ``f32[nlist]`` or ``f32[n, nlist]``.

    Delegates to :func:`_kmeans.coarse_scores`, which computes every row in a
    fixed 16-row matrix product, so a row's bits do not depend on the batch size
    or on ``jax.vmap`` (XLA CPU rounds products of different sizes differently).
    """
    return coarse_scores(q, centroids, kind=kind, c_sq=c_sq)


def probe(
    q: jax.Array, centroids: jax.Array, kind: str, n_probes: int, c_sq: jax.Array | None = None
) -> jax.Array:
    """The ``n_probes`` best lists, best first: ``i32[n_probes]`` for one query
    ``f32[d]``, ``i32[n, n_probes]`` for ``f32[n, d]``.

    Equal scores go to the lower cluster id (``lax.top_k`` is stable).
    """
    scores = centroid_scores(q, centroids, kind, c_sq)
    _, idx = lax.optimization_barrier(lax.top_k(-scores, n_probes))
    return idx.astype(jnp.int32)


_FAST_TILE = 1024  # rows per large-tile GEMM of the fast ranking
_U = 2.0**-24  # float32 unit roundoff


def _gap_bound(q_sq: jax.Array, c_sq_max: jax.Array, d: int, kind: str) -> jax.Array:
    """Twice the largest difference between two float32 computations of a score.

    Each computation of ``||q||^2 - 2 q.c + ||c||^2`` (or of ``||c||^2 - 2 q.c``,
    which ranks the same) is within
    ``(gamma_d + 2u) * 2 (||q||^2 + ||c||^2)`` of the real value whatever the
    summation order (``gamma_d = d u / (1 - d u)``); ``-q.c`` within a quarter
    of that; a cosine distance within ``gamma_d + 6u``. The bound below has a
    factor of two to spare.
    """
    g = (d + 8) * _U
    if kind == KIND_COSINE:
        return jnp.full(q_sq.shape, 16.0 * g, jnp.float32)
    return 16.0 * g * (q_sq * (1.0 + 1e-3) + c_sq_max)


def _fast_scores(x, centroids, c_sq, kind):
    """Large-tile scores ``f32[T, nlist]`` that rank like the batch-invariant ones."""
    if kind == KIND_L2:  # ||x||^2 is common to the row: rank by ||c||^2 - 2 x.c
        return c_sq[None, :] - 2.0 * jnp.dot(x, centroids.T, precision=lax.Precision.HIGHEST)
    return _score_tile(x, centroids, c_sq, kind)


def _unsure(gap, x, c_sq, c_sq_max, kind):
    """``bool[T]``: rows whose ranking gap ``gap`` is within the rounding bound."""
    q_sq = jnp.sum(x * x, axis=1)
    unsure = gap <= _gap_bound(q_sq, c_sq_max, x.shape[1], kind)
    if kind == KIND_COSINE:  # a norm product near the cut-off may flip 1.0 <-> cosine
        denom = jnp.sqrt(q_sq)[:, None] * jnp.sqrt(c_sq)[None, :]
        near = (denom > COSINE_EPS * 2.0**-8) & (denom < COSINE_EPS * 2.0**8)
        unsure |= jnp.any(near, axis=1)
    return unsure


def _fast_tile(x, centroids, c_sq, c_sq_max, kind):
    """``i32[T, 2]``: (best list, 1 if the runner-up is within the bound)."""
    best_s, best, second = _two_smallest(_fast_scores(x, centroids, c_sq, kind), axis=1)
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
    """The list of each row of ``f32[n, d]``: its top-1 probe, ``i32[n]``.

    Equal, bit for bit, to ``probe(x, centroids, kind, 1)[:, 0]`` (see the module
    docstring): rows are ranked with large GEMM tiles, and the rows whose best two
    scores are within the rounding bound are re-ranked by the batch-invariant
    kernel (gathered into a buffer of ``n // 32`` rows; if more are unsure, every
    row is re-ranked). With ``n_rows`` (a traced count; the rest is padding) the
    large tiles past the first ``n_rows`` rows are skipped and the labels of
    those padding rows are unspecified.
    """
    n = x.shape[0]
    if n <= 4 * _FAST_TILE:
        return probe(x, centroids, kind, 1, c_sq)[:, 0]
    x = jnp.asarray(x, jnp.float32)
    centroids = jnp.asarray(centroids, jnp.float32)
    c_sq = _isolated_sq_norms(centroids) if c_sq is None else c_sq
    nt = -(-n // _FAST_TILE)
    xp = jnp.pad(x, [(0, nt * _FAST_TILE - n), (0, 0)])
    live = None if n_rows is None else (n_rows + _FAST_TILE - 1) // _FAST_TILE
    out = _map_tiles(
        functools.partial(_fast_tile, kind=kind),
        xp.reshape(nt, _FAST_TILE, x.shape[1]),
        (centroids, c_sq, jnp.max(c_sq)),
        live,
    ).reshape(nt * _FAST_TILE, 2)[:n]
    best, unsure = out[:, 0], out[:, 1].astype(bool)
    if n_rows is not None:
        unsure &= jnp.arange(n) < n_rows
    return recheck_rows(x, best, unsure, lambda r: probe(r, centroids, kind, 1, c_sq)[:, 0])


# Batches for assignment/probing are padded to at least this many rows (fewer
# shapes to compile; the scores themselves are batch-invariant).
MIN_ROWS = 64


@functools.partial(jax.jit, static_argnames=("kind", "n_probes"))
def probe_one(
    q: jax.Array, centroids: jax.Array, kind: str, n_probes: int, c_sq: jax.Array | None = None
) -> jax.Array:
    """The probed lists ``i32[n_probes]`` of one query ``f32[d]``: the same *set*
    as :func:`probe`, bit for bit, in the order of a faster ranking.

    The scores come from one matrix-vector product (measured on XLA CPU, 256 x 384
    centroids: ~3x cheaper than :func:`probe`'s 16-row batch-invariant product,
    which a single query pays in full). Only when the ``n_probes``-th and next
    scores are within the rounding bound of :func:`_gap_bound` (so another
    computation might probe another set) does :func:`probe` decide. (Batches gain
    nothing this way on XLA CPU: ``top_k`` over the scores costs more than the
    16-row products.)
    """
    q = jnp.asarray(q, jnp.float32)
    centroids = jnp.asarray(centroids, jnp.float32)
    c_sq = _isolated_sq_norms(centroids) if c_sq is None else c_sq
    x = q[None, :]  # a 1-row product: XLA CPU's matrix-vector kernel
    k1 = min(n_probes + 1, centroids.shape[0])
    neg, idx = lax.optimization_barrier(lax.top_k(-_fast_scores(x, centroids, c_sq, kind)[0], k1))
    if k1 == n_probes:  # every list is probed: no boundary
        return idx.astype(jnp.int32)
    gap = (neg[n_probes - 1] - neg[n_probes])[None]
    unsure = _unsure(gap, x, c_sq, jnp.max(c_sq), kind)[0]
    fast = idx[:n_probes].astype(jnp.int32)
    return lax.cond(unsure, lambda: probe(q, centroids, kind, n_probes, c_sq), lambda: fast)
