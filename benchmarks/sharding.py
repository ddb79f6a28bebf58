"""A sharded index on one host: the same index on one device (its own fastest
path), on a one-device mesh (the sharded program on one device) and split over
``--devices`` devices, side by side in one process.

For each: build time (train + insert), then per ``n_probes``: recall@k against
exact ground truth, the first batch call's compile seconds and programs (apart
from search time), the median batch queries/s over ``--repeats`` warm calls, and
whether the hits equal the one-device index's (ids and distance bits). Then a
single-query p50 at the index's ``n_probes``. Writes JSON and a recall-QPS plot.

On a CPU, ``--devices`` CPU devices are made first (``jax_num_cpu_devices``): they
share the machine's cores, so this measures what spreading costs, not a speed-up.
On a GPU machine the GPUs themselves are used.

    python -m benchmarks.sharding [--devices 8] [--dataset debian|synthetic]
        [--lists 256] [--pq] [--probes 4,8,16,32] [--out benchmarks/results/sharding.json]
"""

import argparse
import time
from pathlib import Path

import numpy as np


def _median_qps(index, queries, k, n_probes, repeats) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        index.search_arrays(queries, k, n_probes=n_probes)
        times.append(time.perf_counter() - t)
    return queries.shape[0] / float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--devices", type=int, default=8)
    ap.add_argument("--dataset", default="debian", help="debian or synthetic")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--n", type=int, default=50_000, help="synthetic rows")
    ap.add_argument("--dim", type=int, default=128, help="synthetic dimension")
    ap.add_argument("--lists", type=int, default=256)
    ap.add_argument("--pq", action="store_true", help="IVF-PQ (M = dim / 8, refine 4)")
    ap.add_argument("--probes", default="4,8,16,32")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--latency-queries", type=int, default=200)
    ap.add_argument("--out", default="benchmarks/results/sharding.json")
    args = ap.parse_args()

    import jax

    jax.config.update("jax_num_cpu_devices", args.devices)  # CPU only; before any computation

    from iqdb_ivf_jax import IvfConfig, IvfIndex

    from .datasets import load_debian, synthetic
    from .measure import exact_knn, recall_at_k
    from .methods import CompileMeter
    from .report import plot_recall_qps, write_json

    devices = jax.devices()
    if len(devices) < args.devices:
        raise SystemExit(f"asked for {args.devices} devices, JAX has {len(devices)}")
    data = (
        load_debian(args.data_dir)
        if args.dataset == "debian"
        else synthetic(args.n, args.dim, args.queries)
    )
    base, queries = data.base, data.queries[: args.queries]
    truth = exact_knn(base, queries, args.k)
    dim = base.shape[1]
    cfg = IvfConfig(
        n_clusters=args.lists,
        n_probes=8,
        kmeans_max_iterations=10,
        training_sample_size=min(base.shape[0], 256 * args.lists),
        **({"use_pq": True, "pq_subvectors": dim // 8, "pq_refine_factor": 4} if args.pq else {}),
    )
    setups = {
        "one device": None,
        "mesh of 1": devices[:1],
        f"{args.devices} devices": devices[: args.devices],
    }
    probes = [int(p) for p in args.probes.split(",")]
    result = {"data": data.describe(), "config": repr(cfg), "backend": jax.default_backend()}
    reference: dict = {}
    runs = []
    for name, devs in setups.items():
        t = time.perf_counter()
        index = IvfIndex(dim, "euclidean", cfg, devices=devs)
        index.train(base)
        index.insert_batch(np.arange(base.shape[0]), base)
        jax.block_until_ready(index.state)
        build_s = time.perf_counter() - t
        points = []
        for p in probes:
            with CompileMeter() as meter:
                t = time.perf_counter()
                d, ids = index.search_arrays(queries, args.k, n_probes=p)
                first_s = time.perf_counter() - t
            if name == "one device":
                reference[p] = (d, ids)
            ref_d, ref_i = reference[p]
            points.append(
                {
                    "n_probes": p,
                    "recall": recall_at_k(ids, truth),
                    "batch_qps": _median_qps(index, queries, args.k, p, args.repeats),
                    "first_call_s": first_s,
                    "compile_s": meter.seconds,
                    "programs": meter.compiles + meter.cache_hits,
                    "equal_to_one_device": bool(
                        np.array_equal(ids, ref_i)
                        and np.array_equal(d.view(np.uint32), ref_d.view(np.uint32))
                    ),
                }
            )
        lat = []
        for q in queries[: args.latency_queries]:
            t = time.perf_counter()
            index.search(q, args.k)
            lat.append(time.perf_counter() - t)
        per = index.stats().extra.get("devices")
        runs.append(
            {
                "setup": name,
                "build_s": build_s,
                "single_p50_ms": 1e3 * float(np.median(lat[5:])),
                "rows_per_device": None if per is None else [x["rows"] for x in per],
                "points": points,
            }
        )
        print(name, f"build {build_s:.1f} s, single p50 {runs[-1]['single_p50_ms']:.2f} ms")
        for pt in points:
            print(
                f"  probes {pt['n_probes']:4d}  recall {pt['recall']:.4f}  "
                f"{pt['batch_qps']:9.0f} q/s  first call {pt['first_call_s']:.2f} s "
                f"({pt['programs']} programs, {pt['compile_s']:.2f} s compiling)  "
                f"equal {pt['equal_to_one_device']}"
            )
    result["runs"] = runs
    out = Path(args.out)
    write_json(result, out)
    plot_recall_qps(
        {r["setup"]: r["points"] for r in runs},
        out.with_suffix(".png"),
        title="sharded index on one host",
        k=args.k,
    )
    print("wrote", out, "and", out.with_suffix(".png"))


if __name__ == "__main__":
    main()
