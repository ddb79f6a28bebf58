"""Random keys of training: the seed key, the subsample, the coarse and PQ keys.

**Keys (key scheme version 2; changing any line below is a versioned change).**

- ``seed_key(seed)`` = ``wrap_key_data([seed >> 32, seed & 0xFFFFFFFF],
  impl="threefry2x32")``: all 64 bits kept, ``jax_default_prng_impl`` ignored;
  equal to ``jax.random.key(seed)`` below 2**32.
- ``fold_in(seed_key, 0)``: subsample key. Row ``i`` of an ``n``-row sample gets
  the 64-bit score ``key_data(fold_in(subsample_key, i))`` (high word first);
  the ``cap`` rows with the smallest scores (ties: lower ``i``) are kept, in
  data order. A row's score depends only on ``(seed, i)``.
- ``fold_in(seed_key, 1)``: coarse key, passed to :func:`kmeans_fit`.
- ``fold_in(seed_key, 2)``: PQ key; subvector ``j`` trains with
  ``fold_in(pq_key, j)`` (see ``pq_train``, ``_train/pq_codebooks.py``).
- Uniforms: the uniform of key ``K`` at counter ``r`` is ``u = (w0 >> 8) *
  2**-24``, ``w0`` the first word of ``key_data(fold_in(K, r))``; its race
  value for weight ``w`` is ``log(-log1p(-u)) - log(w)`` (an exponential race:
  the smallest value wins, with probability proportional to the weight).
- Inside :func:`kmeans_fit` with key ``K``, ``K_t = fold_in(K, t)`` drives draw
  ``t``. Draw 0 (and a draw whose weights are all 0) is the race at weight 1
  over the eligible rows, counter = the row's rank (its position among the rows
  whose mask is True), ties to the lower row; ``"random"`` init takes the ``k``
  rows with the smallest draw-0 uniforms. k-means++ draw ``t > 0``, trial ``j``
  (``K_tj = fold_in(K_t, j)``) races the tiles of ``T`` consecutive ranks (``T``
  the row tile: 1024 for the coarse quantizer, 128 for PQ codebooks) by
  their stored totals with ``fold_in(K_tj, 0)`` at counter = tile index, takes
  the row at the inverse CDF of the uniform of ``fold_in(K_tj, 1)`` (counter 0)
  inside the winner, and accepts it if the uniform of ``fold_in(K_tj, 2)`` (counter 0)
  times its stored distance is below its distance (``kmeanspp``,
  ``_train/seeding.py``; the forced final trial uses ``j = 16``).

(Version 1 drew every k-means++ centre by a race over all rows; version 2 draws
the same distribution by rejection sampling, which hashes far fewer rows.)
"""

import functools
import operator

import jax
import jax.numpy as jnp
import numpy as np

from .._errors import InvalidArgumentError


def seed_key(seed: int) -> jax.Array:
    """The threefry key of a 64-bit seed (semantics §4f).

    Args:
        seed: an int in ``[0, 2**64)``.

    Returns:
        A typed ``threefry2x32`` key (scalar ``key<fry>``) holding all 64 bits, the
        high word first; it equals ``jax.random.key(seed)`` for seeds below
        ``2**32`` and ignores ``jax_default_prng_impl``.

    Raises:
        TypeError: if ``seed`` is not an int (bools are refused).
        ValueError: if ``seed`` is outside ``[0, 2**64)``.

    >>> import jax
    >>> bool((jax.random.key_data(seed_key(5)) == jax.random.key_data(jax.random.key(5))).all())
    True
    """
    if isinstance(seed, bool):
        raise InvalidArgumentError("seed must be an int, not bool")
    seed = operator.index(seed)
    if not 0 <= seed < 1 << 64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    words = np.array([seed >> 32, seed & 0xFFFFFFFF], np.uint32)
    return jax.random.wrap_key_data(words, impl="threefry2x32")


def subsample_key(seed: int) -> jax.Array:
    """``fold_in(seed_key(seed), 0)``: the key of the training subsample."""
    return jax.random.fold_in(seed_key(seed), 0)


def coarse_key(seed: int) -> jax.Array:
    """``fold_in(seed_key(seed), 1)``: the key of the coarse k-means."""
    return jax.random.fold_in(seed_key(seed), 1)


def pq_key(seed: int) -> jax.Array:
    """``fold_in(seed_key(seed), 2)``: the PQ key (subvector ``j`` uses ``fold_in(pq_key, j)``)."""
    return jax.random.fold_in(seed_key(seed), 2)


@functools.partial(jax.jit, static_argnames=("n",))
def _row_scores(key: jax.Array, n: int) -> jax.Array:
    """``u32[n, 2]``: ``key_data(fold_in(key, i))`` for ``i < n``."""
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n, dtype=jnp.uint32))
    return jax.random.key_data(keys)


def subsample_indices(n: int, cap: int, seed: int) -> np.ndarray:
    """Rows of an ``n``-row sample kept in a training working set of at most ``cap``.

    Args:
        n: the sample size, ``>= 0``.
        cap: the working-set cap (``training_sample_size``), ``>= 1``.
        seed: the index seed, in ``[0, 2**64)``.

    Returns:
        ``int64[min(n, cap)]``, sorted ascending (data order kept): ``arange(n)``
        when ``n <= cap``, otherwise ``cap`` distinct rows drawn uniformly with
        :func:`subsample_key` (the rows with the ``cap`` smallest 64-bit scores,
        see the module docstring). Depends only on ``(n, cap, seed)``.

    >>> subsample_indices(5, 10, 0).tolist()
    [0, 1, 2, 3, 4]
    >>> len(subsample_indices(1000, 100, 7))
    100
    """
    n, cap = operator.index(n), operator.index(cap)
    if n < 0 or cap < 1:
        raise ValueError(f"need n >= 0 and cap >= 1, got n={n}, cap={cap}")
    if n <= cap:
        return np.arange(n, dtype=np.int64)
    if n >= 1 << 32:
        raise ValueError(f"n must be below 2**32, got {n}")
    bucket = max(1024, 1 << (n - 1).bit_length())  # few compiles; scores do not depend on it
    words = np.asarray(_row_scores(subsample_key(seed), bucket))[:n].astype(np.uint64)
    scores = (words[:, 0] << np.uint64(32)) | words[:, 1]
    order = np.argsort(scores, kind="stable")  # ties to the lower row
    return np.sort(order[:cap]).astype(np.int64)
