"""Top-k by ``(distance, seq)``: ties go to the earlier insert, NaN goes last.

``lax.top_k`` breaks ties by position, which depends on the layout. These
kernels carry the insertion sequence number as a second key, so the result
depends only on the distances and the seqs.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# Sequence numbers must stay below this; NaN distances rank as seq + SEQ_LIMIT.
SEQ_LIMIT = 1 << 30
# Secondary key of an invalid (empty, deleted or filtered-out) candidate.
INVALID_KEY = np.int32(2**31 - 1)


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
    secondary = jnp.where(valid, jnp.where(nan, seq + SEQ_LIMIT, seq), INVALID_KEY)
    neg, idx_a = lax.top_k(-primary, kk)
    thresh = -neg[kk - 1]
    # Everything strictly below the k-th value is in idx_a; fill the rest from the
    # candidates equal to it, by secondary key.
    tie_key = jnp.where(primary == thresh, secondary, INVALID_KEY)
    _, idx_b = lax.top_k(-tie_key, kk)
    keep_a = primary[idx_a] < thresh
    keep_b = (primary[idx_b] == thresh) & (secondary[idx_b] != INVALID_KEY)
    cand = jnp.concatenate([idx_a, idx_b]).astype(jnp.int32)
    keep = jnp.concatenate([keep_a, keep_b])
    k1 = jnp.where(keep, primary[cand], jnp.inf)
    k2 = jnp.where(keep, secondary[cand], INVALID_KEY)
    k1, k2, cand = lax.sort((k1, k2, cand), num_keys=2)
    k2, cand = k2[:kk], cand[:kk]
    real = k2 != INVALID_KEY
    out_d = jnp.where(real, dist[cand], jnp.inf)
    out_i = jnp.where(real, cand, -1)
    if kk < k:
        out_d = jnp.concatenate([out_d, jnp.full((k - kk,), jnp.inf, jnp.float32)])
        out_i = jnp.concatenate([out_i, jnp.full((k - kk,), -1, jnp.int32)])
    return out_d, out_i
