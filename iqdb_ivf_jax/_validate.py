"""Host-side validation of ids, metadata and vectors (Python time, typed errors)."""

import math
import sys

import numpy as np

from ._errors import (
    DimensionMismatchError,
    InvalidArgumentError,
    InvalidConfigError,
    InvalidVectorError,
)

_U64 = 1 << 64
_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1

F32_MAX = float(np.finfo(np.float32).max)  # ~3.4e38
#: The largest squared L2 norm :func:`check_finite` accepts: ``float32 max / 64``
#: (``|x|`` up to ~2.3e18). See :func:`check_finite` for why.
MAX_SQ_NORM = F32_MAX / 64
_MAX_NORM = math.sqrt(MAX_SQ_NORM)
_NORM_CHUNK_ROWS = 1 << 15  # rows per float64 copy when norms are checked exactly


def canonical_id(id_):
    """Return the id as stored: ``int`` in ``[0, 2**64)``, or non-empty str/bytes.

    Raises:
        InvalidArgumentError: bool, float, None, containers and other types
            (a ``TypeError``).
        InvalidConfigError: negative or oversized int, ``""`` or ``b""``.
    """
    if isinstance(id_, (bool, np.bool_)):
        raise InvalidArgumentError(
            f"id must be an int, str or bytes, not bool ({id_!r}); "
            "use an int (e.g. 0 or 1) or a str instead"
        )
    if isinstance(id_, np.integer):
        id_ = int(id_)
    if isinstance(id_, int):
        id_ = int.__int__(id_)  # exact types: a subclass's methods never run again
        if not 0 <= id_ < _U64:
            raise InvalidConfigError(f"int id {id_} is outside [0, 2**64); use an id in that range")
        return id_
    if isinstance(id_, (str, bytes)):
        id_ = str.__str__(id_) if isinstance(id_, str) else bytes.__bytes__(id_)
        if len(id_) == 0:
            raise InvalidConfigError("id must be a non-empty str or bytes; got an empty one")
        return id_
    raise InvalidArgumentError(
        f"id must be an int, str or bytes, got {type(id_).__name__} {id_!r}; "
        "convert it first, e.g. int(id) for a whole number or str(id)"
    )


