"""Pure, jittable, vmappable search over an :class:`IvfState`.

Everything :class:`IvfIndex` does at search time is available here as pure
functions of the state pytree, for use under ``jax.jit``, ``jax.vmap`` and
sharding::

    >>> import jax, numpy as np
    >>> from iqdb_ivf_jax import IvfIndex, IvfConfig, functional
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((200, 8)).astype(np.float32)
    >>> index = IvfIndex(8, "euclidean", IvfConfig(n_clusters=4, n_probes=2))
    >>> index.train(x); index.insert_batch(list(range(200)), x)
    >>> state = index.state
    >>> d, slots = jax.jit(functional.search, static_argnames=("k", "n_probes"))(
    ...     state, x[0], k=5, n_probes=4)
    >>> index.ids_for_slots(slots)[0]
    0

Results are *slots* (``i32``, ``-1`` = padding with distance ``+inf``): map
them to ids with :meth:`IvfIndex.ids_for_slots`. Slots stay valid until the
index changes. ``jax.vmap(search, in_axes=(None, 0))`` gives the batch form,
equal to :func:`search_batch`.

Arguments are checked at the Python boundary, on what is known while tracing:
the types and ranges of the static arguments, the query's rank, dtype and
length, and the mask's shape and dtype, so the checks behave the same eagerly
and under ``jax.jit`` / ``jax.vmap``. Errors: :class:`InvalidArgumentError` (a
wrong Python type, e.g. a float ``k`` or a traced ``k`` that should be static),
:class:`InvalidConfigError` (a value out of range), :class:`InvalidVectorError`
(a query of the wrong rank or dtype), :class:`DimensionMismatchError` (a query
of the wrong length). Array *values* are never looked at (they may be traced):
a NaN, Inf or huge query gives NaN/Inf distances instead of an error, and a mask
built for another state of the same shape is used as given.
"""

import jax
import jax.numpy as jnp
import numpy as np

from ._assign import coarse_kind
from ._assign import probe as _probe
from ._errors import (
    DimensionMismatchError,
    InvalidArgumentError,
    InvalidConfigError,
    InvalidVectorError,
)
from ._search.query_major import scan_block_ids
from ._search.query_major import search_one as _search_one
from ._state import IvfState


def _check_state(state) -> None:
    if not isinstance(state, IvfState):
        raise InvalidArgumentError(
            f"state must be an IvfState, got {type(state).__name__}; pass IvfIndex.state"
        )
    if state.interleave > 1:
        raise InvalidArgumentError(
            f"this state is split over {state.interleave} devices (IvfIndex(devices=...)), "
            "whose rows these kernels cannot address; search it with IvfIndex.search_arrays, "
            "or pass the state of a one-device index"
        )


