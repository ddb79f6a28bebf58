"""Spec behaviours 11-17 (docs/semantics.md §5, "Training") and 61 (§4f determinism across
processes and PRNG implementations): black-box tests."""

import hashlib
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from iqdb_ivf_jax import (
    DimensionMismatchError,
    InvalidConfigError,
    InvalidVectorError,
    IvfConfig,
    IvfIndex,
)


def bits(a) -> np.ndarray:
    return np.asarray(a, np.float32).view(np.uint32)


def centroids(idx: IvfIndex) -> np.ndarray:
    return np.asarray(idx.state.centroids)


def uniform(n, d, seed, lo=-1.0, hi=1.0):
    return np.random.default_rng(seed).uniform(lo, hi, (n, d)).astype(np.float32)


# -------------------------------------------------------------------------- 11
@pytest.mark.parametrize("empty", [np.zeros((0, 2), np.float32), [], np.zeros((0,), np.float32)])
def test_b11_empty_sample(empty):
    idx = IvfIndex(2, "euclidean", IvfConfig(n_clusters=1, n_probes=1))
    with pytest.raises(InvalidConfigError, match="non-empty sample"):
        idx.train(empty)
    assert not idx.is_trained


def test_b11_wrong_row_length():
    idx = IvfIndex(2, "euclidean", IvfConfig(n_clusters=1, n_probes=1))
    with pytest.raises(DimensionMismatchError) as ei:
        idx.train(np.ones((4, 3), np.float32))
    assert (ei.value.expected, ei.value.found) == (2, 3)
    with pytest.raises(DimensionMismatchError) as ei:
        idx.train([[1.0, 2.0, 3.0]])
    assert (ei.value.expected, ei.value.found) == (2, 3)
    # length is checked before finiteness
    with pytest.raises(DimensionMismatchError):
        idx.train([[np.nan, 2.0, 3.0]])
    assert not idx.is_trained


def test_b11_bad_rank_or_dtype():
    idx = IvfIndex(2, "euclidean", IvfConfig(n_clusters=1, n_probes=1))
    with pytest.raises(InvalidVectorError):
        idx.train(np.ones((2, 2, 2), np.float32))
    with pytest.raises(InvalidVectorError):
        idx.train(np.array([["a", "b"]]))
    with pytest.raises(InvalidVectorError):
        idx.train(np.ones((3, 2), bool))
    assert not idx.is_trained
    idx.train(np.array([[1, 2], [3, 4]], np.int32))  # integers are fine
    assert idx.is_trained


# -------------------------------------------------------------------------- 12
def test_b12_too_few_samples_then_enough():
    idx = IvfIndex(2, "euclidean", IvfConfig(n_clusters=10, n_probes=2))
    with pytest.raises(InvalidConfigError):
        idx.train(uniform(5, 2, 0))
    assert not idx.is_trained
    idx.train(uniform(50, 2, 1))
    assert idx.is_trained
    assert centroids(idx).shape == (10, 2)
    assert len(idx.cluster_stats().cluster_sizes) == 10


def test_b12_pq_needs_256():
    cfg = IvfConfig(n_clusters=4, n_probes=2, use_pq=True, pq_subvectors=2)
    idx = IvfIndex(8, "euclidean", cfg)
    with pytest.raises(InvalidConfigError, match="256"):
        idx.train(uniform(100, 8, 2))
    assert not idx.is_trained


# -------------------------------------------------------------------------- 13
def test_b13_second_train_and_train_inserts_nothing():
    idx = IvfIndex(2, "euclidean", IvfConfig(n_clusters=2, n_probes=2))
    x = uniform(40, 2, 3)
    idx.train(x)
    assert len(idx) == 0 and idx.is_empty()
    assert idx.search(x[0], k=5) == []
    assert sum(idx.cluster_stats().cluster_sizes) == 0
    before = centroids(idx).copy()
    with pytest.raises(InvalidConfigError, match="already trained"):
        idx.train(x)
    # "already trained" is checked first, even for an empty sample
    with pytest.raises(InvalidConfigError, match="already trained"):
        idx.train(np.zeros((0, 2), np.float32))
    np.testing.assert_array_equal(bits(centroids(idx)), bits(before))


