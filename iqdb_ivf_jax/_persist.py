"""Save an :class:`~._index.IvfIndex` to a directory and load it back.

Format (``format_version`` 1)
-----------------------------
A save is a directory holding exactly two files, ``arrays.safetensors`` and
``manifest.json``. Nothing is pickled.

``arrays.safetensors`` (the safetensors format: a JSON header of names, dtypes,
shapes and offsets, then the raw little-endian bytes) holds every array:

- ``state.<field>``: each :class:`~._state.IvfState` array (``centroids``,
  ``vectors``, ``norms``, ``codes``, ``pq_terms``, ``codebooks``, ``seqs``,
  ``valid``, ``twin``, ``list_blocks``, ``list_nblocks``, ``centroid_sq``) with
  its device dtype and shape;
- ``layout.<field>``: the host block layout (``list_blocks``, ``list_nblocks``,
  ``block_list``, ``block_fill``, ``list_live``), and its per-list hole stacks as
  ``layout.holes`` (int64 slots, list after list, each stack bottom to top) with
  ``layout.hole_offsets`` (int64 ``[nlist + 1]``);
- ``entries.<field>``: the per-slot tables ``slot_int``, ``slot_seq`` and
  ``slot_twin`` (int64), and ``entries.own_slots`` (int64 ``[n]``: each live
  entry's own slot, in the index's insertion order);
- ``ids.*``: the live ids in that same order: ``ids.kind`` (uint8: 1 int, 2 str,
  3 bytes), ``ids.int`` (uint64: the int ids, 0 for the others), ``ids.blob``
  (uint8: the str ids in UTF-8 with ``surrogatepass`` and the bytes ids,
  concatenated) and ``ids.offsets`` (int64 ``[n + 1]``: entry ``i``'s text is
  ``blob[offsets[i]:offsets[i + 1]]``, empty for an int id). A spilled copy's
  slot maps to its entry's id through ``slot_twin``.

An untrained index has only the ``entries.*`` and ``ids.*`` arrays (all empty).

``manifest.json`` is one JSON object (ASCII; no ``NaN``/``Infinity`` literals)
with the keys ``format`` (``"iqdb-ivf-jax"``), ``format_version`` (1),
``library_version``, ``jax_version``, ``key_scheme_version`` (2: the scheme of
the training keys, for information), ``dim``, ``metric`` (its name),
``config`` (every :class:`~._config.IvfConfig` field), ``trained``,
``next_seq``, ``kmeans_iterations``, ``kmeans_inertia``, ``state``
(``metric``, ``by_residual``; None when untrained), ``layout`` (``block_size``,
``n_blocks``, ``width``, ``n_used_blocks``, ``n_holes``; None when untrained),
``entries`` (``n_slots``, ``n_live``, ``spills``, ``meta_bytes``,
``n_wide_ids``), ``ids`` (``encoding``, ``blob_bytes``), ``metadata`` (a list of
``[own slot, {key: value}]`` pairs in the index's metadata order; a non-finite
float, here and in ``kmeans_inertia``, is written ``{"float64": "<its 64 bits in
16 hex digits>"}``), ``files`` (``{"arrays.safetensors": {"bytes": n, "sha256":
hex}}``) and, last, ``manifest_sha256``: the SHA-256 of the manifest without that
key, serialised as ``json.dumps(m, indent=1, ensure_ascii=True,
allow_nan=False)``. The file must be exactly that serialisation of the whole
object plus a newline, so that any changed byte is caught.

A round trip is bit-identical: every array, every id (and the order of the id
map), every metadata value (floats by ``repr`` or by their bits), the config
and the counters. A save first runs the load's checks on what it is about to
write, so that whatever saves also loads.

Writes are atomic
-----------------
:func:`save_index` writes both files into a fresh sibling directory
``.<name>.tmp-<random>``, fsyncs them and the directory, then swaps it in: an
existing save is renamed to ``.<name>.old``, the new directory to ``<name>``,
the parent directory is fsynced and the old save deleted. An existing ``path``
is replaced only if it is a directory holding nothing but the two files above
(a save, or an empty directory). A crash at any point leaves the previous save or
the new one loadable: if ``<name>`` is missing, :func:`load_index` loads
``.<name>.old`` (the last save, renamed out of the way just before the crash)
and, if there is none, the newest ``.<name>.tmp-*`` that verifies completely (a
first save interrupted just before its rename). Loading never repairs the
directory; the next save does, and a successful save deletes stale ``.old``,
``.tmp-*`` and ``.trash-*`` siblings of its own name. Concurrent saves to one
path are not supported.

Reads are validated
-------------------
:func:`load_index` checks everything before it builds anything: the JSON, the
format and its version, every key and its type, the file sizes and checksums,
the safetensors header, every array's dtype and shape against the manifest,
and the values (slots, list and block ids in range, offsets monotone and inside
their buffers, rows live exactly where an entry is, the layout's bookkeeping
consistent with the rows, ids unique, stored vectors finite).
Every failure raises :class:`IndexFileError` (a missing save included; the
``OSError``, JSON, safetensors or decoding error is its ``__cause__``).
Loading runs no k-means, assignment or kernel: it only reads arrays (in one
pass, hashing as it reads: :mod:`._tensor_file`) and puts them on the device.
With ``mmap=True`` an IVF-PQ save's ``state.vectors`` is streamed for the
checksum and the finiteness check, then memory-mapped instead of kept; the
index's state then holds no vectors (see ``IvfIndex.load``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
import os
import secrets
import shutil
import stat
import struct
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import jax
import numpy as np
import safetensors.numpy

from ._config import IvfConfig, Metric
from ._entries import EntryTable
from ._errors import (
    IndexFileError,
    InvalidArgumentError,
    InvalidConfigError,
    InvalidMetricError,
)
from ._layout import BlockLayout
from ._search.topk import SEQ_LIMIT
from ._sharding import DeviceMesh
from ._state import ROW_FIELDS, IvfState, logical_order
from ._tensor_file import no_constant, read_tensors, unique_keys
from ._validate import canonical_metadata, metadata_bytes

if TYPE_CHECKING:
    from ._index import IvfIndex

FORMAT = "iqdb-ivf-jax"
FORMAT_VERSION = 1
KEY_SCHEME_VERSION = 2
MANIFEST = "manifest.json"
ARRAYS = "arrays.safetensors"
SAVE_FILES = (ARRAYS, MANIFEST)  # written in this order: the manifest last
ID_ENCODING = "kind-u8 int-u64 blob-utf8-surrogatepass offsets-i64"
KIND_INT, KIND_STR, KIND_BYTES = 1, 2, 3

_STATE_ARRAYS = (
    "centroids",
    "vectors",
    "norms",
    "codes",
    "pq_terms",
    "codebooks",
    "seqs",
    "valid",
    "twin",
    "list_blocks",
    "list_nblocks",
    "centroid_sq",
)
_LAYOUT_ARRAYS = ("list_blocks", "list_nblocks", "block_list", "block_fill", "list_live")
_LAYOUT_ATTRS = frozenset(
    _LAYOUT_ARRAYS + ("block_size", "n_used_blocks", "holes", "n_holes")
)  # every attribute BlockLayout.__init__ sets
_ENTRY_ATTRS = frozenset(
    (
        "int_ids",
        "id_slot",
        "slot_id",
        "slot_int",
        "slot_seq",
        "slot_twin",
        "meta",
        "meta_bytes",
        "n_wide_ids",
    )
)  # every attribute EntryTable.__init__ sets
_FIX = "the save is damaged or was edited; restore it from a backup or save the index again"
_I63 = 1 << 63
_F32, _I32, _I64, _U8, _U64 = (
    np.dtype(np.float32),
    np.dtype(np.int32),
    np.dtype(np.int64),
    np.dtype(np.uint8),
    np.dtype(np.uint64),
)


def _fail(where, field: str | None, problem: str, fix: str = _FIX) -> NoReturn:
    what = f"{where}: {field}: " if field else f"{where}: "
    raise IndexFileError(f"{what}{problem}; {fix}", path=str(where), field=field)


# ---------------------------------------------------------------------- encode
def _dumps(obj) -> str:
    """The manifest's one JSON serialisation (also the checksum's)."""
    return json.dumps(obj, indent=1, ensure_ascii=True, allow_nan=False)


def _float_out(x: float) -> Any:
    x = float(x)
    if math.isfinite(x):
        return x
    return {"float64": f"{struct.unpack('<Q', struct.pack('<d', x))[0]:016x}"}


def _meta_out(meta: dict) -> dict:
    out = {}
    for key, value in meta.items():
        if isinstance(value, float):
            value = _float_out(value)
        out[key] = value
    return out


def _config_out(config: IvfConfig) -> dict:
    out: dict[str, Any] = {}
    for key, value in dataclasses.asdict(config).items():
        if value is None or isinstance(value, (bool, str)):
            out[key] = value
        elif isinstance(value, int):
            out[key] = int(value)
        elif isinstance(value, numbers.Real):  # float, or a NumPy / Fraction spill_lambda
            out[key] = float(value)
        else:
            out[key] = value
    return out


def _encode_ids(entries: EntryTable, own: np.ndarray) -> dict[str, np.ndarray]:
    n = own.size
    if entries.n_wide_ids == 0:  # every id is an int below 2**63: slot_int holds them
        return {
            "ids.kind": np.full(n, KIND_INT, np.uint8),
            "ids.int": entries.slot_int[own].astype(np.uint64),
            "ids.offsets": np.zeros(n + 1, np.int64),
            "ids.blob": np.zeros(0, np.uint8),
        }
    kind = np.empty(n, np.uint8)
    ints = np.zeros(n, np.uint64)
    lens = np.zeros(n, np.int64)
    pieces = []
    for i, id_ in enumerate(entries.ids_for_slots(own)):
        if isinstance(id_, int):
            kind[i], ints[i] = KIND_INT, id_
            continue
        if isinstance(id_, str):
            kind[i], raw = KIND_STR, id_.encode("utf-8", "surrogatepass")
        else:
            kind[i], raw = KIND_BYTES, bytes(id_)
        pieces.append(raw)
        lens[i] = len(raw)
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(lens, out=offsets[1:])
    return {
        "ids.kind": kind,
        "ids.int": ints,
        "ids.offsets": offsets,
        "ids.blob": np.frombuffer(b"".join(pieces), np.uint8).copy(),
    }


def _encode(index: IvfIndex) -> tuple[dict, dict[str, np.ndarray]]:
    """The manifest (without ``files`` and checksum) and the arrays of ``index``."""
    from . import __version__

    state, layout, entries = index._state, index._layout, index._entries
    trained = state is not None and layout is not None
    arrays: dict[str, np.ndarray] = {}
    state_m = layout_m = None
    if trained:
        assert state is not None and layout is not None
        for name in _STATE_ARRAYS:
            a = np.asarray(getattr(state, name))
            if name in ROW_FIELDS:  # a sharded index's storage order: saved in block order
                a = logical_order(a, state.interleave)
            arrays[f"state.{name}"] = np.ascontiguousarray(a)
        if index._raw_vectors is not None:  # loaded with mmap=True: read from the map
            arrays["state.vectors"] = index._raw_vectors
        for name in _LAYOUT_ARRAYS:
            arrays[f"layout.{name}"] = np.ascontiguousarray(getattr(layout, name))
        lens = [len(h) for h in layout.holes]
        offsets = np.zeros(len(lens) + 1, np.int64)
        np.cumsum(lens, out=offsets[1:])
        arrays["layout.holes"] = np.array([s for h in layout.holes for s in h], np.int64)
        arrays["layout.hole_offsets"] = offsets
        state_m = {"metric": state.metric.value, "by_residual": bool(state.by_residual)}
        layout_m = {
            "block_size": int(layout.block_size),
            "n_blocks": int(layout.n_blocks),
            "width": int(layout.width),
            "n_used_blocks": int(layout.n_used_blocks),
            "n_holes": int(layout.n_holes),
        }
    own = entries.own_slots()
    arrays["entries.own_slots"] = own
    arrays["entries.slot_int"] = np.ascontiguousarray(entries.slot_int, np.int64)
    arrays["entries.slot_seq"] = np.ascontiguousarray(entries.slot_seq, np.int64)
    arrays["entries.slot_twin"] = np.ascontiguousarray(entries.slot_twin, np.int64)
    arrays.update(_encode_ids(entries, own))
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "jax_version": jax.__version__,
        "key_scheme_version": KEY_SCHEME_VERSION,
        "dim": int(index._dim),
        "metric": index._metric.value,
        "config": _config_out(index._config),
        "trained": trained,
        "next_seq": int(index._next_seq),
        "kmeans_iterations": int(index._kmeans_iterations),
        "kmeans_inertia": (
            None if index._kmeans_inertia is None else _float_out(index._kmeans_inertia)
        ),
        "state": state_m,
        "layout": layout_m,
        "entries": {
            "n_slots": entries.n_slots,
            "n_live": len(entries),
            "spills": index._config.spill_lambda is not None,
            "meta_bytes": int(entries.meta_bytes),
            "n_wide_ids": int(entries.n_wide_ids),
        },
        "ids": {"encoding": ID_ENCODING, "blob_bytes": int(arrays["ids.blob"].size)},
        "metadata": [[entries.slot_of(i), _meta_out(m)] for i, m in entries.meta.items()],
    }
    return manifest, arrays


def manifest_text(manifest: dict) -> bytes:
    """The manifest file's bytes: ``manifest`` plus its ``manifest_sha256``."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    digest = hashlib.sha256(_dumps(body).encode("ascii")).hexdigest()
    return (_dumps({**body, "manifest_sha256": digest}) + "\n").encode("ascii")