def _static_int(name: str, value, low: int, high: int | None = None, why: str = "") -> int:
    """``value`` as an int in ``[low, high]``; it must be a concrete (static) int."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        hint = (
            f"under jax.jit list {name!r} in static_argnames (a jax array is traced)"
            if isinstance(value, jax.Array)
            else f"pass a Python int, e.g. {name}=int(...)"
        )
        raise InvalidArgumentError(
            f"{name} must be a static int, got {type(value).__name__}; {hint}"
        )
    value = int(value)
    if value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise InvalidConfigError(f"{name} must be {bounds}, got {value}{why}")
    return value


def _check_n_probes(state: IvfState, n_probes) -> int:
    return _static_int(
        "n_probes",
        n_probes,
        1,
        state.n_lists,
        f" (the state has {state.n_lists} lists); probe between 1 and all of them",
    )


def _check_query(state: IvfState, query, rank: int, name: str) -> jax.Array:
    """The query as ``f32``, after rank, dtype and length checks (shapes only)."""
    q: jax.Array | np.ndarray
    if isinstance(query, (jax.Array, np.ndarray)):  # maybe a tracer: shape and dtype only
        q = query
    else:  # a list, possibly of tracers
        try:
            q = jnp.asarray(query)
        except (TypeError, ValueError) as e:
            raise InvalidVectorError(f"{name} is not a numeric array: {e}") from None
    if q.ndim != rank:
        shape, other = ("(d,)", "search_batch") if rank == 1 else ("(nq, d)", "search")
        raise InvalidVectorError(
            f"{name} must have shape {shape}, got rank {q.ndim} {q.shape}; "
            f"use {other} for rank {3 - rank}"
        )
    if q.dtype == jnp.bool_ or not (
        jnp.issubdtype(q.dtype, jnp.integer) or jnp.issubdtype(q.dtype, jnp.floating)
    ):
        raise InvalidVectorError(
            f"{name} must hold integers or floats, got dtype {q.dtype}; "
            "convert it with jnp.asarray(q, jnp.float32)"
        )
    if q.shape[-1] != state.dim:
        raise DimensionMismatchError(state.dim, q.shape[-1])
    return jnp.asarray(q, jnp.float32)


def _check_search_args(state: IvfState, k, n_probes, mask, refine, scan_blocks):
    """Validated ``(k, n_probes, mask, refine, scan_blocks)`` of a search."""
    k = _static_int("k", k, 0, why="; ask for 0 or more results")
    n_probes = _check_n_probes(state, n_probes)
    refine = _static_int("refine", refine, 0, why="; use 0 for ADC distances")
    if refine and state.is_pq and not state.keeps_vectors:
        raise InvalidConfigError(
            f"refine={refine} needs the raw vectors, which this state does not hold (a "
            "codes-only index, keep_raw_vectors=False, or one loaded with mmap=True); use "
            "refine=0 (ADC distances), or IvfIndex.search for a memory-mapped index"
        )
    if scan_blocks is None:
        scan_blocks = default_scan_blocks(state, n_probes)
    else:
        scan_blocks = _static_int(
            "scan_blocks", scan_blocks, 1, why="; pass None for a budget that covers the probes"
        )
    if mask is None:
        mask = jnp.ones(state.valid.shape, bool)
    elif not (hasattr(mask, "shape") and hasattr(mask, "dtype")):
        raise InvalidArgumentError(
            f"mask must be a bool[n_blocks, B] array, got {type(mask).__name__}; "
            "build it with IvfIndex.filter_mask(filter)"
        )
    elif mask.dtype != jnp.bool_:
        raise InvalidArgumentError(
            f"mask must have dtype bool, got {mask.dtype}; build it with "
            "IvfIndex.filter_mask(filter) or convert it with mask.astype(bool)"
        )
    elif tuple(mask.shape) != tuple(state.valid.shape):
        raise InvalidConfigError(
            f"mask has shape {tuple(mask.shape)} but the state's rows are "
            f"{tuple(state.valid.shape)}; build the mask with IvfIndex.filter_mask(filter) "
            "for this state (a mask goes stale when the index grows)"
        )
    return k, n_probes, mask, refine, scan_blocks


def default_scan_blocks(state: IvfState, n_probes: int) -> int:
    """A block budget that always covers ``n_probes`` lists: ``n_probes * W``
    capped at the pool size (``W`` = blocks of the largest list, bucketed)."""
    return int(min(n_probes * state.table_width, state.n_blocks))


def probe(state: IvfState, query: jax.Array, *, n_probes: int) -> jax.Array:
    """The ``n_probes`` lists ``i32[n_probes]`` a query ``f32[d]`` scans, best first
    (faiss ``quantizer.search``; ties go to the lower list id).

    Raises:
        InvalidArgumentError: ``state`` is not an IvfState (or is split over
            devices), or ``n_probes`` is
            not a static int.
        InvalidConfigError: ``n_probes`` outside ``[1, state.n_lists]``.
        InvalidVectorError / DimensionMismatchError: ``query`` is not ``(d,)``
            numeric.

    Not checked (values may be traced): a NaN/Inf query probes arbitrary lists.
    """
    _check_state(state)
    n_probes = _check_n_probes(state, n_probes)
    query = _check_query(state, query, 1, "query")
    return _probe(query, state.centroids, coarse_kind(state.metric), n_probes, state.centroid_sq)


def search(
    state: IvfState,
    query: jax.Array,
    *,
    k: int,
    n_probes: int,
    mask: jax.Array | None = None,
    refine: int = 0,
    scan_blocks: int | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Search ONE query ``f32[d]``: probe ``n_probes`` lists (faiss ``nprobe``),
    scan them, return the ``k`` nearest by ``(distance, insertion order)``.

    Args:
        state: an :class:`IvfState` (``IvfIndex.state``).
        query: ``f32[d]``.
        k: static number of results.
        n_probes: static number of lists scanned.
        mask: optional ``bool[n_blocks, B]`` of allowed rows (a filter).
        refine: static IVF-PQ re-rank factor (0 = ADC distances); ignored for Flat.
        scan_blocks: static block budget; default :func:`default_scan_blocks`
            (always enough). A smaller budget skips the tail blocks of the last
            probed lists; ``scan_block_ids(state, probe(state, query,
            n_probes=n_probes), scan_blocks)[1]`` is the number of blocks the
            probes own (traceable), so ``needed > scan_blocks`` tells a caller
            that the result was truncated.

    Returns:
        ``(distances f32[k], slots i32[k])``, nearest first, padded with
        ``(+inf, -1)``. Distances equal what :class:`IvfIndex` reports.

    Raises:
        InvalidArgumentError: ``state`` is not an IvfState, or is a sharded
            index's (split over devices); ``k``, ``n_probes``,
            ``refine`` or ``scan_blocks`` is not a static int (under ``jax.jit``,
            list them in ``static_argnames``); ``mask`` is not a bool array.
        InvalidConfigError: ``k < 0``; ``n_probes`` outside
            ``[1, state.n_lists]``; ``refine < 0``, or ``> 0`` on a codes-only
            state; ``scan_blocks < 1``; ``mask`` not of shape ``state.valid.shape``.
        InvalidVectorError / DimensionMismatchError: ``query`` is not ``(d,)``
            numeric.

    Not checked, as under ``jax.jit`` the values are traced: a NaN or Inf query
    returns NaN/Inf distances (:class:`IvfIndex` rejects those, and vectors above
    its norm limit); a mask of the right shape built for another state (or before
    the index changed) is applied as given.
    """
    _check_state(state)
    k, n_probes, mask, refine, scan_blocks = _check_search_args(
        state, k, n_probes, mask, refine, scan_blocks
    )
    query = _check_query(state, query, 1, "query")
    probes = _probe(query, state.centroids, coarse_kind(state.metric), n_probes, state.centroid_sq)
    return _search_one(state, query, probes, mask, k=k, scan_blocks=scan_blocks, refine=refine)


