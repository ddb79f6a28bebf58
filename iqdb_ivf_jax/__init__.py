"""iqdb-ivf-jax: an inverted-file (IVF-Flat / IVF-PQ) nearest-neighbour index on JAX."""

from . import functional as functional
from ._compile_cache import enable_default_cache as _enable_default_cache
from ._compile_cache import set_compilation_cache as set_compilation_cache
from ._config import IvfConfig as IvfConfig
from ._config import Metric as Metric
from ._errors import DeviceError as DeviceError
from ._errors import DimensionMismatchError as DimensionMismatchError
from ._errors import DuplicateIdError as DuplicateIdError
from ._errors import IndexFileError as IndexFileError
from ._errors import InvalidArgumentError as InvalidArgumentError
from ._errors import InvalidConfigError as InvalidConfigError
from ._errors import InvalidFilterError as InvalidFilterError
from ._errors import InvalidMetricError as InvalidMetricError
from ._errors import InvalidVectorError as InvalidVectorError
from ._errors import IqdbError as IqdbError
from ._errors import NotFoundError as NotFoundError
from ._filter import And as And
from ._filter import Eq as Eq
from ._filter import Filter as Filter
from ._filter import Gt as Gt
from ._filter import Gte as Gte
from ._filter import In as In
from ._filter import Lt as Lt
from ._filter import Lte as Lte
from ._filter import Neq as Neq
from ._filter import Not as Not
from ._filter import Or as Or
from ._index import IvfIndex as IvfIndex
from ._results import Hit as Hit
from ._results import IndexStats as IndexStats
from ._results import IvfClusterStats as IvfClusterStats
from ._results import SearchParams as SearchParams
from ._state import IvfState as IvfState

__version__ = "0.1.0"

_enable_default_cache()  # the persistent XLA cache, unless the user opted out

__all__ = [
    "And",
    "DeviceError",
    "DimensionMismatchError",
    "DuplicateIdError",
    "Eq",
    "Filter",
    "Gt",
    "Gte",
    "Hit",
    "In",
    "IndexFileError",
    "IndexStats",
    "InvalidArgumentError",
    "InvalidConfigError",
    "InvalidFilterError",
    "InvalidMetricError",
    "InvalidVectorError",
    "IqdbError",
    "IvfClusterStats",
    "IvfConfig",
    "IvfIndex",
    "IvfState",
    "Lt",
    "Lte",
    "Metric",
    "Neq",
    "Not",
    "NotFoundError",
    "Or",
    "SearchParams",
    "functional",
    "set_compilation_cache",
]
