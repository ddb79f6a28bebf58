"""Host-side block allocator mirroring ``IvfState.list_blocks``.

Lists grow one block of ``B`` rows at a time from a shared pool; deleted rows
become holes that the same list reuses first. The pool grows to the next power
of two and the table width by :func:`width_bucket` (at most +25% past 16
columns: the table is ``n_lists`` rows of the largest list's width), so device
shapes (and compilations) change rarely.
"""

import numpy as np


def pow2_at_least(n: int, minimum: int = 1) -> int:
    """Smallest power of two ``>= max(n, minimum)``."""
    n = max(int(n), minimum, 1)
    return 1 << (n - 1).bit_length()


def scan_bucket(n: int) -> int:
    """Round a block count up to one of 4 steps per octave (at most +25%)."""
    n = max(int(n), 1)
    if n <= 8:
        return n
    step = 1 << (n.bit_length() - 3)
    return -(-n // step) * step


def width_bucket(n: int) -> int:
    """Table width for ``n`` blocks: a power of two up to 16, then :func:`scan_bucket`."""
    return pow2_at_least(n) if n <= 16 else scan_bucket(n)


def scan_buckets(n: np.ndarray) -> np.ndarray:
    """:func:`scan_bucket` of each entry of an integer array."""
    n = np.maximum(np.asarray(n, np.int64), 1)
    # step = 2 ** (bit_length(n) - 3) above 8; bit_length via frexp (exact below 2**53)
    step = np.left_shift(
        np.int64(1), np.maximum(np.frexp(n.astype(np.float64))[1] - 3, 0).astype(np.int64)
    )
    return np.where(n <= 8, n, -(-n // step) * step)


class BlockLayout:
    """Which block rows each list owns, and where the next row of a list goes.

    Attributes:
        block_size: rows per block ``B``.
        list_blocks: ``int32[nlist, W]`` block ids per list, ``-1`` padded.
        list_nblocks: ``int32[nlist]`` blocks per list.
        block_list: ``int32[n_blocks]`` owning list (``-1`` free).
        block_fill: ``int32[n_blocks]`` rows handed out in each block.
        list_live: ``int64[nlist]`` live rows per list.
    """

    def __init__(self, n_lists: int, block_size: int, n_blocks: int = 8, width: int = 1):
        self.block_size = block_size
        self.list_blocks = np.full((n_lists, width), -1, np.int32)
        self.list_nblocks = np.zeros(n_lists, np.int32)
        self.block_list = np.full(n_blocks, -1, np.int32)
        self.block_fill = np.zeros(n_blocks, np.int32)
        self.list_live = np.zeros(n_lists, np.int64)
        self.n_used_blocks = 0
        self.holes: list[list[int]] = [[] for _ in range(n_lists)]
        self.n_holes = 0

    @property
    def n_blocks(self) -> int:
        return self.block_list.shape[0]

    @property
    def width(self) -> int:
        return self.list_blocks.shape[1]

    def copy(self) -> "BlockLayout":
        new = BlockLayout.__new__(BlockLayout)
        new.__dict__.update(
            {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in self.__dict__.items()}
        )
        new.holes = [list(h) for h in self.holes]
        return new

    def _ensure(self, n_blocks: int, width: int) -> None:
        if n_blocks > self.n_blocks:
            new = pow2_at_least(n_blocks, 8)
            add = new - self.n_blocks
            self.block_list = np.concatenate([self.block_list, np.full(add, -1, np.int32)])
            self.block_fill = np.concatenate([self.block_fill, np.zeros(add, np.int32)])
        if width > self.width:
            new = width_bucket(width)
            pad = np.full((self.list_blocks.shape[0], new - self.width), -1, np.int32)
            self.list_blocks = np.concatenate([self.list_blocks, pad], axis=1)

    def allocate(self, labels: np.ndarray) -> np.ndarray:
        """Give each row (of list ``labels[i]``) a slot; returns ``int64[n]``.

        Rows are served in order: a list's holes first (last freed first), then
        the free tail of its last block, then new blocks from the pool.
        """
        labels = np.asarray(labels, np.int64)
        if labels.size and np.all(labels[1:] >= labels[:-1]):
            return self._allocate_sorted(labels)
        return self._allocate_rows(labels)

    def _allocate_sorted(self, labels: np.ndarray) -> np.ndarray:
        """:meth:`allocate` for non-decreasing labels, one step per list."""
        B = self.block_size
        slots = np.empty(len(labels), np.int64)
        lists, starts, counts = np.unique(labels, return_index=True, return_counts=True)
        for lab, at, c in zip(lists.tolist(), starts.tolist(), counts.tolist()):
            holes = self.holes[lab]
            h = min(c, len(holes))
            if h:
                slots[at : at + h] = holes[: -h - 1 : -1]
                del holes[-h:]
                self.n_holes -= h
            at, rest = at + h, c - h
            nb = int(self.list_nblocks[lab])
            last = int(self.list_blocks[lab, nb - 1]) if nb else -1
            if rest and last >= 0 and self.block_fill[last] < B:
                fill = int(self.block_fill[last])
                t = min(rest, B - fill)
                slots[at : at + t] = last * B + fill + np.arange(t)
                self.block_fill[last] = fill + t
                at, rest = at + t, rest - t
            if rest:
                nnew = -(-rest // B)
                first = self.n_used_blocks
                self._ensure(first + nnew, nb + nnew)
                blocks = np.arange(first, first + nnew, dtype=np.int32)
                self.n_used_blocks += nnew
                self.list_blocks[lab, nb : nb + nnew] = blocks
                self.list_nblocks[lab] = nb + nnew
                self.block_list[blocks] = lab
                self.block_fill[blocks] = B
                self.block_fill[blocks[-1]] = rest - (nnew - 1) * B
                slots[at : at + rest] = first * B + np.arange(rest)
            self.list_live[lab] += c
        return slots

    def _allocate_rows(self, labels: np.ndarray) -> np.ndarray:
        """:meth:`allocate`, one row at a time."""
        B = self.block_size
        slots = np.empty(len(labels), np.int64)
        for i, lab in enumerate(labels.tolist()):
            holes = self.holes[lab]
            if holes:
                slots[i] = holes.pop()
                self.n_holes -= 1
            else:
                nb = self.list_nblocks[lab]
                last = self.list_blocks[lab, nb - 1] if nb else -1
                if last < 0 or self.block_fill[last] == B:
                    self._ensure(self.n_used_blocks + 1, nb + 1)
                    last = self.n_used_blocks
                    self.n_used_blocks += 1
                    self.list_blocks[lab, nb] = last
                    self.list_nblocks[lab] = nb + 1
                    self.block_list[last] = lab
                slots[i] = last * B + self.block_fill[last]
                self.block_fill[last] += 1
            self.list_live[lab] += 1
        return slots

    def release(self, slot: int) -> int:
        """Turn a live slot into a hole; returns its list."""
        lab = int(self.block_list[slot // self.block_size])
        self.holes[lab].append(slot)
        self.n_holes += 1
        self.list_live[lab] -= 1
        return lab

    def list_of(self, slots: np.ndarray) -> np.ndarray:
        return self.block_list[np.asarray(slots) // self.block_size]

    def allocated_rows(self) -> int:
        """Rows inside blocks owned by lists (live, holes and block tails)."""
        return int(self.n_used_blocks * self.block_size)
