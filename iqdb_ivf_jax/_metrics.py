"""Distance kernels: one query against many rows, smaller-is-nearer.

Two flavours:

* :func:`distances` is the *exact* kernel. Every reduction over the vector
  dimension is a fixed order of elementwise adds (:func:`tree_sum`), not
  ``jnp.sum`` or a matrix product: XLA CPU picks a different summation order for
  those depending on how many rows are reduced, which changes the last bits. With
  the fixed order, a row's distance is bit-identical whether it is scored alone,
  in a batch or by the brute-force oracle. It reads every element once per
  query, so it only scores short lists of candidates.
* :func:`fast_distances` scans: matrix-vector products (EUCLIDEAN via the
  expanded form, COSINE, DOT_PRODUCT) or ``jnp.sum`` (MANHATTAN, HAMMING). It
  agrees with the exact kernel up to float32 rounding; searches take
  ``k + RESCORE_MARGIN`` candidates by it and re-score them exactly.
"""

import jax
import jax.numpy as jnp
from jax import lax

from ._config import Metric

# Exact paths run their products at this precision (no TF32/bf16 passes off CPU).
HIGHEST = lax.Precision.HIGHEST
# float32 unit roundoff: every rounding bound in the package is a multiple of it.
UNIT_ROUNDOFF = 2.0**-24

# Below this product of norms, cosine distance is defined as 1.0 (f32 MIN_POSITIVE).
COSINE_EPS = 1.1754944e-38


def no_contract(v: jax.Array) -> jax.Array:
    """``v`` unchanged, but behind a select, so a product that produced ``v`` cannot be
    contracted with a following add into an FMA.

    XLA CPU contracts ``a * b + c`` in some fusions and not others (it depends on
    the surrounding program), which changed the last bit of a distance between
    search paths. An ``optimization_barrier`` does not survive to fusion; a select
    does. NaN stays NaN.
    """
    return jnp.where(jnp.isnan(v), jnp.float32(jnp.nan), v)


_LANES = 8  # partial sums tree_sum keeps across the vector dimension
_RUN = 64  # blocks tree_sum adds in one left-to-right run


