import jax
import numpy as np
import pytest

from iqdb_ivf_jax import Metric
from iqdb_ivf_jax._metrics import distances, pairwise, row_norms, tree_sum


def ref(q, x, metric):
    q = q.astype(np.float64)
    x = x.astype(np.float64)
    if metric is Metric.EUCLIDEAN:
        return np.sqrt(((x - q) ** 2).sum(-1))
    if metric is Metric.MANHATTAN:
        return np.abs(x - q).sum(-1)
    if metric is Metric.DOT_PRODUCT:
        return -(x @ q)
    if metric is Metric.COSINE:
        den = np.linalg.norm(x, axis=-1) * np.linalg.norm(q)
        return np.where(
            den > 1.1754944e-38, np.clip(1 - (x @ q) / np.where(den > 0, den, 1), 0, 2), 1.0
        )
    qb = q.astype(np.float32).view(np.uint32)
    xb = x.astype(np.float32).view(np.uint32)
    return (qb != xb).sum(-1).astype(np.float64)


@pytest.mark.parametrize("metric", list(Metric))
def test_against_float64(metric):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((50, 7)).astype(np.float32)
    x[3] = 0.0
    q = rng.standard_normal(7).astype(np.float32)
    got = np.asarray(jax.jit(distances, static_argnums=3)(q, x, row_norms(x), metric))
    np.testing.assert_allclose(got, ref(q, x, metric), rtol=1e-4, atol=1e-4)


def test_special_values():
    z = np.zeros((1, 3), np.float32)
    q = np.array([1.0, 2.0, 3.0], np.float32)
    assert float(distances(q, z, row_norms(z), Metric.COSINE)[0]) == 1.0
    a = np.array([[0.0, 1.0]], np.float32)
    b = np.array([-0.0, np.nextafter(np.float32(1.0), np.float32(2.0))], np.float32)
    assert float(distances(b, a, row_norms(a), Metric.HAMMING)[0]) == 2.0
    assert float(distances(a[0], a, row_norms(a), Metric.EUCLIDEAN)[0]) == 0.0


@pytest.mark.parametrize("metric", list(Metric))
def test_bits_independent_of_batch_shape(metric):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((300, 33)).astype(np.float32)
    q = rng.standard_normal((4, 33)).astype(np.float32)
    full = np.asarray(pairwise(q, x, metric))
    idx = rng.permutation(300)[:77]
    part = np.asarray(pairwise(q, x[idx], metric))
    assert np.array_equal(full[:, idx], part)


@pytest.mark.parametrize("d", [1, 7, 8, 384, 513, 4100])
def test_tree_sum_order_is_fixed_for_any_dimension(d):
    """The exact kernel's sum (blocks of 8 lanes, runs of 64 blocks past
    ``d = 512``): close to the float64 sum, and the same bits for a row summed
    alone, in a batch, or in a batch of another shape."""
    rng = np.random.default_rng(d)
    x = rng.standard_normal((37, d)).astype(np.float32)
    got = np.asarray(tree_sum(jax.numpy.asarray(x)))
    want = x.astype(np.float64).sum(axis=1)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * np.abs(x).sum(axis=1).max())
    alone = np.asarray(tree_sum(jax.numpy.asarray(x[5])))
    nested = np.asarray(tree_sum(jax.numpy.asarray(x[3:9].reshape(2, 3, d))))
    assert alone.view(np.uint32) == got[5].view(np.uint32)
    assert np.array_equal(nested.reshape(-1).view(np.uint32), got[3:9].view(np.uint32))
