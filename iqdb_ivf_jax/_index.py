"""`IvfIndex`: the mutable shell around the pure kernels.

It validates input on the host, calls jitted kernels, swaps in new
:class:`IvfState` pytrees, and keeps the host-side bookkeeping: id <-> slot maps,
metadata, insertion sequence numbers and the block layout.
"""

import dataclasses
import functools
import math
import sys
from fractions import Fraction

import jax
import numpy as np

from . import _kernels
from ._assign import assign, coarse_kind
from ._config import IvfConfig, Metric
from ._errors import (
    DuplicateIdError,
    InvalidConfigError,
    InvalidMetricError,
    NotFoundError,
)
from ._index_search import SearchRunner
from ._kmeans import coarse_key, kmeans_fit, pq_key, subsample_indices
from ._layout import BlockLayout, pow2_at_least
from ._pq import pq_train
from ._records import IndexStats, IvfClusterStats
from ._state import IvfState
from ._topk import SEQ_LIMIT
from ._validate import (
    as_vector_array,
    canonical_id,
    canonical_metadata,
    check_finite,
    metadata_bytes,
)

_NOT_TRAINED = "index is not trained; call train(sample) first"
_I63 = 1 << 63


@functools.partial(jax.jit, static_argnames=("kind",))
def _residuals(x: jax.Array, centroids: jax.Array, kind: str) -> jax.Array:
    """Rows minus the centroid of the list each is assigned to (PQ by residual)."""
    return x - centroids[assign(x, centroids, kind)]


def _canonical_each(values, canonical, name: str) -> list:
    """``canonical(v)`` for each value; an error names the first bad position."""
    out = []
    for pos, v in enumerate(values):
        try:
            out.append(canonical(v))
        except (TypeError, InvalidConfigError) as e:
            raise type(e)(f"{name}[{pos}]: {e}") from None
    return out


def _canonical_int_ids(ids) -> list | None:
    """Fast path of :func:`canonical_id` for an integer NumPy array of ids: the ids
    as Python ints, or None to take the general path (other types, or a bad id,
    which the general path reports by position)."""
    if not isinstance(ids, np.ndarray) or ids.ndim != 1 or ids.dtype.kind not in "iu":
        return None
    if ids.dtype.kind == "i" and ids.size and int(ids.min()) < 0:
        return None
    return ids.tolist()


def _allocate(layout: BlockLayout, labels: np.ndarray, seqs: np.ndarray) -> np.ndarray:
    """Slots for rows bound for lists ``labels``: each list's new rows fill its
    blocks contiguously, in seq order."""
    order = np.lexsort((seqs, labels)) if labels.size else np.zeros(0, np.int64)
    slots = np.empty(labels.size, np.int64)
    slots[order] = layout.allocate(labels[order])
    return slots


def _write_entries(state, slots, rows, seqs, slots2, spill, labels, *, donate: bool):
    """Write entries into their own ``slots`` and, with ``spill`` (from
    ``IvfIndex._prepare``), their spilled copies into ``slots2`` (``twin`` = own list)."""
    state = _kernels.write_rows(state, slots, *rows, seqs, donate=donate)
    if spill is None:
        return state
    x, norms = rows[:2]
    return _kernels.write_rows(state, slots2, x, norms, *spill[1:], seqs, labels, donate=True)


def _choose_block_size(n: int, n_lists: int) -> int:
    """Rows per block: about an eighth of the mean list, between 8 and 64."""
    return int(min(64, pow2_at_least(math.ceil(n / (8 * n_lists)), 8)))


