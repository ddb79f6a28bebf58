"""Exception hierarchy.

Every error the library raises on purpose derives from :class:`IqdbError`, and also
from the builtin that fits (``ValueError``, ``KeyError`` or ``TypeError``), so both
``except IqdbError`` and ``except ValueError`` work. Wrong Python *types* raise
:class:`InvalidArgumentError`, which is also a :class:`TypeError`.
"""


class IqdbError(Exception):
    """Base class of every error raised by ``iqdb_ivf_jax`` on purpose."""


class InvalidConfigError(IqdbError, ValueError):
    """A configuration value, argument value or call order is invalid."""


class InvalidArgumentError(IqdbError, TypeError):
    """An argument of the wrong Python type; the message names the expected type."""


class InvalidVectorError(IqdbError, ValueError):
    """A vector has the wrong rank or dtype, or holds NaN/Inf."""


class InvalidMetricError(IqdbError, ValueError):
    """A metric name is unknown, or the metric is unsupported in this mode."""


class InvalidFilterError(IqdbError, ValueError):
    """A metadata filter is malformed or exceeds the depth/width limits."""


class DimensionMismatchError(IqdbError, ValueError):
    """A vector's length differs from the index dimension.

    Attributes:
        expected: the index dimension.
        found: the length that was passed.
    """

    def __init__(self, expected: int, found: int):
        self.expected = int(expected)
        self.found = int(found)
        super().__init__(f"vector dimension mismatch: expected {self.expected}, found {self.found}")


class _IdError(IqdbError, KeyError):
    """Base of the id errors: carries ``.id`` and prints an unquoted message."""

    def __init__(self, id_, message: str):
        self.id = id_
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:
        return self.message


class DuplicateIdError(_IdError):
    """An id is already live in the index, or repeats inside one batch."""

    def __init__(self, id_, message: str | None = None):
        super().__init__(
            id_,
            message
            or f"id {id_!r} is already in the index; delete({id_!r}) it first or use another id",
        )


class NotFoundError(_IdError):
    """An id is not in the index (or the index is untrained)."""

    def __init__(self, id_, message: str | None = None):
        super().__init__(id_, message or f"id {id_!r} is not in the index")


class IndexFileError(IqdbError, ValueError):
    """A saved index could not be found, read, verified or written.

    The message names the file, the field and the fix; the underlying
    ``OSError``, JSON or safetensors error, if any, is the ``__cause__``.

    Attributes:
        path: the file or directory concerned (a str), or None.
        field: the manifest key or array name concerned, or None.
    """

    def __init__(self, message: str, *, path: str | None = None, field: str | None = None):
        super().__init__(message)
        self.path = path
        self.field = field


class DeviceError(IqdbError, RuntimeError):
    """The device failed a computation (out of memory, above all); the index is
    left as it was before the call. The message names the fix; the JAX runtime
    error is the ``__cause__``."""
