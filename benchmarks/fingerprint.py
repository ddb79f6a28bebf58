"""Digest of every result the index produces on the Debian embeddings: centroids,
batch search on both paths, single queries, filtered search, after deletes.

Run before and after a change that must not alter results; equal digests mean
bit-identical behaviour on this data. Prints one JSON object of SHA-256 digests.

    python -m benchmarks.fingerprint [--data DIR] [--rows N]
"""

import argparse
import hashlib
import json
import pathlib

import numpy as np

from iqdb_ivf_jax import IqdbError, IvfConfig, IvfIndex


def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(np.asarray(a))
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def _load(data: pathlib.Path, rows: int):
    base = data / "debian_base.f16.npy"
    if base.exists():
        x = np.load(base).astype(np.float32)[:rows]
        q = np.load(data / "debian_queries.f16.npy").astype(np.float32)
        return x, q
    rng = np.random.default_rng(0)
    c = rng.standard_normal((64, 96)).astype(np.float32) * 4
    x = (c[rng.integers(0, 64, rows)] + rng.standard_normal((rows, 96))).astype(np.float32)
    return x, (c[rng.integers(0, 64, 500)] + rng.standard_normal((500, 96))).astype(np.float32)


CASES = {
    "flat_l2": ("euclidean", {"n_clusters": 128, "n_probes": 16}),
    "flat_cos": ("cosine", {"n_clusters": 128, "n_probes": 16}),
    "flat_dot_random": (
        "dot_product",
        {"n_clusters": 128, "n_probes": 16, "kmeans_init": "random"},
    ),
    "flat_spill": ("euclidean", {"n_clusters": 128, "n_probes": 8, "spill_lambda": 1.0}),
    "pq_res_refine": (
        "euclidean",
        {
            "n_clusters": 64,
            "n_probes": 8,
            "use_pq": True,
            "pq_subvectors": 48,
            "pq_by_residual": True,
            "pq_refine_factor": 4,
        },
    ),
    "pq_plain_adc": (
        "dot_product",
        {
            "n_clusters": 64,
            "n_probes": 8,
            "use_pq": True,
            "pq_subvectors": 24,
            "pq_refine_factor": 0,
        },
    ),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--data", default=str(pathlib.Path(__file__).resolve().parents[2] / "shared" / "data")
    )
    ap.add_argument("--rows", type=int, default=20_000)
    args = ap.parse_args()
    x, q = _load(pathlib.Path(args.data), args.rows)
    out = {}
    for name, (metric, cfg) in CASES.items():
        idx = IvfIndex(x.shape[1], metric, IvfConfig(**cfg))
        idx.train(x)
        meta = [{"g": i % 7} for i in range(len(x))]
        idx.insert_batch(np.arange(len(x)), x, meta)
        row = {"centroids": _digest(idx.state.centroids)}
        for path in ("query", "list"):
            try:
                row[path] = _digest(*idx.search_arrays(q, k=10, path=path))
            except IqdbError as e:  # a path the config does not support
                row[path] = type(e).__name__
        row["single"] = _digest(
            *[np.array([(h.id, h.distance) for h in idx.search(v, k=10)]) for v in q[:40]]
        )
        row["filtered"] = _digest(*idx.search_arrays(q[:200], k=10, filter={"g": {"$in": [1, 3]}}))
        for i in range(0, len(x), 50):
            idx.delete(i)
        row["deleted"] = _digest(*idx.search_arrays(q, k=10))
        row["stats"] = [len(idx), idx.stats().extra["padding_ratio"]]
        out[name] = row
        print(name, row, flush=True)
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
