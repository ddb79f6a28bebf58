"""PQ codebooks: squared-L2 k-means with 256 codewords per subvector.

Codebooks are fitted by the Lloyd k-means of :mod:`.lloyd` on the coarse working
set (semantics §3.5), in 128-row tiles; subvector ``j`` trains with key
``fold_in(pq_key, j)``. The seeding runs per subvector under ``lax.map``, the
Lloyd rounds for all ``M`` under one ``jax.vmap``.
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax

from .._assign import KIND_L2
from .._pq import N_CODEWORDS, split_subvectors
from .lloyd import (
    INIT_KMEANSPP,
    check_init,
    fit_tiles,
    init_centres,
    kmeans_fit_impl,
    use_segment_sum,
)

# Row tile of the codebook k-means: its [m, tile, 256] distance block stays in cache.
TRAIN_TILE = 128


@functools.partial(jax.jit, static_argnames=("m", "max_iter", "segment", "init"))
def _pq_train_jit(x, mask, key, *, m, max_iter, segment, init):
    n_pad = x.shape[0]
    xs = jnp.transpose(
        split_subvectors(jnp.asarray(x, jnp.float32), m), (1, 0, 2)
    )  # [m, n_pad, dsub]
    keys = jax.vmap(lambda j: jax.random.fold_in(key, j))(jnp.arange(m, dtype=jnp.uint32))
    mask = jnp.asarray(mask, jnp.bool_)
    assert mask.shape == (n_pad,)

    def seed(args):
        xj, kj = args
        return init_centres(fit_tiles(xj, mask, KIND_L2, TRAIN_TILE), kj, N_CODEWORDS, init)

    # seeding branches per subvector (lax.map keeps its conds; under vmap both
    # branches of every cond would run), the Lloyd rounds run batched
    seeds = lax.map(seed, (xs, keys))

    def fit(xj, kj, cj):
        return kmeans_fit_impl(
            xj, mask, kj, N_CODEWORDS, max_iter, KIND_L2, 1e-4, segment, init, cj, TRAIN_TILE
        ).centroids

    return jax.vmap(fit)(xs, keys, seeds)


def pq_train(
    x: jax.Array,
    mask: jax.Array,
    key: jax.Array,
    *,
    m: int,
    max_iter: int = 25,
    init: str = INIT_KMEANSPP,
) -> jax.Array:
    """Fit PQ codebooks: squared-L2 k-means with 256 clusters per subvector.

    Args:
        x: ``f32[n_pad, d]`` the coarse working set; ``d % m == 0``.
        mask: ``bool[n_pad]``, True for real rows. Needs at least 256 real rows
            (the caller checks; fewer still work but repeat codewords).
        key: normally :func:`~.keys.pq_key` ``(seed)``; subvector ``j`` uses
            ``fold_in(key, j)``.
        m: number of subvectors (faiss ``M``), static.
        max_iter: the most Lloyd rounds per subvector, static.
        init: centre initialisation, as in :func:`~.lloyd.kmeans_fit`.

    Returns:
        ``f32[m, 256, d // m]`` codebooks. Padded rows have no influence.

    Raises:
        ValueError: if ``m`` does not divide ``d``, ``n_pad < 256`` or ``max_iter < 1``.

    >>> import jax, jax.numpy as jnp
    >>> from iqdb_ivf_jax._train.keys import pq_key
    >>> x = jax.random.normal(jax.random.key(0), (256, 4))
    >>> pq_train(x, jnp.ones(256, bool), pq_key(0), m=2, max_iter=2).shape
    (2, 256, 2)
    """
    if x.ndim != 2 or x.shape[0] < N_CODEWORDS or mask.shape != x.shape[:1]:
        raise ValueError(
            f"need x f32[n_pad >= 256, d] and mask bool[n_pad], got {x.shape}, {mask.shape}"
        )
    if m < 1 or x.shape[1] % m or max_iter < 1:
        raise ValueError(
            f"need m >= 1 dividing d ({x.shape[1]}) and max_iter >= 1, got {m}, {max_iter}"
        )
    check_init(init)
    return _pq_train_jit(
        x, mask, key, m=int(m), max_iter=int(max_iter), segment=use_segment_sum(), init=init
    )
