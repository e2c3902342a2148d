"""An independent oracle: PyTorch autograd in float64 must agree with our hand-written passes.

Skipped, with the reason, where PyTorch is not installed (it is optional:
``pip install torch==2.13.0``). The package itself never imports it.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch (optional oracle) is not installed")
F = torch.nn.functional

from lvae_np import layers as L  # noqa: E402

RTOL, ATOL = 1e-10, 1e-13
rng = np.random.default_rng(2016)


def torch_pass(fn, inputs, dout):
    """Output of fn and the gradients of <dout, fn(inputs)> with respect to each input."""
    ts = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in inputs]
    out = fn(*ts)
    out.backward(torch.tensor(dout))
    return out.detach().numpy(), [t.grad.numpy() for t in ts]


def assert_matches(ours, theirs):
    np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=ATOL)


def compare(forward, backward, torch_fn, inputs):
    out, cache = forward(*inputs)
    dout = rng.normal(size=out.shape)
    grads = backward(dout, cache)
    t_out, t_grads = torch_pass(torch_fn, inputs, dout)
    assert_matches(out, t_out)
    assert len(grads) == len(t_grads)
    for g, tg in zip(grads, t_grads):
        assert_matches(g, tg)


def test_dense():
    compare(L.dense_forward, L.dense_backward, lambda x, W, b: x @ W + b,
            [rng.normal(size=(7, 5)), rng.normal(size=(5, 3)), rng.normal(size=3)])


def test_batchnorm_training_and_running_mean():
    x, gamma, beta = rng.normal(1, 2, size=(16, 4)), rng.uniform(0.5, 2, 4), rng.normal(size=4)
    compare(lambda x, g, b: L.batchnorm_forward(x, g, b, training=True, eps=1e-4),
            L.batchnorm_backward,
            lambda x, g, b: F.batch_norm(x, None, None, g, b, training=True, eps=1e-4),
            [x, gamma, beta])
    # Running mean: the same update rule as torch's. (Torch keeps the unbiased
    # variance in its running average; we keep the biased one that normalises.)
    rm, rv = torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64)
    F.batch_norm(torch.tensor(x), rm, rv, torch.tensor(gamma), torch.tensor(beta),
                 training=True, momentum=0.1, eps=1e-4)
    _, cache = L.batchnorm_forward(x, gamma, beta, state=L.init_bn_state(np, 4), training=True)
    assert_matches(cache.new_state.mean, rm.numpy())
    torch_batch_var_unbiased = (rv.numpy() - 0.9) / 0.1
    assert_matches(cache.new_state.var, 0.9 + 0.1 * torch_batch_var_unbiased * 15 / 16)


def test_batchnorm_evaluation():
    state = L.BNState(rng.normal(size=3), rng.uniform(0.5, 2, 3))
    compare(lambda x, g, b: L.batchnorm_forward(x, g, b, state=state, training=False),
            L.batchnorm_backward,
            lambda x, g, b: F.batch_norm(x, torch.tensor(state.mean), torch.tensor(state.var),
                                         g, b, training=False, eps=L.BN_EPS),
            [rng.normal(size=(6, 3)), rng.uniform(0.5, 2, 3), rng.normal(size=3)])


@pytest.mark.parametrize("slope", [0.01, 0.2])
def test_leaky_relu(slope):
    x = rng.choice([-1.0, 1.0], size=(6, 5)) * rng.uniform(0.01, 3, size=(6, 5))
    compare(lambda x: L.leaky_relu_forward(x, slope=slope), L.leaky_relu_backward,
            lambda x: F.leaky_relu(x, slope), [x])


@pytest.mark.parametrize("name", ["softplus", "sigmoid", "log_sigmoid"])
def test_smooth_activations_including_large_inputs(name):
    # torch's softplus turns linear above `threshold` (20 by default); ours never does.
    softplus = lambda x: F.softplus(x, threshold=800)  # noqa: E731
    ours = {"softplus": (L.softplus_forward, L.softplus_backward, softplus),
            "sigmoid": (L.sigmoid_forward, L.sigmoid_backward, torch.sigmoid),
            "log_sigmoid": (L.log_sigmoid_forward, L.log_sigmoid_backward, F.logsigmoid)}[name]
    x = np.concatenate([rng.normal(0, 4, size=40), [-700.0, -50.0, -1e-3, 0.0, 1e-3, 50.0, 700.0]])
    compare(ours[0], ours[1], ours[2], [x])
