"""k-means centre initialisation: k-means++ (rejection sampling, the data read
once per ``_SEED_PENDING`` centres) and faiss-style random rows.

The keys that drive each draw are specified in the module docstring of
:mod:`.keys` (``_train/keys.py``, key scheme version 2); every function here
follows it.
"""

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend.random import threefry_2x32

from .._metrics import HIGHEST
from .._tiles import isolated_sq_norms, map_tiles, min_and_index


def _fold_in_word(key_data: jax.Array, rows: jax.Array) -> jax.Array:
    """``u32[n]``: the first word of ``key_data(fold_in(K, r))`` for each row
    ``r`` of ``rows`` (non-negative ``i32``), ``K`` the threefry key with data
    ``key_data``.

    ``fold_in(K, r)`` is ``threefry_2x32(K, [0, r])``; all rows go through one
    ``threefry_2x32`` call (the vmapped ``fold_in`` is the same numbers, but XLA CPU
    fuses it with its consumers into slower code).
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


_SEED_PENDING = 64  # chosen centres folded into the stored distances per data pass
# Small tiles are folded in several per loop step, batched, up to this many
# values per step (fewer steps, less loop overhead). Each tile's product keeps its
# own shape, so the bits do not change; large tiles (the coarse quantizer's) stay
# one per step.
_FLUSH_VALUES = 1 << 14
_SEED_TRIALS = 16  # rejected proposals before a draw folds its pending centres in


def _seed_dists(x, x_sq, c, c_sq, ok):
    """Squared L2 ``f32[T, P]`` from rows ``x[T, d]`` to centres ``c[P, d]`` in the
    expanded form (copies of a centre weigh 0, see :func:`_above_noise`);
    ``+inf`` for centres with ``ok == False``."""
    d = x.shape[1]
    dc = x_sq[:, None] - 2.0 * jnp.dot(x, c.T, precision=HIGHEST) + c_sq[None, :]
    dc = _above_noise(dc, x_sq[:, None], c_sq[None, :], d)
    return jnp.where(ok[None, :], dc, jnp.inf)


def _rank_order(real: jax.Array) -> jax.Array:
    """``i32[n]``: the rows in rank order, real rows first, then padding, each in
    row order (a stable argsort of ``~real``, as one scatter, cheaper than XLA
    CPU's sort)."""
    n = real.shape[0]
    rows = jnp.arange(n, dtype=jnp.int32)
    ones = real.astype(jnp.int32)
    before = jnp.cumsum(ones) - ones  # real rows before each row
    pos = jnp.where(real, before, jnp.sum(ones) + rows - before)
    return jnp.zeros((n,), jnp.int32).at[pos].set(rows, unique_indices=True)


def _flush_tile(tile, pend, pend_sq, pend_ok):
    """Fold the pending centres into a tile's stored distances ``f32[T]``: the
    squared distance of each row to its nearest folded centre (0 where
    ineligible)."""
    x, x_sq, eligible, stored = tile
    near = jnp.min(_seed_dists(x, x_sq, pend, pend_sq, pend_ok), axis=1)
    return jnp.where(eligible, jnp.minimum(stored, near), 0.0)


def _sub_key(key_data: jax.Array, i: int) -> jax.Array:
    """``key_data(fold_in(K, i))`` for the key ``K`` with data ``key_data``."""
    return threefry_2x32(key_data, jnp.array([0, i], jnp.uint32))


def _propose(weights: jax.Array, csum: jax.Array, key_data: jax.Array) -> jax.Array:
    """A row drawn with probability ``∝`` its stored distance: its rank.

    ``weights`` holds the stored distances in rank order, in tiles of ``T``
    ranks, and ``csum`` their running sums per tile. Two levels: an exponential
    race over the tiles (weights: the tiles' totals; keys ``fold_in(K, 0)`` and
    the tile index), then the inverse CDF inside the winning tile with the
    uniform of ``fold_in(K, 1)``: the first rank of positive weight whose running
    sum exceeds ``u * total`` (XLA's running sums are not exactly monotone, so
    rows of weight 0 are excluded explicitly: they are never drawn). Needs a
    positive total.
    """
    nt, T = csum.shape
    tot = csum[:, -1]
    tiles = jnp.arange(nt, dtype=jnp.int32)
    race = jnp.where(
        tot > 0.0, _log_exp_draws(_sub_key(key_data, 0), tiles) - jnp.log(tot), jnp.inf
    )
    b = min_and_index(race)[1]  # ties to the lower tile
    c, w = csum[b], weights[b]
    u = _uniforms(_sub_key(key_data, 1), jnp.zeros((1,), jnp.int32))[0]
    ranks = jnp.arange(T, dtype=jnp.int32)
    i = jnp.min(jnp.where((w > 0.0) & (c > u * c[-1]), ranks, T))
    # u * total may round up to the total: then the tile's last rank of weight > 0
    last = jnp.max(jnp.where(w > 0.0, ranks, 0))
    return b * T + jnp.where(i < T, i, last)


def _uniform_row(key_data: jax.Array, eligible: jax.Array, rank: jax.Array) -> jax.Array:
    """An eligible row drawn uniformly: the smallest race value keyed by ``rank``."""
    race = jnp.where(eligible, _log_exp_draws(key_data, rank), jnp.inf)
    return min_and_index(race)[1]  # ties to the lower row


def kmeanspp(xt, x_sq, real, eligible, rank, key, k: int) -> jax.Array:
    """k-means++ seeds ``f32[k, d]`` from the tiles ``xt[nt, T, d]`` (squared-L2 weights).

    Draw 0 is uniform over the eligible rows. Draw ``t > 0`` picks a row with
    probability ``∝`` its squared distance ``D`` to the nearest chosen centre
    (uniformly if every ``D`` is 0), by rejection sampling so that the data is
    read once per ``_SEED_PENDING`` centres, not once per draw:

    * stored distances cover the centres folded in so far; the newer ones wait
      in a pending buffer, so a row's stored value ``S >= D``;
    * trial ``j`` (key ``fold_in(fold_in(K, t), j)``) proposes a row ``∝ S``
      (:func:`_propose`) and accepts it when ``u * S < D``, ``u`` the uniform
      of ``fold_in(trial key, 2)`` -- an exact draw ``∝ D``;
    * after ``_SEED_TRIALS`` rejections, or when the buffer is full, the pending
      centres are folded in (one GEMM pass) and then ``S == D``, so the next
      proposal is accepted.

    Distances are computed per fixed tile, proposals over the real rows in rank
    order (tiles of ``T`` ranks) and keyed by tile index or rank, so padding
    rows, wherever they are, change nothing.
    """
    nt, tile, d = xt.shape
    n = nt * tile
    P, J = _SEED_PENDING, _SEED_TRIALS
    x_flat = xt.reshape(n, d)
    x_sq_flat = x_sq.reshape(n)
    elig_flat, rank_flat = eligible.reshape(n), rank.reshape(n)
    by_rank = _rank_order(real.reshape(n))  # rank -> row; padding last
    G = max(1, min(nt, _FLUSH_VALUES // (tile * d)))  # tiles per fold-in step

    def flush(stored, pend, n_pend):
        ok = jnp.arange(P) < n_pend
        consts = (pend, isolated_sq_norms(pend), ok)
        old = stored

        def group(g, out):
            # the last group starts early and overlaps the one before it: those
            # tiles are computed again from the same inputs, so written twice alike
            start = jnp.minimum(g * G, nt - G)
            tiles = tuple(lax.dynamic_slice_in_dim(a, start, G) for a in (xt, x_sq, eligible, old))
            tiles, cs = lax.optimization_barrier((tiles, consts))
            new = jax.vmap(lambda t: _flush_tile(t, *cs))(tiles)
            return lax.dynamic_update_slice_in_dim(out, lax.optimization_barrier(new), start, 0)

        stored = lax.fori_loop(0, -(-nt // G), group, old)
        weights = stored.reshape(n)[by_rank].reshape(nt, tile)
        return stored, (weights, map_tiles(jnp.cumsum, weights))  # the proposal table

    def keep(stored, table, *_):
        return stored, table

    def trial(kd, j, stored, table, pend, n_pend):
        """``(row, accepted)`` of trial ``j``."""
        kj = _sub_key(kd, j)
        row = by_rank[_propose(*table, kj)]
        ok = jnp.arange(P) < n_pend
        near = _seed_dists(
            x_flat[row][None], x_sq_flat[row][None], pend, isolated_sq_norms(pend), ok
        )
        s = stored.reshape(n)[row]
        dist = jnp.minimum(s, jnp.min(near))
        u = _uniforms(_sub_key(kj, 2), jnp.zeros((1,), jnp.int32))[0]
        return row, u * s < dist

    def accept_loop(stored, table, t, cents, pend, n_pend):
        """Steps ``t, t + 1, ...`` while their draws are accepted by a trial and
        the pending buffer has room: ``(t, cents, pend, n_pend, failed)``, where
        ``failed`` marks a step ``t`` whose trials were all rejected (not taken).

        The stored distances and the proposal table are constants here: an XLA
        CPU conditional that returns them copies them.
        """
        positive = jnp.any(table[1][:, -1] > 0.0)

        def cond(c):
            t, _, _, n_pend, failed = c
            return (t < k) & (n_pend < P) & ~failed

        def body(c):
            t, cents, pend, n_pend, _ = c
            kd = jax.random.key_data(jax.random.fold_in(key, t))

            def trial_cond(tc):
                j, accepted, _ = tc
                return positive & ~accepted & (j < J)

            def trial_body(tc):
                j = tc[0]
                row, accepted = trial(kd, j, stored, table, pend, n_pend)
                return j + 1, accepted, row

            _, accepted, row = lax.while_loop(
                trial_cond, trial_body, (jnp.int32(0), jnp.bool_(False), jnp.int32(0))
            )
            c_new = x_flat[row]
            cents = jnp.where(accepted, cents.at[t].set(c_new), cents)
            pend = jnp.where(accepted, pend.at[n_pend].set(c_new), pend)
            n_acc = accepted.astype(jnp.int32)
            return t + n_acc, cents, pend, n_pend + n_acc, ~accepted

        return lax.while_loop(cond, body, (t, cents, pend, n_pend, jnp.bool_(False)))

    def segment(carry):
        """Fold the pending centres in (the buffer is full, the first draw is
        next, or a draw was rejected ``J`` times); finish a rejected draw from
        the new table; then run :func:`accept_loop`."""
        t, cents, stored, table, pend, n_pend, failed = carry
        stored, table = lax.cond(
            n_pend > 0, lambda *a: flush(*a[:1], *a[2:]), keep, stored, table, pend, n_pend
        )

        def settle(cents, pend):
            kd = jax.random.key_data(jax.random.fold_in(key, t))
            row = lax.cond(
                jnp.any(table[1][:, -1] > 0.0),
                lambda: by_rank[_propose(*table, _sub_key(kd, J))],
                lambda: _uniform_row(kd, elig_flat, rank_flat),
            )
            return cents.at[t].set(x_flat[row]), pend.at[0].set(x_flat[row])

        cents, pend = lax.cond(failed, settle, lambda c, p: (c, p), cents, pend)
        # the buffer was folded in: a settled draw is its only entry
        t, n_pend = t + failed.astype(jnp.int32), failed.astype(jnp.int32)
        t, cents, pend, n_pend, failed = accept_loop(stored, table, t, cents, pend, n_pend)
        return t, cents, stored, table, pend, n_pend, failed

    first = _uniform_row(jax.random.key_data(jax.random.fold_in(key, 0)), elig_flat, rank_flat)
    c0 = x_flat[first]
    init = (
        jnp.int32(1),
        jnp.zeros((k, d), jnp.float32).at[0].set(c0),
        jnp.where(eligible, jnp.inf, 0.0).astype(jnp.float32),
        (jnp.zeros((nt, tile), jnp.float32), jnp.zeros((nt, tile), jnp.float32)),
        jnp.zeros((P, d), jnp.float32).at[0].set(c0),
        jnp.int32(1),
        jnp.bool_(False),
    )
    return lax.while_loop(lambda c: c[0] < k, segment, init)[1]


def random_init(x_flat, eligible, rank, key, k: int) -> jax.Array:
    """``k`` distinct eligible rows: those with the smallest draw-0 uniforms (the
    k-means++ first centre is the first of them). With fewer than ``k`` eligible
    rows the chosen ones repeat in order."""
    u = _uniforms(jax.random.key_data(jax.random.fold_in(key, 0)), rank)
    u = jnp.where(eligible, u, jnp.inf)
    _, sel = lax.optimization_barrier(lax.top_k(-u, k))  # ties to the lower row
    n_ok = jnp.maximum(jnp.sum(eligible.astype(jnp.int32)), 1)
    sel = sel[jnp.arange(k) % jnp.minimum(n_ok, k)]
    return x_flat[sel]
