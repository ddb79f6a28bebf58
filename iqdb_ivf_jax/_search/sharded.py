"""Search of a sharded index (see :mod:`.._sharding`): one ``shard_map`` program.

Each device probes its share of the queries and the probes are gathered. Then
the single-device search (:func:`~.query_major.search_one`) is split at its
shortlist: every device scores its OWN rows of the probed lists
(:func:`~.query_major.scan_candidates`, on a state whose block table is the
device's local one) and keeps its best :func:`~.query_major.candidate_count`
by ``(scan score, seq)``; one all-gather and a sort by ``(score, seq)`` give
the global shortlist, which is exactly the one-device shortlist (every row's
score comes from the same elementwise kernel). Where the shortlist is
re-scored (IVF-Flat, IVF-PQ with refine), each device re-scores the entries it
holds, a ``pmin`` combines them, and the best ``k`` by ``(distance, seq)`` are
kept. So the result is the one-device result, ties by insertion order included.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import PartitionSpec as P

from .._assign import coarse_kind, probe
from .._sharding import DeviceMesh
from .._state import IvfState
from .query_major import candidate_count, exact_rows, scan_candidates, select_exact
from .topk import smallest_k

_SEQ_PAD = int(np.iinfo(np.int32).max)  # seq of a padding result: after every real one


@functools.partial(
    jax.jit, static_argnames=("dmesh", "k", "n_probes", "scan_blocks", "refine", "split_queries")
)
def search_sharded(
    state: IvfState,
    tables: jax.Array,
    counts: jax.Array,
    queries: jax.Array,
    mask: jax.Array,
    *,
    dmesh: DeviceMesh,
    k: int,
    n_probes: int,
    scan_blocks: int,
    refine: int = 0,
    split_queries: bool = True,
) -> tuple[jax.Array, jax.Array]:
    """Search ``queries`` on a sharded state.

    Args:
        state: the state, placed by ``dmesh.place``.
        tables: ``i32[n_dev, n_lists, Wl]`` each device's local block table,
            split over the mesh (:func:`.._sharding.local_tables`).
        counts: ``i32[n_dev, n_lists]`` its block counts, split likewise.
        queries: ``f32[nq, d]``: split over the mesh (``nq`` a multiple of the
            device count) with ``split_queries``, else replicated.
        mask: ``bool[n_blocks, B]`` allowed rows, split like the rows.
        dmesh: the mesh (static).
        k: results per query (static).
        n_probes: lists probed per query (static).
        scan_blocks: static per-device block budget, at least the blocks any
            device holds of any query's probed lists.
        refine: static IVF-PQ re-rank factor (0 = ADC distances).
        split_queries: static; each device probes its share of the queries
            (a batch), or every device probes them all (a few queries, where
            padding the batch to the device count would cost more).

    Returns:
        ``(distances f32[nq, k], slots i32[nq, k])`` replicated, nearest first
        by ``(distance, seq)``, padded ``(+inf, -1)``; slots are global.
    """
    axis, kind = dmesh.axis, coarse_kind(state.metric)

    def local(st, tbl, cnt, q, msk):
        # this device's rows, as a one-device state with its own block table
        st = dataclasses.replace(st, list_blocks=tbl[0], list_nblocks=cnt[0], interleave=1)
        p = probe(q, st.centroids, kind, n_probes, st.centroid_sq)
        if split_queries:
            q = lax.all_gather(q, axis, tiled=True)
            p = lax.all_gather(p, axis, tiled=True)
        n_short = candidate_count(st, k, refine)
        dev, n_dev, B = lax.axis_index(axis), dmesh.size, st.block_size

        def global_slot(s):  # local block j of device i is block j * n_dev + i
            return jnp.where(s >= 0, ((s // B) * n_dev + dev) * B + s % B, -1)

        def shortlist(a):
            approx, seq, ok, slots = scan_candidates(st, a[0], a[1], msk, scan_blocks=scan_blocks)
            if approx.shape[0] < n_short:  # fewer rows than the shortlist: pad
                pad = n_short - approx.shape[0]
                approx = jnp.pad(approx, (0, pad))
                seq, slots = jnp.pad(seq, (0, pad)), jnp.pad(slots, (0, pad))
                ok = jnp.pad(ok, (0, pad))
            v, pos = smallest_k(approx, seq, ok, n_short)
            hit = pos >= 0
            at = jnp.maximum(pos, 0)
            return (
                jnp.where(hit, v, jnp.inf),
                jnp.where(hit, seq[at], _SEQ_PAD),
                jnp.where(hit, global_slot(slots[at]), -1),
            )

        v, seq, g = lax.map(shortlist, (q, p))  # [nq, n_short] each
        v, seq, g = (lax.all_gather(a, axis, axis=1, tiled=True) for a in (v, seq, g))
        v, seq, g = (a[:, :n_short] for a in lax.sort((v, seq, g), dimension=1, num_keys=2))
        if st.is_pq and refine == 0:  # ADC distances are final
            return v[:, :k], g[:, :k]
        own = (g >= 0) & ((g // B) % n_dev == dev)
        local = jnp.where(own, (g // B // n_dev) * B + g % B, 0)

        def exact(a):
            qi, li, oi = a
            return jnp.where(oi, exact_rows(st, qi, li), jnp.inf)

        ex = lax.pmin(lax.map(exact, (q, local, own)), axis)
        return jax.vmap(lambda e, s_, g_: select_exact(e, s_, g_, k))(ex, seq, g)

    spec = dmesh.specs(state)
    row = P(axis)
    return jax.shard_map(
        local,
        mesh=dmesh.mesh,
        in_specs=(spec, row, row, row if split_queries else P(), row),
        out_specs=P(),
        check_vma=False,
    )(state, tables, counts, queries, mask)
