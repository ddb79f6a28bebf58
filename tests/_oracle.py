"""Shared test oracle: brute force over the library's exact float32 kernel, ranked by
``(distance, seq)`` with NaN last, cross-checked against float64 NumPy (docs/semantics.md §3.1)."""

import jax
import jax.numpy as jnp
import numpy as np

from iqdb_ivf_jax import IvfConfig, IvfIndex, Metric
from iqdb_ivf_jax._metrics import pairwise

METRICS = ["euclidean", "cosine", "dot_product", "manhattan", "hamming"]
COSINE_EPS = 1.1754944e-38
RTOL, ATOL = 1e-4, 1e-3


def bits(a) -> np.ndarray:
    return np.asarray(a, np.float32).view(np.uint32)


def f64_distances(X, q, metric: str) -> np.ndarray:
    X32 = np.asarray(X, np.float32).reshape(-1, np.asarray(q).shape[-1])
    q32 = np.asarray(q, np.float32)
    if metric == "hamming":
        return (X32.view(np.uint32) != q32.view(np.uint32)[None, :]).sum(1).astype(np.float64)
    X64, q64 = X32.astype(np.float64), q32.astype(np.float64)
    if metric == "euclidean":
        return np.sqrt(((X64 - q64) ** 2).sum(1))
    if metric == "manhattan":
        return np.abs(X64 - q64).sum(1)
    if metric == "dot_product":
        return -(X64 @ q64)
    if metric == "cosine":
        denom = np.linalg.norm(X64, axis=1) * np.linalg.norm(q64)
        with np.errstate(divide="ignore", invalid="ignore"):
            d = np.clip(1.0 - (X64 @ q64) / denom, 0.0, 2.0)
        return np.where(denom <= COSINE_EPS, 1.0, d)
    raise AssertionError(metric)


_pairwise = jax.jit(pairwise, static_argnums=2)


def exact_f32(X, q, metric: str) -> np.ndarray:
    """The library's exact float32 kernel, rows padded to a power of two (one compile per bucket)."""
    X = np.asarray(X, np.float32).reshape(-1, np.asarray(q).shape[-1])
    n = X.shape[0]
    if n == 0:
        return np.zeros(0, np.float32)
    Xp = np.zeros((max(16, 1 << (n - 1).bit_length()), X.shape[1]), np.float32)
    Xp[:n] = X
    out = _pairwise(
        jnp.asarray(np.asarray(q, np.float32)[None, :]), jnp.asarray(Xp), Metric(metric)
    )
    return np.asarray(out)[0, :n]


def rank(d: np.ndarray, seqs) -> np.ndarray:
    """Order by (distance, seq), NaN last."""
    d = np.asarray(d, np.float64)
    nan = np.isnan(d)
    return np.lexsort((np.asarray(seqs), np.where(nan, np.inf, d), nan))


class Model:
    """What the index should hold: id -> (vector, seq, metadata), with seqs."""

    def __init__(self):
        self.entries: dict = {}
        self.next_seq = 0

    def insert(self, id_, v, meta=None):
        self.entries[id_] = (np.asarray(v, np.float32), self.next_seq, meta)
        self.next_seq += 1

    def delete(self, id_):
        del self.entries[id_]

    def arrays(self, pred=None):
        items = [(i, e) for i, e in self.entries.items() if pred is None or pred(e[2])]
        ids = [i for i, _ in items]
        X = np.stack([e[0] for _, e in items]) if items else None
        seqs = np.array([e[1] for _, e in items], np.int64)
        return ids, X, seqs


def oracle(model: Model, q, metric: str, k: int, pred=None):
    """(ids, f32 distances, f64 distances) of the exact top-k."""
    ids, X, seqs = model.arrays(pred)
    if not ids or k == 0:
        return [], np.zeros(0, np.float32), np.zeros(0)
    d32 = exact_f32(X, q, metric)
    order = rank(d32, seqs)[:k]
    d64 = f64_distances(X, q, metric)
    return [ids[i] for i in order], d32[order], d64[order]


def assert_full_probe_matches(hits, model: Model, q, metric: str, k: int, pred=None):
    want_ids, want_d32, _ = oracle(model, q, metric, k, pred)
    got_ids = [h.id for h in hits]
    assert got_ids == want_ids
    got_d = np.array([h.distance for h in hits], np.float32)
    # Bit equality with the exact kernel is checked separately (test_b24_distance_bits_*);
    # here allow a few ulps so one rounding difference does not hide other failures.
    np.testing.assert_allclose(got_d, want_d32, rtol=1e-6, atol=1e-6)
    # float64 cross-check (tolerant): each hit's distance, and the k-th smallest values.
    ids, X, _seqs = model.arrays(pred)
    if not ids or k == 0:
        return
    d64 = f64_distances(X, q, metric)
    pos = {i: j for j, i in enumerate(ids)}
    np.testing.assert_allclose(got_d, d64[[pos[i] for i in got_ids]], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(got_d, np.sort(d64)[: len(got_ids)], rtol=RTOL, atol=ATOL)


def build(metric, X, n_clusters, *, n_probes=None, seed=7, ids=None, metas=None, model=None):
    idx = IvfIndex(
        X.shape[1],
        metric,
        IvfConfig(n_clusters=n_clusters, n_probes=n_probes or n_clusters, seed=seed),
    )
    idx.train(X)
    ids = list(range(len(X))) if ids is None else ids
    idx.insert_batch(ids, X, metas)
    if model is not None:
        for j, i in enumerate(ids):
            model.insert(i, X[j], None if metas is None else metas[j])
    return idx
