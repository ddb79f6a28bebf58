"""Streamed adds: ``add_stream`` and ``insert_batch(progress=...)`` commit chunks,
train from the stream, report what was committed on error, and equal one batch."""

import sys

import numpy as np
import pytest
from _helpers import assert_same_results, gaussian

from iqdb_ivf_jax import DuplicateIdError, IvfConfig, IvfIndex
from iqdb_ivf_jax._progress import progress_bar


def _batches(x, size, meta=True):
    for s in range(0, len(x), size):
        ids = np.arange(s, min(s + size, len(x)))
        if meta:
            yield ids, x[s : s + size], [{"g": int(i) % 3} for i in ids]
        else:
            yield ids.tolist(), x[s : s + size]


CFG = IvfConfig(n_clusters=8, n_probes=3, training_sample_size=300)


def test_add_stream_trains_from_the_stream_and_equals_one_batch():
    x = gaussian()
    a = IvfIndex(8, "euclidean", CFG)
    assert a.add_stream(_batches(x, 37), chunk_rows=128, progress=False) == 600
    b = IvfIndex(8, "euclidean", CFG)
    b.train(x[:333])  # the first whole batches reaching training_sample_size
    b.insert_batch(list(range(600)), x, [{"g": i % 3} for i in range(600)])
    np.testing.assert_array_equal(a.state.centroids, b.state.centroids)
    assert len(a) == 600
    q = x[:50] + 0.01
    assert_same_results(a.search_arrays(q, k=10), b.search_arrays(q, k=10))
    assert a.search_batch(q[:4], k=5, filter={"g": 2}) == b.search_batch(
        q[:4], k=5, filter={"g": 2}
    )


def test_add_stream_into_a_trained_index_and_a_short_stream():
    x = gaussian()
    a = IvfIndex(8, "euclidean", CFG)
    a.train(x)
    assert a.add_stream(iter([(list(range(5)), x[:5])]), progress=False) == 5
    assert len(a) == 5
    short = IvfIndex(8, "euclidean", CFG)  # fewer rows than the sample: trains on all
    assert short.add_stream(_batches(x[:100], 30, meta=False), progress=False) == 100
    ref = IvfIndex(8, "euclidean", CFG)
    ref.train(x[:100])
    np.testing.assert_array_equal(short.state.centroids, ref.state.centroids)


def test_add_stream_error_reports_committed_rows():
    x = gaussian()
    idx = IvfIndex(8, "euclidean", CFG)
    idx.train(x)

    def stream():
        yield from _batches(x[:400], 50)
        yield [3], x[400:401]  # id 3 is live by then: the chunk holding it fails

    with pytest.raises(DuplicateIdError) as info:
        idx.add_stream(stream(), chunk_rows=100, progress=False)
    assert info.value.committed_rows == 400 == len(idx)
    assert any("400 rows were committed" in n for n in info.value.__notes__)
    with pytest.raises(TypeError):
        idx.add_stream([x[:3]], progress=False)
    with pytest.raises(ValueError):
        idx.add_stream([], chunk_rows=0)


def test_insert_batch_with_progress_equals_without(monkeypatch):
    import iqdb_ivf_jax._index as index_module

    monkeypatch.setattr(index_module, "STREAM_CHUNK_ROWS", 128)
    x = gaussian()
    a = IvfIndex(8, "euclidean", CFG)
    b = IvfIndex(8, "euclidean", CFG)
    a.train(x)
    b.train(x)
    a.insert_batch(np.arange(600), x, progress=True)
    b.insert_batch(np.arange(600), x)
    assert_same_results(a.search_arrays(x[:40], k=10), b.search_arrays(x[:40], k=10))
    with pytest.raises(DuplicateIdError):  # validated whole before any chunk
        a.insert_batch([1000, 1001, 5], x[:3], progress=True)
    assert len(a) == 600


def test_progress_bar_needs_tqdm_only_when_asked(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    with pytest.raises(ImportError, match="pip install"):
        progress_bar(True, total=3, desc="x")
    bar = progress_bar(None, total=3, desc="x")  # auto: silently off
    bar.update(3)
    bar.close()
