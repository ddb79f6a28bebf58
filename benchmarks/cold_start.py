"""Cold start: what a fresh process spends compiling before (and between) answers.

Builds an IVF-Flat index in THIS process (run it fresh: ``python -m
benchmarks.cold_start``) and reports, per step, the XLA programs compiled and the
seconds spent tracing, lowering and compiling them (JAX's own compile-time
events), apart from the step's wall time:

- ``train``, ``insert`` (one ``insert_batch`` of the whole base),
- ``first_batch`` (one ``search_arrays`` of the queries) and ``first_single``
  (one ``search``) at the config's ``n_probes``,
- ``probes_<n>``: a batch search and a single search at each further ``n_probes``.

The persistent compilation cache is off unless ``--cache DIR`` is given (then a
second run shows the warm-cache cost). Writes JSON to stdout and to ``--out``.

    python -m benchmarks.cold_start [--dataset debian|synthetic] [--nlist 256]
        [--probes 8,24,32,48,64,96] [--cache DIR] [--out FILE]
"""

import argparse
import json
import sys
import time

import jax
import numpy as np

from benchmarks.datasets import load_debian, synthetic
from benchmarks.methods import CompileMeter
from iqdb_ivf_jax import IvfConfig, IvfIndex


def _step(fn) -> dict:
    """Run ``fn`` (which blocks on its results): wall and compile seconds,
    programs compiled and programs loaded from the persistent cache."""
    with CompileMeter() as meter:
        t0 = time.perf_counter()
        fn()
        wall = time.perf_counter() - t0
    return {
        "wall_s": round(wall, 4),
        "compile_s": round(meter.seconds, 4),
        "programs": meter.compiles,
        "cache_hits": meter.cache_hits,
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="debian", choices=("debian", "synthetic"))
    ap.add_argument("--nlist", type=int, default=256)
    ap.add_argument("--n-probes", type=int, default=16, help="the config's n_probes")
    ap.add_argument("--probes", default="8,24,32,48,64,96", help="further n_probes values")
    ap.add_argument("--kmeans-iters", type=int, default=10)
    ap.add_argument("--cache", help="persistent compilation cache folder (default: off)")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args(argv)
    if args.cache:
        jax.config.update("jax_compilation_cache_dir", args.cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    data = load_debian() if args.dataset == "debian" else synthetic(n=20_000, dim=64)
    x, q = data.base, data.queries[:1000]
    index = IvfIndex(
        x.shape[1],
        "euclidean",
        IvfConfig(
            n_clusters=args.nlist,
            n_probes=args.n_probes,
            kmeans_max_iterations=args.kmeans_iters,
            training_sample_size=min(x.shape[0], 256 * args.nlist),
        ),
    )
    steps = {
        "train": _step(lambda: index.train(x)),
        "insert": _step(lambda: index.insert_batch(np.arange(x.shape[0]), x)),
        "first_batch": _step(lambda: index.search_arrays(q, k=10)),
        "first_single": _step(lambda: index.search(q[0], k=10)),
    }
    for n in [int(v) for v in args.probes.split(",") if v]:
        steps[f"probes_{n}"] = _step(
            lambda n=n: (
                index.search_arrays(q, k=10, n_probes=n),
                index.search(q[1], 10, n_probes=n),
            )
        )
    first = ("train", "insert", "first_batch", "first_single")
    further = [v for key, v in steps.items() if key.startswith("probes_")]
    out = {
        "dataset": data.describe(),
        "backend": jax.default_backend(),
        "jax": jax.__version__,
        "cache": args.cache,
        "steps": steps,
        "first_answer_compile_s": round(sum(steps[s]["compile_s"] for s in first), 3),
        "first_answer_programs": sum(steps[s]["programs"] for s in first),
        "further_probes_compile_s_median": (
            float(np.median([v["compile_s"] for v in further])) if further else None
        ),
        "total_programs": sum(v["programs"] for v in steps.values()),
        "total_cache_hits": sum(v["cache_hits"] for v in steps.values()),
    }
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
