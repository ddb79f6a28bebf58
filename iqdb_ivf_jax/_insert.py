"""Jitted write-side kernels: prepare rows for insertion, scatter them into the
block pool, clear deleted rows. Batches are padded to powers of two; padding
rows scatter out of bounds and are dropped, so shapes (and compilations)
change rarely."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._assign import MIN_ROWS, assign, coarse_kind
from ._config import Metric
from ._layout import BlockLayout, pow2_at_least
from ._metrics import row_norms
from ._pq import pq_encode_fast, residual_terms
from ._spill import spill_assign
from ._state import IvfState
from ._tiles import tile_rows


class Fitted(NamedTuple):
    """Coarse quantizer result as the index keeps it."""

    centroids: jax.Array
    n_iter: int
    inertia: float | None


@jax.jit
def prepare_rows(state: IvfState, x: jax.Array, n_rows: jax.Array | None = None):
    """``f32[n, d]`` -> ``(lists i32[n], norms f32[n], codes u8[n, M], terms f32[n])``.

    ``terms``: :func:`_pq.residual_terms` where the state keeps them
    (``IvfState.pq_terms``), else zeros. ``n_rows``: rows in use (the rest is
    padding, whose lists are unspecified).
    """
    labels = assign(x, state.centroids, coarse_kind(state.metric), state.centroid_sq, n_rows)
    codes, terms = _encode(state, x, labels, n_rows)
    return labels, stored_norms(x, state.metric), codes, terms


@jax.jit
def prepare_spill(state: IvfState, x: jax.Array, labels: jax.Array, lam: jax.Array, n_rows=None):
    """The spilled copies of rows ``f32[n, d]`` whose own lists are ``labels``:
    ``(lists i32[n], codes u8[n, M], terms f32[n])`` (see :mod:`_spill`)."""
    lists = spill_assign(x, labels, state.centroids, lam, kind=coarse_kind(state.metric))
    return (lists, *_encode(state, x, lists, n_rows))


def _encode(state: IvfState, x: jax.Array, labels: jax.Array, n_rows):
    """PQ codes and residual terms of rows stored in lists ``labels`` (empty for Flat)."""
    terms = jnp.zeros((x.shape[0],), jnp.float32)
    if not state.is_pq:
        return jnp.zeros((x.shape[0], 0), jnp.uint8), terms
    target = x - state.centroids[labels] if state.by_residual else x
    codes = pq_encode_fast(target, state.codebooks, n_rows)
    if state.keeps_pq_terms:
        terms = residual_terms(codes, labels, state.centroids, state.codebooks)
    return codes, terms


def _sum_norms(t: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.sum(t * t, axis=1))


def stored_norms(x: jax.Array, metric: Metric) -> jax.Array:
    """The norms kept in ``IvfState.norms`` for rows ``f32[n, d]``.

    COSINE's exact distances divide by them, so they are :func:`row_norms` (the
    fixed-tree sum the exact kernel and the oracle use). Other metrics use them
    only in the scans' approximate keys (re-scored exactly), so a plain sum does
    (cheaper than the fixed tree), in fixed tiles of ``MIN_ROWS`` rows so their
    bits do not depend on the batch.
    """
    if metric is Metric.COSINE:
        return row_norms(x)
    return tile_rows(_sum_norms, x, (), MIN_ROWS)


def _write(arrays, b, r, x, norms, codes, terms, seqs, twin):
    vectors, nrm, cds, trm, sq, valid, tw = arrays
    return (
        vectors.at[b, r].set(x, mode="drop"),
        nrm.at[b, r].set(norms, mode="drop"),
        cds.at[b, r].set(codes, mode="drop"),
        trm.at[b, r].set(terms, mode="drop") if trm.shape[1] else trm,
        sq.at[b, r].set(seqs, mode="drop"),
        valid.at[b, r].set(True, mode="drop"),
        tw.at[b, r].set(twin, mode="drop") if tw.shape[1] else tw,
    )


_write_donated = jax.jit(_write, donate_argnums=0)
_write_copy = jax.jit(_write)


def _clear(valid, b, r):
    return valid.at[b, r].set(False, mode="drop")


_clear_donated = jax.jit(_clear, donate_argnums=0)
_clear_copy = jax.jit(_clear)


def _split(state: IvfState, slots: np.ndarray, n_pad: int):
    B = state.block_size
    b = np.full(n_pad, state.n_blocks, np.int32)  # out of bounds: dropped
    r = np.zeros(n_pad, np.int32)
    b[: len(slots)] = slots // B
    r[: len(slots)] = slots % B
    return b, r


def padded_rows(n: int) -> int:
    """Rows a batch of ``n`` is padded to (a power of two, at least ``MIN_ROWS``)."""
    return pow2_at_least(n, MIN_ROWS)


def device_rows(x: np.ndarray, n_pad: int) -> jax.Array:
    """``x`` zero-padded to ``n_pad`` rows, on the device, with one host copy.

    The padded copy is 64-byte aligned, so on CPU the device array aliases it
    (``may_alias``) instead of copying again; nothing else holds the copy.
    """
    itemsize = np.dtype(np.float32).itemsize
    nbytes = n_pad * int(np.prod(x.shape[1:], dtype=np.int64)) * itemsize
    raw = np.empty(nbytes + 64, np.uint8)
    off = (-raw.ctypes.data) % 64
    out = raw[off : off + nbytes].view(np.float32).reshape((n_pad,) + x.shape[1:])
    out[: x.shape[0]] = x
    out[x.shape[0] :] = 0.0
    return jax.device_put(out, may_alias=True)


def write_rows(state, slots, x, norms, codes, terms, seqs, twin=None, *, donate: bool) -> IvfState:
    """Scatter rows into ``slots``; with ``donate`` the old arrays are reused.

    ``x``, ``norms``, ``codes`` and ``terms`` hold ``len(slots)`` rows, or are
    already padded to :func:`padded_rows` (as :func:`prepare_rows` returns them
    on the device). ``twin`` (host ``int[len(slots)]``, default ``-1``): the
    rows' :attr:`IvfState.twin` values, kept only by a spilling state.
    """
    n = len(slots)
    if n == 0:
        return state
    n_pad = padded_rows(n)
    b, r = _split(state, np.asarray(slots), n_pad)

    def pad(a, dtype):
        if a.shape[0] == n_pad:
            return a
        out = np.zeros((n_pad,) + a.shape[1:], dtype)
        out[:n] = a
        return out

    arrays = (
        state.vectors,
        state.norms,
        state.codes,
        state.pq_terms,
        state.seqs,
        state.valid,
        state.twin,
    )
    tw = np.full(n, -1, np.int32) if twin is None else np.asarray(twin, np.int32)
    fn = _write_donated if donate else _write_copy
    v, nr, c, t, s, ok, w = fn(
        arrays,
        b,
        r,
        pad(x, np.float32),
        pad(norms, np.float32),
        pad(codes, np.uint8),
        pad(terms, np.float32),
        pad(np.asarray(seqs), np.int32),
        pad(tw, np.int32),
    )
    return state.replace(vectors=v, norms=nr, codes=c, pq_terms=t, seqs=s, valid=ok, twin=w)


def clear_rows(state: IvfState, slots: np.ndarray, *, donate: bool) -> IvfState:
    """Mark ``slots`` as not live."""
    n_pad = pow2_at_least(len(slots))
    b, r = _split(state, np.asarray(slots), n_pad)
    fn = _clear_donated if donate else _clear_copy
    return state.replace(valid=fn(state.valid, b, r))


def table_arrays(layout: BlockLayout) -> dict:
    """Device copies of the layout's block table."""
    return {
        "list_blocks": jnp.asarray(layout.list_blocks),
        "list_nblocks": jnp.asarray(layout.list_nblocks),
    }
