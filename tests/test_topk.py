import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iqdb_ivf_jax._search.topk import SEQ_LIMIT, smallest_k


def oracle(dist, seq, valid, k):
    """Sort valid candidates by (is_nan, distance, seq) in Python."""
    items = [
        (bool(np.isnan(d)), 0.0 if np.isnan(d) else float(d), int(s), i)
        for i, (d, s, v) in enumerate(zip(dist, seq, valid))
        if v
    ]
    items.sort()
    pos = [i for *_, i in items[:k]]
    return pos + [-1] * (k - len(pos))


_jit = jax.jit(smallest_k, static_argnames="k")


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from([0.0, 1.0, 1.5, 2.0, np.inf, np.nan, -1.0]), min_size=16, max_size=16),
    st.lists(st.booleans(), min_size=16, max_size=16),
    st.sampled_from([1, 3, 10, 16, 20]),
    st.randoms(use_true_random=False),
)
def test_matches_oracle_with_ties_nan_inf(dists, valid, k, rnd):
    seq = list(range(16))
    rnd.shuffle(seq)
    d = np.array(dists, np.float32)
    s = np.array(seq, np.int32)
    v = np.array(valid)
    out_d, out_i = _jit(d, s, v, k=k)
    assert list(np.asarray(out_i)) == oracle(d, s, v, k)
    pad = np.asarray(out_i) < 0
    assert np.all(np.isinf(np.asarray(out_d)[pad]))


def test_ties_go_to_smaller_seq_not_position():
    d = jnp.zeros(8, jnp.float32)
    s = jnp.array([7, 6, 5, 4, 3, 2, 1, 0], jnp.int32)
    _, i = smallest_k(d, s, jnp.ones(8, bool), 3)
    assert list(np.asarray(i)) == [7, 6, 5]


def test_k_zero_and_pad():
    d, i = smallest_k(
        jnp.ones(4, jnp.float32), jnp.arange(4, dtype=jnp.int32), jnp.ones(4, bool), 0
    )
    assert d.shape == (0,) and i.shape == (0,)
    d, i = smallest_k(
        jnp.ones(2, jnp.float32), jnp.arange(2, dtype=jnp.int32), jnp.array([True, False]), 4
    )
    assert list(np.asarray(i)) == [0, -1, -1, -1]


def test_nan_last_after_inf():
    d = jnp.array([np.nan, np.inf, 1.0], jnp.float32)
    s = jnp.array([0, 1, 2], jnp.int32)
    dd, i = smallest_k(d, s, jnp.ones(3, bool), 3)
    assert list(np.asarray(i)) == [2, 1, 0]
    assert np.isnan(np.asarray(dd)[2])


@pytest.mark.parametrize("k", [7, 20])  # top_k + tie pass; one whole-row sort (2k >= n)
def test_vmap_equals_loop(k):
    rng = np.random.default_rng(0)
    d = rng.integers(0, 4, (5, 32)).astype(np.float32)
    s = np.tile(rng.permutation(32).astype(np.int32), (5, 1))
    v = rng.random((5, 32)) > 0.2
    _, bi = jax.vmap(lambda a, b, c: smallest_k(a, b, c, k))(d, s, v)
    for r in range(5):
        assert list(np.asarray(bi[r])) == oracle(d[r], s[r], v[r], k)


def test_large_seqs_keep_integer_order():
    s = jnp.array([SEQ_LIMIT - 1, SEQ_LIMIT - 2, 5, 1 << 25, (1 << 25) + 1, 0], jnp.int32)
    d = jnp.array([1.0, 1.0, 1.0, 1.0, 1.0, np.nan], jnp.float32)
    _, i = smallest_k(d, s, jnp.ones(6, bool), 6)
    assert list(np.asarray(i)) == [2, 3, 4, 1, 0, 5]


def test_smallest_k_rows_matches_top_k():
    import jax
    import numpy as np
    from jax import lax

    from iqdb_ivf_jax._search.topk import smallest_k_rows

    rng = np.random.default_rng(5)
    x = rng.standard_normal((9, 4096)).astype(np.float32)
    x[:, 3000:] = np.inf  # buffer padding
    x[1, :200] = 0.25  # equal values across the boundary of k
    x[2] = np.round(x[2], 1)  # many ties
    for k in (1, 10, 26):
        vals, pos = jax.jit(smallest_k_rows, static_argnums=1)(x, k)
        neg, want_pos = lax.top_k(-x, k)
        np.testing.assert_array_equal(np.asarray(vals), -np.asarray(neg))
        np.testing.assert_array_equal(np.take_along_axis(x, np.asarray(pos), 1), np.asarray(vals))
        # positions agree except among values equal to the k-th
        kth = np.asarray(vals)[:, -1:]
        strict = np.asarray(vals) < kth
        np.testing.assert_array_equal(np.asarray(pos)[strict], np.asarray(want_pos)[strict])


def test_unique_and_tied_kth_value_on_long_rows():
    """Both branches of the k-th-value check (unique: no tie pass; tied: by seq),
    on rows long enough for the two-stage selection, one at a time and vmapped."""
    rng = np.random.default_rng(3)
    n, k = 5000, 26
    rows, seqs, valids = [], [], []
    for case in range(6):
        d = rng.random(n).astype(np.float32)
        if case % 2:  # copies of the k-th value, at positions before and after it
            kth = np.sort(d)[k - 1]
            d[rng.choice(n, 5, replace=False)] = kth
        rows.append(d)
        seqs.append(rng.permutation(n).astype(np.int32))
        valids.append(rng.random(n) < 0.9)
    for d, s, v in zip(rows, seqs, valids):
        _, i = _jit(d, s, v, k=k)
        assert list(np.asarray(i)) == oracle(d, s, v, k)
    vm = jax.jit(jax.vmap(lambda d, s, v: smallest_k(d, s, v, k)))
    _, iv = vm(np.stack(rows), np.stack(seqs), np.stack(valids))
    for r, (d, s, v) in enumerate(zip(rows, seqs, valids)):
        assert list(np.asarray(iv[r])) == oracle(d, s, v, k)
