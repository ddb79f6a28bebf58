"""``IvfIndex.load(path, mmap=True)``: an IVF-PQ index's raw vectors stay in the
save's file. Results, ``get`` and ``stats`` equal an in-memory load's, bit for
bit; the load reads none of the mapped pages; writes move the vectors into
memory first; what cannot be mapped is refused or unchanged."""

import sys
from pathlib import Path

import numpy as np
import pytest

from iqdb_ivf_jax import (
    Filter,
    IndexFileError,
    InvalidArgumentError,
    InvalidConfigError,
    IvfConfig,
    IvfIndex,
    functional,
)
from iqdb_ivf_jax import _persist as persist

D, N = 16, 1500
_rng = np.random.default_rng(7)
X = _rng.standard_normal((N, D)).astype(np.float32)
Q = X[:40] + 0.05 * _rng.standard_normal((40, D)).astype(np.float32)

CASES = {
    "l2_residual": ("euclidean", {"pq_by_residual": True, "pq_refine_factor": 3}),
    "dot_plain": ("dot_product", {"pq_refine_factor": 2}),
    "l2_spilled": ("euclidean", {"pq_refine_factor": 4, "spill_lambda": 1.0}),
}


def _index(metric, **cfg) -> IvfIndex:
    ix = IvfIndex(
        D,
        metric,
        IvfConfig(
            n_clusters=12, n_probes=4, use_pq=True, pq_subvectors=4, kmeans_max_iterations=5, **cfg
        ),
    )
    ix.train(X)
    ix.insert_batch(range(N), X, [{"g": i % 3} for i in range(N)])
    ix.delete(list(range(0, 200, 9)))
    return ix


@pytest.fixture(scope="module", params=list(CASES))
def saved(request, tmp_path_factory):
    metric, cfg = CASES[request.param]
    path = tmp_path_factory.mktemp("mmap") / request.param
    _index(metric, **cfg).save(path)
    return path


def _same(a, b):
    assert a[0].view(np.uint32).tobytes() == b[0].view(np.uint32).tobytes()
    assert a[1].tolist() == b[1].tolist()


def test_results_equal_an_in_memory_load(saved):
    mem, mapped = IvfIndex.load(saved), IvfIndex.load(saved, mmap=True)
    assert mapped.stats().extra["mapped_bytes"] > 0 and mem.stats().extra["mapped_bytes"] == 0
    assert not mapped.state.keeps_vectors  # nothing of the raw vectors in the state
    with pytest.raises(InvalidConfigError, match="mmap=True"):  # the functional API cannot
        functional.search(mapped.state, Q[0], k=3, n_probes=2, refine=2)
    for kw in (
        {},
        {"path": "query"},
        {"path": "list"},
        {"filter": Filter.eq("g", 1)},
        {"refine": 1},
        {"refine": 0},
        {"n_probes": 12},
    ):
        _same(mem.search_arrays(Q, 7, **kw), mapped.search_arrays(Q, 7, **kw))
    _same(mem.search_arrays(Q, 400), mapped.search_arrays(Q, 400))  # shortlist past len
    for i in range(4):
        assert mem.search(Q[i], 5) == mapped.search(Q[i], 5)
    for id_ in (1, 500, N - 1):
        (va, ma), (vb, mb) = mem.get(id_), mapped.get(id_)
        assert va.tobytes() == vb.tobytes() and ma == mb


def test_deletes_stay_mapped_and_writes_move_vectors_into_memory(saved):
    mem, mapped = IvfIndex.load(saved), IvfIndex.load(saved, mmap=True)
    for ix in (mem, mapped):
        ix.delete([1, 2, 3])
    assert mapped._raw_vectors is not None
    _same(mem.search_arrays(Q, 5), mapped.search_arrays(Q, 5))
    new = _rng.standard_normal((30, D)).astype(np.float32)
    for ix in (mem, mapped):
        ix.insert_batch(range(10**6, 10**6 + 30), new)
        ix.upsert([4], new[:1])
    assert mapped._raw_vectors is None and mapped.state.keeps_vectors
    assert mapped.stats().extra["mapped_bytes"] == 0
    _same(mem.search_arrays(Q, 5), mapped.search_arrays(Q, 5))
    assert mem.get(4)[0].tobytes() == mapped.get(4)[0].tobytes()


