"""A device computation that fails (out of memory, above all) raises DeviceError
from the call that ran it, and leaves the index exactly as it was."""

import jax
import numpy as np
import pytest

import iqdb_ivf_jax._insert as insert_module
from iqdb_ivf_jax import DeviceError, IqdbError, IvfConfig, IvfIndex
from iqdb_ivf_jax._train import quantizers

OOM = "RESOURCE_EXHAUSTED: Out of memory allocating 34364998256 bytes"


def _boom(*args, **kwargs):
    raise jax.errors.JaxRuntimeError(OOM)


def test_train_and_retrain_raise_and_leave_the_index_as_it_was(monkeypatch):
    x = np.random.default_rng(0).standard_normal((600, 8)).astype(np.float32)
    idx = IvfIndex(8, "euclidean", IvfConfig(n_clusters=4, n_probes=4))
    with monkeypatch.context() as m:
        m.setattr(quantizers, "kmeans_fit", _boom)
        with pytest.raises(DeviceError, match="smaller training_sample_size") as info:
            idx.train(x)
    assert isinstance(info.value, IqdbError) and isinstance(info.value.__cause__, RuntimeError)
    assert not idx.is_trained
    idx.train(x)  # trainable again
    idx.insert_batch(range(600), x)
    before = idx.search_arrays(x[:20], k=5)
    centroids = np.asarray(idx.state.centroids)
    with monkeypatch.context() as m:
        m.setattr(quantizers, "kmeans_fit", _boom)
        with pytest.raises(DeviceError):
            idx.retrain()
    np.testing.assert_array_equal(np.asarray(idx.state.centroids), centroids)
    after = idx.search_arrays(x[:20], k=5)
    np.testing.assert_array_equal(before[1], after[1])


def test_insert_raises_and_leaves_the_index_as_it_was(monkeypatch):
    x = np.random.default_rng(1).standard_normal((600, 8)).astype(np.float32)
    idx = IvfIndex(8, "euclidean", IvfConfig(n_clusters=4, n_probes=4))
    idx.train(x)
    idx.insert_batch(range(300), x[:300])
    with monkeypatch.context() as m:
        m.setattr(insert_module, "prepare_rows", _boom)
        with pytest.raises(DeviceError):
            idx.insert_batch(range(300, 600), x[300:])
        with pytest.raises(DeviceError):
            idx.upsert([0, 1000], x[:2])
    assert len(idx) == 300 and 300 not in idx and 1000 not in idx
    idx.insert_batch(range(300, 600), x[300:])
    assert idx.search(x[450], k=1)[0].id == 450
