"""Coarse criterion per metric (behaviour §4a), for assignment and probing.

EUCLIDEAN, MANHATTAN and HAMMING use squared L2 to the centroids; COSINE uses
cosine distance to unit centroids; DOT_PRODUCT uses ``-<x, c>``. Insertion
(assignment) and search (probing) call the same matrix-product kernel on batches
padded to at least ``MIN_ROWS`` rows, so a stored vector's own list is its top-1
probe. Ties go to the lower cluster id.
"""

import jax
import jax.numpy as jnp
from jax import lax

from ._config import Metric
from ._metrics import COSINE_EPS, row_norms, tree_sum

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


def centroid_scores(q: jax.Array, centroids: jax.Array, kind: str) -> jax.Array:
    """Smaller-is-better ranking scores of queries ``f32[d]`` or ``f32[n, d]``
    against the centroids: ``f32[nlist]`` or ``f32[n, nlist]``.

    One matrix product at HIGHEST precision: ``"l2"`` ranks by
    ``|c|^2 - 2 q.c`` (squared L2 minus the constant ``|q|^2``); ``"cosine"`` by
    ``-q.c / |c|`` (the query norm does not change the order; a zero query or
    centroid scores 0, i.e. cosine distance 1); ``"dot"`` by ``-q.c``.
    """
    q2 = q if q.ndim == 2 else q[None, :]
    dots = lax.dot_general(q2, centroids, (((1,), (1,)), ((), ())), precision=lax.Precision.HIGHEST)
    if kind == KIND_DOT:
        scores = -dots
    elif kind == KIND_L2:
        scores = tree_sum(centroids * centroids)[None, :] - 2.0 * dots
    else:
        cn = row_norms(centroids)[None, :]
        ok = cn > COSINE_EPS
        scores = jnp.where(ok, -dots / jnp.where(ok, cn, 1.0), 0.0)
    return scores if q.ndim == 2 else scores[0]


def probe(q: jax.Array, centroids: jax.Array, kind: str, n_probes: int) -> jax.Array:
    """The ``n_probes`` best lists, best first: ``i32[n_probes]`` for one query
    ``f32[d]``, ``i32[n, n_probes]`` for ``f32[n, d]``.

    Equal scores go to the lower cluster id (``lax.top_k`` is stable).
    """
    _, idx = lax.optimization_barrier(lax.top_k(-centroid_scores(q, centroids, kind), n_probes))
    return idx.astype(jnp.int32)


def assign(x: jax.Array, centroids: jax.Array, kind: str) -> jax.Array:
    """The list of each row of ``f32[n, d]``: its top-1 probe, ``i32[n]``.

    Callers pad ``n`` to at least :data:`MIN_ROWS` rows so that assignment and
    probing run the same matrix-product kernel (XLA CPU rounds a 2-8 row
    product differently from a large one).
    """
    return probe(x, centroids, kind, 1)[:, 0]


# Batches for assignment/probing are padded to at least this many rows.
MIN_ROWS = 64