def search_batch(
    state: IvfState,
    queries: jax.Array,
    *,
    k: int,
    n_probes: int,
    mask: jax.Array | None = None,
    refine: int = 0,
    scan_blocks: int | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Native batch kernel: ``f32[nq, d]`` -> ``(f32[nq, k], i32[nq, k])``.

    Probes every query, then scans one query at a time under ``lax.map``
    (memory stays ``O(scan_blocks * B * d)``). Equals
    ``jax.vmap(search, in_axes=(None, 0))``.

    Raises and leaves unchecked what :func:`search` does, for ``queries`` of
    shape ``(nq, d)``.
    """
    _check_state(state)
    k, n_probes, mask, refine, scan_blocks = _check_search_args(
        state, k, n_probes, mask, refine, scan_blocks
    )
    queries = _check_query(state, queries, 2, "queries")
    kind = coarse_kind(state.metric)
    probes = jax.vmap(lambda q: _probe(q, state.centroids, kind, n_probes, state.centroid_sq))(
        queries
    )
    return jax.lax.map(
        lambda a: _search_one(state, a[0], a[1], mask, k=k, scan_blocks=scan_blocks, refine=refine),
        (queries, probes),
    )


__all__ = ["IvfState", "default_scan_blocks", "probe", "scan_block_ids", "search", "search_batch"]
