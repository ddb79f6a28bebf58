"""Helpers of streamed adds: rows gathered from a stream and taken in chunks, and
the note a chunked add attaches to the error that stopped it."""

import numpy as np

from ._errors import InvalidArgumentError, InvalidConfigError
from ._validate import as_vector_array

STREAM_CHUNK_ROWS = 65_536  # rows per committed chunk of a streamed add


def note_committed(err: BaseException, done: int, what: str) -> None:
    """Tell the caller of a chunked add how far it got (the index holds those rows)."""
    err.committed_rows = done  # type: ignore[attr-defined]
    err.add_note(
        f"{what}: {done} rows were committed before this error and stay in the index; "
        "the failed chunk was not applied"
    )


class PendingRows:
    """Rows gathered from a stream, taken from the front in chunks."""

    def __init__(self, dim: int):
        self.dim = dim
        self.ids: list = []
        self.metas: list = []
        self.parts: list[np.ndarray] = []
        self.n = 0

    def add(self, item) -> None:
        if not isinstance(item, tuple) or len(item) not in (2, 3):
            raise InvalidArgumentError(
                "each stream item must be a tuple (ids, vectors) or (ids, vectors, metadata), "
                f"got {type(item).__name__}"
            )
        ids, vectors = item[0], item[1]
        metadata = item[2] if len(item) == 3 else None
        if isinstance(ids, (str, bytes)) or not hasattr(ids, "__len__"):
            raise InvalidArgumentError(
                "ids must be a sequence (list, tuple or array) of ids; wrap one id in a list"
            )
        x = as_vector_array(vectors, self.dim, rank=2, what="vectors")
        ids = list(ids.tolist() if isinstance(ids, np.ndarray) else ids)
        if metadata is None:
            metas = [None] * len(ids)
        elif isinstance(metadata, dict) or not hasattr(metadata, "__len__"):
            raise InvalidArgumentError(
                "metadata must be None or a sequence of dicts/None, one per id"
            )
        else:
            metas = list(metadata)
        if not (len(ids) == x.shape[0] == len(metas)):
            raise InvalidConfigError(
                f"ids ({len(ids)}), vectors ({x.shape[0]}) and metadata ({len(metas)}) "
                "must have equal lengths"
            )
        self.ids += ids
        self.metas += metas
        self.parts.append(x)
        self.n += len(ids)

    def rows(self) -> np.ndarray:
        """All pending vectors as one array (kept pending)."""
        if len(self.parts) > 1:
            self.parts = [np.concatenate(self.parts)]
        return self.parts[0] if self.parts else np.zeros((0, self.dim), np.float32)

    def take(self, n: int) -> tuple[list, np.ndarray, list]:
        """Remove and return the first ``n`` pending rows."""
        x = self.rows()
        ids, metas = self.ids[:n], self.metas[:n]
        del self.ids[:n], self.metas[:n]
        self.parts = [x[n:]] if n < x.shape[0] else []
        self.n -= n
        return ids, x[:n], metas