class IvfIndex(SearchRunner):
    """An inverted-file (IVF) approximate nearest-neighbour index on JAX.

    IVF-Flat scans the probed lists exactly; IVF-PQ scores them by ADC on
    product-quantized codes and optionally re-ranks ``pq_refine_factor * k``
    candidates exactly. Distances are smaller-is-nearer and ties go to the
    earlier insert.

    >>> import numpy as np
    >>> from iqdb_ivf_jax import IvfIndex, IvfConfig
    >>> idx = IvfIndex(2, "euclidean", IvfConfig(n_clusters=2, n_probes=2, seed=7))
    >>> idx.train(np.array([[0.0, 0.0], [10.0, 10.0]]))
    >>> idx.insert(1, [0.0, 0.0]); idx.insert(2, [10.0, 10.0])
    >>> [h.id for h in idx.search([0.0, 0.0], k=1)]
    [1]

    Args:
        dim: vector length (``>= 1``).
        metric: a :class:`Metric` or its lowercase name.
        config: an :class:`IvfConfig` (``None`` = defaults).

    Raises:
        InvalidConfigError: bad ``dim`` or config, or ``pq_subvectors`` not
            dividing ``dim``.
        InvalidMetricError: unknown metric, or COSINE/HAMMING with PQ.

    See also: :mod:`iqdb_ivf_jax.functional` for the pure kernels.
    """

    def __init__(self, dim: int, metric: "Metric | str", config: IvfConfig | None = None):
        if isinstance(dim, (bool, np.bool_)) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise InvalidConfigError(f"dim must be an int >= 1, got {dim!r}")
        metric = Metric.parse(metric)
        if config is None:
            config = IvfConfig()
        if not isinstance(config, IvfConfig):
            raise TypeError(f"config must be an IvfConfig or None, got {type(config).__name__}")
        config.validate()
        if config.use_pq and metric in (Metric.COSINE, Metric.HAMMING):
            raise InvalidMetricError(
                f"IVF-PQ does not support {metric.value}; use euclidean, dot_product or "
                "manhattan (for cosine, normalise the vectors and use dot_product)"
            )
        if config.use_pq and int(dim) % config.pq_subvectors:
            raise InvalidConfigError(
                f"pq_subvectors ({config.pq_subvectors}) must divide dim ({int(dim)})"
            )
        self._dim = int(dim)
        self._metric = metric
        self._config = config
        self._state: IvfState | None = None
        self._layout: BlockLayout | None = None
        self._state_exported = False
        self._kmeans_iterations = 0
        self._kmeans_inertia: float | None = None
        self._last_scan: dict | tuple | None = None
        # the last list-major score buffer, kept for reuse (at most the chunk budget)
        self._scratch: list[jax.Array] = []
        self._clear_entries()

    # ------------------------------------------------------------------ basics
    def _clear_entries(self, n_slots: int = 0) -> None:
        self._id_slot: dict = {}
        self._slot_id: list = [None] * n_slots
        # slot -> id as int64 where the id is an int below 2**63 (-1 elsewhere):
        # search_arrays maps slots to ids with one gather while every id is one
        self._slot_int = np.full(n_slots, -1, np.int64)
        self._slot_seq = np.zeros(n_slots, np.int64)
        # spilled assignment: a vector's own slot <-> its spilled slot (-1: none);
        # empty for an index that does not spill
        spills = self._config.spill_lambda is not None
        self._slot_twin = np.full(n_slots if spills else 0, -1, np.int64)
        self._meta: dict = {}  # id -> metadata, for ids that have some
        self._meta_bytes = 0
        self._n_wide_ids = 0  # live ids that are not ints below 2**63
        self._next_seq = 0
        self._version = 0
        self._mask_cache: dict = {}

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def metric(self) -> Metric:
        return self._metric

    @property
    def config(self) -> IvfConfig:
        return self._config

    @property
    def is_trained(self) -> bool:
        return self._state is not None

    @property
    def n_probes(self) -> int:
        return self._config.n_probes

    @property
    def pq_refine_factor(self) -> int:
        return self._config.pq_refine_factor

    @property
    def state(self) -> IvfState:
        """The current :class:`IvfState` pytree (for :mod:`iqdb_ivf_jax.functional`).

        It stays valid after later mutations (the next write copies instead of
        updating in place). Slot ``s`` of a result maps back to an id with
        :meth:`ids_for_slots`; ``-1`` is padding.

        Raises:
            InvalidConfigError: if the index is untrained.
        """
        self._require_trained()
        self._state_exported = True
        return self._state

    def __len__(self) -> int:
        return len(self._id_slot)

    def is_empty(self) -> bool:
        return not self._id_slot

    def __contains__(self, id_) -> bool:
        try:
            return canonical_id(id_) in self._id_slot
        except (TypeError, ValueError, OverflowError):  # not an id: never present
            return False

    def flush(self) -> None:
        """No-op (the index is in memory); kept for API parity."""

    def _require_trained(self) -> None:
        if self._state is None:
            raise InvalidConfigError(_NOT_TRAINED)

    # ---------------------------------------------------------------- settings
    def set_n_probes(self, n: int) -> None:
        """Set the lists scanned per query (faiss ``nprobe``)."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            raise TypeError(f"n_probes must be an int, got {type(n).__name__}")
        if n < 1:
            raise InvalidConfigError(f"n_probes must be n >= 1, got {n}")
        if n > self._config.n_clusters:
            raise InvalidConfigError(
                f"n_probes ({n}) must be <= n_clusters ({self._config.n_clusters})"
            )
        self._config = dataclasses.replace(self._config, n_probes=int(n))

    def set_pq_refine_factor(self, n: int) -> None:
        """Set the PQ re-rank factor (0 = ADC distances; unused in Flat mode)."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            raise TypeError(f"pq_refine_factor must be an int, got {type(n).__name__}")
        if n < 0:
            raise InvalidConfigError(f"pq_refine_factor must be >= 0, got {n}")
        self._config = dataclasses.replace(self._config, pq_refine_factor=int(n))

    # ---------------------------------------------------------------- training
    def _working_set_size(self, n: int) -> int:
        return min(n, self._config.training_sample_size)

    def _check_train_sizes(self, n: int) -> None:
        cfg = self._config
        if n < cfg.n_clusters:
            raise InvalidConfigError(
                f"training needs at least n_clusters ({cfg.n_clusters}) vectors, got {n}"
            )
        if cfg.use_pq and self._working_set_size(n) < 256:
            raise InvalidConfigError(
                f"IVF-PQ training needs at least 256 vectors (256 codewords per "
                f"subvector), got {self._working_set_size(n)}"
            )

    def _fit(self, x: np.ndarray):
        """k-means (and PQ) on the seeded working set of ``x`` (rows in order)."""
        cfg = self._config
        idx = subsample_indices(x.shape[0], cfg.training_sample_size, cfg.seed)
        ws = x if idx.size == x.shape[0] else x[idx]  # all rows kept: no copy
        n_pad = pow2_at_least(ws.shape[0], 256)
        xp = _kernels.device_rows(ws, n_pad)
        mask = np.arange(n_pad) < ws.shape[0]
        res = kmeans_fit(
            xp,
            mask,
            coarse_key(cfg.seed),
            n_clusters=cfg.n_clusters,
            max_iter=cfg.kmeans_max_iterations,
            kind=coarse_kind(self._metric),
            init=cfg.kmeans_init,
            padding_is_zero=True,  # device_rows zero-pads
        )
        codebooks = None
        if cfg.use_pq:
            if cfg.pq_by_residual:
                xp = _residuals(xp, res.centroids, coarse_kind(self._metric))
            codebooks = pq_train(
                xp,
                mask,
                pq_key(cfg.seed),
                m=cfg.pq_subvectors,
                max_iter=cfg.kmeans_max_iterations,
                init=cfg.kmeans_init,
            )
        return res, codebooks, ws.shape[0]

    def train(self, sample) -> None:
        """Fit the coarse quantizer (and PQ codebooks) on ``sample`` ``(n, dim)``.

        The sample is neither kept nor inserted. Up to ``training_sample_size``
        rows are drawn with the seeded key.

        Raises:
            InvalidConfigError: already trained ("use retrain()"), an empty
                sample, fewer rows than ``n_clusters``, or < 256 rows with PQ.
            DimensionMismatchError: rows of the wrong length.
            InvalidVectorError: wrong rank/dtype or NaN/Inf.
        """
        if self._state is not None:
            raise InvalidConfigError("index is already trained; use retrain() to refit")
        probe_arr = sample if isinstance(sample, np.ndarray) else None
        if probe_arr is None:
            try:
                n_rows = len(sample)
            except TypeError:
                n_rows = None
        else:
            n_rows = probe_arr.shape[0] if probe_arr.ndim else None
        if n_rows == 0:
            raise InvalidConfigError("train needs a non-empty sample of shape (n, dim)")
        # no private copy: _fit copies the working set into the device buffer
        x = as_vector_array(sample, self._dim, rank=2, what="training sample", copy=False)
        check_finite(x, "training sample")
        self._check_train_sizes(x.shape[0])
        res, codebooks, n_ws = self._fit(x)
        block = _choose_block_size(n_ws, self._config.n_clusters)
        self._install(res, codebooks, block, [], np.zeros((0, self._dim), np.float32), [], [])

    def retrain(self) -> None:
        """Refit on the live vectors (in insertion order), keeping ids, metadata
        and seqs; reassign and re-encode everything. Atomic: on error nothing
        changes. An empty index is a no-op.

        Raises:
            InvalidConfigError: untrained, fewer live vectors than ``n_clusters``,
                or fewer than 256 with PQ.
        """
        self._require_trained()
        if not self._id_slot:
            return
        ids, x, metas, seqs = self._live_entries()
        self._check_train_sizes(x.shape[0])
        res, codebooks, _ = self._fit(x)
        block = _choose_block_size(x.shape[0], self._config.n_clusters)
        next_seq = self._next_seq
        self._install(res, codebooks, block, ids, x, metas, seqs)
        self._next_seq = next_seq

    def _live_entries(self):
        """Live ``(ids, vectors f32[n, d], metadata, seqs)`` in seq order."""
        slots = np.fromiter(self._id_slot.values(), np.int64, len(self._id_slot))
        order = np.argsort(self._slot_seq[slots], kind="stable")
        slots = slots[order]
        B = self._state.block_size
        vec = np.asarray(self._state.vectors)[slots // B, slots % B]
        ids = [self._slot_id[s] for s in slots.tolist()]
        meta = self._meta
        return ids, vec, [meta.get(i) for i in ids], self._slot_seq[slots].copy()

    def _install(self, res, codebooks, block, ids, x, metas, seqs) -> None:
        """Build a fresh state from centroids and entries, then swap it in."""
        n = len(ids)
        n_lists = self._config.n_clusters
        layout = BlockLayout(n_lists, block)
        state = IvfState.create(
            res.centroids,
            metric=self._metric,
            codebooks=codebooks,
            by_residual=self._config.pq_by_residual,
            block_size=block,
            spill=self._config.spill_lambda is not None,
        )
        seqs = np.asarray(seqs, np.int64)
        labels, rows, spill = self._prepare(state, x)
        slots = _allocate(layout, labels, seqs)
        slots2 = None if spill is None else _allocate(layout, spill[0], seqs)
        state = state.grown(layout.n_blocks, layout.width)
        state = _write_entries(state, slots, rows, seqs, slots2, spill, labels, donate=True)
        state = state.replace(**_kernels.table_arrays(layout))
        # -- commit (nothing below can fail on valid input)
        self._state, self._layout, self._state_exported = state, layout, False
        self._kmeans_iterations = int(res.n_iter)
        self._kmeans_inertia = float(res.inertia)
        self._clear_entries(layout.n_blocks * block)
        self._bind_many(list(ids), slots, list(metas), seqs, slots2=slots2)
        self._next_seq = int(max(seqs)) + 1 if n else 0

    def _prepare(self, state: IvfState, x: np.ndarray):
        """Lists (host ``int64[n]``) of rows ``x``; the padded device rows, norms,
        PQ codes and residual terms that :func:`_kernels.write_rows` takes; and,
        when the state spills, ``(spilled lists int64[n], codes, terms)`` of the
        spilled copies (else None)."""
        n = x.shape[0]
        m = state.codes.shape[-1]
        if n == 0:
            empty = (np.zeros(0, np.int64), np.zeros((0, m), np.uint8), np.zeros(0, np.float32))
            rows = (x, np.zeros(0, np.float32), *empty[1:])
            return empty[0], rows, (empty if state.spills else None)
        xd = _kernels.device_rows(x, _kernels.padded_rows(n))
        labels, norms, codes, terms = _kernels.prepare_rows(state, xd, np.int32(n))
        spill = None
        if state.spills:
            lam = np.float32(self._config.spill_lambda)
            lists, codes2, terms2 = _kernels.prepare_spill(state, xd, labels, lam, np.int32(n))
            spill = (np.asarray(lists)[:n].astype(np.int64), codes2, terms2)
        return np.asarray(labels)[:n].astype(np.int64), (xd, norms, codes, terms), spill

    # ------------------------------------------------------------ bookkeeping
    def _bind_many(
        self,
        ids: list,
        slots: np.ndarray,
        metas: list,
        seqs: np.ndarray,
        int_ids: np.ndarray | None = None,
        slots2: np.ndarray | None = None,
    ) -> None:
        """Record new entries: id <-> slot, seq and metadata (bulk updates).

        ``int_ids``: the ids as a non-negative integer array, when they came as one.
        ``slots2``: the entries' spilled slots (they map back to the same ids).
        """
        slot_list = slots.tolist()
        self._id_slot.update(zip(ids, slot_list))
        slot_id = self._slot_id
        for id_, slot in zip(ids, slot_list):
            slot_id[slot] = id_
        self._slot_seq[slots] = seqs
        if int_ids is not None:
            vals, wide = int_ids.astype(np.int64), 0  # uint64 ids >= 2**63 wrap: replaced
            if int_ids.dtype == np.uint64:
                narrow = int_ids < np.uint64(_I63)
                vals, wide = np.where(narrow, vals, -1), int(np.count_nonzero(~narrow))
            self._slot_int[slots] = vals
        else:
            vals = [i if type(i) is int and i < _I63 else -1 for i in ids]
            self._slot_int[slots] = np.array(vals, np.int64)
            wide = vals.count(-1)
        self._n_wide_ids += wide
        if slots2 is not None:
            for id_, slot in zip(ids, slots2.tolist()):
                slot_id[slot] = id_
            self._slot_int[slots2] = self._slot_int[slots]
            self._slot_seq[slots2] = seqs
            self._slot_twin[slots] = slots2
            self._slot_twin[slots2] = slots
        if metas.count(None) < len(metas):
            with_meta = [(i, m) for i, m in zip(ids, metas) if m is not None]
            self._meta.update(with_meta)
            self._meta_bytes += sum(metadata_bytes(m) for _, m in with_meta)

    def _unbind(self, id_) -> list[int]:
        """Forget an entry; returns its slots (the own slot, then a spilled one)."""
        slots = self._entry_slots(id_)
        slot = self._id_slot.pop(id_)
        if self._slot_int[slot] < 0:  # the mirror holds -1 for a live id only if it is wide
            self._n_wide_ids -= 1
        if len(slots) > 1:
            self._slot_twin[slots] = -1
        for s in slots:
            self._slot_id[s] = None
            self._slot_int[s] = -1
        self._meta_bytes -= metadata_bytes(self._meta.pop(id_, None))
        return slots

    def _entry_slots(self, id_) -> list[int]:
        """A live entry's slots: its own, then its spilled copy's if it has one."""
        slot = self._id_slot[id_]
        twin = int(self._slot_twin[slot]) if self._slot_twin.size else -1
        return [slot] if twin < 0 else [slot, twin]

    def _touch(self) -> None:
        self._version += 1
        self._mask_cache.clear()

    def _donate(self) -> bool:
        donate = not self._state_exported
        self._state_exported = False
        return donate

    # ------------------------------------------------------------------ insert
    def insert(self, id, vector, metadata=None) -> None:
        """Insert one vector ``(dim,)`` under a new id, with optional metadata.

        Raises:
            InvalidConfigError: untrained, or a bad id value.
            TypeError: an id or metadata of the wrong type.
            InvalidVectorError / DimensionMismatchError: bad vector.
            DuplicateIdError: the id is already live.
        """
        self._require_trained()
        id_ = canonical_id(id)
        meta = canonical_metadata(metadata)
        x = as_vector_array(vector, self._dim, rank=1)
        check_finite(x)
        if id_ in self._id_slot:
            raise DuplicateIdError(id_)
        self._add([id_], x[None, :], [meta])

    def insert_batch(self, ids, vectors, metadata=None) -> None:
        """Insert ``n`` vectors ``(n, dim)``; validated whole, applied atomically.

        Args:
            ids: a sequence of ``n`` ids.
            vectors: ``(n, dim)`` array-like.
            metadata: ``None`` or a sequence of ``n`` dicts/None.

        Raises:
            The errors of :meth:`insert`, naming the first bad position;
            InvalidConfigError for unequal lengths; DuplicateIdError for an id
            repeated in the batch or already live. Nothing is inserted on error.
        """
        self._require_trained()
        if isinstance(ids, (str, bytes)) or not hasattr(ids, "__len__"):
            raise TypeError("ids must be a sequence (list, tuple or array) of ids")
        canon = _canonical_int_ids(ids)
        int_ids = None if canon is None else ids
        if canon is None:
            canon = _canonical_each(ids, canonical_id, "ids")
        if metadata is None:
            metas = [None] * len(canon)
        else:
            if isinstance(metadata, dict) or not hasattr(metadata, "__len__"):
                raise TypeError("metadata must be None or a sequence of dicts/None, one per id")
            metas = _canonical_each(metadata, canonical_metadata, "metadata")
        # no private copy: _prepare copies the rows into the device buffer
        x = as_vector_array(vectors, self._dim, rank=2, what="vectors", copy=False)
        if not (len(canon) == x.shape[0] == len(metas)):
            raise InvalidConfigError(
                f"ids ({len(canon)}), vectors ({x.shape[0]}) and metadata ({len(metas)}) "
                "must have equal lengths"
            )
        check_finite(x, "vectors")
        if len(set(canon)) < len(canon) or not self._id_slot.keys().isdisjoint(canon):
            self._raise_first_duplicate(canon)
        if canon:
            self._add(canon, x, metas, int_ids)

    def _raise_first_duplicate(self, ids: list) -> None:
        """Raise DuplicateIdError for the first id that repeats or is live."""
        seen = set()
        for pos, i in enumerate(ids):
            if i in seen:
                raise DuplicateIdError(i, f"ids[{pos}]: id {i!r} repeats inside the batch")
            if i in self._id_slot:
                raise DuplicateIdError(i, f"ids[{pos}]: id {i!r} is already in the index")
            seen.add(i)

    def _add(self, ids: list, x: np.ndarray, metas: list, int_ids=None) -> None:
        n = len(ids)
        if self._next_seq + n >= SEQ_LIMIT:
            raise InvalidConfigError(
                f"sequence numbers exhausted ({SEQ_LIMIT}); retrain() into a new index"
            )
        state = self._state
        labels, rows, spill = self._prepare(state, x)
        layout = self._layout.copy()
        seqs = np.arange(self._next_seq, self._next_seq + n, dtype=np.int64)
        slots = _allocate(layout, labels, seqs)
        slots2 = None if spill is None else _allocate(layout, spill[0], seqs)
        donate = self._donate()
        if layout.n_blocks > state.n_blocks or layout.width > state.table_width:
            state, donate = state.grown(layout.n_blocks, layout.width), True
        state = _write_entries(state, slots, rows, seqs, slots2, spill, labels, donate=donate)
        state = state.replace(**_kernels.table_arrays(layout))
        # -- commit
        self._state, self._layout = state, layout
        grow = layout.n_blocks * layout.block_size - len(self._slot_id)
        if grow > 0:
            self._slot_id.extend([None] * grow)
            self._slot_int = np.concatenate([self._slot_int, np.full(grow, -1, np.int64)])
            self._slot_seq = np.concatenate([self._slot_seq, np.zeros(grow, np.int64)])
            if self._slot_twin.size:
                self._slot_twin = np.concatenate([self._slot_twin, np.full(grow, -1, np.int64)])
        self._bind_many(ids, slots, metas, seqs, int_ids, slots2)
        self._next_seq += n
        self._touch()

    # ------------------------------------------------------------------ delete
    def delete(self, id) -> None:
        """Remove an id; it leaves ``len``, results, ``get`` and ``in`` at once.

        Raises:
            NotFoundError: the id is not live (or the index is untrained).
        """
        id_ = canonical_id(id)
        if id_ not in self._id_slot:
            raise NotFoundError(id_)
        slots = self._entry_slots(id_)
        state = _kernels.clear_rows(self._state, np.array(slots), donate=self._donate())
        self._state = state
        for s in slots:
            self._layout.release(s)
        self._unbind(id_)
        self._touch()
        if self._layout.n_holes > max(1024, len(self._id_slot)):
            self._compact()

    def _compact(self) -> None:
        """Rebuild the layout from the live entries (drops holes); unobservable."""
        ids, x, metas, seqs = self._live_entries()
        res = _kernels.Fitted(self._state.centroids, self._kmeans_iterations, self._kmeans_inertia)
        codebooks = self._state.codebooks if self._state.is_pq else None
        next_seq = self._next_seq
        self._install(res, codebooks, self._state.block_size, ids, x, metas, seqs)
        self._next_seq = next_seq

    # --------------------------------------------------------------------- get
    def get(self, id):
        """Return ``(vector float32 copy, metadata copy or None)``.

        Raises:
            NotFoundError: absent id or untrained index.
        """
        id_ = canonical_id(id)
        if id_ not in self._id_slot:
            raise NotFoundError(id_)
        slot = self._id_slot[id_]
        B = self._state.block_size
        vec = np.array(self._state.vectors[slot // B, slot % B], np.float32)
        meta = self._meta.get(id_)
        return vec, (dict(meta) if meta is not None else None)

    def ids_for_slots(self, slots) -> list:
        """Map slots from :mod:`functional` results back to ids (``-1`` -> None)."""
        return [None if s < 0 else self._slot_id[s] for s in np.asarray(slots).reshape(-1).tolist()]

    # ------------------------------------------------------------ probe tuning
    def suggest_n_probes(self, coverage: float) -> int:
        """Smallest ``n_probes`` whose largest lists hold ``ceil(live * coverage)``
        vectors, in ``[1, n_clusters]``. Pure.

        Raises:
            InvalidConfigError: coverage non-finite or outside ``[0, 1]``.
        """
        if isinstance(coverage, bool) or not isinstance(
            coverage, (int, float, np.floating, np.integer)
        ):
            raise TypeError(f"coverage must be a float, got {type(coverage).__name__}")
        c = float(coverage)
        if not math.isfinite(c) or not 0.0 <= c <= 1.0:
            raise InvalidConfigError(
                f"coverage must be a finite number in [0, 1], got {coverage!r}"
            )
        n_lists = self._config.n_clusters
        if self._state is None or not self._id_slot or n_lists == 1 or c == 0.0:
            return 1
        if c == 1.0:
            return n_lists
        sizes = np.sort(self._layout.list_live)[::-1]
        live = int(sizes.sum())  # rows: spilled copies count
        target = math.ceil(Fraction(repr(c)) * live)
        n = int(np.searchsorted(np.cumsum(sizes), target, side="left")) + 1
        return max(1, min(n_lists, n))

    # ------------------------------------------------------------------- stats
    def cluster_stats(self) -> IvfClusterStats:
        """Live list sizes (``[]`` when untrained) with mean and variance."""
        sizes = [] if self._layout is None else [int(s) for s in self._layout.list_live]
        return IvfClusterStats.from_sizes(self._config.n_clusters, sizes)

    def _memory(self) -> dict[str, int]:
        mem = {} if self._state is None else self._state.nbytes_by_field()
        mem["id_maps"] = (
            sys.getsizeof(self._id_slot)
            + sys.getsizeof(self._slot_id)
            + self._slot_seq.nbytes
            + self._slot_int.nbytes
            + self._slot_twin.nbytes
            + sum(sys.getsizeof(i) for i in self._id_slot)
        )
        mem["metadata"] = sys.getsizeof(self._meta) + self._meta_bytes
        mem["score_buffer"] = sum(b.nbytes for b in self._scratch if not b.is_deleted())
        if self._layout is not None:
            lay = self._layout
            mem["layout"] = (
                lay.list_blocks.nbytes
                + lay.block_list.nbytes
                + lay.block_fill.nbytes
                + lay.list_live.nbytes
            )
        return mem

    def stats(self) -> IndexStats:
        """Totals and IVF details; ``extra["memory"]`` sums to ``memory_bytes``.

        ``extra["padding_ratio"]`` is rows held in the lists' blocks over live
        rows (>= 1; with spilled assignment each vector is two live rows, and
        ``extra["spilled_rows"]`` counts the spilled copies); ``extra["last_search"]`` reports rows actually scanned over
        live rows in the probed lists for the most recent search.
        """
        mem = self._memory()
        live = len(self._id_slot)
        live_rows = 0 if self._layout is None else int(self._layout.list_live.sum())
        extra = {
            "mode": "pq" if self._config.use_pq else "flat",
            "n_clusters": self._config.n_clusters,
            "n_probes": self._config.n_probes,
            "kmeans_init": self._config.kmeans_init,
            "pq_by_residual": self._config.use_pq and self._config.pq_by_residual,
            "spill_lambda": self._config.spill_lambda,
            "spilled_rows": live_rows - live,
            "kmeans_iterations": self._kmeans_iterations,
            "kmeans_inertia": self._kmeans_inertia,
            "tombstones": 0 if self._layout is None else self._layout.n_holes,
            "capacity": 0 if self._state is None else self._state.n_blocks * self._state.block_size,
            "block_size": None if self._state is None else self._state.block_size,
            "padding_ratio": (self._layout.allocated_rows() / live_rows) if live else None,
            "last_search": self._last_search_stats(),
            "memory": mem,
        }
        return IndexStats(live, int(sum(mem.values())), None, "ivf", extra)

    def __repr__(self) -> str:
        mode = "pq" if self._config.use_pq else "flat"
        return (
            f"IvfIndex(dim={self._dim}, metric={self._metric.value!r}, mode={mode!r}, "
            f"n_clusters={self._config.n_clusters}, n={len(self)}, trained={self.is_trained})"
        )
