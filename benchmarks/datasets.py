"""Datasets for the benchmark: the Debian embeddings, synthetic clusters, and files.

Formats read here:

- ``.npy``: one float array ``(n, d)`` (base; queries from ``--queries`` or held out).
- ``.fvecs`` / ``.ivecs`` / ``.bvecs``: the TEXMEX format of SIFT1M, GIST1M and
  SIFT1B (http://corpus-texmex.irisa.fr/): each row is a little-endian ``int32``
  dimension ``d`` followed by ``d`` values (float32, int32 or uint8).
- ``.hdf5``: ann-benchmarks files (datasets ``train``, ``test``, ``neighbors`` and
  the ``distance`` attribute). Needs ``h5py``, imported only for these files.

Everything is returned as C-contiguous float32 (ids as int64).
"""

import dataclasses
import os
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
DEBIAN_BASE = "debian_base.f16.npy"
DEBIAN_QUERIES = "debian_queries.f16.npy"

_VECS_DTYPES = {".fvecs": np.dtype("<f4"), ".ivecs": np.dtype("<i4"), ".bvecs": np.dtype("u1")}


@dataclasses.dataclass
class Dataset:
    """A base set, its queries and (if the source ships them) true neighbours.

    Attributes:
        name: short name used in output file names.
        base: ``f32[n, d]``.
        queries: ``f32[nq, d]``.
        source: where the data came from, in words.
        neighbors: ``int64[nq, >=k]`` ground truth shipped with the data, or None.
            The harness always recomputes ground truth and only checks this.
        normalized: whether the loader scaled rows to unit norm (angular data).
    """

    name: str
    base: np.ndarray
    queries: np.ndarray
    source: str
    neighbors: np.ndarray | None = None
    normalized: bool = False

    def describe(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,
            "n": int(self.base.shape[0]),
            "dim": int(self.base.shape[1]),
            "n_queries": int(self.queries.shape[0]),
            "normalized": self.normalized,
            "has_file_neighbors": self.neighbors is not None,
        }


# --------------------------------------------------------------------- TEXMEX
def read_vecs(path, max_rows: int | None = None) -> np.ndarray:
    """Read a ``.fvecs``, ``.ivecs`` or ``.bvecs`` file into ``[n, d]``.

    Args:
        path: the file; its suffix picks the value type (float32, int32, uint8).
        max_rows: read only the first rows (the file is memory-mapped, so a
            prefix of SIFT1B costs only what it reads).

    Returns:
        ``float32``, ``int32`` or ``uint8`` array ``[n, d]`` (C-contiguous, native
        byte order). An empty file gives shape ``(0, 0)``.

    Raises:
        ValueError: unknown suffix, a non-positive dimension, a size that is not a
            whole number of rows, or a row whose header differs from the first.
    """
    path = Path(path)
    dtype = _VECS_DTYPES.get(path.suffix.lower())
    if dtype is None:
        raise ValueError(f"{path}: expected a .fvecs, .ivecs or .bvecs file")
    size = path.stat().st_size
    if size == 0:
        return np.zeros((0, 0), dtype.newbyteorder("="))
    with open(path, "rb") as f:
        head = f.read(4)
    if len(head) < 4:
        raise ValueError(f"{path}: {size} bytes is too short for the int32 dimension header")
    d = int(np.frombuffer(head, "<i4")[0])
    if d <= 0:
        raise ValueError(f"{path}: dimension header is {d}; not a {path.suffix} file?")
    row = 4 + d * dtype.itemsize
    if size % row:
        raise ValueError(
            f"{path}: {size} bytes is not a whole number of {row}-byte rows "
            f"(int32 header + {d} x {dtype.itemsize} bytes); truncated or wrong format"
        )
    n = size // row if max_rows is None else min(size // row, max(int(max_rows), 0))
    if n == 0:
        return np.zeros((0, d), dtype.newbyteorder("="))
    raw = np.memmap(path, dtype=np.uint8, mode="r", shape=(n, row))
    dims = np.ascontiguousarray(raw[:, :4]).view("<i4").ravel()
    bad = np.flatnonzero(dims != d)
    if bad.size:
        raise ValueError(
            f"{path}: row {int(bad[0])} has dimension header {int(dims[bad[0]])}, expected {d}"
        )
    out = np.ascontiguousarray(raw[:, 4:]).view(dtype).reshape(n, d)
    del raw
    return out.astype(dtype.newbyteorder("="), copy=False)


