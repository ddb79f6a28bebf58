"""Fixed-tile row kernels shared by k-means, assignment and PQ.

XLA:CPU rounds a reduction or a matrix product differently for different operand
shapes (and vectorises a small reduction differently inside different fusions),
so a row's float32 bits would depend on how many rows share its call. These
helpers run a per-tile function on tiles of a fixed size anchored at row 0, with
optimisation barriers around each tile, so a row's bits depend only on the tile
shape; :func:`batch_invariant` keeps that tiling under ``jax.vmap``.
"""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_batching import custom_vmap


def kept_top_k(x: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """``lax.top_k(x, k)`` with each output behind its own optimisation barrier.

    The barriers keep XLA CPU from fusing top_k's consumers into a slow
    sort-based lowering; one barrier per output, because a barrier over the
    pair reaches XLA's top-k pass as top_k's direct user, which crashes its
    compilation inside ``shard_map`` programs.
    """
    vals, idx = lax.top_k(x, k)
    return lax.optimization_barrier(vals), lax.optimization_barrier(idx)


def _tile_at(tiles, i):
    return jax.tree.map(lambda a: lax.dynamic_index_in_dim(a, i, 0, keepdims=False), tiles)


def scan_tiles(fn: Callable, init, tiles, n_tiles: jax.Array | None = None):
    """``lax.scan(fn, init, tiles)`` written as a ``fori_loop`` over the tile axis.

    The tiles are read with dynamic indexing, so under ``jax.vmap`` (PQ training)
    the batched operands are sliced in place; ``lax.scan`` would move the batch
    axis behind the scanned axis, copying all the data on every call.
    With ``n_tiles`` (a traced count) only the first ``n_tiles`` tiles run; the
    outputs of the others stay zero.

    Returns:
        ``(carry, outs)`` as ``lax.scan`` does.
    """
    nt = jax.tree.leaves(tiles)[0].shape[0]
    spec = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), tiles)
    _, out_spec = jax.eval_shape(fn, init, spec)
    outs = jax.tree.map(lambda o: jnp.zeros((nt,) + o.shape, o.dtype), out_spec)

    def body(i, state):
        carry, outs = state
        carry, out = fn(carry, _tile_at(tiles, i))
        outs = jax.tree.map(lambda o, r: lax.dynamic_update_index_in_dim(o, r, i, 0), outs, out)
        return carry, outs

    return lax.fori_loop(0, nt if n_tiles is None else n_tiles, body, (init, outs))


def map_tiles(fn: Callable, tiles, consts: tuple = (), n_tiles: jax.Array | None = None):
    """``fn(tile, *consts)`` for each tile along the leading axis of ``tiles``
    (only the first ``n_tiles``, if given; the other outputs are zero).

    Inputs and outputs of every tile pass through optimisation barriers, so the
    per-tile computation is compiled alone: a row's bits depend only on the tile
    shape, never on the number of tiles (XLA:CPU otherwise vectorises a small
    reduction differently for different outer shapes) nor on the row's position.
    """

    def body(carry, tile):
        tile, cs = lax.optimization_barrier((tile, consts))
        return carry, lax.optimization_barrier(fn(tile, *cs))

    return scan_tiles(body, (), tiles, n_tiles)[1]


