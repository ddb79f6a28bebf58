"""Tests of `iqdb_ivf_jax._filter`: nodes, typed closed-world semantics, limits, from_dict."""

import dataclasses
import doctest
import math
import operator
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iqdb_ivf_jax import _filter
from iqdb_ivf_jax._errors import InvalidFilterError, IqdbError
from iqdb_ivf_jax._filter import (
    And,
    Eq,
    Filter,
    Gt,
    Gte,
    In,
    Lt,
    Lte,
    Neq,
    Not,
    Or,
    as_filter,
    filter_mask,
)

NAN = float("nan")


def nest_not(depth: int, leaf: Filter | None = None) -> Filter:
    f = leaf if leaf is not None else Filter.eq("x", 1)
    for _ in range(depth):
        f = Not(f)
    return f


# Construction -------------------------------------------------------------------------------
def test_doctests():
    result = doctest.testmod(_filter)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("cls", [Eq, Neq, Lt, Lte, Gt, Gte])
def test_leaf_fields(cls):
    f = cls("year", 2020)
    assert (f.field, f.value) == ("year", 2020)
    assert isinstance(f, Filter)
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.value = 3


@pytest.mark.parametrize(
    "build, cls",
    [
        (Filter.eq, Eq),
        (Filter.neq, Neq),
        (Filter.lt, Lt),
        (Filter.lte, Lte),
        (Filter.gt, Gt),
        (Filter.gte, Gte),
    ],
)
def test_builders(build, cls):
    assert build("a", "v") == cls("a", "v")
    assert type(build("a", "v")) is cls


def test_field_must_be_str():
    for bad in (1, None, b"a", ("a",)):
        with pytest.raises(TypeError, match="field"):
            Filter.eq(bad, 1)
        with pytest.raises(TypeError, match="field"):
            Filter.is_in(bad, [1])


@pytest.mark.parametrize("bad", [b"x", [1], {"a": 1}, {1}, object(), 1j])
def test_value_types_rejected(bad):
    with pytest.raises(TypeError, match="'tier'"):
        Filter.eq("tier", bad)
    with pytest.raises(TypeError, match="'tier'"):
        Filter.is_in("tier", ["ok", bad])


def test_numpy_scalars_become_python_values():
    f = Filter.eq("x", np.int64(2**53 + 1))
    assert type(f.value) is int and f.value == 2**53 + 1
    assert type(Filter.eq("x", np.float32(0.5)).value) is float
    assert type(Filter.eq("x", np.bool_(True)).value) is bool
    assert Filter.is_in("x", [np.int32(1)]).values == (1,)


def test_in_stores_tuple():
    assert Filter.is_in("c", ["red", "green"]).values == ("red", "green")
    assert Filter.is_in("c", ("red",)) == In("c", ["red"])
    assert Filter.is_in("c", []).values == ()
    for bad in ("red", {"red"}, None, iter(["red"])):
        with pytest.raises(TypeError, match="list or tuple"):
            Filter.is_in("c", bad)


def test_combinator_children_must_be_filters():
    a = Filter.eq("a", 1)
    assert And([a]).filters == (a,)
    with pytest.raises(TypeError):
        And((a, {"b": 1}))
    with pytest.raises(TypeError):
        Or([a, "b"])
    with pytest.raises(TypeError):
        Not({"a": 1})
    with pytest.raises(TypeError):
        And(a)


def test_and_or_varargs_and_sequence():
    a, b = Filter.eq("a", 1), Filter.gt("b", 2)
    assert Filter.and_([a, b]) == Filter.and_(a, b) == Filter.and_((a, b)) == And((a, b))
    assert Filter.or_([a, b]) == Filter.or_(a, b) == Or((a, b))
    assert Filter.or_([]) == Filter.or_() == Or(())
    assert Filter.and_([]) == Filter.and_() == And(())
    assert Filter.not_(a) == Not(a)
    # A dict works where a Filter does in the builders.
    assert Filter.and_({"a": 1}, b) == Filter.and_(a, b)
    assert Filter.not_({"a": 1}) == Not(a)
    with pytest.raises(TypeError):
        Filter.and_(a, 3)


