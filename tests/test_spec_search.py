"""Spec behaviours 22-30 (docs/semantics.md §5, "Search"): black-box tests. The 2000 x 16-D
case of 24 is in test_spec_recall.py; the property test 26 (random insert/delete
histories) is in test_spec_insert_delete.py, and 28 (tie order across lists,
deletes and retrain) in test_spec_retrain_stats.py.

Oracle: brute force over the library's exact float32 kernel
(``iqdb_ivf_jax._metrics.pairwise``), ranked by ``(distance, seq)`` with NaN
last, must give exactly the library's ids and distance bits at full probe; it
is cross-checked against float64 NumPy with tolerances (§3.1).
"""

import math

import numpy as np
import pytest
from _oracle import METRICS, Model, assert_full_probe_matches, bits, build, oracle
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iqdb_ivf_jax import (
    DimensionMismatchError,
    Filter,
    Hit,
    InvalidConfigError,
    InvalidMetricError,
    InvalidVectorError,
    IvfConfig,
    IvfIndex,
    Metric,
    SearchParams,
)


def blob_data(n_per=50, centres=((0, 0), (8, 1), (-3, 7), (5, -6)), jitter=1.5, seed=0, d=2):
    rng = np.random.default_rng(seed)
    c = np.asarray(centres, np.float32)
    x = np.concatenate([ci + rng.normal(0, jitter, (n_per, d)) for ci in c]).astype(np.float32)
    return x[rng.permutation(len(x))]


def for_metric(x: np.ndarray, metric: str) -> np.ndarray:
    """Hamming needs repeated values to be interesting: snap to a half grid."""
    return (np.round(x * 2) / 2).astype(np.float32) if metric == "hamming" else x


# -------------------------------------------------------------------------- 22
@pytest.fixture(scope="module")
def small():
    x = blob_data(10, seed=22)
    m = Model()
    idx = build("euclidean", x, 4, model=m)
    return idx, x, m


def test_b22_search_before_train():
    idx = IvfIndex(2, "euclidean", IvfConfig(n_clusters=2, n_probes=1))
    with pytest.raises(InvalidConfigError, match="trained"):
        idx.search([0.0, 0.0])
    with pytest.raises(InvalidConfigError, match="trained"):
        idx.search_batch([[0.0, 0.0]])
    with pytest.raises(InvalidConfigError, match="trained"):
        idx.search_arrays([[0.0, 0.0]])
    with pytest.raises(InvalidConfigError, match="trained"):
        idx.search([0.0, 0.0], k=0)
    # call-shape errors come first
    with pytest.raises(TypeError):
        idx.search([0.0, 0.0], k=True)
    with pytest.raises(InvalidConfigError, match="k"):
        idx.search([0.0, 0.0], k=-1)
    with pytest.raises(TypeError):
        idx.search([0.0, 0.0], k=SearchParams(3, "euclidean"), filter={"a": 1})


def test_b22_empty_index_and_k0(small):
    idx, x, _ = small
    empty = IvfIndex(2, "euclidean", IvfConfig(n_clusters=4, n_probes=4, seed=7))
    empty.train(x)
    assert empty.search(x[0]) == []
    assert empty.search(x[0], k=5) == []
    assert empty.search_batch(x[:3], k=5) == [[], [], []]
    D, I = empty.search_arrays(x[:3], k=5)
    assert D.shape == I.shape == (3, 5) and np.isinf(D).all() and (I == -1).all()
    assert idx.search(x[0], k=0) == []
    assert idx.search_batch(x[:2], k=0) == [[], []]
    D, I = idx.search_arrays(x[:2], k=0)
    assert D.shape == (2, 0) and I.shape == (2, 0)
    assert D.dtype == np.float32


@pytest.mark.parametrize("k", [True, False, 1.0, "3", None, [3], np.float32(2)])
def test_b22_k_type_errors(small, k):
    idx, x, _ = small
    with pytest.raises(TypeError):
        idx.search(x[0], k=k)
    with pytest.raises(TypeError):
        idx.search_batch(x[:2], k=k)
    with pytest.raises(TypeError):
        idx.search_arrays(x[:2], k=k)


def test_b22_k_negative(small):
    idx, x, _ = small
    for call, arg in ((idx.search, x[0]), (idx.search_batch, x[:2]), (idx.search_arrays, x[:2])):
        with pytest.raises(InvalidConfigError):
            call(arg, k=-1)
        with pytest.raises(InvalidConfigError):
            call(arg, k=SearchParams(-1, "euclidean"))
    # numpy ints are ints
    assert len(idx.search(x[0], k=np.int64(3))) == 3


