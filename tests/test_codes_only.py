"""Codes-only IVF-PQ (``keep_raw_vectors=False``): no raw vectors on the device,
the same ADC results as an index that keeps them, reconstructions for ``get``
and ``retrain``, and compaction that moves codes without re-encoding."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import assert_same_results

from iqdb_ivf_jax import InvalidConfigError, IvfConfig, IvfIndex
from iqdb_ivf_jax._pq import pq_decode

M = 4
BASE = IvfConfig(n_clusters=6, n_probes=3, use_pq=True, pq_subvectors=M, pq_refine_factor=0)


def _data(n=800, d=16, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((6, d)).astype(np.float32) * 3
    return (c[rng.integers(0, 6, n)] + rng.standard_normal((n, d))).astype(np.float32)


def _pair(metric="euclidean", **kw):
    x = _data()
    out = []
    for keep in (True, False):
        cfg = dataclasses.replace(BASE, keep_raw_vectors=keep, **kw)
        idx = IvfIndex(16, metric, cfg)
        idx.train(x)
        idx.insert_batch(np.arange(len(x)), x, [{"g": i % 4} for i in range(len(x))])
        out.append(idx)
    return out[0], out[1], x


def test_config_rules():
    with pytest.raises(InvalidConfigError, match="use_pq"):
        IvfIndex(16, "euclidean", IvfConfig(n_clusters=4, n_probes=2, keep_raw_vectors=False))
    with pytest.raises(InvalidConfigError, match="pq_refine_factor"):
        IvfIndex(
            16, "euclidean", dataclasses.replace(BASE, pq_refine_factor=2, keep_raw_vectors=False)
        )
    with pytest.raises(InvalidConfigError, match="keep_raw_vectors must be a bool"):
        IvfConfig(keep_raw_vectors=1).validate()
    assert BASE.with_keep_raw_vectors(False).keep_raw_vectors is False


@pytest.mark.parametrize(
    ("metric", "kw"),
    [
        ("euclidean", {}),
        ("euclidean", {"pq_by_residual": True}),
        ("dot_product", {"pq_by_residual": True}),
        ("euclidean", {"spill_lambda": 1.0}),
    ],
    ids=["l2", "l2-residual", "dot-residual", "l2-spill"],
)
def test_same_results_as_an_index_with_raw_vectors(metric, kw):
    keep, lean, x = _pair(metric, **kw)
    q = x[:64] + 0.05
    for path in ("query", "list"):
        assert_same_results(
            keep.search_arrays(q, k=10, path=path), lean.search_arrays(q, k=10, path=path)
        )
    assert keep.search(q[0], k=5, filter={"g": 1}) == lean.search(q[0], k=5, filter={"g": 1})
    assert lean.state.vectors.shape[2] == 0 and lean.state.norms.shape[1] == 0
    st = lean.stats().extra
    assert st["keep_raw_vectors"] is False
    # code, seq, live flag (+ the residual euclidean term, + the spill twin)
    extra = 4 * (kw.get("pq_by_residual", False) and metric == "euclidean")
    extra += 4 * ("spill_lambda" in kw)
    assert st["row_bytes"] == M + 5 + extra < keep.stats().extra["row_bytes"]
    with pytest.raises(InvalidConfigError, match="codes-only"):
        lean.set_pq_refine_factor(2)
    with pytest.raises(InvalidConfigError, match="codes-only"):
        lean.search(q[0], k=5, refine=1)


@pytest.mark.parametrize("residual", [False, True])
def test_get_returns_the_reconstruction(residual):
    _, lean, x = _pair(pq_by_residual=residual)
    st = lean.state
    for i in (0, 17, 799):
        vec, meta = lean.get(i)
        slot = lean._entries.slot_of(i)
        b, r = divmod(slot, st.block_size)
        want = np.asarray(pq_decode(st.codes[b, r][None], st.codebooks))[0]
        if residual:
            lst = int(lean._layout.list_of(np.array([slot]))[0])
            want = want + np.asarray(st.centroids[lst])
        np.testing.assert_array_equal(vec, want.astype(np.float32))
        assert meta == {"g": i % 4}
        assert np.linalg.norm(vec - x[i]) < np.linalg.norm(x[i])  # an approximation


def test_compaction_moves_codes_without_changing_results():
    _, lean, x = _pair(pq_by_residual=True, spill_lambda=0.5)
    lean.delete(list(range(0, 800, 3)))
    q = x[:50] + 0.05
    before = lean.search_arrays(q, k=10)
    codes_before = {
        i: np.asarray(lean.state.codes).reshape(-1, M)[lean._entries.slot_of(i)] for i in (1, 2, 4)
    }
    lean._compact()
    assert lean.stats().extra["tombstones"] == 0
    assert_same_results(before, lean.search_arrays(q, k=10))
    for i, c in codes_before.items():
        np.testing.assert_array_equal(
            np.asarray(lean.state.codes).reshape(-1, M)[lean._entries.slot_of(i)], c
        )


def test_retrain_on_reconstructions_keeps_every_entry():
    _, lean, x = _pair()
    lean.retrain()
    assert len(lean) == 800
    hits = lean.search(x[5], k=3)
    assert len(hits) == 3
    assert jnp.all(jnp.isfinite(lean.state.centroids))
