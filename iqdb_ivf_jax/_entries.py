"""`EntryTable`: the host-side bookkeeping of an index's entries.

The device state (:class:`~._state.IvfState`) knows rows by *slot* (row ``s % B``
of block ``s // B``); everything a user names lives here: id <-> slot, the
insertion sequence number of each slot (the tie-break key), metadata, and, with
spilled assignment, each entry's second slot. :class:`~._index.IvfIndex` owns one
table and replaces it wholesale on install (train, retrain, compaction).
"""

import sys

import numpy as np

from ._filter import Filter, filter_mask
from ._id_map import IntIdMap
from ._results import Hit
from ._validate import metadata_bytes

_I63 = 1 << 63


class EntryTable:
    """Ids, slots, sequence numbers and metadata of the live entries.

    Args:
        n_slots: slots the state has (``n_blocks * B``); grows with :meth:`grow`.
        spills: whether entries have a spilled second slot (``spill_lambda``).

    Two representations of id <-> slot. While every id ever bound is an int in
    ``[0, 2**63)`` (the common case) ``int_ids`` maps id -> own slot in NumPy
    arrays and ``slot_int`` maps slots back: a few bytes per entry. The first
    other id (a str, bytes or larger int) moves the table to ``id_slot`` /
    ``slot_id`` for good. Code outside this class goes through the methods
    (:meth:`slot_of`, :meth:`own_slots`, :meth:`ids_for_slots`, ...), which
    agree in both.

    Attributes:
        int_ids: :class:`IntIdMap` of id -> own slot while every id is a small
            int, else None.
        id_slot: ``{id: own slot}`` of the live entries, in insertion order
            (None while ``int_ids`` is in use).
        slot_id: ``list[n_slots]``, the id of each slot (``None`` where free);
            a spilled slot maps to its entry's id too (None while ``int_ids``
            is in use).
        slot_int: ``int64[n_slots]``, the id where it is an int below ``2**63``,
            else ``-1``: slots map to ids with one gather while every id is one.
        slot_seq: ``int32[n_slots]``, insertion sequence numbers (below
            :data:`~._search.topk.SEQ_LIMIT`, as on the device).
        slot_twin: ``int64[n_slots]`` own <-> spilled slot (``-1``: none); empty
            for an index that does not spill.
        meta: ``{id: metadata}`` for the entries that have some.
        n_wide_ids: live ids that are not ints below ``2**63``.
    """

    def __init__(self, n_slots: int = 0, *, spills: bool = False):
        self.int_ids: IntIdMap | None = IntIdMap()
        self.id_slot: dict | None = None
        self.slot_id: list | None = None
        self.slot_int = np.full(n_slots, -1, np.int64)
        self.slot_seq = np.zeros(n_slots, np.int32)
        self.slot_twin = np.full(n_slots if spills else 0, -1, np.int64)
        self.meta: dict = {}
        self.meta_bytes = 0
        self.n_wide_ids = 0

    def __len__(self) -> int:
        return len(self.int_ids) if self.int_ids is not None else len(self.id_slot or ())

    def __contains__(self, id_) -> bool:
        if self.int_ids is not None:
            return type(id_) is int and 0 <= id_ < _I63 and id_ in self.int_ids
        assert self.id_slot is not None
        return id_ in self.id_slot

    @property
    def n_slots(self) -> int:
        return self.slot_seq.size

    def slot_of(self, id_) -> int:
        """A live entry's own slot.

        Raises:
            KeyError: ``id_`` is not live.
        """
        if self.int_ids is not None:
            slot = self.int_ids.get(id_) if type(id_) is int and 0 <= id_ < _I63 else None
            if slot is None:
                raise KeyError(id_)
            return slot
        assert self.id_slot is not None
        return self.id_slot[id_]

    def any_live(self, ids: list) -> bool:
        """Whether any of the canonical ``ids`` is live."""
        if self.int_ids is None:
            assert self.id_slot is not None
            return not self.id_slot.keys().isdisjoint(ids)
        small = [i for i in ids if type(i) is int and 0 <= i < _I63]
        return self.int_ids.contains_any(np.array(small, np.int64))

    def own_slots(self) -> np.ndarray:
        """``int64[n]`` the live entries' own slots in insertion order (the
        order :meth:`live_ids` gives their ids in)."""
        if self.int_ids is not None:  # insertion order is sequence order
            slots = self.int_ids.slots()
            return slots[np.argsort(self.slot_seq[slots], kind="stable")]
        assert self.id_slot is not None
        return np.fromiter(self.id_slot.values(), np.int64, len(self.id_slot))

    def live_ids(self) -> list:
        """The live ids in insertion order."""
        if self.int_ids is not None:
            return self.slot_int[self.own_slots()].tolist()
        assert self.id_slot is not None
        return list(self.id_slot)

    def id_of(self, slot: int):
        """The id of a bound slot (own or spilled)."""
        if self.slot_id is None:
            return int(self.slot_int[slot])
        return self.slot_id[slot]

    def _to_general(self) -> None:
        """Leave the int-only representation for ``id_slot`` / ``slot_id``."""
        if self.int_ids is None:
            return
        own = self.own_slots()
        ids = self.slot_int[own].tolist()
        twin = self.slot_twin[own] if self.slot_twin.size else np.full(own.size, -1, np.int64)
        self.set_general(ids, own, twin)

    def set_general(self, ids: list, own: np.ndarray, twin: np.ndarray) -> None:
        """Use ``id_slot`` / ``slot_id`` for live ``ids`` (in insertion order)
        whose own slots are ``own`` and spilled slots ``twin`` (``-1``: none)."""
        slot_id: list = [None] * self.n_slots
        for id_, s, t in zip(ids, own.tolist(), twin.tolist()):
            slot_id[s] = id_
            if t >= 0:
                slot_id[t] = id_
        self.id_slot = dict(zip(ids, own.tolist()))
        self.slot_id = slot_id
        self.int_ids = None

    def grow(self, n_slots: int) -> None:
        """Extend the per-slot arrays to ``n_slots`` (new slots free)."""
        grow = n_slots - self.n_slots
        if grow <= 0:
            return
        if self.slot_id is not None:
            self.slot_id.extend([None] * grow)
        self.slot_int = np.concatenate([self.slot_int, np.full(grow, -1, np.int64)])
        self.slot_seq = np.concatenate([self.slot_seq, np.zeros(grow, np.int32)])
        if self.slot_twin.size:
            self.slot_twin = np.concatenate([self.slot_twin, np.full(grow, -1, np.int64)])

    def bind(
        self,
        ids: list,
        slots: np.ndarray,
        metas: list,
        seqs: np.ndarray,
        int_ids: np.ndarray | None = None,
        slots2: np.ndarray | None = None,
    ) -> None:
        """Record new entries: id <-> slot, seq and metadata (bulk updates).

        Args:
            ids: canonical ids, none of them live.
            slots: ``int64[n]`` their own slots (free, within :meth:`grow`'s size).
            metas: canonical metadata or None, one per id.
            seqs: ``int64[n]`` their sequence numbers.
            int_ids: the ids as a non-negative integer array, when they came as one
                (a faster mirror update).
            slots2: ``int64[n]`` the spilled slots (they map back to the same ids).
        """
        if int_ids is not None:
            vals, wide = int_ids.astype(np.int64), 0  # uint64 ids >= 2**63 wrap: replaced
            if int_ids.dtype == np.uint64:
                narrow = int_ids < np.uint64(_I63)
                vals, wide = np.where(narrow, vals, -1), int(np.count_nonzero(~narrow))
        else:
            narrow_ids = [i if type(i) is int and 0 <= i < _I63 else -1 for i in ids]
            vals = np.array(narrow_ids, np.int64)
            wide = narrow_ids.count(-1)
        if wide:
            self._to_general()
        if self.int_ids is not None:
            self.int_ids.add(vals, slots)
        else:
            assert self.id_slot is not None and self.slot_id is not None
            slot_list = slots.tolist()
            self.id_slot.update(zip(ids, slot_list))
            for id_, slot in zip(ids, slot_list):
                self.slot_id[slot] = id_
            if slots2 is not None:
                for id_, slot in zip(ids, slots2.tolist()):
                    self.slot_id[slot] = id_
        self.slot_seq[slots] = seqs
        self.slot_int[slots] = vals
        self.n_wide_ids += wide
        if slots2 is not None:
            self.slot_int[slots2] = self.slot_int[slots]
            self.slot_seq[slots2] = seqs
            self.slot_twin[slots] = slots2
            self.slot_twin[slots2] = slots
        if metas.count(None) < len(metas):
            with_meta = [(i, m) for i, m in zip(ids, metas) if m is not None]
            self.meta.update(with_meta)
            self.meta_bytes += sum(metadata_bytes(m) for _, m in with_meta)

    def entry_slots(self, id_) -> list[int]:
        """A live entry's slots: its own, then its spilled copy's if it has one.

        Raises:
            KeyError: ``id_`` is not live.
        """
        slot = self.slot_of(id_)
        twin = int(self.slot_twin[slot]) if self.slot_twin.size else -1
        return [slot] if twin < 0 else [slot, twin]

    def unbind(self, id_) -> list[int]:
        """Forget a live entry; returns its slots (as :meth:`entry_slots`)."""
        slots = self.entry_slots(id_)
        if self.int_ids is not None:
            slot = self.int_ids.pop(id_)
        else:
            assert self.id_slot is not None and self.slot_id is not None
            slot = self.id_slot.pop(id_)
            for s in slots:
                self.slot_id[s] = None
        if self.slot_int[slot] < 0:  # the mirror holds -1 for a live id only if it is wide
            self.n_wide_ids -= 1
        if len(slots) > 1:
            self.slot_twin[slots] = -1
        for s in slots:
            self.slot_int[s] = -1
        self.meta_bytes -= metadata_bytes(self.meta.pop(id_, None))
        return slots

    def metadata(self, id_) -> dict | None:
        """A copy of the entry's metadata, or None."""
        meta = self.meta.get(id_)
        return dict(meta) if meta is not None else None

    def live_slots(self) -> np.ndarray:
        """``int64[n]`` own slots of the live entries, in sequence order."""
        slots = self.own_slots()
        if self.int_ids is not None:  # already in sequence order
            return slots
        return slots[np.argsort(self.slot_seq[slots], kind="stable")]

    # ------------------------------------------------------------- slot -> id
    def ids_for_slots(self, slots) -> list:
        """Ids of ``slots`` (any shape, flattened); ``-1`` -> None."""
        flat = np.asarray(slots).reshape(-1)
        if self.slot_id is None:
            ids = self.slot_int[np.maximum(flat, 0)].tolist()
            return [None if s < 0 else i for s, i in zip(flat.tolist(), ids)]
        slot_id = self.slot_id
        return [None if s < 0 else slot_id[s] for s in flat.tolist()]

    def id_array(self, slots: np.ndarray) -> np.ndarray:
        """Ids of ``slots`` ``int64[...]`` in the same shape: ``int64`` padded with
        ``-1`` while every live id is an int below ``2**63``, else an object array
        padded with ``None``."""
        if self.n_wide_ids == 0:
            return np.where(slots >= 0, self.slot_int[np.maximum(slots, 0)], -1)
        out = np.full(slots.shape, None, object)
        for idx in zip(*np.nonzero(slots >= 0)):
            out[idx] = self.id_of(slots[idx])
        return out

    def hits(self, D: np.ndarray, S: np.ndarray) -> list[list[Hit]]:
        """One ``list[Hit]`` per row of ``(D f32[nq, k], S int64[nq, k])``,
        stopping at the first padded slot."""
        ids = iter(self.ids_for_slots(S))  # row by row, as zip below walks them
        out = []
        for drow, srow in zip(D.tolist(), S.tolist()):
            row_ids = [next(ids) for _ in srow]
            hits = []
            for d, s, id_ in zip(drow, srow, row_ids):
                if s < 0:
                    break
                hits.append(Hit(id_, float(d), self.metadata(id_)))
            out.append(hits)
        return out

    def filter_slots(self, flt: Filter) -> np.ndarray:
        """``bool[n_slots]``: the slots whose entry's metadata passes ``flt``
        (a spilled copy follows its entry; free slots are False)."""
        mask = np.zeros(self.n_slots, bool)
        if not len(self):
            return mask
        slots = self.own_slots()
        ids = self.ids_for_slots(slots)
        keep = filter_mask(flt, [self.meta.get(i) for i in ids])
        mask[slots] = keep
        if self.slot_twin.size:
            twins = self.slot_twin[slots]
            spilled = twins >= 0
            mask[twins[spilled]] = keep[spilled]
        return mask

    def nbytes(self) -> dict[str, int]:
        """Host memory: ``{"id_maps": ..., "metadata": ...}`` in bytes."""
        arrays = self.slot_seq.nbytes + self.slot_int.nbytes + self.slot_twin.nbytes
        if self.int_ids is not None:
            id_maps = arrays + self.int_ids.nbytes()
        else:
            assert self.id_slot is not None
            id_maps = (
                arrays
                + sys.getsizeof(self.id_slot)
                + sys.getsizeof(self.slot_id)
                + sum(sys.getsizeof(i) for i in self.id_slot)
            )
        return {"id_maps": id_maps, "metadata": sys.getsizeof(self.meta) + self.meta_bytes}
