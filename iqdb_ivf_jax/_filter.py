"""Metadata filters: immutable `Filter` trees, `from_dict`, and evaluation.

A filter is a tree of leaves (`Eq`, `Neq`, `Lt`, `Lte`, `Gt`, `Gte`, `In`) under
combinators (`And`, `Or`, `Not`). Nodes are frozen, hashable and compared by
structure. Evaluation is *closed world* and *typed*:

- A missing field, or ``metadata is None``, makes every leaf False (`Neq` and
  `In` too); `Not` inverts, `And(())` is True and `Or(())` is False.
- Values have four kinds: number (int/float, not bool), bool, str and None.
  `Eq` needs the same kind and an equal value (numbers compare exactly, as in
  Python; NaN equals nothing). `Neq` is "present and not `Eq`"; `In` is
  "present and `Eq` to some value".
- Ordered leaves compare numbers (NaN gives False), str by code point and bool
  (False < True); None vs None counts as equal; mixed kinds give False.

Every tree walk here is iterative, so trees deeper than the 64 limit can still
be built, evaluated and rejected by `Filter.validate` without a RecursionError.
`Filter.validate` checks the limits (`MAX_DEPTH`, `MAX_WIDTH`, `MAX_NODES`,
`MAX_IN_VALUES`); building a node checks only its types.

    >>> f = Filter.from_dict({"tier": "hot", "year": {"$gte": 2020}})
    >>> f == Filter.and_(Filter.eq("tier", "hot"), Filter.gte("year", 2020))
    True
    >>> f.evaluate({"tier": "hot", "year": 2021.0}), f.evaluate(None)
    (True, False)
"""

import dataclasses
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ._errors import InvalidArgumentError, InvalidFilterError

Value = str | int | float | bool | None
MAX_DEPTH = 64  # nesting: each And, Or and Not adds 1, leaves 0
MAX_IN_VALUES = 1024  # values of one In
MAX_WIDTH = 1024  # children of one And or Or
MAX_NODES = 4096  # nodes of the whole tree (a subtree used twice counts twice)

# Value kinds. `_ABSENT` marks a missing field; `_OTHER` an unsupported value.
_NUM, _BOOL, _STR, _NONE, _OTHER, _ABSENT = range(6)
_KINDS = {int: _NUM, float: _NUM, bool: _BOOL, str: _STR, type(None): _NONE}
_MISSING = object()  # stands for an absent field in a metadata column


def _classify(x: Any) -> tuple[int, Any]:
    """Return ``(kind, value)``, turning NumPy scalars and subclasses into Python values."""
    kind = _KINDS.get(type(x))
    if kind is not None:
        return kind, x
    if x is _MISSING:
        return _ABSENT, x
    if isinstance(x, (bool, np.bool_)):
        return _BOOL, bool(x)
    if isinstance(x, (int, np.integer)):
        return _NUM, int(x)
    if isinstance(x, (float, np.floating)):
        return _NUM, float(x)
    if isinstance(x, str):
        return _STR, str.__str__(x)
    return _OTHER, x


def _check_field(field: Any) -> None:
    if not isinstance(field, str):
        raise InvalidArgumentError(
            f"filter field must be a str, got {type(field).__name__} {field!r}; "
            "name the metadata key as a str"
        )


def _check_value(field: str, value: Any) -> Value:
    kind, value = _classify(value)
    if kind in (_OTHER, _ABSENT):
        raise InvalidArgumentError(
            f"filter value for field {field!r} must be str, int, float, bool or None, "
            f"got {type(value).__name__}; compare with a scalar (use In for several values)"
        )
    return value


def _value_key(value: Value) -> tuple:
    """Kind-tagged comparison key: ``1 == 1.0`` but ``True != 1``; all NaNs alike."""
    kind = _KINDS[type(value)]
    return (kind, "nan") if _is_nan(value) else (kind, value)


