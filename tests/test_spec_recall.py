"""Spec behaviours 31-35 (behaviour.md §5, "Recall", the reference's thresholds).

Recall = Σ|truth ∩ got| / Σ|truth|, truth = float64 brute force over the
inserted vectors.
"""

import numpy as np
import pytest

from iqdb_ivf_jax import IvfConfig, IvfIndex


def truth_topk(x: np.ndarray, q: np.ndarray, k: int, metric: str = "euclidean") -> list[set]:
    X, Q = x.astype(np.float64), q.astype(np.float64)
    if metric == "euclidean":
        d = ((Q[:, None, :] - X[None, :, :]) ** 2).sum(-1)
    elif metric == "dot_product":
        d = -(Q @ X.T)
    else:
        raise AssertionError(metric)
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return [set(row.tolist()) for row in order]


def recall(idx: IvfIndex, x: np.ndarray, q: np.ndarray, k: int, metric: str = "euclidean") -> float:
    truth = truth_topk(x, q, k, metric)
    _, I = idx.search_arrays(q, k=k)
    hit = sum(len(t & set(row.tolist())) for t, row in zip(truth, I))
    return hit / sum(len(t) for t in truth)


def blobs(centres: np.ndarray, n: int, jitter: float, rng) -> np.ndarray:
    lab = rng.integers(0, len(centres), n)
    return (centres[lab] + rng.uniform(-jitter, jitter, (n, centres.shape[1]))).astype(np.float32)


# -------------------------------------------------------------------------- 31
def test_b31_recall_2d_four_blobs_one_probe():
    rng = np.random.default_rng(31)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    x = blobs(centres, 200, 0.5, rng)
    q = blobs(centres, 20, 0.5, rng)
    idx = IvfIndex(2, "euclidean", IvfConfig(n_clusters=4, n_probes=1, seed=7))
    idx.train(x)
    idx.insert_batch(list(range(len(x))), x)
    assert idx.n_probes == 1
    r = recall(idx, x, q, 10)
    assert r >= 0.5, r


# -------------------------------------------------------------------------- 32/33
@pytest.fixture(scope="module")
def latent16():
    rng = np.random.default_rng(32)
    centres = rng.uniform(-10, 10, (16, 16))
    x = blobs(centres, 2000, 0.3, rng)
    q = blobs(centres, 16, 0.3, rng)  # held out: not inserted
    return x, q


def test_b32_recall_ivf_flat_8_probes(latent16):
    x, q = latent16
    idx = IvfIndex(16, "euclidean", IvfConfig(n_clusters=32, n_probes=8, seed=32))
    idx.train(x)
    idx.insert_batch(list(range(len(x))), x)
    r = recall(idx, x, q, 10)
    assert r >= 0.90, r


def test_b33_recall_ivf_pq_m8_refine4(latent16):
    x, q = latent16
    cfg = IvfConfig(
        n_clusters=32, n_probes=32, seed=33, use_pq=True, pq_subvectors=8, pq_refine_factor=4
    )
    idx = IvfIndex(16, "euclidean", cfg)
    idx.train(x)
    idx.insert_batch(list(range(len(x))), x)
    r = recall(idx, x, q, 10)
    assert r >= 0.70, r


# -------------------------------------------------------------------------- 34
def test_b34_recall_pq_small_and_refine_helps():
    rng = np.random.default_rng(34)
    centres = rng.uniform(-5, 5, (4, 8))
    x = blobs(centres, 512, 0.3, rng)
    q = blobs(centres, 16, 0.3, rng)
    cfg = IvfConfig(n_clusters=4, n_probes=4, seed=34, use_pq=True, pq_subvectors=2, pq_refine_factor=4)
    idx = IvfIndex(8, "euclidean", cfg)
    idx.train(x)
    idx.insert_batch(list(range(len(x))), x)
    r4 = recall(idx, x, q, 10)
    assert r4 >= 0.6, r4
    idx.set_pq_refine_factor(0)
    r0 = recall(idx, x, q, 10)
    assert r4 >= r0, (r4, r0)


# -------------------------------------------------------------------------- 35
def test_b35_recall_dot_product_pq():
    rng = np.random.default_rng(35)
    x = rng.uniform(1, 5, (512, 8)).astype(np.float32)
    q = rng.uniform(1, 5, (16, 8)).astype(np.float32)
    cfg = IvfConfig(n_clusters=4, n_probes=4, seed=35, use_pq=True, pq_subvectors=2, pq_refine_factor=4)
    idx = IvfIndex(8, "dot_product", cfg)
    idx.train(x)
    idx.insert_batch(list(range(len(x))), x)
    r = recall(idx, x, q, 10, "dot_product")
    assert r >= 0.6, r