@pytest.mark.parametrize("seed", [0, 2**63, 2**64 - 1, 2**32, 0xDEADBEEFCAFEF00D])
def test_b13_extreme_seeds_work(seed):
    x = uniform(60, 3, 4)
    idx = IvfIndex(3, "euclidean", IvfConfig(n_clusters=4, n_probes=4, seed=seed))
    idx.train(x)
    idx.insert_batch(list(range(60)), x)
    assert idx.search(x[7], k=1)[0].id == 7


def test_b13_seed_high_word_is_used():
    # 5 and 2**32 + 5 share the low 32 bits: the key must keep all 64 bits.
    x = uniform(200, 3, 5)
    cs = []
    for seed in (5, 2**32 + 5):
        idx = IvfIndex(3, "euclidean", IvfConfig(n_clusters=8, n_probes=1, seed=seed))
        idx.train(x)
        cs.append(centroids(idx))
    assert not np.array_equal(bits(cs[0]), bits(cs[1]))


# -------------------------------------------------------------------------- 14
@pytest.mark.parametrize("metric", ["euclidean", "manhattan", "cosine"])
def test_b14_two_tight_blobs(metric):
    rng = np.random.default_rng(14)
    a = np.array([1.0, 1.0], np.float32) + rng.uniform(-0.05, 0.05, (50, 2)).astype(np.float32)
    b = np.array([10.0, -10.0], np.float32) + rng.uniform(-0.05, 0.05, (50, 2)).astype(np.float32)
    x = np.concatenate([a, b])[rng.permutation(100)]
    idx = IvfIndex(2, metric, IvfConfig(n_clusters=2, n_probes=1, seed=14))
    idx.train(x)
    c = centroids(idx)
    assert c.shape == (2, 2)
    if metric == "cosine":  # spherical k-means: compare directions
        a_dir = a.mean(0) / np.linalg.norm(a.mean(0))
        b_dir = b.mean(0) / np.linalg.norm(b.mean(0))
        targets = [a_dir, b_dir]
        tol = 0.05
    else:
        targets = [a.mean(0), b.mean(0)]
        tol = 1.0
    for t in targets:
        assert np.min(np.linalg.norm(c - t, axis=1)) < tol, (metric, c)
    idx.insert_batch(list(range(100)), x)
    assert sorted(idx.cluster_stats().cluster_sizes) == [50, 50]


# -------------------------------------------------------------------------- 15
def _build(seed, x, n_clusters=8, tss=65536):
    idx = IvfIndex(
        x.shape[1],
        "euclidean",
        IvfConfig(n_clusters=n_clusters, n_probes=3, seed=seed, training_sample_size=tss),
    )
    idx.train(x)
    idx.insert_batch(list(range(len(x))), x)
    return idx


def test_b15_same_seed_same_index():
    x = uniform(200, 3, 15, -5, 5)
    q = uniform(12, 3, 16, -5, 5)
    a, b = _build(123, x), _build(123, x)
    np.testing.assert_array_equal(bits(centroids(a)), bits(centroids(b)))
    assert a.cluster_stats() == b.cluster_stats()
    sa, sb = a.stats(), b.stats()
    assert sa.n_vectors == sb.n_vectors == 200
    assert sa.extra["kmeans_iterations"] == sb.extra["kmeans_iterations"]
    ia, ib = sa.extra["kmeans_inertia"], sb.extra["kmeans_inertia"]
    assert ia == ib or (math.isnan(ia) and math.isnan(ib))
    Da, Ia = a.search_arrays(q, k=10)
    Db, Ib = b.search_arrays(q, k=10)
    np.testing.assert_array_equal(Ia, Ib)
    np.testing.assert_array_equal(bits(Da), bits(Db))
    for qi in q:
        ha, hb = a.search(qi, k=10), b.search(qi, k=10)
        assert [(h.id, h.distance) for h in ha] == [(h.id, h.distance) for h in hb]


# -------------------------------------------------------------------------- 16
def test_b16_different_seeds_differ():
    x = uniform(300, 2, 16)
    s1 = _build(1, x).cluster_stats().cluster_sizes
    s2 = _build(2, x).cluster_stats().cluster_sizes
    assert sum(s1) == sum(s2) == 300
    assert s1 != s2