def _is_nan(value: Value) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _check_children(name: str, filters: Any) -> tuple["Filter", ...]:
    if not isinstance(filters, (list, tuple)):
        raise InvalidArgumentError(
            f"{name} takes a list or tuple of Filters, got {type(filters).__name__}; "
            f"wrap the children in a list, e.g. {name}([f1, f2])"
        )
    for f in filters:
        if not isinstance(f, Filter):
            raise InvalidArgumentError(
                f"{name} children must be Filters, got {type(f).__name__} {f!r}; "
                "build them with Filter.eq(...) etc. or Filter.from_dict({...})"
            )
    return tuple(filters)


def _varargs(name: str, fs: tuple) -> tuple["Filter", ...]:
    """``and_(a, b)``, ``and_([a, b])`` and ``and_((a, b))`` alike; dicts go through `from_dict`."""
    if len(fs) == 1 and isinstance(fs[0], (list, tuple)):
        fs = tuple(fs[0])
    return _check_children(name, [as_filter(f) if isinstance(f, Mapping) else f for f in fs])


class Filter:
    """Base class of the filter nodes, and home of their builders.

    Build trees with the classmethods (`eq`, `neq`, `lt`, `lte`, `gt`, `gte`,
    `is_in`, `and_`, `or_`, `not_`) or from a Mongo-style dict (`from_dict`).
    Nodes compare by structure and kind-tagged value (``Eq(x, 1) == Eq(x, 1.0)``
    but ``Eq(x, 1) != Eq(x, True)``); a node also equals a dict that
    `from_dict` turns into it.

        >>> f = Filter.or_(Filter.eq("tier", "hot"), Filter.not_(Filter.gt("year", 2020)))
        >>> [f.evaluate(m) for m in ({"tier": "hot"}, {"year": 2024}, None)]
        [True, False, True]

    See also: `filter_mask` (many records at once), `as_filter`.
    """

    def _key(self) -> tuple:
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            try:
                other = Filter.from_dict(other)
            except (InvalidFilterError, TypeError):
                return False
        if not isinstance(other, Filter):
            return NotImplemented
        return type(self) is type(other) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._key()))

    def __getstate__(self) -> dict:
        # Drop the cached leaf test: closures do not pickle.
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    # Builders -----------------------------------------------------------------
    @classmethod
    def eq(cls, field: str, value: Value) -> "Eq":
        """Field present, same kind and equal value."""
        return Eq(field, value)

    @classmethod
    def neq(cls, field: str, value: Value) -> "Neq":
        """Field present and not `eq` (unlike MongoDB, never matches a missing field)."""
        return Neq(field, value)

    @classmethod
    def lt(cls, field: str, value: Value) -> "Lt":
        """Field present, same kind and ``< value``."""
        return Lt(field, value)

    @classmethod
    def lte(cls, field: str, value: Value) -> "Lte":
        """Field present, same kind and ``<= value``."""
        return Lte(field, value)

    @classmethod
    def gt(cls, field: str, value: Value) -> "Gt":
        """Field present, same kind and ``> value``."""
        return Gt(field, value)

    @classmethod
    def gte(cls, field: str, value: Value) -> "Gte":
        """Field present, same kind and ``>= value``."""
        return Gte(field, value)

    @classmethod
    def is_in(cls, field: str, values: Sequence[Value]) -> "In":
        """Field present and `eq` to one of ``values`` (a list or tuple)."""
        return In(field, values)

    @classmethod
    def and_(cls, *filters: "Filter | Mapping | Sequence[Filter | Mapping]") -> "And":
        """All of ``filters`` (True when empty); also takes one list or tuple."""
        return And(_varargs("and_", filters))

    @classmethod
    def or_(cls, *filters: "Filter | Mapping | Sequence[Filter | Mapping]") -> "Or":
        """Any of ``filters`` (False when empty); also takes one list or tuple."""
        return Or(_varargs("or_", filters))

    @classmethod
    def not_(cls, f: "Filter | Mapping") -> "Not":
        """The negation of ``f``; it matches records that lack ``f``'s fields."""
        return Not(Filter.from_dict(f) if isinstance(f, Mapping) else f)

    @classmethod
    def from_dict(cls, d: Mapping) -> "Filter":
        """Parse a Mongo-style filter dict.

        ``{"tier": "hot"}`` is ``Eq``; ``{"year": {"$gte": 2020, "$lt": 2025}}`` is
        ``And(Gte, Lt)``. Field operators: ``$eq $ne $lt $lte $gt $gte $in``
        (``$in`` takes a list or tuple). Logic: ``$and`` and ``$or`` take a list of
        dicts, ``$not`` a dict. Several keys give an `And` in key order, one key the
        bare clause, and ``{}`` gives ``And(())``.

            >>> Filter.from_dict({"year": {"$in": [2020, 2021]}})
            In(field='year', values=(2020, 2021))

        Raises:
            InvalidArgumentError: ``d`` is not a dict (Mapping), or a scalar is
                of an unsupported type (as for the node constructors); a
                ``TypeError``.
            InvalidFilterError: malformed structure: a non-str key, an unknown
                ``$`` operator, an empty operator dict, a list or nested document
                as a value, ``$in`` without a list, or malformed ``$and``,
                ``$or`` or ``$not``.
        """
        if not isinstance(d, Mapping):
            raise InvalidArgumentError(
                f"from_dict takes a dict, got {type(d).__name__}; pass a Mongo-style "
                "dict such as {'tier': 'hot'} (or use the Filter itself)"
            )
        return _parse(d)

    # Evaluation ---------------------------------------------------------------
    def evaluate(self, metadata: Mapping[str, Value] | None) -> bool:
        """Whether a record's ``metadata`` (a dict or None) matches this filter.

        Walks the tree iteratively with short-circuiting, so any depth works.
        """
        get = metadata.get if metadata is not None else (lambda _f, d: d)
        stack: list[list] = [[self, 0]]  # [node, index of the next child]
        value = False
        while stack:
            frame = stack[-1]
            node, i = frame
            if isinstance(node, _Leaf):
                value = node._test()(get(node.field, _MISSING))
            elif isinstance(node, Not):
                if i == 0:
                    frame[1] = 1
                    stack.append([node.filter, 0])
                    continue
                value = not value
            else:  # And stops at the first False, Or at the first True.
                stop = isinstance(node, Or)
                if i > 0 and value == stop:
                    pass  # short-circuit: `value` is the answer
                elif i == len(node.filters):
                    value = not stop
                else:
                    frame[1] = i + 1
                    stack.append([node.filters[i], 0])
                    continue
            stack.pop()
        return value

    def validate(self) -> None:
        """Check the limits: depth at most `MAX_DEPTH` (64), at most `MAX_WIDTH`
        (1024) children per `And` / `Or`, at most `MAX_NODES` (4096) nodes in all,
        and at most `MAX_IN_VALUES` (1024) values per `In`.

        `And`, `Or` and `Not` each add 1 to the depth and leaves add 0, so 64
        nested `Not` pass and 65 fail. Nodes are counted as a tree (leaves and
        combinators alike; a subtree reused in two places counts twice), so the
        root alone is 1. The walk is iterative and stops at the first violation:
        it visits at most `MAX_NODES` nodes whatever the tree (even one whose
        shared subtrees unfold to billions of nodes).

        Raises:
            InvalidFilterError: naming the limit that was exceeded and the fix.
        """
        stack: list[tuple[Filter, int]] = [(self, 0)]
        n_nodes = 1
        while stack:
            node, depth = stack.pop()
            if isinstance(node, In) and len(node.values) > MAX_IN_VALUES:
                raise InvalidFilterError(
                    f"In on field {node.field!r} has {len(node.values)} values, over the "
                    f"limit of {MAX_IN_VALUES}; split it into an Or of smaller In filters"
                )
            children = _children(node)
            if children is None:
                continue
            if depth + 1 > MAX_DEPTH:
                raise InvalidFilterError(
                    f"filter nesting depth exceeds the limit of {MAX_DEPTH} (And, Or and Not "
                    "each add 1); flatten nested And/Or nodes or simplify double negations"
                )
            if len(children) > MAX_WIDTH:
                raise InvalidFilterError(
                    f"{type(node).__name__} has {len(children)} children, over the limit of "
                    f"{MAX_WIDTH}; group them into nested {type(node).__name__}s of at most "
                    f"{MAX_WIDTH}, or merge Eq leaves on one field into In (up to "
                    f"{MAX_IN_VALUES} values each)"
                )
            n_nodes += len(children)
            if n_nodes > MAX_NODES:
                raise InvalidFilterError(
                    f"filter has more than {MAX_NODES} nodes (leaves and And/Or/Not, a "
                    "reused subtree counted each time), over the limit; simplify it: merge "
                    "Eq leaves on one field into In, or split the search into several"
                )
            stack.extend((c, depth + 1) for c in children)