def _block_sum(blocks: jax.Array) -> jax.Array:
    """``f32[..., n, L] -> f32[..., L]``: runs of up to :data:`_RUN` blocks added
    left to right, then the runs' sums the same way (a short program for any ``n``)."""
    n = blocks.shape[-2]
    if n > _RUN:
        pad = -n % _RUN
        if pad:
            zeros = jnp.zeros(blocks.shape[:-2] + (pad, blocks.shape[-1]), blocks.dtype)
            blocks = jnp.concatenate([blocks, zeros], axis=-2)
        runs = blocks.reshape(blocks.shape[:-2] + ((n + pad) // _RUN, _RUN, blocks.shape[-1]))
        return _block_sum(_block_sum(runs))
    acc = blocks[..., 0, :]
    for i in range(1, n):
        acc = acc + blocks[..., i, :]
    return acc


def tree_sum(v: jax.Array) -> jax.Array:
    """Sum over the last axis in a fixed order: ``f32[..., d] -> f32[...]``.

    The last axis is zero-padded to a multiple of 8 and cut into blocks of 8;
    the blocks are added left to right into 8 partial sums (in runs of 64
    blocks, then the runs' sums, when ``d > 512``), which are then halved
    pairwise (4, 2, 1). Every add is an explicit elementwise add, so the
    result does not depend on the leading shape (unlike ``jnp.sum`` on CPU).
    Adding whole blocks keeps the lanes contiguous, which XLA CPU vectorises (a
    pairwise tree over the whole axis ends in scalar adds).
    """
    v = no_contract(v)
    d = v.shape[-1]
    p = max(-(-d // _LANES), 1) * _LANES
    if p != d:
        v = jnp.concatenate([v, jnp.zeros(v.shape[:-1] + (p - d,), v.dtype)], axis=-1)
    acc = _block_sum(v.reshape(v.shape[:-1] + (p // _LANES, _LANES)))
    while acc.shape[-1] > 1:
        h = acc.shape[-1] // 2
        acc = acc[..., :h] + acc[..., h:]
    return acc[..., 0]


def row_norms(x: jax.Array) -> jax.Array:
    """L2 norms over the last axis: ``f32[..., d] -> f32[...]``."""
    return jnp.sqrt(tree_sum(x * x))


def _cosine_from_dot(dot: jax.Array, q_norm: jax.Array, x_norm: jax.Array) -> jax.Array:
    denom = q_norm * x_norm
    safe = jnp.where(denom > COSINE_EPS, denom, 1.0)
    d = 1.0 - dot / safe
    return jnp.where(denom > COSINE_EPS, jnp.clip(d, 0.0, 2.0), 1.0)


def distances(q: jax.Array, x: jax.Array, x_norm: jax.Array, metric: Metric) -> jax.Array:
    """Exact distances from one query to rows.

    Args:
        q: ``f32[d]`` query.
        x: ``f32[..., d]`` rows.
        x_norm: ``f32[...]`` the rows' :func:`row_norms` (used by COSINE only).
        metric: a :class:`Metric` (static).

    Returns:
        ``f32[...]``: EUCLIDEAN true L2; MANHATTAN L1; DOT_PRODUCT ``-q.x``;
        COSINE ``1 - cos`` in ``[0, 2]`` (1.0 when a norm product is
        ``<= 1.1754944e-38``); HAMMING the number of positions whose float32
        bit patterns differ. Use ``jax.vmap`` for many queries.
    """
    q = jnp.reshape(q, (1,) * (x.ndim - 1) + q.shape)  # explicit broadcast
    if metric is Metric.EUCLIDEAN:
        diff = x - q
        return jnp.sqrt(tree_sum(diff * diff))
    if metric is Metric.MANHATTAN:
        return tree_sum(jnp.abs(x - q))
    if metric is Metric.DOT_PRODUCT:
        return -tree_sum(x * q)
    if metric is Metric.COSINE:
        return _cosine_from_dot(tree_sum(x * q), row_norms(q[(0,) * (x.ndim - 1)]), x_norm)
    if metric is Metric.HAMMING:
        qb = jax.lax.bitcast_convert_type(q, jnp.uint32)
        xb = jax.lax.bitcast_convert_type(x, jnp.uint32)
        return tree_sum((xb != qb).astype(jnp.float32))
    raise AssertionError(metric)


# Extra candidates re-scored exactly beyond k (absorbs fast-kernel rounding).
RESCORE_MARGIN = 16


def distances_from_dot(
    metric: Metric, qx: jax.Array, q_norm: jax.Array, x_norm: jax.Array
) -> jax.Array:
    """EUCLIDEAN / COSINE / DOT_PRODUCT distances from inner products (broadcasting)."""
    if metric is Metric.DOT_PRODUCT:
        return -qx
    if metric is Metric.EUCLIDEAN:
        return jnp.sqrt(jnp.maximum(q_norm * q_norm + x_norm * x_norm - 2.0 * qx, 0.0))
    return _cosine_from_dot(qx, q_norm, x_norm)


def fast_distances(q: jax.Array, x: jax.Array, x_norm: jax.Array, metric: Metric) -> jax.Array:
    """Scan-speed distances ``f32[n]`` from one query ``f32[d]`` to rows ``f32[n, d]``.

    Equal to :func:`distances` up to float32 rounding (HIGHEST precision).
    The product is written ``q[None] . x^T`` (a 1 x n GEMM over ``x``'s rows),
    not ``x . q``: XLA CPU runs that form faster.
    """
    if metric in (Metric.EUCLIDEAN, Metric.COSINE, Metric.DOT_PRODUCT):
        qx = jnp.dot(q[None, :], x.T, precision=jax.lax.Precision.HIGHEST)[0]
        return distances_from_dot(metric, qx, row_norms(q), x_norm)
    qb = q[None, :]
    if metric is Metric.MANHATTAN:
        return jnp.sum(jnp.abs(x - qb), axis=-1)
    xb = jax.lax.bitcast_convert_type(x, jnp.uint32)
    qu = jax.lax.bitcast_convert_type(qb, jnp.uint32)
    return jnp.sum((xb != qu).astype(jnp.float32), axis=-1)


def pairwise(queries: jax.Array, x: jax.Array, metric: Metric) -> jax.Array:
    """Brute-force distance matrix ``f32[nq, n]`` (the exact oracle's kernel)."""
    norms = row_norms(x)
    return jax.vmap(lambda q: distances(q, x, norms, metric))(queries)


def normalize_rows(x: jax.Array) -> jax.Array:
    """Unit rows over the last axis; zero rows stay zero."""
    norm = jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True))
    return jnp.where(norm > 0.0, x / jnp.where(norm > 0.0, norm, 1.0), 0.0)
