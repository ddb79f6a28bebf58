"""Input bounds a hostile caller probes: finite but huge vectors, oversized
filters, wrong Python types (always an ``IqdbError`` that is also a
``TypeError``) and the argument checks of the functional API (eager, under
``jax.jit`` and under ``jax.vmap``).

Warnings are errors in this suite (``filterwarnings = error``), so a NumPy
overflow warning leaking out of a validator fails these tests too.
"""

import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from iqdb_ivf_jax import (
    DimensionMismatchError,
    Filter,
    InvalidArgumentError,
    InvalidConfigError,
    InvalidFilterError,
    InvalidVectorError,
    IqdbError,
    IvfConfig,
    IvfIndex,
    IvfState,
    functional,
)
from iqdb_ivf_jax._filter import (
    MAX_DEPTH,
    MAX_IN_VALUES,
    MAX_NODES,
    MAX_WIDTH,
    And,
    In,
    Or,
    as_filter,
)
from iqdb_ivf_jax._validate import MAX_SQ_NORM, as_vector_array, check_finite

D = 8
N = 600


def _data(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((N, D)).astype(np.float32)


def _build(metric: str = "euclidean", **cfg) -> tuple[IvfIndex, np.ndarray]:
    x = _data()
    idx = IvfIndex(D, metric, IvfConfig(n_clusters=4, n_probes=4, **cfg))
    idx.train(x)
    idx.insert_batch(range(N), x)
    return idx, x


@pytest.fixture(scope="module")
def built():
    """A 600 x 8 euclidean IVF-Flat index (tests must leave it unchanged)."""
    return _build()


def _at_norm(v: np.ndarray, sq_norm: float) -> np.ndarray:
    """Rows of ``v`` scaled to the squared L2 norm ``sq_norm`` (the largest; others in
    proportion) in float32."""
    v = np.asarray(v, np.float64)
    scale = np.sqrt(sq_norm) / np.linalg.norm(v, axis=-1).max()
    return (v * scale).astype(np.float32)


def _sq64(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return np.einsum("...i,...i->...", x, x)


# 1. Finite but huge vectors ------------------------------------------------------------------
def test_huge_vectors_rejected_and_index_unchanged(built):
    idx, x = built
    state, n = idx.state, len(idx)
    huge = np.full(D, 1e38, np.float32)
    with pytest.raises(InvalidVectorError, match=r"squared L2 norm.*scale the vectors down"):
        idx.insert(999, huge)
    with pytest.raises(InvalidVectorError, match="row 1 has squared L2 norm"):
        idx.insert_batch([1000, 1001], np.stack([x[0], huge]))
    with pytest.raises(InvalidVectorError, match="query has squared L2 norm"):
        idx.search(huge, k=2)
    with pytest.raises(InvalidVectorError, match="query row 1"):
        idx.search_batch(np.stack([x[0], huge]), k=2)
    # a float64 value beyond float32's range: Inf after conversion, no cast warning
    with pytest.raises(InvalidVectorError, match="NaN or Inf"):
        idx.insert(1002, np.full(D, 1e39))
    assert idx.state is state and len(idx) == n
    assert not any(i in idx for i in (999, 1000, 1001, 1002))
    assert [h.id for h in idx.search(x[3], k=1)] == [3]


def test_huge_training_sample_rejected():
    idx = IvfIndex(D, "euclidean", IvfConfig(n_clusters=4, n_probes=4))
    with pytest.raises(InvalidVectorError, match="training sample row 0 has squared L2 norm"):
        idx.train(_data() * np.float32(2.5e37))
    assert not idx.is_trained
    # just above the limit is rejected too, naming the (only) bad row
    x = _data()
    x[17] = _at_norm(x[17], MAX_SQ_NORM * 1.0001)
    with pytest.raises(InvalidVectorError, match="row 17 "):
        idx.train(x)
    assert not idx.is_trained


@pytest.mark.parametrize(
    "metric, cfg",
    [
        ("euclidean", {}),
        ("cosine", {}),
        ("dot_product", {}),
        ("manhattan", {}),
        ("euclidean", {"use_pq": True, "pq_subvectors": 4}),
        ("euclidean", {"use_pq": True, "pq_subvectors": 4, "pq_refine_factor": 2}),
        ("dot_product", {"use_pq": True, "pq_subvectors": 4}),
    ],
)
def test_norms_just_below_the_limit_keep_distances_finite(metric, cfg):
    """Data whose largest row sits just under the limit, half of it the negation of
    the other half (the largest distances there are), trains to finite centroids and
    every distance stays finite; each row finds itself first. (At float32 max / 4,
    IVF-PQ's ADC distances overflowed to Inf.)"""
    base = _data()
    base[N // 2 :] = -base[: N // 2]
    x = _at_norm(base, MAX_SQ_NORM * (1 - 1e-6))
    assert _sq64(x).max() <= MAX_SQ_NORM
    idx = IvfIndex(D, metric, IvfConfig(n_clusters=4, n_probes=4, **cfg))
    idx.train(x)
    assert np.isfinite(np.asarray(idx.state.centroids)).all()
    idx.insert_batch(range(N), x)
    qs = np.concatenate([x[:4], -x[:4], x[N // 2 : N // 2 + 2]])
    dists = idx.search_arrays(qs, k=N)[0]
    assert np.isfinite(np.asarray(dists)).all()
    if metric in ("euclidean", "manhattan") and not cfg.get("use_pq"):
        assert [idx.search(x[i], k=1)[0].id for i in (0, 1, 2, N - 1)] == [0, 1, 2, N - 1]


def test_vector_just_below_the_limit_is_found_first(built):
    idx = built[0]
    v = _at_norm(np.ones(D), MAX_SQ_NORM * (1 - 1e-6))
    assert _sq64(v) <= MAX_SQ_NORM
    idx.insert("big", v)
    try:
        hits = idx.search(v, k=3)
        assert hits[0].id == "big" and hits[0].distance == 0.0
        far = idx.search(-v, k=N + 1)
        assert len(far) == N + 1 and np.isfinite([h.distance for h in far]).all()
        assert far[-1].id == "big"
    finally:
        idx.delete("big")
    assert "big" not in idx


# check_finite never warns; raises only InvalidVectorError; is exact --------------------------
def _check_quietly(arr):
    """``check_finite`` with warnings as errors: None, or the exception it raised."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            check_finite(arr)
        except InvalidVectorError as e:
            return e
    return None


def _expected_bad(arr) -> bool:
    with np.errstate(all="ignore"):
        x = np.asarray(arr, np.float32).astype(np.float64)
    if x.size == 0:
        return False
    sq = _sq64(x.reshape(-1, x.shape[-1]))
    return bool((~(sq <= MAX_SQ_NORM)).any())


_DTYPES = st.sampled_from(
    [np.float32, np.float64, np.float16, np.int8, np.int32, np.int64, np.uint64]
)


@st.composite
def _arrays(draw):
    dtype = np.dtype(draw(_DTYPES))
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=2, min_side=0, max_side=5))
    if dtype.kind == "f":
        elements = st.floats(width=dtype.itemsize * 8, allow_nan=True, allow_infinity=True)
    else:
        info = np.iinfo(dtype)
        elements = st.integers(int(info.min), int(info.max))
    fill = st.sampled_from([dtype.type(0), dtype.type(1)])
    return draw(hnp.arrays(dtype, shape, elements=elements, fill=fill))


@settings(max_examples=50, deadline=None)
@given(_arrays())
def test_check_finite_never_warns_and_is_exact(arr):
    err = _check_quietly(arr)
    assert (err is not None) == _expected_bad(arr)


@settings(max_examples=50, deadline=None)
@given(_arrays())
def test_validators_raise_only_invalid_vector_errors(arr):
    dim = arr.shape[-1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            x = as_vector_array(arr, dim, rank=arr.ndim)
            check_finite(x, "vectors")
        except InvalidVectorError:
            pass


@pytest.mark.parametrize(
    "arr, bad",
    [
        (np.zeros((0, D), np.float32), False),
        (np.zeros((0,), np.float32), False),
        (np.zeros((3, 0), np.float32), False),
        (np.full((2, D), np.nan, np.float32), True),
        (np.array([[1.0, np.inf], [0.0, -np.inf]], np.float32), True),
        (np.full((2, D), np.finfo(np.float32).max, np.float32), True),
        (np.full((2, D), np.finfo(np.float64).max), True),
        (np.full((2, D), np.iinfo(np.int64).min), True),
        (np.full((2, D), np.iinfo(np.int64).max), True),
        (np.full((2, D), np.iinfo(np.uint64).max), True),
        (np.full((2, D), np.finfo(np.float32).tiny / 2, np.float32), False),
        (np.full((2, D), 1e17, np.float32), False),
        (np.ones((4, D), np.int64), False),
    ],
)
def test_check_finite_edge_cases(arr, bad):
    assert (_check_quietly(arr) is not None) is bad
    assert _expected_bad(arr) is bad


def test_check_finite_names_the_first_bad_row():
    x = np.ones((1000, D), np.float32)
    x[500] = np.nan
    x[400, 3] = 3e18  # finite, but |x| above ~2.3e18
    with pytest.raises(InvalidVectorError, match="vectors row 400 has squared L2 norm"):
        check_finite(x, "vectors")
    x[400, 3] = 1.0
    with pytest.raises(InvalidVectorError, match="vectors row 500 holds NaN or Inf"):
        check_finite(x, "vectors")


# 2. Filter limits ----------------------------------------------------------------------------
def _leaves(n: int) -> list:
    return [Filter.eq("i", i) for i in range(n)]


def test_wide_or_rejected_quickly(built):
    idx, x = built
    wide = Or(tuple(_leaves(20_000)))
    t0 = time.perf_counter()
    with pytest.raises(InvalidFilterError, match=f"20000 children.*limit of {MAX_WIDTH}"):
        wide.validate()
    assert time.perf_counter() - t0 < 1.0
    with pytest.raises(InvalidFilterError, match="children"):
        idx.search(x[0], k=5, filter=wide)
    with pytest.raises(InvalidFilterError, match="children"):
        idx.search(x[0], k=5, filter={"$or": [{"i": i} for i in range(20_000)]})
    with pytest.raises(InvalidFilterError, match="children"):
        idx.filter_mask(wide)
    with pytest.raises(InvalidFilterError, match="And has"):
        And(tuple(_leaves(MAX_WIDTH + 1))).validate()
    Or(tuple(_leaves(MAX_WIDTH))).validate()


def test_node_limit():
    # 1 And + 4 Or + 4 * 1023 leaves = 4097 nodes; one leaf fewer is exactly the limit
    ors = [Or(tuple(_leaves(MAX_WIDTH - 1))) for _ in range(4)]
    with pytest.raises(InvalidFilterError, match=f"more than {MAX_NODES} nodes"):
        And(tuple(ors)).validate()
    ors[-1] = Or(tuple(_leaves(MAX_WIDTH - 2)))
    And(tuple(ors)).validate()
    assert 1 + 4 + 3 * (MAX_WIDTH - 1) + MAX_WIDTH - 2 == MAX_NODES


def test_shared_subtrees_cannot_blow_up_validate():
    """A DAG of reused nodes unfolds to 1000**3 leaves: validate stops at the node
    limit instead of walking them."""
    a = Or(tuple(_leaves(1000)))
    b = Or((a,) * 1000)
    c = And((b,) * 1000)
    t0 = time.perf_counter()
    with pytest.raises(InvalidFilterError, match="nodes"):
        c.validate()
    assert time.perf_counter() - t0 < 1.0


def test_other_limits_still_enforced():
    f = Filter.eq("a", 1)
    for _ in range(MAX_DEPTH):
        f = Filter.not_(f)
    f.validate()
    with pytest.raises(InvalidFilterError, match="depth"):
        Filter.not_(f).validate()
    In("a", list(range(MAX_IN_VALUES))).validate()
    with pytest.raises(InvalidFilterError, match="In on field"):
        Or((In("a", list(range(MAX_IN_VALUES + 1))),)).validate()


# 3. Wrong Python types: IqdbError and TypeError at once -------------------------------------
def _assert_type_error(fn, match: str | None = None):
    with pytest.raises(InvalidArgumentError, match=match) as info:
        fn()
    e = info.value
    assert isinstance(e, IqdbError) and isinstance(e, TypeError)
    assert ";" in str(e), f"message names no fix: {e}"  # "...; <how to fix it>"


_BAD_IDS = [True, np.bool_(False), 1.5, np.float64(2.0), None, [1], (1,), {1: 2}, object()]


@pytest.mark.parametrize("bad", _BAD_IDS, ids=lambda b: type(b).__name__)
def test_bad_id_types(built, bad):
    idx, x = built
    _assert_type_error(lambda: idx.insert(bad, x[0]), "id must be an int, str or bytes")
    _assert_type_error(lambda: idx.insert_batch([bad], x[:1]), r"ids\[0\]")
    assert len(idx) == N


@pytest.mark.parametrize(
    "meta, match",
    [
        ([1], "metadata must be a dict"),
        ("tier=hot", "metadata must be a dict"),
        ({1: "a"}, "metadata keys must be str"),
        ({"colours": ["red"]}, "'colours'"),
        ({"nested": {"a": 1}}, "'nested'"),
        ({"raw": b"bytes"}, "'raw'"),
    ],
)
def test_bad_metadata_types(built, meta, match):
    idx, x = built
    _assert_type_error(lambda: idx.insert(5000, x[0], meta), match)
    _assert_type_error(lambda: idx.insert_batch([5000], x[:1], [meta]), match)
    assert 5000 not in idx


_LEAF = Filter.eq("a", 1)
_BAD_FILTERS = {
    "field int": lambda: Filter.eq(1, 2),
    "field bytes": lambda: Filter.is_in(b"a", [1]),
    "value list": lambda: Filter.eq("a", [1]),
    "value bytes": lambda: Filter.gt("a", b"x"),
    "in value object": lambda: Filter.is_in("a", ["ok", object()]),
    "in values str": lambda: Filter.is_in("a", "abc"),
    "in values set": lambda: In("a", {1, 2}),
    "and child str": lambda: And((_LEAF, "b")),
    "or child int": lambda: Filter.or_(_LEAF, 3),
    "or child dict": lambda: Or([{"a": 1}]),
    "and not a list": lambda: And(_LEAF),
    "from_dict str": lambda: Filter.from_dict("a"),
    "from_dict list": lambda: Filter.from_dict([("a", 1)]),
    "from_dict value": lambda: Filter.from_dict({"x": b"bytes"}),
    "as_filter int": lambda: as_filter(3),
    "as_filter str": lambda: as_filter("tier"),
}


@pytest.mark.parametrize("name", list(_BAD_FILTERS))
def test_bad_filter_types(name):
    _assert_type_error(_BAD_FILTERS[name])


def test_bad_filter_type_through_search(built):
    idx, x = built
    _assert_type_error(lambda: idx.search(x[0], k=2, filter="tier"), "Filter, a dict or None")
    _assert_type_error(lambda: idx.search(x[0], k=2, filter={"a": [1, 2]}.items()))


# 4. The functional API checks its arguments ---------------------------------------------------
_JIT = jax.jit(functional.search, static_argnames=("k", "n_probes"))
_JIT_ALL = jax.jit(functional.search, static_argnames=("k", "n_probes", "refine", "scan_blocks"))
_JIT_BATCH = jax.jit(
    functional.search_batch, static_argnames=("k", "n_probes", "refine", "scan_blocks")
)

_BAD_STATIC = [
    ({"k": -1, "n_probes": 2}, InvalidConfigError, "k must be >= 0"),
    ({"k": 2, "n_probes": 0}, InvalidConfigError, r"n_probes must be in \[1, 4\]"),
    ({"k": 2, "n_probes": 5}, InvalidConfigError, r"n_probes must be in \[1, 4\]"),
    ({"k": 2.0, "n_probes": 2}, InvalidArgumentError, "k must be a static int"),
    ({"k": True, "n_probes": 2}, InvalidArgumentError, "k must be a static int"),
    ({"k": 2, "n_probes": 2.5}, InvalidArgumentError, "n_probes must be a static int"),
    ({"k": 2, "n_probes": None}, InvalidArgumentError, "n_probes must be a static int"),
    ({"k": 2, "n_probes": 2, "refine": -1}, InvalidConfigError, "refine must be >= 0"),
    ({"k": 2, "n_probes": 2, "refine": 1.5}, InvalidArgumentError, "refine"),
    ({"k": 2, "n_probes": 2, "scan_blocks": 0}, InvalidConfigError, "scan_blocks must be >= 1"),
    ({"k": 2, "n_probes": 2, "scan_blocks": -3}, InvalidConfigError, "scan_blocks"),
    ({"k": 2, "n_probes": 2, "scan_blocks": "8"}, InvalidArgumentError, "scan_blocks"),
]


@pytest.mark.parametrize("how", ["eager", "jit", "batch", "batch_jit"])
@pytest.mark.parametrize("kwargs, err, match", _BAD_STATIC)
def test_functional_static_args(built, how, kwargs, err, match):
    idx, x = built
    s = idx.state
    if how == "eager":
        call = lambda: functional.search(s, x[0], **kwargs)
    elif how == "jit":
        fn = _JIT if set(kwargs) <= {"k", "n_probes"} else _JIT_ALL
        call = lambda: fn(s, x[0], **kwargs)
    elif how == "batch":
        call = lambda: functional.search_batch(s, x[:3], **kwargs)
    else:
        call = lambda: _JIT_BATCH(s, x[:3], **kwargs)
    with pytest.raises(err, match=match):
        call()


def test_functional_under_vmap_and_probe(built):
    idx, x = built
    s = idx.state
    with pytest.raises(InvalidConfigError, match="n_probes"):
        jax.vmap(lambda q: functional.search(s, q, k=2, n_probes=0))(x[:2])
    with pytest.raises(DimensionMismatchError):
        jax.vmap(lambda q: functional.search(s, q, k=2, n_probes=2))(x[:2, :4])
    with pytest.raises(InvalidConfigError, match="n_probes"):
        functional.probe(s, x[0], n_probes=9)
    with pytest.raises(InvalidConfigError, match="n_probes"):
        jax.jit(functional.probe, static_argnames="n_probes")(s, x[0], n_probes=0)
    # a traced static argument names the fix
    with pytest.raises(InvalidArgumentError, match="static_argnames"):
        jax.jit(functional.search)(s, x[0], k=2, n_probes=2)


def test_functional_query_and_mask_checks(built):
    idx, x = built
    s = idx.state
    with pytest.raises(DimensionMismatchError):
        functional.search(s, x[0, :5], k=2, n_probes=2)
    with pytest.raises(DimensionMismatchError):
        _JIT(s, x[0, :5], k=2, n_probes=2)
    with pytest.raises(DimensionMismatchError):
        functional.search_batch(s, x[:3, :5], k=2, n_probes=2)
    with pytest.raises(InvalidVectorError, match="search_batch"):
        functional.search(s, x[:2], k=2, n_probes=2)
    with pytest.raises(InvalidVectorError, match="shape"):
        _JIT_BATCH(s, x[0], k=2, n_probes=2)
    with pytest.raises(InvalidVectorError, match="dtype"):
        functional.search(s, np.array(["a"] * D), k=2, n_probes=2)
    with pytest.raises(InvalidVectorError, match="dtype"):
        functional.probe(s, x[0] > 0, n_probes=2)
    with pytest.raises(InvalidConfigError, match="filter_mask"):
        functional.search(s, x[0], k=2, n_probes=2, mask=jnp.ones((3, 3), bool))
    with pytest.raises(InvalidConfigError, match="filter_mask"):
        _JIT(s, x[0], k=2, n_probes=2, mask=jnp.ones(s.valid.shape[::-1] + (1,), bool))
    _assert_type_error(
        lambda: functional.search(s, x[0], k=2, n_probes=2, mask=jnp.ones(s.valid.shape)),
        "dtype bool",
    )
    _assert_type_error(
        lambda: functional.search(s, x[0], k=2, n_probes=2, mask=[[True]]), "bool\\[n_blocks"
    )
    _assert_type_error(lambda: functional.search(None, x[0], k=2, n_probes=2), "IvfState")
    _assert_type_error(lambda: functional.probe({"a": 1}, x[0], n_probes=2), "IvfState")
    _assert_type_error(lambda: functional.search(s, x[0], k=2.0, n_probes=2), "static int")


def test_codes_only_state_refuses_refine():
    idx, x = _build(use_pq=True, pq_subvectors=4, pq_refine_factor=0, keep_raw_vectors=False)
    s = idx.state
    with pytest.raises(InvalidConfigError, match="refine=2 needs the raw vectors"):
        functional.search(s, x[0], k=2, n_probes=2, refine=2)
    with pytest.raises(InvalidConfigError, match="refine=2 needs the raw vectors"):
        _JIT_ALL(s, x[0], k=2, n_probes=2, refine=2)
    dists = _JIT(s, x[0], k=2, n_probes=4)[0]
    assert np.isfinite(np.asarray(dists)).all()


def test_functional_valid_calls_still_agree(built):
    idx, x = built
    s = idx.state
    mask = idx.filter_mask(None)
    s1 = _JIT(s, x[5], k=4, n_probes=4, mask=mask)[1]
    s2 = _JIT(s, x[5], k=4, n_probes=4)[1]
    s3 = functional.search_batch(s, x[5:7], k=4, n_probes=np.int64(4), scan_blocks=None)[1]
    s4 = jax.jit(jax.vmap(lambda q: functional.search(s, q, k=4, n_probes=4)))(x[5:7])[1]
    np.testing.assert_array_equal(np.asarray(s1), np.asarray(s2))
    np.testing.assert_array_equal(np.asarray(s3), np.asarray(s4))
    np.testing.assert_array_equal(np.asarray(s3)[0], np.asarray(s1))
    assert idx.ids_for_slots(s1)[0] == 5
    # k = 0 is valid, and a list query works under jit too
    d0, s0 = _JIT(s, [float(v) for v in x[5]], k=0, n_probes=1)
    assert d0.shape == (0,) and s0.shape == (0,)
    assert isinstance(s, IvfState)


def test_subclassed_ids_and_metadata_are_stored_as_exact_builtins():
    # defect 3: a str subclass whose __sizeof__ raised broke the commit after the
    # state swap; now the index copies every id, key and value to its builtin type
    class Hostile(str):
        def __sizeof__(self):
            raise RuntimeError("hostile __sizeof__")

    class HostileInt(int):
        def __int__(self):
            raise RuntimeError("hostile __int__")

    x = np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32)
    idx = IvfIndex(8, "euclidean", IvfConfig(n_clusters=4, n_probes=4))
    idx.train(x)
    idx.insert_batch(range(300), x)
    idx.insert(Hostile("doc"), x[0] + 1, {Hostile("k"): Hostile("v"), "n": HostileInt(3)})
    idx.insert_batch([HostileInt(1000)], x[:1] + 2, [{"f": 1.5}])
    _vec, meta = idx.get("doc")
    assert meta == {"k": "v", "n": 3}
    assert all(type(k) is str for k in meta) and type(meta["k"]) is str and type(meta["n"]) is int
    assert idx.search(x[0] + 1, k=1, filter={"k": "v"})[0].id == "doc"
    assert 1000 in idx and len(idx) == 302
    assert idx.stats().memory_bytes > 0
