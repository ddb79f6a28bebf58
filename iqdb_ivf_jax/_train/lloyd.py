"""Seeded Lloyd k-means: the coarse quantizer's fit (and each PQ codebook's).

:func:`kmeans_fit` seeds (k-means++ or random rows, :mod:`.seeding`), then runs
Lloyd rounds with the coarse criterion of :mod:`.._assign` (semantics §3.5, §4a);
keys come from :mod:`.keys`.

**Determinism.** Every row-dependent computation runs on fixed tiles of
``TRAIN_TILE`` rows anchored at row 0, so the float32 bits of a row's distances do
not depend on how many rows are present. Centroid sums are a sequential
``segment_sum``-style scatter-add on CPU (deterministic), or, on other backends, a
per-tile one-hot matmul at ``Precision.HIGHEST`` accumulated tile by tile in a
fixed order. Padded rows (``mask == False``) are zeroed and never selected, summed
or counted, so padding ``n`` to any bucket leaves the result bit-identical.

**Batch invariance of the criterion.** :func:`coarse_scores` and :func:`assign`
(``_assign.py``) compute every row in a fixed ``SCORE_TILE``-row GEMM, whatever the
batch size and also under ``jax.vmap`` (a custom batching rule keeps the tiling),
so a vector's scores have the same bits at insert time (a batch) and at search
time (one query): a stored vector's own list is its top-1 probe.

See also: ``_tiles.py`` (fixed-tile kernels), ``seeding.py`` (k-means++ and random
init), ``pq_codebooks.py`` (PQ codebooks), ``_assign.py`` (the criterion).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from .._assign import KIND_COSINE, KIND_DOT, KIND_L2, check_kind
from .._config import KMEANS_INITS
from .._metrics import HIGHEST, normalize_rows
from .._tiles import map_tiles, max_and_index, min_and_index, scan_tiles
from .seeding import kmeanspp, random_init

INITS = KMEANS_INITS
INIT_KMEANSPP, INIT_RANDOM = INITS
# Rows per GEMM tile. Fixed (never derived from n), so results do not depend on n.
TRAIN_TILE = 1024


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


def use_segment_sum() -> bool:
    # XLA:CPU scatter-add is sequential, hence deterministic; GPU scatter is atomic.
    return jax.default_backend() == "cpu"


def _row_sq_norms(x: jax.Array) -> jax.Array:
    """``f32[T]`` squared norms of a tile ``f32[T, d]``."""
    return jnp.sum(x * x, axis=1)


def _assign_tile(xt, x_sq, c, c_sq, kind):
    """Training assignment of a tile: ``(i32[T] cluster, f32[T] criterion distance)``.

    The scores are laid out ``[k, T]`` and reduced over the centres (a non-minor
    axis, so XLA CPU vectorises the minimum across the tile's rows); the
    products' bits are the same as in the ``[T, k]`` layout.
    """
    dots = jnp.dot(c, xt.T, precision=HIGHEST)  # [k, T]
    if kind == KIND_L2:
        # ||x||^2 is constant per row: leave it out of the argmin, add it back after.
        s_min, a = min_and_index(c_sq[:, None] - 2.0 * dots, axis=0)  # ties: lowest
        return a, jnp.maximum(x_sq + s_min, 0.0)
    best, a = max_and_index(dots, axis=0)  # ties to the lowest index
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
            sums = sums + jnp.dot(onehot.astype(jnp.float32).T, xb, precision=HIGHEST)
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
    (sums, counts, inertia), best = scan_tiles(body, init, (xt, x_sq, mt))
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
        top, p = max_and_index(far)  # ties to the lowest row
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


class FitTiles(NamedTuple):
    """The working set as k-means reads it: fixed tiles anchored at row 0."""

    xt: jax.Array  # f32[nt, T, d] (cosine: normalised rows); padding zeroed
    mt: jax.Array  # bool[nt, T] real rows
    x_sq: jax.Array  # f32[nt, T] squared norms
    eligible: jax.Array  # bool[nt, T] rows a seed may be (cosine: non-zero rows)
    rank: jax.Array  # i32[nt, T] position among the real rows (keys the draws)


def fit_tiles(x, mask, kind, tile: int = TRAIN_TILE, zeroed: bool = False) -> FitTiles:
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
        xt = map_tiles(normalize_rows, xt)
        nonzero = jnp.any(xt != 0.0, axis=2) & mt
        eligible = jnp.where(jnp.any(nonzero), nonzero, mt)
    else:
        eligible = mt
    rank = (jnp.cumsum(mask.astype(jnp.int32)) - 1).reshape(nt, tile)
    return FitTiles(xt, mt, map_tiles(_row_sq_norms, xt), eligible, rank)


def init_centres(ft: FitTiles, key, k: int, init: str) -> jax.Array:
    """The ``k`` starting centres (k-means++ or random rows)."""
    if init == INIT_RANDOM:
        nt, tile, d = ft.xt.shape
        x_flat = ft.xt.reshape(nt * tile, d)
        return random_init(x_flat, ft.eligible.reshape(-1), ft.rank.reshape(-1), key, k)
    return kmeanspp(ft.xt, ft.x_sq, ft.mt, ft.eligible, ft.rank, key, k)


def kmeans_fit_impl(
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
    tile=TRAIN_TILE,
    zeroed=False,
):
    """k-means on ``x`` in row tiles of ``tile``; ``centres`` (``f32[k, d]``), if
    given, replace the initialisation (``pq_train`` seeds its subvectors outside
    ``jax.vmap``)."""
    ft = fit_tiles(x, mask, kind, tile, zeroed)
    xt, mt, x_sq, eligible = ft.xt, ft.mt, ft.x_sq, ft.eligible
    nt, tile, d = xt.shape
    x_flat = xt.reshape(nt * tile, d)
    cents = init_centres(ft, key, n_clusters, init) if centres is None else centres

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
    kmeans_fit_impl,
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
    tile: int = TRAIN_TILE,
    padding_is_zero: bool = False,
) -> KMeansResult:
    """Seeded k-means++ / Lloyd k-means (semantics §3.5, §4a).

    1. k-means++ seeding: the first centre uniform over the real rows, each next one
       with probability ``∝`` the squared L2 distance to the nearest chosen centre
       (uniform over the real rows when all those distances are 0). Distances use
       the expanded form; one within its rounding noise, ``<= d * 2**-23 *
       (|x|^2 + |c|^2)``, counts as 0, so copies of a chosen centre are never
       drawn while other points remain. ``"cosine"`` seeds on the normalised rows
       and skips zero rows (unless all rows are zero). The draws are exact
       rejection sampling against stored distances that lag behind the newest
       centres (``kmeanspp``, ``_train/seeding.py``), so the data is read once
       per 64 centres, not once per centre.
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
            False (as ``_insert.device_rows`` pads): skips the masked copy of
            ``x``; same result. With the guarantee broken the result is wrong.

    Returns:
        :class:`KMeansResult` with exactly ``n_clusters`` centroids, even when the
        real rows have fewer distinct points (some centroids then repeat a point).

    Raises:
        ValueError: on a bad ``kind``, ``n_clusters < 1``, ``max_iter < 1`` or
            mismatched shapes.

    >>> import jax.numpy as jnp
    >>> from iqdb_ivf_jax._train.keys import coarse_key
    >>> x = jnp.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]])
    >>> r = kmeans_fit(x, jnp.ones(4, bool), coarse_key(0), n_clusters=2)
    >>> sorted(round(float(v), 2) for v in r.centroids[:, 0])
    [0.05, 5.05]

    See also: :func:`assign`, ``pq_train`` (``_train/pq_codebooks.py``).
    """
    check_kind(kind)
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
        segment=use_segment_sum(),
        init=init,
        tile=int(tile),
        zeroed=bool(padding_is_zero),
    )
