"""Forward semantics of the layers: values, batch-norm modes, stability at extremes."""
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from lvae_np import layers as L
from lvae_np.gradcheck import assert_gradients

rng = np.random.default_rng(0)


def test_dense_matches_an_explicit_loop():
    x, W, b = rng.normal(size=(3, 4)), rng.normal(size=(4, 2)), rng.normal(size=2)
    out, _ = L.dense_forward(x, W, b)
    for n in range(3):
        for m in range(2):
            expected = b[m] + sum(x[n, d] * W[d, m] for d in range(4))
            assert out[n, m] == pytest.approx(expected, rel=1e-12)


# ----------------------------------------------------------------------------
# Batch norm
# ----------------------------------------------------------------------------
def test_batchnorm_training_normalises_with_batch_statistics():
    x = rng.normal(3.0, 5.0, size=(64, 3))
    gamma, beta = np.array([1.0, 2.0, 0.5]), np.array([0.0, -1.0, 4.0])
    out, cache = L.batchnorm_forward(x, gamma, beta, training=True, eps=1e-4)
    batch_var = x.var(axis=0)  # NumPy's biased variance, an independent computation
    np.testing.assert_allclose(out.mean(axis=0), beta, atol=1e-12)
    np.testing.assert_allclose(out.var(axis=0), gamma**2 * batch_var / (batch_var + 1e-4), rtol=1e-12)
    assert cache.new_state is None  # no state given, none kept