def read_fvecs(path, max_rows: int | None = None) -> np.ndarray:
    """``float32[n, d]`` from a ``.fvecs`` file (see :func:`read_vecs`)."""
    return _read_as(path, ".fvecs", max_rows)


def read_ivecs(path, max_rows: int | None = None) -> np.ndarray:
    """``int32[n, d]`` from an ``.ivecs`` file, e.g. ``sift_groundtruth.ivecs``."""
    return _read_as(path, ".ivecs", max_rows)


def read_bvecs(path, max_rows: int | None = None) -> np.ndarray:
    """``uint8[n, d]`` from a ``.bvecs`` file (SIFT1B)."""
    return _read_as(path, ".bvecs", max_rows)


def _read_as(path, suffix: str, max_rows: int | None) -> np.ndarray:
    path = Path(path)
    if path.suffix.lower() != suffix:
        raise ValueError(f"{path}: expected a {suffix} file")
    return read_vecs(path, max_rows)


def write_vecs(path, x) -> None:
    """Write ``x`` ``[n, d]`` in the TEXMEX format given by the suffix of ``path``."""
    path = Path(path)
    dtype = _VECS_DTYPES.get(path.suffix.lower())
    if dtype is None:
        raise ValueError(f"{path}: expected a .fvecs, .ivecs or .bvecs file")
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-d array, got shape {x.shape}")
    n, d = x.shape
    rows = np.empty((n, 4 + d * dtype.itemsize), np.uint8)
    rows[:, :4] = np.full((n, 1), d, "<i4").view(np.uint8)
    rows[:, 4:] = np.ascontiguousarray(x, dtype).view(np.uint8).reshape(n, -1)
    rows.tofile(path)


# ------------------------------------------------------------------- sources
def find_data_dir(explicit=None) -> Path | None:
    """The folder holding the Debian embeddings: ``explicit``, ``$IQDB_DATA``,
    ``<repo>/../shared/data``, ``<repo>/shared/data`` or ``/work/shared/data``."""
    candidates = [
        explicit,
        os.environ.get("IQDB_DATA"),
        REPO_ROOT.parent / "shared" / "data",
        REPO_ROOT / "shared" / "data",
        "/work/shared/data",
    ]
    for c in candidates:
        if c and (Path(c) / DEBIAN_BASE).exists():
            return Path(c)
    return None


def load_debian(data_dir=None) -> Dataset:
    """The 57,979 x 384 unit-norm sentence embeddings and their 1,000 queries."""
    d = find_data_dir(data_dir)
    if d is None:
        raise FileNotFoundError(
            f"{DEBIAN_BASE} not found in --data-dir, $IQDB_DATA, ../shared/data or "
            "/work/shared/data; pass --dataset synthetic or a file path instead"
        )
    base = np.load(d / DEBIAN_BASE).astype(np.float32)
    queries = np.load(d / DEBIAN_QUERIES).astype(np.float32)
    return Dataset("debian", base, queries, f"Debian package-description embeddings in {d}")


