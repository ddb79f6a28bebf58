"""Coarse criterion per metric (behaviour §4a), for assignment and probing.

EUCLIDEAN, MANHATTAN and HAMMING use squared L2 to the centroids; COSINE uses
cosine distance to unit centroids; DOT_PRODUCT uses ``-<x, c>``. Insertion
(assignment) and search (probing) call the same batch-invariant kernel, so a
stored vector's own list is its top-1 probe, bit for bit. Ties go to the lower cluster id.
"""

import jax
import jax.numpy as jnp
from jax import lax

from ._config import Metric
from ._kmeans import coarse_scores

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
    """Smaller-is-better scores of queries ``f32[d]`` or ``f32[n, d]`` against the
    centroids: ``f32[nlist]`` or ``f32[n, nlist]``.

    Delegates to :func:`_kmeans.coarse_scores`, which computes every row in a
    fixed 16-row matrix product, so a row's bits do not depend on the batch size
    or on ``jax.vmap`` (XLA CPU rounds products of different sizes differently).
    """
    return coarse_scores(q, centroids, kind=kind)


def probe(q: jax.Array, centroids: jax.Array, kind: str, n_probes: int) -> jax.Array:
    """The ``n_probes`` best lists, best first: ``i32[n_probes]`` for one query
    ``f32[d]``, ``i32[n, n_probes]`` for ``f32[n, d]``.

    Equal scores go to the lower cluster id (``lax.top_k`` is stable).
    """
    _, idx = lax.optimization_barrier(lax.top_k(-centroid_scores(q, centroids, kind), n_probes))
    return idx.astype(jnp.int32)


def assign(x: jax.Array, centroids: jax.Array, kind: str) -> jax.Array:
    """The list of each row of ``f32[n, d]``: its top-1 probe, ``i32[n]``.

    """
    return probe(x, centroids, kind, 1)[:, 0]


# Batches for assignment/probing are padded to at least this many rows (fewer
# shapes to compile; the scores themselves are batch-invariant).
MIN_ROWS = 64