def _children(node: Filter) -> tuple[Filter, ...] | None:
    """The children of a combinator, or None for a leaf."""
    if isinstance(node, (And, Or)):
        return node.filters
    if isinstance(node, Not):
        return (node.filter,)
    return None


class _Leaf(Filter):
    """A test of one field; subclasses have ``field`` and a compiled `_test`."""

    field: str

    def _test(self) -> Callable[[Any], bool]:
        """The test of one field value (or `_MISSING`), compiled once per node."""
        test = self.__dict__.get("_compiled")
        if test is None:
            test = self.__dict__["_compiled"] = _compile(self)
        return test


@dataclasses.dataclass(frozen=True, eq=False)
class _Compare(_Leaf):
    """A comparison of one field with one value."""

    field: str
    value: Value

    def __post_init__(self):
        _check_field(self.field)
        object.__setattr__(self, "value", _check_value(self.field, self.value))

    def _key(self) -> tuple:
        return (self.field, _value_key(self.value))


@dataclasses.dataclass(frozen=True, eq=False)
class Eq(_Compare):
    """``field`` is present, of the same kind as ``value`` and equal to it."""


@dataclasses.dataclass(frozen=True, eq=False)
class Neq(_Compare):
    """``field`` is present and not `Eq` to ``value`` (kinds included)."""


