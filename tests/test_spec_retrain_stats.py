"""Spec behaviours 48-55 (docs/semantics.md §5, "Retrain" and "Probe tuning and stats"), and 28
(ties come back in insertion order across lists, deletes and retrain)."""

import math
from fractions import Fraction

import numpy as np
import pytest

from iqdb_ivf_jax import (
    IndexStats,
    InvalidConfigError,
    IvfClusterStats,
    IvfConfig,
    IvfIndex,
)


def bits(a) -> np.ndarray:
    return np.asarray(a, np.float32).view(np.uint32)


def blobs(centres, sizes, jitter, seed) -> np.ndarray:
    rng = np.random.default_rng(seed)
    parts = [
        np.asarray(c, np.float32) + rng.uniform(-jitter, jitter, (s, len(c)))
        for c, s in zip(centres, sizes)
    ]
    x = np.concatenate(parts).astype(np.float32)
    return x[rng.permutation(len(x))]


def build(x, n_clusters, n_probes=None, seed=48, metric="euclidean", ids=None) -> IvfIndex:
    idx = IvfIndex(
        x.shape[1],
        metric,
        IvfConfig(n_clusters=n_clusters, n_probes=n_probes or n_clusters, seed=seed),
    )
    idx.train(x)
    idx.insert_batch(list(range(len(x))) if ids is None else ids, x)
    return idx


def snapshot(idx: IvfIndex, q: np.ndarray, k: int = 10):
    D, I = idx.search_arrays(q, k=k)
    return bits(D).copy(), I.copy()


# -------------------------------------------------------------------------- 48
def test_b48_retrain_before_train():
    idx = IvfIndex(2, "euclidean", IvfConfig(n_clusters=2, n_probes=2))
    with pytest.raises(InvalidConfigError, match="trained"):
        idx.retrain()
    assert not idx.is_trained


def test_b48_retrain_keeps_entries():
    x = blobs([(0, 0), (10, 0), (0, 10), (10, 10)], [40, 40, 40, 40], 1.0, 48)
    idx = IvfIndex(2, "euclidean", IvfConfig(n_clusters=4, n_probes=4, seed=48))
    idx.train(x[:20])  # a poor training sample
    ids = [f"id{i}" for i in range(len(x))]
    metas = [{"i": i} if i % 3 else None for i in range(len(x))]
    idx.insert_batch(ids, x, metas)
    idx.delete("id5")
    before = {i: idx.get(i) for i in ids if i != "id5"}
    idx.retrain()
    assert idx.is_trained
    assert len(idx) == len(x) - 1
    assert sum(idx.cluster_stats().cluster_sizes) == len(x) - 1
    assert "id5" not in idx
    for i, (v, meta) in before.items():
        assert i in idx
        v2, meta2 = idx.get(i)
        np.testing.assert_array_equal(v2, v)
        assert meta2 == meta
    hits = idx.search(x[0], k=len(x))
    assert {h.id for h in hits} == set(before)


def test_b48_delete_all_then_retrain():
    x = blobs([(0, 0), (10, 0)], [10, 10], 1.0, 481)
    idx = build(x, 2)
    c_before = bits(idx.state.centroids).copy()
    for i in range(len(x)):
        idx.delete(i)
    idx.retrain()  # empty: a no-op
    assert idx.is_trained and len(idx) == 0
    assert idx.search(x[0], k=5) == []
    np.testing.assert_array_equal(bits(idx.state.centroids), c_before)
    idx.insert(1, x[1])
    assert [h.id for h in idx.search(x[1], k=5)] == [1]


# -------------------------------------------------------------------------- 49
def _recall(idx, x, ids, q, k):
    X = x.astype(np.float64)
    _, I = idx.search_arrays(q, k=k)
    hit = 0
    for qi, row in zip(q, I):
        d = ((X - qi.astype(np.float64)) ** 2).sum(1)
        truth = {ids[j] for j in np.argsort(d, kind="stable")[:k]}
        hit += len(truth & set(row.tolist()))
    return hit / (k * len(q))


def test_b49_drift_recall_after_retrain():
    old = blobs([(-10, 0), (10, 0)], [100, 100], 1.5, 49)
    idx = IvfIndex(2, "euclidean", IvfConfig(n_clusters=4, n_probes=1, seed=49))
    idx.train(old)
    idx.insert_batch(list(range(200)), old)
    new = blobs([(0, 12)], [100], 2.0, 50)
    idx.insert_batch(list(range(200, 300)), new)
    allx = np.concatenate([old, new])
    ids = list(range(300))
    q = blobs([(0, 12)], [20], 2.0, 51)
    before = _recall(idx, allx, ids, q, 10)
    idx.retrain()
    after = _recall(idx, allx, ids, q, 10)
    assert after >= before, (before, after)
    assert len(idx) == 300


