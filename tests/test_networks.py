"""The composite blocks: MLP block, Gaussian head and row tiling, gradient-checked alone."""
import numpy as np
import pytest

from lvae_np import networks as N
from lvae_np.gradcheck import assert_gradients

rng = np.random.default_rng(11)


def positional(forward, backward, keys):
    """Adapt a block taking (x, params dict) to the checker's positional inputs."""
    def fwd(x, *arrays):
        return forward(x, dict(zip(keys, arrays)))

    def bwd(dout, cache):
        dx, dp = backward(dout, cache)
        assert set(dp) == set(keys)  # the gradient dict has the parameters' keys
        return (dx,) + tuple(dp[k] for k in keys)

    return fwd, bwd


def _perturbed(params):
    return {k: v + 0.2 * rng.normal(size=v.shape) for k, v in params.items()}


@pytest.mark.parametrize("batch_norm", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_mlp_block_gradients(batch_norm, training):
    params, state = N.init_mlp(rng, (5, 4, 3), batch_norm=batch_norm, xp=np, dtype=np.float64)
    params = _perturbed(params)
    state = {k: v + 0.1 * rng.uniform(size=v.shape) for k, v in state.items()}
    keys = sorted(params)
    fwd, bwd = positional(
        lambda x, p: N.mlp_forward(x, p, state=state, batch_norm=batch_norm, training=training),
        N.mlp_backward, keys)
    assert_gradients(fwd, bwd, [rng.normal(size=(6, 5))] + [params[k] for k in keys],
                     names=["x"] + keys)


def test_mlp_block_returns_new_running_averages():
    params, state = N.init_mlp(rng, (5, 4, 3), batch_norm=True, xp=np, dtype=np.float64)
    _, cache = N.mlp_forward(rng.normal(size=(6, 5)), params, state=state, batch_norm=True)
    assert set(cache.new_state) == set(state)
    _, cache = N.mlp_forward(rng.normal(size=(6, 5)), params, state=None, batch_norm=True)
    assert cache.new_state == {}


def test_gaussian_head_gradients_and_positive_variance():
    params = _perturbed(N.init_gaussian_head(rng, 5, 3, xp=np, dtype=np.float64))
    keys = sorted(params)
    fwd, bwd = positional(N.gaussian_head_forward, N.gaussian_head_backward, keys)
    h = rng.normal(size=(7, 5))
    assert_gradients(fwd, bwd, [h] + [params[k] for k in keys], names=["h"] + keys)
    (mu, var), _ = N.gaussian_head_forward(h, params)
    assert mu.shape == var.shape == (7, 3) and np.all(var > 0)


@pytest.mark.parametrize("k", [1, 3])
def test_tile_rows_gradients(k):
    assert_gradients(lambda a: N.tile_rows_forward(a, k=k), N.tile_rows_backward,
                     [rng.normal(size=(4, 3))])


def test_glorot_uniform_bound():
    W = N.glorot_uniform(np.random.default_rng(0), 300, 100, np, np.float32)
    bound = np.sqrt(6 / 400)
    assert W.dtype == np.float32 and np.abs(W).max() <= bound and np.abs(W).max() > 0.95 * bound


def test_mlp_backward_can_skip_the_input_gradient():
    params, state = N.init_mlp(rng, (5, 4, 3), batch_norm=True, xp=np, dtype=np.float64)
    _, cache = N.mlp_forward(rng.normal(size=(6, 5)), params, state=state, batch_norm=True)
    dout = rng.normal(size=(6, 3))
    dx, dp = N.mlp_backward(dout, cache)
    none, dp_skip = N.mlp_backward(dout, cache, input_grad=False)
    assert none is None and dx.shape == (6, 5)
    for k in dp:
        np.testing.assert_array_equal(dp[k], dp_skip[k])
