"""Memory of a codes-only IVF-PQ index built by a streamed add.

Streams ``--rows`` synthetic clustered vectors (generated chunk by chunk, never
held whole) into a codes-only IVF-PQ index with ``add_stream`` and reports, as
JSON: the index's own accounting (``stats()``: device bytes per slot, all
memory per live vector, by field), the process's resident memory before and
after, its peak during the add, and the add's wall time.

The marginal resident bytes per vector is the process's growth from the point
where ``--mark-chunks`` chunks are in (every program of the add compiled, the
runtime warm) to the end, over the rows added in between, each reading taken
after ``malloc_trim`` (freed heap returned to the system, so a reading counts
live memory, not the allocator's cache).

The load check saves the index and loads it in a fresh process: the resident
memory the load adds (trimmed), over the rows, is the index's whole cost per
vector, fixed parts (centroids, codebooks, tables) included.

    python -m benchmarks.memory [--rows 1000000] [--dim 384] [--m 48] [--chunk 65536]
"""

import argparse
import ctypes
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

from iqdb_ivf_jax import IvfConfig, IvfIndex


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _trimmed_rss_bytes() -> int:
    """Resident bytes after a collection and ``malloc_trim(0)`` (glibc)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    return _rss_bytes()


class _PeakRss:
    """Samples the resident set every 20 ms in a thread; ``peak`` is the maximum."""

    def __init__(self):
        self.peak = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _rss_bytes())

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())


def _stream(rows, dim, chunk, centres, seed, marks: dict, mark_at: int, peak: "_PeakRss"):
    """Synthetic chunks, one alive at a time; records the trimmed RSS and the rows handed out before
    the chunk after ``mark_at`` of them (the add has committed them by then),
    and restarts ``peak`` there (the peak before it, training included, is kept)."""
    rng = np.random.default_rng(seed)
    for s in range(0, rows, chunk):
        if s == mark_at * chunk:
            marks["rows"], marks["rss"] = s, _trimmed_rss_bytes()
            marks["peak_before"], peak.peak = peak.peak, marks["rss"]
        n = min(chunk, rows - s)
        # one chunk-sized array, filled in place (no chunk-sized temporaries)
        x = rng.standard_normal((n, dim), dtype=np.float32)
        for a in range(0, n, 4096):
            x[a : a + 4096] += centres[rng.integers(0, centres.shape[0], min(4096, n - a))]
        yield np.arange(s, s + n), x
        del x  # before the next chunk is made: one chunk alive at a time


def _load_child(path: str) -> None:
    """In a fresh process: print the trimmed RSS before and after loading ``path``."""
    import jax.numpy as jnp

    jnp.zeros(1).block_until_ready()  # the backend is up before the first reading
    before = _trimmed_rss_bytes()
    index = IvfIndex.load(path)
    after = _trimmed_rss_bytes()
    print(json.dumps({"before": before, "after": after, "rows": len(index)}))


def _load_rss(index: IvfIndex) -> dict:
    """Save ``index`` and measure what loading it adds to a fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "index")
        index.save(path)
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.memory", "--load-child", path],
            capture_output=True,
            text=True,
            check=True,
        )
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return {
        "load_rss_added_mb": round((r["after"] - r["before"]) / 2**20, 1),
        "load_rss_bytes_per_vector": round((r["after"] - r["before"]) / max(r["rows"], 1), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--m", type=int, default=48)
    ap.add_argument("--lists", type=int, default=1024)
    ap.add_argument("--chunk", type=int, default=65_536)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--mark-chunks", type=int, default=2)
    ap.add_argument("--load-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.load_child:
        _load_child(args.load_child)
        return
    rng = np.random.default_rng(0)
    centres = (rng.standard_normal((4096, args.dim)) * 2.0).astype(np.float32)
    cfg = IvfConfig(
        n_clusters=args.lists,
        n_probes=16,
        use_pq=True,
        pq_subvectors=args.m,
        pq_refine_factor=0,
        keep_raw_vectors=False,
        kmeans_max_iterations=args.rounds,
        kmeans_init="random",
    )
    index = IvfIndex(args.dim, "euclidean", cfg)
    rss0 = _rss_bytes()
    t0 = time.perf_counter()
    marks: dict = {}
    with _PeakRss() as peak:
        added = index.add_stream(
            _stream(args.rows, args.dim, args.chunk, centres, 1, marks, args.mark_chunks, peak),
            chunk_rows=args.chunk,
            progress=False,
        )
    wall = time.perf_counter() - t0
    rss_end = _trimmed_rss_bytes()
    st = index.stats()
    mem = st.extra["memory"]
    device = {
        k: v for k, v in mem.items() if k not in ("id_maps", "metadata", "score_buffer", "layout")
    }
    out = {
        "rows": added,
        "dim": args.dim,
        "m": args.m,
        "lists": args.lists,
        "chunk_rows": args.chunk,
        "add_stream_s": round(wall, 1),
        "row_bytes_device": st.extra["row_bytes"],
        "device_bytes_per_vector": round(sum(device.values()) / added, 2),
        "host_bookkeeping_bytes_per_vector": round(
            (mem["id_maps"] + mem.get("layout", 0)) / added, 2
        ),
        "bytes_per_vector_all": round(st.extra["bytes_per_vector"], 2),
        "memory_by_field": mem,
        "rss_before_mb": round(rss0 / 2**20, 1),
        "rss_after_mb": round(rss_end / 2**20, 1),
        "rss_at_mark_mb": round(marks.get("rss", 0) / 2**20, 1),
        "rows_at_mark": marks.get("rows"),
        "marginal_rss_bytes_per_vector": (
            round((rss_end - marks["rss"]) / (added - marks["rows"]), 2)
            if marks and added > marks["rows"]
            else None
        ),
        "rss_peak_mb": round(max(peak.peak, marks.get("peak_before", 0)) / 2**20, 1),
        "rss_peak_to_mark_mb": round(marks.get("peak_before", 0) / 2**20, 1),
        "rss_peak_after_mark_mb": round(peak.peak / 2**20, 1) if marks else None,
        **_load_rss(index),
        "chunk_mb": round(args.chunk * args.dim * 4 / 2**20, 1),
        "raw_vectors_mb": round(added * args.dim * 4 / 2**20, 1),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