# -------------------------------------------------------------------------- 50
def _history(seed=50):
    x = blobs([(0, 0), (6, 0), (0, 6)], [30, 30, 30], 2.0, seed)
    idx = build(x, 3, seed=5)
    for i in (3, 9, 27, 81):
        idx.delete(i)
    tie = np.array([1.0, 1.0], np.float32)
    idx.insert("t1", tie)
    idx.insert(3, x[3])
    idx.insert("t2", tie)
    idx.retrain()
    return idx, x


def test_b50_same_history_same_hits():
    (a, x), (b, _) = _history(), _history()
    q = np.concatenate([x[:6], np.array([[1.0, 1.0]], np.float32)])
    np.testing.assert_array_equal(bits(a.state.centroids), bits(b.state.centroids))
    Da, Ia = snapshot(a, q)
    Db, Ib = snapshot(b, q)
    np.testing.assert_array_equal(Ia, Ib)
    np.testing.assert_array_equal(Da, Db)
    assert a.cluster_stats() == b.cluster_stats()


def test_b50_retrain_is_a_fixed_point():
    idx, x = _history()
    q = np.concatenate([x[:6], np.array([[1.0, 1.0]], np.float32)])
    c1 = bits(idx.state.centroids).copy()
    s1 = snapshot(idx, q)
    idx.retrain()
    np.testing.assert_array_equal(bits(idx.state.centroids), c1)
    s2 = snapshot(idx, q)
    np.testing.assert_array_equal(s1[0], s2[0])
    np.testing.assert_array_equal(s1[1], s2[1])


def test_b50_tie_order_survives_retrain():
    idx, _ = _history()
    hits = idx.search([1.0, 1.0], k=2)
    assert [h.id for h in hits] == ["t1", "t2"]
    idx.retrain()
    assert [h.id for h in idx.search([1.0, 1.0], k=2)] == ["t1", "t2"]
    idx.delete("t1")
    idx.insert("t1", [1.0, 1.0])
    idx.retrain()
    assert [h.id for h in idx.search([1.0, 1.0], k=2)] == ["t2", "t1"]


def test_b50_insert_in_order_then_retrain_reproduces_train():
    x = blobs([(0, 0), (6, 0), (0, 6)], [30, 30, 30], 2.0, 501)
    q = x[:8]
    a = build(x, 3, seed=77)  # train(x), insert x in order
    ca = bits(a.state.centroids).copy()
    sa = snapshot(a, q)
    a.retrain()
    np.testing.assert_array_equal(bits(a.state.centroids), ca)
    sb = snapshot(a, q)
    np.testing.assert_array_equal(sa[0], sb[0])
    np.testing.assert_array_equal(sa[1], sb[1])


# -------------------------------------------------------------------------- 51
@pytest.fixture(scope="module")
def skewed():
    x = blobs([(0, 0), (50, 0), (0, 50), (50, 50)], [64, 4, 4, 4], 0.5, 51)
    idx = build(x, 4, seed=51)
    return idx


def test_b51_suggest_monotone_and_minimal(skewed):
    idx = skewed
    sizes = sorted(idx.cluster_stats().cluster_sizes, reverse=True)
    assert sizes == [64, 4, 4, 4]
    live = len(idx)
    prev = 0
    for step in range(0, 101, 5):
        c = step / 100
        n = idx.suggest_n_probes(c)
        assert isinstance(n, int)
        assert 1 <= n <= 4
        assert n >= prev, "monotone in coverage"
        prev = n
        target = math.ceil(Fraction(repr(float(c))) * live)
        if 0 < c < 1:
            assert sum(sizes[:n]) >= target
            assert n == 1 or sum(sizes[: n - 1]) < target
    assert idx.suggest_n_probes(0.5) == 1
    assert idx.suggest_n_probes(0.8) == 1  # ceil(60.8) = 61 <= 64
    assert idx.suggest_n_probes(0.86) == 2  # ceil(65.36) = 66 > 64
    assert idx.suggest_n_probes(0.99) == 4  # ceil(75.24) = 76
    # pure: no side effects
    assert idx.n_probes == 4
    assert idx.config.n_probes == 4


