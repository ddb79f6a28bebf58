"""Spilled (SOAR) assignment: IvfConfig.spill_lambda, _spill.spill_assign, and
every index operation on an index whose vectors live in two lists."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from iqdb_ivf_jax import IvfConfig, IvfIndex, functional
from iqdb_ivf_jax._assign import assign, probe
from iqdb_ivf_jax._errors import InvalidConfigError
from iqdb_ivf_jax._spill import spill_assign

D = 16


def _clustered(n: int, seed: int, n_centres: int = 10) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (n_centres, D))
    x = centres[rng.integers(0, n_centres, n)] + rng.normal(0, 1.5, (n, D))
    return x.astype(np.float32)


def _index(metric="euclidean", lam=1.0, *, pq=False, refine=4, n_probes=2, n=600, seed=0):
    cfg = IvfConfig(n_clusters=8, n_probes=n_probes, seed=seed, spill_lambda=lam)
    if pq:
        cfg = cfg.with_use_pq(True).with_pq_subvectors(4).with_pq_refine_factor(refine)
    x = _clustered(n, seed)
    idx = IvfIndex(D, metric, cfg)
    idx.train(x)
    idx.insert_batch(list(range(n)), x, [{"g": i % 3} for i in range(n)])
    return idx, x


def _lists_of(idx: IvfIndex, ids) -> tuple[np.ndarray, np.ndarray]:
    """(own list, spilled list) of each id, from the index's bookkeeping."""
    own = np.array([idx._entries.slot_of(i) for i in ids])
    spilled = idx._entries.slot_twin[own]
    assert (spilled >= 0).all()
    return idx._layout.list_of(own), idx._layout.list_of(spilled)


def _oracle(idx: IvfIndex, x: np.ndarray, live: list, q: np.ndarray, k: int, keep=None):
    """Exact (float64) top-k ids over the live vectors stored in a probed list."""
    own, spilled = _lists_of(idx, live)
    st = idx.state
    all_probes = np.asarray(probe(jnp.asarray(q), st.centroids, "l2", idx.n_probes, st.centroid_sq))
    out = []
    for qi, probes in zip(q, all_probes):
        seen = np.isin(own, probes) | np.isin(spilled, probes)
        if keep is not None:
            seen &= keep
        cand = np.asarray(live)[seen]
        d = np.sqrt(((x[cand].astype(np.float64) - qi) ** 2).sum(1))
        out.append(cand[np.argsort(d, kind="stable")[:k]].tolist())
    return out


# ----------------------------------------------------------------------- config
@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "1", True])
def test_spill_lambda_validation(bad):
    with pytest.raises(InvalidConfigError, match="spill_lambda"):
        IvfConfig(spill_lambda=bad).validate()


def test_spill_lambda_builder_and_default():
    assert IvfConfig().spill_lambda is None
    cfg = IvfConfig().with_spill_lambda(0)
    cfg.validate()
    assert cfg.spill_lambda == 0
    IvfConfig(spill_lambda=np.float64(2.5)).validate()


def test_spill_needs_two_lists():
    with pytest.raises(InvalidConfigError, match="spill_lambda"):
        IvfConfig(n_clusters=1, n_probes=1, spill_lambda=1.0).validate()


# ---------------------------------------------------------------------- kernel
@pytest.mark.parametrize("lam", [0.0, 1.0, 4.0])
def test_spill_assign_matches_float64_oracle(lam):
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, (300, D)).astype(np.float32)
    c = rng.normal(0, 1, (12, D)).astype(np.float32)
    own = assign(jnp.asarray(x), jnp.asarray(c), "l2")
    got = np.asarray(spill_assign(jnp.asarray(x), own, jnp.asarray(c), lam, kind="l2"))
    o = np.asarray(own)
    X, C = x.astype(np.float64), c.astype(np.float64)
    diff = X[:, None, :] - C[None, :, :]
    r = X - C[o]
    score = (diff**2).sum(-1) + lam * (diff * r[:, None, :]).sum(-1) ** 2 / (r * r).sum(1)[:, None]
    score[np.arange(len(x)), o] = np.inf
    assert (got != o).all()
    srt = np.sort(score, axis=1)
    clear = (srt[:, 1] - srt[:, 0]) > 1e-3 * srt[:, 0]  # not a float32 near-tie
    assert clear.mean() > 0.95
    np.testing.assert_array_equal(got[clear], score.argmin(1)[clear])


def test_spill_assign_does_not_depend_on_the_batch():
    rng = np.random.default_rng(4)
    x = rng.normal(0, 1, (200, D)).astype(np.float32)
    c = jnp.asarray(rng.normal(0, 1, (9, D)).astype(np.float32))
    own = assign(jnp.asarray(x), c, "l2")
    whole = np.asarray(spill_assign(jnp.asarray(x), own, c, 1.0, kind="l2"))
    perm = rng.permutation(200)[:77]
    part = spill_assign(jnp.asarray(x[perm]), own[perm], c, 1.0, kind="l2")
    np.testing.assert_array_equal(np.asarray(part), whole[perm])


# ----------------------------------------------------------------------- index
def test_every_vector_is_stored_twice_and_counted_once():
    idx, x = _index()
    n = len(x)
    assert len(idx) == n
    extra = idx.stats().extra
    assert extra["spilled_rows"] == n and extra["spill_lambda"] == 1.0
    assert extra["padding_ratio"] >= 1.0
    assert sum(idx.cluster_stats().cluster_sizes) == 2 * n
    own, spilled = _lists_of(idx, range(n))
    assert (own != spilled).all()
    vec, meta = idx.get(5)
    np.testing.assert_array_equal(vec, x[5])
    assert meta == {"g": 2}


