"""Benchmark iqdb-ivf-jax against faiss-cpu at equal recall, in one process.

    python -m benchmarks.run                 # Debian embeddings, nlist 256, M 48
    python -m benchmarks.run --quick         # small synthetic smoke run (< 1 min)
    python -m benchmarks.run --dataset sift_base.fvecs --queries sift_query.fvecs

Builds IVF-Flat and IVF-PQ (+ exact refine) with ours and with faiss on the same
data and settings, sweeps n_probes, and reports recall@k, batch QPS and
single-query latency per point, then ours/faiss ratios at equal recall. Writes
``<out>.json`` and a recall-QPS plot ``<out>.png``. See benchmarks/README.md.
"""

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np

from .datasets import REPO_ROOT, load_dataset
from .measure import exact_knn, measure_point, recall_at_k
from .methods import (
    FLAT,
    PQ_ADC,
    PQ_REFINE,
    build_faiss,
    build_ours,
    faiss_threads,
    ours_methods,
)
from .report import (
    auto_target,
    compute_ratios,
    format_builds,
    format_points,
    format_ratio_table,
    plot,
    write_json,
)

RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
_FAMILY_OF = {"flat": FLAT, "pq": PQ_REFINE, "adc": PQ_ADC}

DEFAULTS = {
    "dataset": "debian",
    "n": 50_000,
    "dim": 128,
    "n_queries": None,
    "nlist": 256,
    "m": 48,
    "refine": 4,
    "kmeans_iters": 10,
    "kmeans_init": "kmeans++",
    "probes": "1,2,4,8,16,32,64,128",
    "repeats": 3,
    "latency_queries": 200,
    "methods": "flat,pq,adc",
}
QUICK = {
    "dataset": "synthetic",
    "n": 3000,
    "dim": 32,
    "n_queries": 100,
    "nlist": 16,
    "m": 4,
    "probes": "1,4,16",
    "repeats": 1,
    "latency_queries": 10,
    "methods": "flat,pq",
}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d = DEFAULTS
    g = ap.add_argument_group("data")
    g.add_argument(
        "--dataset",
        help=f"debian, synthetic, or a .npy/.fvecs/.bvecs/.hdf5 base file (default {d['dataset']})",
    )
    g.add_argument(
        "--queries",
        help="query file (.npy/.fvecs/.bvecs) for a base file; else queries are held out",
    )
    g.add_argument(
        "--data-dir", help="folder with debian_base.f16.npy (default: $IQDB_DATA, ../shared/data)"
    )
    g.add_argument("--n", type=int, help=f"synthetic base size (default {d['n']})")
    g.add_argument("--dim", type=int, help=f"synthetic dimension (default {d['dim']})")
    g.add_argument(
        "--n-queries", type=int, help="use at most this many queries (synthetic/held out: 1000)"
    )
    g.add_argument("--max-base", type=int, help="use only the first MAX_BASE base vectors")
    g.add_argument("--normalize", action="store_true", help="scale base and queries to unit norm")
    g.add_argument(
        "--seed", type=int, default=0, help="synthetic data and held-out split (default 0)"
    )
    g.add_argument(
        "--gt",
        choices=("float64", "faiss"),
        default="float64",
        help="ground truth: float64 NumPy brute force or faiss.IndexFlatL2 (default float64)",
    )
    g = ap.add_argument_group("index")
    g.add_argument("--nlist", type=int, help=f"inverted lists (default {d['nlist']})")
    g.add_argument("--m", type=int, help=f"PQ subvectors M, 8 bits each (default {d['m']})")
    g.add_argument(
        "--refine",
        type=int,
        help=f"PQ re-rank factor: refine*k exact candidates (default {d['refine']})",
    )
    g.add_argument(
        "--kmeans-iters",
        type=int,
        help=f"k-means rounds, both libraries (default {d['kmeans_iters']}, faiss's)",
    )
    g.add_argument(
        "--kmeans-init",
        choices=("kmeans++", "random"),
        help="our k-means initialisation (default kmeans++, the reference's; "
        "'random' is faiss's own init, for train time at equal work)",
    )
    g.add_argument(
        "--spill-lambda",
        type=float,
        default=None,
        help="store each of our vectors in a second list too (SOAR spilled "
        "assignment with this lambda, e.g. 1.0; IvfConfig.spill_lambda); faiss "
        "has no equivalent: compare at equal recall, and see bytes/vector",
    )
    g.add_argument(
        "--methods",
        help="families to sweep: flat, pq (PQ+refine), adc (PQ without "
        "refine, same PQ index) (default flat,pq,adc; --quick: flat,pq)",
    )
    g.add_argument(
        "--warm-build",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="build ours a second time in-process to separate compilation (default on)",
    )
    g.add_argument(
        "--faiss-by-residual",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="IVF-PQ encodes residuals to the list centroid on both sides (faiss's "
        "default; ours with pq_by_residual=True); --no-faiss-by-residual: raw vectors",
    )
    g = ap.add_argument_group("measurement")
    g.add_argument("--k", type=int, default=10, help="neighbours per query (default 10)")
    g.add_argument("--probes", help=f"n_probes sweep, clipped to nlist (default {d['probes']})")
    g.add_argument(
        "--repeats",
        type=int,
        help=f"timed batch calls per point; median reported (default {d['repeats']})",
    )
    g.add_argument(
        "--latency-queries",
        type=int,
        help=f"queries timed one at a time (default {d['latency_queries']})",
    )
    g.add_argument("--threads", type=int, default=2, help="faiss OpenMP threads (default 2)")
    g.add_argument(
        "--latency-threads",
        type=int,
        default=1,
        help="faiss OpenMP threads for the single-query loop (default 1: a one-query search "
        "gains nothing from threads, and on a busy machine IndexRefineFlat's parallel region "
        "can wait ~10 ms for its second thread)",
    )
    g.add_argument("--targets-flat", default="0.90,0.95", help="recalls for IVF-Flat ratios")
    g.add_argument("--targets-pq", default="0.90", help="recalls for IVF-PQ+refine ratios")
    g.add_argument(
        "--targets-adc",
        default="auto",
        help="recalls for IVF-PQ ADC-only ratios; auto = best 0.05 step both reach",
    )
    g.add_argument(
        "--out",
        help="JSON path (default benchmarks/results/<dataset>-<time>.json); plot goes next to it",
    )
    g.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: synthetic 3000x32, nlist 16, M 4, probes 1,4,16, 1 repeat, 10 latency queries",
    )
    args = ap.parse_args(argv)
    for key, default in DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, QUICK.get(key, default) if args.quick else default)
    return args


