"""k-means centre initialisation: k-means++ (a pass per centre, or lazy: a pass
per ``_SEED_PENDING`` centres with the same draws) and faiss-style random rows.

The keys and the race that picks each draw are specified in ``_kmeans``'s module
docstring (key scheme version 1); every function here follows it.
"""

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend.random import threefry_2x32

from ._tiles import _isolated_sq_norms, _map_tiles, _min_and_index

_HIGHEST = lax.Precision.HIGHEST


def _fold_in_word(key_data: jax.Array, rows: jax.Array) -> jax.Array:
    """``u32[n]``: the first word of ``key_data(fold_in(K, r))`` for each row
    ``r`` of ``rows`` (non-negative ``i32``), ``K`` the threefry key with data
    ``key_data``.

    ``fold_in(K, r)`` is ``threefry_2x32(K, [0, r])``; all rows go through one
    ``threefry_2x32`` call (the vmapped ``fold_in`` is the same numbers, but XLA CPU
    fused it with its consumers ~3x slower).
    """
    n = rows.shape[0]
    counts = jnp.concatenate([jnp.zeros((n,), jnp.uint32), rows.astype(jnp.uint32)])
    return threefry_2x32(key_data, counts)[:n]


def _uniforms(key_data: jax.Array, rows: jax.Array) -> jax.Array:
    """``f32[n]`` in ``[0, 1)``: the uniform of each row for the draw keyed ``key_data``."""
    word = _fold_in_word(key_data, rows)
    return (word >> jnp.uint32(8)).astype(jnp.float32) * jnp.float32(2.0**-24)


def _log_exp_draws(key_data: jax.Array, rows: jax.Array) -> jax.Array:
    """``f32[n]``: the log of each row's Exp(1) draw (its race value at weight 1)."""
    return jnp.log(-jnp.log1p(-_uniforms(key_data, rows)))


def _above_noise(dc, x_sq, c_sq, d: int):
    """Squared distances ``dc`` within the expanded form's rounding noise,
    ``d * 2**-23 * (|x|^2 + |c|^2)``, set to 0 (copies of a centre weigh 0)."""
    return jnp.where(dc > (d * 2.0**-23) * (x_sq + c_sq), dc, 0.0)


def _seed_tile(tile, c, key_data, t):
    """One k-means++ pass over a tile, fused with the next draw's race.

    Args:
        tile: ``(x f32[T, d], x_sq f32[T], eligible bool[T], rank i32[T],
            min_d f32[T])``.
        c: ``f32[d]`` the centre chosen last (ignored when ``t == 0``).
        key_data: ``u32[2]`` the key of the next draw.
        t: ``i32[]`` the index of the next draw (centres chosen so far).

    Returns:
        ``(min_d, race_w, race_u)``, each ``f32[T]``: the squared L2 distance to the
        nearest chosen centre (0 where ineligible), and the exponential-race values
        of the next draw for weights ``min_d`` and for uniform weights (smallest
        wins, ``+inf`` never).
    """
    x, x_sq, eligible, rank, min_d = tile
    d = x.shape[1]
    # Expanded form (a GEMV: ~3x faster than a float row reduction on XLA:CPU).
    c_sq = jnp.dot(c, c, precision=_HIGHEST)
    d_c = _above_noise(x_sq - 2.0 * jnp.dot(x, c, precision=_HIGHEST) + c_sq, x_sq, c_sq, d)
    d_c = jnp.where(t == 1, d_c, jnp.minimum(min_d, d_c))  # t == 1: first centre
    min_d = jnp.where(t == 0, min_d, jnp.where(eligible, d_c, 0.0))
    log_e = _log_exp_draws(key_data, rank)
    race_w = jnp.where(min_d > 0.0, log_e - jnp.log(min_d), jnp.inf)
    race_u = jnp.where(eligible, log_e, jnp.inf)
    return min_d, race_w, race_u


