"""Spec behaviours 8-10 (docs/semantics.md §5, "Ids and metadata") and the index side of
the metadata-filter behaviours 36, 37, 39 and 40: black-box tests.

Filter oracle (37, 40): brute force over the library's exact float32 kernel
(``iqdb_ivf_jax._metrics.pairwise``) restricted to the entries a Python
predicate accepts, ranked by ``(distance, seq)``; cross-checked in float64.
"""

import numpy as np
import pytest
from _oracle import Model, assert_full_probe_matches, build
from hypothesis import given, settings
from hypothesis import strategies as st

from iqdb_ivf_jax import (
    Filter,
    Hit,
    InvalidConfigError,
    InvalidFilterError,
    IvfConfig,
    IvfIndex,
    NotFoundError,
)

SAMPLE = np.array(
    [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [5.0, 5.0], [6.0, 5.0], [5.0, 6.0]], np.float32
)


def make_index() -> IvfIndex:
    idx = IvfIndex(2, "euclidean", IvfConfig(n_clusters=2, n_probes=2, seed=3))
    idx.train(SAMPLE)
    return idx


# --------------------------------------------------------------------------- 8
def test_b08_ids_round_trip_with_types():
    idx = make_index()
    ids = [0, 2**64 - 1, "a", b"\x00", 2**63, "ünï", b"\xff\x00"]
    vecs = np.arange(2 * len(ids), dtype=np.float32).reshape(-1, 2)
    for i, v in zip(ids, vecs):
        idx.insert(i, v)
    assert len(idx) == len(ids)
    for i, v in zip(ids, vecs):
        assert i in idx
        got, meta = idx.get(i)
        np.testing.assert_array_equal(got, v)
        assert meta is None
        hits = idx.search(v, k=1)
        assert hits[0].id == i
        assert type(hits[0].id) is type(i)
        assert hits[0].distance == 0.0
    hits = idx.search([0.0, 0.0], k=len(ids))
    assert sorted(map(repr, (h.id for h in hits))) == sorted(map(repr, ids))
    for h in hits:
        assert type(h.id) in (int, str, bytes)
    # search_arrays gives the exact objects back (object array: some ids are not int < 2**63)
    _D, I = idx.search_arrays(vecs, k=1)
    assert I.dtype == object
    assert [I[j, 0] for j in range(len(ids))] == ids
    assert [type(I[j, 0]) for j in range(len(ids))] == [type(i) for i in ids]


@pytest.mark.parametrize("as_array", [True, False])
def test_b08_search_arrays_int_ids_after_wide_ids_leave(as_array):
    """search_arrays returns int64 ids while every live id is an int below 2**63,
    also after wide ids (uint64 >= 2**63, strings) were inserted and deleted, for
    ids given as an integer array (uint64 included) or as a list."""
    idx = make_index()
    vecs = np.arange(12, dtype=np.float32).reshape(-1, 2) * 3
    ids = np.array([7, 2**63 + 5, 0, 2**64 - 1, 9, 2**63 - 1], np.uint64)
    idx.insert_batch(ids if as_array else [int(i) for i in ids], vecs)
    idx.insert("s", [100.0, 100.0])
    _D, I = idx.search_arrays(vecs, k=1)
    assert I.dtype == object and [I[j, 0] for j in range(6)] == [int(i) for i in ids]
    for wide in (2**63 + 5, 2**64 - 1, "s"):
        idx.delete(wide)
    _D, I = idx.search_arrays(vecs, k=2)
    assert I.dtype == np.int64
    assert I[[0, 2, 4, 5], 0].tolist() == [7, 0, 9, 2**63 - 1]
    assert idx.search_arrays([[1e6, 1e6]], k=10)[1].tolist()[0][4:] == [-1] * 6
    idx.insert_batch(np.array([11, 12], np.int8), [[50.0, 50.0], [51.0, 51.0]])
    assert idx.search_arrays([[50.0, 50.0]], k=1)[1].tolist() == [[11]]


