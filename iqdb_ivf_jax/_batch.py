"""List-major batch search: score each probed list against all its queries as one
dense matrix product.

The query-major path re-reads every probed list once per query (memory bound).
For a large batch many queries probe the same list, so here the (query, list)
pairs are grouped by list and each list is scored against a *tile* of up to
``Qt`` of its queries with one GEMM, keeping ``k + margin`` candidates per pair.

Shapes are bounded and bucketed: lists fall into size classes (their block count
rounded up by :func:`scan_bucket`, at most +25%), each class runs as one jitted
``lax.map`` over its (list, query-tile) units, and the unit count is padded to a
power of two. A final kernel merges the candidates of each query, re-scores the
best ``k + margin`` exactly (the same elementwise kernel as the query-major path,
so reported distances are bit-identical to it) and keeps the top ``k`` by
``(distance, seq)``.

GEMM distances (expanded ``|q|^2 - 2 q.x + |x|^2``) differ from the exact ones
by rounding only; the ``margin`` extra candidates absorb that, so both paths
return the same hits except for candidates within float32 rounding of the k-th
distance. Used for EUCLIDEAN, COSINE and DOT_PRODUCT in IVF-Flat.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._config import Metric
from ._layout import BlockLayout, pow2_at_least, scan_bucket
from ._metrics import RESCORE_MARGIN, distances, distances_from_dot, row_norms
from ._state import IvfState
from ._topk import smallest_k

GEMM_METRICS = (Metric.EUCLIDEAN, Metric.COSINE, Metric.DOT_PRODUCT)
_HIGHEST = lax.Precision.HIGHEST


@functools.partial(jax.jit, static_argnames=("n_blocks", "kp"), donate_argnames=("buf_d", "buf_s"))
def scan_class(
    state: IvfState,
    queries: jax.Array,
    q_norms: jax.Array,
    mask: jax.Array,
    unit_list: jax.Array,
    unit_q: jax.Array,
    unit_dest: jax.Array,
    buf_d: jax.Array,
    buf_s: jax.Array,
    *,
    n_blocks: int,
    kp: int,
) -> tuple[jax.Array, jax.Array]:
    """Score units of one size class.

    Args:
        state: index state.
        queries: ``f32[nq_pad, d]`` all queries of the batch.
        q_norms: ``f32[nq_pad]`` their norms.
        mask: ``bool[n_blocks_total, B]`` allowed rows.
        unit_list: ``i32[U]`` list of each unit.
        unit_q: ``i32[U, Qt]`` query rows of each unit (``-1`` = padding).
        unit_dest: ``i32[U, Qt]`` pair row ``query * P + probe`` in the buffers
            (out of range = dropped).
        buf_d, buf_s: ``[nq_pad * P, kp]`` candidate buffers (donated).
        n_blocks: static block count of this class (>= every unit's list).
        kp: static candidates kept per (query, list) pair.

    Returns:
        The buffers with this class's ``kp`` approximate candidates per pair.
    """
    B = state.block_size

    def unit(args):
        lst, qrows = args
        blk = state.list_blocks[lst, :n_blocks] if n_blocks <= state.table_width else jnp.pad(
            state.list_blocks[lst], (0, n_blocks - state.table_width), constant_values=-1
        )
        safe = jnp.maximum(blk, 0)
        x = state.vectors[safe].reshape(n_blocks * B, -1)
        xn = state.norms[safe].reshape(-1)
        ok = ((blk >= 0)[:, None] & state.valid[safe] & mask[safe]).reshape(-1)
        seq = state.seqs[safe].reshape(-1)
        slot = (safe[:, None] * B + jnp.arange(B, dtype=jnp.int32)[None, :]).reshape(-1)
        qv = queries[jnp.maximum(qrows, 0)]
        qx = lax.dot_general(qv, x, (((1,), (1,)), ((), ())), precision=_HIGHEST)
        dist = distances_from_dot(state.metric, qx, q_norms[jnp.maximum(qrows, 0)][:, None], xn[None, :])
        d, pos = jax.vmap(lambda row: smallest_k(row, seq, ok, kp))(dist)
        return d, jnp.where(pos >= 0, slot[jnp.maximum(pos, 0)], -1)

    d, sl = lax.map(unit, (unit_list, unit_q))
    dest = unit_dest.reshape(-1)
    return (
        buf_d.at[dest].set(d.reshape(-1, kp), mode="drop"),
        buf_s.at[dest].set(sl.reshape(-1, kp), mode="drop"),
    )


@functools.partial(jax.jit, static_argnames=("rows", "kp"))
def empty_buffers(*, rows: int, kp: int) -> tuple[jax.Array, jax.Array]:
    """Candidate buffers ``(f32[rows, kp] = +inf, i32[rows, kp] = -1)``."""
    return jnp.full((rows, kp), jnp.inf, jnp.float32), jnp.full((rows, kp), -1, jnp.int32)


@functools.partial(jax.jit, static_argnames=("k", "kp", "n_pairs_per_query"))
def merge_rescore(
    state: IvfState,
    queries: jax.Array,
    buf_d: jax.Array,
    buf_s: jax.Array,
    *,
    k: int,
    kp: int,
    n_pairs_per_query: int,
) -> tuple[jax.Array, jax.Array]:
    """Gather candidates per query, keep ``kp`` by approximate distance, re-score
    them exactly, return the top ``k`` by ``(distance, seq)``.

    Args:
        buf_d, buf_s: ``[nq * P, kp]`` candidates of each (query, probe) pair.

    Returns:
        ``(f32[nq, k], i32[nq, k])``, padded ``(+inf, -1)``.
    """
    nq = queries.shape[0]
    P = n_pairs_per_query
    buf_d = buf_d.reshape(nq, P * kp)
    buf_s = buf_s.reshape(nq, P * kp)
    B = state.block_size

    def one(q, drow, srow):
        safe = jnp.maximum(srow, 0)
        seq = state.seqs[safe // B, safe % B]
        _, pos = smallest_k(drow, seq, srow >= 0, kp)
        short = jnp.where(pos >= 0, srow[jnp.maximum(pos, 0)], -1)
        s2 = jnp.maximum(short, 0)
        b, r = s2 // B, s2 % B
        exact = distances(q, state.vectors[b, r], state.norms[b, r], state.metric)
        d, p2 = smallest_k(exact, state.seqs[b, r], short >= 0, k)
        return d, jnp.where(p2 >= 0, short[jnp.maximum(p2, 0)], -1)

    return jax.vmap(one)(queries, buf_d, buf_s)


@jax.jit
def _norms(queries: jax.Array) -> jax.Array:
    return row_norms(queries)


def plan_units(probes: np.ndarray, layout: BlockLayout, tile: int):
    """Group ``(query, probe)`` pairs by list into units of up to ``tile`` queries.

    Returns:
        A list of ``(n_blocks, unit_list i32[U], unit_q i32[U, tile], unit_dest i32[U, tile])``
        per size class; ``unit_dest`` is ``query * P + probe`` or ``-1``.
    """
    nq, P = probes.shape
    lst = probes.reshape(-1).astype(np.int64)
    dest = np.arange(nq * P, dtype=np.int64)
    nb = layout.list_nblocks.astype(np.int64)
    keep = nb[lst] > 0
    lst, dest = lst[keep], dest[keep]
    order = np.argsort(lst, kind="stable")
    lst, dest = lst[order], dest[order]
    if lst.size == 0:
        return []
    starts = np.searchsorted(lst, lst, side="left")
    rank = np.arange(lst.size) - starts
    new_unit = rank % tile == 0
    unit_id = np.cumsum(new_unit) - 1
    col = rank % tile
    n_units = int(unit_id[-1]) + 1
    u_list = lst[new_unit]
    u_q = np.full((n_units, tile), -1, np.int32)
    u_dest = np.full((n_units, tile), -1, np.int64)
    u_q[unit_id, col] = dest // P
    u_dest[unit_id, col] = dest
    classes = np.array([scan_bucket(int(b)) for b in nb[u_list]])
    out = []
    for c in np.unique(classes):
        sel = np.nonzero(classes == c)[0]
        out.append((int(c), u_list[sel].astype(np.int32), u_q[sel], u_dest[sel]))
    return out


def list_major_search(
    state: IvfState,
    layout: BlockLayout,
    queries: np.ndarray,
    probes: np.ndarray,
    mask: jax.Array,
    *,
    k: int,
    tile: int = 32,
    margin: int = RESCORE_MARGIN,
):
    """Search a batch list-major.

    Args:
        queries: ``f32[nq, d]`` host queries.
        probes: ``i32[nq, P]`` their probed lists.

    Returns:
        Host ``(D f32[nq, k], slots i64[nq, k])`` and the number of
        (query, row) scores computed, padding included.
    """
    nq, P = probes.shape
    kp = k + margin
    nq_pad = pow2_at_least(nq)
    q_pad = np.zeros((nq_pad, queries.shape[1]), np.float32)
    q_pad[:nq] = queries
    q_dev = jnp.asarray(q_pad)
    qn = _norms(q_dev)
    drop = nq_pad * P
    buf_d, buf_s = empty_buffers(rows=drop, kp=kp)
    scored = 0
    for n_blocks, u_list, u_q, u_dest in plan_units(probes, layout, tile):
        U = u_list.shape[0]
        U_pad = scan_bucket(U)
        ul = np.zeros(U_pad, np.int32)
        ul[:U] = u_list
        uq = np.full((U_pad, tile), -1, np.int32)
        uq[:U] = u_q
        ud = np.full((U_pad, tile), drop, np.int32)
        ud[:U] = np.where(u_dest >= 0, u_dest, drop)
        buf_d, buf_s = scan_class(
            state, q_dev, qn, mask, ul, uq, ud, buf_d, buf_s, n_blocks=n_blocks, kp=kp
        )
        scored += U * n_blocks * state.block_size * tile
    D, S = merge_rescore(state, q_dev, buf_d, buf_s, k=k, kp=kp, n_pairs_per_query=P)
    return np.asarray(D)[:nq], np.asarray(S)[:nq].astype(np.int64), scored