def _floats(s: str) -> list[float]:
    return [float(v) for v in s.split(",") if v.strip()]


def probe_list(spec: str, nlist: int) -> list[int]:
    """The sweep, each value clipped to ``nlist``, deduplicated, ascending."""
    vals = sorted({min(int(v), nlist) for v in spec.split(",") if v.strip()})
    if not vals or vals[0] < 1:
        raise SystemExit(f"--probes needs integers >= 1, got {spec!r}")
    return vals


def _git() -> dict:
    env = dict(os.environ, GIT_OPTIONAL_LOCKS="0")  # read-only: never touch the index

    def git(*a):
        return subprocess.run(
            ["git", *a],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()

    try:
        return {
            "commit": git("rev-parse", "HEAD"),
            "modified_files": git("diff", "--name-only", "HEAD").splitlines(),
        }
    except (OSError, subprocess.SubprocessError) as e:  # not a checkout, or no git
        return {"error": str(e)}


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def setup_record(args) -> dict:
    import faiss
    import jaxlib

    import iqdb_ivf_jax

    dev = jax.devices()[0]
    return {
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "args": vars(args),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "iqdb_ivf_jax": iqdb_ivf_jax.__version__,
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "numpy": np.__version__,
        "faiss": faiss.__version__,
        "backend": jax.default_backend(),
        "device": str(dev),
        "device_kind": dev.device_kind,
        "n_devices": jax.device_count(),
        "faiss_threads": faiss.omp_get_max_threads(),
        "faiss_latency_threads": args.latency_threads,
        "xla_threads": "XLA:CPU runs its own thread pool over the visible cores (not set here)",
        "xla_flags": os.environ.get("XLA_FLAGS"),
        "compilation_cache": "off while measuring",
        "git": _git(),
    }


def _say(msg: str) -> None:
    print(msg, flush=True)


def main(argv=None) -> dict:
    """Run the benchmark; print the tables; write JSON and plot; return the result dict."""
    args = parse_args(argv)
    families = [f.strip() for f in args.methods.split(",") if f.strip()]
    if not families or set(families) - set(_FAMILY_OF):
        raise SystemExit(f"--methods takes flat, pq and/or adc, got {args.methods!r}")
    probes = probe_list(args.probes, args.nlist)

    cache_on = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)  # compile times must be real
    try:
        with faiss_threads(args.threads):
            return _run(args, families, probes)
    finally:
        jax.config.update("jax_enable_compilation_cache", cache_on)


