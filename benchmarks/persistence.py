"""Save and load: time against reading the files, and what a load keeps resident.

Builds an index (IVF-Flat on the Debian embeddings by default), saves it, and
reports as JSON:

- ``save_s`` and the save's size on disk;
- ``read_s``: reading every file of the save into memory (``open`` + ``read``),
  the floor a load cannot beat; ``load_s``: ``IvfIndex.load`` (a warm-up load
  first, so JAX's dispatch is not in it); ``load_over_read`` is their ratio.
  Both are medians over ``--repeats``, each repeat with the files evicted from
  the page cache first (``posix_fadvise(DONTNEED)``: a cold read) and again
  warm (read just before);
- with ``--mmap`` (IVF-PQ with raw vectors): the resident memory a fresh
  process (JAX's runtime already started) gains by a load, with and without
  ``mmap=True``, against the raw vectors' size; and after one batch search
  (mostly the search's compiled programs).

A loaded index is checked to answer the same batch search bit for bit.

    python -m benchmarks.persistence [--dataset debian|synthetic] [--pq] [--mmap]
        [--repeats 5] [--out FILE]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.datasets import load_debian, synthetic
from iqdb_ivf_jax import IvfConfig, IvfIndex


def _evict(folder: Path) -> None:
    for f in folder.iterdir():
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _read_all(folder: Path) -> int:
    n = 0
    for f in sorted(folder.iterdir()):
        with open(f, "rb") as fh:
            n += len(fh.read())
    return n


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


_MMAP_CHILD = """
import json, sys
from benchmarks.memory import _rss_bytes
from iqdb_ivf_jax import IvfIndex
import numpy as np
import jax.numpy as jnp
q = np.load(sys.argv[2])
jnp.zeros(8).block_until_ready()  # JAX's runtime starts before, not during, the load
rss0 = _rss_bytes()
index = IvfIndex.load(sys.argv[1], mmap=sys.argv[3] == "1")
rss1 = _rss_bytes()
ids, _ = index.search_arrays(q, k=10)
print(json.dumps({"rss_load_mb": (rss1 - rss0) / 2**20,
                  "rss_after_search_mb": (_rss_bytes() - rss0) / 2**20}))
"""


def _child_rss(path: Path, queries: Path, mmap: bool) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _MMAP_CHILD, str(path), str(queries), "1" if mmap else "0"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="debian", choices=("debian", "synthetic"))
    ap.add_argument("--nlist", type=int, default=256)
    ap.add_argument("--pq", action="store_true", help="IVF-PQ (M 48, residual) with raw vectors")
    ap.add_argument("--mmap", action="store_true", help="also measure load(mmap=True) RSS")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args(argv)
    data = load_debian() if args.dataset == "debian" else synthetic(n=20_000, dim=64)
    x, q = data.base, data.queries[:200]
    cfg = IvfConfig(
        n_clusters=args.nlist,
        n_probes=16,
        kmeans_max_iterations=10,
        training_sample_size=min(x.shape[0], 256 * args.nlist),
        use_pq=args.pq,
        pq_subvectors=48 if args.pq else 8,
        pq_by_residual=args.pq,
    )
    index = IvfIndex(x.shape[1], "euclidean", cfg)
    index.train(x)
    index.insert_batch(np.arange(x.shape[0]), x)
    want = index.search_arrays(q, k=10)
    out: dict = {"dataset": data.describe(), "pq": args.pq, "rows": len(index)}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "index"
        out["save_s"] = round(_timed(lambda: index.save(path)), 4)
        out["disk_bytes"] = sum(f.stat().st_size for f in path.iterdir())
        IvfIndex.load(path)  # warm-up: JAX dispatch, imports
        timings: dict[str, list[float]] = {
            k: [] for k in ("read", "load", "read_warm", "load_warm")
        }
        for _ in range(args.repeats):
            _evict(path)
            timings["read"].append(_timed(lambda: _read_all(path)))
            timings["read_warm"].append(_timed(lambda: _read_all(path)))
            _evict(path)
            timings["load"].append(_timed(lambda: IvfIndex.load(path)))
            _read_all(path)
            timings["load_warm"].append(_timed(lambda: IvfIndex.load(path)))
        for key, v in timings.items():
            out[f"{key}_s"] = round(statistics.median(v), 4)
        out["load_over_read"] = round(out["load_s"] / out["read_s"], 2)
        out["load_over_read_warm"] = round(out["load_warm_s"] / out["read_warm_s"], 2)
        got = IvfIndex.load(path).search_arrays(q, k=10)
        out["bit_identical"] = bool(
            np.array_equal(np.asarray(got[0]), np.asarray(want[0]))
            and np.array_equal(
                np.asarray(got[1]).view(np.uint32), np.asarray(want[1]).view(np.uint32)
            )
        )
        if args.mmap:
            qpath = Path(tmp) / "q.npy"
            np.save(qpath, q)
            out["raw_vectors_mb"] = round(len(index) * x.shape[1] * 4 / 2**20, 1)
            out["load_rss"] = _child_rss(path, qpath, mmap=False)
            out["load_rss_mmap"] = _child_rss(path, qpath, mmap=True)
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
