"""Host-side validation of ids, metadata and vectors (Python time, typed errors)."""

import sys

import numpy as np

from ._errors import DimensionMismatchError, InvalidConfigError, InvalidVectorError

_U64 = 1 << 64
_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1


def canonical_id(id_):
    """Return the id as stored: ``int`` in ``[0, 2**64)``, or non-empty str/bytes.

    Raises:
        TypeError: bool, float, None, containers and other types.
        InvalidConfigError: negative or oversized int, ``""`` or ``b""``.
    """
    if isinstance(id_, (bool, np.bool_)):
        raise TypeError(f"id must be an int, str or bytes, not bool ({id_!r})")
    if isinstance(id_, np.integer):
        id_ = int(id_)
    if isinstance(id_, int):
        if not 0 <= id_ < _U64:
            raise InvalidConfigError(f"int id {id_} is outside [0, 2**64); use an id in that range")
        return int(id_)
    if isinstance(id_, (str, bytes)):
        if len(id_) == 0:
            raise InvalidConfigError("id must be a non-empty str or bytes; got an empty one")
        return str(id_) if isinstance(id_, str) else bytes(id_)
    raise TypeError(f"id must be an int, str or bytes, got {type(id_).__name__}")


def canonical_metadata(meta) -> dict | None:
    """Copy metadata in: ``None`` or ``dict[str, str|int|float|bool|None]``.

    Raises:
        TypeError: not a dict, a non-str key, or a value of another type.
        InvalidConfigError: an int outside int64.
    """
    if meta is None:
        return None
    if not isinstance(meta, dict):
        raise TypeError(f"metadata must be a dict or None, got {type(meta).__name__}")
    out = {}
    for key, value in meta.items():
        if not isinstance(key, str):
            raise TypeError(f"metadata keys must be str, got {key!r}")
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, int) and not isinstance(value, bool):
            if not _I64_MIN <= value <= _I64_MAX:
                raise InvalidConfigError(f"metadata {key!r}: int {value} is outside int64")
        elif value is not None and not isinstance(value, (str, float, bool)):
            raise TypeError(
                f"metadata {key!r}: value must be str, int, float, bool or None, "
                f"got {type(value).__name__}"
            )
        out[key] = value
    return out


def metadata_bytes(meta: dict | None) -> int:
    """Rough host bytes held by one metadata dict (keys and values included)."""
    if meta is None:
        return 0
    return sys.getsizeof(meta) + sum(sys.getsizeof(k) + sys.getsizeof(v) for k, v in meta.items())


def as_vector_array(
    x, dim: int, *, rank: int, what: str = "vector", copy: bool = True
) -> np.ndarray:
    """Convert to float32 with rank/dtype/length checks (no finiteness check).

    Args:
        x: an integer or floating array-like.
        dim: the expected last-axis length.
        rank: 1 for a vector, 2 for a batch ``(n, dim)``.
        copy: return a private copy. ``False`` may return ``x`` itself (already
            float32): only for callers that copy or finish with it before
            returning (a caller's later writes must not reach the index).

    Raises:
        InvalidVectorError: wrong rank or dtype (bool, str, object, complex...).
        DimensionMismatchError: wrong length.
    """
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError) as e:
        raise InvalidVectorError(f"{what} is not a numeric array: {e}") from None
    if rank == 2 and arr.ndim == 1 and arr.size == 0:
        arr = arr.reshape(0, dim)
    if arr.ndim != rank:
        shape = "(dim,)" if rank == 1 else "(n, dim)"
        raise InvalidVectorError(f"{what} must have shape {shape}, got rank {arr.ndim} {arr.shape}")
    if arr.dtype.kind not in "iuf":
        raise InvalidVectorError(
            f"{what} must hold integers or floats, got dtype {arr.dtype}; convert it with np.asarray(x, np.float32)"
        )
    if arr.shape[-1] != dim and not (rank == 2 and arr.shape[0] == 0):
        raise DimensionMismatchError(dim, arr.shape[-1])
    out = np.array(arr, dtype=np.float32, copy=True) if copy else np.asarray(arr, np.float32)
    return out.reshape(arr.shape[0], dim) if rank == 2 else out


def check_finite(arr: np.ndarray, what: str = "vector") -> None:
    """Raise InvalidVectorError naming the first row with NaN/Inf (after float32)."""
    flat = arr.reshape(-1)
    if np.isfinite(np.dot(flat, flat)):  # NaN and Inf reach the sum of squares
        return
    bad = ~np.isfinite(arr)  # (or the sum overflowed: look row by row)
    if bad.any():
        if arr.ndim == 2:
            row = int(np.argmax(bad.any(axis=1)))
            raise InvalidVectorError(f"{what} row {row} holds NaN or Inf; clean or drop it")
        raise InvalidVectorError(f"{what} holds NaN or Inf; clean it first")
