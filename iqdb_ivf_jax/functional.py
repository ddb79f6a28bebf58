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
"""

import jax
import jax.numpy as jnp

from ._assign import coarse_kind
from ._assign import probe as _probe
from ._search.query_major import scan_block_ids
from ._search.query_major import search_one as _search_one
from ._state import IvfState


def default_scan_blocks(state: IvfState, n_probes: int) -> int:
    """A block budget that always covers ``n_probes`` lists: ``n_probes * W``
    capped at the pool size (``W`` = blocks of the largest list, bucketed)."""
    return int(min(n_probes * state.table_width, state.n_blocks))


def probe(state: IvfState, query: jax.Array, *, n_probes: int) -> jax.Array:
    """The ``n_probes`` lists ``i32[n_probes]`` a query ``f32[d]`` scans, best first
    (faiss ``quantizer.search``; ties go to the lower list id)."""
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
            (always enough). A smaller budget silently skips the tail blocks.

    Returns:
        ``(distances f32[k], slots i32[k])``, nearest first, padded with
        ``(+inf, -1)``. Distances equal what :class:`IvfIndex` reports.
    """
    if scan_blocks is None:
        scan_blocks = default_scan_blocks(state, n_probes)
    if mask is None:
        mask = jnp.ones(state.valid.shape, bool)
    probes = probe(state, query, n_probes=n_probes)
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
    """
    if scan_blocks is None:
        scan_blocks = default_scan_blocks(state, n_probes)
    if mask is None:
        mask = jnp.ones(state.valid.shape, bool)
    probes = jax.vmap(lambda q: probe(state, q, n_probes=n_probes))(queries)
    return jax.lax.map(
        lambda a: _search_one(state, a[0], a[1], mask, k=k, scan_blocks=scan_blocks, refine=refine),
        (queries, probes),
    )


__all__ = ["IvfState", "default_scan_blocks", "probe", "scan_block_ids", "search", "search_batch"]