def test_b22_search_params(small):
    idx, x, _ = small
    plain = idx.search(x[0], k=4)
    assert idx.search(x[0], SearchParams(4, "euclidean")) == plain
    assert idx.search(x[0], k=SearchParams(4, Metric.EUCLIDEAN)) == plain
    assert idx.search_batch(x[:1], SearchParams(4, "euclidean")) == [plain]
    for bad in ("cosine", Metric.DOT_PRODUCT, "hamming"):
        with pytest.raises(InvalidMetricError):
            idx.search(x[0], SearchParams(4, bad))
        with pytest.raises(InvalidMetricError):
            idx.search_arrays(x[:2], SearchParams(4, bad))
    with pytest.raises(TypeError):
        idx.search(x[0], SearchParams(4, "euclidean"), filter={"a": 1})
    with pytest.raises(TypeError):
        idx.search_batch(x[:2], SearchParams(4, "euclidean"), filter=Filter.eq("a", 1))
    # the metric check comes after the vector checks
    with pytest.raises(DimensionMismatchError):
        idx.search([0.0, 0.0, 0.0], SearchParams(4, "cosine"))
    with pytest.raises(InvalidVectorError):
        idx.search([np.nan, 0.0], SearchParams(4, "cosine"))
    # SearchParams may carry a filter
    m = IvfIndex(2, "euclidean", IvfConfig(n_clusters=4, n_probes=4, seed=7))
    m.train(x)
    m.insert_batch([0, 1, 2], x[:3], [{"c": "a"}, {"c": "b"}, {"c": "a"}])
    got = m.search(x[1], SearchParams(3, "euclidean", Filter.eq("c", "a")))
    assert sorted(h.id for h in got) == [0, 2]
    got = m.search(x[1], SearchParams(3, "euclidean", {"c": "b"}))
    assert [h.id for h in got] == [1]


def test_b22_query_shape_errors(small):
    idx, x, _ = small
    with pytest.raises(DimensionMismatchError):
        idx.search([1.0, 2.0, 3.0])
    with pytest.raises(InvalidVectorError):
        idx.search(x[:2])  # a batch passed to search
    with pytest.raises(InvalidVectorError):
        idx.search_batch(x[0])  # a vector passed to search_batch
    with pytest.raises(InvalidVectorError):
        idx.search(np.array(["a", "b"]))
    with pytest.raises(DimensionMismatchError):
        idx.search_arrays(np.zeros((2, 3), np.float32))


# -------------------------------------------------------------------------- 23
def test_b23_quick_start():
    idx = IvfIndex(2, "euclidean", IvfConfig(n_clusters=2, n_probes=2, seed=7))
    idx.train(np.array([[0.0, 0.0], [10.0, 10.0], [0.5, 0.2], [9.5, 10.1]], np.float32))
    idx.insert(1, [0.0, 0.0])
    idx.insert(2, [10.0, 10.0])
    hits = idx.search([0.0, 0.0], k=1)
    assert [h.id for h in hits] == [1]
    assert hits[0] == Hit(1, 0.0, None)
    idx.insert(3, [0.1, 0.1])
    hits = idx.search([0.0, 0.0], k=2)
    assert [h.id for h in hits] == [1, 3]
    assert hits[1].distance == pytest.approx(math.sqrt(0.02), rel=1e-6)
    assert isinstance(hits[1].distance, float)


# -------------------------------------------------------------------------- 24
@pytest.fixture(scope="module")
def small_by_metric():
    """One 4x50-point 2-D index per metric (4 clusters, full probe), built on demand."""
    cache = {}

    def get(metric):
        if metric not in cache:
            x = for_metric(blob_data(50, seed=24), metric)
            m = Model()
            idx = build(metric, x, 4, model=m)
            rng = np.random.default_rng(124)
            q = for_metric(rng.normal(2, 5, (8, 2)).astype(np.float32), metric)
            cache[metric] = (idx, m, np.concatenate([x[:4], q]))
        return cache[metric]

    return get


@pytest.mark.parametrize("metric", METRICS)
def test_b24_full_probe_equals_brute_force_small(metric, small_by_metric):
    idx, m, queries = small_by_metric(metric)
    for q, hits in zip(queries, idx.search_batch(queries, k=10)):
        assert_full_probe_matches(hits, m, q, metric, 10)
    assert_full_probe_matches(idx.search(queries[0], k=10), m, queries[0], metric, 10)