# Equality and hashing ----------------------------------------------------------------------
def test_structural_equality_and_hash():
    f1 = Filter.and_(Filter.eq("a", 1), Filter.or_(Filter.is_in("b", [1, "x"]), Filter.lt("c", 2)))
    f2 = Filter.and_(Filter.eq("a", 1), Filter.or_(Filter.is_in("b", (1, "x")), Filter.lt("c", 2)))
    assert f1 == f2 and hash(f1) == hash(f2)
    assert len({f1, f2, Filter.eq("a", 1)}) == 2
    assert Filter.eq("a", 1) != Filter.neq("a", 1)
    assert Filter.eq("a", 1) != Filter.eq("b", 1)
    assert And(()) != Or(())
    assert Filter.and_(Filter.eq("a", 1)) != Filter.eq("a", 1)


def test_equality_follows_kinds():
    assert Filter.eq("x", 1) == Filter.eq("x", 1.0)  # same semantics
    assert hash(Filter.eq("x", 1)) == hash(Filter.eq("x", 1.0))
    assert Filter.eq("x", 1) != Filter.eq("x", True)  # different semantics
    assert Filter.eq("x", 0) != Filter.eq("x", False)
    assert Filter.is_in("x", [1]) != Filter.is_in("x", [True])
    assert Filter.eq("x", "1") != Filter.eq("x", 1)
    assert Filter.eq("x", NAN) == Filter.eq("x", float("nan"))
    assert hash(Filter.eq("x", NAN)) == hash(Filter.eq("x", float("nan")))


def test_dict_equals_its_filter():
    f = Filter.and_(Filter.eq("tier", "hot"), Filter.gte("year", 2020))
    d = {"tier": "hot", "year": {"$gte": 2020}}
    assert Filter.from_dict(d) == f
    assert f == d and d == f
    assert f != {"tier": "cold"}
    assert f != {"$bad": 1}  # malformed dicts are simply unequal
    assert f != 3 and f != "tier"


def test_pickle_round_trip_after_evaluation():
    f = Filter.from_dict({"a": {"$in": [1, 2]}, "$not": {"c": {"$lt": 3}}})
    assert f.evaluate({"a": 1}) and not f.evaluate({"a": 1, "c": 0})  # caches leaf tests
    g = pickle.loads(pickle.dumps(f))
    assert g == f and hash(g) == hash(f)
    assert g.evaluate({"a": 2}) is True and g.evaluate({"a": 2, "c": 2}) is False


def test_repr():
    assert repr(Filter.eq("tier", "hot")) == "Eq(field='tier', value='hot')"
    assert repr(Filter.is_in("y", [1])) == "In(field='y', values=(1,))"


