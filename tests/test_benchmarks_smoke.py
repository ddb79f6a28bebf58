"""The benchmark harness: dataset readers, ground truth, interpolation, and one
``--quick`` end-to-end run (synthetic data, ours and faiss, JSON and plot)."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `pytest` (unlike `python -m pytest`) omits the repo root
    sys.path.insert(0, str(ROOT))

from benchmarks import datasets
from benchmarks.measure import at_recall, exact_knn, recall_at_k


def _texmex_bytes(x: np.ndarray, dtype) -> bytes:
    """Rows of ``int32 d`` + values, built by hand (independent of write_vecs)."""
    out = b""
    for row in x:
        out += np.int32(x.shape[1]).tobytes() + np.asarray(row, dtype).tobytes()
    return out


@pytest.mark.parametrize(
    "suffix, dtype, reader",
    [
        (".fvecs", np.float32, datasets.read_fvecs),
        (".ivecs", np.int32, datasets.read_ivecs),
        (".bvecs", np.uint8, datasets.read_bvecs),
    ],
)
def test_texmex_readers(tmp_path, suffix, dtype, reader):
    rng = np.random.default_rng(0)
    x = (
        rng.integers(0, 250, (7, 5)) if dtype != np.float32 else rng.standard_normal((7, 5))
    ).astype(dtype)
    path = tmp_path / f"a{suffix}"
    path.write_bytes(_texmex_bytes(x, dtype))
    got = reader(path)
    assert got.dtype == dtype and got.shape == (7, 5) and got.flags.c_contiguous
    np.testing.assert_array_equal(got, x)
    np.testing.assert_array_equal(reader(path, max_rows=3), x[:3])
    np.testing.assert_array_equal(datasets.read_vecs(path), x)
    # write_vecs produces the same bytes
    datasets.write_vecs(tmp_path / f"b{suffix}", x)
    assert (tmp_path / f"b{suffix}").read_bytes() == path.read_bytes()


def test_texmex_reader_errors(tmp_path):
    x = np.ones((3, 4), np.float32)
    good = _texmex_bytes(x, np.float32)
    (tmp_path / "trunc.fvecs").write_bytes(good[:-2])
    with pytest.raises(ValueError, match="whole number"):
        datasets.read_fvecs(tmp_path / "trunc.fvecs")
    bad = bytearray(good)
    bad[20:24] = np.int32(5).tobytes()  # header of row 1 (row = 4 + 16 bytes)
    (tmp_path / "hdr.fvecs").write_bytes(bytes(bad))
    with pytest.raises(ValueError, match="row 1"):
        datasets.read_fvecs(tmp_path / "hdr.fvecs")
    (tmp_path / "a.fvecs").write_bytes(good)
    with pytest.raises(ValueError, match=".ivecs"):
        datasets.read_ivecs(tmp_path / "a.fvecs")
    (tmp_path / "empty.bvecs").write_bytes(b"")
    assert datasets.read_bvecs(tmp_path / "empty.bvecs").shape == (0, 0)


def test_load_dataset_files(tmp_path):
    rng = np.random.default_rng(1)
    base = rng.standard_normal((50, 8)).astype(np.float32)
    np.save(tmp_path / "base.npy", base)
    ds = datasets.load_dataset(str(tmp_path / "base.npy"), n_queries=10)
    assert ds.base.shape == (40, 8) and ds.queries.shape == (10, 8)
    rows = {r.tobytes() for r in base}
    held = {r.tobytes() for r in ds.queries}
    assert held <= rows and not held & {r.tobytes() for r in ds.base}
    datasets.write_vecs(tmp_path / "b.fvecs", base)
    datasets.write_vecs(tmp_path / "q.fvecs", base[:5])
    ds = datasets.load_dataset(
        str(tmp_path / "b.fvecs"), queries=str(tmp_path / "q.fvecs"), max_base=30
    )
    assert ds.base.shape == (30, 8) and ds.queries.shape == (5, 8) and ds.name == "b"
    syn = datasets.load_dataset("synthetic", n=500, dim=16, n_queries=20)
    assert syn.base.shape == (500, 16) and syn.queries.shape == (20, 16)
    assert syn.base.dtype == np.float32


def test_hdf5_needs_h5py_with_hint(tmp_path):
    try:
        import h5py  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("h5py is installed")
    (tmp_path / "glove.hdf5").write_bytes(b"")
    with pytest.raises(ImportError, match="pip install h5py"):
        datasets.load_dataset(str(tmp_path / "glove.hdf5"))


def test_ground_truth_and_recall():
    rng = np.random.default_rng(2)
    base = rng.standard_normal((300, 16)).astype(np.float32)
    q = rng.standard_normal((20, 16)).astype(np.float32)
    truth = exact_knn(base, q, 5)
    d = ((q[:, None, :].astype(np.float64) - base[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(truth, np.argsort(d, axis=1, kind="stable")[:, :5])
    pytest.importorskip("faiss")
    assert recall_at_k(exact_knn(base, q, 5, how="faiss"), truth) == 1.0
    half = truth.copy()
    half[:, :] = -1
    half[:10] = truth[:10]
    assert recall_at_k(half, truth) == 0.5


def test_at_recall_interpolates_log_qps():
    pts = [
        {"n_probes": 1, "recall": 0.8, "batch_qps": 1000.0},
        {"n_probes": 2, "recall": 0.9, "batch_qps": 100.0},
        {"n_probes": 4, "recall": 1.0, "batch_qps": 10.0},
    ]
    assert at_recall(pts, 0.85, "batch_qps")["value"] == pytest.approx(316.2278, rel=1e-6)
    assert at_recall(pts, 0.7, "batch_qps")["bracket"] == "first"
    assert at_recall(pts[:2], 0.95, "batch_qps") is None


def test_quick_run_end_to_end(tmp_path):
    pytest.importorskip("faiss")
    pytest.importorskip("matplotlib")
    from benchmarks import run

    out = tmp_path / "quick.json"
    run.main(["--quick", "--out", str(out)])
    res = json.loads(out.read_text())
    assert {"setup", "dataset", "probes", "targets", "builds", "points", "ratios", "plot"} <= set(
        res
    )
    for key in (
        "jax",
        "jaxlib",
        "faiss",
        "backend",
        "device",
        "cpu_count",
        "faiss_threads",
        "args",
    ):
        assert key in res["setup"], key
    assert res["probes"] == [1, 4, 16]
    names = {p["method"] for p in res["points"]}
    assert {"ours-flat", "faiss-flat", "ours-pq-refine", "faiss-pq-refine"} <= names
    for p in res["points"]:
        assert p["batch_qps"] > 0 and 0.0 <= p["recall"] <= 1.0
        assert p["latency_p50_ms"] > 0 and p["latency_queries"] == 10
    flat = [p for p in res["points"] if p["method"] == "ours-flat"]
    assert max(flat, key=lambda p: p["n_probes"])["recall"] >= 0.9
    assert flat[0]["scan_padding"] is not None
    for name in ("ours-flat", "faiss-flat", "ours-pq-refine", "faiss-pq-refine"):
        b = res["builds"][name]
        assert b["bytes_per_vector"] > 0 and b["cold"]["train_s"] > 0
    assert res["builds"]["ours-flat"]["padding_ratio"] >= 1.0
    whats = {(r["family"], r["what"]) for r in res["ratios"]}
    assert ("IVF-Flat", "batch QPS") in whats and ("IVF-Flat", "train+add s") in whats
    assert (
        Path(res["plot"]) == out.with_suffix(".png") and out.with_suffix(".png").stat().st_size > 0
    )
