"""Top-k by ``(distance, seq)``: ties go to the earlier insert, NaN goes last.

``lax.top_k`` breaks ties by position, which depends on the layout. These
kernels carry the insertion sequence number as a second key, so the result
depends only on the distances and the seqs.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .._tiles import kept_top_k

# Sequence numbers must stay below this (about 1.06e9 inserts per index).
SEQ_LIMIT = (1 << 30) - (1 << 24)
# NaN distances rank with secondary key seq + _NAN_OFFSET, after every number.
_NAN_OFFSET = 1 << 30
# Secondary keys are selected with a float32 top_k (XLA CPU's int32 top_k is far
# slower): key + 2**23 bitcast to float32 is a positive normal float whose order is
# the integer order, and INVALID_KEY + 2**23 is exactly +inf.
_FLOAT_SHIFT = 1 << 23
INVALID_KEY = np.int32(0x7F800000 - _FLOAT_SHIFT)


def _as_ordered_float(key: jax.Array) -> jax.Array:
    return lax.bitcast_convert_type(key + _FLOAT_SHIFT, jnp.float32)


_CHUNK = 32
_SORT_MAX = 256  # rows up to this long that keep half or more are sorted whole


def _smallest(v: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """The ``k`` smallest of NaN-free ``f32[n]`` and their positions; positions of
    values equal to the ``k``-th may differ from ``lax.top_k``'s (see
    :func:`smallest_k_rows`). Long inputs take the two-stage selection."""
    n = v.shape[0]
    if n < 4 * k * _CHUNK:
        neg, idx = kept_top_k(-v, k)
        return -neg, idx
    pad = -n % _CHUNK
    vp = jnp.pad(v, (0, pad), constant_values=jnp.inf)
    vals, idx = smallest_k_rows(vp[None, :], k, _CHUNK)
    return vals[0], idx[0]


def smallest_k(
    dist: jax.Array, seq: jax.Array, valid: jax.Array, k: int
) -> tuple[jax.Array, jax.Array]:
    """The ``k`` smallest valid candidates by ``(distance, seq)``, best first.

    Args:
        dist: ``f32[n]`` distances (may hold NaN/inf).
        seq: ``i32[n]`` insertion sequence numbers, ``0 <= seq < SEQ_LIMIT``.
        valid: ``bool[n]`` which candidates exist.
        k: static number of results.

    Returns:
        ``(distances f32[k], positions i32[k])``. Rows past the number of valid
        candidates are padded with ``(+inf, -1)``. NaN distances rank after every
        number (``+inf`` included) and are returned as NaN.
    """
    n = dist.shape[0]
    if k == 0:
        return jnp.zeros((0,), jnp.float32), jnp.zeros((0,), jnp.int32)
    kk = min(k, n)
    nan = jnp.isnan(dist)
    primary = jnp.where(valid & ~nan, dist, jnp.inf)
    secondary = jnp.where(valid, jnp.where(nan, seq + _NAN_OFFSET, seq), INVALID_KEY)
    if n <= _SORT_MAX and 2 * kk >= n:
        # keeping most of a short row: one sort by (primary, secondary) is cheaper
        # than top_k plus the tie pass; the same order, so the same result
        iota = jnp.arange(n, dtype=jnp.int32)
        _, k2, cand = lax.sort((primary, secondary, iota), num_keys=2)
        return _finish(dist, k2[:kk], cand[:kk], k)
    vals, idx_a = _smallest(primary, kk)
    thresh = vals[kk - 1]
    # (positions past n are padding of the two-stage selection: never kept)
    in_a = idx_a < n
    idx_a = jnp.minimum(idx_a, n - 1)

    def with_ties(_):
        # Everything strictly below the k-th value is in idx_a; fill the rest from
        # the candidates equal to it, by secondary key (distinct for valid ones).
        tie_key = jnp.where(primary == thresh, secondary, INVALID_KEY)
        _, idx_b = _smallest(_as_ordered_float(tie_key), kk)
        idx_b_ok = jnp.minimum(idx_b, n - 1)
        keep_b = (idx_b < n) & (primary[idx_b_ok] == thresh) & (secondary[idx_b_ok] != INVALID_KEY)
        keep_a = in_a & (primary[idx_a] < thresh)
        return (
            jnp.concatenate([idx_a, idx_b_ok]).astype(jnp.int32),
            jnp.concatenate([keep_a, keep_b]),
        )

    def unique_kth(_):
        # One candidate holds the k-th value, so idx_a is exactly the k smallest
        # (a finite k-th value: the candidate is valid and not NaN).
        pad = jnp.zeros_like(idx_a)
        return (
            jnp.concatenate([idx_a, pad]).astype(jnp.int32),
            jnp.concatenate([in_a, pad.astype(bool)]),
        )

    unique = (thresh < jnp.inf) & (jnp.sum((primary == thresh).astype(jnp.int32)) == 1)
    cand, keep = lax.cond(unique, unique_kth, with_ties, None)
    k1 = jnp.where(keep, primary[cand], jnp.inf)
    k2 = jnp.where(keep, secondary[cand], INVALID_KEY)
    k1, k2, cand = lax.sort((k1, k2, cand), num_keys=2)
    return _finish(dist, k2[:kk], cand[:kk], k)


def _finish(dist, k2, cand, k: int) -> tuple[jax.Array, jax.Array]:
    """Output of :func:`smallest_k` from the ``kk`` best positions ``cand`` (in
    order) and their secondary keys ``k2``: padded to ``k`` with ``(+inf, -1)``."""
    kk = cand.shape[0]
    real = k2 != INVALID_KEY
    out_d = jnp.where(real, dist[cand], jnp.inf)
    out_i = jnp.where(real, cand, -1)
    if kk < k:
        out_d = jnp.concatenate([out_d, jnp.full((k - kk,), jnp.inf, jnp.float32)])
        out_i = jnp.concatenate([out_i, jnp.full((k - kk,), -1, jnp.int32)])
    return out_d, out_i


def smallest_k_rows(x: jax.Array, k: int, chunk: int = 32) -> tuple[jax.Array, jax.Array]:
    """Per row of ``f32[n, L]``, the ``k`` smallest values and their positions,
    best first: ``lax.top_k(-x, k)`` (negated back), in two cheaper stages.

    XLA CPU's ``top_k`` is costly per element, so rows are cut into
    chunks of ``chunk`` columns, the ``k`` chunks with the smallest minima are
    kept (in column order) and ``top_k`` runs over their ``k * chunk`` values
    only. Every one of the ``k`` smallest values lies in those chunks (a value in
    any other chunk has ``k`` chunk minima at or below it), so the values are
    exactly ``top_k``'s. Positions match too, except that among values equal to
    the ``k``-th one a later column may be returned. NaN-free input.
    """
    n, L = x.shape
    if L % chunk or L < 4 * k * chunk:
        neg, pos = kept_top_k(-x, k)
        return -neg, pos
    c = x.reshape(n, L // chunk, chunk)
    _, ci = kept_top_k(-jnp.min(c, axis=2), k)
    ci = jnp.sort(ci, axis=1)
    g = jnp.take_along_axis(c, ci[:, :, None], axis=1).reshape(n, k * chunk)
    neg, j = kept_top_k(-g, k)
    pos = jnp.take_along_axis(ci, j // chunk, axis=1) * chunk + j % chunk
    return -neg, pos.astype(jnp.int32)
