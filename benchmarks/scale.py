"""IVF-PQ at scale on one box: ours (streamed add) and faiss-cpu side by side.

Synthetic clustered data (``--clusters`` Gaussian clusters), generated chunk by
chunk from a seed so neither side holds it twice; both sides train on the same
first ``--train-rows`` rows (default faiss's ``256 * lists``) and add every row
in ``--chunk``-row chunks, with equal settings: ``--lists`` lists, PQ ``--m`` x 8
bits by residual, ``--rounds`` k-means rounds (coarse and PQ), refine
``--refine`` (faiss ``IndexRefineFlat``; ours ``pq_refine_factor``, raw vectors
kept). Each side runs in its own process, so its peak RSS is its own.

Reports per side: train and add seconds, peak RSS, bytes per vector (ours:
``stats()``; faiss: codes, ids and refine vectors, centroids and codebooks), and per ``n_probes``
recall@10 against exact ground truth (faiss ``IndexFlatL2`` over the chunks)
and the median batch queries/s over ``--repeats`` calls. JSON and a recall-QPS
plot are written to ``--out``.

    python -m benchmarks.scale [--rows 10000000] [--dim 96] [--lists 4096] [--m 16]
        [--refine 4] [--probes 8,16,32,64] [--threads 2] [--out benchmarks/results/scale.json]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .report import plot_recall_qps


def _centres(args) -> np.ndarray:
    rng = np.random.default_rng([args.seed, 0])
    return (rng.standard_normal((args.clusters, args.dim)) * 2.0).astype(np.float32)


def _chunk(args, centres, i: int) -> np.ndarray:
    """Rows ``[i * chunk, ...)`` of the base, the same in every process."""
    n = min(args.chunk, args.rows - i * args.chunk)
    rng = np.random.default_rng([args.seed, 1, i])
    x = rng.standard_normal((n, args.dim), dtype=np.float32)
    x += centres[rng.integers(0, centres.shape[0], n)]
    return x


def _chunks(args, centres):
    for i in range(-(-args.rows // args.chunk)):
        yield i, _chunk(args, centres, i)


def _queries(args, centres) -> np.ndarray:
    rng = np.random.default_rng([args.seed, 2])
    q = rng.standard_normal((args.queries, args.dim), dtype=np.float32)
    return q + centres[rng.integers(0, centres.shape[0], args.queries)]


def _train_rows(args, centres) -> np.ndarray:
    parts, have = [], 0
    for _, x in _chunks(args, centres):
        parts.append(x[: args.train_rows - have])
        have += parts[-1].shape[0]
        if have >= args.train_rows:
            break
    return np.concatenate(parts)


def _truth(args, centres, queries, k: int) -> np.ndarray:
    """Exact top-``k`` row numbers (faiss ``IndexFlatL2`` per chunk, merged)."""
    import faiss

    best_d = np.full((queries.shape[0], 0), np.inf, np.float32)
    best_i = np.zeros((queries.shape[0], 0), np.int64)
    for i, x in _chunks(args, centres):
        flat = faiss.IndexFlatL2(args.dim)
        flat.add(x)
        d, j = flat.search(queries, k)
        best_d = np.concatenate([best_d, d], axis=1)
        best_i = np.concatenate([best_i, j + i * args.chunk], axis=1)
        order = np.argsort(best_d, axis=1, kind="stable")[:, :k]
        best_d = np.take_along_axis(best_d, order, axis=1)
        best_i = np.take_along_axis(best_i, order, axis=1)
    return best_i


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float((found[:, :k, None] == truth[:, None, :]).any(axis=2).sum(axis=1).mean() / k)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sweep(search, queries, truth, probes, repeats) -> list[dict]:
    points = []
    for p in probes:
        ids = search(queries, p)  # warm-up (compiles ours)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            search(queries, p)
            times.append(time.perf_counter() - t)
        points.append(
            {
                "n_probes": p,
                "recall": _recall(ids, truth),
                "batch_qps": queries.shape[0] / float(np.median(times)),
            }
        )
    return points


def _run_ours(args, centres, queries, truth) -> dict:
    import jax

    from iqdb_ivf_jax import IvfConfig, IvfIndex

    cfg = IvfConfig(
        n_clusters=args.lists,
        n_probes=8,
        use_pq=True,
        pq_subvectors=args.m,
        pq_by_residual=True,
        pq_refine_factor=args.refine,
        kmeans_max_iterations=args.rounds,
        kmeans_init="random",
        training_sample_size=args.train_rows,
    )
    index = IvfIndex(args.dim, "euclidean", cfg)
    t = time.perf_counter()
    index.train(_train_rows(args, centres))
    jax.block_until_ready(index.state)
    train_s = time.perf_counter() - t
    t = time.perf_counter()
    index.add_stream(
        (
            (np.arange(i * args.chunk, i * args.chunk + x.shape[0]), x)
            for i, x in _chunks(args, centres)
        ),
        chunk_rows=args.chunk,
    )
    jax.block_until_ready(index.state)
    add_s = time.perf_counter() - t
    stats = index.stats()

    def search(q, p):
        return index.search_arrays(q, args.k, n_probes=p)[1]

    return {
        "train_s": train_s,
        "add_s": add_s,
        "bytes_per_vector": stats.extra["bytes_per_vector"],
        "points": _sweep(search, queries, truth, args.probe_list, args.repeats),
        "peak_rss_mb": _peak_rss_mb(),
    }


def _run_faiss(args, centres, queries, truth) -> dict:
    import faiss

    faiss.omp_set_num_threads(args.threads)
    quantizer = faiss.IndexFlatL2(args.dim)
    ivf = faiss.IndexIVFPQ(quantizer, args.dim, args.lists, args.m, 8)
    ivf.cp.niter = args.rounds
    ivf.pq.cp.niter = args.rounds
    index = faiss.IndexRefineFlat(ivf)
    index.k_factor = args.refine
    t = time.perf_counter()
    index.train(_train_rows(args, centres))
    train_s = time.perf_counter() - t
    t = time.perf_counter()
    for _, x in _chunks(args, centres):
        index.add(x)
    add_s = time.perf_counter() - t
    # what the index holds (a serialised copy would add its whole size to the peak RSS):
    # per vector the code and id in its list and the raw vector of the refine
    size = args.rows * (ivf.code_size + 8 + 4 * args.dim) + 4 * args.dim * args.lists
    size += 4 * ivf.pq.centroids.size()

    def search(q, p):
        ivf.nprobe = p
        return index.search(q, args.k)[1]

    return {
        "train_s": train_s,
        "add_s": add_s,
        "bytes_per_vector": size / args.rows,
        "points": _sweep(search, queries, truth, args.probe_list, args.repeats),
        "peak_rss_mb": _peak_rss_mb(),
    }


def _parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--dim", type=int, default=96)
    ap.add_argument("--clusters", type=int, default=10_000)
    ap.add_argument("--lists", type=int, default=4096)
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--refine", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--train-rows", type=int, default=None, help="default 256 * lists")
    ap.add_argument("--chunk", type=int, default=262_144)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--probes", default="8,16,32,64")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="faiss OpenMP threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/scale.json")
    ap.add_argument("--sides", default="faiss,ours", help="which sides to run")
    ap.add_argument("--side", choices=("ours", "faiss"), help=argparse.SUPPRESS)
    ap.add_argument("--truth", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.train_rows = min(args.rows, args.train_rows or 256 * args.lists)
    args.probe_list = [int(p) for p in args.probes.split(",")]
    return args


def main() -> None:
    args = _parse()
    centres = _centres(args)
    queries = _queries(args, centres)
    if args.side:  # a child: one side, results as JSON on the last line
        truth = np.load(args.truth)
        run = _run_ours if args.side == "ours" else _run_faiss
        print(json.dumps(run(args, centres, queries, truth)))
        return
    t = time.perf_counter()
    truth = _truth(args, centres, queries, args.k)
    print(f"ground truth: {time.perf_counter() - t:.1f} s", flush=True)
    result = {
        "settings": {k: v for k, v in vars(args).items() if k not in ("side", "truth", "sides")}
    }
    with tempfile.TemporaryDirectory() as tmp:
        tpath = os.path.join(tmp, "truth.npy")
        np.save(tpath, truth)
        for side in ("faiss", "ours"):
            if args.sides and side not in args.sides.split(","):
                continue
            cmd = [sys.executable, "-m", "benchmarks.scale", *sys.argv[1:], "--side", side]
            out = subprocess.run(
                [*cmd, "--truth", tpath], capture_output=True, text=True, check=False
            )
            if out.returncode:
                raise SystemExit(f"{side} failed:\n{out.stderr[-3000:]}")
            result[side] = json.loads(out.stdout.strip().splitlines()[-1])
            r = result[side]
            print(
                f"{side}: train {r['train_s']:.1f} s, add {r['add_s']:.1f} s, peak RSS "
                f"{r['peak_rss_mb']:.0f} MB, {r['bytes_per_vector']:.1f} bytes/vector",
                flush=True,
            )
            for p in r["points"]:
                print(
                    f"  probes {p['n_probes']:4d}  recall {p['recall']:.4f}  {p['batch_qps']:9.0f} q/s"
                )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    s = result["settings"]
    plot_recall_qps(
        {side: result[side]["points"] for side in ("ours", "faiss") if side in result},
        out.with_suffix(".png"),
        title=f"IVF-PQ {s['rows']:,} x {s['dim']}, {s['lists']} lists, M {s['m']}, refine {s['refine']}",
        k=args.k,
    )
    print("wrote", out, "and", out.with_suffix(".png"))


if __name__ == "__main__":
    main()