@pytest.mark.parametrize("metric", METRICS)
def test_b24_distance_bits_equal_exact_kernel(metric, small_by_metric):
    """§5 oracle: "ids, order and distance bits" of brute force over the exact kernel."""
    idx, m, queries = small_by_metric(metric)
    D, I = idx.search_arrays(queries, k=10)
    for q, drow, irow in zip(queries, D, I):
        want_ids, want_d32, _ = oracle(m, q, metric, 10)
        assert irow.tolist() == want_ids
        np.testing.assert_array_equal(bits(drow), bits(want_d32))


# ------------------------------------------------------------- 25/26 (hypothesis)
# Shapes come from a few fixed buckets so that the kernels compile a few times only.
BUCKET_SHAPES = ((16, 2, 1), (32, 5, 3), (48, 8, 7))  # (n, dim, n_clusters)
BUCKET_K = (0, 1, 29)  # k = 10 is b24's


def _grid_or_normal(rng, shape, grid: bool):
    if grid:
        return rng.choice(np.array([-1.0, -0.5, 0.0, 0.5, 1.0], np.float32), shape).astype(
            np.float32
        )
    return rng.normal(0, 1, shape).astype(np.float32)


def _random_history(metric, n, dim, nc, seed, n_probes=None):
    """Train, insert n, then random deletes / re-inserts (some tie vectors)."""
    rng = np.random.default_rng(seed)
    grid = bool(rng.integers(2)) or metric == "hamming"
    x = _grid_or_normal(rng, (n, dim), grid)
    m = Model()
    idx = build(metric, x, nc, n_probes=n_probes, seed=int(rng.integers(2**63)), model=m)
    ops = int(rng.integers(0, n // 2))
    next_id = n
    for _ in range(ops):
        live = list(m.entries)
        if live and rng.random() < 0.5:
            victim = live[int(rng.integers(len(live)))]
            idx.delete(victim)
            m.delete(victim)
        else:
            if rng.random() < 0.5 and live:
                v = m.entries[live[int(rng.integers(len(live)))]][0].copy()  # exact tie
            else:
                v = _grid_or_normal(rng, (dim,), grid)
            # re-use a deleted id sometimes
            new_id = next_id if rng.random() < 0.5 else int(rng.integers(0, next_id))
            if new_id in m.entries:
                new_id = next_id
            if new_id == next_id:
                next_id += 1
            idx.insert(new_id, v)
            m.insert(new_id, v)
    queries = np.concatenate([x[:2], _grid_or_normal(rng, (2, dim), grid)])
    return idx, m, queries


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shape=st.sampled_from(BUCKET_SHAPES),
    k=st.sampled_from(BUCKET_K),
    seed=st.integers(0, 2**32 - 1),
)
def test_b25_property_full_probe_equals_oracle(shape, k, seed):
    # §5.25 ranges over shapes (Euclidean); b24 and b26 cover the other metrics.
    n, dim, nc = shape
    metric = "euclidean"
    idx, m, queries = _random_history(metric, n, dim, nc, seed)
    assert len(idx) == len(m.entries)
    # single-query searches only: the batch paths compile other kernels (b30 checks they agree)
    for q in queries:
        assert_full_probe_matches(idx.search(q, k=k), m, q, metric, k)


# -------------------------------------------------------------------------- 27
def test_b27_dot_product():
    pts = np.array(
        [[0.5, 0.5], [1, 0], [0, 1], [2, 2], [-1, -1], [-2, -2], [-1, 0], [0, -1]], np.float32
    )
    idx = IvfIndex(2, "dot_product", IvfConfig(n_clusters=2, n_probes=2, seed=27))
    idx.train(pts)
    idx.insert_batch(list(range(8)), pts)
    hits = idx.search([1.0, 1.0], k=8)
    assert hits[0].id == 3
    np.testing.assert_array_equal(idx.get(hits[0].id)[0], [2.0, 2.0])
    assert hits[0].distance == pytest.approx(-4.0, abs=1e-6)
    d = [h.distance for h in hits]
    assert d == sorted(d)  # ascending, even for dot product
    assert d[-1] == pytest.approx(4.0)
    D, _ = idx.search_arrays([[1.0, 1.0]], k=8)
    assert (D[0, 1:] >= D[0, :-1]).all()


# -------------------------------------------------------------------------- 29
def test_b29_special_distances():
    cos = IvfIndex(2, "cosine", IvfConfig(n_clusters=1, n_probes=1))
    cos.train(np.array([[1.0, 0.0], [0.0, 1.0]], np.float32))
    cos.insert("zero", [0.0, 0.0])
    cos.insert("x", [1.0, 0.0])
    cos.insert("tiny", [1e-20, 0.0])
    got = {h.id: h.distance for h in cos.search([3.0, 4.0], k=3)}
    assert got["zero"] == 1.0
    assert got["x"] == pytest.approx(0.4, abs=1e-6)
    got0 = {h.id: h.distance for h in cos.search([0.0, 0.0], k=3)}
    assert got0 == {"zero": 1.0, "x": 1.0, "tiny": 1.0}
    got_tiny = {h.id: h.distance for h in cos.search([1e-20, 0.0], k=3)}
    assert got_tiny["tiny"] == 1.0  # norm product <= 1.1754944e-38
    assert got_tiny["zero"] == 1.0
    for d in got.values():
        assert 0.0 <= d <= 2.0
    opp = {h.id: h.distance for h in cos.search([-1.0, 0.0], k=3)}
    assert opp["x"] == 2.0

    ham = IvfIndex(2, "hamming", IvfConfig(n_clusters=1, n_probes=1))
    ham.train(np.array([[0.0, 1.0], [1.0, 2.0]], np.float32))
    ham.insert("pz", [0.0, 1.0])
    ham.insert("one", [1.0, 2.0])
    ham.insert("two", [5.0, 7.0])
    d = {h.id: h.distance for h in ham.search([-0.0, 1.0], k=3)}
    assert d["pz"] == 1.0  # +0.0 vs -0.0 differ in one position
    nxt = np.nextafter(np.float32(1.0), np.float32(2.0))
    d = {h.id: h.distance for h in ham.search(np.array([nxt, 2.0], np.float32), k=3)}
    assert d["one"] == 1.0  # positions, not bits
    assert d["two"] == 2.0
    d = {h.id: h.distance for h in ham.search([1.0, 2.0], k=3)}
    assert d["one"] == 0.0

    for metric in ("euclidean", "manhattan"):
        e = IvfIndex(2, metric, IvfConfig(n_clusters=1, n_probes=1))
        v = np.array([0.1, -7.3], np.float32)
        e.train(v[None])
        e.insert(1, v)
        e.insert(2, v + np.array([3.0, 4.0], np.float32))
        e.insert(3, v + np.array([30.0, 40.0], np.float32))
        hits = e.search(v, k=3)
        assert hits[0].id == 1 and hits[0].distance == 0.0
        if metric == "euclidean":
            assert hits[1].distance == pytest.approx(5.0, rel=1e-4)  # true L2, not squared
        else:
            assert hits[1].distance == pytest.approx(7.0, rel=1e-4)


# -------------------------------------------------------------------------- 30
def test_b30_three_search_forms_agree(small):
    idx, x, m = small
    q = np.concatenate([x[:5], np.array([[100.0, -100.0]], np.float32)])
    for k in (7, 55):
        D, I = idx.search_arrays(q, k=k)
        assert D.dtype == np.float32 and I.dtype == np.int64
        assert D.shape == I.shape == (len(q), k)
        batch = idx.search_batch(q, k=k)
        singles = [idx.search(qi, k=k) for qi in q]
        assert batch == singles
        for row in range(len(q)):
            hits = batch[row]
            assert len(hits) == min(k, len(m.entries))
            assert I[row, : len(hits)].tolist() == [h.id for h in hits]
            assert D[row, : len(hits)].tolist() == [h.distance for h in hits]
            assert (I[row, len(hits) :] == -1).all()
            assert np.isposinf(D[row, len(hits) :]).all()
            assert (D[row, 1:] >= D[row, :-1]).all()


def test_b30_object_ids_padding():
    x = blob_data(3, seed=30)
    for ids in (
        ["a", "b", "c"] + list(range(9)),
        [2**63] + list(range(11)),
        [b"z"] + list(range(11)),
    ):
        idx = build("euclidean", x, 2, ids=ids)
        D, I = idx.search_arrays(x[:2], k=15)
        assert I.dtype == object
        assert I.shape == (2, 15)
        assert all(v is None for v in I[:, 12:].ravel())
        assert np.isposinf(D[:, 12:]).all()
        batch = idx.search_batch(x[:2], k=15)
        for row, hits in enumerate(batch):
            assert list(I[row, :12]) == [h.id for h in hits]
            assert [type(v) for v in I[row, :12]] == [type(h.id) for h in hits]
    # back to int64 once the wide ids are gone
    idx = build("euclidean", x, 2, ids=[2**63] + list(range(11)))
    idx.delete(2**63)
    _, I = idx.search_arrays(x[:2], k=15)
    assert I.dtype == np.int64
    assert (I[:, 11:] == -1).all()
