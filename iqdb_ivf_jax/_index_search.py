"""How :class:`IvfIndex` runs a search on its state: one query in one call,
batches query-major (``search_probed``) or list-major (``list_major_search``,
chunked under a score-buffer budget), the path picked by batch size and
``n_probes``, and the scan statistics ``stats()`` reports.

A mixin: :class:`IvfIndex` owns the state, layout and config it reads.
"""

import jax
import numpy as np

from . import _kernels
from ._batch import MIN_TILE, buffer_width, list_major_search, list_path_ok, pair_columns
from ._config import Metric
from ._errors import InvalidConfigError, InvalidMetricError
from ._filter import Filter, as_filter, filter_mask
from ._layout import pow2_at_least, scan_bucket
from ._records import Hit, SearchParams
from ._search import probe_batch, search_probed, search_single
from ._validate import as_vector_array, check_finite

_GROUP = 32  # queries per search-kernel call (sorted by scan need)
_PROBE_CHUNK = 1024  # queries per probing call
_PATHS = ("auto", "query", "list")
# list-major is chosen when a list is probed by at least this many queries on average
_LIST_MAJOR_MIN_QUERIES_PER_LIST = 4
_LIST_MAJOR_CHUNK_BYTES = 128 << 20  # score-buffer budget per list-major call


def _pad_rows(x: np.ndarray, n: int) -> np.ndarray:
    if x.shape[0] == n:
        return x
    out = np.zeros((n,) + x.shape[1:], x.dtype)
    out[: x.shape[0]] = x
    return out


