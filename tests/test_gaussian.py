"""Tests of lvae_np.gaussian: gradients, properties, an independent oracle, backends, dtypes."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lvae_np.gaussian import (
    VAR_FLOOR,
    kl_normal_backward,
    kl_normal_forward,
    kl_standard_normal_forward,
    log_normal_forward,
    merge_backward,
    merge_forward,
    reparameterize_backward,
    reparameterize_forward,
)
from lvae_np.gradcheck import assert_gradients
from lvae_np.gradcheck.cases import CASES, find_case

SHAPE = (6, 5)
OPS = [c for c in CASES if c.module == "gaussian"]  # the registered cases of gaussian.py
IDS = [c.name for c in OPS]


def _normal(rng, shape=SHAPE):
    return rng.normal(size=shape)


def _upstream(out, seed=1):
    rng = np.random.default_rng(seed)
    if isinstance(out, tuple):
        return tuple(rng.normal(size=o.shape).astype(o.dtype) for o in out)
    return rng.normal(size=out.shape).astype(out.dtype)


def _as_tuple(a):
    return a if isinstance(a, tuple) else (a,)


def test_every_op_of_the_module_is_registered():
    assert {c.name for c in OPS} >= {"reparameterize", "merge", "kl-normal",
                                      "kl-standard-normal", "log-normal"}


# ----------------------------------------------------------------------------
# Gradient checks (float64)
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("case", OPS, ids=IDS)
@pytest.mark.parametrize("seed", [0, 1])
def test_gradients(case, seed):
    report = case.check(seed=seed)
    assert report.passed, str(report)


def test_gradients_with_wide_range_of_variances():
    rng = np.random.default_rng(3)
    mu_hat, mu_p = _normal(rng), _normal(rng)
    # Variances over two decades: far enough apart that either side of the merge dominates.
    var_hat, var_p = 10.0 ** rng.uniform(-1, 1, SHAPE), 10.0 ** rng.uniform(-1, 1, SHAPE)
    assert_gradients(merge_forward, merge_backward, [mu_hat, var_hat, mu_p, var_p])
    assert_gradients(kl_normal_forward, kl_normal_backward, [mu_hat, var_hat, mu_p, var_p])


# ----------------------------------------------------------------------------
# The variance floor
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("case", OPS, ids=IDS)
def test_floor_gives_finite_values_and_zero_variance_gradients(case):
    forward, backward = case.forward, case.backward
    inputs = [a.astype(np.float32) for a in case.inputs()]
    var_positions = [i for i, name in enumerate(case.input_names()) if name.startswith("var")]
    assert var_positions, case.input_names()
    for i in var_positions:
        inputs[i] = inputs[i].copy()
        inputs[i][0, :] = 0.0       # a float32 softplus that underflowed
        inputs[i][1, :] = 1e-12     # below the floor
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        out, cache = forward(*inputs)
        grads = backward(_upstream(out), cache)
    for a in _as_tuple(out) + tuple(grads):
        assert np.all(np.isfinite(a))
    for i in var_positions:
        assert np.all(grads[i][:2] == 0.0)
        assert np.all(grads[i][2:] != 0.0)
    # Below the floor, the op sees VAR_FLOOR itself.
    floored = [a.copy() for a in inputs]
    for i in var_positions:
        floored[i][:2] = np.float32(VAR_FLOOR)
    for a, b in zip(_as_tuple(out), _as_tuple(forward(*floored)[0])):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------
# Properties
# ----------------------------------------------------------------------------
means = arrays(np.float64, (3, 4), elements=st.floats(-100.0, 100.0))
variances = arrays(np.float64, (3, 4), elements=st.floats(1e-3, 1e3))


@settings(max_examples=60, deadline=None)
@given(means, variances, means, variances)
def test_merge_matches_textbook_formula_and_shrinks_variance(mu_hat, var_hat, mu_p, var_p):
    (mu_q, var_q), _ = merge_forward(mu_hat, var_hat, mu_p, var_p)
    textbook_var = 1.0 / (1.0 / var_hat + 1.0 / var_p)
    np.testing.assert_allclose(var_q, textbook_var, rtol=1e-12)
    np.testing.assert_allclose(mu_q, (mu_hat / var_hat + mu_p / var_p) * textbook_var,
                               rtol=1e-10, atol=1e-10)
    assert np.all(var_q <= np.minimum(var_hat, var_p) * (1 + 1e-12))
    # A convex combination: between the two means, up to rounding (w_hat + w_p is 1 +- 1 ulp).
    slack = 1e-14 * np.maximum(np.abs(mu_hat), np.abs(mu_p))
    assert np.all(mu_q >= np.minimum(mu_hat, mu_p) - slack)
    assert np.all(mu_q <= np.maximum(mu_hat, mu_p) + slack)


@settings(max_examples=60, deadline=None)
@given(means, variances, means, variances)
def test_merge_is_symmetric(mu_hat, var_hat, mu_p, var_p):
    a, _ = merge_forward(mu_hat, var_hat, mu_p, var_p)
    b, _ = merge_forward(mu_p, var_p, mu_hat, var_hat)
    np.testing.assert_array_equal(a[0], b[0])  # exactly, by construction
    np.testing.assert_array_equal(a[1], b[1])


@settings(max_examples=60, deadline=None)
@given(means, variances, means)
def test_merge_with_a_huge_variance_returns_the_other_side(mu, var, mu_other):
    huge = np.full_like(var, 1e12)
    for (mu_q, var_q), _ in (merge_forward(mu, var, mu_other, huge),
                             merge_forward(mu_other, huge, mu, var)):
        # |mu_q - mu| = var / (var + 1e12) * |mu - mu_other| <= 2e-7 here
        np.testing.assert_allclose(mu_q, mu, rtol=1e-9, atol=1e-6)
        np.testing.assert_allclose(var_q, var, rtol=1e-8)


@settings(max_examples=60, deadline=None)
@given(means, variances, means, variances)
def test_kl_is_nonnegative_and_zero_for_equal_gaussians(mu_q, var_q, mu_p, var_p):
    kl, _ = kl_normal_forward(mu_q, var_q, mu_p, var_p)
    assert np.all(kl >= -1e-12)
    same, _ = kl_normal_forward(mu_q, var_q, mu_q, var_q)
    np.testing.assert_allclose(same, 0.0, atol=1e-12)
    kl_std, _ = kl_standard_normal_forward(mu_q, var_q)
    assert np.all(kl_std >= -1e-12)
    np.testing.assert_allclose(kl_std, kl_normal_forward(mu_q, var_q, 0 * mu_q, 1 + 0 * var_q)[0],
                               rtol=1e-12, atol=1e-12)
    zero, _ = kl_standard_normal_forward(0 * mu_q, 1 + 0 * var_q)
    np.testing.assert_array_equal(zero, 0.0)


@settings(max_examples=60, deadline=None)
@given(st.floats(-5, 5), st.floats(-5, 5), st.floats(0.5, 10.0))
def test_log_normal_is_the_log_of_the_explicit_density(z, mu, var):
    # Moderate values: the density stays above exp(-100), so math.log of it is accurate.
    density = math.exp(-(z - mu) ** 2 / (2 * var)) / math.sqrt(2 * math.pi * var)
    logp, _ = log_normal_forward(np.array([[z]]), np.array([[mu]]), np.array([[var]]))
    np.testing.assert_allclose(logp[0, 0], math.log(density), rtol=1e-12, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.floats(-10, 10), st.floats(0.0, 100.0), st.floats(-5, 5))
def test_reparameterize_is_mean_plus_std_times_noise(mu, var, eps):
    z, _ = reparameterize_forward(np.array([[mu]]), np.array([[var]]), np.array([[eps]]))
    np.testing.assert_allclose(z[0, 0], mu + math.sqrt(max(var, VAR_FLOOR)) * eps,
                               rtol=1e-14, atol=1e-14)


def test_kl_normal_agrees_with_monte_carlo_estimate():
    """E_q[log q(z) - log p(z)] over 200k samples drawn with reparameterize, within 5 s.e."""
    n = 200_000
    mu_q = np.array([0.0, 1.0, -2.0, 0.5, 3.0])
    var_q = np.array([1.0, 0.3, 2.0, 0.05, 1.5])
    mu_p = np.array([0.0, 0.0, -1.0, 0.7, 0.0])
    var_p = np.array([2.0, 1.0, 0.5, 0.1, 4.0])
    tile = lambda a: np.broadcast_to(a, (n, a.size)).copy()
    mu_q, var_q, mu_p, var_p = map(tile, (mu_q, var_q, mu_p, var_p))
    eps = np.random.default_rng(42).standard_normal(mu_q.shape)
    z, _ = reparameterize_forward(mu_q, var_q, eps)
    log_w = log_normal_forward(z, mu_q, var_q)[0] - log_normal_forward(z, mu_p, var_p)[0]
    estimate = log_w.mean(axis=0)
    standard_error = log_w.std(axis=0, ddof=1) / math.sqrt(n)
    exact = kl_normal_forward(mu_q[:1], var_q[:1], mu_p[:1], var_p[:1])[0][0]
    assert np.all(np.abs(estimate - exact) <= 5 * standard_error), (estimate, exact, standard_error)


def test_reparameterize_mean_gradient_is_a_copy():
    inputs = find_case("reparameterize").inputs()
    out, cache = reparameterize_forward(*inputs)
    dout = _upstream(out)
    dmu, _, _ = reparameterize_backward(dout, cache)
    np.testing.assert_array_equal(dmu, dout)
    assert not np.shares_memory(dmu, dout)


# ----------------------------------------------------------------------------
# dtypes
# ----------------------------------------------------------------------------
# ----------------------------------------------------------------------------
# Oracle: PyTorch autograd, with the formulas written independently
# ----------------------------------------------------------------------------
def _torch_oracle(name, inputs):
    """The op's outputs from torch, written from the textbook formulas; one branch per case."""
    torch = pytest.importorskip("torch", reason="PyTorch is an optional oracle")
    Normal, kl_divergence = torch.distributions.Normal, torch.distributions.kl_divergence
    t = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in inputs]
    if name == "reparameterize":
        mu, var, eps = t
        out = mu + torch.sqrt(var) * eps
    elif name == "merge":
        mu_hat, var_hat, mu_p, var_p = t
        var_q = 1.0 / (1.0 / var_hat + 1.0 / var_p)
        out = ((mu_hat / var_hat + mu_p / var_p) * var_q, var_q)
    elif name == "kl-normal":
        mu_q, var_q, mu_p, var_p = t
        out = kl_divergence(Normal(mu_q, var_q.sqrt()), Normal(mu_p, var_p.sqrt()))
    elif name == "kl-standard-normal":
        mu, var = t
        out = kl_divergence(Normal(mu, var.sqrt()), Normal(torch.zeros_like(mu), torch.ones_like(var)))
    elif name == "log-normal":
        z, mu, var = t
        out = Normal(mu, var.sqrt()).log_prob(z)
    elif name == "kl-sample":
        z, mu_q, var_q, mu_p, var_p = t
        out = Normal(mu_q, var_q.sqrt()).log_prob(z) - Normal(mu_p, var_p.sqrt()).log_prob(z)
    else:
        raise AssertionError(f"no torch oracle for the registered case {name!r}: write one here")
    return torch, t, out


@pytest.mark.parametrize("case", OPS, ids=IDS)
def test_torch_oracle(case):
    inputs = case.inputs(seed=5)
    torch, t, t_out = _torch_oracle(case.name, inputs)
    out, cache = case.forward(*inputs)
    dout = _upstream(out)
    grads = case.backward(dout, cache)
    loss = sum((o * torch.from_numpy(d)).sum() for o, d in zip(_as_tuple(t_out), _as_tuple(dout)))
    t_grads = torch.autograd.grad(loss, t)
    for ours, theirs in zip(_as_tuple(out), _as_tuple(t_out)):
        np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-10, atol=1e-12)
    for ours, theirs in zip(grads, t_grads):
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-10, atol=1e-12)