def synthetic(
    n: int = 50_000,
    dim: int = 128,
    n_queries: int = 1000,
    *,
    n_clusters: int = 100,
    seed: int = 0,
) -> Dataset:
    """Gaussian clusters with uneven sizes and spreads.

    Cluster weights are log-normal (sigma 1), so the largest cluster holds several
    times the mean; each cluster has its own noise scale in ``[0.5, 1.5]``.
    Queries are fresh draws from the same mixture (none is in the base).
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim)) * 2.0
    weights = rng.lognormal(0.0, 1.0, n_clusters)
    weights /= weights.sum()
    scales = rng.uniform(0.5, 1.5, n_clusters)

    def draw(m):
        lab = rng.choice(n_clusters, size=m, p=weights)
        x = centres[lab] + rng.standard_normal((m, dim)) * scales[lab, None]
        return np.ascontiguousarray(x, np.float32)

    src = f"synthetic: {n_clusters} log-normal-weighted Gaussian clusters, seed {seed}"
    return Dataset("synthetic", draw(n), draw(n_queries), src)


def load_hdf5(path) -> Dataset:
    """An ann-benchmarks ``.hdf5`` file; ``angular`` data is normalised to unit
    norm (so Euclidean ranking equals cosine ranking)."""
    try:
        import h5py
    except ImportError as e:
        raise ImportError("reading ann-benchmarks .hdf5 files needs h5py: pip install h5py") from e
    path = Path(path)
    with h5py.File(path, "r") as f:
        base = np.asarray(f["train"], np.float32)
        queries = np.asarray(f["test"], np.float32)
        neighbors = np.asarray(f["neighbors"], np.int64) if "neighbors" in f else None
        distance = f.attrs.get("distance", "euclidean")
    if isinstance(distance, bytes):
        distance = distance.decode()
    normalized = False
    if distance in ("angular", "cosine"):
        base, queries, normalized = _unit(base), _unit(queries), True
    elif distance not in ("euclidean", "l2"):
        raise ValueError(f"{path}: distance {distance!r} is not supported (euclidean or angular)")
    return Dataset(
        path.stem, base, queries, f"ann-benchmarks {path} ({distance})", neighbors, normalized
    )


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-30), np.float32)


def _load_array(path, max_rows: int | None = None) -> np.ndarray:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        x = np.load(path, mmap_mode="r")
        if max_rows is not None:
            x = x[:max_rows]
    elif suffix in _VECS_DTYPES:
        x = read_vecs(path, max_rows)
    else:
        raise ValueError(f"{path}: unsupported format (use .npy, .fvecs, .bvecs, .ivecs or .hdf5)")
    if x.ndim != 2:
        raise ValueError(f"{path}: expected a 2-d array, got shape {x.shape}")
    return np.ascontiguousarray(x, np.float32)


def load_dataset(
    spec: str = "debian",
    *,
    queries=None,
    n: int = 50_000,
    dim: int = 128,
    n_queries: int | None = None,
    max_base: int | None = None,
    normalize: bool = False,
    data_dir=None,
    seed: int = 0,
) -> Dataset:
    """Load ``debian``, ``synthetic`` or a file path (see the module docstring).

    Args:
        spec: ``"debian"``, ``"synthetic"`` or a ``.npy``/``.fvecs``/``.bvecs``/
            ``.hdf5`` path to the base vectors.
        queries: a query file for a base file; without it ``n_queries`` rows
            (default 1,000) are held out of the base by a seeded permutation.
        n, dim: size of the synthetic set.
        n_queries: keep at most this many queries (synthetic: draw this many).
        max_base: keep only the first ``max_base`` base rows.
        normalize: scale base and queries to unit norm.
        data_dir: folder with the Debian files.
        seed: synthetic data and the held-out split.
    """
    if spec == "debian":
        ds = load_debian(data_dir)
    elif spec == "synthetic":
        ds = synthetic(n, dim, 1000 if n_queries is None else n_queries, seed=seed)
    else:
        path = Path(spec)
        if not path.exists():
            raise FileNotFoundError(f"{spec}: no such dataset file (or use debian / synthetic)")
        if path.suffix.lower() in (".hdf5", ".h5"):
            if queries is not None:
                raise ValueError("an .hdf5 file carries its own queries; drop --queries")
            ds = load_hdf5(path)
        elif queries is not None:
            base = _load_array(path, max_base)
            ds = Dataset(path.stem, base, _load_array(queries), f"{path} with queries {queries}")
        else:
            base = _load_array(path, None if max_base is None else max_base + (n_queries or 1000))
            nq = min(1000 if n_queries is None else n_queries, base.shape[0] // 2)
            perm = np.random.default_rng(seed).permutation(base.shape[0])
            ds = Dataset(
                path.stem,
                np.ascontiguousarray(base[np.sort(perm[nq:])]),
                np.ascontiguousarray(base[perm[:nq]]),
                f"{path} ({nq} queries held out of the base, seed {seed})",
            )
    if ds.queries.shape[1] != ds.base.shape[1]:
        raise ValueError(f"base dim {ds.base.shape[1]} != query dim {ds.queries.shape[1]}")
    if max_base is not None and ds.base.shape[0] > max_base:
        ds.base, ds.neighbors = np.ascontiguousarray(ds.base[:max_base]), None
    if n_queries is not None and ds.queries.shape[0] > n_queries:
        ds.queries = np.ascontiguousarray(ds.queries[:n_queries])
        if ds.neighbors is not None:
            ds.neighbors = ds.neighbors[:n_queries]
    if normalize and not ds.normalized:
        ds.base, ds.queries, ds.normalized = _unit(ds.base), _unit(ds.queries), True
        ds.neighbors = None  # file neighbours may no longer hold after scaling
    return ds
