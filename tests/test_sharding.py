"""A sharded index (``IvfIndex(..., devices=...)``): rows split over 8 CPU devices
(``tests/conftest.py`` asks JAX for 8), results equal to one device's bit for bit."""

import jax
import numpy as np
import pytest
from _helpers import assert_same_results, gaussian
from jax.sharding import Mesh

from iqdb_ivf_jax import (
    Filter,
    IndexFileError,
    InvalidArgumentError,
    InvalidConfigError,
    IvfConfig,
    IvfIndex,
)

pytestmark = pytest.mark.skipif(
    len(jax.devices()) < 8, reason="needs 8 JAX devices (tests/conftest.py sets 8 CPU devices)"
)

D = 16
CONFIGS = {
    "flat_l2": ("euclidean", IvfConfig(n_clusters=16, n_probes=4, seed=3)),
    "flat_cos_spill": ("cosine", IvfConfig(n_clusters=16, n_probes=4, spill_lambda=1.0, seed=3)),
    "pq_residual_refine": (
        "euclidean",
        IvfConfig(n_clusters=16, n_probes=4, use_pq=True, pq_subvectors=4, pq_refine_factor=3),
    ),
    "pq_codes_only_dot": (
        "dot_product",
        IvfConfig(
            n_clusters=16,
            n_probes=4,
            use_pq=True,
            pq_subvectors=4,
            pq_by_residual=False,
            pq_refine_factor=0,
            keep_raw_vectors=False,
        ),
    ),
}


def _build(metric, cfg, x, devices=None):
    """Train on the first 600 rows, insert in two batches (with metadata; the
    second grows the pool), delete every 5th id, upsert three ids."""
    idx = IvfIndex(D, metric, cfg, devices=devices)
    idx.train(x[:600])
    meta = [{"g": i % 3} for i in range(len(x))]
    half = len(x) // 2
    idx.insert_batch(list(range(half)), x[:half], meta[:half])
    idx.insert_batch(list(range(half, len(x))), x[half:], meta[half:])
    idx.delete(list(range(0, len(x), 5)))
    idx.upsert([1, 2, 3], x[10:13] * 0.5)
    return idx


def _same_index(a: IvfIndex, b: IvfIndex, q: np.ndarray, live_id: int = 7) -> None:
    assert len(a) == len(b)
    assert_same_results(a.search_arrays(q, 10), b.search_arrays(q, 10))
    assert_same_results(
        a.search_arrays(q, 7, filter={"g": 1}, n_probes=9),
        b.search_arrays(q, 7, filter={"g": 1}, n_probes=9),
    )
    for v in q[:3]:
        assert [(h.id, h.distance) for h in a.search(v, 5)] == [
            (h.id, h.distance) for h in b.search(v, 5)
        ]
    np.testing.assert_array_equal(a.get(live_id)[0], b.get(live_id)[0])


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_sharded_results_equal_one_device(name):
    metric, cfg = CONFIGS[name]
    x, q = gaussian(3000, D, seed=1), gaussian(40, D, seed=2)
    one = _build(metric, cfg, x)
    eight = _build(metric, cfg, x, devices=jax.devices()[:8])
    _same_index(one, eight, q)
    # and the whole pool probed, against the exact order (distance, insertion)
    assert_same_results(
        one.search_arrays(q, 10, n_probes=16), eight.search_arrays(q, 10, n_probes=16)
    )


