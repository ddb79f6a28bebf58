"""Reading a safetensors file: one pass, checksummed while it reads, and
optionally leaving chosen tensors on disk as read-only memory maps.

The format (https://github.com/huggingface/safetensors): an unsigned 64-bit
little-endian header length ``N``, ``N`` bytes of JSON (``{name: {"dtype",
"shape", "data_offsets": [begin, end]}}`` plus an optional ``"__metadata__"``
object of strings), then the data region, where each tensor's little-endian
bytes lie at ``[begin, end)``. The tensors must tile the data region exactly.

Why not ``safetensors.numpy.load``: it needs the whole file as one ``bytes``
object and then copies every tensor out of it (two copies of the file in
memory), it cannot hash while it reads, and it cannot leave a tensor on disk.
Here the file is read once into one buffer the arrays are views of, its SHA-256
is computed by a second thread on each chunk as soon as it is read (``hashlib``
releases the GIL), and a tensor named in ``on_disk`` is streamed through a
small buffer for the checksum (and a finiteness check of float tensors) and
then mapped, so it costs no resident memory.

Writing stays with ``safetensors.numpy.save``; this reader accepts exactly what
that writes (and any other valid file).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple, NoReturn

import numpy as np

from ._errors import IndexFileError

_DTYPES = {
    "BOOL": np.dtype(np.bool_),
    "U8": np.dtype(np.uint8),
    "I8": np.dtype(np.int8),
    "U16": np.dtype("<u2"),
    "I16": np.dtype("<i2"),
    "F16": np.dtype("<f2"),
    "U32": np.dtype("<u4"),
    "I32": np.dtype("<i4"),
    "F32": np.dtype("<f4"),
    "U64": np.dtype("<u8"),
    "I64": np.dtype("<i8"),
    "F64": np.dtype("<f8"),
}
MAX_HEADER_BYTES = 100 << 20  # the safetensors library's own limit
CHUNK_BYTES = 8 << 20  # read (and hash) granularity; a multiple of every itemsize
_PENDING = 3  # on-disk chunks in flight to the hashing thread (bounds their memory)


class TensorSpec(NamedTuple):
    """One tensor of the header: dtype, shape and its byte range in the data region."""

    dtype: np.dtype
    shape: tuple[int, ...]
    begin: int
    end: int


class TensorFile(NamedTuple):
    """What :func:`read_tensors` returns.

    Attributes:
        arrays: ``{name: array}``; in-memory arrays are writeable views of one
            buffer, ``on_disk`` ones read-only ``np.memmap`` s.
        sha256: hex SHA-256 of the whole file.
        nonfinite: names of ``on_disk`` float tensors holding NaN or Inf (they
            were checked while streaming, so callers need not touch the map).
    """

    arrays: dict[str, np.ndarray]
    sha256: str
    nonfinite: frozenset[str]


def _fail(where: Path, problem: str) -> NoReturn:
    raise IndexFileError(
        f"{where}: not a valid safetensors file ({problem}); the save is damaged or was "
        "edited; restore it from a backup or save the index again",
        path=str(where),
    )


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def unique_keys(pairs: list) -> dict:
    """``json.loads`` hook: a dict that refuses a repeated key."""
    out = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def no_constant(name: str):
    """``json.loads`` hook: refuse ``NaN``, ``Infinity`` and ``-Infinity``."""
    raise ValueError(f"non-standard JSON constant {name}")


def parse_header(raw: bytes, data_bytes: int, where: Path) -> dict[str, TensorSpec]:
    """The tensors a header describes, checked: known dtypes, non-negative int
    shapes, byte ranges of exactly ``prod(shape) * itemsize`` that tile
    ``[0, data_bytes)`` without gaps or overlaps.

    Raises:
        IndexFileError: anything else.
    """
    try:
        h = json.loads(raw.decode("utf-8"), object_pairs_hook=unique_keys,
                       parse_constant=no_constant)  # fmt: skip
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError and JSONDecodeError too
        _fail(where, f"header is not valid JSON: {e}")
    if not isinstance(h, dict):
        _fail(where, "header is not a JSON object")
    meta = h.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        _fail(where, "__metadata__ must map strings to strings")
    specs: dict[str, TensorSpec] = {}
    for name, t in h.items():
        if not isinstance(t, dict) or set(t) != {"dtype", "shape", "data_offsets"}:
            _fail(where, f"tensor {name!r} must have exactly dtype, shape and data_offsets")
        dtype = _DTYPES.get(t["dtype"]) if isinstance(t["dtype"], str) else None
        if dtype is None:
            _fail(where, f"tensor {name!r} has unsupported dtype {t['dtype']!r}")
        shape, off = t["shape"], t["data_offsets"]
        if not isinstance(shape, list) or not all(_int(s) for s in shape):
            _fail(where, f"tensor {name!r} has shape {shape!r}, not a list of ints >= 0")
        if not isinstance(off, list) or len(off) != 2 or not all(_int(o) for o in off):
            _fail(where, f"tensor {name!r} has data_offsets {off!r}, not [begin, end]")
        if off[1] - off[0] != math.prod(shape) * dtype.itemsize:
            _fail(where, f"tensor {name!r}: data_offsets {off} do not hold shape {shape}")
        specs[name] = TensorSpec(dtype, tuple(shape), off[0], off[1])
    pos = 0
    for name, s in sorted(specs.items(), key=lambda kv: (kv[1].begin, kv[1].end)):
        if s.begin != pos:
            _fail(where, f"tensor {name!r} starts at {s.begin}, expected {pos} (gap or overlap)")
        pos = s.end
    if pos != data_bytes:
        _fail(where, f"tensors end at byte {pos} of a {data_bytes}-byte data region")
    return specs


def _readinto(f, view: memoryview, where: Path) -> None:
    got = 0
    while got < len(view):
        n = f.readinto(view[got:])
        if not n:
            _fail(where, "file ends early")
        got += n


def read_tensors(path: Path, size: int, on_disk: frozenset[str] = frozenset()) -> TensorFile:
    """Read the safetensors file ``path`` of ``size`` bytes (see the module docstring).

    Args:
        path: the file.
        size: the byte size the caller expects (the manifest's); a file of
            another size is rejected before anything is read.
        on_disk: names of tensors to leave on disk, memory-mapped read-only
            (names absent from the file are ignored).

    Raises:
        IndexFileError: missing, unreadable, not a regular file, of another
            size, or not a valid safetensors file.
    """
    try:
        with open(path, "rb", buffering=0) as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise IndexFileError(f"{path}: is not a regular file", path=str(path))
            if st.st_size != size:
                raise IndexFileError(
                    f"{path}: is {st.st_size} bytes but the manifest says {size} "
                    "(truncated or replaced); restore it from a backup or save the index again",
                    path=str(path),
                )
            return _read_open(f, path, size, on_disk)
    except FileNotFoundError as e:
        raise IndexFileError(
            f"{path}: missing; the directory is not a complete save; restore it from a "
            "backup or save the index again",
            path=str(path),
        ) from e
    except OSError as e:
        raise IndexFileError(
            f"{path}: cannot be read ({e}); check the path and its permissions", path=str(path)
        ) from e


def _read_open(f, path: Path, size: int, on_disk: frozenset[str]) -> TensorFile:
    if size < 8:
        _fail(path, f"{size} bytes is shorter than the 8-byte header length")
    head = bytearray(8)
    _readinto(f, memoryview(head), path)
    n = int.from_bytes(head, "little")
    if n > min(size - 8, MAX_HEADER_BYTES):
        _fail(path, f"header length {n} exceeds the file or the {MAX_HEADER_BYTES}-byte limit")
    raw = bytearray(n)
    _readinto(f, memoryview(raw), path)
    data_start = 8 + n
    specs = parse_header(bytes(raw), size - data_start, path)
    hasher = hashlib.sha256(head)
    hasher.update(raw)
    order = sorted(specs.items(), key=lambda kv: kv[1].begin)
    in_memory = sum(s.end - s.begin for name, s in order if name not in on_disk)
    buf = np.empty(in_memory, np.uint8)
    view = memoryview(buf)
    arrays: dict[str, np.ndarray] = {}
    nonfinite: set[str] = set()
    pending: deque[Future] = deque()
    with ThreadPoolExecutor(1) as hashing:  # FIFO: chunks are hashed in file order
        pos = 0
        for name, s in order:
            nbytes = s.end - s.begin
            if name not in on_disk:
                for c in range(0, nbytes, CHUNK_BYTES):
                    chunk = view[pos + c : pos + min(nbytes, c + CHUNK_BYTES)]
                    _readinto(f, chunk, path)
                    hashing.submit(hasher.update, chunk)
                arrays[name] = np.frombuffer(buf, s.dtype, math.prod(s.shape), pos).reshape(s.shape)
                pos += nbytes
                continue
            is_float = s.dtype.kind == "f"
            for c in range(0, nbytes, CHUNK_BYTES):
                chunk = bytearray(min(CHUNK_BYTES, nbytes - c))
                _readinto(f, memoryview(chunk), path)
                if is_float and not np.isfinite(np.frombuffer(chunk, s.dtype)).all():
                    nonfinite.add(name)
                pending.append(hashing.submit(hasher.update, chunk))
                while len(pending) > _PENDING:
                    pending.popleft().result()
            arrays[name] = (
                np.memmap(path, s.dtype, "r", offset=data_start + s.begin, shape=s.shape)
                if nbytes
                else np.empty(s.shape, s.dtype)
            )
    return TensorFile(arrays, hasher.hexdigest(), frozenset(nonfinite))
