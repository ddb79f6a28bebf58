"""Result and statistics records (frozen dataclasses with value equality)."""

import dataclasses
from typing import Any

from ._config import Metric


@dataclasses.dataclass(frozen=True)
class Hit:
    """One search result: the id as inserted, its distance (smaller is nearer)
    and a copy of its metadata."""

    id: Any
    distance: float
    metadata: dict | None = None


@dataclasses.dataclass(frozen=True)
class IvfClusterStats:
    """Live list sizes. ``avg_size`` and the population ``size_variance`` are
    0.0 when there are no sizes (untrained)."""

    n_clusters: int
    cluster_sizes: list[int]
    avg_size: float
    size_variance: float

    @classmethod
    def from_sizes(cls, n_clusters: int, sizes: list[int]) -> "IvfClusterStats":
        if not sizes:
            return cls(n_clusters, [], 0.0, 0.0)
        avg = sum(sizes) / len(sizes)
        var = sum((s - avg) ** 2 for s in sizes) / len(sizes)
        return cls(n_clusters, list(sizes), float(avg), float(var))


@dataclasses.dataclass(frozen=True)
class IndexStats:
    """Index totals; ``extra`` holds IVF details (mode, k-means, memory, padding)."""

    n_vectors: int
    memory_bytes: int
    disk_bytes: int | None
    index_type: str
    extra: dict | None = None


@dataclasses.dataclass(frozen=True)
class SearchParams:
    """Search parameters that may replace ``k`` in the search calls.

    A ``metric`` other than the index's raises ``InvalidMetricError``; passing
    ``filter=`` to the call as well raises ``TypeError``.
    """

    k: int
    metric: Metric | str
    filter: Any = None