class SearchRunner:
    """The search-running half of :class:`IvfIndex` (see the module docstring)."""

    def _parse_call(self, k, filter):
        metric = None
        if isinstance(k, SearchParams):
            if filter is not None:
                raise TypeError("pass the filter inside SearchParams or as filter=, not both")
            metric, filter, k = k.metric, k.filter, k.k
        if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
            raise TypeError(f"k must be an int or SearchParams, got {type(k).__name__}")
        if k < 0:
            raise InvalidConfigError(f"k must be >= 0, got {k}")
        return int(k), as_filter(filter), metric

    def _check_params_metric(self, metric) -> None:
        if metric is not None and Metric.parse(metric) is not self._metric:
            raise InvalidMetricError(
                f"SearchParams metric {Metric.parse(metric).value!r} differs from the index "
                f"metric {self._metric.value!r}"
            )

    def _mask(self, flt: Filter | None):
        if flt is None:
            return self._state.valid
        cached = self._mask_cache.get(flt)
        if cached is not None:
            return cached
        mask = np.zeros(len(self._slot_id), bool)
        if self._id_slot:
            ids = list(self._id_slot)
            slots = np.fromiter(self._id_slot.values(), np.int64, len(ids))
            meta = self._meta
            keep = filter_mask(flt, [meta.get(i) for i in ids])
            mask[slots] = keep
            if self._slot_twin.size:  # a spilled copy follows its entry
                twins = self._slot_twin[slots]
                spilled = twins >= 0
                mask[twins[spilled]] = keep[spilled]
        B = self._state.block_size
        dev = jax.device_put(mask.reshape(-1, B))
        self._mask_cache[flt] = dev
        return dev

    def _search(self, queries, k, filter, rank: int, path: str = "auto"):
        """Shared body of the three searches -> ``(D f32[nq,k], slots i64[nq,k])``."""
        if path not in _PATHS:
            raise InvalidConfigError(f"path must be one of {_PATHS}, got {path!r}")
        k, flt, metric = self._parse_call(k, filter)
        self._require_trained()
        q = as_vector_array(queries, self._dim, rank=rank, what="query", copy=False)
        check_finite(q, "query")
        self._check_params_metric(metric)
        q2 = q.reshape(-1, self._dim)
        nq = q2.shape[0]
        empty = (np.full((nq, k), np.inf, np.float32), np.full((nq, k), -1, np.int64))
        if k == 0 or not self._id_slot:
            return empty
        if flt is not None:
            flt.validate()
        if nq == 0:
            return empty
        return self._run_search(q2, k, flt, path)

    def _hits(self, D: np.ndarray, S: np.ndarray) -> list[list[Hit]]:
        out = []
        for drow, srow in zip(D.tolist(), S.tolist()):
            hits = []
            for d, s in zip(drow, srow):
                if s < 0:
                    break
                id_ = self._slot_id[s]
                meta = self._meta.get(id_)
                hits.append(Hit(id_, float(d), dict(meta) if meta is not None else None))
            out.append(hits)
        return out

    def search(self, query, k=10, *, filter=None) -> list[Hit]:
        """The ``k`` nearest live vectors to ``query`` ``(dim,)``, nearest first.

        Args:
            query: ``(dim,)`` integer or float array-like.
            k: int ``>= 0`` or a :class:`SearchParams`.
            filter: a :class:`Filter`, a Mongo-style dict, or None. Filters apply
                per entry before scoring; probes are never widened, so fewer
                than ``k`` hits may return.

        Returns:
            ``list[Hit]`` of length ``<= k``, by ``(distance, insertion order)``.

        Raises:
            TypeError, InvalidConfigError, InvalidVectorError,
            DimensionMismatchError, InvalidMetricError, InvalidFilterError.
        """
        D, S = self._search(query, k, filter, rank=1)
        return self._hits(D, S)[0] if D.shape[0] else []

    def search_batch(self, queries, k=10, *, filter=None, path: str = "auto") -> list[list[Hit]]:
        """:meth:`search` for each row of ``queries`` ``(nq, dim)``, in order.

        ``path`` picks the kernel: ``"query"`` scans each query's lists
        (query-major), ``"list"`` scores each probed list against all its
        queries with one matrix product (IVF-Flat euclidean/cosine/dot, IVF-PQ euclidean/dot),
        ``"auto"`` (default) takes list-major when lists are probed by several
        queries on average. Both return the same hits (up to float32 rounding
        at the k-th distance, and for IVF-PQ with refine at the ``refine * k``-th
        ADC score).
        """
        D, S = self._search(queries, k, filter, rank=2, path=path)
        return self._hits(D, S)

    def search_arrays(self, queries, k=10, *, filter=None, path: str = "auto"):
        """Batch search returning NumPy arrays ``(D, I)``, each ``[nq, k]``.

        ``D`` is float32, ascending, padded with ``+inf``. ``I`` is int64 padded
        with ``-1`` when every live id is an int below ``2**63``; otherwise an
        object array padded with ``None``. Detect padding by the id. ``path``
        is as in :meth:`search_batch`.
        """
        D, S = self._search(queries, k, filter, rank=2, path=path)
        if self._n_wide_ids == 0:
            return D, np.where(S >= 0, self._slot_int[np.maximum(S, 0)], -1)
        I = np.full(S.shape, None, object)
        for idx in zip(*np.nonzero(S >= 0)):
            I[idx] = self._slot_id[S[idx]]
        return D, I

    # ------------------------------------------------------------- run a search
    def _choose_path(self, nq: int, path: str) -> str:
        state = self._state
        gemm_ok = list_path_ok(state)
        if path == "list" and not gemm_ok:
            raise InvalidConfigError(
                "path='list' needs euclidean, cosine or dot_product (IVF-Flat), or "
                "euclidean or dot_product (IVF-PQ); use path='query' or 'auto'"
            )
        if path != "auto":
            return path
        per_list = nq * self._config.n_probes / self._config.n_clusters
        return "list" if gemm_ok and per_list >= _LIST_MAJOR_MIN_QUERIES_PER_LIST else "query"

    def _run_search(self, q: np.ndarray, k: int, flt: Filter | None, path: str = "auto"):
        state, layout = self._state, self._layout
        cfg = self._config
        n_probes = cfg.n_probes
        mask = self._mask(flt)
        nq = q.shape[0]
        if nq == 1 and path != "list":
            return self._run_single(q, mask, k)
        probes = np.empty((nq, n_probes), np.int32)
        for s in range(0, nq, _PROBE_CHUNK):
            chunk = q[s : s + _PROBE_CHUNK]
            n_pad = _kernels.padded_rows(chunk.shape[0])
            p = probe_batch(state, _pad_rows(chunk, n_pad), n_probes=n_probes)
            probes[s : s + chunk.shape[0]] = np.asarray(p)[: chunk.shape[0]]
        live = int(layout.list_live[probes].sum())
        if self._choose_path(nq, path) == "list":
            return self._run_list_major(q, probes, mask, k, live)
        return self._run_query_major(q, probes, mask, k, live)

    @property
    def _refine(self) -> int:
        """The PQ re-rank factor the kernels take (0 for IVF-Flat)."""
        return self._config.pq_refine_factor if self._state.is_pq else 0

    def _run_single(self, q, mask, k: int):
        """One query: probe and scan in one call (no host round trip). The
        static block budget covers the ``n_probes`` largest lists; the scan loop
        (IVF-Flat and IVF-PQ) runs only over the blocks the probes own."""
        layout, n_probes = self._layout, self._config.n_probes
        nb = layout.list_nblocks
        top = (
            np.partition(nb, nb.size - n_probes)[nb.size - n_probes :] if n_probes < nb.size else nb
        )
        T = scan_bucket(int(top.sum()))
        d, sl, probes = search_single(
            self._state, q[0], mask, k=k, n_probes=n_probes, scan_blocks=T, refine=self._refine
        )
        # scan statistics are computed when stats() asks (no extra transfer here)
        self._last_scan = (probes, nb.copy(), layout.list_live.copy(), layout.block_size)
        return np.asarray(d)[None], np.asarray(sl).astype(np.int64)[None]

    def _last_search_stats(self) -> dict | None:
        """``stats().extra["last_search"]``, resolving a single query's deferred record."""
        if isinstance(self._last_scan, tuple):
            probes, nb, list_live, block = self._last_scan
            probes = np.asarray(probes)
            self._record_scan(
                "query", 1, int(nb[probes].sum()) * block, int(list_live[probes].sum())
            )
        return self._last_scan

    def _run_list_major(self, q, probes, mask, k: int, live: int):
        """List-major in chunks whose score buffer fits the memory budget; rows the
        merge flags as ambiguous (ties across the shortlist boundary) go query-major."""
        state, layout = self._state, self._layout
        nq = q.shape[0]
        _, widths = pair_columns(probes, layout)
        width = buffer_width(widths)
        row_bytes = 4 * max(width, 1)
        chunk = max(MIN_TILE, _LIST_MAJOR_CHUNK_BYTES // row_bytes)
        chunk = 1 << (chunk.bit_length() - 1)
        D = np.empty((nq, k), np.float32)
        S = np.empty((nq, k), np.int64)
        scored = 0
        redo = []
        # the score buffer of the last list-major call is kept on the index and
        # refilled in place (a fresh large one costs page faults); list.pop is
        # atomic, so two threads never donate the same buffer
        try:
            buf = self._scratch.pop()
        except IndexError:
            buf = None
        for s0 in range(0, nq, chunk):
            d, sl, amb, sc, buf = list_major_search(
                state,
                layout,
                q[s0 : s0 + chunk],
                probes[s0 : s0 + chunk],
                mask,
                k=k,
                refine=self._refine,
                scratch=buf,
                width=width,
            )
            D[s0 : s0 + chunk], S[s0 : s0 + chunk] = d, sl
            redo.append(s0 + np.nonzero(amb)[0])
            scored += sc
        self._scratch.append(buf)
        del self._scratch[:-1]  # keep one
        redo = np.concatenate(redo)
        if redo.size:
            D[redo], S[redo] = self._run_query_major(q[redo], probes[redo], mask, k, 0)
        self._record_scan("list", nq, scored, live)
        self._last_scan["ambiguous_rows"] = int(redo.size)
        return D, S

    def _run_query_major(self, q, probes, mask, k: int, live: int):
        state, layout = self._state, self._layout
        refine = self._refine
        nq = q.shape[0]
        need = layout.list_nblocks[probes].sum(axis=1)
        order = np.argsort(need, kind="stable")
        D = np.empty((nq, k), np.float32)
        S = np.empty((nq, k), np.int64)
        scanned = 0
        for s in range(0, nq, _GROUP):
            rows = order[s : s + _GROUP]
            T = scan_bucket(int(need[rows].max()))
            n_pad = pow2_at_least(rows.shape[0])
            d, sl = search_probed(
                state,
                _pad_rows(q[rows], n_pad),
                _pad_rows(probes[rows], n_pad),
                mask,
                k=k,
                scan_blocks=T,
                refine=refine,
            )
            D[rows] = np.asarray(d)[: rows.shape[0]]
            S[rows] = np.asarray(sl)[: rows.shape[0]]
            scanned += T * rows.shape[0]
        self._record_scan("query", nq, scanned * state.block_size, live)
        return D, S

    def _record_scan(self, path: str, nq: int, scored: int, live: int) -> None:
        self._last_scan = {
            "path": path,
            "queries": nq,
            "rows_scanned": scored,
            "live_rows_in_probed_lists": live,
            "scan_padding": (scored / live) if live else None,
        }