# Semantics -----------------------------------------------------------------------------------
# (filter, metadata, expected): the typed closed-world table of docs/semantics.md §3.4 and §4e.
SEMANTICS = [
    # Missing data: every leaf False, Neq and In included; Not inverts.
    (Filter.eq("x", 1), None, False),
    (Filter.eq("x", 1), {}, False),
    (Filter.neq("x", 1), {}, False),
    (Filter.neq("x", 1), None, False),
    (Filter.neq("x", 1), {"y": 2}, False),
    (Filter.is_in("x", [1]), {"y": 1}, False),
    (Filter.lte("x", None), {}, False),
    (Filter.not_(Filter.eq("x", 1)), {"y": 1}, True),
    (Filter.not_(Filter.eq("x", 1)), None, True),
    (Filter.not_(Filter.neq("x", 1)), {}, True),
    # Empty combinators.
    (Filter.and_(), None, True),
    (Filter.or_(), None, False),
    (Filter.and_(), {"x": 1}, True),
    (Filter.or_(), {"x": 1}, False),
    (Filter.not_(Filter.or_()), None, True),
    # Eq: same kind and equal value.
    (Filter.eq("x", 1.0), {"x": 1}, True),
    (Filter.eq("x", 1), {"x": 1.0}, True),
    (Filter.eq("x", 1), {"x": True}, False),
    (Filter.eq("x", True), {"x": 1}, False),
    (Filter.eq("x", 0), {"x": False}, False),
    (Filter.eq("x", True), {"x": True}, True),
    (Filter.eq("x", 2026), {"x": "2026"}, False),
    (Filter.eq("x", "2026"), {"x": 2026}, False),
    (Filter.eq("x", None), {"x": None}, True),
    (Filter.eq("x", None), {"x": 0}, False),
    (Filter.eq("x", None), {"x": ""}, False),
    (Filter.eq("x", 2**53 + 1), {"x": 2.0**53}, False),
    (Filter.eq("x", 2.0**53), {"x": 2**53 + 1}, False),
    (Filter.eq("x", 2**53), {"x": 2.0**53}, True),
    (Filter.eq("x", 10**30), {"x": 10**30}, True),
    (Filter.eq("x", NAN), {"x": NAN}, False),
    (Filter.eq("x", 0.0), {"x": -0.0}, True),
    (Filter.eq("x", math.inf), {"x": math.inf}, True),
    (Filter.eq("x", "é"), {"x": "é"}, True),
    # Neq = present and not Eq, types included.
    (Filter.neq("x", "1"), {"x": 1}, True),
    (Filter.neq("x", 1), {"x": True}, True),
    (Filter.neq("x", 1), {"x": 1.0}, False),
    (Filter.neq("x", NAN), {"x": NAN}, True),
    (Filter.neq("x", None), {"x": None}, False),
    (Filter.neq("x", None), {"x": 0}, True),
    # In = present and Eq to some value.
    (Filter.is_in("x", ["red", "green"]), {"x": "red"}, True),
    (Filter.is_in("x", ["red", "green"]), {"x": "blue"}, False),
    (Filter.is_in("x", [1, 2]), {"x": 2.0}, True),
    (Filter.is_in("x", [1, 2]), {"x": True}, False),
    (Filter.is_in("x", [True]), {"x": 1}, False),
    (Filter.is_in("x", [None]), {"x": None}, True),
    (Filter.is_in("x", [NAN]), {"x": NAN}, False),
    (Filter.is_in("x", [2**53 + 1]), {"x": 2.0**53}, False),
    (Filter.is_in("x", []), {"x": 1}, False),
    # Ordered leaves: numbers.
    (Filter.gt("x", 2010), {"x": 2011}, True),
    (Filter.gt("x", 2010), {"x": 2010.5}, True),
    (Filter.gt("x", 2010), {"x": 2010}, False),
    (Filter.gte("x", 2010), {"x": 2010.0}, True),
    (Filter.lt("x", 2.0**53), {"x": 2**53 + 1}, False),
    (Filter.gt("x", 2.0**53), {"x": 2**53 + 1}, True),
    (Filter.lt("x", 1), {"x": -math.inf}, True),
    (Filter.lt("x", 1), {"x": NAN}, False),
    (Filter.gte("x", 1), {"x": NAN}, False),
    (Filter.lt("x", NAN), {"x": 1}, False),
    (Filter.gte("x", NAN), {"x": NAN}, False),
    # Ordered leaves: str by code point, bool False < True, None vs None equal.
    (Filter.lt("x", "b"), {"x": "a"}, True),
    (Filter.lt("x", "b"), {"x": "B"}, True),
    (Filter.lt("x", "Z"), {"x": "a"}, False),
    (Filter.gt("x", "\uffff"), {"x": "\U0001f600"}, True),
    (Filter.lte("x", "abc"), {"x": "abc"}, True),
    (Filter.lt("x", True), {"x": False}, True),
    (Filter.gt("x", False), {"x": True}, True),
    (Filter.lt("x", False), {"x": False}, False),
    (Filter.lte("x", None), {"x": None}, True),
    (Filter.gte("x", None), {"x": None}, True),
    (Filter.lt("x", None), {"x": None}, False),
    (Filter.gt("x", None), {"x": None}, False),
    # Ordered leaves: mixed kinds are False both ways.
    (Filter.lt("x", 5), {"x": True}, False),
    (Filter.gte("x", 0), {"x": False}, False),
    (Filter.lt("x", True), {"x": 0}, False),
    (Filter.lt("x", "5"), {"x": 1}, False),
    (Filter.gt("x", 1), {"x": "5"}, False),
    (Filter.lte("x", None), {"x": 0}, False),
    (Filter.gte("x", 0), {"x": None}, False),
    # NumPy scalars in metadata behave as Python values (exactly).
    (Filter.eq("x", 2**53 + 1), {"x": np.int64(2**53 + 1)}, True),
    (Filter.eq("x", 2.0**53), {"x": np.int64(2**53 + 1)}, False),
    (Filter.eq("x", 1), {"x": np.bool_(True)}, False),
    (Filter.is_in("x", [0.5]), {"x": np.float32(0.5)}, True),
    # Unsupported values are present but match no leaf except Neq.
    (Filter.eq("x", 1), {"x": [1]}, False),
    (Filter.neq("x", 1), {"x": [1]}, True),
    (Filter.is_in("x", [1]), {"x": [1]}, False),
    (Filter.lt("x", 1), {"x": [0]}, False),
]


