"""Recall on the real sentence embeddings (skipped when ../shared/data is absent)."""

import numpy as np
import pytest

from iqdb_ivf_jax import IvfConfig, IvfIndex


def _truth(base, queries, k):
    b = base.astype(np.float64)
    d = (b * b).sum(1)[None, :] - 2 * queries.astype(np.float64) @ b.T
    return np.argsort(d, axis=1, kind="stable")[:, :k]


def _recall(ids, truth):
    return np.mean([len(set(a) & set(b)) / truth.shape[1] for a, b in zip(ids, truth)])


@pytest.fixture(scope="module")
def subset(real_data):
    base, queries = real_data
    return base[:20000], queries[:300], _truth(base[:20000], queries[:300], 10)


def test_flat_recall_close_to_faiss(subset):
    faiss = pytest.importorskip("faiss")
    base, queries, truth = subset
    index = IvfIndex(
        384, "euclidean", IvfConfig(n_clusters=128, n_probes=16, kmeans_max_iterations=10)
    )
    index.train(base)
    index.insert_batch(np.arange(len(base)), base)
    _, ids = index.search_arrays(queries, k=10)
    ours = _recall(ids, truth)
    faiss.omp_set_num_threads(2)
    quant = faiss.IndexFlatL2(384)
    ivf = faiss.IndexIVFFlat(quant, 384, 128)
    ivf.cp.niter = 10
    ivf.train(base)
    ivf.add(base)
    ivf.nprobe = 16
    _, fi = ivf.search(queries, 10)
    theirs = _recall(fi, truth)
    assert ours >= theirs - 0.02, (ours, theirs)


def test_full_probe_equals_brute_force_all_flat_metrics(subset):
    base, queries, _ = subset
    base, queries = base[:3000], queries[:20]
    from iqdb_ivf_jax._metrics import pairwise

    for metric in ["euclidean", "cosine", "dot_product", "manhattan", "hamming"]:
        index = IvfIndex(384, metric, IvfConfig(n_clusters=8, n_probes=8))
        index.train(base)
        index.insert_batch(np.arange(len(base)), base)
        _, ids = index.search_arrays(queries, k=10)
        dist = np.asarray(pairwise(queries, base, index.metric))
        # oracle: (float32 distance, seq) where seq == row number
        order = np.lexsort((np.broadcast_to(np.arange(len(base)), dist.shape), dist), axis=1)[
            :, :10
        ]
        assert np.array_equal(ids, order), metric


def test_pq_refine_recall(subset):
    base, queries, truth = subset
    index = IvfIndex(
        384,
        "euclidean",
        IvfConfig(
            n_clusters=64,
            n_probes=16,
            use_pq=True,
            pq_subvectors=48,
            pq_refine_factor=4,
            kmeans_max_iterations=10,
        ),
    )
    index.train(base)
    index.insert_batch(np.arange(len(base)), base)
    _, ids4 = index.search_arrays(queries, k=10)
    index.set_pq_refine_factor(0)
    _, ids0 = index.search_arrays(queries, k=10)
    r4, r0 = _recall(ids4, truth), _recall(ids0, truth)
    assert r4 >= 0.75, r4
    assert r4 >= r0
