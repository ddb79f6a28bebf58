"""`IntIdMap`: int id -> slot for millions of ids at a few bytes each.

A Python ``dict`` of int to int costs about 100 bytes an entry (the hash entry
and two int objects); an index of int ids needs nothing of the sort. Here the
ids live in a sorted ``int64`` key array with their slots beside it, looked up
by binary search; recent single additions wait in a small dict and are merged
in bulk, and removals leave a ``-1`` slot until the next merge drops them.
"""

import numpy as np


class IntIdMap:
    """Map of ids (ints in ``[0, 2**63)``) to slots (ints ``>= 0``).

    Attributes:
        keys: ``int64[m]`` sorted, unique ids (some removed: slot ``-1``).
        vals: ``int32[m]`` their slots (slots index ``int32`` device rows),
            ``-1`` for a removed id.
        recent: ``{id: slot}`` additions not merged yet (none also in ``keys``
            with a slot ``>= 0``).
        n_dead: removed ids still in ``keys``.
    """

    def __init__(self) -> None:
        self.keys = np.zeros(0, np.int64)
        self.vals = np.zeros(0, np.int32)
        self.recent: dict[int, int] = {}
        self.n_dead = 0

    def __len__(self) -> int:
        return self.keys.size - self.n_dead + len(self.recent)

    def _index(self, id_: int) -> int:
        """Position of a live ``id_`` in ``keys``, or -1."""
        i = int(np.searchsorted(self.keys, id_))
        if i < self.keys.size and self.keys[i] == id_ and self.vals[i] >= 0:
            return i
        return -1

    def get(self, id_: int) -> int | None:
        """The slot of ``id_``, or None."""
        slot = self.recent.get(id_)
        if slot is not None:
            return slot
        i = self._index(id_)
        return None if i < 0 else int(self.vals[i])

    def __contains__(self, id_: int) -> bool:
        return self.get(id_) is not None

    def contains_any(self, ids: np.ndarray) -> bool:
        """Whether any of ``ids`` (``int64[n]``) is in the map."""
        if self.recent and not self.recent.keys().isdisjoint(ids.tolist()):
            return True
        if not self.keys.size or not ids.size:
            return False
        i = np.minimum(np.searchsorted(self.keys, ids), self.keys.size - 1)
        return bool(((self.keys[i] == ids) & (self.vals[i] >= 0)).any())

    def add(self, ids: np.ndarray, slots: np.ndarray) -> None:
        """Add ``ids`` (``int64[n]``, unique, none in the map) at ``slots``."""
        if ids.size <= 64:
            self.recent.update(zip(ids.tolist(), slots.tolist()))
            if len(self.recent) > max(1024, self.keys.size >> 5):
                self._merge(ids[:0], slots[:0])
        else:
            self._merge(ids, slots)

    def pop(self, id_: int) -> int:
        """Remove ``id_``; returns its slot.

        Raises:
            KeyError: ``id_`` is not in the map.
        """
        slot = self.recent.pop(id_, None)
        if slot is not None:
            return slot
        i = self._index(id_)
        if i < 0:
            raise KeyError(id_)
        slot = int(self.vals[i])
        self.vals[i] = -1
        self.n_dead += 1
        if self.n_dead > max(1024, self.keys.size >> 1):
            self._merge(self.keys[:0], self.vals[:0])
        return slot

    def _merge(self, ids: np.ndarray, slots: np.ndarray) -> None:
        """Rebuild the arrays from the live entries, ``recent`` and ``ids``."""
        live = self.vals >= 0
        n = len(self.recent)
        keys = np.concatenate(
            [self.keys[live], np.fromiter(self.recent.keys(), np.int64, n), ids.astype(np.int64)]
        )
        vals = np.concatenate(
            [
                self.vals[live],
                np.fromiter(self.recent.values(), np.int32, n),
                slots.astype(np.int32),
            ]
        )
        order = np.argsort(keys, kind="stable")
        self.keys, self.vals = keys[order], vals[order]
        self.recent, self.n_dead = {}, 0

    def slots(self) -> np.ndarray:
        """``int64[len]`` the slots of every id, in no particular order."""
        n = len(self.recent)
        return np.concatenate(
            [self.vals[self.vals >= 0], np.fromiter(self.recent.values(), np.int64, n)],
            dtype=np.int64,
        )

    def nbytes(self) -> int:
        """Approximate memory: the arrays plus ~100 bytes per recent entry."""
        return int(self.keys.nbytes + self.vals.nbytes + 100 * len(self.recent))
