"""Spec behaviours 8-10 (behaviour.md §5, "Ids and metadata"): black-box tests."""

import numpy as np
import pytest

from iqdb_ivf_jax import (
    InvalidConfigError,
    IvfConfig,
    IvfIndex,
    NotFoundError,
)

SAMPLE = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [5.0, 5.0], [6.0, 5.0], [5.0, 6.0]], np.float32)


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
    D, I = idx.search_arrays(vecs, k=1)
    assert I.dtype == object
    assert [I[j, 0] for j in range(len(ids))] == ids
    assert [type(I[j, 0]) for j in range(len(ids))] == [type(i) for i in ids]


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


@pytest.mark.parametrize("bad", [True, False, 1.5, 1.0, None, [1], (1,), {1: 2}, np.bool_(True), np.float64(2.0)])
def test_b09_bad_id_types(bad):
    idx = make_index()
    with pytest.raises(TypeError):
        idx.insert(bad, [0.0, 0.0])
    with pytest.raises(TypeError):
        idx.insert_batch([bad], [[0.0, 0.0]])
    assert len(idx) == 0
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
    "probe", [1, "1", b"1", 0, -1, 2**64, "", b"", True, 1.5, None, [1], (1,), {}, object(), np.float32(1)]
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