@pytest.mark.parametrize("f, metadata, expected", SEMANTICS)
def test_semantics_table(f, metadata, expected):
    assert f.evaluate(metadata) is expected
    assert filter_mask(f, [metadata]).tolist() == [expected]


def test_reference_41_closed_world():
    record = {"year": 2026}
    assert Filter.neq("tier", "hot").evaluate(record) is False
    assert Filter.not_(Filter.eq("tier", "hot")).evaluate(record) is True
    assert Filter.eq("year", "2026").evaluate(record) is False
    assert Filter.and_().evaluate(record) is True
    assert Filter.or_().evaluate(record) is False


def test_reference_42_typing():
    assert Filter.eq("x", 1.0).evaluate({"x": 1})
    assert not Filter.eq("x", 1).evaluate({"x": True})
    assert Filter.neq("x", "1").evaluate({"x": 1})
    assert Filter.lte("x", None).evaluate({"x": None})


def test_combinators_evaluate():
    blue_recent = Filter.and_(Filter.eq("colour", "blue"), Filter.gt("year", 2010))
    assert blue_recent.evaluate({"colour": "blue", "year": 2011})
    assert not blue_recent.evaluate({"colour": "blue", "year": 2010})
    assert not blue_recent.evaluate({"colour": "blue"})
    either = Filter.or_(Filter.eq("a", 1), Filter.eq("b", 1))
    assert [either.evaluate(m) for m in ({"a": 1}, {"b": 1}, {"a": 2}, None)] == [
        True,
        True,
        False,
        False,
    ]


def test_evaluate_does_not_touch_metadata():
    m = {"x": 1}
    Filter.from_dict({"x": {"$in": [1]}, "y": {"$ne": 2}}).evaluate(m)
    assert m == {"x": 1}


# Limits ---------------------------------------------------------------------------------------
def test_depth_limit_not_chain():
    nest_not(64).validate()
    with pytest.raises(InvalidFilterError, match="64"):
        nest_not(65).validate()


def test_depth_counts_and_or_and_leaves_add_nothing():
    f = Filter.eq("x", 1)
    for i in range(64):
        f = Filter.and_(f) if i % 2 else Filter.or_(f, Filter.eq("y", 2))
    f.validate()
    with pytest.raises(InvalidFilterError, match="depth"):
        Filter.not_(f).validate()
    Filter.eq("x", 1).validate()
    Filter.and_().validate()
    nest_not(63, Filter.and_()).validate()  # an empty And adds 1 too: depth 64
    with pytest.raises(InvalidFilterError):
        nest_not(64, Filter.and_()).validate()