# -------------------------------------------------------------------------- 52
def test_b52_suggest_edges(skewed):
    idx = skewed
    assert idx.suggest_n_probes(0.0) == 1
    assert idx.suggest_n_probes(-0.0) == 1
    assert idx.suggest_n_probes(0) == 1
    assert idx.suggest_n_probes(1.0) == 4
    assert idx.suggest_n_probes(1) == 4
    untrained = IvfIndex(2, "euclidean", IvfConfig(n_clusters=8, n_probes=2))
    assert untrained.suggest_n_probes(0.7) == 1
    assert untrained.suggest_n_probes(1.0) == 1
    empty = IvfIndex(2, "euclidean", IvfConfig(n_clusters=4, n_probes=2, seed=51))
    empty.train(np.random.default_rng(0).normal(size=(20, 2)).astype(np.float32))
    assert empty.suggest_n_probes(0.7) == 1
    for bad in (-0.1, 1.1, float("nan"), float("inf"), float("-inf"), 2, -1):
        for target in (idx, untrained, empty):
            with pytest.raises(InvalidConfigError, match="coverage"):
                target.suggest_n_probes(bad)


def test_b52_one_cluster():
    x = np.random.default_rng(1).normal(size=(20, 2)).astype(np.float32)
    idx = build(x, 1)
    for c in (0.0, 0.3, 1.0):
        assert idx.suggest_n_probes(c) == 1


# -------------------------------------------------------------------------- 53
def test_b53_ten_lists_of_ten():
    centres = [(100.0 * i, 0.0) for i in range(10)]
    x = blobs(centres, [10] * 10, 0.1, 53)
    idx = build(x, 10, n_probes=1, seed=53)
    assert sorted(idx.cluster_stats().cluster_sizes) == [10] * 10
    assert idx.suggest_n_probes(0.1) == 1  # exactly 10 of 100 (f32 would give 11 -> 2)
    assert idx.suggest_n_probes(0.11) == 2
    assert idx.suggest_n_probes(0.8) == 8
    idx.set_n_probes(idx.suggest_n_probes(0.8))
    assert idx.n_probes == 8
    hits = idx.search(x[0], k=10)
    assert len(hits) == 10
    hits = idx.search(x[0], k=40)
    assert len(hits) == 40


# -------------------------------------------------------------------------- 54
def test_b54_cluster_stats():
    untrained = IvfIndex(2, "euclidean", IvfConfig(n_clusters=4, n_probes=2))
    st = untrained.cluster_stats()
    assert isinstance(st, IvfClusterStats)
    assert st == IvfClusterStats(4, [], 0.0, 0.0)
    assert st.n_clusters == 4

    far = [(0, 0), (100, 0), (0, 100), (100, 100)]
    idx = build(blobs(far, [1, 3, 5, 7], 0.1, 54), 4, seed=54)
    st = idx.cluster_stats()
    assert sorted(st.cluster_sizes) == [1, 3, 5, 7]
    assert st.avg_size == 4.0 and isinstance(st.avg_size, float)
    assert st.size_variance == 5.0 and isinstance(st.size_variance, float)
    assert st.n_clusters == 4

    idx2 = build(blobs(far, [3, 3, 4, 2], 0.1, 541), 4, seed=54)
    st2 = idx2.cluster_stats()
    assert sorted(st2.cluster_sizes) == [2, 3, 3, 4]
    assert (st2.avg_size, st2.size_variance) == (3.0, 0.5)

    x = np.random.default_rng(5).normal(size=(300, 3)).astype(np.float32)
    idx3 = build(x, 7, seed=5)
    st3 = idx3.cluster_stats()
    assert len(st3.cluster_sizes) == 7 and sum(st3.cluster_sizes) == 300 == len(idx3)
    for i in range(0, 300, 3):
        idx3.delete(i)
    st3 = idx3.cluster_stats()
    assert len(st3.cluster_sizes) == 7 and sum(st3.cluster_sizes) == 200 == len(idx3)
    assert st3.avg_size == pytest.approx(200 / 7)