def test_b08_int_str_bytes_are_distinct_ids():
    idx = make_index()
    idx.insert(1, [0.0, 0.0])
    idx.insert("1", [1.0, 0.0])
    idx.insert(b"1", [0.0, 1.0])
    assert len(idx) == 3
    np.testing.assert_array_equal(idx.get(1)[0], [0.0, 0.0])
    np.testing.assert_array_equal(idx.get("1")[0], [1.0, 0.0])
    np.testing.assert_array_equal(idx.get(b"1")[0], [0.0, 1.0])
    hits = idx.search([0.0, 0.0], k=3)
    assert [h.id for h in hits] == [1, "1", b"1"]  # distance 0, then two ties at 1 by seq
    assert [type(h.id) for h in hits] == [int, str, bytes]
    idx.delete("1")
    assert 1 in idx and b"1" in idx and "1" not in idx
    assert len(idx) == 2


def test_b08_numpy_integers_become_int():
    idx = make_index()
    idx.insert(np.int64(7), [0.0, 0.0])
    idx.insert(np.uint64(2**64 - 1), [1.0, 1.0])
    idx.insert_batch(np.array([8, 9], np.int32), np.ones((2, 2), np.float32))
    assert 7 in idx and np.int64(7) in idx and np.uint8(8) in idx
    hits = idx.search([0.0, 0.0], k=4)
    assert {h.id for h in hits} == {7, 8, 9, 2**64 - 1}
    for h in hits:
        assert type(h.id) is int
    idx.delete(np.int16(7))
    assert 7 not in idx


# --------------------------------------------------------------------------- 9
@pytest.mark.parametrize("bad", [-1, 2**64, 2**70, "", b""])
def test_b09_bad_id_values(bad):
    idx = make_index()
    with pytest.raises(InvalidConfigError):
        idx.insert(bad, [0.0, 0.0])
    with pytest.raises(InvalidConfigError):
        idx.insert_batch([bad], [[0.0, 0.0]])
    assert len(idx) == 0
    assert bad not in idx
    # delete/get: id validity is checked before absence
    with pytest.raises(InvalidConfigError):
        idx.delete(bad)
    with pytest.raises(InvalidConfigError):
        idx.get(bad)


@pytest.mark.parametrize(
    "bad", [True, False, 1.5, 1.0, None, [1], (1,), {1: 2}, np.bool_(True), np.float64(2.0)]
)
def test_b09_bad_id_types(bad):
    idx = make_index()
    with pytest.raises(TypeError):
        idx.insert(bad, [0.0, 0.0])
    with pytest.raises(TypeError):
        idx.insert_batch([bad], [[0.0, 0.0]])
    assert len(idx) == 0
    if isinstance(bad, (list, tuple)):  # delete takes a sequence of ids (semantics §6)
        with pytest.raises(NotFoundError):
            idx.delete(bad)
    else:
        with pytest.raises(TypeError):
            idx.delete(bad)
    with pytest.raises(TypeError):
        idx.get(bad)


@pytest.mark.parametrize("bad_meta", [[1], ["a", "b"], ("k", "v"), "tier=hot", 5])
def test_b09_metadata_not_a_dict(bad_meta):
    idx = make_index()
    with pytest.raises(TypeError):
        idx.insert(1, [0.0, 0.0], bad_meta)
    assert len(idx) == 0 and 1 not in idx


def test_b09_metadata_values():
    idx = make_index()
    with pytest.raises(TypeError, match="colours"):
        idx.insert(1, [0.0, 0.0], {"colours": ["red"]})
    with pytest.raises(TypeError, match="nested"):
        idx.insert(1, [0.0, 0.0], {"nested": {"a": 1}})
    with pytest.raises(TypeError, match="raw"):
        idx.insert(1, [0.0, 0.0], {"raw": b"bytes"})
    with pytest.raises(InvalidConfigError):
        idx.insert(1, [0.0, 0.0], {"big": 2**63})
    with pytest.raises(InvalidConfigError):
        idx.insert(1, [0.0, 0.0], {"small": -(2**63) - 1})
    assert len(idx) == 0
    ok = {"s": "x", "i": -(2**63), "j": 2**63 - 1, "f": 1.5, "b": True, "n": None}
    idx.insert(1, [0.0, 0.0], ok)
    assert idx.get(1)[1] == ok
    hit = idx.search([0.0, 0.0], k=1)[0]
    assert hit.metadata == ok
    assert type(hit.metadata["b"]) is bool and type(hit.metadata["i"]) is int


