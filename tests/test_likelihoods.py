"""Tests of lvae_np.likelihoods: gradients, stability, independent values, oracle, backends."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lvae_np.gaussian import log_normal_forward
from lvae_np.gradcheck.cases import CASES, find_case
from lvae_np.likelihoods import (
    bernoulli_log_likelihood_backward,
    bernoulli_log_likelihood_forward,
    gaussian_log_likelihood_forward,
)

OPS = [c for c in CASES if c.module == "likelihoods"]  # the registered cases of likelihoods.py
IDS = [c.name for c in OPS]


def _upstream(out, seed=1):
    return np.random.default_rng(seed).normal(size=out.shape).astype(out.dtype)


def _log_sigmoid(l):
    """log(1 / (1 + e^-l)) with Python's math, for moderate l."""
    return -math.log1p(math.exp(-l)) if l >= 0 else l - math.log1p(math.exp(l))


# ----------------------------------------------------------------------------
# Gradient checks (float64)
# ----------------------------------------------------------------------------
def test_every_op_of_the_module_is_registered():
    assert {c.name for c in OPS} >= {"bernoulli-ll", "bernoulli-ll-real", "gaussian-ll"}
    assert set(np.unique(find_case("bernoulli-ll").inputs()[0])) == {0.0, 1.0}  # binary x


@pytest.mark.parametrize("case", OPS, ids=IDS)
@pytest.mark.parametrize("seed", [0, 1])
def test_gradients(case, seed):
    report = case.check(seed=seed)
    assert report.passed, str(report)


# ----------------------------------------------------------------------------
# Bernoulli
# ----------------------------------------------------------------------------
def test_bernoulli_is_stable_for_huge_logits_in_float32():
    logits = np.array([-1e4, -100.0, -20.0, 0.0, 20.0, 100.0, 1e4], dtype=np.float32)
    for xv in (0.0, 1.0, 0.3):
        x = np.full_like(logits, xv)
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            out, cache = bernoulli_log_likelihood_forward(x, logits)
            dx, dlogits = bernoulli_log_likelihood_backward(np.ones_like(out), cache)
        assert out.dtype == dx.dtype == dlogits.dtype == np.float32
        for a in (out, dx, dlogits):
            assert np.all(np.isfinite(a))
        assert np.all(out <= 0.0)
        # At +-1e4 the log-likelihood is x*l - max(l, 0) to float32 precision.
        np.testing.assert_allclose(out[[0, -1]], [-1e4 * xv, 1e4 * (xv - 1.0)], rtol=1e-6)
        np.testing.assert_allclose(dlogits[[0, -1]], [xv, xv - 1.0], atol=1e-6)


def test_bernoulli_keeps_tiny_probabilities():
    # x = 1, l = 30: log sigmoid(30) = -9.357622968839299e-14, not 0 and not rounded away.
    out, _ = bernoulli_log_likelihood_forward(np.array([1.0, 0.0]), np.array([30.0, -30.0]))
    np.testing.assert_allclose(out, -math.log1p(math.exp(-30.0)), rtol=1e-14)


@settings(max_examples=100, deadline=None)
@given(st.floats(-30, 30), st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0.0, 1.0)))
def test_bernoulli_equals_log_sigmoid_computed_with_math(logit, x):
    expected = x * _log_sigmoid(logit) + (1 - x) * _log_sigmoid(-logit)
    out, _ = bernoulli_log_likelihood_forward(np.array([[x]]), np.array([[logit]]))
    np.testing.assert_allclose(out[0, 0], expected, rtol=1e-12, atol=1e-12)


@settings(max_examples=100, deadline=None)
@given(st.floats(-30, 30))
def test_bernoulli_probabilities_sum_to_one(logit):
    out, _ = bernoulli_log_likelihood_forward(np.array([0.0, 1.0]), np.array([logit, logit]))
    assert math.isclose(math.exp(out[0]) + math.exp(out[1]), 1.0, rel_tol=1e-14)


# ----------------------------------------------------------------------------
# Gaussian
# ----------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(st.floats(-5, 5), st.floats(-5, 5), st.floats(0.5, 10.0))
def test_gaussian_is_the_log_of_the_explicit_density(x, mu, var):
    density = math.exp(-(x - mu) ** 2 / (2 * var)) / math.sqrt(2 * math.pi * var)
    out, _ = gaussian_log_likelihood_forward(np.array([[x]]), np.array([[mu]]), np.array([[var]]))
    np.testing.assert_allclose(out[0, 0], math.log(density), rtol=1e-12, atol=1e-12)


def test_gaussian_is_log_normal():
    inputs = find_case("gaussian-ll").inputs()
    np.testing.assert_array_equal(gaussian_log_likelihood_forward(*inputs)[0],
                                  log_normal_forward(*inputs)[0])


# ----------------------------------------------------------------------------
# Oracle: PyTorch autograd, with the formulas written independently
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("case", OPS, ids=IDS)
def test_torch_oracle(case):
    torch = pytest.importorskip("torch", reason="PyTorch is an optional oracle")
    inputs = case.inputs(seed=5)
    t = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in inputs]
    if case.name in ("bernoulli-ll", "bernoulli-ll-real"):
        x, logits = t
        logsig = torch.nn.functional.logsigmoid
        t_out = x * logsig(logits) + (1 - x) * logsig(-logits)
    elif case.name == "gaussian-ll":
        x, mu, var = t
        t_out = torch.distributions.Normal(mu, var.sqrt()).log_prob(x)
    else:
        raise AssertionError(f"no torch oracle for the registered case {case.name!r}: write one")
    out, cache = case.forward(*inputs)
    dout = _upstream(out)
    grads = case.backward(dout, cache)
    t_grads = torch.autograd.grad((t_out * torch.from_numpy(dout)).sum(), t)
    np.testing.assert_allclose(out, t_out.detach().numpy(), rtol=1e-10, atol=1e-12)
    for ours, theirs in zip(grads, t_grads):
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-10, atol=1e-12)