def test_rows_are_split_over_the_devices():
    metric, cfg = CONFIGS["flat_l2"]
    x = gaussian(3000, D, seed=1)
    idx = _build(metric, cfg, x, devices=jax.devices()[:8])
    state = idx.state
    for name in ("vectors", "seqs", "valid"):
        arr = getattr(state, name)
        assert len(arr.sharding.device_set) == 8
        assert {s.data.shape[0] for s in arr.addressable_shards} == {state.n_blocks // 8}
    assert state.centroids.sharding.is_fully_replicated
    per = idx.stats().extra["devices"]
    assert len(per) == 8 and sum(d["rows"] for d in per) == len(idx)
    assert min(d["rows"] for d in per) > 0  # interleaved blocks: every device holds rows
    assert "devices=8" in repr(idx)
    idx.search_batch(x[:2], 1)
    assert idx.stats().extra["last_search"]["path"] == "sharded"


def test_single_device_mesh_and_a_mesh_argument_give_the_same_results():
    metric, cfg = CONFIGS["pq_residual_refine"]
    x, q = gaussian(2000, D, seed=4), gaussian(20, D, seed=5)
    one = _build(metric, cfg, x)
    single = _build(metric, cfg, x, devices=jax.devices()[:1])
    mesh = Mesh(np.array(jax.devices()[:4]), ("rows",))
    four = _build(metric, cfg, x, devices=mesh)
    _same_index(one, single, q)
    _same_index(one, four, q)


def test_reblocking_and_compaction_keep_results_equal():
    metric, cfg = CONFIGS["flat_l2"]
    x, q = gaussian(6000, D, seed=6), gaussian(30, D, seed=7)
    built = []
    for devices in (None, jax.devices()[:8]):
        idx = IvfIndex(D, metric, cfg, devices=devices)
        idx.train(x[:300])  # small sample: small blocks, re-blocked as the pool grows
        block0 = idx.stats().extra["block_size"]
        idx.add_stream((np.arange(s, s + 1000), x[s : s + 1000]) for s in range(0, 6000, 1000))
        assert idx.stats().extra["block_size"] > block0
        idx.delete(list(range(0, 6000, 2)) + list(range(1, 3000, 2)))  # 4,500 holes: compacts
        assert idx.stats().extra["tombstones"] == 0
        built.append(idx)
    _same_index(built[0], built[1], q, live_id=3001)


def test_save_and_load_on_any_device_count(tmp_path):
    metric, cfg = CONFIGS["flat_cos_spill"]
    x, q = gaussian(2000, D, seed=8), gaussian(20, D, seed=9)
    eight = _build(metric, cfg, x, devices=jax.devices()[:8])
    eight.save(tmp_path / "a")
    _same_index(eight, IvfIndex.load(tmp_path / "a"), q)
    two = IvfIndex.load(tmp_path / "a", devices=jax.devices()[:2])
    assert len(two.state.vectors.sharding.device_set) == 2
    _same_index(eight, two, q)
    # a save holds the rows in block order, whatever the device count
    one = _build(metric, cfg, x)
    plain = IvfIndex.load(tmp_path / "a")
    for name in ("vectors", "codes", "seqs", "valid", "twin"):
        np.testing.assert_array_equal(getattr(plain.state, name), getattr(one.state, name))
    # and a one-device save spreads over eight on load
    one.save(tmp_path / "b")
    _same_index(one, IvfIndex.load(tmp_path / "b", devices=jax.devices()[:8]), q)
    with pytest.raises(InvalidArgumentError, match="not both"):
        IvfIndex.load(tmp_path / "a", device=jax.devices()[0], devices=jax.devices()[:2])
    with pytest.raises(IndexFileError):
        IvfIndex.load(tmp_path / "missing", devices=jax.devices()[:2])


def test_filter_mask_and_writes_on_a_sharded_index():
    metric, cfg = CONFIGS["flat_l2"]
    x, q = gaussian(2000, D, seed=10), gaussian(10, D, seed=11)
    idx = _build(metric, cfg, x, devices=jax.devices()[:8])
    mask = idx.filter_mask(Filter.eq("g", 2))
    assert mask.shape == idx.state.valid.shape and len(mask.sharding.device_set) == 8
    idx.insert(99_999, x[0] + 1e-3)
    assert idx.search(x[0] + 1e-3, 1)[0].id == 99_999
    idx.delete(99_999)
    assert 99_999 not in idx
    idx.retrain()
    assert len(idx.state.codes.sharding.device_set) == 8
    one = _build(metric, cfg, x)
    one.insert(99_999, x[0] + 1e-3)
    one.delete(99_999)
    one.retrain()
    _same_index(one, idx, q)


def test_bad_device_arguments_are_refused():
    devs = jax.devices()
    cases = [
        ([], InvalidConfigError, "empty"),
        (devs[:3], InvalidConfigError, "power-of-two"),
        ([devs[0], devs[0]], InvalidArgumentError, "repeats"),
        (["cpu:0"], InvalidArgumentError, "jax.Device"),
        ("cpu", InvalidArgumentError, "sequence of jax.Device"),
        (Mesh(np.array(devs[:4]).reshape(2, 2), ("a", "b")), InvalidArgumentError, "one axis"),
    ]
    for devices, err, match in cases:
        with pytest.raises(err, match=match):
            IvfIndex(D, "euclidean", IvfConfig(n_clusters=4, n_probes=2), devices=devices)
    idx = IvfIndex(D, "euclidean", IvfConfig(n_clusters=4, n_probes=2), devices=devs[:2])
    x = gaussian(200, D)
    idx.train(x)
    idx.insert_batch(list(range(200)), x)
    with pytest.raises(InvalidConfigError, match="path='list'"):
        idx.search_arrays(x[:4], 3, path="list")


def test_functional_kernels_refuse_a_sharded_state():
    from iqdb_ivf_jax import functional

    metric, cfg = CONFIGS["flat_l2"]
    x = gaussian(1000, D, seed=12)
    idx = _build(metric, cfg, x, devices=jax.devices()[:2])
    with pytest.raises(InvalidArgumentError, match="split over 2 devices"):
        functional.search(idx.state, x[0], k=3, n_probes=2)


def test_memory_mapped_load_onto_other_devices(tmp_path):
    metric, cfg = CONFIGS["pq_residual_refine"]
    x, q = gaussian(2000, D, seed=13), gaussian(20, D, seed=14)
    one = _build(metric, cfg, x)
    one.save(tmp_path / "a")
    devs = jax.devices()[4:8]  # not the default device
    mapped = IvfIndex.load(tmp_path / "a", mmap=True, devices=devs)
    _same_index(one, mapped, q)  # the refine reads the file
    for idx in (one, mapped):
        idx.insert(50_000, x[3] + 0.01)  # the raw vectors move onto the devices
    assert mapped.state.vectors.sharding.device_set == set(devs)
    _same_index(one, mapped, q)
