"""`IvfConfig` (the index settings) and `Metric` (the distance)."""

import dataclasses
import enum
import math
import numbers

from ._errors import InvalidConfigError, InvalidMetricError

DEFAULT_SEED = 0xDEADBEEFCAFEF00D
KMEANS_INITS = ("kmeans++", "random")  # k-means starts (``INITS`` of ``_train/lloyd.py``)
_U64 = 1 << 64


class Metric(enum.Enum):
    """Distance metric; every distance is *smaller-is-nearer*.

    ``EUCLIDEAN`` is the true L2 distance (not squared), ``COSINE`` is
    ``1 - cos``, ``DOT_PRODUCT`` is the *negated* inner product (faiss
    ``METRIC_INNER_PRODUCT`` with the sign flipped), ``MANHATTAN`` is L1 and
    ``HAMMING`` counts positions whose float32 bit patterns differ.

    The lowercase names (``"euclidean"``, ``"cosine"``, ``"dot_product"``,
    ``"manhattan"``, ``"hamming"``) are accepted wherever a metric is.
    """

    EUCLIDEAN = "euclidean"
    COSINE = "cosine"
    DOT_PRODUCT = "dot_product"
    MANHATTAN = "manhattan"
    HAMMING = "hamming"

    @classmethod
    def parse(cls, value: "Metric | str") -> "Metric":
        """Return the metric for a `Metric` or its exact lowercase name.

        Raises:
            InvalidMetricError: for anything else, listing the valid names.
        """
        if isinstance(value, Metric):
            return value
        if isinstance(value, str):
            for m in cls:
                if m.value == value:
                    return m
        names = ", ".join(repr(m.value) for m in cls)
        raise InvalidMetricError(f"unknown metric {value!r}; use a Metric or one of {names}")


def _check_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidConfigError(f"{name} must be an int, got {type(value).__name__} {value!r}")


