"""Seeded k-means for the coarse quantizer, and the coarse criterion kernels.

Behaviour §3.5 (algorithm), §4a (one criterion per metric) and §4f (keys).

**Criterion kinds.** ``"l2"`` (EUCLIDEAN, MANHATTAN, HAMMING) is squared-L2
k-means; ``"cosine"`` (COSINE) is spherical k-means on row-normalised data with
unit centroids; ``"dot"`` (DOT_PRODUCT) assigns by the largest inner product and
updates with the plain mean (faiss IVF with an inner-product quantizer).

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
  ``fold_in(pq_key, j)`` (see ``_pq.pq_train``).
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
  times its stored distance is below its distance (``_seeding._kmeanspp``;
  the forced final trial uses ``j = 16``).

(Version 1 drew every k-means++ centre by a race over all rows; version 2 draws
the same distribution by rejection sampling, ~1/60 of the hashing.)

**Determinism.** Every row-dependent computation runs on fixed tiles of
``_TRAIN_TILE`` rows anchored at row 0, so the float32 bits of a row's distances do
not depend on how many rows are present. Centroid sums are a sequential
``segment_sum``-style scatter-add on CPU (deterministic), or, on other backends, a
per-tile one-hot matmul at ``Precision.HIGHEST`` accumulated tile by tile in a
fixed order. Padded rows (``mask == False``) are zeroed and never selected, summed
or counted, so padding ``n`` to any bucket leaves the result bit-identical.

**Batch invariance of the criterion.** :func:`coarse_scores` and :func:`assign`
compute every row in a fixed ``_SCORE_TILE``-row GEMM, whatever the batch size and
also under ``jax.vmap`` (a custom batching rule keeps the tiling), so a vector's
scores have the same bits at insert time (a batch) and at search time (one query):
a stored vector's own list is its top-1 probe.

See also: ``_tiles.py`` (fixed-tile kernels), ``_seeding.py`` (k-means++ and random
init), ``_pq.py`` (product quantizer), ``_assign.py``.
"""

import functools
import operator
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._config import KMEANS_INITS
from ._metrics import COSINE_EPS
from ._seeding import _kmeanspp, _random_init
from ._tiles import (
    _batch_invariant,
    _isolated_sq_norms,
    _map_tiles,
    _max_and_index,
    _min_and_index,
    _scan_tiles,
)

KIND_L2 = "l2"
KIND_COSINE = "cosine"
KIND_DOT = "dot"
KINDS = (KIND_L2, KIND_COSINE, KIND_DOT)
INITS = KMEANS_INITS
INIT_KMEANSPP, INIT_RANDOM = INITS

KEY_SCHEME_VERSION = 2

_HIGHEST = lax.Precision.HIGHEST
# Rows per GEMM tile. Fixed (never derived from n), so results do not depend on n.
_TRAIN_TILE = 1024
_SCORE_TILE = 16


# --------------------------------------------------------------------------- keys


