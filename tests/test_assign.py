"""Fast assignment (large-tile ranking + re-check of near ties) equals the
batch-invariant top-1 probe bit for bit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from iqdb_ivf_jax._assign import KIND_COSINE, KIND_DOT, KIND_L2, assign, probe, probe_one


def _data(seed=0, n=5000, d=24, k=40):
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((k, d)).astype(np.float32)
    x = (c[rng.integers(0, k, n)] + 0.7 * rng.standard_normal((n, d))).astype(np.float32)
    # exact and near ties: midpoints of two centroids, nudged by a few ulps
    mid = 0.5 * (c[rng.integers(0, k, 300)] + c[rng.integers(0, k, 300)])
    x[:300] = mid + np.float32(1e-7) * rng.standard_normal(mid.shape).astype(np.float32)
    x[300:310] = c[:10]  # rows equal to a centroid
    x[310] = 0.0
    return x, c


@pytest.mark.parametrize("kind", [KIND_L2, KIND_DOT, KIND_COSINE])
def test_fast_assign_equals_top1_probe(kind):
    x, c = _data()
    got = np.asarray(assign(jnp.asarray(x), jnp.asarray(c), kind))
    want = np.asarray(jax.jit(lambda a, b: probe(a, b, kind, 1)[:, 0])(x, c))
    np.testing.assert_array_equal(got, want)


def test_fast_assign_with_more_unsure_rows_than_its_buffer():
    x, c = _data(seed=1)
    c[1] = c[0]
    x[:] = c[0] + np.float32(1e-3) * x  # every row ties centroids 0 and 1: all are re-checked
    got = np.asarray(assign(jnp.asarray(x), jnp.asarray(c), KIND_L2))
    want = np.asarray(jax.jit(lambda a, b: probe(a, b, KIND_L2, 1)[:, 0])(x, c))
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("n_rows", [4100, 4097, 5000])
def test_fast_assign_skips_padding_rows(n_rows):
    x, c = _data(seed=2)
    x[n_rows:] = c[1] + 0.5 * (c[2] - c[1])  # padding rows are midpoints (all unsure)
    want = np.asarray(assign(jnp.asarray(x[:n_rows]), jnp.asarray(c), KIND_L2))
    got = np.asarray(assign(jnp.asarray(x), jnp.asarray(c), KIND_L2, None, jnp.int32(n_rows)))
    np.testing.assert_array_equal(got[:n_rows], want)


@pytest.mark.parametrize("kind", [KIND_L2, KIND_DOT, KIND_COSINE])
def test_single_query_probe_same_set_as_probe(kind):
    """probe_one (matrix-vector ranking, near ties re-checked) probes the set of
    lists that the batch-invariant probe does, at every boundary, ties included."""
    x, c = _data(seed=3, k=40)
    x = x[:330]
    for n_probes in (1, 2, 5, 39, 40):
        want = np.asarray(jax.jit(lambda a, b, p=n_probes: probe(a, b, kind, p))(x, c))
        one = jax.jit(lambda v, b, p=n_probes: probe_one(v, b, kind, p))
        for i in range(x.shape[0]):
            got = np.asarray(one(x[i], c))
            assert sorted(got.tolist()) == sorted(want[i].tolist()), (n_probes, i)
