"""Demo: build an IVF-Flat index on real embeddings, search, print recall and speed.

A second index with spilled (SOAR) assignment shows the same recall at far
fewer probes (``--no-spill`` skips it).

Run ``python -m iqdb_ivf_jax.demo``. It uses the sentence embeddings in
``../shared/data`` (or ``$IQDB_DATA``) when present, else generated clustered
data, and computes ground truth by float64 brute force.
"""

import argparse
import os
import time
from pathlib import Path

import numpy as np


def load_data(data_dir: str | None = None, *, n_gen: int = 20000, dim: int = 128):
    """``(base, queries, source)``: real embeddings if found, else clustered data."""
    candidates = [data_dir, os.environ.get("IQDB_DATA"), "../shared/data", "shared/data"]
    for c in candidates:
        if c and (Path(c) / "debian_base.f16.npy").exists():
            base = np.load(Path(c) / "debian_base.f16.npy").astype(np.float32)
            queries = np.load(Path(c) / "debian_queries.f16.npy").astype(np.float32)
            return base, queries, f"real embeddings from {c}"
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((200, dim)).astype(np.float32) * 4

    def draw(n):
        lab = rng.integers(0, len(centres), n)
        return (centres[lab] + rng.standard_normal((n, dim))).astype(np.float32)

    return draw(n_gen), draw(1000), "generated clustered data (no ../shared/data found)"


def exact_topk(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """float64 brute-force Euclidean top-k ids, in chunks."""
    b = base.astype(np.float64)
    bn = (b * b).sum(1)
    out = []
    for s in range(0, len(queries), 256):
        q = queries[s : s + 256].astype(np.float64)
        d = bn[None, :] - 2 * q @ b.T
        out.append(np.argsort(d, axis=1, kind="stable")[:, :k])
    return np.concatenate(out)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(f[:k]) & set(t)) / k for f, t in zip(found, truth)]))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="folder with debian_base.f16.npy")
    ap.add_argument("--n-clusters", type=int, default=256)
    ap.add_argument("--probes", default="4,8,16,32,64")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument(
        "--spill-lambda",
        type=float,
        default=1.0,
        help="also build a spilled-assignment index (IvfConfig.spill_lambda); --no-spill skips it",
    )
    ap.add_argument("--no-spill", dest="spill_lambda", action="store_const", const=None)
    ap.add_argument("--spill-probes", default="2,4,8,16")
    args = ap.parse_args(argv)

    import jax

    from iqdb_ivf_jax import IvfConfig, IvfIndex

    base, queries, source = load_data(args.data)
    print(f"data: {source}: base {base.shape}, queries {queries.shape}")
    print(f"jax {jax.__version__} on {jax.default_backend()}")
    truth = exact_topk(base, queries, args.k)

    cfg = IvfConfig(n_clusters=args.n_clusters, n_probes=8)
    _build_and_sweep("IVF-Flat", IvfIndex, cfg, base, queries, truth, args.probes, args.k)
    if args.spill_lambda is not None:
        cfg = cfg.with_spill_lambda(args.spill_lambda)
        label = f"IVF-Flat, spilled assignment (spill_lambda={args.spill_lambda})"
        _build_and_sweep(label, IvfIndex, cfg, base, queries, truth, args.spill_probes, args.k)


def _build_and_sweep(label, index_cls, cfg, base, queries, truth, probes: str, k: int) -> None:
    """Build an index with ``cfg``, then print recall@k and batch q/s per n_probes."""
    index = index_cls(base.shape[1], "euclidean", cfg)
    t0 = time.perf_counter()
    index.train(base)
    t1 = time.perf_counter()
    index.insert_batch(np.arange(len(base)), base)
    t2 = time.perf_counter()
    st = index.stats()
    print(
        f"\n{label}: train {t1 - t0:.2f}s ({st.extra['kmeans_iterations']} k-means rounds), "
        f"add {t2 - t1:.2f}s, padding ratio {st.extra['padding_ratio']:.3f}"
    )
    print(f"{'n_probes':>8} {'recall@' + str(k):>10} {'batch q/s':>10} {'scan pad':>9}")
    for p in [int(v) for v in probes.split(",")]:
        if p > cfg.n_clusters:
            continue
        index.set_n_probes(p)
        index.search_arrays(queries, k)  # warm-up (compiles)
        times = []
        for _ in range(3):
            t = time.perf_counter()
            _, ids = index.search_arrays(queries, k)
            times.append(time.perf_counter() - t)
        qps = len(queries) / float(np.median(times))
        pad = index.stats().extra["last_search"]["scan_padding"]
        print(f"{p:>8} {recall(ids, truth):>10.4f} {qps:>10.0f} {pad:>9.3f}")


if __name__ == "__main__":
    main()