def _run(args, families: list[str], probes: list[int]) -> dict:
    t_start = time.perf_counter()
    setup = setup_record(args)
    _say(
        f"jax {setup['jax']} ({setup['backend']}: {setup['device_kind']}), faiss {setup['faiss']} "
        f"({setup['faiss_threads']} threads), {setup['cpu_count']} CPUs: {setup['cpu_model']}"
    )

    t = time.perf_counter()
    ds = load_dataset(
        args.dataset,
        queries=args.queries,
        n=args.n,
        dim=args.dim,
        n_queries=args.n_queries,
        max_base=args.max_base,
        normalize=args.normalize,
        data_dir=args.data_dir,
        seed=args.seed,
    )
    setup["load_s"] = time.perf_counter() - t
    base, queries, k = ds.base, ds.queries, args.k
    n, dim = base.shape
    _say(f"data: {ds.source}: base {base.shape}, queries {queries.shape}")
    if queries.shape[0] < 1000:
        _say(f"note: only {queries.shape[0]} queries; batch QPS is meant for >= 1000")

    # The index API takes host arrays (so does faiss); this is only the cost of a
    # device copy, timed apart from everything else, for reference.
    t = time.perf_counter()
    jax.block_until_ready((jax.device_put(base), jax.device_put(queries)))
    setup["device_put_s"] = time.perf_counter() - t

    t = time.perf_counter()
    truth = exact_knn(base, queries, k, how=args.gt)
    setup["ground_truth_s"] = time.perf_counter() - t
    dataset = ds.describe() | {"k": k, "ground_truth": args.gt}
    if ds.neighbors is not None and ds.neighbors.shape[1] >= k:
        dataset["file_neighbors_agreement"] = recall_at_k(ds.neighbors[:, :k], truth)
    _say(f"ground truth ({args.gt}) in {setup['ground_truth_s']:.1f}s")

    builds, points = {}, []
    wanted = {_FAMILY_OF[f] for f in families}
    for pq in [False] * ("flat" in families) + [True] * bool({"pq", "adc"} & set(families)):
        _say(
            f"building {'IVF-PQ' if pq else 'IVF-Flat'}: nlist {args.nlist}"
            + (f", M {args.m}, refine {args.refine}" if pq else "")
            + f", {args.kmeans_iters} k-means rounds ({args.kmeans_init} init for ours)"
            + (
                f", ours spilled (lambda {args.spill_lambda})"
                if args.spill_lambda is not None
                else ""
            )
        )
        index, rec = build_ours(base, args, pq=pq)
        methods = ours_methods(index, rec, pq=pq, refine=args.refine)
        methods += build_faiss(base, args, pq=pq)
        methods = [mth for mth in methods if mth.family in wanted]
        for mth in methods:
            builds[mth.name] = mth.build
        _say(format_builds({m.name: m.build for m in methods}))
        # Interleave ours and faiss at each n_probes so slow drifts of a shared
        # machine hit both sides of a ratio alike.
        for p in probes:
            for mth in methods:
                pt = measure_point(
                    mth,
                    p,
                    queries,
                    truth,
                    k=k,
                    repeats=args.repeats,
                    latency_queries=args.latency_queries,
                    latency_threads=args.latency_threads,
                )
                points.append(pt)
                _say(
                    f"  {mth.name:<16} n_probes {p:>4}: recall {pt['recall']:.4f}, "
                    f"{pt['batch_qps']:.0f} q/s, p50 {pt.get('latency_p50_ms', float('nan')):.3f} ms"
                )
        del index, methods

    targets = {FLAT: _floats(args.targets_flat), PQ_REFINE: _floats(args.targets_pq)}
    targets[PQ_ADC] = (
        auto_target(points, PQ_ADC) if args.targets_adc == "auto" else _floats(args.targets_adc)
    )
    ratios = compute_ratios(points, builds, targets, k)

    _say("\n== points ==\n" + format_points(points, k))
    _say("\n== builds ==\n" + format_builds(builds))
    _say(
        "\n== ours / faiss at equal recall (QPS: >1 = ours faster; time, latency, bytes: <1 = ours better) ==\n"
        + format_ratio_table(ratios)
    )

    out = (
        Path(args.out)
        if args.out
        else RESULTS_DIR / (f"{ds.name}-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}.json")
    )
    png = out.with_suffix(".png")
    result = {
        "setup": setup,
        "dataset": dataset,
        "probes": probes,
        "targets": targets,
        "builds": builds,
        "points": points,
        "ratios": ratios,
        "plot": str(png),
    }
    setup["elapsed_s"] = time.perf_counter() - t_start  # before writing outputs
    write_json(result, out)
    plot(
        points,
        png,
        k=k,
        targets=targets,
        title=f"{ds.name} n={n} d={dim} k={k} nlist={args.nlist} M={args.m} refine={args.refine} "
        f"- jax {setup['jax']} vs faiss {setup['faiss']} ({setup['faiss_threads']} thr), "
        f"{setup['cpu_count']} CPUs",
    )
    _say(f"\nwrote {out}\nwrote {png}\n(benchmark ran {setup['elapsed_s']:.0f}s)")
    return result


if __name__ == "__main__":
    main()
