"""Spec behaviours 44-47 (docs/semantics.md §5, "IVF-PQ"), the PQ side of filters (38), and
65 (the batch kernel equals vmap of the single-query kernel, Flat and PQ).

All PQ indexes here share one shape bucket (512 x 8-D, M = 2, 4 lists) so the
kernels compile few times.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from iqdb_ivf_jax import Filter, IvfConfig, IvfIndex, functional

N, D, M, NC = 512, 8, 2, 4


def bits(a) -> np.ndarray:
    return np.asarray(a, np.float32).view(np.uint32)


def clustered(seed: int, n: int = N) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-5, 5, (4, D))
    lab = rng.integers(0, 4, n)
    return (centres[lab] + rng.normal(0, 1.0, (n, D))).astype(np.float32)


def pq_config(seed=44, refine=4, **kw) -> IvfConfig:
    return IvfConfig(
        n_clusters=NC,
        n_probes=NC,
        seed=seed,
        use_pq=True,
        pq_subvectors=M,
        pq_refine_factor=refine,
        **kw,
    )


def build(x, metric="euclidean", metas=None, **kw) -> IvfIndex:
    idx = IvfIndex(D, metric, pq_config(**kw))
    idx.train(x)
    idx.insert_batch(list(range(len(x))), x, metas)
    return idx


def f64_metric(X, q, metric):
    X, q = np.asarray(X, np.float64), np.asarray(q, np.float64)
    if metric == "euclidean":
        return np.sqrt(((X - q) ** 2).sum(-1))
    if metric == "manhattan":
        return np.abs(X - q).sum(-1)
    if metric == "dot_product":
        return -(X @ q)
    raise AssertionError(metric)


_search = jax.jit(functional.search, static_argnames=("k", "n_probes", "refine", "scan_blocks"))


def codes_by_id(idx: IvfIndex) -> dict:
    """id -> u8[M] code, read from the state (slot s = row s % B of block s // B)."""
    state = idx.state
    _, slots = _search(state, np.zeros(D, np.float32), k=len(idx), n_probes=NC)
    slots = np.asarray(slots)
    ids = idx.ids_for_slots(slots)
    codes = np.asarray(state.codes).reshape(-1, M)
    return {i: codes[s] for i, s in zip(ids, slots.tolist()) if i is not None}


def dequantize(code, codebooks) -> np.ndarray:
    return np.concatenate([codebooks[j, int(c)] for j, c in enumerate(code)])


@pytest.fixture(scope="module")
def data():
    x = clustered(44)
    q = clustered(45, 8)
    return x, q


@pytest.fixture(scope="module")
def pq_index(data):
    return build(data[0])


# -------------------------------------------------------------------------- 44
def test_b44_basic_pq_search(pq_index, data):
    x, q = data
    idx = pq_index
    assert len(idx) == N
    assert idx.stats().extra["mode"] == "pq"
    hits = idx.search(q[0], k=5)
    assert len(hits) == 5
    d = [h.distance for h in hits]
    assert d == sorted(d)
    assert len({h.id for h in hits}) == 5
    for i in (0, 17, 300, 511):
        hits = idx.search(x[i], k=5)
        assert i in [h.id for h in hits]
        assert hits[0].id == i and hits[0].distance == 0.0  # exact refine: itself at 0
    np.testing.assert_array_equal(idx.get(17)[0], x[17])  # raw vectors are kept


def test_b44_empty_pq_index(data):
    x, q = data
    idx = IvfIndex(D, "euclidean", pq_config())
    idx.train(x)
    assert idx.search(q[0], k=5) == []
    assert idx.search_batch(q[:2], k=5) == [[], []]
    D_, I_ = idx.search_arrays(q[:2], k=5)
    assert (I_ == -1).all() and np.isinf(D_).all()


# -------------------------------------------------------------------------- 45
def test_b45_same_seed_identical(pq_index, data):
    x, q = data
    other = build(x)
    Da, Ia = pq_index.search_arrays(q, k=10)
    Db, Ib = other.search_arrays(q, k=10)
    np.testing.assert_array_equal(Ia, Ib)
    np.testing.assert_array_equal(bits(Da), bits(Db))
    np.testing.assert_array_equal(bits(pq_index.state.codebooks), bits(other.state.codebooks))
    np.testing.assert_array_equal(bits(pq_index.state.centroids), bits(other.state.centroids))


def test_b45_different_seeds_differ_at_refine0(data):
    x, q = data
    a = build(x, seed=0xA11CE, refine=0)
    b = build(x, seed=0xB0B, refine=0)
    Da, Ia = a.search_arrays(q, k=10)
    Db, Ib = b.search_arrays(q, k=10)
    assert not (np.array_equal(Ia, Ib) and np.array_equal(bits(Da), bits(Db)))
    assert not np.array_equal(bits(a.state.codebooks), bits(b.state.codebooks))


# -------------------------------------------------------------------------- 46
@pytest.mark.parametrize("metric", ["euclidean", "dot_product", "manhattan"])
def test_b46_refine0_is_adc_on_dequantized(metric, data):
    x, q = data
    idx = build(x, metric=metric, refine=0)
    cb = np.asarray(idx.state.codebooks)
    assert cb.shape == (M, 256, D // M)
    codes = codes_by_id(idx)
    assert len(codes) == N
    for qi in q[:4]:
        hits = idx.search(qi, k=10)
        assert len(hits) == 10
        got = np.array([h.distance for h in hits])
        deq = np.stack([dequantize(codes[h.id], cb) for h in hits])
        np.testing.assert_allclose(got, f64_metric(deq, qi, metric), rtol=1e-4, atol=1e-3)
        # ...and they are not the exact distances (ADC, not refined)
        exact = f64_metric(x[[h.id for h in hits]], qi, metric)
        assert not np.allclose(got, exact, rtol=1e-6, atol=1e-6)
        assert (np.diff(got) >= 0).all()


def test_b46_codes_are_nearest_codewords(data):
    x, _ = data
    idx = build(x, refine=0)
    cb = np.asarray(idx.state.codebooks, np.float64)
    codes = codes_by_id(idx)
    for i in range(0, N, 7):
        for j in range(M):
            sub = x[i, j * (D // M) : (j + 1) * (D // M)].astype(np.float64)
            d = ((cb[j] - sub) ** 2).sum(-1)
            c = int(codes[i][j])
            assert d[c] <= d.min() * (1 + 1e-5) + 1e-6


@pytest.mark.parametrize("metric", ["euclidean", "dot_product", "manhattan"])
def test_b46_refine_gives_flat_distances(metric, data):
    x, q = data
    pq = build(x, metric=metric, refine=4)
    flat = IvfIndex(D, metric, IvfConfig(n_clusters=NC, n_probes=NC, seed=44))
    flat.train(x)
    flat.insert_batch(list(range(N)), x)
    flat_all = flat.search_batch(q, k=N)
    for qi, ref in zip(q, flat_all):
        exact = {h.id: h.distance for h in ref}
        hits = pq.search(qi, k=10)
        assert len(hits) == 10
        for h in hits:
            assert h.distance == exact[h.id], "refined distances equal Flat's exactly"
        np.testing.assert_allclose(
            [h.distance for h in hits],
            f64_metric(x[[h.id for h in hits]], qi, metric),
            rtol=1e-4,
            atol=1e-3,
        )
    # a shortlist covering every candidate (N*k >= n) gives Flat's results exactly
    pq.set_pq_refine_factor(N)
    for qi, ref in zip(q, flat_all):
        assert pq.search(qi, k=10) == ref[:10]


# -------------------------------------------------------------------------- 47
def test_b47_runtime_refine_switch(pq_index, data):
    _x, q = data
    idx = pq_index
    assert idx.pq_refine_factor == 4
    refined = idx.search_batch(q, k=10)
    idx.set_pq_refine_factor(0)
    try:
        adc = idx.search_batch(q, k=10)
        for hits in adc:
            assert len(hits) == 10
            d = [h.distance for h in hits]
            assert d == sorted(d)
        assert adc != refined
        idx.set_pq_refine_factor(1)
        for hits in idx.search_batch(q, k=10):
            assert len(hits) == 10
    finally:
        idx.set_pq_refine_factor(4)
    assert idx.search_batch(q, k=10) == refined


def test_b47_encoding_ties_go_to_lowest_codeword():
    # 6 distinct integer-valued points: k-means with 256 codewords must repeat codewords
    # (re-seeded copies of data points), and bit-identical codewords always tie exactly.
    rng = np.random.default_rng(47)
    base = rng.integers(-4, 5, (6, D)).astype(np.float32)
    x = base[rng.integers(0, 6, N)]
    idx = IvfIndex(D, "euclidean", pq_config(seed=47, refine=0))
    idx.train(x)
    idx.insert_batch(list(range(N)), x)
    cb = np.asarray(idx.state.codebooks)
    codes = codes_by_id(idx)
    n_dup = 0
    for i in range(N):
        for j in range(M):
            c = int(codes[i][j])
            twins = np.flatnonzero((bits(cb[j]) == bits(cb[j, c])).all(axis=1))
            n_dup += len(twins) > 1
            assert c == twins[0], f"row {i}, subvector {j}: code {c}, identical codewords {twins}"
            sub = x[i, j * (D // M) : (j + 1) * (D // M)].astype(np.float64)
            d = ((cb[j].astype(np.float64) - sub) ** 2).sum(-1)
            assert d[c] <= d.min() + 1e-5  # (near-)nearest codeword
    assert n_dup > 0, "setup: expected bit-identical codewords"


# -------------------------------------------------------------------------- 38
def test_b38_pq_filters_with_refine(data):
    x, q = data
    rng = np.random.default_rng(38)
    colours = ["red", "green", "blue"]
    metas = [{"colour": colours[int(rng.integers(3))]} if i % 10 else None for i in range(N)]
    idx = build(x, metas=metas, refine=4)
    f_in = Filter.is_in("colour", ["red", "green"])
    f_eq = Filter.eq("colour", "red")
    for f, ok in ((f_in, {"red", "green"}), (f_eq, {"red"})):
        for qi in q:
            hits = idx.search(qi, k=10, filter=f)
            assert len(hits) == 10
            for h in hits:
                assert h.metadata is not None and h.metadata["colour"] in ok
                assert metas[h.id]["colour"] in ok
                assert f.evaluate(h.metadata)
            d = [h.distance for h in hits]
            assert d == sorted(d)
    # with a shortlist covering every survivor, the result is the filtered brute force
    idx.set_pq_refine_factor(N)
    for qi in q[:3]:
        hits = idx.search(qi, k=10, filter=f_eq)
        keep = [i for i in range(N) if metas[i] and metas[i]["colour"] == "red"]
        d = f64_metric(x[keep], qi, "euclidean")
        want = [keep[i] for i in np.argsort(d, kind="stable")[:10]]
        assert [h.id for h in hits] == want


# -------------------------------------------------------------------------- 65
_search_batch = jax.jit(functional.search_batch, static_argnames=("k", "n_probes", "refine"))


def _vmapped(k, n_probes, refine):
    return jax.jit(
        jax.vmap(
            lambda s, q, m: functional.search(s, q, k=k, n_probes=n_probes, mask=m, refine=refine),
            in_axes=(None, 0, None),
        )
    )


@pytest.mark.parametrize("mode", ["flat", "pq"])
def test_b65_batch_kernel_equals_vmap(mode):
    x = clustered(65)
    cfg = (
        pq_config(seed=65, refine=4)
        if mode == "pq"
        else IvfConfig(n_clusters=NC, n_probes=NC, seed=65)
    )
    idx = IvfIndex(D, "euclidean", cfg)
    idx.train(x)
    idx.insert_batch(list(range(N)), x)
    for i in range(0, N, 5):
        idx.delete(i)
    state = idx.state
    q = jnp.asarray(np.concatenate([x[1:9], clustered(651, 8)]))
    rng = np.random.default_rng(65)
    mask_rand = jnp.asarray(rng.random(state.valid.shape) < 0.5)
    full = jnp.ones(state.valid.shape, bool)
    refines = (0, 4) if mode == "pq" else (0,)
    for refine in refines:
        for n_probes in (2,):
            for mask in (full, mask_rand):
                d1, s1 = _search_batch(state, q, k=10, n_probes=n_probes, mask=mask, refine=refine)
                d2, s2 = _vmapped(10, n_probes, refine)(state, q, mask)
                where = f"refine={refine}, n_probes={n_probes}"
                np.testing.assert_array_equal(np.asarray(s1), np.asarray(s2), err_msg=where)
                np.testing.assert_array_equal(bits(d1), bits(d2), err_msg=where)
    # ...and the index reports the same neighbours as the kernel (no filter)
    d, s = _search_batch(state, q, k=10, n_probes=2, mask=full, refine=refines[-1])
    idx.set_n_probes(2)
    Dx, Ix = idx.search_arrays(np.asarray(q), k=10)
    ids = np.array(idx.ids_for_slots(np.asarray(s)), dtype=object).reshape(Ix.shape)
    assert [[int(v) for v in row] for row in ids] == Ix.tolist()
    np.testing.assert_allclose(np.asarray(d), Dx, rtol=1e-6, atol=1e-6)
