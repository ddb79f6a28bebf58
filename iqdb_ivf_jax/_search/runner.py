"""`SearchRunner`: how a validated search runs on an index's state.

One query runs in one kernel call; a batch is probed, then scanned query-major
(:func:`~.query_major.search_probed`, queries grouped by scan need) or
list-major (:func:`~.list_major.list_major_search`, chunked under a
score-buffer budget), the path picked by batch size and ``n_probes``. On a
sharded index every search is one :func:`~.sharded.search_sharded` program over
its devices. The runner
also keeps what searches reuse (the list-major score buffer, filter masks) and
the scan statistics ``stats()`` reports. It reads the state, layout and entry
table it is given and changes none of them.
"""

import jax
import numpy as np

from .. import _insert
from .._entries import EntryTable
from .._errors import InvalidConfigError
from .._filter import Filter
from .._layout import BlockLayout, pow2_at_least, scan_bucket
from .._sharding import DeviceMesh, local_tables
from .._state import IvfState, storage_order
from .list_major import list_major_search, list_path_ok
from .plan import MIN_TILE, buffer_width, pair_columns
from .query_major import probe_batch, search_probed, search_single
from .sharded import search_sharded

PATHS = ("auto", "query", "list")
_GROUP = 32  # queries per search-kernel call (sorted by scan need)
_PROBE_CHUNK = 1024  # queries per probing call
# list-major is chosen when a list is probed by at least this many queries on average
_LIST_MAJOR_MIN_QUERIES_PER_LIST = 4
_LIST_MAJOR_CHUNK_BYTES = 128 << 20  # score-buffer budget per list-major call
_SHARDED_CHUNK = 1024  # queries per sharded search call
_SPLIT_MIN_QUERIES = 4  # per device: a sharded search probes a batch at least this large in shares


def _pad_rows(x: np.ndarray, n: int) -> np.ndarray:
    if x.shape[0] == n:
        return x
    out = np.zeros((n,) + x.shape[1:], x.dtype)
    out[: x.shape[0]] = x
    return out