def test_b09_check_order_id_before_metadata_before_vector():
    idx = make_index()
    # a bad id value wins over bad metadata
    with pytest.raises(InvalidConfigError):
        idx.insert(-1, [0.0, 0.0], metadata=[1])
    # bad metadata wins over a wrong-length vector
    with pytest.raises(TypeError):
        idx.insert(5, [0.0, 0.0, 0.0], metadata=[1])


# -------------------------------------------------------------------------- 10
def test_b10_metadata_copied_in_and_out():
    idx = make_index()
    meta = {"tier": "hot", "n": 1}
    idx.insert("x", [1.0, 2.0], meta)
    meta["tier"] = "cold"
    meta["extra"] = True
    assert idx.get("x")[1] == {"tier": "hot", "n": 1}

    _, got = idx.get("x")
    got["tier"] = "mutated"
    got.clear()
    assert idx.get("x")[1] == {"tier": "hot", "n": 1}
    assert idx.get("x")[1] is not idx.get("x")[1]

    hit = idx.search([1.0, 2.0], k=1)[0]
    hit.metadata["tier"] = "mutated"
    assert idx.search([1.0, 2.0], k=1)[0].metadata == {"tier": "hot", "n": 1}
    assert idx.get("x")[1] == {"tier": "hot", "n": 1}
    # filters see the stored copy
    assert [h.id for h in idx.search([1.0, 2.0], k=1, filter={"tier": "hot"})] == ["x"]

    metas = [{"a": 1}, {"a": 2}]
    idx.insert_batch(["b1", "b2"], [[0.0, 0.0], [1.0, 1.0]], metas)
    metas[0]["a"] = 99
    metas.append({"a": 3})
    assert idx.get("b1")[1] == {"a": 1}


def test_b10_vectors_copied_in_and_out():
    idx = make_index()
    v = np.array([1.0, 2.0], np.float32)
    idx.insert(1, v)
    v[:] = 100.0
    got, _ = idx.get(1)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, [1.0, 2.0])
    got[:] = -5.0
    np.testing.assert_array_equal(idx.get(1)[0], [1.0, 2.0])
    assert idx.search([1.0, 2.0], k=1)[0].distance == 0.0
    batch = np.array([[3.0, 3.0], [4.0, 4.0]])
    idx.insert_batch([2, 3], batch)
    batch[:] = 0
    np.testing.assert_array_equal(idx.get(3)[0], [4.0, 4.0])


def test_b10_empty_dict_and_none_are_distinct():
    idx = make_index()
    idx.insert(1, [0.0, 0.0], {})
    idx.insert(2, [1.0, 1.0], None)
    idx.insert(3, [2.0, 2.0])
    assert idx.get(1)[1] == {}
    assert idx.get(2)[1] is None
    assert idx.get(3)[1] is None
    hits = {h.id: h.metadata for h in idx.search([0.0, 0.0], k=3)}
    assert hits[1] == {} and hits[2] is None and hits[3] is None


@pytest.mark.parametrize(
    "probe",
    [1, "1", b"1", 0, -1, 2**64, "", b"", True, 1.5, None, [1], (1,), {}, object(), np.float32(1)],
)
def test_b10_contains_never_raises(probe):
    untrained = IvfIndex(2, "euclidean", IvfConfig(n_clusters=2, n_probes=2))
    assert (probe in untrained) is False
    idx = make_index()
    idx.insert(1, [0.0, 0.0])
    expected = isinstance(probe, int) and not isinstance(probe, bool) and probe == 1
    assert (probe in idx) is expected


def test_b10_get_absent_and_untrained():
    untrained = IvfIndex(2, "euclidean", IvfConfig(n_clusters=2, n_probes=2))
    with pytest.raises(NotFoundError):
        untrained.get(1)
    idx = make_index()
    with pytest.raises(NotFoundError) as ei:
        idx.get("missing")
    assert ei.value.id == "missing"


