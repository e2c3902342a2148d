"""The composite blocks: MLP block, Gaussian head and row tiling, gradient-checked alone."""
import numpy as np
import pytest

from lvae_np import blocks as N
from lvae_np.gradcheck.cases import CASES, find_case

rng = np.random.default_rng(11)
BLOCKS = [c for c in CASES if c.module == "blocks"]  # the registered cases of blocks.py


def test_every_block_is_registered():
    # With and without batch norm, in training and evaluation mode, the head and the tiling.
    assert {c.name for c in BLOCKS} >= {"mlp", "mlp-eval", "mlp-nobn", "gaussian-head",
                                        "tile-rows", "tile-rows-k1"}


@pytest.mark.parametrize("case", BLOCKS, ids=[c.name for c in BLOCKS])
def test_block_gradients(case):
    # The gradient dicts have the parameters' keys (the adapter raises otherwise).
    report = case.check(seed=11)
    assert report.passed, str(report)


def test_mlp_block_returns_new_running_averages():
    params, state = N.init_mlp(rng, (5, 4, 3), batch_norm=True, xp=np, dtype=np.float64)
    _, cache = N.mlp_forward(rng.normal(size=(6, 5)), params, state=state,
                             settings=N.BlockSettings())
    assert set(cache.new_state) == set(state)
    _, cache = N.mlp_forward(rng.normal(size=(6, 5)), params, state=None,
                             settings=N.BlockSettings())
    assert cache.new_state == {}


def test_gaussian_head_gives_positive_variances():
    case = find_case("gaussian-head")
    h, *params = case.inputs()
    p = dict(zip(case.names[1:], params))
    (mu, var), _ = N.gaussian_head_forward(h, p)
    assert mu.shape == var.shape == (7, 3) and np.all(var > 0)


def test_glorot_uniform_bound():
    W = N.glorot_uniform(np.random.default_rng(0), 300, 100, np, np.float32)
    bound = np.sqrt(6 / 400)
    assert W.dtype == np.float32 and np.abs(W).max() <= bound and np.abs(W).max() > 0.95 * bound


def test_mlp_backward_can_skip_the_input_gradient():
    params, state = N.init_mlp(rng, (5, 4, 3), batch_norm=True, xp=np, dtype=np.float64)
    _, cache = N.mlp_forward(rng.normal(size=(6, 5)), params, state=state,
                             settings=N.BlockSettings())
    dout = rng.normal(size=(6, 3))
    dx, dp = N.mlp_backward(dout, cache)
    none, dp_skip = N.mlp_backward(dout, cache, input_grad=False)
    assert none is None and dx.shape == (6, 5)
    for k in dp:
        np.testing.assert_array_equal(dp[k], dp_skip[k])