def test_in_size_limit():
    Filter.is_in("x", list(range(1024))).validate()
    with pytest.raises(InvalidFilterError, match="1024") as info:
        Filter.is_in("x", list(range(1025))).validate()
    assert "'x'" in str(info.value) and "Or" in str(info.value)
    with pytest.raises(InvalidFilterError):  # found anywhere in the tree
        Filter.and_(Filter.eq("a", 1), Filter.not_(Filter.is_in("x", [0] * 1025))).validate()


def test_limit_errors_are_value_errors():
    with pytest.raises(IqdbError):
        nest_not(65).validate()
    with pytest.raises(ValueError):
        nest_not(65).validate()


def test_very_deep_trees_are_handled_iteratively():
    deep = nest_not(20_001)  # odd: matches what the leaf does not
    assert deep.evaluate({"x": 2}) is True
    assert deep.evaluate({"x": 1}) is False
    assert filter_mask(deep, [{"x": 2}, {"x": 1}, None]).tolist() == [True, False, True]
    with pytest.raises(InvalidFilterError):
        deep.validate()
    wide_deep = Filter.eq("x", 1)
    for _ in range(5_000):
        wide_deep = Filter.or_(Filter.eq("y", 0), wide_deep)
    assert wide_deep.evaluate({"x": 1}) and not wide_deep.evaluate({"x": 2})


# from_dict ------------------------------------------------------------------------------------
FROM_DICT = [
    ({"tier": "hot"}, Filter.eq("tier", "hot")),
    ({"n": None}, Filter.eq("n", None)),
    (
        {"year": {"$gte": 2020, "$lt": 2025}},
        Filter.and_(Filter.gte("year", 2020), Filter.lt("year", 2025)),
    ),
    (
        {"year": {"$lt": 2025, "$gte": 2020}},
        Filter.and_(Filter.lt("year", 2025), Filter.gte("year", 2020)),
    ),
    ({"a": 1, "b": 2}, Filter.and_(Filter.eq("a", 1), Filter.eq("b", 2))),
    ({"b": 2, "a": 1}, Filter.and_(Filter.eq("b", 2), Filter.eq("a", 1))),
    ({}, Filter.and_()),
    ({"x": {"$eq": 1}}, Filter.eq("x", 1)),
    ({"x": {"$ne": 1}}, Filter.neq("x", 1)),
    ({"x": {"$lt": 1}}, Filter.lt("x", 1)),
    ({"x": {"$lte": 1}}, Filter.lte("x", 1)),
    ({"x": {"$gt": 1}}, Filter.gt("x", 1)),
    ({"x": {"$gte": 1}}, Filter.gte("x", 1)),
    ({"x": {"$in": ["a", "b"]}}, Filter.is_in("x", ["a", "b"])),
    ({"x": {"$in": ()}}, Filter.is_in("x", [])),
    ({"$and": [{"a": 1}, {"b": 2}]}, Filter.and_(Filter.eq("a", 1), Filter.eq("b", 2))),
    ({"$or": [{"a": 1}, {"b": 2}]}, Filter.or_(Filter.eq("a", 1), Filter.eq("b", 2))),
    ({"$or": []}, Filter.or_()),
    ({"$and": []}, Filter.and_()),
    ({"$not": {"a": 1}}, Filter.not_(Filter.eq("a", 1))),
    ({"$not": {}}, Filter.not_(Filter.and_())),
    (
        {
            "c": "red",
            "$or": [{"y": {"$gt": 1, "$ne": 5}}, {"$not": {"z": None}}],
            "d": {"$in": [1]},
        },
        Filter.and_(
            Filter.eq("c", "red"),
            Filter.or_(
                Filter.and_(Filter.gt("y", 1), Filter.neq("y", 5)),
                Filter.not_(Filter.eq("z", None)),
            ),
            Filter.is_in("d", [1]),
        ),
    ),
]