# -------------------------------------------------------------------------- 36
def test_b36_filter_missing_metadata():
    idx = make_index()
    idx.insert(1, [0.0, 0.0])
    idx.insert(2, [1.0, 1.0], {"tier": "hot"})
    assert [h.id for h in idx.search([0.0, 0.0], k=1)] == [1]
    assert [h.id for h in idx.search([0.0, 0.0], k=1, filter=Filter.eq("tier", "hot"))] == [2]
    assert [h.id for h in idx.search([0.0, 0.0], k=5, filter={"tier": "hot"})] == [2]
    hit = idx.search([0.0, 0.0], k=5, filter={"tier": "hot"})[0]
    assert hit.metadata == {"tier": "hot"}
    assert idx.search([0.0, 0.0], k=5, filter=Filter.neq("tier", "cold")) == [
        Hit(2, hit.distance, {"tier": "hot"})
    ]
    assert [
        h.id for h in idx.search([0.0, 0.0], k=5, filter=Filter.not_(Filter.eq("tier", "hot")))
    ] == [1]


# -------------------------------------------------------------------------- 37
COLOURS = ["red", "green", "blue"]


@pytest.fixture(scope="module")
def coloured():
    rng = np.random.default_rng(37)
    x = rng.normal(0, 3, (384, 4)).astype(np.float32)
    metas = []
    for i in range(384):
        r = rng.random()
        if r < 0.05:
            metas.append(None)
        elif r < 0.1:
            metas.append({})
        else:
            metas.append(
                {
                    "colour": COLOURS[int(rng.integers(3))],
                    "year": int(rng.integers(2000, 2021)),
                    "uid": i,
                }
            )
    m = Model()
    idx = build("euclidean", x, 6, metas=metas, model=m, n_probes=6)
    return idx, x, m, rng.normal(0, 3, (8, 4)).astype(np.float32)


def blue_after_2010(meta):
    return bool(meta) and meta.get("colour") == "blue" and meta.get("year", 0) > 2010


def test_b37_filtered_full_probe_equals_oracle(coloured):
    idx, _x, m, queries = coloured
    f = Filter.and_(Filter.eq("colour", "blue"), Filter.gt("year", 2010))
    as_dict = {"colour": "blue", "year": {"$gt": 2010}}
    n_match = sum(blue_after_2010(e[2]) for e in m.entries.values())
    assert n_match > 8
    for q in queries:
        hits = idx.search(q, k=8, filter=f)
        assert len(hits) == 8
        assert_full_probe_matches(hits, m, q, "euclidean", 8, pred=blue_after_2010)
        assert idx.search(q, k=8, filter=as_dict) == hits
        for h in hits:
            assert blue_after_2010(h.metadata)
    _D, I = idx.search_arrays(queries, k=8, filter=f)
    assert [row.tolist() for row in I] == [
        [h.id for h in idx.search(q, k=8, filter=f)] for q in queries
    ]
    assert idx.search_batch(queries, k=8, filter=f) == [
        idx.search(q, k=8, filter=f) for q in queries
    ]


# -------------------------------------------------------------------------- 39
def nested_not(depth):
    f = Filter.eq("colour", "red")
    for _ in range(depth):
        f = Filter.not_(f)
    return f


def test_b39_filter_limits_at_index(coloured):
    idx, _x, _m, queries = coloured
    q = queries[0]
    deep64 = nested_not(64)  # even depth: same as Eq
    assert idx.search(q, k=8, filter=deep64) == idx.search(
        q, k=8, filter=Filter.eq("colour", "red")
    )
    with pytest.raises(InvalidFilterError):
        idx.search(q, k=8, filter=nested_not(65))
    with pytest.raises(InvalidFilterError):
        idx.search_batch(queries[:2], k=8, filter=nested_not(65))
    with pytest.raises(InvalidFilterError):
        idx.search_arrays(queries[:2], k=8, filter=nested_not(65))
    ok = Filter.is_in("uid", list(range(1024)))
    assert len(idx.search(q, k=8, filter=ok)) == 8
    with pytest.raises(InvalidFilterError):
        idx.search(q, k=8, filter=Filter.is_in("uid", list(range(1025))))
    with pytest.raises(InvalidFilterError):
        idx.search(q, k=8, filter={"uid": {"$in": list(range(1025))}})