def tile_rows(fn: Callable, x, consts: tuple, tile: int, n_rows: jax.Array | None = None):
    """``fn`` over the rows of ``x`` in tiles of exactly ``tile`` rows.

    Args:
        fn: ``fn(x_tile, *consts) -> out[tile, ...]``; ``x_tile`` has ``x``'s
            structure with ``tile`` rows (see :func:`map_tiles`).
        x: an array ``[n, ...]`` or a tuple of arrays sharing the leading ``n``;
            zero-padded to whole tiles.
        consts: operands passed whole to every tile.
        tile: rows per tile (static).
        n_rows: optional traced count of real rows: tiles past it are skipped and
            their output rows are zero.

    Returns:
        ``out[n, ...]``, row ``i`` computed in the tile holding row ``i``.
    """
    n = jax.tree.leaves(x)[0].shape[0]
    nt = max(1, -(-n // tile))

    def tiles(a):
        a = jnp.pad(a, [(0, nt * tile - n)] + [(0, 0)] * (a.ndim - 1))
        return a.reshape((nt, tile) + a.shape[1:])

    live = None if n_rows is None else (n_rows + tile - 1) // tile
    out = map_tiles(fn, jax.tree.map(tiles, x), consts, live)
    return out.reshape((nt * tile,) + out.shape[2:])[:n]


def min_and_index(v: jax.Array, axis: int = -1) -> tuple[jax.Array, jax.Array]:
    """``(min, index of its first occurrence)`` along ``axis``.

    Same as ``jnp.min`` and ``jnp.argmin`` for NaN-free input, but written as a
    ``min`` and an integer ``min``: XLA:CPU runs ``argmin``'s (value, index)
    reduction serially, which is slower. For a NaN row the index is ``v.shape[axis]``.
    """
    m = jnp.min(v, axis=axis, keepdims=True)
    idx = lax.broadcasted_iota(jnp.int32, v.shape, axis % v.ndim)
    first = jnp.min(jnp.where(v == m, idx, v.shape[axis]), axis=axis)
    return jnp.squeeze(m, axis=axis), first


def two_smallest(v: jax.Array, axis: int = -1) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(min, index of its first occurrence, runner-up)`` along ``axis``: the
    runner-up is the minimum with that one position left out (a tie repeats
    the minimum). Fast kernels compare ``runner-up - min`` with a rounding bound."""
    best, idx = min_and_index(v, axis)
    col = lax.broadcasted_iota(jnp.int32, v.shape, axis % v.ndim)
    second = jnp.min(jnp.where(col == jnp.expand_dims(idx, axis), jnp.inf, v), axis=axis)
    return best, idx, second


def max_and_index(v: jax.Array, axis: int = -1) -> tuple[jax.Array, jax.Array]:
    """``(max, index of its first occurrence)`` along ``axis`` (see :func:`min_and_index`)."""
    m = jnp.max(v, axis=axis, keepdims=True)
    idx = lax.broadcasted_iota(jnp.int32, v.shape, axis % v.ndim)
    first = jnp.min(jnp.where(v == m, idx, v.shape[axis]), axis=axis)
    return jnp.squeeze(m, axis=axis), first


@functools.cache
def batch_invariant(fn: Callable, tile: int) -> Callable:
    """``g(x[n, ...], *consts)``: :func:`tile_rows` that stays tiled under vmap.

    Under ``jax.vmap`` with unbatched ``consts`` the batch axis is folded into the
    rows (``[B, n, ...] -> [B * n, ...]``); with batched ``consts`` the batch runs
    as a ``lax.map``. Either way each row sees the same per-tile computation.
    """

    @custom_vmap
    def g(x, *consts):
        return tile_rows(fn, x, consts, tile)

    @g.def_vmap
    def _rule(axis_size, in_batched, x, *consts):
        x_batched, consts_batched = in_batched[0], in_batched[1:]
        if not x_batched:
            x = jnp.broadcast_to(x, (axis_size,) + x.shape)
        if any(consts_batched):
            consts = tuple(
                c if b else jnp.broadcast_to(c, (axis_size,) + c.shape)
                for c, b in zip(consts, consts_batched)
            )
            return lax.map(lambda a: g(a[0], *a[1]), (x, consts)), True
        b, n = x.shape[:2]
        out = g(x.reshape((b * n,) + x.shape[2:]), *consts)
        return out.reshape((b, n) + out.shape[1:]), True

    return g


def isolated_sq_norms(c: jax.Array) -> jax.Array:
    """``f32[k]`` squared row norms of ``c[k, d]``, compiled apart from any context
    (barriers on both sides), so their bits depend only on ``c``'s shape."""
    c = lax.optimization_barrier(c)
    return lax.optimization_barrier(jnp.sum(c * c, axis=1))


def recheck_rows(x: jax.Array, fast: jax.Array, unsure: jax.Array, exact: Callable) -> jax.Array:
    """``fast`` (one result row per row of ``x``) with the ``unsure`` rows
    replaced by ``exact(x[rows])``.

    The unsure rows are gathered into a buffer of ``max(64, n // 32)`` rows; if
    more are unsure, ``exact(x)`` re-computes every row.
    """
    n = x.shape[0]
    cap = max(64, n // 32)
    count = jnp.sum(unsure)

    def some(_):
        rows = jnp.nonzero(unsure, size=cap, fill_value=0)[0]
        got = exact(x[rows])
        rows = jnp.where(jnp.arange(cap) < count, rows, n)
        return fast.at[rows].set(got, mode="drop")

    def every(_):
        return exact(x)

    return lax.cond(count > cap, every, some, None)
