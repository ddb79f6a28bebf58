"""Bounds of a search call: ``k`` and the refine factor are bounded before anything
is allocated, a ``k`` past the index size is answered with padding, and filter
limits hold on every call."""

import numpy as np
import pytest

from iqdb_ivf_jax import Filter, InvalidConfigError, InvalidFilterError, IvfConfig, IvfIndex


@pytest.fixture(scope="module")
def idx():
    x = np.random.default_rng(0).standard_normal((600, 8)).astype(np.float32)
    index = IvfIndex(8, "euclidean", IvfConfig(n_clusters=4, n_probes=4))
    index.train(x)
    index.insert_batch(range(600), x)
    return index, x


def test_absurd_k_is_refused_before_allocating(idx):
    index, x = idx
    for call in (index.search, index.search_batch, index.search_arrays):
        q = x[0] if call is index.search else x[:2]
        with pytest.raises(InvalidConfigError, match="k must be <="):
            call(q, k=10**9)
    with pytest.raises(InvalidConfigError, match="smaller batches"):
        index.search_arrays(np.zeros((1024, 8), np.float32), k=1 << 19)
    empty = IvfIndex(8, "euclidean", IvfConfig(n_clusters=4, n_probes=4))
    empty.train(x)
    with pytest.raises(InvalidConfigError):
        empty.search(x[0], k=10**9)


def test_k_past_the_index_size_is_padding(idx):
    index, x = idx
    D, I = index.search_arrays(x[:3], k=700)
    assert D.shape == I.shape == (3, 700)
    assert (I[:, :600] >= 0).all() and (I[:, 600:] == -1).all()
    assert np.isinf(D[:, 600:]).all() and np.isfinite(D[:, :600]).all()
    assert sorted(I[0, :600].tolist()) == list(range(600))
    _D2, I2 = index.search_arrays(x[:3], k=600)
    np.testing.assert_array_equal(I[:, :600], I2)
    assert len(index.search(x[0], k=5000)) == 600


def test_refine_factor_is_bounded():
    x = np.random.default_rng(1).standard_normal((600, 8)).astype(np.float32)
    cfg = IvfConfig(n_clusters=4, n_probes=4, use_pq=True, pq_subvectors=4, pq_refine_factor=2)
    index = IvfIndex(8, "euclidean", cfg)
    index.train(x)
    index.insert_batch(range(600), x)
    with pytest.raises(InvalidConfigError, match="pq_refine_factor must be <="):
        index.set_pq_refine_factor(10**9)
    with pytest.raises(InvalidConfigError):
        index.search(x[0], k=5, refine=10**9)
    # a factor past the index size re-ranks everything: the same as the largest useful one
    big = index.search_arrays(x[:40], k=10, refine=1000)
    full = index.search_arrays(x[:40], k=10, refine=60)
    np.testing.assert_array_equal(big[1], full[1])
    np.testing.assert_array_equal(big[0].view(np.uint32), full[0].view(np.uint32))
    assert index.pq_refine_factor == 2


def test_filter_limits_hold_on_every_call(idx):
    index, x = idx
    wide = Filter.is_in("g", list(range(5000)))
    for k in (0, 1):
        with pytest.raises(InvalidFilterError):
            index.search(x[0], k=k, filter=wide)


def test_wrong_python_types_raise_typed_errors(idx):
    from iqdb_ivf_jax import InvalidArgumentError, IqdbError, SearchParams

    index, x = idx
    cases = [
        lambda: IvfIndex(8, "euclidean", config=5),
        lambda: index.set_n_probes(2.0),
        lambda: index.set_pq_refine_factor("1"),
        lambda: index.search(x[0], k=1.5),
        lambda: index.search(x[0], SearchParams(3, "euclidean"), filter={"g": 1}),
        lambda: index.suggest_n_probes("0.9"),
        lambda: index.insert_batch(5, x[:1]),
        lambda: index.insert_batch([9000], x[:1], {"g": 1}),
        lambda: index.add_stream([], chunk_rows=1.5),
        lambda: index.add_stream([x[:2]]),
        lambda: index.delete(1.5),
    ]
    for case in cases:
        with pytest.raises(InvalidArgumentError) as info:
            case()
        assert isinstance(info.value, IqdbError) and isinstance(info.value, TypeError)
    assert len(index) == 600
