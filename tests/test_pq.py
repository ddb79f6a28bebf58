"""Tests of `_pq`: codebook training, encode/decode and ADC (semantics §3.5, §3.6).

Section-5 tests 45 (training determinism), 46 (ADC equals the metric on the
decoded vector) and 47 (encoding ties go to the lowest codeword); 60 relies on
padding having no influence. One training shape bucket (512 x 8, m=2) is shared.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iqdb_ivf_jax._pq import (
    adc_scores,
    adc_tables,
    lookup_sum_direct,
    pq_decode,
    pq_encode,
    pq_encode_fast,
    residual_adc,
    residual_base,
    residual_terms,
)
from iqdb_ivf_jax._train.keys import pq_key
from iqdb_ivf_jax._train.lloyd import kmeans_fit
from iqdb_ivf_jax._train.pq_codebooks import TRAIN_TILE as PQ_TRAIN_TILE
from iqdb_ivf_jax._train.pq_codebooks import pq_train

N, D, M = 512, 8, 2
ADC_KINDS = ("l2", "dot", "l1")


def _data(seed=0, n=N, d=D):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 3.0, (16, d))
    return (centres[rng.integers(0, 16, n)] + rng.normal(0.0, 0.5, (n, d))).astype(np.float32)


def _bits_equal(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and np.array_equal(a.view(np.uint8), b.view(np.uint8))


@pytest.fixture(scope="module")
def trained():
    x = _data()
    cb = pq_train(jnp.asarray(x), jnp.ones(N, bool), pq_key(0), m=M)
    return x, cb


# ---------------------------------------------------------------------- training


def test_train_shape_and_determinism(trained):  # semantics §5.45
    x, cb = trained
    assert cb.shape == (M, 256, D // M) and cb.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(cb)))
    again = pq_train(jnp.asarray(x), jnp.ones(N, bool), pq_key(0), m=M)
    assert _bits_equal(cb, again)
    other = pq_train(jnp.asarray(x), jnp.ones(N, bool), pq_key(1), m=M)
    assert not np.array_equal(np.asarray(cb), np.asarray(other))


def test_train_is_per_subvector_kmeans_and_ignores_padding(trained):
    """Subvector j is squared-L2 k-means of dims [j*d/m, (j+1)*d/m) with fold_in(key, j).

    The reference fits run on a padded copy (another tile count, garbage rows), so
    this also checks that padding has no influence.
    """
    x, cb = trained
    dsub, n_pad = D // M, 1100
    xp = np.full((n_pad, D), 1e20, np.float32)
    xp[:N] = x
    mask = jnp.asarray(np.arange(n_pad) < N)
    for j in range(M):
        ref = kmeans_fit(
            jnp.asarray(xp[:, j * dsub : (j + 1) * dsub]),
            mask,
            jax.random.fold_in(pq_key(0), j),
            n_clusters=256,
            tile=PQ_TRAIN_TILE,
        )
        assert _bits_equal(cb[j], ref.centroids)


def test_train_argument_errors():
    x = jnp.zeros((256, 6))
    with pytest.raises(ValueError):
        pq_train(x, jnp.ones(256, bool), pq_key(0), m=4)  # 4 does not divide 6
    with pytest.raises(ValueError):
        pq_train(jnp.zeros((255, 6)), jnp.ones(255, bool), pq_key(0), m=2)


def test_quantisation_error_beats_random_codebooks(trained):
    x, cb = trained
    mse = float(np.mean((np.asarray(pq_decode(pq_encode(x, cb), cb)) - x) ** 2))
    rng = np.random.default_rng(1)
    # Baselines: 256 random rows per subspace (a k-means++-like start), and Gaussian
    # codewords with the data's mean and spread.
    rows = x[rng.choice(N, 256, replace=False)].reshape(256, M, D // M).transpose(1, 0, 2)
    gauss = rng.normal(x.mean(0), x.std(0), (256, D)).astype(np.float32)
    gauss = gauss.reshape(256, M, D // M).transpose(1, 0, 2)
    for base in (rows, gauss):
        base = jnp.asarray(base)
        base_mse = float(np.mean((np.asarray(pq_decode(pq_encode(x, base), base)) - x) ** 2))
        assert mse < 0.9 * base_mse


# ------------------------------------------------------------- encode / decode


def _ref_encode(x, cb):
    m, _, dsub = cb.shape
    xs = np.asarray(x, np.float64).reshape(len(x), m, dsub)
    d = ((xs[:, :, None, :] - np.asarray(cb, np.float64)[None]) ** 2).sum(-1)  # [n, m, 256]
    return d


def test_encode_against_float64(trained):
    x, cb = trained
    codes = np.asarray(pq_encode(x, cb))
    assert codes.dtype == np.uint8 and codes.shape == (N, M)
    d = _ref_encode(x, cb)
    chosen = np.take_along_axis(d, codes.astype(np.int64)[:, :, None], axis=2)[..., 0]
    # The chosen codeword is the float64 nearest, up to float32 rounding of near-ties.
    assert np.all(chosen <= d.min(axis=2) + 1e-4 * (1.0 + d.min(axis=2)))
    assert np.mean(codes == d.argmin(axis=2)) > 0.99


def test_encode_ties_to_lowest_codeword():  # semantics §5.47
    cb = np.zeros((2, 256, 2), np.float32)
    cb[0, :] = 50.0
    cb[0, 7] = [1.0, 1.0]
    cb[0, 9] = [1.0, 1.0]  # duplicate of 7
    cb[0, 3] = [-1.0, -1.0]  # equidistant from the origin with 7 and 9
    cb[1, :] = 50.0
    cb[1, 200] = [2.0, 0.0]
    cb[1, 100] = [0.0, 2.0]
    x = np.array([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]], np.float32)
    codes = np.asarray(pq_encode(x, jnp.asarray(cb)))
    np.testing.assert_array_equal(codes, [[7, 100], [3, 100]])


def test_encode_batch_invariant(trained):
    x, cb = trained
    full = pq_encode(x, cb)
    single = np.stack([np.asarray(pq_encode(v, cb)) for v in x[:20]])
    np.testing.assert_array_equal(single, np.asarray(full[:20]))
    np.testing.assert_array_equal(np.asarray(pq_encode(x[:70], cb)), np.asarray(full[:70]))
    vm = jax.jit(jax.vmap(lambda v: pq_encode(v, cb)))(x)
    np.testing.assert_array_equal(np.asarray(vm), np.asarray(full))


def _near_ties(seed=0, n=3000, m=4, dsub=4):
    """Rows near the midpoint of two codewords in some subvectors, rows equal to
    codewords, duplicated codewords: many rows the fast encoder must re-check."""
    rng = np.random.default_rng(seed)
    cb = rng.standard_normal((m, 256, dsub)).astype(np.float32)
    cb[:, 5] = cb[:, 4]  # exact duplicate codewords: ties to the lower one
    x = rng.standard_normal((n, m * dsub)).astype(np.float32)
    xs = x.reshape(n, m, dsub)
    i, j = rng.integers(0, 256, (2, n // 3))
    mid = 0.5 * (cb[0, i] + cb[0, j])
    xs[: n // 3, 0] = mid + np.float32(1e-7) * rng.standard_normal(mid.shape).astype(np.float32)
    xs[n // 3 : n // 3 + 50, 1] = cb[1, :50]
    return xs.reshape(n, m * dsub), cb


@pytest.mark.parametrize("n_rows", [None, 2000, 2999])
def test_fast_encode_equals_encode(n_rows):
    x, cb = _near_ties()
    x[1000:] = np.random.default_rng(1).standard_normal(x[1000:].shape).astype(np.float32)
    want = np.asarray(pq_encode(x, cb))
    nr = None if n_rows is None else jnp.int32(n_rows)
    got = np.asarray(pq_encode_fast(x, jnp.asarray(cb), nr))
    k = len(x) if n_rows is None else n_rows
    np.testing.assert_array_equal(got[:k], want[:k])


def test_fast_encode_with_more_unsure_rows_than_its_buffer():
    x, cb = _near_ties(seed=2)  # a third of the rows are near ties: all re-encoded
    np.testing.assert_array_equal(
        np.asarray(pq_encode_fast(x, jnp.asarray(cb))), np.asarray(pq_encode(x, cb))
    )


def test_decode(trained):
    x, cb = trained
    codes = pq_encode(x, cb)
    dec = np.asarray(pq_decode(codes, cb))
    assert dec.shape == (N, D) and dec.dtype == np.float32
    c = np.asarray(codes).astype(np.int64)
    ref = np.concatenate([np.asarray(cb)[j][c[:, j]] for j in range(M)], axis=1)
    np.testing.assert_array_equal(dec, ref)
    # Decoding the code of a codeword gives the codeword back.
    np.testing.assert_array_equal(np.asarray(pq_encode(dec, cb)), np.asarray(codes))


# ----------------------------------------------------------------------- ADC


def _metric(q, v, kind):
    q, v = np.asarray(q, np.float64), np.asarray(v, np.float64)
    if kind == "l2":
        return np.sqrt(((v - q) ** 2).sum(-1))
    if kind == "dot":
        return -(v @ q)
    return np.abs(v - q).sum(-1)


@pytest.mark.parametrize("kind", ADC_KINDS)
def test_adc_tables_against_float64(kind, trained):
    x, cb = trained
    q = x[3] + 0.25
    t = np.asarray(adc_tables(q, cb, kind=kind))
    assert t.shape == (M, 256) and t.dtype == np.float32
    qs = np.asarray(q, np.float64).reshape(M, 1, D // M)
    c = np.asarray(cb, np.float64)
    ref = {"l2": ((qs - c) ** 2).sum(-1), "dot": (qs * c).sum(-1), "l1": np.abs(qs - c).sum(-1)}[
        kind
    ]
    np.testing.assert_allclose(t, ref, rtol=1e-5, atol=1e-5)
    batch = jax.jit(jax.vmap(lambda v: adc_tables(v, cb, kind=kind)))(x[:5])
    np.testing.assert_allclose(
        np.asarray(batch[3]), np.asarray(adc_tables(x[3], cb, kind=kind)), rtol=1e-6
    )


@pytest.mark.parametrize("kind", ADC_KINDS)
def test_adc_equals_metric_on_decoded(kind, trained):  # semantics §5.46
    x, cb = trained
    codes = pq_encode(x, cb)
    dec = np.asarray(pq_decode(codes, cb))
    queries = np.concatenate([x[:3] + 0.1, _data(9, n=3)])
    tables = jax.vmap(lambda v: adc_tables(v, cb, kind=kind))(queries)
    scores = np.asarray(jax.vmap(lambda t: adc_scores(t, codes, kind=kind))(tables))
    assert scores.shape == (6, N) and scores.dtype == np.float32
    for i, q in enumerate(queries):
        ref = _metric(q, dec, kind)
        scale = np.abs(ref).max()
        np.testing.assert_allclose(scores[i], ref, rtol=1e-4, atol=1e-5 * scale)
        one = np.asarray(adc_scores(adc_tables(q, cb, kind=kind), codes, kind=kind))
        np.testing.assert_allclose(one, scores[i], rtol=1e-6, atol=1e-6 * scale)


@pytest.mark.parametrize("kind", ADC_KINDS)
def test_adc_batch_invariant(kind, trained):
    """Per-query and vmapped ADC give the same bits (batch kernel == vmap, §5.65)."""
    x, cb = trained
    codes = pq_encode(x, cb)
    queries = x[:6] + 0.3
    tables = jax.jit(jax.vmap(lambda v: adc_tables(v, cb, kind=kind)))(queries)
    scores = jax.jit(jax.vmap(lambda t: adc_scores(t, codes, kind=kind)))(tables)
    for i, q in enumerate(queries):
        t = adc_tables(q, cb, kind=kind)
        assert _bits_equal(t, tables[i])
        assert _bits_equal(adc_scores(t, codes, kind=kind), scores[i])
        assert _bits_equal(adc_scores(t, codes[:37], kind=kind), scores[i, :37])


@pytest.mark.parametrize("kind", ["l2", "dot"])
def test_residual_adc_equals_metric_on_decoded(kind, trained):
    """faiss's precomputed-table form on residual codes (one query table, a
    per-list base, a per-row term) is the metric on ``centroid + decode(code)``,
    and gives the same bits for one query, a vmapped batch, and any row subset."""
    x, cb = trained
    rng = np.random.default_rng(5)
    cents = rng.normal(0.0, 3.0, (7, D)).astype(np.float32)
    lists = rng.integers(0, 7, N)
    codes = pq_encode(x - cents[lists], cb)
    terms = residual_terms(codes, lists, cents, cb)
    assert _bits_equal(residual_terms(codes[:37], lists[:37], cents, cb), terms[:37])
    full = cents[lists] + np.asarray(pq_decode(codes, cb))
    queries = np.concatenate([x[:3] + 0.1, _data(11, n=3) * 3.0])

    def score(q, rows=slice(None)):
        base = residual_base(q, jnp.asarray(cents), kind)[lists[rows]]
        t = terms[rows] if kind == "l2" else None
        return residual_adc(adc_tables(q, cb, kind="dot"), base, codes[rows], t, kind=kind)

    batch = jax.jit(jax.vmap(score))(queries)
    for i, q in enumerate(queries):
        ref = _metric(q, full, kind)
        scale = np.abs(ref).max()
        np.testing.assert_allclose(np.asarray(batch[i]), ref, rtol=1e-4, atol=1e-5 * scale)
        assert _bits_equal(score(q), batch[i])
        assert _bits_equal(score(q, slice(0, 37)), batch[i, :37])


@pytest.mark.parametrize("kind", ADC_KINDS)
@pytest.mark.parametrize("m, dsub", [(2, 4), (48, 8), (5, 3)])
def test_lookup_sum_direct_is_the_table_lookup_bit_for_bit(kind, m, dsub):
    """The re-rank kernel (only the selected entries) gives the table path's bits:
    one query, one query per row, jitted and vmapped."""
    rng = np.random.default_rng(m * 7 + dsub)
    cb = jnp.asarray(rng.normal(0.0, 1.0, (m, 256, dsub)), jnp.float32)
    codes = jnp.asarray(rng.integers(0, 256, (61, m)), jnp.uint8)
    qs = jnp.asarray(rng.normal(0.0, 2.0, (3, m * dsub)), jnp.float32)

    direct = jax.jit(jax.vmap(lambda q: lookup_sum_direct(q, cb, codes, kind)))(qs)
    for i, q in enumerate(qs):
        # the "l1" ADC of any table is its plain lookup sum
        total = adc_scores(adc_tables(q, cb, kind=kind), codes, kind="l1")
        assert _bits_equal(direct[i], total)
        assert _bits_equal(lookup_sum_direct(q, cb, codes[:9], kind), total[:9])
        rows = jnp.broadcast_to(q, (9, m * dsub))  # one query per row
        assert _bits_equal(lookup_sum_direct(rows, cb, codes[:9], kind), total[:9])


def test_adc_self_query_l2(trained):
    x, cb = trained
    codes = pq_encode(x, cb)
    dec = pq_decode(codes, cb)
    s = np.asarray(adc_scores(adc_tables(dec[5], cb, kind="l2"), codes, kind="l2"))
    assert s[5] == 0.0 and np.all(s >= 0.0)


def test_adc_rejects_bad_kind(trained):
    _, cb = trained
    with pytest.raises(ValueError):
        adc_tables(jnp.zeros(D), cb, kind="cosine")


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), kind=st.sampled_from(ADC_KINDS))
def test_property_adc_matches_decoded_metric(seed, kind):
    rng = np.random.default_rng(seed)
    cb = jnp.asarray(rng.normal(0.0, 2.0, (M, 256, D // M)).astype(np.float32))
    codes = jnp.asarray(rng.integers(0, 256, (64, M)).astype(np.uint8))
    q = rng.normal(0.0, 2.0, D).astype(np.float32)
    got = np.asarray(adc_scores(adc_tables(q, cb, kind=kind), codes, kind=kind))
    ref = _metric(q, np.asarray(pq_decode(codes, cb)), kind)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
