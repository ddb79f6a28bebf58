"""Batch updates: ``delete`` of a sequence and ``upsert``, each all-or-nothing and
equal to the one-by-one operations."""

import numpy as np
import pytest
from _helpers import assert_same_results, gaussian

from iqdb_ivf_jax import DuplicateIdError, IvfConfig, IvfIndex, NotFoundError


def _index(cfg=None, n=600):
    x = gaussian(n)
    idx = IvfIndex(8, "euclidean", cfg or IvfConfig(n_clusters=8, n_probes=3))
    idx.train(x)
    idx.insert_batch(list(range(n)), x, [{"g": i % 3} for i in range(n)])
    return idx, x


@pytest.mark.parametrize("spill", [None, 1.0])
def test_batch_delete_equals_one_by_one(spill):
    cfg = IvfConfig(n_clusters=8, n_probes=3, spill_lambda=spill)
    a, x = _index(cfg)
    b, _ = _index(cfg)
    gone = list(range(0, 600, 7))
    a.delete(gone)
    for i in gone:
        b.delete(i)
    assert len(a) == len(b) == 600 - len(gone)
    assert all(i not in a for i in gone)
    assert_same_results(a.search_arrays(x[:50], k=10), b.search_arrays(x[:50], k=10))
    assert a.stats().extra["spilled_rows"] == b.stats().extra["spilled_rows"]
    a.delete(np.array([1, 2]))
    a.delete(())
    assert 1 not in a and 2 not in a


@pytest.mark.parametrize("bad", [[3, 4, 10_000], [3, 4, 3]])
def test_batch_delete_is_all_or_nothing(bad):
    idx, x = _index()
    before = idx.search_arrays(x[:20], k=10)
    with pytest.raises(NotFoundError):
        idx.delete(bad)
    assert len(idx) == 600 and all(i in idx for i in (3, 4))
    assert_same_results(before, idx.search_arrays(x[:20], k=10))


CONFIGS = [
    IvfConfig(n_clusters=8, n_probes=3),
    IvfConfig(n_clusters=8, n_probes=3, spill_lambda=1.0),
    IvfConfig(n_clusters=4, n_probes=2, use_pq=True, pq_subvectors=4, pq_refine_factor=2),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=["flat", "spill", "pq"])
def test_upsert_equals_delete_then_insert(cfg):
    a, x = _index(cfg)
    b, _ = _index(cfg)
    y = gaussian(40, seed=1)
    ids = list(range(0, 600, 30)) + list(range(1000, 1020))  # 20 live, 20 new
    metas = [{"g": 9, "i": i} for i in ids]
    a.upsert(ids, y, metas)
    b.delete(ids[:20])
    b.insert_batch(ids, y, metas)
    assert len(a) == len(b) == 620
    q = np.concatenate([x[:30], y[:10]]) + 0.01
    assert_same_results(a.search_arrays(q, k=10), b.search_arrays(q, k=10))
    assert a.search_batch(q[:5], k=5, filter={"g": 9}) == b.search_batch(
        q[:5], k=5, filter={"g": 9}
    )
    vec, meta = a.get(30)
    np.testing.assert_array_equal(vec, y[1])
    assert meta == {"g": 9, "i": 30}
    assert a.stats().extra["spilled_rows"] == b.stats().extra["spilled_rows"]


def test_upsert_of_new_ids_equals_insert_batch():
    a, _x = _index()
    b, _ = _index()
    y = gaussian(10, seed=2)
    a.upsert(range(2000, 2010), y)
    b.insert_batch(list(range(2000, 2010)), y)
    assert_same_results(a.search_arrays(y, k=5), b.search_arrays(y, k=5))


def test_upsert_is_all_or_nothing():
    idx, x = _index()
    before = idx.search_arrays(x[:20], k=10)
    y = gaussian(3, seed=3)
    with pytest.raises(DuplicateIdError):
        idx.upsert([1, 2, 1], y)
    bad = y.copy()
    bad[2, 0] = np.nan
    with pytest.raises(ValueError):
        idx.upsert([1, 2, 3], bad)
    assert len(idx) == 600
    assert_same_results(before, idx.search_arrays(x[:20], k=10))
    assert idx.get(1)[1] == {"g": 1}


def test_many_upserts_compact_and_stay_equal():
    a, x = _index(n=300)
    rng = np.random.default_rng(5)
    for r in range(6):  # every round rewrites 250 of 300 rows: holes pile up, then compact
        ids = rng.choice(300, 250, replace=False).tolist()
        a.upsert(ids, x[ids] + r)
    assert len(a) == 300
    assert a.stats().extra["tombstones"] <= max(1024, len(a))
    for i in (0, 150, 299):
        vec, _ = a.get(i)
        hits = a.search(vec, k=1)
        assert hits[0].id == i and hits[0].distance == 0.0
