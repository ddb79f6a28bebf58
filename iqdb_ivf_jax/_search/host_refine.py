"""The exact re-rank of IVF-PQ shortlists whose raw vectors live on the host.

An index loaded with ``mmap=True`` keeps its raw vectors in the save's file (a
read-only memory map), not in the state. A search with ``refine`` then runs in
two steps: the device search at ``refine = 0`` returns each query's best
``refine * k`` rows by ``(ADC distance, seq)`` (the very shortlist an in-memory
search re-scores), the host gathers those rows from the map, and
:func:`rerank` scores them exactly and keeps the best ``k`` by
``(exact distance, seq)``, as the in-memory re-score does (the same kernels),
so both give the same results.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from .._insert import padded_rows
from .._layout import pow2_at_least
from .._metrics import distances
from .._state import IvfState
from .query_major import select_exact

_CHUNK = 1024  # queries per re-rank call (bounds the gathered rows in memory)


@functools.partial(jax.jit, static_argnames=("k",))
def rerank(state: IvfState, q: jax.Array, rows: jax.Array, slots: jax.Array, *, k: int):
    """The best ``k`` of each query's shortlist by ``(exact distance, seq)``.

    Args:
        state: the index state (norms and seqs of the shortlisted slots).
        q: ``f32[nq, d]`` queries.
        rows: ``f32[nq, S, d]`` the raw vectors of ``slots`` (anything where -1).
        slots: ``i32[nq, S]`` shortlisted slots, ``-1`` padded.
        k: static, ``k <= S``.

    Returns:
        ``(D f32[nq, k], slots i32[nq, k])``, padded ``(+inf, -1)``.
    """
    B = state.block_size
    safe = jnp.maximum(slots, 0)
    norms, seqs = state.norms[safe // B, safe % B], state.seqs[safe // B, safe % B]

    def one(qi, xi, ni, si, sl):
        return select_exact(distances(qi, xi, ni, state.metric), si, sl, k)

    return jax.vmap(one)(q, rows, norms, seqs, slots)


def rerank_from_host(
    state: IvfState, raw: np.ndarray, q: np.ndarray, slots: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`rerank` of shortlists ``slots`` ``int64[nq, S]`` (``-1`` padded)
    against host raw vectors ``raw`` ``f32[n_blocks, B, d]``, in chunks of
    queries, both axes padded to a power of two. Returns host ``(D f32[nq, k], slots
    int64[nq, k])``."""
    nq, S = slots.shape[0], pow2_at_least(slots.shape[1])  # padded: fewer programs
    B = raw.shape[1]
    D = np.empty((nq, k), np.float32)
    out = np.empty((nq, k), np.int64)
    for s0 in range(0, nq, _CHUNK):
        sl = slots[s0 : s0 + _CHUNK]
        n, n_pad = sl.shape[0], padded_rows(sl.shape[0])
        safe = np.maximum(sl, 0)
        rows = np.zeros((n_pad, S, raw.shape[2]), np.float32)
        rows[:n, : sl.shape[1]] = raw[safe // B, safe % B]  # the only read of the map
        padded = np.full((n_pad, S), -1, np.int32)
        padded[:n, : sl.shape[1]] = sl
        qp = np.zeros((n_pad, q.shape[1]), np.float32)
        qp[:n] = q[s0 : s0 + n]
        d, o = rerank(state, qp, rows, padded, k=k)
        D[s0 : s0 + n] = np.asarray(d)[:n]
        out[s0 : s0 + n] = np.asarray(o)[:n]
    return D, out