def canonical_metadata(meta) -> dict | None:
    """Copy metadata in: ``None`` or ``dict[str, str|int|float|bool|None]``, every
    key and value converted to its exact builtin type (a subclass's methods, e.g.
    a hostile ``__sizeof__`` or ``__hash__``, never run inside the index).

    Raises:
        InvalidArgumentError: not a dict, a non-str key, or a value of another
            type (a ``TypeError``).
        InvalidConfigError: an int outside int64.
    """
    if meta is None:
        return None
    if not isinstance(meta, dict):
        raise InvalidArgumentError(
            f"metadata must be a dict or None, got {type(meta).__name__}; "
            "pass a dict such as {'tier': 'hot'} (or None for no metadata)"
        )
    out = {}
    for key, value in meta.items():
        if not isinstance(key, str):
            raise InvalidArgumentError(
                f"metadata keys must be str, got {type(key).__name__} {key!r}; "
                "convert the key with str()"
            )
        key = str.__str__(key)  # an exact str: a subclass's methods never run again
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, int) and not isinstance(value, bool):
            value = int.__int__(value)
            if not _I64_MIN <= value <= _I64_MAX:
                raise InvalidConfigError(f"metadata {key!r}: int {value} is outside int64")
        elif isinstance(value, str):
            value = str.__str__(value)
        elif isinstance(value, float):
            value = float.__float__(value)
        elif value is not None and not isinstance(value, bool):
            raise InvalidArgumentError(
                f"metadata {key!r}: value must be str, int, float, bool or None, "
                f"got {type(value).__name__}; store a scalar (e.g. encode a list "
                "as a str, or use one field per item) or drop the field"
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
    with np.errstate(over="ignore"):  # values beyond float32 become Inf: check_finite
        out = np.array(arr, dtype=np.float32, copy=True) if copy else np.asarray(arr, np.float32)
    return out.reshape(arr.shape[0], dim) if rank == 2 else out


def check_finite(arr: np.ndarray, what: str = "vector") -> None:
    """Reject NaN, Inf and rows too large for float32 distances (no warnings).

    Every row (or the vector, for rank 1) must be finite after float32
    conversion and have a squared L2 norm of at most :data:`MAX_SQ_NORM` =
    ``float32 max / 64`` (``|x|`` up to ~2.3e18). That keeps every distance the
    index computes finite: the squared L2 distance between two accepted vectors
    is at most ``2 (|x|^2 + |y|^2) <= float32 max / 16`` (Flat scans, the expanded
    form ``|q|^2 + |x|^2 - 2 q.x``, k-means), the inner product at most half of
    that, and IVF-PQ's ADC ``|q - c - r|^2`` at most 16x the limit, as ``|q - c|``
    and the decoded residual ``|r|`` are each at most twice the largest norm
    (centroids and codewords are means of the data); ``/ 64`` leaves a factor of
    4 for rounding. (With ``float32 max / 4``, ADC distances overflowed to Inf.)

    Cheap on big batches: one float32 BLAS dot over the whole array decides for
    ordinary data (a float32 sum of squares is at least its largest term, so a
    total at most ``MAX_SQ_NORM / (2 d)`` bounds every row). Otherwise the rows'
    max-abs values are taken and only rows above ``sqrt(MAX_SQ_NORM / d)`` get
    their norm computed exactly in float64, in chunks. Arrays of another dtype
    are converted to float32 first (values beyond float32 become Inf).

    Raises:
        InvalidVectorError: naming the first bad row (for rank 2) and the fix.
    """
    with np.errstate(all="ignore"):
        bad = _first_bad_row(np.asarray(arr))
    if bad is None:
        return
    row, sq = bad
    where = f"{what} row {row}" if np.ndim(arr) == 2 else what
    if not math.isfinite(sq):
        raise InvalidVectorError(
            f"{where} holds NaN or Inf (after conversion to float32, whose range ends "
            f"at ~{F32_MAX:.2g}); clean or drop it"
        )
    raise InvalidVectorError(
        f"{where} has squared L2 norm {sq:.4g}, above the limit {MAX_SQ_NORM:.4g} "
        f"(float32 max / 64, so that float32 distances stay finite): |x| must be at "
        f"most ~{_MAX_NORM:.2g}; scale the vectors down (e.g. divide every vector "
        "and query by the same constant) or normalise them"
    )


def _first_bad_row(arr: np.ndarray) -> tuple[int, float] | None:
    """``(row, squared norm in float64)`` of the first row that fails
    :func:`check_finite` (NaN/Inf give a non-finite norm), or None."""
    if arr.dtype != np.float32:
        arr = np.asarray(arr, np.float32)
    if arr.size == 0:
        return None
    d = arr.shape[-1] if arr.ndim else 1
    rows = arr.reshape(-1, d)
    flat = rows.reshape(-1)
    total = float(np.dot(flat, flat))  # float32; NaN/Inf/overflow fail the test below
    if total <= MAX_SQ_NORM / (2 * d):
        return None
    # max-abs per row without a full-size temporary; NaN propagates through max/min
    amax = np.maximum(rows.max(axis=1), -rows.min(axis=1)).astype(np.float64)
    cand = np.flatnonzero(~(amax <= math.sqrt(MAX_SQ_NORM / d)))
    for start in range(0, cand.size, _NORM_CHUNK_ROWS):
        idx = cand[start : start + _NORM_CHUNK_ROWS]
        sub = rows[idx].astype(np.float64)
        sq = np.einsum("ij,ij->i", sub, sub)
        over = ~(sq <= MAX_SQ_NORM)
        if over.any():
            j = int(np.argmax(over))
            return int(idx[j]), float(sq[j])
    return None