# -------------------------------------------------------------------------- 55
def test_b55_stats():
    x = np.random.default_rng(55).normal(size=(600, 4)).astype(np.float32)
    idx = IvfIndex(4, "euclidean", IvfConfig(n_clusters=8, n_probes=2, seed=55))
    s0 = idx.stats()
    assert isinstance(s0, IndexStats)
    assert s0.n_vectors == 0 and s0.index_type == "ivf"
    idx.train(x)
    s1 = idx.stats()
    assert s1.n_vectors == 0 and s1.memory_bytes > 0
    idx.insert_batch(list(range(100)), x[:100], [{"k": "v" * 10}] * 100)
    s2 = idx.stats()
    assert s2.n_vectors == len(idx) == 100
    assert s2.memory_bytes > s1.memory_bytes
    idx.insert_batch(list(range(100, 600)), x[100:])
    s3 = idx.stats()
    assert s3.n_vectors == 600
    assert s3.memory_bytes > s2.memory_bytes
    assert s3.index_type == "ivf"
    assert s3.disk_bytes is None
    extra = s3.extra
    for key in (
        "mode",
        "n_clusters",
        "n_probes",
        "kmeans_iterations",
        "kmeans_inertia",
        "tombstones",
        "capacity",
        "memory",
        "padding_ratio",
    ):
        assert key in extra, key
    assert extra["mode"] == "flat"
    assert extra["n_clusters"] == 8 and extra["n_probes"] == 2
    assert 1 <= extra["kmeans_iterations"] <= 25
    assert extra["capacity"] >= 600
    assert sum(extra["memory"].values()) == s3.memory_bytes
    idx.set_n_probes(5)
    assert idx.stats().extra["n_probes"] == 5
    idx.delete(7)
    assert idx.stats().n_vectors == 599
    assert idx.flush() is None
    assert len(idx) == 599


# -------------------------------------------------------------------------- 28
@pytest.mark.parametrize("metric", ["euclidean", "manhattan", "dot_product", "cosine"])
def test_b28_ties_in_insertion_order_across_lists(metric):
    # Four lists (one per blob); the tie points lie in different lists.
    rng = np.random.default_rng(28)
    centres = np.array([[6, 0], [-6, 0], [0, 6], [0, -6]], np.float32)
    train = np.concatenate([c + rng.normal(0, 0.3, (20, 2)) for c in centres]).astype(np.float32)
    idx = IvfIndex(2, metric, IvfConfig(n_clusters=4, n_probes=4, seed=28))
    idx.train(train)
    if metric == "dot_product":
        # the same dot with q = (1, 1): points on the line x + y = 2
        q = np.array([1.0, 1.0], np.float32)
        ties = np.array([[3, -1], [-1, 3], [1, 1], [2, 0], [0, 2]], np.float32)
    elif metric == "cosine":
        # orthogonal to q = (1, 0): cosine distance exactly 1.0, whatever the norm
        q = np.array([1.0, 0.0], np.float32)
        ties = np.array([[0, 1], [0, -1], [0, 2], [0, -4], [0, 0.5]], np.float32)
    else:
        q = np.array([0.0, 0.0], np.float32)
        ties = np.array([[1, 0], [0, -1], [-1, 0], [0, 1], [0, 1]], np.float32)
    order = [30, 10, 40, 20, 50]
    filler = np.array([[-6, -6], [-6, 0.5], [-6, -0.5]], np.float32)  # far for every metric
    idx.insert_batch([100, 101, 102], filler)
    for i, v in zip(order, ties):
        idx.insert(i, v)
    hits = idx.search(q, k=5)
    dist = {h.distance for h in hits}
    assert len(dist) == 1, "setup: all five must tie exactly"
    assert [h.id for h in hits] == order
    # setup: the tie points are not all in one list
    idx.set_n_probes(1)
    lists = {frozenset(h.id for h in idx.search(v, k=len(idx))) for v in ties}
    idx.set_n_probes(4)
    assert len(lists) >= 2
    # delete and re-insert: goes last
    idx.delete(10)
    idx.insert(10, ties[1])
    assert [h.id for h in idx.search(q, k=5)] == [30, 40, 20, 50, 10]
    # deleting others does not reorder
    idx.delete(40)
    assert [h.id for h in idx.search(q, k=5)][:4] == [30, 20, 50, 10]
    # retrain keeps seqs
    idx.retrain()
    assert [h.id for h in idx.search(q, k=5)][:4] == [30, 20, 50, 10]


def test_b28_hamming_ties():
    idx = IvfIndex(4, "hamming", IvfConfig(n_clusters=2, n_probes=2, seed=28))
    base = np.array([[0, 0, 0, 0], [1, 1, 1, 1], [0, 1, 0, 1], [1, 0, 1, 0]], np.float32)
    idx.train(base)
    # all at Hamming distance 1 from 0000, in varying lists
    ties = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], np.float32)
    ids = ["d", "b", "a", "c"]
    idx.insert_batch(ids, ties)
    hits = idx.search(np.zeros(4, np.float32), k=4)
    assert [h.id for h in hits] == ids
    assert all(h.distance == 1.0 for h in hits)