def _seed_tile_or_skip(tile, c, key_data, t):
    """:func:`_seed_tile`, skipped (same result) for a tile with no eligible row."""

    def skip(tile, *_):
        inf = jnp.full(tile[4].shape, jnp.inf, jnp.float32)
        return tile[4], inf, inf

    return lax.cond(jnp.any(tile[2]), _seed_tile, skip, tile, c, key_data, t)


def _kmeanspp(xt, x_sq, eligible, rank, key, k: int) -> jax.Array:
    """k-means++ seeds ``f32[k, d]`` from the tiles ``xt[nt, T, d]`` (squared-L2 weights).

    Draw ``t`` picks a row with probability ``∝`` its squared distance to the
    nearest chosen centre (uniformly among the eligible rows for ``t = 0`` or when
    all those distances are 0) by an exponential race keyed by ``fold_in(key, t)``
    and the row's rank. Each draw costs one memory-bound pass over the data, which
    also updates the distances for the centre chosen before.
    """
    nt, tile, d = xt.shape
    x_flat = xt.reshape(nt * tile, d)

    def step(t, carry):
        cents, min_d, c_prev = carry
        kd = jax.random.key_data(jax.random.fold_in(key, t))
        tiles = (xt, x_sq, eligible, rank, min_d)
        min_d, race_w, race_u = _map_tiles(_seed_tile_or_skip, tiles, (c_prev, kd, t))
        race = jnp.where(jnp.any(min_d > 0.0), race_w, race_u).reshape(-1)
        c = x_flat[_min_and_index(race)[1]]  # ties to the lower row
        return cents.at[t].set(c), min_d, c

    init = (
        jnp.zeros((k, d), jnp.float32),
        jnp.zeros((nt, tile), jnp.float32),
        jnp.zeros((d,), jnp.float32),
    )
    return lax.fori_loop(0, k, step, init)[0]


_SEED_PENDING = 16  # chosen centres folded into the stored distances per pass
_SEED_CHECK = 64  # rows re-scored exactly per draw of the lazy seeding


def _seed_dists(x, x_sq, c, c_sq, ok):
    """Squared L2 ``f32[T, P]`` from rows ``x[T, d]`` to centres ``c[P, d]`` in the
    expanded form, with :func:`_seed_tile`'s rounding-noise rule; ``+inf`` for
    centres with ``ok == False``."""
    d = x.shape[1]
    dc = x_sq[:, None] - 2.0 * jnp.dot(x, c.T, precision=_HIGHEST) + c_sq[None, :]
    dc = _above_noise(dc, x_sq[:, None], c_sq[None, :], d)
    return jnp.where(ok[None, :], dc, jnp.inf)


def _flush_tile(tile, pend, pend_sq, pend_ok):
    """Fold the pending centres into a tile's stored distances ``f32[T]``."""
    x, x_sq, eligible, stored = tile
    near = jnp.min(_seed_dists(x, x_sq, pend, pend_sq, pend_ok), axis=1)
    return jnp.where(eligible, jnp.minimum(stored, near), 0.0)


def _race_tile(tile, key_data):
    """``(log_e, bound)`` of a tile for one draw: the row's ``log`` of an Exp(1)
    draw (``+inf`` if ineligible) and the lower bound ``log_e - log(stored)`` of
    its race value (the true distance is at most the stored one)."""
    rank, eligible, stored = tile
    log_e = jnp.where(eligible, _log_exp_draws(key_data, rank), jnp.inf)
    bound = jnp.where(stored > 0.0, log_e - jnp.log(stored), jnp.inf)
    return log_e, bound