@dataclasses.dataclass(frozen=True)
class IvfConfig:
    """Settings of an IVF index (frozen, hashable, compared by value).

    Building a config never raises; :meth:`validate` checks it. Each ``with_*``
    builder returns a new config, so they chain::

        >>> IvfConfig().with_n_clusters(64).with_n_probes(4).n_probes
        4

    Attributes:
        n_clusters: number of inverted lists (faiss ``nlist``, ScaNN ``num_leaves``).
        n_probes: lists scanned per query (faiss ``nprobe``, ScaNN
            ``leaves_to_search``).
        training_sample_size: cap on the k-means working set.
        use_pq: IVF-PQ instead of IVF-Flat.
        pq_subvectors: PQ sub-quantizer count ``M``; must divide ``dim``.
        pq_refine_factor: 0 returns ADC distances; ``N >= 1`` re-ranks ``N*k``
            candidates exactly on the raw vectors.
        seed: int in ``[0, 2**64)``; same seed and data give the same index.
        kmeans_max_iterations: cap on Lloyd rounds (the reference's is 25;
            faiss IVF training uses 10).
        kmeans_init: ``"kmeans++"`` (the reference's seeding: one sequential
            pass over the working set per centre) or ``"random"`` (distinct
            random rows of the working set, faiss's default; much faster to
            train at large ``n_clusters``, usually a slightly worse start).
        pq_by_residual: IVF-PQ encodes ``x - centroid(list)`` instead of ``x``
            (faiss ``by_residual``, its default): codes spend their bits on
            the detail the list does not already give, so ADC ranks better at
            the same ``M``. ADC distances are then the metric to the decoded
            vector ``centroid + decode(code)``. Ignored without ``use_pq``.
        spill_lambda: ``None`` (each vector lives in one list) or a number
            ``>= 0``: each vector is also stored in a second list (SOAR spilled
            assignment, Sun et al. 2023), the list ``c != c1`` minimising
            ``|x - c|^2 + spill_lambda * (r . (x - c))^2 / |r|^2`` with
            ``r = x - c1`` the residual to its own list ``c1`` (0 = the
            second-nearest list; larger values prefer lists whose residual is
            orthogonal to ``r``, so the two copies miss different queries).
            A query scores each vector once: the copy in the vector's own list
            when that list is probed, else the spilled copy. It reaches the same
            recall with fewer probes and fewer rows scanned, at the cost of twice
            the stored rows (IVF-Flat: twice the vector memory) and a slower
            insert.
        keep_raw_vectors: IVF-PQ only. True (default, the reference's): each
            raw float32 vector is stored beside its code (exact re-rank, exact
            ``get`` and ``retrain``). False: codes-only IVF-PQ, about ``M`` + 13
            bytes per vector on the device: ``pq_refine_factor`` must be 0,
            ``get`` returns the reconstruction (the decoded vector, plus the list
            centroid when ``pq_by_residual``) and ``retrain`` trains on
            reconstructions, both approximate.
    """

    n_clusters: int = 256
    n_probes: int = 8
    training_sample_size: int = 65536
    use_pq: bool = False
    pq_subvectors: int | None = None
    pq_refine_factor: int = 4
    seed: int = DEFAULT_SEED
    kmeans_max_iterations: int = 25
    kmeans_init: str = "kmeans++"
    pq_by_residual: bool = False
    spill_lambda: float | None = None
    keep_raw_vectors: bool = True

    def with_n_clusters(self, n: int) -> "IvfConfig":
        return dataclasses.replace(self, n_clusters=n)

    def with_n_probes(self, n: int) -> "IvfConfig":
        return dataclasses.replace(self, n_probes=n)

    def with_training_sample_size(self, n: int) -> "IvfConfig":
        return dataclasses.replace(self, training_sample_size=n)

    def with_use_pq(self, use_pq: bool) -> "IvfConfig":
        return dataclasses.replace(self, use_pq=use_pq)

    def with_pq_subvectors(self, m: int | None) -> "IvfConfig":
        return dataclasses.replace(self, pq_subvectors=m)

    def with_pq_refine_factor(self, n: int) -> "IvfConfig":
        return dataclasses.replace(self, pq_refine_factor=n)

    def with_seed(self, seed: int) -> "IvfConfig":
        return dataclasses.replace(self, seed=seed)

    def with_kmeans_max_iterations(self, n: int) -> "IvfConfig":
        return dataclasses.replace(self, kmeans_max_iterations=n)

    def with_kmeans_init(self, init: str) -> "IvfConfig":
        return dataclasses.replace(self, kmeans_init=init)

    def with_pq_by_residual(self, by_residual: bool) -> "IvfConfig":
        return dataclasses.replace(self, pq_by_residual=by_residual)

    def with_spill_lambda(self, lam: float | None) -> "IvfConfig":
        return dataclasses.replace(self, spill_lambda=lam)

    def with_keep_raw_vectors(self, keep: bool) -> "IvfConfig":
        return dataclasses.replace(self, keep_raw_vectors=keep)

    def validate(self) -> None:
        """Check every field, in a fixed order.

        Raises:
            InvalidConfigError: naming the first bad field and the fix.
        """
        _check_int("n_clusters", self.n_clusters)
        if self.n_clusters < 1:
            raise InvalidConfigError(f"n_clusters must be >= 1, got {self.n_clusters}")
        _check_int("n_probes", self.n_probes)
        if self.n_probes < 1:
            raise InvalidConfigError(f"n_probes must be >= 1, got {self.n_probes}")
        if self.n_probes > self.n_clusters:
            raise InvalidConfigError(
                f"n_probes ({self.n_probes}) must be <= n_clusters ({self.n_clusters})"
            )
        _check_int("training_sample_size", self.training_sample_size)
        if self.training_sample_size < 1:
            raise InvalidConfigError(
                f"training_sample_size must be >= 1, got {self.training_sample_size}"
            )
        if not isinstance(self.use_pq, bool):
            raise InvalidConfigError(f"use_pq must be a bool, got {self.use_pq!r}")
        if self.use_pq:
            if self.pq_subvectors is None:
                raise InvalidConfigError(
                    "pq_subvectors is None but use_pq is set; call with_pq_subvectors(m)"
                )
            _check_int("pq_subvectors", self.pq_subvectors)
            if self.pq_subvectors < 1:
                raise InvalidConfigError(f"pq_subvectors must be >= 1, got {self.pq_subvectors}")
        _check_int("pq_refine_factor", self.pq_refine_factor)
        if self.pq_refine_factor < 0:
            raise InvalidConfigError(f"pq_refine_factor must be >= 0, got {self.pq_refine_factor}")
        _check_int("seed", self.seed)
        if not 0 <= self.seed < _U64:
            raise InvalidConfigError(f"seed must be in [0, 2**64), got {self.seed}")
        if self.training_sample_size < self.n_clusters:
            raise InvalidConfigError(
                f"training_sample_size ({self.training_sample_size}) must be >= "
                f"n_clusters ({self.n_clusters})"
            )
        if self.use_pq and self.training_sample_size < 256:
            raise InvalidConfigError(
                f"training_sample_size ({self.training_sample_size}) must be >= 256 with "
                "use_pq (PQ fits 256 codewords per subvector)"
            )
        _check_int("kmeans_max_iterations", self.kmeans_max_iterations)
        if self.kmeans_max_iterations < 1:
            raise InvalidConfigError(
                f"kmeans_max_iterations must be >= 1, got {self.kmeans_max_iterations}"
            )
        if self.kmeans_init not in KMEANS_INITS:
            raise InvalidConfigError(
                f"kmeans_init must be one of {KMEANS_INITS}, got {self.kmeans_init!r}"
            )
        if not isinstance(self.pq_by_residual, bool):
            raise InvalidConfigError(f"pq_by_residual must be a bool, got {self.pq_by_residual!r}")
        lam = self.spill_lambda
        if lam is not None:
            if isinstance(lam, bool) or not isinstance(lam, numbers.Real):
                raise InvalidConfigError(f"spill_lambda must be None or a number >= 0, got {lam!r}")
            if not math.isfinite(lam) or lam < 0:
                raise InvalidConfigError(
                    f"spill_lambda must be None or a finite number >= 0, got {lam!r}"
                )
            if self.n_clusters < 2:
                raise InvalidConfigError(
                    "spill_lambda needs n_clusters >= 2 (a second list to spill to); "
                    "set spill_lambda=None"
                )
        if not isinstance(self.keep_raw_vectors, bool):
            raise InvalidConfigError(
                f"keep_raw_vectors must be a bool, got {self.keep_raw_vectors!r}"
            )
        if not self.keep_raw_vectors:
            if not self.use_pq:
                raise InvalidConfigError(
                    "keep_raw_vectors=False needs use_pq=True (IVF-Flat scans the raw "
                    "vectors); set use_pq=True or keep_raw_vectors=True"
                )
            if self.pq_refine_factor > 0:
                raise InvalidConfigError(
                    f"pq_refine_factor ({self.pq_refine_factor}) needs the raw vectors; "
                    "with keep_raw_vectors=False set pq_refine_factor=0 (ADC distances)"
                )
