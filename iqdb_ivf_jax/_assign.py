"""Coarse criterion per metric (behaviour §4a), for assignment and probing.

EUCLIDEAN, MANHATTAN and HAMMING use squared L2 to the centroids; COSINE uses
cosine distance to unit centroids; DOT_PRODUCT uses ``-<x, c>``. Insertion
(assignment) and search (probing) call the same elementwise kernel, so a stored
vector's own list is always its top-1 probe, bit for bit, whatever the batch
shape. Ties go to the lower cluster id.
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
    """Smaller-is-better scores ``f32[nlist]`` of one query ``f32[d]``.

    ``"l2"``: squared L2; ``"cosine"``: ``1 - cos`` (1.0 for a zero vector);
    ``"dot"``: ``-<q, c>``. Use ``jax.vmap`` for a batch.
    """
    q = q[None, :]
    if kind == KIND_L2:
        diff = centroids - q
        return tree_sum(diff * diff)
    dot = tree_sum(centroids * q)
    if kind == KIND_DOT:
        return -dot
    denom = row_norms(q[0]) * row_norms(centroids)
    ok = denom > COSINE_EPS
    return jnp.where(ok, 1.0 - dot / jnp.where(ok, denom, 1.0), 1.0)


def probe(q: jax.Array, centroids: jax.Array, kind: str, n_probes: int) -> jax.Array:
    """The ``n_probes`` best lists ``i32[n_probes]`` for one query, best first.

    Equal scores go to the lower cluster id (``lax.top_k`` is stable).
    """
    _, idx = lax.top_k(-centroid_scores(q, centroids, kind), n_probes)
    return idx.astype(jnp.int32)


def assign(x: jax.Array, centroids: jax.Array, kind: str) -> jax.Array:
    """The list of each row ``i32[n]``: its top-1 probe."""
    return jax.vmap(lambda v: probe(v, centroids, kind, 1)[0])(x)
