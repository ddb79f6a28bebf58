"""Memory of a codes-only IVF-PQ index built by a streamed add.

Streams ``--rows`` synthetic clustered vectors (generated chunk by chunk, never
held whole) into a codes-only IVF-PQ index with ``add_stream`` and reports, as
JSON: the index's own accounting (``stats()``: device bytes per slot, all
memory per live vector, by field), the process's resident memory before and
after, its peak during the add, and the add's wall time.

    python -m benchmarks.memory [--rows 1000000] [--dim 384] [--m 48] [--chunk 65536]
"""

import argparse
import json
import resource
import threading
import time

import numpy as np

from iqdb_ivf_jax import IvfConfig, IvfIndex


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


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


def _stream(rows: int, dim: int, chunk: int, centres: np.ndarray, seed: int):
    rng = np.random.default_rng(seed)
    for s in range(0, rows, chunk):
        n = min(chunk, rows - s)
        lab = rng.integers(0, centres.shape[0], n)
        x = centres[lab] + rng.standard_normal((n, dim), dtype=np.float32)
        yield np.arange(s, s + n), x.astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--m", type=int, default=48)
    ap.add_argument("--lists", type=int, default=1024)
    ap.add_argument("--chunk", type=int, default=65_536)
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
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
    with _PeakRss() as peak:
        added = index.add_stream(
            _stream(args.rows, args.dim, args.chunk, centres, 1),
            chunk_rows=args.chunk,
            progress=False,
        )
    wall = time.perf_counter() - t0
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
        "rss_after_mb": round(_rss_bytes() / 2**20, 1),
        "rss_peak_mb": round(peak.peak / 2**20, 1),
        "chunk_mb": round(args.chunk * args.dim * 4 / 2**20, 1),
        "raw_vectors_mb": round(added * args.dim * 4 / 2**20, 1),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
