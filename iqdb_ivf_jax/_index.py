"""`IvfIndex`: the mutable shell around the pure kernels.

It validates input on the host, calls jitted kernels, swaps in new
:class:`IvfState` pytrees, and keeps the host-side bookkeeping: id <-> slot maps,
metadata, insertion sequence numbers and the block layout.
"""

import contextlib
import dataclasses
import functools
import math
from fractions import Fraction
from typing import Any

import jax
import numpy as np

from . import _insert
from ._config import IvfConfig, Metric
from ._entries import EntryTable
from ._errors import (
    DeviceError,
    DuplicateIdError,
    InvalidArgumentError,
    InvalidConfigError,
    InvalidMetricError,
    NotFoundError,
)
from ._filter import as_filter
from ._layout import BlockLayout, pow2_at_least
from ._locks import ReadWriteLock, deferred_interrupt
from ._progress import progress_bar
from ._results import Hit, IndexStats, IvfClusterStats, SearchParams
from ._search.host_refine import rerank_from_host
from ._search.runner import PATHS, SearchRunner
from ._search.topk import SEQ_LIMIT
from ._sharding import DeviceMesh, host_array
from ._state import IvfState, storage_blocks, storage_order
from ._stream import STREAM_CHUNK_ROWS, PendingRows, note_committed
from ._train.quantizers import fit_quantizers
from ._validate import (
    as_vector_array,
    canonical_id,
    canonical_metadata,
    check_finite,
)

_NOT_TRAINED = "index is not trained; call train(sample) first"


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


MAX_K = 1 << 20  # results per query
MAX_RESULTS = 1 << 28  # results per call (queries x k): ~3 GB of distances and ids
MAX_REFINE = 1 << 16  # IVF-PQ re-rank factor


@contextlib.contextmanager
def _device_errors(what: str):
    """Turn a failed device computation into :class:`DeviceError` (the index is
    unchanged: callers commit nothing inside the block before it ends)."""
    try:
        yield
    except jax.errors.JaxRuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        hint = (
            "use a smaller training_sample_size, fewer n_clusters or smaller batches, "
            "or free device memory"
            if "RESOURCE_EXHAUSTED" in str(e) or "memory" in str(e).lower()
            else "see the cause below"
        )
        raise DeviceError(f"{what} failed on the device ({first}); {hint}") from e


def _writes(method):
    """Run an IvfIndex method as a writer: alone, after the searches in flight."""

    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with self._lock.write():
            return method(self, *args, **kwargs)

    return locked


def _reads(method):
    """Run an IvfIndex method as a reader: beside other readers, never a writer."""

    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with self._lock.read():
            return method(self, *args, **kwargs)

    return locked


_MAX_DEVICES = 8  # a pool holds at least 8 blocks (a power of two): it splits over 8


def _choose_block_size(n: int, n_lists: int) -> int:
    """Rows per block: about an eighth of the mean list, between 8 and 64."""
    return int(min(64, pow2_at_least(math.ceil(n / (8 * n_lists)), 8)))


