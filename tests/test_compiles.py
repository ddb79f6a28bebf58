"""Compilation counts: repeated searches and many single inserts stay in their buckets."""

import contextlib
import logging

import jax
import numpy as np

from iqdb_ivf_jax import IvfConfig, IvfIndex


class _Counter(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.names = []

    def emit(self, record):
        msg = record.getMessage()
        if msg.startswith("Compiling "):
            self.names.append(msg.split()[1])


@contextlib.contextmanager
def count_compiles():
    """Collect the names of the jitted functions XLA compiles inside the block."""
    counter = _Counter()
    logger = logging.getLogger("jax")
    old_level = logger.level
    logger.addHandler(counter)
    logger.setLevel(logging.DEBUG)
    try:
        with jax.log_compiles(True):
            yield counter.names
    finally:
        logger.removeHandler(counter)
        logger.setLevel(old_level)


def _data(n, d=16, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.uniform(-4, 4, (10, d)).astype(np.float32)
    return (c[rng.integers(0, 10, n)] + rng.standard_normal((n, d)) * 0.4).astype(np.float32)


def test_compile_counts_repeated_search_and_1000_single_inserts():
    x = _data(6000)
    index = IvfIndex(16, "euclidean", IvfConfig(n_clusters=16, n_probes=4, seed=0))
    index.train(x[:2000])
    index.insert_batch(list(range(2000)), x[:2000])
    q = x[5000:5100]
    index.search_arrays(q, k=10)  # warm-up
    index.search(q[0], k=10)
    with count_compiles() as names:
        for _ in range(5):
            index.search_arrays(q, k=10)
            index.search(q[0] + 1e-4, k=10)
    assert names == [], names
    with count_compiles() as names:
        for i in range(1000):
            index.insert(10_000 + i, x[2000 + i])
    # capacity grows geometrically: at most a few new shapes for 1,000 inserts
    print(f"compiles during 1000 single inserts: {len(names)} {sorted(set(names))}")
    assert len(names) <= 12, names
    with count_compiles() as names:
        index.search_arrays(q, k=10)  # the pool grew: one recompile per kernel shape
        index.search(q[0], k=10)
    print(f"compiles for the first search after the pool grew: {len(names)}")
    with count_compiles() as names:
        for _ in range(3):
            index.search_arrays(q, k=10)
            index.search(q[0], k=10)
    assert names == [], names


def test_a_growing_pool_recompiles_no_assignment_or_encoding():
    """Assignment and PQ encoding see only the quantizers (IvfState.quantizers),
    so batches that grow the pool, widen the table and re-block reuse their
    programs."""
    x = _data(8192, d=16, seed=1)
    cfg = IvfConfig(n_clusters=8, n_probes=2, seed=0, use_pq=True, pq_subvectors=4)
    index = IvfIndex(16, "euclidean", cfg)
    index.train(x[:1024])
    index.insert_batch(list(range(1024)), x[:1024])
    st = index.state
    shape = (st.n_blocks, st.block_size, st.table_width)
    with count_compiles() as names:
        for s in range(1024, 8192, 1024):
            index.insert_batch(list(range(s, s + 1024)), x[s : s + 1024])
    st = index.state
    assert st.n_blocks * st.block_size > shape[0] * shape[1], (st.n_blocks, st.block_size)
    assert (st.n_blocks, st.block_size, st.table_width) != shape
    assert "jit(prepare_rows)" not in names, names
    assert "jit(stage)" not in names, names  # no per-shape table copy programs