# ----------------------------------------------------------------------- write
def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fsync_dir(path) -> None:
    if os.name == "nt":  # directories cannot be opened for fsync there
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_replaceable(path: Path) -> None:
    """Raise unless ``path`` is absent or a directory holding only save files."""
    if not os.path.lexists(path):
        return
    if path.is_symlink() or not path.is_dir():
        _fail(
            path,
            None,
            "exists and is not a saved index (a directory); refusing to replace it",
            "save to another path, or remove it first",
        )
    others = sorted(set(os.listdir(path)) - set(SAVE_FILES))
    if others:
        _fail(
            path,
            None,
            f"is a directory holding other files than a save ({others[:5]}); "
            "refusing to replace it",
            "save to another path, or empty it first",
        )


def _sibling(path: Path, tag: str) -> Path:
    return path.parent / f".{path.name}.{tag}"


def _discard(directory: Path, target: Path) -> None:
    """Remove a directory beside ``target``: renamed aside (atomic), then deleted."""
    trash = _sibling(target, f"trash-{secrets.token_hex(8)}")
    os.rename(directory, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _stale_siblings(path: Path) -> list[Path]:
    prefix = f".{path.name}."
    try:
        names = os.listdir(path.parent)
    except OSError:
        return []
    out = []
    for name in names:
        rest = name[len(prefix) :] if name.startswith(prefix) else ""
        if rest == "old" or rest.startswith(("tmp-", "trash-")):
            out.append(path.parent / name)
    return out


def _install(path: Path, write: Callable[[Path], None]) -> None:
    """Have ``write(directory)`` fill a new directory, then swap it in at ``path``
    (see the module docstring for the protocol)."""
    if not path.name or path.name in (".", ".."):
        _fail(path, None, "is not a directory name to save to", "pass a path such as 'my_index'")
    path.parent.mkdir(parents=True, exist_ok=True)
    _check_replaceable(path)
    old = _sibling(path, "old")
    _check_replaceable(old)
    tmp = _sibling(path, f"tmp-{secrets.token_hex(8)}")
    os.mkdir(tmp)
    try:
        write(tmp)
        _fsync_dir(tmp)
    except Exception:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    exists = os.path.lexists(path)
    if exists and os.path.lexists(old):
        _discard(old, path)  # a stale .old beside a complete save: the save is newer
    if exists:
        os.rename(path, old)  # a crash from here until the next rename leaves .old
    os.rename(tmp, path)
    _fsync_dir(path.parent)
    # -- the new save is in place; what follows only tidies up
    for stale in _stale_siblings(path):
        try:
            if stale.name.endswith(".old") or ".tmp-" in stale.name:
                _discard(stale, path)
            else:
                shutil.rmtree(stale, ignore_errors=True)
        except OSError:
            pass


def save_index(index: IvfIndex, path) -> int:
    """Write ``index`` to the directory ``path`` atomically; returns the bytes
    written (both files).

    The directory is created (with missing parents). An existing save at
    ``path`` is replaced atomically; an existing ``path`` that is not a save
    (a file, or a directory holding other files) is left alone.

    Raises:
        IndexFileError: ``path`` is not replaceable, or writing failed (the
            ``OSError`` is its cause); the previous save, if any, or the new one
            stays loadable.
        TypeError: ``index`` is not an IvfIndex, or ``path`` not a str or path-like.
    """
    from ._index import IvfIndex

    if not isinstance(index, IvfIndex):
        raise InvalidArgumentError(f"index must be an IvfIndex, got {type(index).__name__}")
    path = Path(os.fspath(path))
    manifest, arrays = _encode(index)
    try:  # the same checks as a load: never write a save that would not load
        _decode(manifest, arrays, path / MANIFEST, path / ARRAYS)
    except IndexFileError as e:
        raise IndexFileError(
            f"{path}: refusing to save an inconsistent index ({e}); please report this bug",
            path=str(path),
            field=e.field,
        ) from e
    blob = safetensors.numpy.save(arrays)
    sizes = [len(blob)]

    def write(directory: Path) -> None:  # the arrays, then the manifest naming their hash
        with ThreadPoolExecutor(1) as pool:
            digest = pool.submit(_sha256, blob)  # overlaps the write (hashlib drops the GIL)
            _write_file(directory / ARRAYS, blob)
            manifest["files"] = {ARRAYS: {"bytes": len(blob), "sha256": digest.result()}}
        text = manifest_text(manifest)
        _write_file(directory / MANIFEST, text)
        sizes.append(len(text))

    try:
        _install(path, write)
    except OSError as e:
        raise IndexFileError(
            f"{path}: could not write the save ({e}); the previous save (if any) or the new "
            "one stays loadable; check the path, its permissions and the free space",
            path=str(path),
        ) from e
    return sum(sizes)


# ------------------------------------------------------------------------ read
def _read_file(path: Path) -> bytes:
    """The whole of the manifest file (the arrays file: :mod:`._tensor_file`)."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                _fail(path, None, "is not a regular file")
            data = f.read()
    except FileNotFoundError as e:
        raise IndexFileError(
            f"{path}: missing; the directory is not a complete save; {_FIX}", path=str(path)
        ) from e
    except OSError as e:
        raise IndexFileError(
            f"{path}: cannot be read ({e}); check the path and its permissions", path=str(path)
        ) from e
    return data


def _parse_manifest(raw: bytes, where: Path) -> dict:
    """JSON -> dict, checking the format, its version and the manifest checksum."""
    try:
        m = json.loads(
            raw.decode("utf-8"), object_pairs_hook=unique_keys, parse_constant=no_constant
        )
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError and JSONDecodeError too
        raise IndexFileError(f"{where}: not valid JSON ({e}); {_FIX}", path=str(where)) from e
    if not isinstance(m, dict):
        _fail(where, None, "is not a JSON object")
    if m.get("format") != FORMAT:
        _fail(
            where,
            "format",
            f"is {m.get('format')!r}, not {FORMAT!r}: not an iqdb-ivf-jax save",
            "pass the directory that IvfIndex.save wrote",
        )
    version = m.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        _fail(where, "format_version", f"must be an int >= 1, got {version!r}")
    if version > FORMAT_VERSION:
        _fail(
            where,
            "format_version",
            f"is {version}, written by a newer iqdb-ivf-jax (this one reads version "
            f"{FORMAT_VERSION})",
            "upgrade iqdb-ivf-jax to load it",
        )
    digest = m.get("manifest_sha256")
    body = {k: v for k, v in m.items() if k != "manifest_sha256"}
    try:
        text = _dumps(body).encode("ascii")
    except (ValueError, TypeError, RecursionError) as e:
        raise IndexFileError(
            f"{where}: cannot be re-serialised for its checksum ({e}); {_FIX}", path=str(where)
        ) from e
    if digest != hashlib.sha256(text).hexdigest():
        _fail(where, "manifest_sha256", "does not match the manifest's content")
    if raw != manifest_text(m):  # so that any changed byte is caught, layout included
        _fail(where, None, "is not byte-identical to its canonical serialisation")
    return m


class _Manifest:
    """Typed getters over the manifest dict; every failure names the key."""

    def __init__(self, m: dict, where: Path):
        self.m, self.where = m, where

    def fail(self, field: str, problem: str, fix: str = _FIX) -> NoReturn:
        _fail(self.where, field, problem, fix)

    def get(self, d: dict, key: str, field: str):
        if not isinstance(d, dict):
            self.fail(field.rsplit(".", 1)[0], f"must be a JSON object, got {type(d).__name__}")
        if key not in d:
            self.fail(field, "is missing")
        return d[key]

    def int(self, d: dict, key: str, field: str, lo: int = 0, hi: int | None = None) -> int:
        v = self.get(d, key, field)
        if isinstance(v, bool) or not isinstance(v, int):
            self.fail(field, f"must be an int, got {type(v).__name__}")
        if v < lo or (hi is not None and v > hi):
            span = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
            self.fail(field, f"is {v}, outside {span}")
        return v

    def bool(self, d: dict, key: str, field: str) -> bool:
        v = self.get(d, key, field)
        if not isinstance(v, bool):
            self.fail(field, f"must be true or false, got {v!r}")
        return v

    def str(self, d: dict, key: str, field: str) -> str:
        v = self.get(d, key, field)
        if not isinstance(v, str):
            self.fail(field, f"must be a string, got {type(v).__name__}")
        return v


def _float_in(v, field: str, mf: _Manifest) -> float:
    if isinstance(v, dict):
        bits = v.get("float64") if len(v) == 1 else None
        if not isinstance(bits, str) or len(bits) != 16:
            mf.fail(field, 'an encoded float must be {"float64": "<16 hex digits>"}')
        try:
            x = struct.unpack("<d", struct.pack("<Q", int(bits, 16)))[0]
        except ValueError as e:
            mf.fail(field, f"bad float64 bits {bits!r} ({e})")
        if math.isfinite(x):
            mf.fail(field, "an encoded float must be non-finite (finite ones are plain numbers)")
        return x
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        mf.fail(field, f"must be a number, got {type(v).__name__}")
    try:
        return float(v)
    except OverflowError:
        mf.fail(field, f"{v} does not fit a float64")


def _check_config(mf: _Manifest, dim: int, metric: Metric) -> IvfConfig:
    raw = mf.get(mf.m, "config", "config")
    if not isinstance(raw, dict):
        mf.fail("config", "must be a JSON object")
    names = [f.name for f in dataclasses.fields(IvfConfig)]
    extra = [k for k in raw if k not in names]
    if extra:
        mf.fail(
            "config",
            f"has unknown fields {extra} (written by a newer iqdb-ivf-jax?)",
            "upgrade iqdb-ivf-jax to load it",
        )
    missing = [k for k in names if k not in raw]
    if missing:
        mf.fail("config", f"lacks the fields {missing}")
    m = raw["pq_subvectors"]
    if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 1):
        mf.fail("config.pq_subvectors", f"must be null or an int >= 1, got {m!r}")
    try:
        config = IvfConfig(**raw)
        config.validate()
    except (ValueError, TypeError, ArithmeticError) as e:  # InvalidConfigError, an overflow
        mf.fail("config", f"is not a valid IvfConfig ({e})")
    if config.use_pq and metric in (Metric.COSINE, Metric.HAMMING):
        mf.fail("config.use_pq", f"IVF-PQ with metric {metric.value!r} is not a valid index")
    if config.use_pq and dim % (config.pq_subvectors or 1):
        mf.fail("config.pq_subvectors", f"does not divide dim ({dim})")
    return config


@dataclasses.dataclass
class _Header:
    """The manifest's checked scalars."""

    dim: int
    metric: Metric
    config: IvfConfig
    trained: bool
    next_seq: int
    kmeans_iterations: int
    kmeans_inertia: float | None
    by_residual: bool
    block_size: int
    n_blocks: int
    width: int
    n_used_blocks: int
    n_holes: int
    n_slots: int
    n_live: int
    spills: bool
    n_wide_ids: int
    blob_bytes: int
    metadata: list


def _check_header(m: dict, where: Path) -> _Header:
    mf = _Manifest(m, where)
    for key in ("library_version", "jax_version"):
        mf.str(m, key, key)
    mf.int(m, "key_scheme_version", "key_scheme_version", 1)
    dim = mf.int(m, "dim", "dim", 1)
    name = mf.str(m, "metric", "metric")
    try:
        metric = Metric.parse(name)
    except InvalidMetricError as e:
        mf.fail("metric", str(e))
    config = _check_config(mf, dim, metric)
    trained = mf.bool(m, "trained", "trained")
    next_seq = mf.int(m, "next_seq", "next_seq", 0, SEQ_LIMIT - 1)
    kmeans_iterations = mf.int(m, "kmeans_iterations", "kmeans_iterations", 0)
    inertia = mf.get(m, "kmeans_inertia", "kmeans_inertia")
    inertia = None if inertia is None else _float_in(inertia, "kmeans_inertia", mf)
    ent = mf.get(m, "entries", "entries")
    spills = mf.bool(ent, "spills", "entries.spills")
    if spills != (config.spill_lambda is not None):
        mf.fail("entries.spills", "disagrees with config.spill_lambda")
    mf.int(ent, "meta_bytes", "entries.meta_bytes", 0)  # recomputed: a host-memory estimate
    n_slots = mf.int(ent, "n_slots", "entries.n_slots", 0)
    n_live = mf.int(ent, "n_live", "entries.n_live", 0, n_slots)
    n_wide_ids = mf.int(ent, "n_wide_ids", "entries.n_wide_ids", 0, n_live)
    ids = mf.get(m, "ids", "ids")
    if mf.str(ids, "encoding", "ids.encoding") != ID_ENCODING:
        mf.fail("ids.encoding", f"is {ids['encoding']!r}, not {ID_ENCODING!r}")
    blob_bytes = mf.int(ids, "blob_bytes", "ids.blob_bytes", 0)
    metadata = mf.get(m, "metadata", "metadata")
    if not isinstance(metadata, list):
        mf.fail("metadata", "must be a JSON list of [slot, {key: value}] pairs")
    if len(metadata) > n_live:
        mf.fail("metadata", f"has {len(metadata)} entries for {n_live} live ids")
    st, lay = mf.get(m, "state", "state"), mf.get(m, "layout", "layout")
    if not trained:
        if st is not None or lay is not None:
            mf.fail("state", "an untrained index has neither state nor layout (null)")
        if n_slots or next_seq or kmeans_iterations or inertia is not None:
            mf.fail("entries.n_slots", "an untrained index has no slots, seqs or k-means")
        blocks = (0, 0, 0, 0, 0)
        by_residual = False
    else:
        if mf.str(st, "metric", "state.metric") != metric.value:
            mf.fail("state.metric", f"is not the index metric {metric.value!r}")
        by_residual = mf.bool(st, "by_residual", "state.by_residual")
        if by_residual != (config.use_pq and config.pq_by_residual):
            mf.fail("state.by_residual", "disagrees with config.use_pq / pq_by_residual")
        block_size = mf.int(lay, "block_size", "layout.block_size", 1)
        n_blocks = mf.int(lay, "n_blocks", "layout.n_blocks", 1)
        width = mf.int(lay, "width", "layout.width", 1)
        n_used = mf.int(lay, "n_used_blocks", "layout.n_used_blocks", 0, n_blocks)
        n_holes = mf.int(lay, "n_holes", "layout.n_holes", 0)
        if n_slots != n_blocks * block_size:
            mf.fail("entries.n_slots", f"is not layout.n_blocks * block_size ({n_slots})")
        blocks = (block_size, n_blocks, width, n_used, n_holes)
    return _Header(
        dim,
        metric,
        config,
        trained,
        next_seq,
        kmeans_iterations,
        inertia,
        by_residual,
        *blocks,
        n_slots,
        n_live,
        spills,
        n_wide_ids,
        blob_bytes,
        metadata,
    )


def _array_specs(h: _Header) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    n, ns = h.n_live, h.n_slots
    specs: dict[str, tuple[np.dtype, tuple[int, ...]]] = {
        "entries.own_slots": (_I64, (n,)),
        "entries.slot_int": (_I64, (ns,)),
        "entries.slot_seq": (_I64, (ns,)),
        "entries.slot_twin": (_I64, (ns if h.spills else 0,)),
        "ids.kind": (_U8, (n,)),
        "ids.int": (_U64, (n,)),
        "ids.offsets": (_I64, (n + 1,)),
        "ids.blob": (_U8, (h.blob_bytes,)),
    }
    if not h.trained:
        return specs
    d, nlist, B, nb, W = h.dim, h.config.n_clusters, h.block_size, h.n_blocks, h.width
    M = (h.config.pq_subvectors or 0) if h.config.use_pq else 0
    terms = B if h.by_residual and h.metric is Metric.EUCLIDEAN else 0
    specs.update(
        {
            "state.centroids": (_F32, (nlist, d)),
            "state.vectors": (_F32, (nb, B, d if h.config.keep_raw_vectors else 0)),
            "state.norms": (_F32, (nb, B if h.config.keep_raw_vectors else 0)),
            "state.codes": (_U8, (nb, B, M)),
            "state.pq_terms": (_F32, (nb, terms)),
            "state.codebooks": (_F32, (M, 256, d // M if M else 0)),
            "state.seqs": (_I32, (nb, B)),
            "state.valid": (np.dtype(bool), (nb, B)),
            "state.twin": (_I32, (nb, B if h.spills else 0)),
            "state.list_blocks": (_I32, (nlist, W)),
            "state.list_nblocks": (_I32, (nlist,)),
            "state.centroid_sq": (_F32, (nlist,)),
            "layout.list_blocks": (_I32, (nlist, W)),
            "layout.list_nblocks": (_I32, (nlist,)),
            "layout.block_list": (_I32, (nb,)),
            "layout.block_fill": (_I32, (nb,)),
            "layout.list_live": (_I64, (nlist,)),
            "layout.holes": (_I64, (h.n_holes,)),
            "layout.hole_offsets": (_I64, (nlist + 1,)),
        }
    )
    return specs


class _Arrays:
    """The arrays of a save, checked against the header; failures name the array."""

    def __init__(self, arrays: dict[str, np.ndarray], where: Path):
        self.a, self.where = arrays, where
        self.nonfinite: frozenset[str] = frozenset()  # memory-mapped ones, checked streaming

    def finite(self, name: str) -> None:
        """Every value finite (a memory-mapped array: as found while streaming)."""
        if isinstance(self.a[name], np.memmap):
            if name in self.nonfinite:
                self.fail(name, "holds NaN or Inf")
        else:
            self.expect(name, np.isfinite(self.a[name]), "holds NaN or Inf")

    def fail(self, name: str, problem: str) -> NoReturn:
        _fail(self.where, f"array {name!r}", problem)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.a[name]

    def expect(self, name: str, ok, problem: str) -> None:
        if not bool(np.all(ok)):
            self.fail(name, problem)

    def in_range(self, name: str, x: np.ndarray, lo: int, hi: int) -> None:
        """``lo <= x < hi`` elementwise."""
        if x.size and (int(x.min()) < lo or int(x.max()) >= hi):
            self.fail(name, f"holds values outside [{lo}, {hi})")

    def offsets(self, name: str, off: np.ndarray, total: int) -> np.ndarray:
        """Check an offsets array (starts at 0, non-decreasing, ends at ``total``)."""
        if off[0] != 0 or off[-1] != total:
            self.fail(name, f"must start at 0 and end at {total}")
        steps = np.diff(off)
        self.expect(name, steps >= 0, "is not non-decreasing")
        return steps


def _check_shapes(h: _Header, arrays: dict[str, np.ndarray], where: Path) -> _Arrays:
    specs = _array_specs(h)
    missing = sorted(set(specs) - set(arrays))
    extra = sorted(set(arrays) - set(specs))
    if missing or extra:
        _fail(where, None, f"arrays missing: {missing}, unexpected: {extra}")
    norms = arrays.get("state.norms")
    if (  # codes-only saved with its (never read) norms: drop them
        norms is not None
        and specs.get("state.norms", (None, ()))[1] == (h.n_blocks, 0)
        and norms.shape == (h.n_blocks, h.block_size)
    ):
        arrays["state.norms"] = norms[:, :0]
    for name, (dtype, shape) in specs.items():
        a = arrays[name]
        if a.dtype != dtype or a.shape != shape:
            _fail(
                where,
                f"array {name!r}",
                f"is {a.dtype}{list(a.shape)}, the manifest implies {dtype}{list(shape)}",
            )
    return _Arrays(arrays, where)


def _check_layout(h: _Header, A: _Arrays) -> None:
    """The block layout and its agreement with the rows' liveness."""
    B, nb, W, n_used = h.block_size, h.n_blocks, h.width, h.n_used_blocks
    nlist = h.config.n_clusters
    lb, nbk = A["layout.list_blocks"], A["layout.list_nblocks"]
    A.in_range("layout.list_nblocks", nbk, 0, W + 1)
    used = np.arange(W)[None, :] < nbk[:, None]
    owned = lb[used]  # row-major: list by list, in block order
    A.in_range("layout.list_blocks", owned, 0, n_used)
    A.expect("layout.list_blocks", lb[~used] == -1, "must be -1 past each list's blocks")
    if owned.size != n_used or np.unique(owned).size != n_used:
        A.fail("layout.list_blocks", "does not own each used block exactly once")
    owner = np.repeat(np.arange(nlist, dtype=np.int32), nbk)
    expect = np.full(nb, -1, np.int32)
    expect[owned] = owner
    A.expect("layout.block_list", A["layout.block_list"] == expect, "disagrees with list_blocks")
    fill = A["layout.block_fill"]
    A.in_range("layout.block_fill", fill[owned], 1, B + 1)
    A.expect("layout.block_fill", fill[n_used:] == 0, "must be 0 for free blocks")
    last = np.zeros(nb, bool)
    last[lb[nbk > 0, nbk[nbk > 0] - 1]] = True
    A.expect("layout.block_fill", fill[owned[~last[owned]]] == B, "a non-last block is not full")
    for name in ("list_blocks", "list_nblocks"):
        A.expect(f"state.{name}", A[f"state.{name}"] == A[f"layout.{name}"], "differs from layout")
    valid = A["state.valid"]
    A.expect("state.valid", valid.view(np.uint8) <= 1, "holds bytes other than 0 and 1")
    A.expect("state.valid", ~valid | (np.arange(B)[None, :] < fill[:, None]), "past a block's fill")
    per_list = np.bincount(owner, weights=valid[owned].sum(axis=1), minlength=nlist)
    live = A["layout.list_live"]
    A.expect("layout.list_live", live == per_list, "differs from the live rows of each list")
    holes, hole_off = A["layout.holes"], A["layout.hole_offsets"]
    hole_n = A.offsets("layout.hole_offsets", hole_off, h.n_holes)
    A.in_range("layout.holes", holes, 0, h.n_slots)
    if np.unique(holes).size != holes.size:
        A.fail("layout.holes", "repeats a slot")
    hb, hr = holes // B, holes % B
    hole_list = np.repeat(np.arange(nlist), hole_n)
    A.expect("layout.holes", A["layout.block_list"][hb] == hole_list, "a hole outside its list")
    A.expect("layout.holes", hr < fill[hb], "a hole past its block's fill")
    A.expect("layout.holes", ~valid[hb, hr], "a hole is a live row")
    handed = np.bincount(owner, weights=fill[owned], minlength=nlist)
    A.expect("layout.list_live", handed == live + hole_n, "rows handed out != live + holes")
    # inserts take finite vectors only; derived floats (norms, centroids, ...) of
    # extreme inputs may overflow in a valid index, and wrong values cannot crash
    A.finite("state.vectors")


def _check_entries(h: _Header, A: _Arrays) -> tuple[np.ndarray, np.ndarray]:
    """Slots, twins and seqs of the live entries; returns ``(own, twin per own)``."""
    ns, n = h.n_slots, h.n_live
    own = A["entries.own_slots"]
    A.in_range("entries.own_slots", own, 0, ns)
    live = np.zeros(ns, bool)
    live[own] = True
    if int(live.sum()) != n:
        A.fail("entries.own_slots", "repeats a slot")
    twin = np.full(n, -1, np.int64)
    if h.spills:
        st = A["entries.slot_twin"]
        A.in_range("entries.slot_twin", st, -1, ns)
        twin = st[own]
        has = twin >= 0
        A.expect("entries.slot_twin", ~live[twin[has]], "a spilled copy is an entry's own slot")
        if np.unique(twin[has]).size != int(has.sum()):
            A.fail("entries.slot_twin", "two entries share a spilled slot")
        expect = np.full(ns, -1, np.int64)
        expect[own[has]] = twin[has]
        expect[twin[has]] = own[has]
        A.expect("entries.slot_twin", st == expect, "own and spilled slots do not pair up")
        live[twin[has]] = True
    seq = A["entries.slot_seq"]
    A.in_range("entries.slot_seq", seq, 0, max(h.next_seq, 1))
    if n and np.unique(seq[own]).size != n:
        A.fail("entries.slot_seq", "repeats a live entry's seq")
    if n and int(seq[own].max()) >= h.next_seq:
        A.fail("entries.slot_seq", f"a live entry's seq is not below next_seq ({h.next_seq})")
    if not h.trained:
        return own, twin
    B, nlist = h.block_size, h.config.n_clusters
    valid = A["state.valid"].reshape(-1)
    A.expect("state.valid", valid == live, "rows are not live exactly where an entry is")
    sseq = A["state.seqs"].reshape(-1)
    A.in_range("state.seqs", sseq, 0, max(h.next_seq, 1))
    A.expect("state.seqs", sseq[live] == seq[live], "differs from entries.slot_seq")
    if h.spills:
        has = twin >= 0
        A.expect("entries.slot_seq", seq[twin[has]] == seq[own[has]], "a copy's seq differs")
        tw = A["state.twin"].reshape(-1)
        A.in_range("state.twin", tw, -1, nlist)
        A.expect("state.twin", tw[own] == -1, "an own copy names a list")
        own_list = A["layout.block_list"][own[has] // B]
        A.expect("state.twin", tw[twin[has]] == own_list, "a spilled copy names the wrong list")
    return own, twin


def _decode_ids(h: _Header, A: _Arrays) -> list:
    kind, ints = A["ids.kind"], A["ids.int"]
    blob = A["ids.blob"].tobytes()
    A.in_range("ids.kind", kind, KIND_INT, KIND_BYTES + 1)
    lens = A.offsets("ids.offsets", A["ids.offsets"], len(blob))
    is_int = kind == KIND_INT
    A.expect("ids.offsets", (lens == 0) == is_int, "an int id has text, or a text id is empty")
    A.expect("ids.int", ints[~is_int] == 0, "is not 0 for a str or bytes id")
    if bool(is_int.all()):
        ids = ints.tolist()
    else:
        ids = []
        off = A["ids.offsets"].tolist()
        for i, (k, v) in enumerate(zip(kind.tolist(), ints.tolist())):
            if k == KIND_INT:
                ids.append(v)
                continue
            raw = blob[off[i] : off[i + 1]]
            if k == KIND_BYTES:
                ids.append(raw)
                continue
            try:
                ids.append(raw.decode("utf-8", "surrogatepass"))
            except UnicodeDecodeError as e:
                raise IndexFileError(
                    f"{A.where}: array 'ids.blob': id {i} is not UTF-8 ({e}); {_FIX}",
                    path=str(A.where),
                    field="ids.blob",
                ) from e
    if len(set(ids)) != len(ids):
        A.fail("ids.kind", "two live entries have the same id")
    if bool(is_int.all()):
        wide = int((ints >= _I63).sum())
    else:
        wide = sum(1 for i in ids if not (isinstance(i, int) and i < _I63))
    if wide != h.n_wide_ids:
        A.fail("ids.int", f"has {wide} ids outside int64, the manifest says {h.n_wide_ids}")
    return ids


def _check_slot_int(h: _Header, A: _Arrays, ids: list, own, twin) -> None:
    if h.n_wide_ids == 0 and bool((A["ids.kind"] == KIND_INT).all()):
        narrow = A["ids.int"].astype(np.int64)  # every id an int below 2**63 (checked)
    else:
        narrow = np.array([i if isinstance(i, int) and i < _I63 else -1 for i in ids], np.int64)
    expect = np.full(h.n_slots, -1, np.int64)
    expect[own] = narrow
    has = twin >= 0
    expect[twin[has]] = narrow[has]
    A.expect("entries.slot_int", A["entries.slot_int"] == expect, "disagrees with the ids")


def _decode_metadata(h: _Header, own: np.ndarray, ids: list, where: Path) -> dict:
    mf = _Manifest({}, where)
    meta: dict = {}
    if not h.metadata:
        return meta
    index_of = {s: i for i, s in enumerate(own.tolist())}
    for pos, item in enumerate(h.metadata):
        field = f"metadata[{pos}]"
        if not isinstance(item, list) or len(item) != 2:
            mf.fail(field, "must be a [slot, {key: value}] pair")
        slot, raw = item
        if isinstance(slot, bool) or not isinstance(slot, int) or slot not in index_of:
            mf.fail(field, f"slot {slot!r} is not a live entry's own slot")
        id_ = ids[index_of[slot]]
        if id_ in meta:
            mf.fail(field, f"repeats slot {slot}")
        if not isinstance(raw, dict):
            mf.fail(field, "metadata must be a JSON object")
        values = {}
        for key, value in raw.items():
            if isinstance(value, dict):
                value = _float_in(value, f"{field}.{key}", mf)
            values[key] = value
        try:
            meta[id_] = canonical_metadata(values)
        except (TypeError, InvalidConfigError) as e:
            mf.fail(field, f"is not valid metadata ({e})")
    return meta


@dataclasses.dataclass
class _Parts:
    """Everything an index is made of, checked, on the host."""

    header: _Header
    arrays: dict[str, np.ndarray]
    ids: list
    own: np.ndarray
    twin: np.ndarray
    meta: dict


def _decode(
    m: dict,
    arrays: dict[str, np.ndarray],
    mpath: Path,
    apath: Path,
    nonfinite: frozenset[str] = frozenset(),
    h: _Header | None = None,
) -> _Parts:
    """Check a parsed manifest and its arrays together (no device work).
    Memory-mapped arrays are not read: ``nonfinite`` names those found to hold
    NaN or Inf while the file was streamed. ``h``: the manifest already checked."""
    h = _check_header(m, mpath) if h is None else h
    A = _check_shapes(h, arrays, apath)
    A.nonfinite = nonfinite
    if h.trained:
        _check_layout(h, A)
    own, twin = _check_entries(h, A)
    ids = _decode_ids(h, A)
    _check_slot_int(h, A, ids, own, twin)
    meta = _decode_metadata(h, own, ids, mpath)
    return _Parts(h, arrays, ids, own, twin, meta)


# ----------------------------------------------------------------------- build
def _build(p: _Parts, device, where: Path, mesh: DeviceMesh | None = None) -> IvfIndex:
    from ._index import IvfIndex

    h, a = p.header, p.arrays
    state = layout = raw_vectors = None
    if h.trained:
        vectors = a["state.vectors"]
        if isinstance(vectors, np.memmap):  # mmap=True: the device keeps none
            raw_vectors, a = (
                vectors,
                {**a, "state.vectors": np.zeros((h.n_blocks, h.block_size, 0), _F32)},
            )
        if mesh is not None and h.n_blocks % mesh.size:
            _fail(
                where,
                "state",
                f"holds {h.n_blocks} blocks, which do not split over {mesh.size} devices",
                "load it on fewer devices",
            )
        put = {
            name: jax.device_put(
                a[f"state.{name}"],
                device
                if mesh is None
                else (mesh.rows() if name in ROW_FIELDS else mesh.replicated()),
                may_alias=False,
            )
            for name in _STATE_ARRAYS
        }
        state = IvfState(**put, metric=h.metric, by_residual=h.by_residual)
        nlist = h.config.n_clusters
        layout = BlockLayout(nlist, h.block_size, h.n_blocks, h.width)
        for name in _LAYOUT_ARRAYS:
            setattr(layout, name, np.array(a[f"layout.{name}"]))
        layout.n_used_blocks = h.n_used_blocks
        off = a["layout.hole_offsets"].tolist()
        holes = a["layout.holes"].tolist()
        layout.holes = [holes[off[i] : off[i + 1]] for i in range(nlist)]
        layout.n_holes = h.n_holes
    entries = EntryTable(h.n_slots, spills=h.spills)
    if h.n_wide_ids == 0:  # every id an int below 2**63: the compact id map
        assert entries.int_ids is not None
        entries.int_ids.add(np.array(p.ids, np.int64), p.own)
    else:
        entries.set_general(p.ids, p.own, p.twin)
    entries.slot_int = np.array(a["entries.slot_int"])
    entries.slot_seq = np.array(a["entries.slot_seq"], np.int32)  # checked < next_seq
    entries.slot_twin = np.array(a["entries.slot_twin"])
    entries.meta = p.meta
    entries.meta_bytes = sum(metadata_bytes(v) for v in p.meta.values())
    entries.n_wide_ids = h.n_wide_ids
    try:
        return IvfIndex._from_parts(
            h.dim,
            h.metric,
            h.config,
            state=state,
            layout=layout,
            entries=entries,
            next_seq=h.next_seq,
            kmeans_iterations=h.kmeans_iterations,
            kmeans_inertia=h.kmeans_inertia,
            raw_vectors=raw_vectors,
            devices=None if mesh is None else mesh.mesh,
        )
    except (InvalidConfigError, InvalidMetricError, TypeError) as e:
        raise IndexFileError(f"{where}: not a valid index ({e}); {_FIX}", path=str(where)) from e


def _read_save(path: Path, mmap: bool = False) -> tuple[_Parts, int, Path]:
    """Read and check the save in directory ``path``; returns its parts and size.
    With ``mmap``, an IVF-PQ index's raw vectors stay on disk (a memory map)."""
    mpath, apath = path / MANIFEST, path / ARRAYS
    raw = _read_file(mpath)
    m = _parse_manifest(raw, mpath)
    mf = _Manifest(m, mpath)
    files = mf.get(m, "files", "files")
    if not isinstance(files, dict) or set(files) != {ARRAYS}:
        mf.fail("files", f"must list exactly {ARRAYS!r}")
    size = mf.int(files[ARRAYS], "bytes", f"files.{ARRAYS}.bytes", 0)
    digest = mf.str(files[ARRAYS], "sha256", f"files.{ARRAYS}.sha256")
    h = _check_header(m, mpath)
    on_disk = frozenset({"state.vectors"}) if mmap and _maps_vectors(h, mpath) else frozenset()
    got = read_tensors(apath, size, on_disk)
    if got.sha256 != digest:
        _fail(apath, None, f"its SHA-256 differs from files.{ARRAYS}.sha256 in the manifest")
    parts = _decode(m, got.arrays, mpath, apath, got.nonfinite, h)
    return parts, len(raw) + size, mpath


def _maps_vectors(h: _Header, where: Path) -> bool:
    """Whether ``load(mmap=True)`` leaves this save's raw vectors on disk: a
    trained IVF-PQ index that keeps them (codes-only has none: nothing to map).

    Raises:
        InvalidConfigError: an IVF-Flat save (its search scans the raw vectors).
    """
    if not h.trained:
        return False
    if not h.config.use_pq:
        raise InvalidConfigError(
            f"{where}: mmap=True keeps an IVF-PQ index's raw vectors on disk, but this "
            "save is IVF-Flat, whose search scans its raw vectors in memory; load it "
            "with mmap=False"
        )
    return h.config.keep_raw_vectors


def _fallbacks(path: Path) -> list[Path]:
    """Where an interrupted save left a loadable copy, best first (``.old``, then
    the ``.tmp-*`` directories, newest manifest first)."""
    old = _sibling(path, "old")
    out = [old] if old.is_dir() else []
    tmps = []
    for p in _stale_siblings(path):
        if ".tmp-" in p.name:
            try:
                tmps.append((os.stat(p / MANIFEST).st_mtime_ns, p))
            except OSError:
                continue
    out += [p for _, p in sorted(tmps, key=lambda t: t[0], reverse=True)]
    return out


def load_index(path, *, device=None, devices=None, mmap: bool = False) -> IvfIndex:
    """Read the index saved in directory ``path`` (see the module docstring).

    Args:
        path: the directory :func:`save_index` wrote.
        device: a ``jax.Device`` for the state's arrays (None: the default).
        devices: devices to split the rows over, as ``IvfIndex(devices=...)``
            takes them (not with ``device``).
        mmap: leave an IVF-PQ index's raw vectors in the file, memory-mapped
            read-only (see ``IvfIndex.load``).

    Raises:
        IndexFileError: no save there (and no interrupted one beside it), or a
            file is unreadable, damaged, edited or of a newer format version.
        InvalidConfigError: ``mmap=True`` for an IVF-Flat save.
        TypeError: ``path`` is not path-like, ``device`` not a ``jax.Device``
            or ``mmap`` not a bool.
        InvalidArgumentError / InvalidConfigError: ``devices`` as
            ``IvfIndex(devices=...)`` refuses it, or both ``device`` and
            ``devices`` given.
    """
    path = Path(os.fspath(path))
    if not isinstance(mmap, bool):
        raise InvalidArgumentError(f"mmap must be a bool, got {type(mmap).__name__}")
    if device is not None and not isinstance(device, jax.Device):
        raise InvalidArgumentError(
            f"device must be a jax.Device or None, got {type(device).__name__}; "
            "pass e.g. jax.devices()[0]"
        )
    if device is not None and devices is not None:
        raise InvalidArgumentError(
            "pass device= (one device) or devices= (split over several), not both"
        )
    mesh = DeviceMesh.parse(devices)
    if os.path.lexists(path):
        if not path.is_dir():
            _fail(path, None, "is not a directory", "pass the directory that IvfIndex.save wrote")
        parts, nbytes, where = _read_save(path, mmap)
    else:
        first: IndexFileError | None = None
        for candidate in _fallbacks(path):
            try:
                parts, nbytes, where = _read_save(candidate, mmap)
                break
            except IndexFileError as e:
                first = first or e
        else:
            if first is not None:
                raise first
            raise IndexFileError(
                f"{path}: no saved index here (no such directory, and no interrupted save "
                "beside it); check the path",
                path=str(path),
            ) from FileNotFoundError(path)
    index = _build(parts, device, where, mesh)
    index._disk_bytes = nbytes
    return index