def seed_key(seed: int) -> jax.Array:
    """The threefry key of a 64-bit seed (behaviour §4f).

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
        raise TypeError("seed must be an int, not bool")
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


# ------------------------------------------------------------ coarse criterion


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def _score_tile(q: jax.Array, centroids: jax.Array, c_sq: jax.Array, kind: str) -> jax.Array:
    """Criterion scores ``f32[T, k]`` of a tile ``f32[T, d]``; smaller is better.

    ``c_sq`` (``f32[k]``) holds the centroids' squared norms.
    """
    dots = jnp.dot(q, centroids.T, precision=_HIGHEST)
    if kind == KIND_DOT:
        return -dots
    q_sq = jnp.sum(q * q, axis=1)
    if kind == KIND_L2:
        return jnp.maximum(q_sq[:, None] - 2.0 * dots + c_sq[None, :], 0.0)
    denom = jnp.sqrt(q_sq)[:, None] * jnp.sqrt(c_sq)[None, :]
    ok = denom > COSINE_EPS
    cos_d = jnp.clip(1.0 - dots / jnp.where(ok, denom, 1.0), 0.0, 2.0)
    return jnp.where(ok, cos_d, 1.0)


@functools.cache
def _score_fn(kind: str) -> Callable:
    return functools.partial(_score_tile, kind=kind)


@jax.jit
def centroid_sq_norms(centroids: jax.Array) -> jax.Array:
    """``f32[nlist]`` squared norms of the centroids, as :func:`coarse_scores`
    computes them when not given (keep them with the centroids to skip that)."""
    return _isolated_sq_norms(jnp.asarray(centroids, jnp.float32))


@functools.partial(jax.jit, static_argnames=("kind",))
def coarse_scores(
    q: jax.Array, centroids: jax.Array, *, kind: str, c_sq: jax.Array | None = None
) -> jax.Array:
    """Coarse criterion scores (behaviour §4a), smaller is better.

    Used for assignment (insert) and probing (search) alike, so a stored vector's
    own list is its top-1 probe. Each row is computed in a fixed 16-row GEMM at
    ``Precision.HIGHEST``, so its float32 bits do not depend on the batch size or
    on ``jax.vmap``.

    Args:
        q: ``f32[d]`` one query, or ``f32[n, d]`` a batch.
        centroids: ``f32[nlist, d]`` the coarse centroids (faiss ``nlist``,
            ScaNN ``num_leaves``).
        kind: ``"l2"``: squared L2 ``||q||^2 - 2 q.c + ||c||^2`` clamped at 0;
            ``"cosine"``: ``1 - q.c / (||q|| ||c||)`` clamped to ``[0, 2]``, 1.0
            when the norm product is ``<= 1.1754944e-38`` (a zero query scores 1.0
            everywhere); ``"dot"``: ``-q.c``.
        c_sq: optional ``f32[nlist]`` centroid squared norms from
            :func:`centroid_sq_norms` (computed here when omitted; passing them
            saves a reduction over the centroids per call).

    Returns:
        ``f32[nlist]`` for one query, ``f32[n, nlist]`` for a batch.

    >>> import jax.numpy as jnp
    >>> coarse_scores(jnp.array([1.0, 0.0]), jnp.eye(2), kind="l2").tolist()
    [0.0, 2.0]

    See also: :func:`assign`.
    """
    _check_kind(kind)
    g = _batch_invariant(_score_fn(kind), _SCORE_TILE)
    q = jnp.asarray(q, jnp.float32)
    centroids = jnp.asarray(centroids, jnp.float32)
    c_sq = _isolated_sq_norms(centroids) if c_sq is None else jnp.asarray(c_sq, jnp.float32)
    if q.ndim == 1:
        return g(q[None, :], centroids, c_sq)[0]
    if q.ndim != 2:
        raise ValueError(f"q must be f32[d] or f32[n, d], got shape {q.shape}")
    return g(q, centroids, c_sq)


@functools.partial(jax.jit, static_argnames=("kind",))
def assign(x: jax.Array, centroids: jax.Array, *, kind: str) -> jax.Array:
    """The list of each row: ``argmin`` of :func:`coarse_scores`, ties to the lowest id.

    A zero vector under ``"cosine"`` scores 1.0 against every centroid, so it goes
    to list 0.

    Args:
        x: ``f32[n, d]`` rows (or ``f32[d]`` one row).
        centroids: ``f32[nlist, d]``.
        kind: ``"l2"``, ``"cosine"`` or ``"dot"`` (see :func:`coarse_scores`).

    Returns:
        ``i32[n]`` list ids (``i32[]`` for one row). The top-1 of
        ``lax.top_k(-coarse_scores(x, c), n_probes)`` is the same list.

    >>> import jax.numpy as jnp
    >>> assign(jnp.array([[0.9, 0.1], [0.0, 0.0]]), jnp.eye(2), kind="cosine").tolist()
    [0, 0]
    """
    return jnp.argmin(coarse_scores(x, centroids, kind=kind), axis=-1).astype(jnp.int32)


# ------------------------------------------------------------------- k-means fit


class KMeansResult(NamedTuple):
    """Output of :func:`kmeans_fit`.

    Attributes:
        centroids: ``f32[n_clusters, d]`` (unit or zero rows for ``"cosine"``).
        n_iter: ``i32[]`` Lloyd rounds run (``1..max_iter``).
        inertia: ``f32[]`` sum over the real rows of the criterion distance to the
            assigned centre at the last assignment (squared L2; ``1 - cos``;
            ``-<x, c>``).
    """

    centroids: jax.Array
    n_iter: jax.Array
    inertia: jax.Array


def _use_segment_sum() -> bool:
    # XLA:CPU scatter-add is sequential, hence deterministic; GPU scatter is atomic.
    return jax.default_backend() == "cpu"


def _normalize_rows(x: jax.Array) -> jax.Array:
    """Unit rows over the last axis; zero rows stay zero."""
    norm = jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True))
    return jnp.where(norm > 0.0, x / jnp.where(norm > 0.0, norm, 1.0), 0.0)


def _row_sq_norms(x: jax.Array) -> jax.Array:
    """``f32[T]`` squared norms of a tile ``f32[T, d]``."""
    return jnp.sum(x * x, axis=1)


def _assign_tile(xt, x_sq, c, c_sq, kind):
    """Training assignment of a tile: ``(i32[T] cluster, f32[T] criterion distance)``.

    The scores are laid out ``[k, T]`` and reduced over the centres (a non-minor
    axis, so XLA CPU vectorises the minimum across the tile's rows): measured on
    the PQ codebooks (48 subvectors of 8 dims, 128-row tiles), a Lloyd round
    232 -> 184 ms against ``[T, k]``; the coarse quantizer's round (d = 384) is
    unchanged, and so are the products' bits.
    """
    dots = jnp.dot(c, xt.T, precision=_HIGHEST)  # [k, T]
    if kind == KIND_L2:
        # ||x||^2 is constant per row: leave it out of the argmin, add it back after.
        s_min, a = _min_and_index(c_sq[:, None] - 2.0 * dots, axis=0)  # ties: lowest
        return a, jnp.maximum(x_sq + s_min, 0.0)
    best, a = _max_and_index(dots, axis=0)  # ties to the lowest index
    if kind == KIND_DOT:
        return a, -best
    return a, jnp.clip(1.0 - best, 0.0, 2.0)


def _lloyd_pass(xt, x_sq, mt, c, kind, segment):
    """One assignment pass over the tiles ``xt[nt, T, d]``.

    Returns ``(sums f32[k, d], counts i32[k], best f32[nt, T], inertia f32[])``.
    """
    k, d = c.shape
    c_sq = jnp.sum(c * c, axis=1)
    cluster_ids = jnp.arange(k, dtype=jnp.int32)

    def compute(carry, tile):
        sums, counts, inertia = carry
        xb, x_sq_b, mb, c_, c_sq_ = lax.optimization_barrier((*tile, c, c_sq))
        a, best = _assign_tile(xb, x_sq_b, c_, c_sq_, kind)
        a, best, tile_inertia = lax.optimization_barrier(
            (a, best, jnp.sum(jnp.where(mb, best, 0.0)))
        )
        if segment:
            # Sequential scatter-adds in row order: bit-identical wherever the
            # padded rows are (they are dropped, or add an exact 0.0).
            seg = jnp.where(mb, a, k)  # k is out of range: dropped
            sums = sums.at[seg].add(xb, mode="drop")
            counts = counts.at[seg].add(1, mode="drop")
            zeros = jnp.zeros(seg.shape, jnp.int32)
            inertia = inertia.at[zeros].add(jnp.where(mb, best, 0.0))
        else:
            onehot = (a[:, None] == cluster_ids[None, :]) & mb[:, None]
            sums = sums + jnp.dot(onehot.astype(jnp.float32).T, xb, precision=_HIGHEST)
            counts = counts + jnp.sum(onehot.astype(jnp.int32), axis=0)
            inertia = inertia + tile_inertia
        return (sums, counts, inertia), best

    def skip(carry, tile):  # a tile of padding only: it would add nothing
        return carry, jnp.zeros(tile[2].shape, jnp.float32)

    def body(carry, tile):
        return lax.cond(jnp.any(tile[2]), compute, skip, carry, tile)

    init = (
        jnp.zeros((k, d), jnp.float32),
        jnp.zeros((k,), jnp.int32),
        jnp.zeros((1,), jnp.float32),
    )
    (sums, counts, inertia), best = _scan_tiles(body, init, (xt, x_sq, mt))
    return sums, counts, best, inertia[0]


def _reseed(new, empty, far, x_flat):
    """Re-seed each empty cluster, in index order, at the farthest eligible row.

    ``far`` (``f32[N]``) is each row's criterion distance to its assigned centre,
    ``-inf`` where ineligible; a chosen row becomes ineligible. With no eligible
    row left a cluster keeps its previous centre.
    """
    k = new.shape[0]
    order = jnp.nonzero(empty, size=k, fill_value=0)[0]
    n_empty = jnp.sum(empty.astype(jnp.int32))

    def body(i, carry):
        new, far = carry
        cl = order[i]
        top, p = _max_and_index(far)  # ties to the lowest row
        ok = top > -jnp.inf
        new = new.at[cl].set(jnp.where(ok, x_flat[p], new[cl]))
        far = far.at[p].set(-jnp.inf)
        return new, far

    new, _ = lax.fori_loop(0, n_empty, body, (new, far))
    return new


def check_init(init: str) -> None:
    """Raise ``ValueError`` unless ``init`` is one of :data:`INITS`."""
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")


class _FitTiles(NamedTuple):
    """The working set as k-means reads it: fixed tiles anchored at row 0."""

    xt: jax.Array  # f32[nt, T, d] (cosine: normalised rows); padding zeroed
    mt: jax.Array  # bool[nt, T] real rows
    x_sq: jax.Array  # f32[nt, T] squared norms
    eligible: jax.Array  # bool[nt, T] rows a seed may be (cosine: non-zero rows)
    rank: jax.Array  # i32[nt, T] position among the real rows (keys the draws)


def _fit_tiles(x, mask, kind, tile: int = _TRAIN_TILE, zeroed: bool = False) -> _FitTiles:
    n_pad, d = x.shape
    nt = max(1, -(-n_pad // tile))
    mask = jnp.asarray(mask, jnp.bool_)
    x = jnp.asarray(x, jnp.float32)
    if not zeroed:  # (zeroed: the caller promises 0.0 in the masked rows; no copy)
        x = jnp.where(mask[:, None], x, 0.0)
    x = jnp.pad(x, ((0, nt * tile - n_pad), (0, 0)))
    mask = jnp.pad(mask, (0, nt * tile - n_pad))
    xt, mt = x.reshape(nt, tile, d), mask.reshape(nt, tile)
    if kind == KIND_COSINE:
        xt = _map_tiles(_normalize_rows, xt)
        nonzero = jnp.any(xt != 0.0, axis=2) & mt
        eligible = jnp.where(jnp.any(nonzero), nonzero, mt)
    else:
        eligible = mt
    rank = (jnp.cumsum(mask.astype(jnp.int32)) - 1).reshape(nt, tile)
    return _FitTiles(xt, mt, _map_tiles(_row_sq_norms, xt), eligible, rank)


def _init_centres(ft: _FitTiles, key, k: int, init: str) -> jax.Array:
    """The ``k`` starting centres (k-means++ or random rows)."""
    if init == INIT_RANDOM:
        nt, tile, d = ft.xt.shape
        x_flat = ft.xt.reshape(nt * tile, d)
        return _random_init(x_flat, ft.eligible.reshape(-1), ft.rank.reshape(-1), key, k)
    return _kmeanspp(ft.xt, ft.x_sq, ft.mt, ft.eligible, ft.rank, key, k)


def _kmeans_fit_impl(
    x,
    mask,
    key,
    n_clusters,
    max_iter,
    kind,
    tol,
    segment,
    init=INIT_KMEANSPP,
    centres=None,
    tile=_TRAIN_TILE,
    zeroed=False,
):
    """k-means on ``x`` in row tiles of ``tile``; ``centres`` (``f32[k, d]``), if
    given, replace the initialisation (``pq_train`` seeds its subvectors outside
    ``jax.vmap``)."""
    ft = _fit_tiles(x, mask, kind, tile, zeroed)
    xt, mt, x_sq, eligible = ft.xt, ft.mt, ft.x_sq, ft.eligible
    nt, tile, d = xt.shape
    x_flat = xt.reshape(nt * tile, d)
    cents = _init_centres(ft, key, n_clusters, init) if centres is None else centres

    def cond(state):
        it, _, done, _ = state
        return (it < max_iter) & ~done

    def body(state):
        it, old, _, _ = state
        sums, counts, best, inertia = _lloyd_pass(xt, x_sq, mt, old, kind, segment)
        mean = sums / jnp.maximum(counts, 1).astype(jnp.float32)[:, None]
        empty = counts == 0
        if kind == KIND_COSINE:
            norm = jnp.sqrt(jnp.sum(mean * mean, axis=1))
            empty = empty | (norm == 0.0)
            mean = mean / jnp.where(norm > 0.0, norm, 1.0)[:, None]
        new = jnp.where(empty[:, None], old, mean)
        far = jnp.where(eligible, best, -jnp.inf).reshape(-1)
        new = lax.cond(jnp.any(empty), _reseed, lambda n, *_: n, new, empty, far, x_flat)
        shift = jnp.sqrt(jnp.sum((old - new) ** 2, axis=1)) / jnp.maximum(
            jnp.sqrt(jnp.sum(old * old, axis=1)), 1.0
        )
        return it + 1, new, jnp.max(shift) < tol, inertia

    state = (jnp.int32(0), cents, jnp.bool_(False), jnp.float32(0.0))
    n_iter, cents, _, inertia = lax.while_loop(cond, body, state)
    return KMeansResult(cents, n_iter, inertia)


_kmeans_fit_jit = jax.jit(
    _kmeans_fit_impl,
    static_argnames=("n_clusters", "max_iter", "kind", "tol", "segment", "init", "tile", "zeroed"),
)


def kmeans_fit(
    x: jax.Array,
    mask: jax.Array,
    key: jax.Array,
    *,
    n_clusters: int,
    max_iter: int = 25,
    kind: str = KIND_L2,
    tol: float = 1e-4,
    init: str = INIT_KMEANSPP,
    tile: int = _TRAIN_TILE,
    padding_is_zero: bool = False,
) -> KMeansResult:
    """Seeded k-means++ / Lloyd k-means (behaviour §3.5, §4a).

    1. k-means++ seeding: the first centre uniform over the real rows, each next one
       with probability ``∝`` the squared L2 distance to the nearest chosen centre
       (uniform over the real rows when all those distances are 0). Distances use
       the expanded form; one within its rounding noise, ``<= d * 2**-23 *
       (|x|^2 + |c|^2)``, counts as 0, so copies of a chosen centre are never
       drawn while other points remain. ``"cosine"`` seeds on the normalised rows
       and skips zero rows (unless all rows are zero). The draws are exact
       rejection sampling against stored distances that lag behind the newest
       centres (``_seeding._kmeanspp``), so the data is read once per 64 centres,
       not once per centre.
    2. At most ``max_iter`` Lloyd rounds: assign (ties to the lowest centroid),
       replace each centre by the mean of its rows (``"cosine"``: re-normalised; a
       zero mean counts as empty), then re-seed each empty cluster, in index order,
       at the real row farthest (by the criterion) from its assigned centre; that
       row is then not used for another empty cluster in the same round.
    3. Stop when ``max_c ||old - new|| / max(||old||, 1) < tol``; no final
       reassignment.

    Distance GEMMs run at ``Precision.HIGHEST``. Padded rows have no influence:
    the same real rows padded to any ``n_pad`` give bit-identical results.

    Args:
        x: ``f32[n_pad, d]`` rows; rows with ``mask == False`` are ignored (their
            values, even NaN, never matter).
        mask: ``bool[n_pad]``, True for real rows.
        key: a threefry key, normally :func:`coarse_key` ``(seed)``.
        n_clusters: number of centroids (faiss ``nlist``), static.
        max_iter: the most Lloyd rounds, ``>= 1``, static.
        kind: ``"l2"``, ``"cosine"`` or ``"dot"``, static.
        tol: relative-shift tolerance, static.
        init: ``"kmeans++"`` (step 1, the reference's) or ``"random"``: the
            ``n_clusters`` distinct eligible rows with the smallest uniforms of
            draw 0 (faiss's default init; no sequential seeding passes).
        tile: rows per fixed tile (static; 1024 for the coarse quantizer, 128
            for PQ codebooks): row bits and the k-means++ proposal tiles depend
            on it, so results are reproducible for a given tile.
        padding_is_zero: the caller guarantees ``x == 0.0`` wherever ``mask`` is
            False (as ``_kernels.device_rows`` pads): skips the masked copy of
            ``x`` (~30 ms for 65,536 x 384); same result. With the guarantee
            broken the result is wrong.

    Returns:
        :class:`KMeansResult` with exactly ``n_clusters`` centroids, even when the
        real rows have fewer distinct points (some centroids then repeat a point).

    Raises:
        ValueError: on a bad ``kind``, ``n_clusters < 1``, ``max_iter < 1`` or
            mismatched shapes.

    >>> import jax.numpy as jnp
    >>> x = jnp.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]])
    >>> r = kmeans_fit(x, jnp.ones(4, bool), coarse_key(0), n_clusters=2)
    >>> sorted(round(float(v), 2) for v in r.centroids[:, 0])
    [0.05, 5.05]

    See also: :func:`assign`, ``_pq.pq_train``.
    """
    _check_kind(kind)
    check_init(init)
    if not isinstance(tile, int) or tile < 1:
        raise ValueError(f"tile must be an int >= 1, got {tile!r}")
    if n_clusters < 1 or max_iter < 1:
        raise ValueError(f"need n_clusters >= 1 and max_iter >= 1, got {n_clusters}, {max_iter}")
    if x.ndim != 2 or mask.shape != x.shape[:1] or x.shape[0] < 1:
        raise ValueError(
            f"need x f32[n_pad >= 1, d] and mask bool[n_pad], got {x.shape}, {mask.shape}"
        )
    return _kmeans_fit_jit(
        x,
        mask,
        key,
        n_clusters=int(n_clusters),
        max_iter=int(max_iter),
        kind=kind,
        tol=float(tol),
        segment=_use_segment_sum(),
        init=init,
        tile=int(tile),
        zeroed=bool(padding_is_zero),
    )
