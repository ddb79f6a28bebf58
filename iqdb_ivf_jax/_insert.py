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
from ._entries import EntryTable
from ._layout import BlockLayout, pow2_at_least
from ._metrics import row_norms
from ._pq import pq_decode, pq_encode_fast, residual_terms
from ._sharding import host_array
from ._spill import spill_assign
from ._state import IvfState, storage_blocks
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
        vectors.at[b, r].set(x, mode="drop") if vectors.shape[2] else vectors,
        nrm.at[b, r].set(norms, mode="drop") if nrm.shape[1] else nrm,
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
    b[: len(slots)] = storage_blocks(slots // B, state.n_blocks, state.interleave)
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


@jax.jit
def _gather(state: IvfState, b: jax.Array, r: jax.Array):
    terms = state.pq_terms[b, r] if state.keeps_pq_terms else jnp.zeros((b.shape[0], 0))
    norms = state.norms[b, r] if state.keeps_norms else jnp.zeros((b.shape[0], 0))
    return state.vectors[b, r], norms, state.codes[b, r], terms


def read_rows(state: IvfState, slots: np.ndarray):
    """The stored ``(x, norms, codes, terms)`` of ``slots`` (host ``int[n]``), on
    the device and padded to :func:`padded_rows` as :func:`write_rows` takes
    them: writing them to new slots moves rows without re-assigning or
    re-encoding. ``x`` and ``norms`` are ``[n_pad, 0]`` for codes-only IVF-PQ, ``terms``
    ``[n_pad, 0]`` where the state keeps none."""
    n_pad = padded_rows(len(slots))
    b, r = _split(state, np.asarray(slots), n_pad)
    b = np.minimum(b, state.n_blocks - 1)  # padding rows read a real row, unused
    return _gather(state, b, r)


@jax.jit
def _reconstruct(state: IvfState, b: jax.Array, r: jax.Array, lists: jax.Array) -> jax.Array:
    x = pq_decode(state.codes[b, r], state.codebooks)
    if state.by_residual:
        x = x + state.centroids[lists]
    return x


def reconstruct_rows(state: IvfState, slots: np.ndarray, lists: np.ndarray) -> np.ndarray:
    """Host ``f32[n, d]``: the IVF-PQ reconstruction of ``slots`` (the decoded
    code, plus the centroid of the row's list ``lists[i]`` when by residual)."""
    n = len(slots)
    n_pad = padded_rows(n)
    b, r = _split(state, np.asarray(slots), n_pad)
    b = np.minimum(b, state.n_blocks - 1)
    lp = np.zeros(n_pad, np.int32)
    lp[:n] = lists
    return host_array(_reconstruct(state, b, r, lp))[:n]


def clear_rows(state: IvfState, slots: np.ndarray, *, donate: bool) -> IvfState:
    """Mark ``slots`` as not live."""
    n_pad = pow2_at_least(len(slots))
    b, r = _split(state, np.asarray(slots), n_pad)
    fn = _clear_donated if donate else _clear_copy
    return state.replace(valid=fn(state.valid, b, r))


def prepare_entries(state: IvfState, x: np.ndarray, spill_lambda: float | None):
    """Everything :func:`write_entries` needs for host rows ``x`` ``f32[n, d]``.

    Returns:
        ``(labels, rows, spill)``: the rows' lists (host ``int64[n]``); the padded
        device rows, norms, PQ codes and residual terms that :func:`write_rows`
        takes; and, when the state spills, ``(spilled lists int64[n], codes,
        terms)`` of the spilled copies (else None).
    """
    n = x.shape[0]
    m = state.codes.shape[-1]
    if n == 0:
        empty = (np.zeros(0, np.int64), np.zeros((0, m), np.uint8), np.zeros(0, np.float32))
        rows = (x, np.zeros(0, np.float32), *empty[1:])
        return empty[0], rows, (empty if state.spills else None)
    xd = device_rows(x, padded_rows(n))
    quant = state.quantizers()  # not the rows: growing the pool recompiles nothing here
    labels, norms, codes, terms = prepare_rows(quant, xd, np.int32(n))
    spill = None
    if state.spills:
        lam = np.float32(spill_lambda)
        lists, codes2, terms2 = prepare_spill(quant, xd, labels, lam, np.int32(n))
        spill = (np.asarray(lists)[:n].astype(np.int64), codes2, terms2)
    return np.asarray(labels)[:n].astype(np.int64), (xd, norms, codes, terms), spill


def allocate_slots(layout: BlockLayout, labels: np.ndarray, seqs: np.ndarray) -> np.ndarray:
    """Slots for rows bound for lists ``labels``: each list's new rows fill its
    blocks contiguously, in seq order."""
    order = np.lexsort((seqs, labels)) if labels.size else np.zeros(0, np.int64)
    slots = np.empty(labels.size, np.int64)
    slots[order] = layout.allocate(labels[order])
    return slots


def write_entries(state, slots, rows, seqs, slots2, spill, labels, *, donate: bool):
    """Write entries into their own ``slots`` and, with ``spill`` (from
    :func:`prepare_entries`), their spilled copies into ``slots2`` (``twin`` = own list)."""
    x, norms, codes, terms = rows
    state = write_rows(state, slots, x, norms, codes, terms, seqs, donate=donate)
    if spill is None:
        return state
    _, codes2, terms2 = spill
    return write_rows(state, slots2, x, norms, codes2, terms2, seqs, labels, donate=True)


def table_arrays(layout: BlockLayout) -> dict:
    """Device copies of the layout's block table (copies: the layout changes its
    arrays in place; ``jnp.asarray`` would compile a copy program per shape)."""
    return {
        "list_blocks": jax.device_put(layout.list_blocks, may_alias=False),
        "list_nblocks": jax.device_put(layout.list_nblocks, may_alias=False),
    }


def compacted(
    state: IvfState, layout: BlockLayout, entries: EntryTable, block_size: int | None = None
) -> tuple[IvfState, BlockLayout, EntryTable]:
    """The live entries moved into a fresh layout without holes (of blocks of
    ``block_size`` rows; default: the state's).

    Rows are moved as stored (lists, codes, norms, terms, spill twins), never
    re-assigned or re-encoded, so codes-only IVF-PQ compacts without raw vectors;
    the result equals a fresh insert of the live entries in seq order, so the
    move is unobservable. Pure: the inputs are not changed.
    """
    own = entries.live_slots()
    seqs = entries.slot_seq[own]
    labels = layout.list_of(own).astype(np.int64)
    twin = entries.slot_twin[own] if entries.slot_twin.size else None
    B = state.block_size if block_size is None else block_size
    new_layout = BlockLayout(state.n_lists, B)
    slots = allocate_slots(new_layout, labels, seqs)
    slots2 = None if twin is None else allocate_slots(new_layout, layout.list_of(twin), seqs)
    new = IvfState.create(
        state.centroids,
        metric=state.metric,
        codebooks=state.codebooks if state.is_pq else None,
        by_residual=state.by_residual,
        block_size=B,
        spill=state.spills,
        keep_vectors=state.keeps_vectors,
    ).grown(new_layout.n_blocks)
    x, norms, codes, terms = read_rows(state, own)
    new = write_rows(new, slots, x, norms, codes, terms, seqs, donate=True)
    if twin is not None:
        x, norms, codes, terms = read_rows(state, twin)
        new = write_rows(new, slots2, x, norms, codes, terms, seqs, labels, donate=True)
    new = new.replace(**table_arrays(new_layout))
    ids = entries.ids_for_slots(own)
    new_entries = EntryTable(new_layout.n_blocks * B, spills=twin is not None)
    new_entries.bind(ids, slots, [entries.meta.get(i) for i in ids], seqs, slots2=slots2)
    return new, new_layout, new_entries