class SearchRunner:
    """Runs searches for one index and keeps what they reuse.

    Attributes:
        scratch: the last list-major score buffer (at most one), refilled in
            place by the next list-major search (a fresh large buffer costs
            page faults); handed over with ``list.pop``, so two threads never
            donate the same buffer.
        last_scan: the scan record of the most recent search (a deferred tuple
            for a single query, resolved by :meth:`last_search_stats`).
        mask_cache: ``{Filter: device mask}`` for the current entries; the
            index calls :meth:`invalidate` whenever its entries change.
        mesh: the devices of a sharded index (None: one device).
        tables: a sharded index's per-device block tables, for the layout they
            were built from: ``(layout, tables, counts, host counts)``.
    """

    def __init__(self, mesh: DeviceMesh | None = None) -> None:
        self.scratch: list[jax.Array] = []
        self.last_scan: dict | tuple | None = None
        self.mask_cache: dict = {}
        self.mesh = mesh
        self.tables: tuple | None = None

    def invalidate(self) -> None:
        """Forget cached filter masks and tables (the entries changed)."""
        self.mask_cache.clear()
        self.tables = None

    def score_buffer_bytes(self) -> int:
        return sum(b.nbytes for b in self.scratch if not b.is_deleted())

    def mask(self, state: IvfState, entries: EntryTable, flt: Filter | None) -> jax.Array:
        """``bool[n_blocks, B]`` rows a search may return: live rows, or those
        whose entry passes ``flt`` (cached per filter)."""
        if flt is None:
            return state.valid
        cached = self.mask_cache.get(flt)
        if cached is not None:
            return cached
        where = None if self.mesh is None else self.mesh.rows()
        allowed = storage_order(
            entries.filter_slots(flt).reshape(-1, state.block_size), state.interleave
        )
        dev = jax.device_put(allowed, where)
        self.mask_cache[flt] = dev
        return dev

    def choose_path(self, state: IvfState, nq: int, n_probes: int, path: str) -> str:
        """``"query"`` or ``"list"`` for a batch of ``nq`` queries.

        Raises:
            InvalidConfigError: ``path="list"`` for a metric without a GEMM form.
        """
        if self.mesh is not None:
            if path == "list":
                raise InvalidConfigError(
                    "path='list' is not available on a sharded index (every device "
                    "scans its own rows query-major); use path='auto' or 'query'"
                )
            return "sharded"
        gemm_ok = list_path_ok(state)
        if path == "list" and not gemm_ok:
            raise InvalidConfigError(
                "path='list' needs euclidean, cosine or dot_product (IVF-Flat), or "
                "euclidean or dot_product (IVF-PQ); use path='query' or 'auto'"
            )
        if path != "auto":
            return path
        per_list = nq * n_probes / state.n_lists
        return "list" if gemm_ok and per_list >= _LIST_MAJOR_MIN_QUERIES_PER_LIST else "query"

    def run(
        self,
        state: IvfState,
        layout: BlockLayout,
        entries: EntryTable,
        q: np.ndarray,
        k: int,
        flt: Filter | None,
        *,
        n_probes: int,
        refine: int,
        path: str = "auto",
    ) -> tuple[np.ndarray, np.ndarray]:
        """Search validated queries ``q`` ``f32[nq >= 1, d]`` for ``k >= 1``.

        Args:
            refine: the IVF-PQ re-rank factor (0 for IVF-Flat or ADC distances).

        Returns:
            ``(D f32[nq, k], slots int64[nq, k])`` on the host, padded ``(+inf, -1)``.
        """
        mask = self.mask(state, entries, flt)
        nq = q.shape[0]
        if self.mesh is not None and self.choose_path(state, nq, n_probes, path) == "sharded":
            return self._run_sharded(state, layout, q, mask, k, n_probes, refine)
        if nq == 1 and path != "list":
            return self._run_single(state, layout, q, mask, k, n_probes, refine)
        probes = np.empty((nq, n_probes), np.int32)
        for s in range(0, nq, _PROBE_CHUNK):
            chunk = q[s : s + _PROBE_CHUNK]
            n_pad = _insert.padded_rows(chunk.shape[0])
            p = probe_batch(state, _pad_rows(chunk, n_pad), n_probes=n_probes)
            probes[s : s + chunk.shape[0]] = np.asarray(p)[: chunk.shape[0]]
        live = int(layout.list_live[probes].sum())
        if self.choose_path(state, nq, n_probes, path) == "list":
            return self._run_list_major(state, layout, q, probes, mask, k, refine, live)
        return self._run_query_major(state, layout, q, probes, mask, k, refine, live)

    def _run_single(self, state, layout, q, mask, k: int, n_probes: int, refine: int):
        """One query: probe and scan in one call (no host round trip). The
        static block budget covers the ``n_probes`` largest lists; the scan loop
        (IVF-Flat and IVF-PQ) runs only over the blocks the probes own."""
        nb = layout.list_nblocks
        top = (
            np.partition(nb, nb.size - n_probes)[nb.size - n_probes :] if n_probes < nb.size else nb
        )
        T = scan_bucket(int(top.sum()))
        d, sl, probes = search_single(
            state, q[0], mask, k=k, n_probes=n_probes, scan_blocks=T, refine=refine
        )
        # scan statistics are computed when stats() asks (no extra transfer here)
        self.last_scan = (probes, nb.copy(), layout.list_live.copy(), layout.block_size)
        return np.asarray(d)[None], np.asarray(sl).astype(np.int64)[None]

    def _shard_tables(self, state: IvfState, layout: BlockLayout):
        """The per-device block tables of ``layout`` (cached until it changes)."""
        assert self.mesh is not None
        if self.tables is None or self.tables[0] is not layout:
            tb, ct = local_tables(layout.list_blocks, layout.list_nblocks, self.mesh.size)
            rows = self.mesh.rows()
            self.tables = (layout, jax.device_put(tb, rows), jax.device_put(ct, rows), ct)
        return self.tables[1:]

    def _run_sharded(self, state, layout, q, mask, k: int, n_probes: int, refine: int):
        """Every device searches its own rows; one exact merge (see
        :func:`~.sharded.search_sharded`), in chunks of :data:`_SHARDED_CHUNK`
        queries padded to a power of two. A batch of at least
        :data:`_SPLIT_MIN_QUERIES` per device is probed in shares (padded to a
        multiple of the device count); fewer queries are probed on every device."""
        assert self.mesh is not None
        tables, counts, host_counts = self._shard_tables(state, layout)
        n_dev = self.mesh.size
        # per-device budget: the most blocks one device holds of any n_probes lists
        top = -np.sort(-host_counts, axis=1)[:, :n_probes]
        T = min(scan_bucket(int(top.sum(axis=1).max())), state.n_blocks // n_dev)
        nq = q.shape[0]
        D = np.empty((nq, k), np.float32)
        S = np.empty((nq, k), np.int64)
        rows = self.mesh.rows()
        for s0 in range(0, nq, _SHARDED_CHUNK):
            chunk = q[s0 : s0 + _SHARDED_CHUNK]
            n = chunk.shape[0]
            split = n >= _SPLIT_MIN_QUERIES * n_dev
            where = rows if split else self.mesh.replicated()
            qd = jax.device_put(_pad_rows(chunk, pow2_at_least(n)), where)
            d, sl = search_sharded(
                state,
                tables,
                counts,
                qd,
                mask,
                dmesh=self.mesh,
                k=k,
                n_probes=n_probes,
                scan_blocks=T,
                refine=refine,
                split_queries=split,
            )
            D[s0 : s0 + n] = np.asarray(d)[:n]
            S[s0 : s0 + n] = np.asarray(sl)[:n]
        self._record_scan("sharded", nq, nq * n_dev * T * state.block_size, 0, devices=n_dev)
        return D, S

    def last_search_stats(self) -> dict | None:
        """``stats().extra["last_search"]``, resolving a single query's deferred record."""
        if isinstance(self.last_scan, tuple):
            probes, nb, list_live, block = self.last_scan
            probes = np.asarray(probes)
            self._record_scan(
                "query", 1, int(nb[probes].sum()) * block, int(list_live[probes].sum())
            )
        return self.last_scan if isinstance(self.last_scan, dict) else None

    def _run_list_major(self, state, layout, q, probes, mask, k: int, refine: int, live: int):
        """List-major in chunks whose score buffer fits the memory budget; rows the
        merge flags as ambiguous (ties across the shortlist boundary) go query-major."""
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
        try:
            buf = self.scratch.pop()
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
                refine=refine,
                scratch=buf,
                width=width,
            )
            D[s0 : s0 + chunk], S[s0 : s0 + chunk] = d, sl
            redo.append(s0 + np.nonzero(amb)[0])
            scored += sc
        if buf is not None:
            self.scratch.append(buf)
            del self.scratch[:-1]  # keep one
        rerun = np.concatenate(redo)
        if rerun.size:
            D[rerun], S[rerun] = self._run_query_major(
                state, layout, q[rerun], probes[rerun], mask, k, refine, 0
            )
        self._record_scan("list", nq, scored, live, ambiguous_rows=int(rerun.size))
        return D, S

    def _run_query_major(self, state, layout, q, probes, mask, k: int, refine: int, live: int):
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

    def _record_scan(self, path: str, nq: int, scored: int, live: int, **more) -> None:
        self.last_scan = {
            "path": path,
            "queries": nq,
            "rows_scanned": scored,
            "live_rows_in_probed_lists": live,
            "scan_padding": (scored / live) if live else None,
            **more,
        }
