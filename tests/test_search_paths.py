"""Search kernels: functional API under jit/vmap, batch equality, no retracing,
bounded scan padding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from iqdb_ivf_jax import Filter, IvfConfig, IvfIndex, functional
from iqdb_ivf_jax._pq import adc_scores, adc_tables
from iqdb_ivf_jax._search import query_major as _search


def _clustered(n, d, centres=12, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.uniform(-5, 5, (centres, d)).astype(np.float32)
    lab = rng.integers(0, centres, n)
    return (c[lab] + rng.standard_normal((n, d)) * 0.5).astype(np.float32)


@pytest.fixture(scope="module", params=["flat", "pq", "pq_residual"])
def built(request):
    x = _clustered(1200, 16)
    cfg = IvfConfig(n_clusters=16, n_probes=4, seed=3)
    if request.param != "flat":
        cfg = cfg.with_use_pq(True).with_pq_subvectors(4).with_pq_refine_factor(2)
        cfg = cfg.with_pq_by_residual(request.param == "pq_residual")
    index = IvfIndex(16, "euclidean", cfg)
    index.train(x)
    index.insert_batch(list(range(len(x))), x, [{"even": i % 2 == 0} for i in range(len(x))])
    return index, x


def test_functional_single_matches_wrapper(built):
    index, x = built
    q = x[:20] + 0.01
    D, I = index.search_arrays(q, k=7)
    refine = index.pq_refine_factor if index.config.use_pq else 0
    f = jax.jit(functional.search, static_argnames=("k", "n_probes", "refine", "scan_blocks"))
    for r in range(len(q)):
        d, s = f(index.state, q[r], k=7, n_probes=index.n_probes, refine=refine)
        assert index.ids_for_slots(s) == I[r].tolist()
        assert np.array_equal(np.asarray(d), D[r])


def test_single_query_equals_its_batch_row(built):
    """One query (probe + scan in one call; IVF-PQ included) returns the batch's row,
    with and without a filter."""
    index, x = built
    q = x[40:70] + 0.02
    for flt in (None, Filter.eq("even", True)):
        D, I = index.search_arrays(q, k=6, filter=flt)
        for r in range(len(q)):
            d1, i1 = index.search_arrays(q[r : r + 1], k=6, filter=flt)
            assert i1[0].tolist() == I[r].tolist()
            assert np.array_equal(d1[0], D[r])
        assert index.stats().extra["last_search"]["queries"] == 1


def test_vmap_equals_native_batch(built):
    index, x = built
    q = x[100:140] + 0.02
    st = index.state
    refine = index.pq_refine_factor if index.config.use_pq else 0
    kw = {"k": 5, "n_probes": 4, "refine": refine}
    vm = jax.jit(jax.vmap(lambda qq: functional.search(st, qq, **kw)))(q)
    nb = jax.jit(lambda qq: functional.search_batch(st, qq, **kw))(q)
    assert np.array_equal(np.asarray(vm[1]), np.asarray(nb[1]))
    assert np.array_equal(np.asarray(vm[0]), np.asarray(nb[0]))


def test_functional_mask_equals_filter(built):
    index, x = built
    q = x[:8] + 0.01
    flt = Filter.eq("even", True)
    _D, I = index.search_arrays(q, k=5, filter=flt)
    mask = np.zeros(index.state.valid.size, bool)
    for i in range(0, len(x), 2):
        mask[index._entries.slot_of(i)] = True
    mask = mask.reshape(index.state.valid.shape)
    np.testing.assert_array_equal(index.filter_mask(flt), mask)  # the public helper
    np.testing.assert_array_equal(index.filter_mask({"even": True}), mask)
    np.testing.assert_array_equal(index.filter_mask(), index.state.valid)
    refine = index.pq_refine_factor if index.config.use_pq else 0
    for r in range(len(q)):
        _d, s = functional.search(index.state, q[r], k=5, n_probes=4, mask=mask, refine=refine)
        assert index.ids_for_slots(s) == I[r].tolist()
        assert all(i % 2 == 0 for i in I[r])


def test_state_is_a_pytree_and_survives_later_writes(built):
    index, x = built
    st = index.state
    leaves = jax.tree_util.tree_leaves(st)
    assert all(isinstance(a, jax.Array) for a in leaves)
    before = np.asarray(st.vectors).copy()
    index.insert("extra", x[0] + 100)
    assert np.array_equal(np.asarray(st.vectors), before)  # old snapshot still readable
    index.delete("extra")


def test_no_retrace_for_repeated_search_and_inserts():
    x = _clustered(3000, 8, seed=5)
    index = IvfIndex(8, "euclidean", IvfConfig(n_clusters=8, n_probes=8, seed=1))
    index.train(x)
    index.insert_batch(list(range(2000)), x[:2000])
    q = x[2000:2016]
    index.search_arrays(q, k=10)
    index.search(q[0], k=10)
    index.insert(5000, x[2999])
    index.delete(5000)
    with jax.no_tracing():
        for i in range(20):
            index.insert(6000 + i, x[2000 + i])
            index.search_arrays(q, k=10)
            index.search(q[0], k=10)
        index.delete(6000)


def test_scan_padding_is_bounded_on_uneven_lists():
    rng = np.random.default_rng(0)
    # very uneven clusters: sizes from 5 to 2000
    sizes = np.unique(np.geomspace(5, 2000, 24).astype(int))
    centres = rng.uniform(-20, 20, (len(sizes), 16)).astype(np.float32)
    x = np.concatenate(
        [c + rng.standard_normal((s, 16)).astype(np.float32) * 0.3 for c, s in zip(centres, sizes)]
    )
    index = IvfIndex(16, "euclidean", IvfConfig(n_clusters=len(sizes), n_probes=3, seed=0))
    index.train(x)
    index.insert_batch(list(range(len(x))), x)
    ratio = index.stats().extra["padding_ratio"]
    sizes_live = index.cluster_stats().cluster_sizes
    assert max(sizes_live) / np.mean(sizes_live) > 3  # really uneven
    index.search_arrays(x[rng.integers(0, len(x), 200)], k=10)
    scan = index.stats().extra["last_search"]["scan_padding"]
    # block padding: at most one partly filled block per list
    B = index.stats().extra["block_size"]
    assert ratio <= 1 + B * len(sizes) / len(x) + 1e-9
    assert scan < 1.6, scan


@pytest.mark.parametrize("metric", ["euclidean", "dot_product", "manhattan"])
@pytest.mark.parametrize("residual", [False, True])
def test_shortlist_adc_equals_the_scan_adc_bit_for_bit(metric, residual):
    """``adc_rows`` (the list-major merge's re-score: only the selected table
    entries) gives the query-major scan's ADC bits for any rows of the probed
    lists, every PQ metric, plain and residual codes."""
    x = _clustered(900, 16, seed=4)
    cfg = IvfConfig(n_clusters=8, n_probes=3, seed=1).with_use_pq(True).with_pq_subvectors(4)
    index = IvfIndex(16, metric, cfg.with_pq_by_residual(residual))
    index.train(x)
    index.insert_batch(list(range(len(x))), x)
    st = index.state
    rng = np.random.default_rng(0)
    probes = jnp.asarray(rng.permutation(8)[:3], jnp.int32)
    row_probe = jnp.asarray(rng.integers(0, 3, 50), jnp.int32)
    b = jnp.asarray(rng.integers(0, st.codes.shape[0], 50))
    r = jnp.asarray(rng.integers(0, st.block_size, 50))
    codes = st.codes[b, r]
    terms = st.pq_terms[b, r] if st.keeps_pq_terms else None
    scan = jax.jit(_search._adc_blocks)  # the query-major scan: whole blocks b
    for q in x[:3] + 0.25:
        blocks = scan(st, q, probes, b.astype(jnp.int32), row_probe, jnp.int32(50))
        want = blocks.reshape(50, st.block_size)[jnp.arange(50), r]
        if not residual:  # and the plain codes' tables, as documented
            kind = _search.adc_kind(st.metric)
            plain = adc_scores(adc_tables(q, st.codebooks, kind=kind), codes, kind=kind)
            assert np.array_equal(
                np.asarray(plain).view(np.uint32), np.asarray(want).view(np.uint32)
            )
        got = jax.jit(_search.adc_rows)(st, q, probes, row_probe, codes, terms)
        assert np.array_equal(np.asarray(got).view(np.uint32), np.asarray(want).view(np.uint32))


def test_functional_search_truncation_is_detectable():
    """A budget below the probes' blocks skips their tail; ``scan_block_ids``
    reports the blocks needed (under jit too), so callers can tell."""
    x = np.random.default_rng(5).standard_normal((3000, 8)).astype(np.float32)
    idx = IvfIndex(8, "euclidean", IvfConfig(n_clusters=4, n_probes=4))
    idx.train(x)
    idx.insert_batch(range(3000), x)
    state = idx.state

    @jax.jit
    def needed(q):
        probes = functional.probe(state, q, n_probes=4)
        return functional.scan_block_ids(state, probes, 1)[1]

    need = int(needed(x[0]))
    assert need > 1
    full = functional.search(state, x[0], k=10, n_probes=4)
    assert need <= functional.default_scan_blocks(state, 4)
    cut = functional.search(state, x[0], k=10, n_probes=4, scan_blocks=1)
    want = idx.search_arrays(x[:1], 10)
    assert idx.ids_for_slots(full[1]) == want[1][0].tolist()  # the full budget: the index's answer
    assert np.isfinite(np.asarray(full[0])).all()
    assert np.asarray(cut[0]).tolist() != np.asarray(full[0]).tolist()  # fewer rows scanned