@pytest.mark.parametrize("d, expected", FROM_DICT)
def test_from_dict(d, expected):
    got = Filter.from_dict(d)
    assert got == expected and type(got) is type(expected)
    assert repr(got) == repr(expected)
    assert as_filter(d) == expected


@pytest.mark.parametrize(
    "d, match",
    [
        ({"x": {"$regex": "^a"}}, r"\$regex"),
        ({"$regex": "^a"}, r"\$regex"),
        ({"$eq": 1}, r"\$eq"),
        ({"$nor": [{"a": 1}]}, r"\$nor"),
        ({"x": {}}, "empty"),
        ({"x": [1, 2]}, r"\$in"),
        ({"x": (1, 2)}, r"\$in"),
        ({"x": {1, 2}}, r"\$in"),
        ({"x": {"a": 1}}, "nested"),
        ({"x": {"$eq": 1, "a": 1}}, "nested"),
        ({"x": {"$eq": [1]}}, "'x'"),
        ({"x": {"$eq": {"a": 1}}}, "nested"),
        ({"x": {"$in": 1}}, r"\$in"),
        ({"x": {"$in": "ab"}}, r"\$in"),
        ({"x": {"$in": [[1]]}}, "'x'"),
        ({"x": {"$not": {"$gt": 1}}}, r"\$not"),
        ({"$and": {"a": 1}}, r"\$and"),
        ({"$and": [1]}, r"\$and"),
        ({"$or": "a"}, r"\$or"),
        ({"$or": [{"a": 1}, [{"b": 1}]]}, r"\$or"),
        ({"$not": [{"a": 1}]}, r"\$not"),
        ({"$not": 1}, r"\$not"),
        ({1: "a"}, "str"),
        ({"x": {1: 2}}, "nested"),
        ({"$and": [{"a": {"$foo": 1}}]}, r"\$foo"),
    ],
)
def test_from_dict_malformed(d, match):
    with pytest.raises(InvalidFilterError, match=match):
        Filter.from_dict(d)
    with pytest.raises(InvalidFilterError):
        as_filter(d)


def test_from_dict_type_errors():
    for bad in (None, [("a", 1)], "a", Filter.eq("a", 1)):
        with pytest.raises(TypeError):
            Filter.from_dict(bad)
    with pytest.raises(TypeError, match="'x'"):
        Filter.from_dict({"x": b"bytes"})
    with pytest.raises(TypeError, match="'x'"):
        Filter.from_dict({"x": {"$in": [object()]}})


def test_reference_43_from_dict():
    assert Filter.from_dict({"tier": "hot"}) == Filter.eq("tier", "hot")
    keys = Filter.from_dict({"b": 1, "a": 2, "c": 3})
    assert [leaf.field for leaf in keys.filters] == ["b", "a", "c"]
    with pytest.raises(InvalidFilterError):
        Filter.from_dict({"name": {"$regex": "x"}})
    with pytest.raises(InvalidFilterError):
        Filter.from_dict({"address": {"city": "Paris"}})
    d = {"colour": {"$in": ["red", "green"]}, "year": {"$gt": 2010}}
    assert Filter.from_dict(d) == Filter.and_(
        Filter.is_in("colour", ["red", "green"]), Filter.gt("year", 2010)
    )


def test_from_dict_deep_documents_reach_validate():
    d: dict = {"x": 1}
    for _ in range(65):
        d = {"$not": d}
    f = Filter.from_dict(d)
    assert f == nest_not(65)
    with pytest.raises(InvalidFilterError, match="64"):
        f.validate()
    for _ in range(5_000):
        d = {"$not": d}
    assert Filter.from_dict(d).evaluate({"x": 2}) is True  # 5065 Nots: odd


# as_filter ------------------------------------------------------------------------------------
def test_as_filter():
    f = Filter.eq("a", 1)
    assert as_filter(f) is f
    assert as_filter(None) is None
    assert as_filter({"a": 1}) == f
    for bad in (1, "a", [f], ("a", 1)):
        with pytest.raises(TypeError, match="Filter, a dict or None"):
            as_filter(bad)