@pytest.mark.parametrize("path", ["list", "query"])
@pytest.mark.parametrize("n_probes", [1, 3])
def test_results_are_the_exact_top_k_over_both_copies(path, n_probes):
    idx, x = _index(n_probes=n_probes)
    q = _clustered(40, 9)
    _, ids = idx.search_arrays(q, 10, path=path)
    assert ids.tolist() == _oracle(idx, x, list(range(len(x))), q, 10)


@pytest.mark.parametrize(
    "metric,pq,refine",
    [
        ("euclidean", False, 0),
        ("cosine", False, 0),
        ("dot_product", False, 0),
        ("euclidean", True, 4),
        ("euclidean", True, 0),
        ("dot_product", True, 2),
    ],
)
def test_no_id_repeats_and_both_paths_agree(metric, pq, refine):
    idx, _ = _index(metric, pq=pq, refine=refine, n_probes=3)
    q = _clustered(64, 11)
    d_list, i_list = idx.search_arrays(q, 12, path="list")
    d_query, i_query = idx.search_arrays(q, 12, path="query")
    np.testing.assert_array_equal(i_list, i_query)
    np.testing.assert_array_equal(d_list, d_query)
    for row in i_list:
        real = row[row >= 0]
        assert len(set(real.tolist())) == len(real)
    # one query alone (the single-query kernel) agrees too
    d1, i1 = idx.search_arrays(q[:1], 12)
    np.testing.assert_array_equal(i1[0], i_query[0])
    np.testing.assert_array_equal(d1[0], d_query[0])


def test_spilling_raises_recall_at_equal_probes():
    x = _clustered(3000, 5, n_centres=40)
    q = _clustered(200, 6, n_centres=40)
    truth = np.argsort(((q[:, None, :] - x[None]) ** 2).sum(-1), axis=1)[:, :10]
    recall = {}
    for lam in (None, 1.0):
        cfg = IvfConfig(n_clusters=32, n_probes=2, seed=1, spill_lambda=lam)
        idx = IvfIndex(D, "euclidean", cfg)
        idx.train(x)
        idx.insert_batch(list(range(len(x))), x)
        _, ids = idx.search_arrays(q, 10)
        recall[lam] = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids.tolist(), truth)])
    assert recall[1.0] > recall[None] + 0.05, recall


def test_delete_removes_both_copies():
    idx, x = _index()
    gone = list(range(0, 600, 7))
    for i in gone:
        idx.delete(i)
    live = [i for i in range(600) if i not in set(gone)]
    assert len(idx) == len(live)
    assert idx.stats().extra["tombstones"] == 2 * len(gone)
    for n_probes in (1, 4, 8):
        idx.set_n_probes(n_probes)
        _, ids = idx.search_arrays(x[gone], 10)
        assert not set(ids.reshape(-1).tolist()) & set(gone)
    idx.set_n_probes(3)
    q = _clustered(30, 12)
    _, ids = idx.search_arrays(q, 10)
    assert ids.tolist() == _oracle(idx, x, live, q, 10)


def test_a_filter_applies_to_the_spilled_copy():
    idx, x = _index(n_probes=3)
    q = _clustered(30, 13)
    flt = {"g": {"$eq": 1}}
    for path in ("list", "query"):
        _, ids = idx.search_arrays(q, 10, filter=flt, path=path)
        assert all(i % 3 == 1 for i in ids.reshape(-1).tolist() if i >= 0)
        keep = np.arange(600) % 3 == 1
        assert ids.tolist() == _oracle(idx, x, list(range(600)), q, 10, keep=keep)


def test_compaction_and_retrain_keep_both_copies():
    idx, x = _index(n=1200)
    for i in range(0, 1200, 2):  # 1,200 holes > max(1024, 600 live): compacts
        idx.delete(i)
    live = list(range(1, 1200, 2))
    assert idx.stats().extra["tombstones"] < 1200  # compacted on the way
    assert idx.stats().extra["spilled_rows"] == len(live)
    q = _clustered(30, 14)
    _, ids = idx.search_arrays(q, 10)
    assert ids.tolist() == _oracle(idx, x, live, q, 10)
    idx.retrain()
    assert idx.stats().extra["spilled_rows"] == len(live)
    _, ids = idx.search_arrays(q, 10)
    assert ids.tolist() == _oracle(idx, x, live, q, 10)


def test_inserting_one_by_one_equals_one_batch():
    n = 120
    x = _clustered(n, 15)
    cfg = IvfConfig(n_clusters=8, n_probes=2, seed=2, spill_lambda=1.0)
    a, b = IvfIndex(D, "euclidean", cfg), IvfIndex(D, "euclidean", cfg)
    a.train(x)
    b.train(x)
    a.insert_batch(list(range(n)), x)
    for i in range(n):
        b.insert(i, x[i])
    np.testing.assert_array_equal(_lists_of(a, range(n))[1], _lists_of(b, range(n))[1])
    q = _clustered(20, 16)
    for path in ("list", "query"):
        np.testing.assert_array_equal(
            a.search_arrays(q, 10, path=path)[1], b.search_arrays(q, 10, path=path)[1]
        )


def test_functional_search_on_a_spilled_state_matches_the_index():
    idx, _ = _index(n_probes=3)
    q = _clustered(10, 17)
    d_idx, i_idx = idx.search_arrays(q, 10)
    search = jax.jit(functional.search, static_argnames=("k", "n_probes"))
    for j in range(len(q)):
        d, slots = search(idx.state, jnp.asarray(q[j]), k=10, n_probes=3)
        assert idx.ids_for_slots(slots) == i_idx[j].tolist()
        np.testing.assert_array_equal(np.asarray(d), d_idx[j])