def test_batchnorm_running_averages_are_returned_and_nothing_is_mutated():
    x = rng.normal(1.0, 2.0, size=(32, 4))
    state = L.BNState(np.full(4, 0.5), np.full(4, 3.0))
    before = (state.mean.copy(), state.var.copy(), x.copy())
    _, cache = L.batchnorm_forward(x, np.ones(4), np.zeros(4), state=state, training=True,
                                   momentum=0.25)
    new = cache.new_state
    np.testing.assert_allclose(new.mean, 0.75 * 0.5 + 0.25 * x.mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(new.var, 0.75 * 3.0 + 0.25 * x.var(axis=0), rtol=1e-14)
    np.testing.assert_array_equal(state.mean, before[0])
    np.testing.assert_array_equal(state.var, before[1])
    np.testing.assert_array_equal(x, before[2])


def test_running_averages_converge_to_the_data_statistics():
    state = L.init_bn_state(np, 2)
    data_rng = np.random.default_rng(5)
    for _ in range(200):
        x = data_rng.normal([2.0, -1.0], [3.0, 0.5], size=(128, 2))
        _, cache = L.batchnorm_forward(x, np.ones(2), np.zeros(2), state=state, training=True)
        state = cache.new_state
    np.testing.assert_allclose(state.mean, [2.0, -1.0], atol=0.15)
    np.testing.assert_allclose(state.var, [9.0, 0.25], rtol=0.1)


def test_batchnorm_evaluation_uses_the_given_statistics_per_example():
    state = L.BNState(np.array([1.0, -2.0]), np.array([4.0, 0.25]))
    gamma, beta = np.array([2.0, 1.0]), np.array([0.5, 0.0])
    x = rng.normal(size=(5, 2))
    out, cache = L.batchnorm_forward(x, gamma, beta, state=state, training=False, eps=0.0)
    np.testing.assert_allclose(out, gamma * (x - state.mean) / np.sqrt(state.var) + beta, rtol=1e-14)
    single, _ = L.batchnorm_forward(x[2:3], gamma, beta, state=state, training=False, eps=0.0)
    np.testing.assert_array_equal(single[0], out[2])  # independent of the rest of the batch
    assert cache.new_state is state


def test_batchnorm_evaluation_without_state_is_a_clear_error():
    with pytest.raises(ValueError, match="state"):
        L.batchnorm_forward(np.ones((2, 2)), np.ones(2), np.zeros(2), training=False)


# ----------------------------------------------------------------------------
# Activations
# ----------------------------------------------------------------------------
def test_leaky_relu_default_slope_is_lasagnes():
    out, _ = L.leaky_relu_forward(np.array([-2.0, 0.0, 3.0]))
    np.testing.assert_array_equal(out, [-0.02, 0.0, 3.0])
    out, _ = L.leaky_relu_forward(np.array([-2.0]), slope=0.5)
    np.testing.assert_array_equal(out, [-1.0])


def _softplus_ref(v):
    # log(1 + e^v) directly where it is exact in double; its series e^-v + v beyond.
    return math.log1p(math.exp(v)) if v < 30 else v + math.exp(-v)


def _sigmoid_ref(v):
    return 1 / (1 + math.exp(-v))


@given(hnp.arrays(np.float64, st.integers(1, 20), elements=st.floats(-700, 700)))
def test_activations_match_math_references(x):
    sp, _ = L.softplus_forward(x)
    sg, _ = L.sigmoid_forward(x)
    ls, _ = L.log_sigmoid_forward(x)
    for i, v in enumerate(x):
        assert sp[i] == pytest.approx(_softplus_ref(v), rel=1e-13, abs=1e-300)
        assert sg[i] == pytest.approx(_sigmoid_ref(v), rel=1e-13, abs=1e-300)
        assert ls[i] == pytest.approx(-_softplus_ref(-v), rel=1e-13, abs=1e-300)


@given(hnp.arrays(np.float32, st.integers(1, 50),
                  elements=st.floats(-1e4, 1e4, width=32)))
def test_stable_functions_never_overflow_in_float32(x):
    dout = np.ones_like(x)
    with np.errstate(over="raise", invalid="raise", divide="raise"), warnings.catch_warnings():
        warnings.simplefilter("error")
        for fwd, bwd in [(L.softplus_forward, L.softplus_backward),
                         (L.sigmoid_forward, L.sigmoid_backward),
                         (L.log_sigmoid_forward, L.log_sigmoid_backward)]:
            out, cache = fwd(x)
            (dx,) = bwd(dout, cache)
            assert out.dtype == np.float32 and dx.dtype == np.float32
            assert np.all(np.isfinite(out)) and np.all(np.isfinite(dx))
    sp, sg, ls = L.softplus_forward(x)[0], L.sigmoid_forward(x)[0], L.log_sigmoid_forward(x)[0]
    assert np.all(sp >= 0) and np.all(sp >= x)
    assert np.all((sg >= 0) & (sg <= 1))
    assert np.all(ls <= 0) and np.all(ls <= x)


def test_stable_functions_at_the_extremes():
    x = np.array([-1e4, 1e4], dtype=np.float32)
    np.testing.assert_array_equal(L.softplus_forward(x)[0], [0.0, 1e4])
    np.testing.assert_array_equal(L.sigmoid_forward(x)[0], [0.0, 1.0])
    np.testing.assert_array_equal(L.log_sigmoid_forward(x)[0], [-1e4, 0.0])


# ----------------------------------------------------------------------------
# Gradients over random shapes (hypothesis)
# ----------------------------------------------------------------------------
@given(st.integers(1, 6), st.integers(1, 5), st.integers(1, 5), st.integers(0, 2**31))
def test_dense_gradients_for_any_shape(n, d, m, seed):
    r = np.random.default_rng(seed)
    assert_gradients(L.dense_forward, L.dense_backward,
                     [r.normal(size=(n, d)), r.normal(size=(d, m)), r.normal(size=m)], seed=seed)


# N >= 3: with two examples the normalised output is +-1 whatever x is, and
# its gradient (which only eps keeps from zero) drowns in rounding.
@given(st.integers(3, 8), st.integers(1, 4), st.floats(0.3, 10.0), st.integers(0, 2**31))
def test_batchnorm_gradients_for_any_shape_and_scale(n, d, scale, seed):
    r = np.random.default_rng(seed)
    # A spread along the batch keeps every feature's variance well away from zero.
    x = scale * (2 * np.linspace(-1, 1, n)[:, None] + 0.3 * r.normal(size=(n, d)))
    fwd = lambda x, g, b: L.batchnorm_forward(x, g, b, training=True)  # noqa: E731
    assert_gradients(fwd, L.batchnorm_backward,
                     [x, r.uniform(0.5, 2.0, d), r.normal(size=d)], seed=seed)


# Within |x| <= 8: beyond it sigmoid's slope (< 3e-4) approaches the rounding
# of its output (1 - tiny), and central differences lose the digits to judge.
@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, 4)),
                  elements=st.floats(-8, 8)),
       st.integers(0, 2**31))
def test_smooth_activation_gradients_for_any_values(x, seed):
    for fwd, bwd in [(L.softplus_forward, L.softplus_backward),
                     (L.sigmoid_forward, L.sigmoid_backward),
                     (L.log_sigmoid_forward, L.log_sigmoid_backward)]:
        assert_gradients(fwd, bwd, [x], seed=seed)


@given(hnp.arrays(np.float64, st.integers(1, 10),
                  elements=st.one_of(st.floats(-5, -0.01), st.floats(0.01, 5))),
       st.floats(0.0, 1.0), st.integers(0, 2**31))
def test_leaky_relu_gradients_away_from_the_kink(x, slope, seed):
    fwd = lambda x: L.leaky_relu_forward(x, slope=slope)  # noqa: E731
    assert_gradients(fwd, L.leaky_relu_backward, [x], seed=seed)
