"""List-major batch search (``_batch.py``): equal to the query-major path (IVF-Flat
and IVF-PQ), chunked under the memory budget, ties across the shortlist boundary
re-run exactly."""

import jax.numpy as jnp
import numpy as np
import pytest

import iqdb_ivf_jax._search.runner as search_module
from iqdb_ivf_jax import Filter, InvalidConfigError, IvfConfig, IvfIndex
from iqdb_ivf_jax._search.list_major import score_buffer
from iqdb_ivf_jax._search.plan import MAX_TILE, MIN_TILE, pair_columns, plan_units


@pytest.fixture(autouse=True)
def _one_query_major_group(monkeypatch):
    """The query-major path is the oracle here: run each of its batches as one
    kernel call (one compilation per ``k``) instead of groups of 32 queries
    bucketed by scan need (one compilation per bucket). Each query's result
    does not depend on its group (``search_probed`` maps over the queries);
    grouped batches are searched throughout the other modules."""
    monkeypatch.setattr(search_module, "_GROUP", 1 << 12)


def _clustered(n, d, centres=20, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.uniform(-4, 4, (centres, d)).astype(np.float32)
    lab = rng.integers(0, centres, n)
    # uneven clusters: scale spreads so list sizes differ
    return (c[lab] + rng.standard_normal((n, d)) * (0.3 + 0.1 * (lab % 5))[:, None]).astype(
        np.float32
    )


def _index(metric, x, n_clusters=24, n_probes=6, metas=None):
    idx = IvfIndex(x.shape[1], metric, IvfConfig(n_clusters=n_clusters, n_probes=n_probes, seed=2))
    idx.train(x)
    idx.insert_batch(list(range(len(x))), x, metas)
    return idx


def _both(idx, q, k, **kw):
    Dl, Il = idx.search_arrays(q, k, path="list", **kw)
    assert idx.stats().extra["last_search"]["path"] == "list"
    Dq, Iq = idx.search_arrays(q, k, path="query", **kw)
    assert idx.stats().extra["last_search"]["path"] == "query"
    return (Dl, Il), (Dq, Iq)


@pytest.mark.parametrize("metric", ["euclidean", "cosine", "dot_product"])
def test_list_major_equals_query_major(metric):
    x = _clustered(3000, 24, seed=1)
    idx = _index(metric, x)
    q = _clustered(300, 24, seed=9)
    # k's edge cases (1; more than the merge margin) once, the other metrics at k=10
    for k in (1, 10, 37) if metric == "euclidean" else (10,):
        (Dl, Il), (Dq, Iq) = _both(idx, q, k)
        assert np.array_equal(Il, Iq)
        assert np.array_equal(Dl.view(np.uint32), Dq.view(np.uint32))


@pytest.mark.parametrize("metric", ["euclidean", "dot_product"])
@pytest.mark.parametrize("refine", [0, 3])
def test_pq_list_major_equals_query_major(metric, refine):
    x = _clustered(3000, 16, seed=12)
    cfg = IvfConfig(n_clusters=24, n_probes=6, seed=2).with_use_pq(True)
    cfg = cfg.with_pq_subvectors(4).with_pq_refine_factor(refine)
    idx = IvfIndex(16, metric, cfg)
    idx.train(x)
    idx.insert_batch(list(range(len(x))), x)
    for i in range(0, 3000, 11):
        idx.delete(i)
    q = _clustered(250, 16, seed=13)
    for k in (1, 10):
        (Dl, Il), (Dq, Iq) = _both(idx, q, k)
        assert np.array_equal(Il, Iq)
        assert np.array_equal(Dl.view(np.uint32), Dq.view(np.uint32))


def test_list_major_with_filter_and_deletes():
    x = _clustered(2500, 16, seed=3)
    idx = _index("euclidean", x, metas=[{"m": i % 3} for i in range(len(x))])
    for i in range(0, 2500, 7):
        idx.delete(i)
    q = _clustered(200, 16, seed=4)
    flt = Filter.neq("m", 1)
    (Dl, Il), (Dq, Iq) = _both(idx, q, 10, filter=flt)
    assert np.array_equal(Il, Iq) and np.array_equal(Dl, Dq)
    got = Il[Il >= 0]
    assert np.all(got % 3 != 1) and np.all(got % 7 != 0)


def test_list_major_chunks_under_a_small_budget(monkeypatch):
    x = _clustered(2000, 16, seed=5)
    idx = _index("euclidean", x)
    q = _clustered(300, 16, seed=6)
    want = idx.search_arrays(q, 10, path="list")
    # a budget of a few rows per chunk: many chunks, same answer
    monkeypatch.setattr(search_module, "_LIST_MAJOR_CHUNK_BYTES", 40_000)
    got = idx.search_arrays(q, 10, path="list")
    assert np.array_equal(want[1], got[1]) and np.array_equal(want[0], got[0])


def test_score_buffer_refills_a_kept_buffer_and_frees_a_mismatched_one():
    old = jnp.full((8, 256), -1.0, jnp.float32)
    buf = score_buffer(8, 256, old)
    assert old.is_deleted() and np.all(np.asarray(buf) == np.inf)  # donated, reset
    fresh = score_buffer(16, 256, buf)
    assert buf.is_deleted() and fresh.shape == (16, 256)  # never two alive
    assert np.all(np.asarray(fresh) == np.inf)


@pytest.mark.parametrize("budget", [None, 40_000])
def test_kept_score_buffer_is_reset_between_searches(monkeypatch, budget):
    """The index keeps its last score buffer (reported in its memory stats) and
    hands it to the next search of the same shape, in one chunk or many, which
    returns what a fresh index does (the refill itself is checked above: stale
    scores would only add candidates that the exact re-score then ranks)."""
    if budget:
        monkeypatch.setattr(search_module, "_LIST_MAJOR_CHUNK_BYTES", budget)
    x = _clustered(2000, 16, seed=5)
    idx = _index("euclidean", x)
    near = _clustered(256, 16, seed=8)
    fresh = _index("euclidean", x).search_arrays(near, 10, path="list")
    idx.search_arrays(near[::-1], 10, path="list")
    kept = idx._runner.scratch[0]
    assert idx.stats().extra["memory"]["score_buffer"] == kept.nbytes
    got = idx.search_arrays(near, 10, path="list")
    assert kept.is_deleted() and len(idx._runner.scratch) == 1  # donated, refilled, kept
    assert np.array_equal(fresh[1], got[1]) and np.array_equal(fresh[0], got[0])


@pytest.mark.parametrize("pq_refine", [None, 2])
def test_ties_across_the_shortlist_boundary_rerun_by_insert_order(pq_refine):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((600, 8)).astype(np.float32)
    dup = np.full((60, 8), 0.25, np.float32)  # 60 identical vectors, inserted in order
    cfg = IvfConfig(n_clusters=8, n_probes=8, seed=1)
    if pq_refine is not None:  # the 2 * 10 shortlist falls inside the 60 equal scores
        cfg = cfg.with_use_pq(True).with_pq_subvectors(2).with_pq_refine_factor(pq_refine)
    idx = IvfIndex(8, "euclidean", cfg)
    idx.train(x)
    idx.insert_batch(list(range(600)), x)
    idx.insert_batch(list(range(1000, 1060)), dup)
    q = np.concatenate([dup[:1], x[:40] + 0.01])
    D, I = idx.search_arrays(q, 10, path="list")
    assert idx.stats().extra["last_search"]["ambiguous_rows"] >= 1
    assert I[0].tolist() == list(range(1000, 1010))
    Dq, Iq = idx.search_arrays(q, 10, path="query")
    assert np.array_equal(I, Iq) and np.array_equal(D, Dq)


def test_auto_picks_list_major_for_big_batches_only():
    x = _clustered(2000, 16, seed=8)
    idx = _index("euclidean", x, n_clusters=16, n_probes=4)
    idx.search_arrays(x[:4], 5)
    assert idx.stats().extra["last_search"]["path"] == "query"
    idx.search_arrays(x[:200], 5)
    assert idx.stats().extra["last_search"]["path"] == "list"


@pytest.mark.parametrize(("metric", "pq"), [("manhattan", False), ("manhattan", True)])
def test_list_path_needs_a_gemm_metric(metric, pq):
    x = _clustered(400, 8, seed=2)
    cfg = IvfConfig(n_clusters=4, n_probes=2, seed=0)
    if pq:
        cfg = cfg.with_use_pq(True).with_pq_subvectors(2)
    idx = IvfIndex(8, metric, cfg)
    idx.train(x)
    idx.insert_batch(list(range(len(x))), x)
    with pytest.raises(InvalidConfigError, match="path='list'"):
        idx.search_arrays(x[:3], 3, path="list")


def test_plan_covers_every_pair_once():
    x = _clustered(3000, 8, seed=11)
    idx = _index("euclidean", x, n_clusters=32, n_probes=5)
    rng = np.random.default_rng(0)
    probes = rng.integers(0, 32, (150, 5)).astype(np.int32)
    layout = idx._layout
    starts, widths = pair_columns(probes, layout)
    seen = []
    for cu in plan_units(probes, starts, layout):
        U, tile = cu.unit_q.shape
        assert MIN_TILE <= tile <= MAX_TILE and tile & (tile - 1) == 0
        assert np.all(layout.list_nblocks[cu.unit_list] <= cu.n_blocks)
        for u in range(U):
            for q, off in zip(cu.unit_q[u], cu.unit_off[u]):
                if q >= 0:
                    seen.append((int(q), int(cu.unit_list[u]), int(off)))
    want = [
        (q, int(probes[q, p]), int(starts[q, p]))
        for q in range(150)
        for p in range(5)
        if layout.list_nblocks[probes[q, p]] > 0
    ]
    assert sorted(seen) == sorted(want)
    # each probe's columns end where the next starts, within the row's width
    assert np.all(np.diff(starts, axis=1) >= 0) and np.all(starts[:, -1] <= widths)


@pytest.mark.parametrize("metric", ["euclidean", "dot_product"])
@pytest.mark.parametrize("refine", [0, 2])
def test_residual_pq_list_major_equals_query_major(metric, refine):
    x = _clustered(3000, 16, seed=14)
    cfg = IvfConfig(n_clusters=24, n_probes=6, seed=2).with_use_pq(True).with_pq_subvectors(4)
    cfg = cfg.with_pq_refine_factor(refine).with_pq_by_residual(True)
    idx = IvfIndex(16, metric, cfg)
    idx.train(x)
    idx.insert_batch(list(range(len(x))), x)
    assert idx.stats().extra["pq_by_residual"] is True
    q = _clustered(250, 16, seed=15)
    for k in (1, 10):
        (Dl, Il), (Dq, Iq) = _both(idx, q, k)
        assert np.array_equal(Il, Iq)
        assert np.array_equal(Dl.view(np.uint32), Dq.view(np.uint32))


def test_euclidean_flat_short_selection_is_proven_or_rerun():
    """EUCLIDEAN IVF-Flat selects only k + PROVEN_MARGIN: rows it cannot prove
    (neighbours at equal distances up to rounding) go query-major, the rest are
    proven, and either way the result is the query-major path's."""
    from iqdb_ivf_jax._search.list_major import PROVEN_MARGIN, selection_size

    rng = np.random.default_rng(21)
    d = 16
    centres = rng.uniform(-5, 5, (40, d)).astype(np.float32)
    # around each centre, 30 points on a sphere of radius 1 (to float32 rounding)
    dirs = rng.standard_normal((40, 30, d))
    dirs /= np.linalg.norm(dirs, axis=2, keepdims=True)
    shell = (centres[:, None, :] + dirs).reshape(-1, d).astype(np.float32)
    x = np.concatenate([_clustered(1500, d, seed=22), shell])
    idx = _index("euclidean", x, n_clusters=16, n_probes=16)
    assert selection_size(idx.state, 10, 0) == 10 + PROVEN_MARGIN
    (Dl, Il), (Dq, Iq) = _both(idx, centres, 10)
    idx.search_arrays(centres, 10, path="list")
    assert idx.stats().extra["last_search"]["ambiguous_rows"] >= 20  # shells: unproven
    assert np.array_equal(Il, Iq) and np.array_equal(Dl.view(np.uint32), Dq.view(np.uint32))
    q = _clustered(200, d, seed=23)  # ordinary queries: proven, none re-run
    idx.search_arrays(q, 10, path="list")
    assert idx.stats().extra["last_search"]["ambiguous_rows"] == 0
    (Dl, Il), (Dq, Iq) = _both(idx, q, 10)
    assert np.array_equal(Il, Iq) and np.array_equal(Dl.view(np.uint32), Dq.view(np.uint32))
