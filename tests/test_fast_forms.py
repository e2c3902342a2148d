"""Each fast form agrees with the plain form written beside it.

The Gaussian head runs its two products as one (``gaussian_head_forward``)
beside the plain two dense layers (``gaussian_head_plain_forward``); the L_k
estimate folds batch norm into the dense layers (``fold_batch_norm``) beside
the block in evaluation mode. Different orders of floating-point operations,
so the agreement is to rounding (1e-12 in float64), not bit for bit.

Where a fast form only regroups elementwise work (the batch-norm running
averages of many layers updated on one concatenation; a backward pass reusing
the exp(-|x|) its forward computed), every number is the same, and the tests
below ask for the same bits.
"""
import numpy as np
import pytest

from lvae_np import layers, likelihoods, blocks
from lvae_np.backend import get_backend
from lvae_np.models import Model, ModelConfig
from lvae_np.blocks import subtree


def _head(rng, d=7, m=5):
    return {"W_mu": rng.normal(size=(d, m)), "b_mu": rng.normal(size=m),
            "W_var": rng.normal(size=(d, m)), "b_var": rng.normal(size=m)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fused_gaussian_head_equals_two_dense_layers(seed):
    rng = np.random.default_rng(seed)
    h, p = rng.normal(size=(6, 7)), _head(rng)
    (mu, var), fused = blocks.gaussian_head_forward(h, p)
    (mu_plain, var_plain), plain = blocks.gaussian_head_plain_forward(h, p)
    np.testing.assert_allclose(mu, mu_plain, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(var, var_plain, rtol=1e-12, atol=1e-13)
    dout = (rng.normal(size=mu.shape), rng.normal(size=var.shape))
    dh, dp = blocks.gaussian_head_backward(dout, fused)
    dh_plain, dp_plain = blocks.gaussian_head_plain_backward(dout, plain)
    np.testing.assert_allclose(dh, dh_plain, rtol=1e-12, atol=1e-13)
    assert set(dp) == set(dp_plain) == set(p)
    for k in p:
        np.testing.assert_allclose(dp[k], dp_plain[k], rtol=1e-12, atol=1e-13, err_msg=k)


def test_the_plain_head_is_really_softplus_of_a_dense_layer():
    # Against NumPy written out here, not against another lvae_np function.
    rng = np.random.default_rng(3)
    h, p = rng.normal(size=(4, 7)), _head(rng)
    (mu, var), _ = blocks.gaussian_head_plain_forward(h, p)
    np.testing.assert_allclose(mu, h @ p["W_mu"] + p["b_mu"], rtol=1e-13)
    np.testing.assert_allclose(var, np.logaddexp(0.0, h @ p["W_var"] + p["b_var"]), rtol=1e-13)


def _bn_block(rng, sizes=(6, 9, 8)):
    p, s = blocks.init_mlp(rng, sizes, batch_norm=True, xp=np, dtype=np.float64)
    p = {k: v + 0.3 * rng.normal(size=v.shape) for k, v in p.items()}
    s = {k: (rng.uniform(0.3, 2.0, v.shape) if k.startswith("var") else rng.normal(size=v.shape))
         for k, v in s.items()}
    return p, s


@pytest.mark.parametrize("seed", [0, 1])
def test_folded_batch_norm_equals_evaluation_mode(seed):
    rng = np.random.default_rng(seed)
    p, s = _bn_block(rng)
    x = rng.normal(size=(5, 6))
    h, _ = blocks.mlp_forward(x, p, state=s, settings=blocks.BlockSettings(training=False))
    folded = blocks.fold_batch_norm(p, s)
    assert set(folded) == {"W1", "b1", "W2", "b2"}
    h_folded, _ = blocks.mlp_forward(
        x, folded, settings=blocks.BlockSettings(batch_norm=False, training=False))
    np.testing.assert_allclose(h_folded, h, rtol=1e-12, atol=1e-13)
    # One layer by hand: BN(x W) = gamma (x W - mean) / sqrt(var + eps) + beta.
    a = x @ p["W1"]
    bn = p["gamma1"] * (a - s["mean1"]) / np.sqrt(s["var1"] + layers.BN_EPS) + p["beta1"]
    np.testing.assert_allclose(x @ folded["W1"] + folded["b1"], bn, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("kind", ["lvae", "vae"])
def test_the_folded_model_keeps_every_block(kind):
    model = Model(ModelConfig(kind=kind, x_dim=10, latent=(4, 3), hidden=(8, 6)),
                  get_backend("numpy", dtype="float64", seed=1))
    params, state = model.init()
    folded_model, folded = model.fold_batch_norm(params, state)
    for name in ("up1", "down0", "down1", "up2"):
        assert set(subtree(folded, name)) == {"W1", "b1", "W2", "b2"}, name
    for name in ("q1", "q2", "p1", "p0"):
        assert subtree(folded, name).keys() == subtree(params, name).keys(), name


# ----------------------------------------------------------------------------
# Regrouped elementwise work: the same bits
# ----------------------------------------------------------------------------
def _same_bits(got, want):
    return got.dtype == want.dtype and got.shape == want.shape and got.tobytes() == want.tobytes()


@pytest.mark.parametrize("momentum", [0.1, 1 / 3, 1.0])
def test_running_averages_in_one_pass_equal_them_array_by_array(momentum):
    rng = np.random.default_rng(0)
    sizes = (5, 1, 12, 3)
    old = [rng.normal(size=d).astype(np.float32) for d in sizes]
    new = [rng.normal(size=d).astype(np.float32) for d in sizes]
    before = [a.copy() for a in old + new]
    got = layers.running_averages(old, new, momentum)
    assert len(got) == len(sizes)
    for g, a, b in zip(got, old, new):
        assert _same_bits(g, (1 - momentum) * a + momentum * b)  # the plain form, pair by pair
    assert all(np.array_equal(a, b) for a, b in zip(old + new, before))  # nothing mutated


def test_running_averages_promote_as_the_plain_form_does():
    rng = np.random.default_rng(1)
    old = [rng.normal(size=3), rng.normal(size=2).astype(np.float32)]  # float64, float32
    new = [rng.normal(size=3).astype(np.float32), rng.normal(size=2).astype(np.float32)]
    got = layers.running_averages(old, new, 0.1)
    assert [g.dtype for g in got] == [np.float64, np.float32]
    for g, a, b in zip(got, old, new):
        assert _same_bits(g, 0.9 * a + 0.1 * b)
    assert layers.running_averages([], [], 0.1) == []


def _wide_values(dtype):
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.normal(scale=s, size=40) for s in (1.0, 30.0, 1e4)])
    x[:4] = [0.0, -0.0, 1e-30, -1e-30]
    return x.astype(dtype), rng.normal(size=x.shape).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softplus_backward_reusing_its_forward_exp_has_the_bits_of_sigmoid(dtype):
    x, dout = _wide_values(dtype)
    _, cache = layers.softplus_forward(x)
    assert _same_bits(layers.softplus_backward(dout, cache)[0], dout * layers.sigmoid(x))
    _, cache = layers.log_sigmoid_forward(x)
    assert _same_bits(layers.log_sigmoid_backward(dout, cache)[0], dout * layers.sigmoid(-x))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bernoulli_backward_reusing_its_forward_exp_has_the_bits_of_sigmoid(dtype):
    logits, dout = _wide_values(dtype)
    x = (np.arange(logits.size) % 2).astype(dtype)
    _, cache = likelihoods.bernoulli_log_likelihood_forward(x, logits)
    dx, dlogits = likelihoods.bernoulli_log_likelihood_backward(dout, cache)
    assert _same_bits(dlogits, dout * (x - layers.sigmoid(logits)))
    assert _same_bits(dx, dout * logits)