def test_b16_subsampled_training_reproducible():
    x = uniform(500, 3, 17, -5, 5)
    a, b = _build(9, x, tss=100), _build(9, x, tss=100)
    np.testing.assert_array_equal(bits(centroids(a)), bits(centroids(b)))
    assert a.cluster_stats() == b.cluster_stats()
    assert a.stats().extra["kmeans_iterations"] == b.stats().extra["kmeans_iterations"]
    q = uniform(8, 3, 18, -5, 5)
    Da, Ia = a.search_arrays(q, k=10)
    Db, Ib = b.search_arrays(q, k=10)
    np.testing.assert_array_equal(Ia, Ib)
    np.testing.assert_array_equal(bits(Da), bits(Db))
    assert len(a) == 500  # the cap limits training only


# -------------------------------------------------------------------------- 17
def test_b17_fewer_distinct_points_than_clusters():
    base = np.array([[0.0, 0.0], [3.0, 3.0], [-2.0, 5.0]], np.float32)
    x = np.repeat(base, 7, axis=0)  # 21 rows, 3 distinct points
    idx = IvfIndex(2, "euclidean", IvfConfig(n_clusters=8, n_probes=8, seed=17))
    idx.train(x)
    c = centroids(idx)
    assert c.shape == (8, 2)
    assert np.all(np.isfinite(c))
    idx.insert_batch(list(range(len(x))), x)
    st = idx.cluster_stats()
    assert st.n_clusters == 8
    assert len(st.cluster_sizes) == 8
    assert sum(st.cluster_sizes) == 21
    assert 0 in st.cluster_sizes
    it = idx.stats().extra["kmeans_iterations"]
    assert 1 <= it <= 25
    for _j, v in enumerate(base):
        hits = idx.search(v, k=7)
        assert len(hits) == 7 and all(h.distance == 0.0 for h in hits)


def test_b17_at_most_25_iterations():
    x = uniform(1000, 4, 19)
    idx = IvfIndex(4, "euclidean", IvfConfig(n_clusters=64, n_probes=4, seed=19))
    idx.train(x)
    it = idx.stats().extra["kmeans_iterations"]
    assert isinstance(it, int)
    assert 1 <= it <= 25


REPO = Path(__file__).resolve().parents[1]


# -------------------------------------------------------------------------- 61
def b61_digest() -> str:
    """sha256 over centroids, codebooks and search results of a Flat and a PQ build."""
    rng = np.random.default_rng(61)
    x = rng.normal(0, 2, (400, 8)).astype(np.float32)
    q = rng.normal(0, 2, (6, 8)).astype(np.float32)
    h = hashlib.sha256()
    for cfg in (
        IvfConfig(n_clusters=4, n_probes=2, seed=2**63 + 61),
        IvfConfig(
            n_clusters=4, n_probes=4, seed=61, use_pq=True, pq_subvectors=2, pq_refine_factor=0
        ),
    ):
        idx = IvfIndex(8, "euclidean", cfg)
        idx.train(x)
        idx.insert_batch(list(range(400)), x)
        D, I = idx.search_arrays(q, k=10)
        for a in (idx.state.centroids, idx.state.codebooks, D, I):
            h.update(np.ascontiguousarray(np.asarray(a)).tobytes())
    return h.hexdigest()


# Run in a fresh interpreter (the conftest's strict settings, then this module's digest).
CHILD = """
import sys
import jax
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")
sys.path.insert(0, sys.argv[1])
import test_spec_train
print(test_spec_train.b61_digest())
"""


def _run_digest(env_extra: dict) -> subprocess.Popen:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(env_extra)
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(Path(__file__).resolve().parent)],
        cwd=str(REPO),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_b61_bit_identical_rebuilds_across_processes_and_prng_impls():
    # one other process, with another default PRNG impl: both must be irrelevant
    procs = {"rbg-process": _run_digest({"JAX_DEFAULT_PRNG_IMPL": "rbg"})}
    here = b61_digest()
    assert b61_digest() == here, "two builds in one process differ"
    for name, p in procs.items():
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        assert out.strip().splitlines()[-1] == here, f"{name} process differs"
