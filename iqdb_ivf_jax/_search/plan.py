"""The host plan of a list-major batch search: which (query, list) pairs form
which GEMM unit, and where each pair's scores land in the score buffer.

Pairs are grouped by list; lists fall into size classes (their block count
rounded up by :func:`~.._layout.scan_bucket`); each class gets a query tile (the
power of two at least its lists' mean query count, in ``[MIN_TILE, MAX_TILE]``),
and a list with more queries than the tile gets several units. Each pair owns a
window of its query's score-buffer row (:func:`pair_columns`).
"""

import dataclasses

import numpy as np

from .._layout import BlockLayout, pow2_at_least, scan_bucket, scan_buckets

MIN_TILE, MAX_TILE = 8, 128  # queries per GEMM unit
_WIDTH_QUANTUM = 256  # score-buffer columns are bucketed in multiples of this


@dataclasses.dataclass
class ClassUnits:
    """The units of one size class: ``unit_q``/``unit_off`` are ``-1`` padded."""

    n_blocks: int
    unit_list: np.ndarray  # i32[U]
    unit_q: np.ndarray  # i32[U, tile]
    unit_off: np.ndarray  # i32[U, tile]


def _size_classes(nb: np.ndarray) -> np.ndarray:
    """Size class (block count rounded by :func:`scan_bucket`; 0 if empty) of each list."""
    return np.where(nb > 0, scan_buckets(nb), 0)


def pair_columns(probes: np.ndarray, layout: BlockLayout) -> tuple[np.ndarray, np.ndarray]:
    """Score-buffer columns of each (query, probe) pair.

    Returns:
        ``(starts i32[nq, P], widths i64[nq])``: a probe's scores take
        ``scan_bucket(blocks) * B`` columns from its start (0 for an empty list).
    """
    rows = _size_classes(layout.list_nblocks)[probes] * layout.block_size
    ends = np.cumsum(rows, axis=1)
    return (ends - rows).astype(np.int32), ends[:, -1] if ends.size else np.zeros(0, np.int64)


def plan_units(probes: np.ndarray, starts: np.ndarray, layout: BlockLayout) -> list[ClassUnits]:
    """Group ``(query, probe)`` pairs by list into GEMM units, one entry per size class.

    A class's query tile is the power of two at least its lists' mean query
    count, clamped to ``[MIN_TILE, MAX_TILE]``; a list with more queries than
    the tile gets several units. Within a list, queries keep their batch order.
    """
    P = probes.shape[1]
    nb = layout.list_nblocks.astype(np.int64)
    n_lists = nb.size
    list_cls = _size_classes(nb)
    # each list's rank in (class, list) order; empty lists are dropped
    by_class = np.lexsort((np.arange(n_lists), list_cls))
    rank_of = np.empty(n_lists, np.int64)
    rank_of[by_class] = np.arange(n_lists)
    key = rank_of[probes.reshape(-1)]
    keep = nb[probes.reshape(-1)] > 0
    if not keep.any():
        return []
    # one stable sort of pair keys: pairs by (class, list), queries in batch order
    # (int16 keys take NumPy's radix sort, cheaper than its comparison sort)
    key = key.astype(np.int16 if n_lists <= np.iinfo(np.int16).max else np.int64)
    order = np.flatnonzero(keep)[np.argsort(key[keep], kind="stable")]
    lst = probes.reshape(-1)[order].astype(np.int64)
    qrow = order // P
    off = starts.reshape(-1)[order].astype(np.int64)
    counts = np.bincount(lst, minlength=n_lists)[by_class]  # pairs per list, class order
    used = counts > 0
    lists, cnt, cls = by_class[used], counts[used], list_cls[by_class][used]
    # per class: tile from the mean pairs per list; then every list's units
    edges = np.flatnonzero(np.append(True, cls[1:] != cls[:-1]))
    pairs_c = np.add.reduceat(cnt, edges)
    lists_c = np.diff(np.append(edges, cnt.size))
    tile_c = np.clip(
        [pow2_at_least(x) for x in (-(-pairs_c // lists_c)).tolist()], MIN_TILE, MAX_TILE
    )
    tile = np.repeat(tile_c, lists_c)
    units_per = -(-cnt // tile)
    units_c = np.add.reduceat(units_per, edges)
    first_unit = np.cumsum(units_per) - units_per - np.repeat(np.cumsum(units_c) - units_c, lists_c)
    r = np.arange(lst.size) - np.repeat(np.cumsum(cnt) - cnt, cnt)  # rank in its list
    t_pair = np.repeat(tile, cnt)
    unit_id = np.repeat(first_unit, cnt) + r // t_pair
    slot = r % t_pair
    out = []
    pos, lpos = 0, 0
    for c, t, n_u, n_p, n_l in zip(
        cls[edges].tolist(), tile_c.tolist(), units_c.tolist(), pairs_c.tolist(), lists_c.tolist()
    ):
        u_q = np.full((n_u, t), -1, np.int32)
        u_off = np.full((n_u, t), -1, np.int32)
        sl = slice(pos, pos + n_p)
        u_q[unit_id[sl], slot[sl]] = qrow[sl]
        u_off[unit_id[sl], slot[sl]] = off[sl]
        u_list = np.repeat(lists[lpos : lpos + n_l], units_per[lpos : lpos + n_l])
        out.append(ClassUnits(c, u_list.astype(np.int32), u_q, u_off))
        pos, lpos = pos + n_p, lpos + n_l
    return out


def buffer_width(widths: np.ndarray) -> int:
    """Bucketed score-buffer width for rows needing ``widths`` columns."""
    w = max(int(widths.max()) if widths.size else 0, 1)
    return scan_bucket(-(-w // _WIDTH_QUANTUM)) * _WIDTH_QUANTUM
