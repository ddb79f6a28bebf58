"""Spilled assignment (SOAR): a second list for each vector.

With ``IvfConfig.spill_lambda`` set, every vector is stored twice: in its own
list ``c1`` (the coarse criterion's best, :func:`_assign.assign`) and in a
second list, the ``c != c1`` minimising

    ``|x - c|^2 + lam * (r . (x - c))^2 / |r|^2``,   ``r = x - c1``

(Sun et al., "SOAR: improved indexing for approximate nearest neighbor
search", NeurIPS 2023). The penalty prefers lists whose residual is orthogonal
to ``r``: a query that misses ``x`` in ``c1`` (its direction to ``x`` is along
``r``) is then likely to find it in the spilled list. ``lam = 0`` is the plain
second-nearest list. COSINE computes the criterion on normalised rows; every
other metric on the raw rows.

A query scores each vector once (the search kernels skip a spilled copy whose
own list the query also probes), so results never repeat an id.

Every row is computed in a fixed tile of :data:`SPILL_TILE` rows (XLA computes
a row of a fixed-shape product the same wherever it sits in the tile; the tests
check it), so a vector's second list does not depend on the batch it was
inserted with. The tile is large because larger GEMM tiles run faster.
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax

from ._assign import KIND_COSINE
from ._metrics import HIGHEST, normalize_rows
from ._tiles import isolated_sq_norms, min_and_index, tile_rows

SPILL_TILE = 1024  # rows per fixed GEMM tile


def _spill_tile(tile, centroids, c_sq, gram, lam, *, cosine: bool):
    """Second list ``i32[T]`` of the rows of one tile ``(x f32[T, d], own i32[T])``."""
    x, own = tile
    if cosine:
        x = normalize_rows(x)
    n_lists = centroids.shape[0]
    own = jnp.clip(own, 0, n_lists - 1)
    xc = jnp.dot(x, centroids.T, precision=HIGHEST)  # [T, L]
    x_sq = jnp.sum(x * x, axis=1)
    dist = jnp.maximum(x_sq[:, None] - 2.0 * xc + c_sq[None, :], 0.0)  # |x - c|^2
    r_sq = jnp.take_along_axis(dist, own[:, None], axis=1)  # |r|^2
    xc_own = jnp.take_along_axis(xc, own[:, None], axis=1)
    # r . (x - c) = |x|^2 - x.c - c1.x + c1.c
    rdot = x_sq[:, None] - xc - xc_own + gram[own]
    pen = jnp.where(r_sq > 0.0, rdot * rdot / jnp.where(r_sq > 0.0, r_sq, 1.0), 0.0)
    score = dist + lam * pen
    cols = lax.broadcasted_iota(jnp.int32, score.shape, 1)
    score = jnp.where((cols == own[:, None]) | jnp.isnan(score), jnp.inf, score)
    return min_and_index(score, axis=1)[1].astype(jnp.int32)  # ties to the lower list


@functools.partial(jax.jit, static_argnames=("kind",))
def spill_assign(
    x: jax.Array, own: jax.Array, centroids: jax.Array, lam: jax.Array, *, kind: str
) -> jax.Array:
    """The spilled list ``i32[n]`` of each row of ``x`` ``f32[n, d]``.

    Args:
        x: rows (padding rows give unspecified lists).
        own: ``i32[n]`` each row's own list (:func:`_assign.assign`).
        centroids: ``f32[nlist, d]``, ``nlist >= 2``.
        lam: ``f32[]`` the SOAR weight (``>= 0``).
        kind: the coarse criterion kind (``"cosine"`` normalises rows and
            uses the stored unit centroids).

    Returns:
        A list ``!= own`` for every row (ties to the lower list id).
    """
    centroids = jnp.asarray(centroids, jnp.float32)
    c_sq = isolated_sq_norms(centroids)
    gram = jnp.dot(centroids, centroids.T, precision=HIGHEST)
    fn = functools.partial(_spill_tile, cosine=kind == KIND_COSINE)
    consts = (centroids, c_sq, gram, jnp.asarray(lam, jnp.float32))
    xo = (jnp.asarray(x, jnp.float32), jnp.asarray(own, jnp.int32))
    return tile_rows(fn, xo, consts, SPILL_TILE)