def _kmeanspp_lazy(xt, x_sq, eligible, rank, key, k: int) -> jax.Array:
    """k-means++ with the draws of :func:`_kmeanspp` (same keys, same race) but
    the data read once per ``_SEED_PENDING`` centres instead of once per centre.

    Stored distances cover the centres folded in so far; the others wait in a
    pending buffer. A row's race value ``log_e - log(D)`` is at least
    ``log_e - log(stored)``, so each draw re-scores exactly only the
    ``_SEED_CHECK`` rows with the smallest bounds; when the best of them beats the
    next bound the winner is settled (ties to the lower row, as every candidate
    with an equal bound is in the set). Otherwise the pending centres are folded
    in (one GEMM pass) and the draw runs over all rows as in :func:`_kmeanspp`.
    Distances then come from a ``[rows, P]`` GEMM instead of a GEMV, so they may
    differ from :func:`_kmeanspp`'s in the last bit; padded rows never matter.
    """
    nt, tile, d = xt.shape
    n = nt * tile
    P, m = _SEED_PENDING, min(_SEED_CHECK, n - 1)
    x_flat = xt.reshape(n, d)
    x_sq_flat = x_sq.reshape(n)

    def flush(stored, pend, pend_sq, n_pend):
        ok = jnp.arange(P) < n_pend
        return _map_tiles(_flush_tile, (xt, x_sq, eligible, stored), (pend, pend_sq, ok))

    def keep(stored, *_):
        return stored

    def step(t, carry):
        cents, stored, pend, n_pend = carry
        pend_sq = _isolated_sq_norms(pend)
        stored = lax.cond(n_pend == P, flush, keep, stored, pend, pend_sq, n_pend)
        n_pend = jnp.where(n_pend == P, 0, n_pend)
        kd = jax.random.key_data(jax.random.fold_in(key, t))
        log_e, bound = _map_tiles(_race_tile, (rank, eligible, stored), (kd,))
        log_e, bound = log_e.reshape(n), bound.reshape(n)
        # the m + 1 smallest bounds; the first m, in row order, are re-scored
        neg, order = lax.optimization_barrier(lax.top_k(-bound, m + 1))
        next_bound = -neg[m]
        rows = jnp.sort(order[:m])
        ok = jnp.arange(P) < n_pend
        near = jnp.min(_seed_dists(x_flat[rows], x_sq_flat[rows], pend, pend_sq, ok), axis=1)
        dist = jnp.minimum(stored.reshape(n)[rows], near)
        score = jnp.where(dist > 0.0, log_e[rows] - jnp.log(dist), jnp.inf)
        best, at = _min_and_index(score)
        settled = (t > 0) & (best < jnp.inf) & (best < next_bound)

        def full(stored):
            stored = lax.cond(t > 0, flush, keep, stored, pend, pend_sq, n_pend)
            s = stored.reshape(n)
            race_w = jnp.where(s > 0.0, log_e - jnp.log(s), jnp.inf)
            race = jnp.where((t > 0) & jnp.any(s > 0.0), race_w, log_e)
            return stored, _min_and_index(race)[1]  # ties to the lower row

        def fast(stored):
            return stored, rows[at]

        stored, win = lax.cond(settled, fast, full, stored)
        n_pend = jnp.where(settled, n_pend, 0)  # ``full`` folded the pending ones in
        c = x_flat[win]
        return cents.at[t].set(c), stored, pend.at[n_pend].set(c), n_pend + 1

    init = (
        jnp.zeros((k, d), jnp.float32),
        jnp.where(eligible, jnp.inf, 0.0).astype(jnp.float32),
        jnp.zeros((P, d), jnp.float32),
        jnp.int32(0),
    )
    return lax.fori_loop(0, k, step, init)[0]


def _random_init(x_flat, eligible, rank, key, k: int) -> jax.Array:
    """``k`` distinct eligible rows: those with the smallest draw-0 uniforms (the
    k-means++ first centre is the first of them). With fewer than ``k`` eligible
    rows the chosen ones repeat in order."""
    u = _uniforms(jax.random.key_data(jax.random.fold_in(key, 0)), rank)
    u = jnp.where(eligible, u, jnp.inf)
    _, sel = lax.optimization_barrier(lax.top_k(-u, k))  # ties to the lower row
    n_ok = jnp.maximum(jnp.sum(eligible.astype(jnp.int32)), 1)
    sel = sel[jnp.arange(k) % jnp.minimum(n_ok, k)]
    return x_flat[sel]