@dataclasses.dataclass(frozen=True, eq=False)
class Lt(_Compare):
    """``field`` is present, of ``value``'s kind and less than it."""


@dataclasses.dataclass(frozen=True, eq=False)
class Lte(_Compare):
    """``field`` is present, of ``value``'s kind and at most ``value``."""


@dataclasses.dataclass(frozen=True, eq=False)
class Gt(_Compare):
    """``field`` is present, of ``value``'s kind and greater than it."""


@dataclasses.dataclass(frozen=True, eq=False)
class Gte(_Compare):
    """``field`` is present, of ``value``'s kind and at least ``value``."""


@dataclasses.dataclass(frozen=True, eq=False)
class In(_Leaf):
    """``field`` is present and `Eq` to one of ``values`` (a list or tuple, stored as a tuple)."""

    field: str
    values: "tuple[Value, ...] | Sequence[Value]"  # stored as a tuple

    def __post_init__(self):
        _check_field(self.field)
        if not isinstance(self.values, (list, tuple)):
            raise InvalidArgumentError(
                f"In values for field {self.field!r} must be a list or tuple, "
                f"got {type(self.values).__name__}; pass list(values)"
            )
        object.__setattr__(self, "values", tuple(_check_value(self.field, v) for v in self.values))

    def _key(self) -> tuple:
        return (self.field, tuple(_value_key(v) for v in self.values))


@dataclasses.dataclass(frozen=True, eq=False)
class And(Filter):
    """All of ``filters`` match; ``And(())`` is True."""

    filters: tuple[Filter, ...]

    def __post_init__(self):
        object.__setattr__(self, "filters", _check_children("And", self.filters))

    def _key(self) -> tuple:
        return self.filters


@dataclasses.dataclass(frozen=True, eq=False)
class Or(Filter):
    """Any of ``filters`` matches; ``Or(())`` is False."""

    filters: tuple[Filter, ...]

    def __post_init__(self):
        object.__setattr__(self, "filters", _check_children("Or", self.filters))

    def _key(self) -> tuple:
        return self.filters


@dataclasses.dataclass(frozen=True, eq=False)
class Not(Filter):
    """``filter`` does not match (so a record lacking its fields matches)."""

    filter: Filter

    def __post_init__(self):
        _check_children("Not", (self.filter,))

    def _key(self) -> tuple:
        return (self.filter,)


_ORDER_OPS = {Lt: operator.lt, Lte: operator.le, Gt: operator.gt, Gte: operator.ge}


