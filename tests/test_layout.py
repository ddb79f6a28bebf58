import numpy as np
import pytest

from iqdb_ivf_jax import IvfConfig, IvfIndex, _index
from iqdb_ivf_jax._layout import BlockLayout, pow2_at_least, scan_bucket, scan_buckets


def test_pow2_and_bucket():
    assert [pow2_at_least(n) for n in (0, 1, 2, 3, 9)] == [1, 1, 2, 4, 16]
    assert pow2_at_least(3, 8) == 8
    for n in range(1, 2000):
        b = scan_bucket(n)
        assert n <= b <= max(n, 1.25 * n + 1)
    assert len({scan_bucket(n) for n in range(1, 1025)}) < 60


def test_scan_buckets_matches_scan_bucket():
    n = np.concatenate([np.arange(0, 5000), [2**31 - 1, 2**31, 2**31 + 5, 2**40 + 1, 2**52 - 1]])
    assert scan_buckets(n).tolist() == [scan_bucket(int(v)) for v in n]


def test_allocate_fills_blocks_per_list_and_reuses_holes():
    lay = BlockLayout(n_lists=3, block_size=4)
    slots = lay.allocate(np.array([0, 0, 1, 0, 0, 0]))
    assert list(lay.list_nblocks) == [2, 1, 0]
    assert len(set(slots.tolist())) == 6
    assert set(lay.list_of(slots).tolist()) == {0, 1}
    assert lay.allocated_rows() == 12
    lab = lay.release(int(slots[2]))
    assert lab == 1 and lay.n_holes == 1 and lay.list_live[1] == 0
    again = lay.allocate(np.array([1]))
    assert again[0] == slots[2] and lay.n_holes == 0


def test_growth_is_geometric_and_copy_is_independent():
    lay = BlockLayout(n_lists=2, block_size=2)
    before = lay.copy()
    lay.allocate(np.zeros(100, np.int64))
    # the pool by powers of two, the table width by at most +25% past 16 columns
    assert lay.n_blocks == 64 and lay.width == 56
    assert before.n_used_blocks == 0 and before.n_blocks == 8
    assert lay.list_live[0] == 100
    blocks = lay.list_blocks[0, : lay.list_nblocks[0]]
    assert len(set(blocks.tolist())) == 50


def test_sorted_allocation_equals_row_by_row():
    rng = np.random.default_rng(3)
    fast, slow = BlockLayout(n_lists=7, block_size=4), BlockLayout(n_lists=7, block_size=4)
    for step in range(6):
        labels = np.sort(rng.integers(0, 7, size=int(rng.integers(1, 40))))
        a, b = fast.allocate(labels), slow._allocate_rows(labels)
        np.testing.assert_array_equal(a, b)
        for lay in (fast, slow):
            for s in a[:: 3 + step].tolist():
                lay.release(int(s))
        for name in ("list_blocks", "list_nblocks", "block_list", "block_fill", "list_live"):
            np.testing.assert_array_equal(getattr(fast, name), getattr(slow, name))
        assert fast.holes == slow.holes and fast.n_holes == slow.n_holes
        assert fast.n_used_blocks == slow.n_used_blocks


def _reblock_run(monkeypatch, reblock: bool, metric: str, **cfg):
    """An index trained on a small sample (8-row blocks), then grown 16x by
    batches; ``reblock=False`` pins the block size the training chose."""
    if not reblock:
        monkeypatch.setattr(_index, "_choose_block_size", lambda n, n_lists: 8)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((8192, 16)).astype(np.float32)
    x[100:120] = x[99]  # duplicates: ties go to the earlier insert
    index = IvfIndex(16, metric, IvfConfig(n_clusters=4, n_probes=2, seed=1, **cfg))
    index.train(x[:256])
    blocks = [index.state.block_size]
    for s in range(0, 8192, 1024):
        index.insert_batch(list(range(s, s + 1024)), x[s : s + 1024])
        blocks.append(index.state.block_size)
    index.delete(list(range(0, 8192, 7)))
    q = rng.standard_normal((40, 16)).astype(np.float32)
    q[0] = x[99]
    out = [index.search_arrays(q, k=10, path=p) for p in ("query", "list")]
    out.append(index.search_arrays(q[:1], k=10))
    return blocks, out, index


@pytest.mark.parametrize(
    ("metric", "cfg"),
    [("euclidean", {}), ("cosine", {}), ("euclidean", {"use_pq": True, "pq_subvectors": 4})],
    ids=["flat-l2", "flat-cos", "pq"],
)
def test_reblocking_a_grown_index_is_unobservable(monkeypatch, metric, cfg):
    """A grown index moves to larger blocks (an eighth of the mean list) as its
    pool grows; every search answer stays the same, bit for bit."""
    blocks, got, index = _reblock_run(monkeypatch, True, metric, **cfg)
    assert blocks[0] == 8 and blocks[-1] == 64 and blocks == sorted(blocks), blocks
    assert index.stats().extra["block_size"] == 64
    pinned, want, _ = _reblock_run(monkeypatch, False, metric, **cfg)
    assert set(pinned) == {8}
    for (d1, i1), (d2, i2) in zip(got, want):
        assert d1.tobytes() == d2.tobytes()
        np.testing.assert_array_equal(i1, i2)