def test_retrain_reads_the_map_and_save_over_its_own_file(saved, tmp_path):
    mem, mapped = IvfIndex.load(saved), IvfIndex.load(saved, mmap=True)
    own = tmp_path / "copy"
    mapped.save(own)  # the vectors are read from the map into the new save
    again = IvfIndex.load(own, mmap=True)
    again.save(own)  # over the very file it maps: the map outlives the swap
    _same(mem.search_arrays(Q, 6), IvfIndex.load(own).search_arrays(Q, 6))
    _same(mem.search_arrays(Q, 6), again.search_arrays(Q, 6))
    mem.retrain()
    mapped.retrain()
    assert mapped._raw_vectors is None
    _same(mem.search_arrays(Q, 6), mapped.search_arrays(Q, 6))


def test_ivf_flat_is_refused_and_codes_only_is_unchanged(tmp_path):
    flat = IvfIndex(D, "euclidean", IvfConfig(n_clusters=4, n_probes=2))
    flat.train(X)
    flat.insert_batch(range(100), X[:100])
    flat.save(tmp_path / "flat")
    with pytest.raises(InvalidConfigError, match="IVF-Flat.*mmap=False"):
        IvfIndex.load(tmp_path / "flat", mmap=True)
    with pytest.raises(InvalidArgumentError, match="mmap must be a bool"):
        IvfIndex.load(tmp_path / "flat", mmap="yes")  # type: ignore[arg-type]
    codes = IvfIndex(
        D,
        "euclidean",
        IvfConfig(
            n_clusters=4,
            n_probes=2,
            use_pq=True,
            pq_subvectors=4,
            pq_refine_factor=0,
            keep_raw_vectors=False,
            kmeans_max_iterations=3,
        ),
    )
    codes.train(X)
    codes.insert_batch(range(N), X)
    codes.save(tmp_path / "codes")
    mapped = IvfIndex.load(tmp_path / "codes", mmap=True)
    assert mapped._raw_vectors is None
    _same(codes.search_arrays(Q, 5), mapped.search_arrays(Q, 5))


def test_damaged_mapped_vectors_are_caught_while_streaming(saved, tmp_path):
    import shutil

    arrays_file = persist.ARRAYS
    # a NaN written into the vectors with a consistent checksum: the streamed check
    p = tmp_path / "nan"
    shutil.copytree(saved, p)
    got = persist.read_tensors(p / arrays_file, (p / arrays_file).stat().st_size)
    arrays = {k: np.array(v) for k, v in got.arrays.items()}
    arrays["state.vectors"][0, 0, 0] = np.nan
    import hashlib

    import safetensors.numpy

    blob = safetensors.numpy.save(arrays)
    (p / arrays_file).write_bytes(blob)
    m = persist.json.loads((p / persist.MANIFEST).read_text())
    m["files"] = {arrays_file: {"bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}}
    (p / persist.MANIFEST).write_bytes(persist.manifest_text(m))
    for mmap in (False, True):
        with pytest.raises(IndexFileError, match="NaN or Inf"):
            IvfIndex.load(p, mmap=mmap)
    # one flipped byte inside the mapped region: the checksum
    q = tmp_path / "flip"
    shutil.copytree(saved, q)
    data = bytearray((q / arrays_file).read_bytes())
    data[-(len(data) // 3)] ^= 0x10
    (q / arrays_file).write_bytes(bytes(data))
    with pytest.raises(IndexFileError):
        IvfIndex.load(q, mmap=True)


def _mapped_rss_kb(path: Path) -> int:
    """Resident kB of this process's mappings of ``path`` (Linux smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if head and "-" in head[0] and len(head) >= 5:  # a mapping's header line
                inside = line.rstrip().endswith(str(path))
            elif inside and head and head[0] == "Rss:":
                total += int(head[1])
    return total


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")
def test_load_reads_none_of_the_mapped_pages(saved):
    mapped = IvfIndex.load(saved, mmap=True)
    target = (saved / persist.ARRAYS).resolve()
    size_kb = mapped._raw_vectors.nbytes // 1024
    assert size_kb > 100
    assert _mapped_rss_kb(target) == 0  # hashed and checked by reads, never through the map
    mapped.search_arrays(Q[:2], 3)  # a refine reads the map
    assert _mapped_rss_kb(target) > 0