def _compile(leaf: _Leaf) -> Callable[[Any], bool]:
    """Build ``test(x) -> bool`` for one field value ``x`` (`_MISSING` when absent)."""
    kinds = _KINDS
    if isinstance(leaf, In):
        by_kind: dict[int, set] = {}  # NaN is left out: it equals nothing.
        for v in leaf.values:
            if not _is_nan(v):
                by_kind.setdefault(kinds[type(v)], set()).add(v)

        def test(x):
            k = kinds.get(type(x))
            if k is None:
                k, x = _classify(x)
            members = by_kind.get(k)
            return members is not None and x in members

        return test
    assert isinstance(leaf, _Compare)
    kv, v = kinds[type(leaf.value)], leaf.value
    if isinstance(leaf, (Eq, Neq)):
        want = isinstance(leaf, Eq)

        def test_eq(x):
            k = kinds.get(type(x))
            if k is None:
                k, x = _classify(x)
                if k == _ABSENT:
                    return False
            return (k == kv and x == v) is want

        return test_eq
    op = _ORDER_OPS[type(leaf)]
    if kv == _NONE:  # None vs None counts as equal: only <= and >= match.
        inclusive = op in (operator.le, operator.ge)
        return lambda x: inclusive and x is None

    def test_order(x):
        k = kinds.get(type(x))
        if k is None:
            k, x = _classify(x)
        return k == kv and op(x, v)

    return test_order


# from_dict -------------------------------------------------------------------
_FIELD_OPS = {"$eq": Eq, "$ne": Neq, "$lt": Lt, "$lte": Lte, "$gt": Gt, "$gte": Gte}
_ALL_FIELD_OPS = ", ".join([*_FIELD_OPS, "$in"])


def _scalar(field: str, value: Any) -> Any:
    if isinstance(value, Mapping):
        raise InvalidFilterError(
            f"field {field!r}: nested documents are not supported; compare with an "
            f"operator dict such as {{'$eq': value}} using {_ALL_FIELD_OPS}"
        )
    if isinstance(value, (list, tuple, set, frozenset)):
        raise InvalidFilterError(
            f"field {field!r}: a {type(value).__name__} is not a value; use {{'$in': [...]}}"
        )
    return value


def _field_clause(field: str, spec: Any) -> Filter:
    """One ``field: spec`` entry: a bare scalar, or a dict of field operators."""
    if not isinstance(spec, Mapping):
        return Eq(field, _scalar(field, spec))
    if not spec:
        raise InvalidFilterError(
            f"field {field!r} has an empty operator dict; give one of {_ALL_FIELD_OPS}"
        )
    if not all(isinstance(op, str) and op.startswith("$") for op in spec):
        _scalar(field, spec)  # a nested document, or $ and non-$ keys mixed
    parts: list[Filter] = []
    for op, arg in spec.items():
        if op in _FIELD_OPS:
            parts.append(_FIELD_OPS[op](field, _scalar(field, arg)))
        elif op == "$in":
            if not isinstance(arg, (list, tuple)):
                raise InvalidFilterError(
                    f"field {field!r}: $in takes a list, got {type(arg).__name__}"
                )
            parts.append(In(field, [_scalar(field, v) for v in arg]))
        else:
            raise InvalidFilterError(
                f"unknown operator {op!r} on field {field!r}; use one of {_ALL_FIELD_OPS}"
            )
    return parts[0] if len(parts) == 1 else And(tuple(parts))


def _build_doc(fs: list[Filter]) -> Filter:
    return fs[0] if len(fs) == 1 else And(tuple(fs))


_LOGIC = {
    "$and": lambda fs: And(tuple(fs)),
    "$or": lambda fs: Or(tuple(fs)),
    "$not": lambda fs: Not(fs[0]),
}