class IvfIndex:
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
        devices: None (one device, the default), or a sequence of
            ``jax.Device`` (a power of two of them, at most 8) or a one-axis
            :class:`jax.sharding.Mesh`: the rows are split over those devices
            (each holds ``1 / len(devices)`` of the block pool; centroids,
            codebooks and block table are replicated) and every search runs on
            all of them as one ``shard_map`` program, with results equal to a
            one-device index's. Ids, metadata and the layout stay on the host
            as always.

    Raises:
        InvalidConfigError: bad ``dim`` or config, or ``pq_subvectors`` not
            dividing ``dim``; an empty device list, or more than 8 devices or
            a count that is not a power of two.
        InvalidArgumentError: ``devices`` is not a sequence of distinct
            ``jax.Device`` of one platform, nor a one-axis Mesh.
        InvalidMetricError: unknown metric, or COSINE/HAMMING with PQ.

    See also: :mod:`iqdb_ivf_jax.functional` for the pure kernels.
    """

    def __init__(
        self, dim: int, metric: "Metric | str", config: IvfConfig | None = None, *, devices=None
    ):
        if isinstance(dim, (bool, np.bool_)) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise InvalidConfigError(f"dim must be an int >= 1, got {dim!r}")
        metric = Metric.parse(metric)
        if config is None:
            config = IvfConfig()
        if not isinstance(config, IvfConfig):
            raise InvalidArgumentError(
                f"config must be an IvfConfig or None, got {type(config).__name__}; "
                "build one with IvfConfig(...)"
            )
        config.validate()
        mesh = DeviceMesh.parse(devices)
        if mesh is not None and mesh.size > _MAX_DEVICES:
            raise InvalidConfigError(
                f"an index spreads over at most {_MAX_DEVICES} devices (its block pool "
                f"starts at {_MAX_DEVICES} blocks), got {mesh.size}"
            )
        if config.use_pq and metric in (Metric.COSINE, Metric.HAMMING):
            raise InvalidMetricError(
                f"IVF-PQ does not support {metric.value}; use euclidean, dot_product or "
                "manhattan (for cosine, normalise the vectors and use dot_product)"
            )
        if config.use_pq and int(dim) % (config.pq_subvectors or 1):
            raise InvalidConfigError(
                f"pq_subvectors ({config.pq_subvectors}) must divide dim ({int(dim)})"
            )
        self._dim = int(dim)
        self._metric = metric
        self._config = config
        self._mesh = mesh
        self._state: IvfState | None = None
        self._layout: BlockLayout | None = None
        self._state_exported = False
        self._kmeans_iterations = 0
        self._kmeans_inertia: float | None = None
        self._disk_bytes: int | None = None  # size of the last save / load
        # IVF-PQ loaded with mmap=True: the raw vectors f32[n_blocks, B, d], a
        # read-only map of the save (the state then holds none), until a write
        self._raw_vectors: np.ndarray | None = None
        self._runner = SearchRunner(mesh)
        self._lock = ReadWriteLock()
        self._clear_entries()

    @classmethod
    def _from_parts(
        cls,
        dim: int,
        metric: "Metric | str",
        config: IvfConfig,
        *,
        state: IvfState | None,
        layout: BlockLayout | None,
        entries: EntryTable,
        next_seq: int,
        kmeans_iterations: int = 0,
        kmeans_inertia: float | None = None,
        raw_vectors: np.ndarray | None = None,
        devices=None,
    ) -> "IvfIndex":
        """An index made of already-consistent parts (for loading a saved index).

        The caller guarantees the parts belong together: ``state`` and ``layout``
        describe the same blocks (both None for an untrained index), ``entries``
        spans ``layout.n_blocks * B`` slots, and ``next_seq`` exceeds every seq.
        ``raw_vectors`` (``f32[n_blocks, B, d]`` on the host) stands in for a
        state without vectors (``load(mmap=True)``).
        The constructor's checks of ``dim``, ``metric``, ``config`` and
        ``devices`` still run; the state is placed on ``devices``.
        """
        index = cls(dim, metric, config, devices=devices)
        index._state = None if state is None else index._placed(state)
        index._layout = layout
        index._entries = entries
        index._next_seq = int(next_seq)
        index._kmeans_iterations = int(kmeans_iterations)
        index._kmeans_inertia = None if kmeans_inertia is None else float(kmeans_inertia)
        index._raw_vectors = raw_vectors
        return index

    # ------------------------------------------------------------------ basics
    def _clear_entries(self, n_slots: int = 0) -> None:
        self._entries = EntryTable(n_slots, spills=self._config.spill_lambda is not None)
        self._next_seq = 0
        self._runner.invalidate()

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
    @_reads
    def state(self) -> IvfState:
        """The current :class:`IvfState` pytree (for :mod:`iqdb_ivf_jax.functional`).

        It stays valid after later mutations (the next write copies instead of
        updating in place). Slot ``s`` of a result maps back to an id with
        :meth:`ids_for_slots`; ``-1`` is padding.

        Raises:
            InvalidConfigError: if the index is untrained.
        """
        state, _ = self._require_trained()
        self._state_exported = True
        return state

    def __len__(self) -> int:
        return len(self._entries)

    def is_empty(self) -> bool:
        return not self._entries

    def __contains__(self, id_) -> bool:
        try:
            return canonical_id(id_) in self._entries
        except (TypeError, ValueError, OverflowError):  # not an id: never present
            return False

    def flush(self) -> None:
        """No-op (the index is in memory); kept for API parity. Use :meth:`save`."""

    @_reads
    def save(self, path) -> None:
        """Write the index to the directory ``path``, atomically.

        The directory holds ``arrays.safetensors`` and ``manifest.json`` (format
        in the README, "Saving and loading"); nothing is pickled. An existing
        save at ``path`` is replaced only once the new one is complete: a crash
        at any point leaves the old save or the new one loadable. Searches may
        run during a save; writers wait. ``stats().disk_bytes`` reports the size.

        Raises:
            IndexFileError: ``path`` exists and is not a save (or an empty
                directory), or the files cannot be written (the cause attached).
            InvalidConfigError: the index is split over the devices of several
                processes (multi-host).
        """
        from ._persist import save_index

        if self._mesh is not None and self._mesh.spans_processes:
            raise InvalidConfigError(
                "save of an index split over several processes is not supported yet; "
                "save it from a one-process index built from the same calls"
            )
        self._disk_bytes = save_index(self, path)

    @classmethod
    def load(cls, path, *, device=None, devices=None, mmap: bool = False) -> "IvfIndex":
        """Read an index written by :meth:`save`, on any backend.

        Every field is validated before anything is built; no k-means or
        assignment runs. A loaded index gives the same results, bit for bit, as
        the one saved (same backend and JAX version).

        Args:
            path: the save's directory.
            device: a ``jax.Device`` for the state's arrays (None: the default).
            devices: split the rows over these devices, as ``IvfIndex(devices=...)``
                (not with ``device``); any save loads on any device count that
                splits its pool.
            mmap: IVF-PQ with raw vectors only: leave the raw vectors in the
                save's file, memory-mapped read-only, instead of in memory.
                Searches scan the codes as always; a refine re-ranks the
                shortlist from the file, ``get`` and ``retrain`` read it, and
                results are the same as an in-memory load's. The file must stay
                in place while the index uses it (a later save to the same path
                is fine). The first insert, upsert or compaction moves the raw
                vectors into memory (the index becomes an ordinary one); deletes
                do not. Pages the searches read count in the process's resident
                memory as file cache the kernel may reclaim. A codes-only index
                has no raw vectors: the flag changes nothing.

        Raises:
            IndexFileError: a missing, truncated, corrupted, tampered or
                future-version save, naming the file and field.
            InvalidConfigError: ``mmap=True`` for an IVF-Flat save (its search
                scans the raw vectors, which must be in memory).
        """
        from ._persist import load_index

        return load_index(path, device=device, devices=devices, mmap=mmap)

    def _require_trained(self) -> tuple[IvfState, BlockLayout]:
        """The state and layout; raises InvalidConfigError if untrained."""
        if self._state is None or self._layout is None:
            raise InvalidConfigError(_NOT_TRAINED)
        return self._state, self._layout

    # ---------------------------------------------------------------- settings
    def _checked_n_probes(self, n) -> int:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            raise InvalidArgumentError(
                f"n_probes must be an int, got {type(n).__name__}; pass e.g. 8"
            )
        if n < 1:
            raise InvalidConfigError(f"n_probes must be n >= 1, got {n}")
        if n > self._config.n_clusters:
            raise InvalidConfigError(
                f"n_probes ({n}) must be <= n_clusters ({self._config.n_clusters})"
            )
        return int(n)

    def _checked_refine(self, n) -> int:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            raise InvalidArgumentError(
                f"pq_refine_factor must be an int, got {type(n).__name__}; pass e.g. 4 (0: ADC)"
            )
        if n < 0:
            raise InvalidConfigError(f"pq_refine_factor must be >= 0, got {n}")
        if n > MAX_REFINE:
            raise InvalidConfigError(
                f"pq_refine_factor must be <= {MAX_REFINE}, got {n} (a factor past the "
                "index size re-ranks nothing more; use a smaller one)"
            )
        if n > 0 and not self._config.keep_raw_vectors:
            raise InvalidConfigError(
                f"refine factor {n} needs the raw vectors, which a codes-only index "
                "(keep_raw_vectors=False) does not keep; use 0 (ADC distances)"
            )
        return int(n)

    @_writes
    def set_n_probes(self, n: int) -> None:
        """Set the lists scanned per query (faiss ``nprobe``); a search's own
        ``n_probes=`` overrides it for that call only."""
        self._config = dataclasses.replace(self._config, n_probes=self._checked_n_probes(n))

    @_writes
    def set_pq_refine_factor(self, n: int) -> None:
        """Set the PQ re-rank factor (0 = ADC distances; unused in Flat mode); a
        search's own ``refine=`` overrides it for that call only."""
        self._config = dataclasses.replace(self._config, pq_refine_factor=self._checked_refine(n))

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

    @_writes
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
        with _device_errors("train"):
            res, codebooks, n_ws = fit_quantizers(x, self._config, self._metric)
            block = _choose_block_size(n_ws, self._config.n_clusters)
            empty = np.zeros((0, self._dim), np.float32)
            self._install(res, codebooks, block, [], empty, [], [], next_seq=0)

    @_writes
    def retrain(self) -> None:
        """Refit on the live vectors (in insertion order), keeping ids, metadata
        and seqs; reassign and re-encode everything. Atomic: on error nothing
        changes. An empty index is a no-op.

        Raises:
            InvalidConfigError: untrained, fewer live vectors than ``n_clusters``,
                or fewer than 256 with PQ.
        """
        self._require_trained()
        if not self._entries:
            return
        ids, x, metas, seqs = self._live_entries()
        self._check_train_sizes(x.shape[0])
        with _device_errors("retrain"):
            res, codebooks, _ = fit_quantizers(x, self._config, self._metric)
            block = _choose_block_size(x.shape[0], self._config.n_clusters)
            self._install(res, codebooks, block, ids, x, metas, seqs, next_seq=self._next_seq)

    def _live_entries(self):
        """Live ``(ids, vectors f32[n, d], metadata, seqs)`` in seq order (codes-only
        IVF-PQ: the reconstructions)."""
        entries = self._entries
        slots = entries.live_slots()
        vec = self._vectors_of(slots)
        ids = entries.ids_for_slots(slots)
        return ids, vec, [entries.meta.get(i) for i in ids], entries.slot_seq[slots].copy()

    def _install(self, res, codebooks, block, ids, x, metas, seqs, *, next_seq: int) -> None:
        """Build a fresh state from centroids and entries, then swap it in (with
        ``next_seq`` as the next insert's sequence number)."""
        n_lists = self._config.n_clusters
        layout = BlockLayout(n_lists, block)
        state = IvfState.create(
            res.centroids,
            metric=self._metric,
            codebooks=codebooks,
            by_residual=self._config.pq_by_residual,
            block_size=block,
            spill=self._config.spill_lambda is not None,
            keep_vectors=self._config.keep_raw_vectors,
        )
        seqs = np.asarray(seqs, np.int64)
        labels, rows, spill = _insert.prepare_entries(state, x, self._config.spill_lambda)
        slots = _insert.allocate_slots(layout, labels, seqs)
        slots2 = None if spill is None else _insert.allocate_slots(layout, spill[0], seqs)
        state = state.grown(layout.n_blocks)
        state = _insert.write_entries(state, slots, rows, seqs, slots2, spill, labels, donate=True)
        state = state.replace(**_insert.table_arrays(layout))
        entries = EntryTable(layout.n_blocks * block, spills=self._config.spill_lambda is not None)
        entries.bind(list(ids), slots, list(metas), seqs, slots2=slots2)
        iterations, inertia = int(res.n_iter), float(res.inertia)  # waits for the fit
        state = self._placed(state)
        jax.block_until_ready(state)  # a failed kernel raises here, before the commit
        with deferred_interrupt():
            self._state, self._layout, self._state_exported = state, layout, False
            self._raw_vectors = None  # a retrain of an mmap-loaded index keeps them here
            self._kmeans_iterations, self._kmeans_inertia = iterations, inertia
            self._entries = entries
            self._next_seq = next_seq
            self._runner.invalidate()

    def _placed(self, state: IvfState) -> IvfState:
        """``state`` on this index's devices: split over its mesh (rows) and
        replicated (the rest), or as it is for a one-device index."""
        if self._mesh is None:
            return state
        return self._mesh.place(state)

    def _quantizer_view(self, state: IvfState) -> IvfState:
        """``state`` for assignment and encoding: on a sharded index its
        replicated arrays as ONE device's copy, so a batch is encoded once,
        not once per device."""
        if self._mesh is None:
            return state
        changes = {
            f.name: v.addressable_shards[0].data
            for f in dataclasses.fields(state)
            if isinstance(v := getattr(state, f.name), jax.Array) and v.sharding.is_fully_replicated
        }
        return dataclasses.replace(state, **changes)

    def _on_mesh(self, tree):
        """Device arrays of ``tree`` replicated over the mesh (a sharded index's
        writes scatter them into the split rows); unchanged without a mesh."""
        if self._mesh is None or tree is None:
            return tree
        mesh, rep = self._mesh, self._mesh.replicated()
        return jax.tree.map(lambda a: mesh.put(a, rep) if isinstance(a, jax.Array) else a, tree)

    def _touch(self) -> None:
        self._runner.invalidate()

    def _donate(self) -> bool:
        donate = not self._state_exported
        self._state_exported = False
        return donate

    # ------------------------------------------------------------------ insert
    @_writes
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
        if id_ in self._entries:
            raise DuplicateIdError(id_)
        self._add([id_], x[None, :], [meta])

    @_writes
    def insert_batch(self, ids, vectors, metadata=None, *, progress: bool | None = False) -> None:
        """Insert ``n`` vectors ``(n, dim)``; validated whole, applied atomically.

        Args:
            ids: a sequence of ``n`` ids.
            vectors: ``(n, dim)`` array-like.
            metadata: ``None`` or a sequence of ``n`` dicts/None.
            progress: False (default): one atomic commit. True (or None: when
                standard error is a terminal and tqdm is installed): the batch is
                still validated whole first, then committed in chunks of
                :data:`STREAM_CHUNK_ROWS` rows under a progress bar; each chunk is
                atomic, and an error after the first chunk carries
                ``committed_rows`` (the rows now in the index) and a note.

        Raises:
            The errors of :meth:`insert`, naming the first bad position;
            InvalidConfigError for unequal lengths; DuplicateIdError for an id
            repeated in the batch or already live. Nothing is inserted on a
            validation error.
        """
        canon, x, metas, int_ids = self._batch_args(ids, vectors, metadata)
        if len(set(canon)) < len(canon) or self._entries.any_live(canon):
            self._raise_first_duplicate(canon)
        if not canon:
            return
        if progress is False:
            self._add(canon, x, metas, int_ids)
            return
        bar = progress_bar(progress, total=len(canon), desc="insert_batch")
        done = 0
        try:
            for s in range(0, len(canon), STREAM_CHUNK_ROWS):
                e = s + STREAM_CHUNK_ROWS
                part = None if int_ids is None else int_ids[s:e]
                self._add(canon[s:e], x[s:e], metas[s:e], part)
                done += len(canon[s:e])
                bar.update(len(canon[s:e]))
        except BaseException as err:
            note_committed(err, done, "insert_batch")
            raise
        finally:
            bar.close()

    def add_stream(
        self,
        batches,
        *,
        progress: bool | None = None,
        chunk_rows: int = STREAM_CHUNK_ROWS,
    ) -> int:
        """Insert a stream of batches in fixed-size chunks under bounded memory.

        Each item of ``batches`` (any iterable, e.g. a generator reading files)
        is ``(ids, vectors)`` or ``(ids, vectors, metadata)`` as for
        :meth:`insert_batch`. Rows are gathered into chunks of ``chunk_rows`` and
        each chunk is validated and committed atomically, so host memory holds
        about one chunk (plus the batch being read) beyond the index. An
        untrained index first gathers ``training_sample_size`` rows (or the whole
        stream, if shorter), trains on them, then inserts them.

        Args:
            batches: an iterable of ``(ids, vectors[, metadata])`` tuples.
            progress: a tqdm bar of rows committed: True, False, or None (default:
                only when standard error is a terminal and tqdm is installed).
            chunk_rows: rows per committed chunk (``>= 1``).

        Returns:
            The number of rows inserted.

        Raises:
            The errors of :meth:`insert_batch` (and :meth:`train`), for the chunk
            that failed: the chunks before it stay committed; the error carries
            ``committed_rows`` and a note saying so. TypeError for an item that
            is not such a tuple.
        """
        if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, (int, np.integer)):
            raise InvalidArgumentError(
                f"chunk_rows must be an int, got {type(chunk_rows).__name__}; pass e.g. 65536"
            )
        if chunk_rows < 1:
            raise InvalidConfigError(f"chunk_rows must be >= 1, got {chunk_rows}")
        bar = progress_bar(progress, total=None, desc="add_stream")
        pending = PendingRows(self._dim)
        done = 0

        def commit(n: int) -> None:
            nonlocal done
            ids, x, metas = pending.take(n)
            self.insert_batch(ids, x, metas)
            done += len(ids)
            bar.update(len(ids))

        try:
            for item in batches:
                pending.add(item)
                if self._state is None:
                    if pending.n < self._config.training_sample_size:
                        continue
                    self.train(pending.rows())
                while pending.n >= chunk_rows:
                    commit(chunk_rows)
            if self._state is None and pending.n:
                self.train(pending.rows())
            while pending.n:
                commit(min(chunk_rows, pending.n))
        except BaseException as err:
            note_committed(err, done, "add_stream")
            raise
        finally:
            bar.close()
        return done

    @_writes
    def upsert(self, ids, vectors, metadata=None) -> None:
        """Insert ``n`` vectors, replacing the entries of ids that are already live.

        A replaced id gets the new vector and metadata (None: no metadata) and a
        new insertion order (ties now go to entries inserted before this call).
        Validated whole and applied atomically, in one device update.

        Args:
            ids: a sequence of ``n`` distinct ids (live or new).
            vectors: ``(n, dim)`` array-like.
            metadata: ``None`` or a sequence of ``n`` dicts/None.

        Raises:
            The errors of :meth:`insert_batch`, except that a live id is allowed;
            DuplicateIdError for an id repeated in the batch. Nothing changes on
            error.
        """
        canon, x, metas, int_ids = self._batch_args(ids, vectors, metadata)
        if len(set(canon)) < len(canon):
            self._raise_first_duplicate(canon, live_ok=True)
        if canon:
            live = [i for i in canon if i in self._entries]
            self._add(canon, x, metas, int_ids, replace=live)

    def _batch_args(self, ids, vectors, metadata):
        """Validated ``(canonical ids, f32[n, d], metadata list, int id array or
        None)`` of a batch insert (raises on the first bad position)."""
        self._require_trained()
        if isinstance(ids, (str, bytes)) or not hasattr(ids, "__len__"):
            raise InvalidArgumentError(
                "ids must be a sequence (list, tuple or array) of ids; wrap one id in a list"
            )
        canon = _canonical_int_ids(ids)
        int_ids = None if canon is None else ids
        if canon is None:
            canon = _canonical_each(ids, canonical_id, "ids")
        if metadata is None:
            metas = [None] * len(canon)
        else:
            if isinstance(metadata, dict) or not hasattr(metadata, "__len__"):
                raise InvalidArgumentError(
                    "metadata must be None or a sequence of dicts/None, one per id; wrap one "
                    "dict in a list"
                )
            metas = _canonical_each(metadata, canonical_metadata, "metadata")
        # no private copy: _prepare copies the rows into the device buffer
        x = as_vector_array(vectors, self._dim, rank=2, what="vectors", copy=False)
        if not (len(canon) == x.shape[0] == len(metas)):
            raise InvalidConfigError(
                f"ids ({len(canon)}), vectors ({x.shape[0]}) and metadata ({len(metas)}) "
                "must have equal lengths"
            )
        check_finite(x, "vectors")
        return canon, x, metas, int_ids

    def _raise_first_duplicate(self, ids: list, live_ok: bool = False) -> None:
        """Raise DuplicateIdError for the first id that repeats (or is live)."""
        seen = set()
        for pos, i in enumerate(ids):
            if i in seen:
                raise DuplicateIdError(i, f"ids[{pos}]: id {i!r} repeats inside the batch")
            if not live_ok and i in self._entries:
                raise DuplicateIdError(i, f"ids[{pos}]: id {i!r} is already in the index")
            seen.add(i)

    def _add(self, ids: list, x: np.ndarray, metas: list, int_ids=None, replace=()) -> None:
        """Write new entries (and drop the live entries of ``replace``) in one
        new state, then commit state, layout and entries together."""
        n = len(ids)
        if self._next_seq + n >= SEQ_LIMIT:
            raise InvalidConfigError(
                f"sequence numbers exhausted ({SEQ_LIMIT}); retrain() into a new index"
            )
        self._raw_vectors_to_device()
        state, layout = self._require_trained()
        with _device_errors("insert"):  # nothing is donated before this returns
            labels, rows, spill = _insert.prepare_entries(
                self._quantizer_view(state), x, self._config.spill_lambda
            )
            rows, spill = self._on_mesh(rows), self._on_mesh(spill)
        layout = layout.copy()
        old = np.array([s for i in replace for s in self._entries.entry_slots(i)], np.int64)
        for s in old.tolist():
            layout.release(s)
        seqs = np.arange(self._next_seq, self._next_seq + n, dtype=np.int64)
        slots = _insert.allocate_slots(layout, labels, seqs)
        slots2 = None if spill is None else _insert.allocate_slots(layout, spill[0], seqs)
        tables = _insert.table_arrays(layout)
        with deferred_interrupt():  # from the first donation to the end of the commit
            donate = self._donate()
            if old.size:  # cleared first: a new row may take a slot freed here
                state, donate = _insert.clear_rows(state, old, donate=donate), True
            grew = layout.n_blocks > state.n_blocks
            if grew:
                state, donate = state.grown(layout.n_blocks), True
            state = _insert.write_entries(
                state, slots, rows, seqs, slots2, spill, labels, donate=donate
            )
            state = self._placed(state.replace(**tables))
            # -- commit
            self._state, self._layout = state, layout
            self._entries.grow(layout.n_blocks * layout.block_size)
            for i in replace:
                self._entries.unbind(i)
            self._entries.bind(ids, slots, metas, seqs, int_ids, slots2)
            self._next_seq += n
            self._touch()
        if layout.n_holes > max(1024, len(self._entries)):
            self._compact()
        elif grew:
            # the index may have outgrown the blocks chosen at training (a small
            # sample, or a stream's first chunk): re-block while the pool is
            # copied anyway
            block = _choose_block_size(len(self._entries), self._config.n_clusters)
            if block >= 2 * layout.block_size:
                self._compact(block)

    # ------------------------------------------------------------------ delete
    @_writes
    def delete(self, id) -> None:
        """Remove one id, or every id of a sequence (list, tuple, range or 1-D
        array) at once; they leave ``len``, results, ``get`` and ``in`` at once.

        A sequence is all-or-nothing: every id is checked before anything is
        removed, and the rows are cleared in one device update.

        Raises:
            NotFoundError: an id is not live, repeats in the sequence, or the
                index is untrained (nothing is removed).
        """
        if isinstance(id, (list, tuple, range, np.ndarray)):
            canon = [canonical_id(i) for i in np.asarray(id, object).reshape(-1).tolist()]
        else:
            canon = [canonical_id(id)]
        seen: set = set()
        for id_ in canon:
            if id_ not in self._entries or id_ in seen:
                raise NotFoundError(id_)
            seen.add(id_)
        if not canon:
            return
        state, layout = self._require_trained()
        slots = [s for id_ in canon for s in self._entries.entry_slots(id_)]
        layout = layout.copy()
        for s in slots:
            layout.release(s)
        with deferred_interrupt():  # from the donation to the end of the commit
            cleared = _insert.clear_rows(state, np.array(slots), donate=self._donate())
            self._state = self._placed(cleared)
            self._layout = layout
            for id_ in canon:
                self._entries.unbind(id_)
            self._touch()
        if layout.n_holes > max(1024, len(self._entries)):
            self._compact()

    def _compact(self, block_size: int | None = None) -> None:
        """Rebuild the layout from the live entries (drops holes), in blocks of
        ``block_size`` rows (default: unchanged); unobservable (see
        :func:`_insert.compacted`)."""
        self._raw_vectors_to_device()
        state, layout = self._require_trained()
        with deferred_interrupt():  # compacted() donates nothing; the swap is atomic
            state, layout, entries = _insert.compacted(state, layout, self._entries, block_size)
            self._state, self._layout, self._entries = self._placed(state), layout, entries
            self._state_exported = False
            self._runner.invalidate()

    def _raw_vectors_to_device(self) -> None:
        """Before a write that moves rows: an mmap-loaded index's raw vectors go
        into the state (the index becomes an ordinary in-memory one). Atomic."""
        raw = self._raw_vectors
        if raw is None:
            return
        state, _ = self._require_trained()
        with _device_errors("moving the memory-mapped raw vectors to the device"):
            raw = storage_order(np.asarray(raw), state.interleave)
            vectors = jax.device_put(raw, state.norms.sharding)
            jax.block_until_ready(vectors)
        with deferred_interrupt():
            self._state = state.replace(vectors=vectors)
            self._raw_vectors = None

    def _vectors_of(self, slots: np.ndarray) -> np.ndarray:
        """Host ``f32[n, d]`` vectors of ``slots``: stored (in the state or, loaded
        with ``mmap=True``, in the file), or for codes-only IVF-PQ the
        reconstructions."""
        state, layout = self._require_trained()
        if self._raw_vectors is not None:
            B = state.block_size
            return np.array(self._raw_vectors[slots // B, slots % B])
        if state.keeps_vectors:
            B = state.block_size
            b = storage_blocks(slots // B, state.n_blocks, state.interleave)
            if len(slots) == 1:  # one row: index on the device, move only it
                return host_array(state.vectors[int(b[0]), int(slots[0]) % B])[None]
            return host_array(state.vectors)[b, slots % B]
        return _insert.reconstruct_rows(state, slots, layout.list_of(slots))

    # --------------------------------------------------------------------- get
    @_reads
    def get(self, id):
        """Return ``(vector float32 copy, metadata copy or None)``.

        Raises:
            NotFoundError: absent id or untrained index.
        """
        id_ = canonical_id(id)
        if id_ not in self._entries:
            raise NotFoundError(id_)
        slot = self._entries.slot_of(id_)
        vec = np.array(self._vectors_of(np.array([slot]))[0], np.float32)
        return vec, self._entries.metadata(id_)

    @_reads
    def filter_mask(self, filter=None) -> jax.Array:
        """The rows a search may return, as the ``mask=`` of :mod:`functional`.

        Args:
            filter: a :class:`Filter`, a Mongo-style dict, or None (every live row).

        Returns:
            ``bool[n_blocks, B]`` device array for the current :attr:`state`
            (stale after the index changes, as slots are).

        Raises:
            InvalidConfigError: untrained. InvalidFilterError / TypeError: a bad filter.
        """
        flt = as_filter(filter)
        state, _ = self._require_trained()
        if flt is not None:
            flt.validate()
        return self._runner.mask(state, self._entries, flt)

    @_reads
    def ids_for_slots(self, slots) -> list:
        """Map slots from :mod:`functional` results back to ids (``-1`` -> None)."""
        return self._entries.ids_for_slots(slots)

    # ------------------------------------------------------------------ search
    def _parse_call(self, k, filter):
        metric = None
        if isinstance(k, SearchParams):
            if filter is not None:
                raise InvalidArgumentError(
                    "pass the filter inside SearchParams or as filter=, not both"
                )
            metric, filter, k = k.metric, k.filter, k.k
        if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
            raise InvalidArgumentError(
                f"k must be an int or SearchParams, got {type(k).__name__}; pass e.g. k=10"
            )
        if k < 0:
            raise InvalidConfigError(f"k must be >= 0, got {k}")
        if k > MAX_K:
            raise InvalidConfigError(
                f"k must be <= {MAX_K:,}, got {k}; an index returns at most len(index) hits"
            )
        return int(k), as_filter(filter), metric

    def _search(self, queries, k, filter, rank: int, path="auto", n_probes=None, refine=None):
        """Validate, then run: ``(D f32[nq, k], slots int64[nq, k], entries)``,
        the entry table the slots belong to. ``n_probes`` / ``refine`` (None:
        the index's settings) apply to this call only."""
        if path not in PATHS:
            raise InvalidConfigError(f"path must be one of {PATHS}, got {path!r}")
        k, flt, metric = self._parse_call(k, filter)
        n_probes = self._config.n_probes if n_probes is None else self._checked_n_probes(n_probes)
        if refine is None:
            refine = self._config.pq_refine_factor
        refine = self._checked_refine(refine)
        state, layout = self._require_trained()
        q = as_vector_array(queries, self._dim, rank=rank, what="query", copy=False)
        check_finite(q, "query")
        if metric is not None and Metric.parse(metric) is not self._metric:
            raise InvalidMetricError(
                f"SearchParams metric {Metric.parse(metric).value!r} differs from the index "
                f"metric {self._metric.value!r}"
            )
        q2 = q.reshape(-1, self._dim)
        nq = q2.shape[0]
        if nq * k > MAX_RESULTS:
            raise InvalidConfigError(
                f"{nq} queries x k={k} would return {nq * k:,} results (limit {MAX_RESULTS:,}); "
                "search in smaller batches or with a smaller k"
            )
        if flt is not None:
            flt.validate()  # the limits hold on every call, even when nothing is searched
        entries = self._entries
        empty = (np.full((nq, k), np.inf, np.float32), np.full((nq, k), -1, np.int64), entries)
        if k == 0 or not entries or nq == 0:
            return empty
        # no search returns more than the live entries (each once): k past that is
        # padding, and so is a refine shortlist past them
        k_run = min(k, len(entries))
        refine = min(refine, -(-len(entries) // k_run)) if state.is_pq else 0
        if self._raw_vectors is not None and refine > 0:  # loaded with mmap=True
            short = min(refine * k_run, len(entries))  # the in-memory re-score's shortlist
            _, S = self._runner.run(
                state, layout, entries, q2, short, flt, n_probes=n_probes, refine=0, path=path
            )
            D, S = rerank_from_host(state, self._raw_vectors, q2, S, k_run)
        else:
            D, S = self._runner.run(
                state, layout, entries, q2, k_run, flt, n_probes=n_probes, refine=refine, path=path
            )
        if k_run < k:
            D = np.concatenate([D, np.full((nq, k - k_run), np.inf, np.float32)], axis=1)
            S = np.concatenate([S, np.full((nq, k - k_run), -1, np.int64)], axis=1)
        return D, S, entries

    @_reads
    def search(self, query, k=10, *, filter=None, n_probes=None, refine=None) -> list[Hit]:
        """The ``k`` nearest live vectors to ``query`` ``(dim,)``, nearest first.

        Args:
            query: ``(dim,)`` integer or float array-like.
            k: int ``>= 0`` or a :class:`SearchParams`.
            filter: a :class:`Filter`, a Mongo-style dict, or None. Filters apply
                per entry before scoring; probes are never widened, so fewer
                than ``k`` hits may return.
            n_probes: lists scanned for this call (faiss ``nprobe``), in
                ``[1, n_clusters]``; None = the index's ``n_probes``.
            refine: IVF-PQ re-rank factor for this call (0 = ADC distances);
                None = the index's ``pq_refine_factor``; ignored for IVF-Flat.
                Neither changes the index, so concurrent calls may differ.

        Returns:
            ``list[Hit]`` of length ``<= k``, by ``(distance, insertion order)``.

        Raises:
            TypeError, InvalidConfigError, InvalidVectorError,
            DimensionMismatchError, InvalidMetricError, InvalidFilterError.
        """
        D, S, entries = self._search(query, k, filter, 1, "auto", n_probes, refine)
        return entries.hits(D, S)[0] if D.shape[0] else []

    @_reads
    def search_batch(
        self, queries, k=10, *, filter=None, path="auto", n_probes=None, refine=None
    ) -> list[list[Hit]]:
        """:meth:`search` for each row of ``queries`` ``(nq, dim)``, in order
        (``n_probes`` and ``refine`` as there).

        ``path`` picks the kernel: ``"query"`` scans each query's lists
        (query-major), ``"list"`` scores each probed list against all its
        queries with one matrix product (IVF-Flat euclidean/cosine/dot, IVF-PQ
        euclidean/dot), ``"auto"`` (default) takes list-major when lists are
        probed by several queries on average. Both return the same hits (up to
        float32 rounding at the k-th distance, and for IVF-PQ with refine at the
        ``refine * k``-th ADC score).
        """
        D, S, entries = self._search(queries, k, filter, 2, path, n_probes, refine)
        return entries.hits(D, S)

    @_reads
    def search_arrays(self, queries, k=10, *, filter=None, path="auto", n_probes=None, refine=None):
        """Batch search returning NumPy arrays ``(D, I)``, each ``[nq, k]``.

        ``D`` is float32, ascending, padded with ``+inf``. ``I`` is int64 padded
        with ``-1`` when every live id is an int below ``2**63``; otherwise an
        object array padded with ``None``. Detect padding by the id. ``path``
        is as in :meth:`search_batch`; ``n_probes`` and ``refine`` as in
        :meth:`search`.
        """
        D, S, entries = self._search(queries, k, filter, 2, path, n_probes, refine)
        return D, entries.id_array(S)

    # ------------------------------------------------------------ probe tuning
    @_reads
    def suggest_n_probes(self, coverage: float) -> int:
        """Smallest ``n_probes`` whose largest lists hold ``ceil(live * coverage)``
        vectors, in ``[1, n_clusters]``. Pure.

        Raises:
            InvalidConfigError: coverage non-finite or outside ``[0, 1]``.
        """
        if isinstance(coverage, bool) or not isinstance(
            coverage, (int, float, np.floating, np.integer)
        ):
            raise InvalidArgumentError(
                f"coverage must be a float in [0, 1], got {type(coverage).__name__}; pass e.g. 0.9"
            )
        c = float(coverage)
        if not math.isfinite(c) or not 0.0 <= c <= 1.0:
            raise InvalidConfigError(
                f"coverage must be a finite number in [0, 1], got {coverage!r}"
            )
        n_lists = self._config.n_clusters
        if self._layout is None or not self._entries or n_lists == 1 or c == 0.0:
            return 1
        if c == 1.0:
            return n_lists
        sizes = np.sort(self._layout.list_live)[::-1]
        live = int(sizes.sum())  # rows: spilled copies count
        target = math.ceil(Fraction(repr(c)) * live)
        n = int(np.searchsorted(np.cumsum(sizes), target, side="left")) + 1
        return max(1, min(n_lists, n))

    # ------------------------------------------------------------------- stats
    @_reads
    def cluster_stats(self) -> IvfClusterStats:
        """Live list sizes (``[]`` when untrained) with mean and variance."""
        sizes = [] if self._layout is None else [int(s) for s in self._layout.list_live]
        return IvfClusterStats.from_sizes(self._config.n_clusters, sizes)

    def _memory(self) -> dict[str, int]:
        mem = {} if self._state is None else self._state.nbytes_by_field()
        mem.update(self._entries.nbytes())
        mem["score_buffer"] = self._runner.score_buffer_bytes()
        if self._layout is not None:
            lay = self._layout
            mem["layout"] = (
                lay.list_blocks.nbytes
                + lay.block_list.nbytes
                + lay.block_fill.nbytes
                + lay.list_live.nbytes
            )
        return mem

    @_reads
    def stats(self) -> IndexStats:
        """Totals and IVF details; ``extra["memory"]`` sums to ``memory_bytes``.

        ``extra["padding_ratio"]`` is rows held in the lists' blocks over live
        rows (>= 1; with spilled assignment each vector is two live rows, and
        ``extra["spilled_rows"]`` counts the spilled copies);
        ``extra["last_search"]`` reports rows actually scanned over live rows in
        the probed lists for the most recent search. A sharded index adds
        ``extra["devices"]``: per device, its live rows and the bytes of state
        it holds (its share of the row arrays plus the replicated arrays).
        """
        mem = self._memory()
        live = len(self._entries)
        row_fields = ("vectors", "norms", "codes", "pq_terms", "seqs", "valid", "twin")
        row_bytes = (
            None
            if self._state is None
            else sum(mem[f] for f in row_fields) // (self._state.n_blocks * self._state.block_size)
        )
        lay = self._layout
        live_rows = 0 if lay is None else int(lay.list_live.sum())
        extra: dict[str, Any] = {
            "mode": "pq" if self._config.use_pq else "flat",
            "n_clusters": self._config.n_clusters,
            "n_probes": self._config.n_probes,
            "kmeans_init": self._config.kmeans_init,
            "pq_by_residual": self._config.use_pq and self._config.pq_by_residual,
            "spill_lambda": self._config.spill_lambda,
            "spilled_rows": live_rows - live,
            "kmeans_iterations": self._kmeans_iterations,
            "kmeans_inertia": self._kmeans_inertia,
            "tombstones": 0 if lay is None else lay.n_holes,
            "capacity": 0 if self._state is None else self._state.n_blocks * self._state.block_size,
            "block_size": None if self._state is None else self._state.block_size,
            "padding_ratio": (lay.allocated_rows() / live_rows) if lay and live else None,
            "keep_raw_vectors": self._config.keep_raw_vectors,
            # load(mmap=True): raw vectors read from the save's file (not in memory)
            "mapped_bytes": 0 if self._raw_vectors is None else int(self._raw_vectors.nbytes),
            "row_bytes": row_bytes,
            "bytes_per_vector": (sum(mem.values()) / live) if live else None,
            "last_search": self._runner.last_search_stats(),
            "memory": mem,
        }
        if self._mesh is not None:
            extra["devices"] = self._per_device(mem, row_fields)
        return IndexStats(live, int(sum(mem.values())), self._disk_bytes, "ivf", extra)

    def _per_device(self, mem: dict[str, int], row_fields: tuple) -> list[dict]:
        """``stats().extra["devices"]`` of a sharded index."""
        assert self._mesh is not None
        devs = self._mesh.devices
        if self._state is None:
            return [{"device": str(d), "rows": 0, "bytes": 0} for d in devs]
        rows = host_array(self._state.valid).reshape(len(devs), -1).sum(axis=1)
        split = sum(mem[f] for f in row_fields) // len(devs)
        fields = self._state.nbytes_by_field()
        replicated = sum(v for f, v in fields.items() if f not in row_fields)
        return [
            {"device": str(d), "rows": int(r), "bytes": split + replicated}
            for d, r in zip(devs, rows.tolist())
        ]

    def __repr__(self) -> str:
        mode = "pq" if self._config.use_pq else "flat"
        return (
            f"IvfIndex(dim={self._dim}, metric={self._metric.value!r}, mode={mode!r}, "
            f"n_clusters={self._config.n_clusters}, n={len(self)}, trained={self.is_trained}"
            + ("" if self._mesh is None else f", devices={self._mesh.size}")
            + ")"
        )