def test_b39_over_limit_filter_raises_even_when_k0_or_empty(coloured):
    # our decision (semantics §3.3): the reference let an over-limit filter pass
    # when k == 0 or the index was empty; we check the limits on every call
    idx, x, _m, queries = coloured
    bad = [nested_not(65), Filter.is_in("uid", list(range(1025)))]
    empty = IvfIndex(4, "euclidean", IvfConfig(n_clusters=6, n_probes=6, seed=7))
    empty.train(x)
    for f in bad:
        with pytest.raises(InvalidFilterError):
            idx.search(queries[0], k=0, filter=f)
        with pytest.raises(InvalidFilterError):
            idx.search_batch(queries[:2], k=0, filter=f)
        with pytest.raises(InvalidFilterError):
            idx.search_arrays(queries[:2], k=0, filter=f)
        with pytest.raises(InvalidFilterError):
            empty.search(queries[0], k=8, filter=f)
        with pytest.raises(InvalidFilterError):
            empty.search_arrays(queries[:2], k=8, filter=f)
    assert idx.search(queries[0], k=0, filter=Filter.eq("colour", "red")) == []
    # a malformed dict is a call-shape error, raised first
    with pytest.raises(InvalidFilterError):
        empty.search(queries[0], k=0, filter={"a": {"$regex": "x"}})


# -------------------------------------------------------------------------- 40
FILTERS = [
    (Filter.eq("colour", "red"), lambda md: bool(md) and md.get("colour") == "red"),
    (
        Filter.or_(Filter.eq("colour", "green"), Filter.lt("year", 2005)),
        lambda md: (
            bool(md) and (md.get("colour") == "green" or ("year" in md and md["year"] < 2005))
        ),
    ),
    (
        Filter.not_(Filter.eq("colour", "blue")),
        lambda md: not (bool(md) and md.get("colour") == "blue"),
    ),
    (
        Filter.is_in("year", [2001, 2003, 2019]),
        lambda md: bool(md) and md.get("year") in (2001, 2003, 2019),
    ),
    (
        Filter.and_(Filter.gte("year", 2010), Filter.neq("colour", "red")),
        lambda md: (
            bool(md) and "colour" in md and md.get("year", 0) >= 2010 and md["colour"] != "red"
        ),
    ),
]


@settings(max_examples=25, deadline=None)
@given(
    fi=st.integers(0, len(FILTERS) - 1),
    k=st.just(8),  # one k: few compilations (b40 selective covers k > matches)
    n_probes=st.sampled_from((2, 6)),
    qi=st.integers(0, 7),
)
def test_b40_property_filtered_subset_of_candidates(coloured, fi, k, n_probes, qi):
    idx, _x, m, queries = coloured
    f, pred = FILTERS[fi]
    q = queries[qi]
    idx.set_n_probes(n_probes)
    try:
        candidates = idx.search(q, k=len(m.entries))  # every entry of the probed lists
        hits = idx.search(q, k=k, filter=f)
    finally:
        idx.set_n_probes(6)
    cand_ids = [h.id for h in candidates]
    got = [h.id for h in hits]
    assert set(got) <= set(cand_ids)
    for h in hits:
        assert pred(h.metadata)
        assert f.evaluate(h.metadata)
    # exactly the predicate's survivors among the candidates, in candidate order
    expect = [h for h in candidates if pred(m.entries[h.id][2])][:k]
    assert hits == expect


def test_b40_selective_filter_returns_fewer_than_k(coloured):
    idx, _x, m, queries = coloured
    target = next(i for i, e in m.entries.items() if e[2] and "uid" in e[2])
    hits = idx.search(queries[0], k=10, filter={"uid": target})
    assert [h.id for h in hits] == [target]
    assert idx.search(queries[0], k=10, filter={"colour": "purple"}) == []
    # probes are never widened: one probe, a filter only matching entries elsewhere
    idx.set_n_probes(1)
    try:
        cands = {h.id for h in idx.search(queries[1], k=len(m.entries))}
        outside = next(i for i, e in m.entries.items() if i not in cands and e[2] and "uid" in e[2])
        assert idx.search(queries[1], k=10, filter={"uid": outside}) == []
    finally:
        idx.set_n_probes(6)