def _parse(doc: Mapping) -> Filter:
    """Iterative `from_dict`, so deep documents cannot overflow the Python stack.

    ``todo`` holds documents to expand, finished Filters, and ``(build, n)`` steps
    that replace the last ``n`` results on ``out`` with ``build(results)``.
    """
    out: list[Filter] = []
    todo: list = [doc]
    while todo:
        task = todo.pop()
        if isinstance(task, Filter):
            out.append(task)
            continue
        if isinstance(task, tuple):
            build, n = task
            args = out[len(out) - n :]
            del out[len(out) - n :]
            out.append(build(args))
            continue
        steps: list = []  # in processing order: each clause, then the document
        for key, arg in task.items():
            if not isinstance(key, str):
                raise InvalidFilterError(f"filter keys must be str, got {key!r}")
            if key in ("$and", "$or"):
                is_list = isinstance(arg, (list, tuple))
                if not (is_list and all(isinstance(a, Mapping) for a in arg)):
                    raise InvalidFilterError(f"{key} takes a list of dicts, got {arg!r}")
                steps += [*arg, (_LOGIC[key], len(arg))]
            elif key == "$not":
                if not isinstance(arg, Mapping):
                    raise InvalidFilterError(f"$not takes a dict, got {type(arg).__name__}")
                steps += [arg, (_LOGIC[key], 1)]
            elif key.startswith("$"):
                raise InvalidFilterError(
                    f"unknown operator {key!r}; at the top level use $and, $or or $not, "
                    f"and put {_ALL_FIELD_OPS} inside {{field: {{...}}}}"
                )
            else:
                steps.append(_field_clause(key, arg))
        steps.append((_build_doc, len(task)))
        todo += reversed(steps)
    return out[0]


# Public helpers ----------------------------------------------------------------
def as_filter(f: "Filter | Mapping | None") -> Filter | None:
    """Return a `Filter` for a Filter, a dict (via `Filter.from_dict`) or None.

        >>> as_filter({"tier": "hot"}) == Filter.eq("tier", "hot"), as_filter(None)
        (True, None)

    Raises:
        InvalidArgumentError: ``f`` is none of a Filter, a dict (Mapping) or
            None (a ``TypeError``).
        InvalidFilterError: a malformed dict (see `Filter.from_dict`).
    """
    if f is None or isinstance(f, Filter):
        return f
    if isinstance(f, Mapping):
        return Filter.from_dict(f)
    raise InvalidArgumentError(
        f"filter must be a Filter, a dict or None, got {type(f).__name__}; build one "
        "with Filter.eq(...) etc. or pass a Mongo-style dict such as {'tier': 'hot'}"
    )


def filter_mask(f: "Filter | Mapping | None", metadatas: Sequence[Mapping | None]) -> np.ndarray:
    """``[f.evaluate(m) for m in metadatas]`` as a bool array, computed column-wise.

    Each field is read once into a column, each leaf's compiled test is mapped
    over its column, and combinators reduce the leaf columns with NumPy. The
    walk is iterative. ``f=None`` (no filter) matches everything.

        >>> filter_mask({"year": {"$gt": 2020}}, [{"year": 2024}, {"year": "2024"}, None])
        array([ True, False, False])

    Args:
        f: a Filter, a dict (see `Filter.from_dict`) or None.
        metadatas: one dict or None per record.

    Returns:
        A ``bool`` array of shape ``[len(metadatas)]``.
    """
    f = as_filter(f)
    metas = list(metadatas)
    n = len(metas)
    if f is None:
        return np.ones(n, dtype=bool)
    columns: dict[str, list] = {}
    out: list[np.ndarray] = []
    stack: list[tuple[Filter, bool]] = [(f, False)]
    while stack:
        node, expanded = stack.pop()
        children = _children(node)
        if children is None:
            assert isinstance(node, _Leaf)
            col = columns.get(node.field)
            if col is None:
                key = node.field
                col = columns[key] = [
                    _MISSING if m is None else m.get(key, _MISSING) for m in metas
                ]
            out.append(np.fromiter(map(node._test(), col), dtype=bool, count=n))
        elif not expanded:
            stack.append((node, True))
            stack.extend((c, False) for c in reversed(children))
        else:
            start = len(out) - len(children)
            parts = out[start:]
            del out[start:]
            if isinstance(node, Not):
                out.append(~parts[0])
            elif isinstance(node, And):
                out.append(np.logical_and.reduce(parts) if parts else np.ones(n, dtype=bool))
            else:
                out.append(np.logical_or.reduce(parts) if parts else np.zeros(n, dtype=bool))
    return out[0]
