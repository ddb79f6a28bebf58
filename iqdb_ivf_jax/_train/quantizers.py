"""`fit_quantizers`: train an index's coarse centroids and PQ codebooks on a sample.

The whole training pipeline in one call: draw the seeded working set
(:mod:`.keys`), fit the coarse k-means (:mod:`.lloyd`), and for IVF-PQ fit the
codebooks (:mod:`.pq_codebooks`) on the rows or on their residuals to the
centroids (semantics §3.5).
"""

import functools

import jax
import numpy as np

from .._assign import assign, coarse_kind
from .._config import IvfConfig, Metric
from .._insert import device_rows
from .._layout import pow2_at_least
from .keys import coarse_key, pq_key, subsample_indices
from .lloyd import KMeansResult, kmeans_fit
from .pq_codebooks import pq_train


@functools.partial(jax.jit, static_argnames=("kind",))
def _residuals(x: jax.Array, centroids: jax.Array, kind: str) -> jax.Array:
    """Rows minus the centroid of the list each is assigned to (PQ by residual)."""
    return x - centroids[assign(x, centroids, kind)]


def fit_quantizers(
    x: np.ndarray, config: IvfConfig, metric: Metric
) -> tuple[KMeansResult, jax.Array | None, int]:
    """Fit the coarse quantizer (and PQ codebooks) of an index on ``x``.

    Args:
        x: ``f32[n, d]`` validated, finite training rows (``n >= n_clusters``;
            IVF-PQ needs a working set of at least 256 rows).
        config: the index config (clusters, rounds, init, seed, PQ settings).
        metric: the index metric (it picks the coarse criterion).

    Returns:
        ``(k-means result, codebooks f32[M, 256, d // M] or None, working-set
        rows)``: the working set is the ``training_sample_size`` rows drawn with
        the seeded key (all rows, in order, when there are fewer).
    """
    idx = subsample_indices(x.shape[0], config.training_sample_size, config.seed)
    ws = x if idx.size == x.shape[0] else x[idx]  # all rows kept: no copy
    n_pad = pow2_at_least(ws.shape[0], 256)
    xp = device_rows(ws, n_pad)
    mask = np.arange(n_pad) < ws.shape[0]
    kind = coarse_kind(metric)
    res = kmeans_fit(
        xp,
        mask,
        coarse_key(config.seed),
        n_clusters=config.n_clusters,
        max_iter=config.kmeans_max_iterations,
        kind=kind,
        init=config.kmeans_init,
        padding_is_zero=True,  # device_rows zero-pads
    )
    codebooks = None
    if config.use_pq:
        if config.pq_by_residual:
            xp = _residuals(xp, res.centroids, kind)
        codebooks = pq_train(
            xp,
            mask,
            pq_key(config.seed),
            m=int(config.pq_subvectors or 0),
            max_iter=config.kmeans_max_iterations,
            init=config.kmeans_init,
        )
    return res, codebooks, ws.shape[0]