# filter_mask ----------------------------------------------------------------------------------
def test_filter_mask_basics():
    ms = [{"colour": "blue", "year": 2011}, None, {}, {"colour": "blue", "year": "2011"}]
    f = {"colour": "blue", "year": {"$gt": 2010}}
    mask = filter_mask(f, ms)
    assert mask.dtype == np.bool_ and mask.shape == (4,)
    assert mask.tolist() == [True, False, False, False]
    assert filter_mask(None, ms).tolist() == [True] * 4
    assert filter_mask(Filter.and_(), ms).tolist() == [True] * 4
    assert filter_mask(Filter.or_(), ms).tolist() == [False] * 4
    assert filter_mask(Filter.eq("a", 1), []).shape == (0,)
    assert filter_mask(Filter.or_(), []).shape == (0,)
    assert filter_mask(Filter.eq("a", 1), iter([{"a": 1}])).tolist() == [True]
    with pytest.raises(TypeError):
        filter_mask(3, ms)


VALUES = st.one_of(
    st.integers(-3, 3),
    st.sampled_from([2**53, 2**53 + 1, 2.0**53, 0.5, -0.0, NAN, math.inf, -math.inf, 10**20]),
    st.floats(-3, 3, width=16),
    st.booleans(),
    st.none(),
    st.sampled_from(["", "a", "b", "B", "é", "1", "\U0001f600"]),
)
FIELDS = st.sampled_from(["a", "b", "c"])
METADATA = st.one_of(st.none(), st.dictionaries(FIELDS, VALUES, max_size=3))
LEAVES = st.one_of(
    st.builds(
        lambda c, f, v: c(f, v), st.sampled_from([Eq, Neq, Lt, Lte, Gt, Gte]), FIELDS, VALUES
    ),
    st.builds(In, FIELDS, st.lists(VALUES, max_size=4)),
)
TREES = st.recursive(
    LEAVES,
    lambda kids: st.one_of(
        st.lists(kids, max_size=3).map(Filter.and_),
        st.lists(kids, max_size=3).map(Filter.or_),
        kids.map(Filter.not_),
    ),
    max_leaves=8,
)


def kind(v):
    """The §3.4 kind of a metadata or filter value, written straight from the spec."""
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    return "str" if isinstance(v, str) else "none"


def same(x, v):
    return kind(x) == kind(v) and x == v


def oracle(f, m) -> bool:
    """A plain recursive reading of docs/semantics.md §3.4, independent of the module."""
    if isinstance(f, And):
        return all(oracle(c, m) for c in f.filters)
    if isinstance(f, Or):
        return any(oracle(c, m) for c in f.filters)
    if isinstance(f, Not):
        return not oracle(f.filter, m)
    if m is None or f.field not in m:
        return False
    x = m[f.field]
    if isinstance(f, In):
        return any(same(x, v) for v in f.values)
    if isinstance(f, (Eq, Neq)):
        return same(x, f.value) == isinstance(f, Eq)
    if kind(x) != kind(f.value):
        return False
    if x is None:
        return isinstance(f, (Lte, Gte))
    op = {Lt: operator.lt, Lte: operator.le, Gt: operator.gt, Gte: operator.ge}[type(f)]
    return op(x, f.value)


@settings(max_examples=300, deadline=None)
@given(TREES, st.lists(METADATA, max_size=12))
def test_filter_mask_matches_evaluate_and_oracle(f, ms):
    expected = [f.evaluate(m) for m in ms]
    assert all(type(e) is bool for e in expected)
    assert filter_mask(f, ms).tolist() == expected
    assert expected == [oracle(f, m) for m in ms]


@settings(max_examples=100, deadline=None)
@given(TREES)
def test_equal_trees_hash_equal_and_validate(f):
    g = pickle.loads(pickle.dumps(f))
    assert g == f and hash(g) == hash(f)
    f.validate()  # random trees stay well inside the limits
