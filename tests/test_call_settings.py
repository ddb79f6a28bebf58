"""Per-call search settings (``n_probes=``, ``refine=``): they equal the index
setting for that call and change nothing."""

import pytest
from _helpers import assert_same_results, gaussian

from iqdb_ivf_jax import InvalidConfigError, IvfConfig, IvfIndex


def _index(cfg=None, n=600):
    x = gaussian(n)
    idx = IvfIndex(8, "euclidean", cfg or IvfConfig(n_clusters=8, n_probes=2))
    idx.train(x)
    idx.insert_batch(list(range(n)), x, [{"g": i % 3} for i in range(n)])
    return idx, x


@pytest.mark.parametrize("path", ["query", "list"])
def test_per_call_n_probes_equals_the_setting_and_changes_nothing(path):
    idx, x = _index()
    q = x[:64] + 0.01
    got = idx.search_arrays(q, k=5, n_probes=6, path=path)
    assert idx.n_probes == 2 and idx.config.n_probes == 2
    idx.set_n_probes(6)
    assert_same_results(got, idx.search_arrays(q, k=5, path=path))
    idx.set_n_probes(2)
    one = idx.search(q[0], k=5, n_probes=6)
    assert [h.id for h in one] == got[1][0].tolist()
    hits = idx.search_batch(q[:3], k=5, n_probes=6, filter={"g": 1})
    idx.set_n_probes(6)
    assert hits == idx.search_batch(q[:3], k=5, filter={"g": 1})


def test_per_call_refine_equals_the_setting():
    cfg = IvfConfig(n_clusters=4, n_probes=4, use_pq=True, pq_subvectors=4, pq_refine_factor=0)
    idx, x = _index(cfg)
    q = x[:40] + 0.01
    got = idx.search_arrays(q, k=5, refine=3)
    assert idx.pq_refine_factor == 0
    idx.set_pq_refine_factor(3)
    assert_same_results(got, idx.search_arrays(q, k=5))
    assert got[0][:, 0].max() < idx.search_arrays(q, k=5, refine=0)[0][:, 0].max() + 1.0


@pytest.mark.parametrize(
    ("kw", "err"),
    [
        ({"n_probes": 0}, InvalidConfigError),
        ({"n_probes": 9}, InvalidConfigError),
        ({"n_probes": 2.0}, TypeError),
        ({"n_probes": True}, TypeError),
        ({"refine": -1}, InvalidConfigError),
        ({"refine": "2"}, TypeError),
    ],
)
def test_bad_per_call_settings_raise(kw, err):
    idx, x = _index()
    with pytest.raises(err):
        idx.search(x[0], k=3, **kw)
    with pytest.raises(err):
        idx.search_arrays(x[:2], k=3, **kw)
    assert idx.n_probes == 2
