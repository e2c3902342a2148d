"""Each fast form (``lvae_np/fast.py``) agrees with the plain twin its docstring names.

Every pair is run in float64 on the same inputs, forward and backward (with
a random upstream gradient, never all ones), and compared to 1e-12 relative
to the largest magnitude of the plain form's result: the fast forms run the
same arithmetic in another grouping (the Gaussian head's two products as
one), so they agree to rounding, not always bit for bit.

Where a fast form only regroups elementwise work or writes in place (the
leaky ReLU as a maximum, batch norm in place, the running averages of many
layers on one concatenation, Adam in place), every number is the same, and
the tests ask for the same bits, in float32 too.

Last, the switch: a whole model with ``fast=True`` against the same model
with the plain forms, and gradient-checked on its own; and the two forms'
objects offering the same methods.
"""
import inspect

import numpy as np
import pytest

from lvae_np import blocks, fast, layers, likelihoods, optim
from lvae_np.backend import get_backend
from lvae_np.blocks import BlockSettings, subtree
from lvae_np.gradcheck.cases import find_case, model_case
from lvae_np.models import Model, ModelConfig

RTOL = 1e-12


def assert_close(got, want, what=""):
    """|got - want| <= 1e-12 * max |want|, elementwise, with the same shape and dtype."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype, what
    scale = max(float(np.max(np.abs(want))), 1e-300) if want.size else 1.0
    err = float(np.max(np.abs(got - want))) if want.size else 0.0
    assert err <= RTOL * scale, f"{what}: max difference {err:.3e}, scale {scale:.3e}"


def _same_bits(got, want):
    return got.dtype == want.dtype and got.shape == want.shape and got.tobytes() == want.tobytes()


def _head(rng, d=7, m=5, batch_norm=False):
    p = {"W_mu": rng.normal(size=(d, m)), "W_var": rng.normal(size=(d, m))}
    if batch_norm:
        p.update({"gamma_mu": rng.uniform(0.5, 2.0, m), "beta_mu": rng.normal(size=m),
                  "gamma_var": rng.uniform(0.5, 2.0, m), "beta_var": rng.normal(size=m)})
    else:
        p.update({"b_mu": rng.normal(size=m), "b_var": rng.normal(size=m)})
    return p


def _head_state(rng, m=5):
    return {"mean_mu": rng.normal(size=m), "var_mu": rng.uniform(0.5, 2.0, m),
            "mean_var": rng.normal(size=m), "var_var": rng.uniform(0.5, 2.0, m)}


# ----------------------------------------------------------------------------
# The Gaussian head: one product (fast) against two dense layers (blocks)
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("mode", ["plain-head", "bn-training", "bn-evaluation"])
def test_fused_gaussian_head_equals_two_dense_layers(seed, mode):
    rng = np.random.default_rng(seed)
    h, p = rng.normal(size=(6, 7)), _head(rng, batch_norm=mode != "plain-head")
    state = _head_state(rng) if mode != "plain-head" else None
    settings = BlockSettings(training=mode != "bn-evaluation", momentum=0.3)
    (mu, var), fused = fast.gaussian_head_forward(h, p, state=state, settings=settings)
    (mu_plain, var_plain), plain = blocks.gaussian_head_forward(h, p, state=state,
                                                                settings=settings)
    assert_close(mu, mu_plain, "mu")
    assert_close(var, var_plain, "var")
    assert fused.new_state.keys() == plain.new_state.keys()
    for k in plain.new_state:
        assert_close(fused.new_state[k], plain.new_state[k], f"new_state {k}")
    if mode == "bn-training":
        assert set(plain.new_state) == set(state)
    dout = (rng.normal(size=mu.shape), rng.normal(size=var.shape))
    dh, dp = fast.gaussian_head_backward(dout, fused)
    dh_plain, dp_plain = blocks.gaussian_head_backward(dout, plain)
    assert_close(dh, dh_plain, "dh")
    assert list(dp) == list(dp_plain) and set(dp) == set(p)   # the same keys, in the same order
    for k in p:
        assert_close(dp[k], dp_plain[k], k)


def test_the_plain_head_is_really_softplus_of_a_dense_layer():
    # Against NumPy written out here, not against another lvae_np function.
    rng = np.random.default_rng(3)
    h, p = rng.normal(size=(4, 7)), _head(rng)
    (mu, var), _ = blocks.gaussian_head_forward(h, p)
    np.testing.assert_allclose(mu, h @ p["W_mu"] + p["b_mu"], rtol=1e-13)
    np.testing.assert_allclose(var, np.logaddexp(0.0, h @ p["W_var"] + p["b_var"]), rtol=1e-13)


def test_the_plain_batch_normalised_head_normalises_each_half_alone():
    rng = np.random.default_rng(4)
    h, p = rng.normal(size=(9, 7)), _head(rng, batch_norm=True)
    (mu, var), _ = blocks.gaussian_head_forward(h, p)

    def bn(half):
        a = h @ p[f"W_{half}"]
        return (p[f"gamma_{half}"] * (a - a.mean(0)) / np.sqrt(a.var(0) + layers.BN_EPS)
                + p[f"beta_{half}"])
    np.testing.assert_allclose(mu, bn("mu"), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(var, np.logaddexp(0.0, bn("var")), rtol=1e-12)


# ----------------------------------------------------------------------------
# Leaky ReLU and batch norm: the fast forward passes, the plain backward passes
# ----------------------------------------------------------------------------
def _wide_values(dtype, seed=2):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(scale=s, size=40) for s in (1.0, 30.0, 1e4)])
    x[:4] = [0.0, -0.0, 1e-30, -1e-30]
    return x.astype(dtype), rng.normal(size=x.shape).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("slope", [0.01, 0.0, 0.3, 1.0, 1.5, -0.2])
def test_fast_leaky_relu_forward_has_the_bits_of_the_plain_one(dtype, slope):
    x, dout = _wide_values(dtype)
    out, cache = fast.leaky_relu_forward(x, slope=slope)
    out_plain, cache_plain = layers.leaky_relu_forward(x, slope=slope)
    assert _same_bits(out, out_plain)
    assert _same_bits(out_plain, np.where(x > 0, x, dtype(slope) * x))  # written out here
    (dx,) = layers.leaky_relu_backward(dout, cache)      # the backward both forms run
    (dx_plain,) = layers.leaky_relu_backward(dout, cache_plain)
    assert _same_bits(dx, dx_plain)
    assert _same_bits(dx, np.where(x > 0, dout, dtype(slope) * dout))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", ["training", "training-no-state", "evaluation"])
def test_fast_batchnorm_forward_has_the_bits_of_the_plain_one(dtype, mode):
    rng = np.random.default_rng(5)
    x = rng.normal(1.0, 3.0, size=(16, 6)).astype(dtype)
    gamma, beta = rng.uniform(0.5, 2.0, 6).astype(dtype), rng.normal(size=6).astype(dtype)
    state = layers.BNState(rng.normal(size=6).astype(dtype),
                           rng.uniform(0.5, 2.0, 6).astype(dtype))
    kw = dict(state=None if mode == "training-no-state" else state,
              training=mode != "evaluation", momentum=0.1, eps=1e-4)
    before = x.copy()
    out, cache = fast.batchnorm_forward(x, gamma, beta, **kw)
    out_plain, cache_plain = layers.batchnorm_forward(x, gamma, beta, **kw)
    assert np.array_equal(x, before)                       # in place, but never on x
    assert _same_bits(out, out_plain)
    assert _same_bits(cache.xhat, cache_plain.xhat) and _same_bits(cache.inv_std,
                                                                   cache_plain.inv_std)
    if cache_plain.new_state is None:
        assert cache.new_state is None
    else:
        assert all(_same_bits(a, b) for a, b in zip(cache.new_state, cache_plain.new_state))
    dout = rng.normal(size=x.shape).astype(dtype)
    for got, want in zip(layers.batchnorm_backward(dout, cache),
                         layers.batchnorm_backward(dout, cache_plain)):
        assert _same_bits(got, want)


def test_fast_batchnorm_without_momentum_returns_the_batch_statistics_for_the_caller():
    rng = np.random.default_rng(6)
    x = rng.normal(1.0, 2.0, size=(32, 4))
    state = layers.BNState(np.full(4, 0.5), np.full(4, 3.0))
    out, cache = fast.batchnorm_forward(x, np.ones(4), np.zeros(4), state=state, momentum=None)
    np.testing.assert_allclose(cache.new_state.mean, x.mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(cache.new_state.var, x.var(axis=0), rtol=1e-14)
    # Averaged by the caller, they give what the plain batch norm's own update gives.
    averaged = fast.running_averages({"mean": state.mean, "var": state.var},
                                     dict(zip(("mean", "var"), cache.new_state)), 0.25)
    out_own, own = layers.batchnorm_forward(x, np.ones(4), np.zeros(4), state=state,
                                            momentum=0.25)
    assert np.array_equal(out, out_own)
    assert _same_bits(averaged["mean"], own.new_state.mean)
    assert _same_bits(averaged["var"], own.new_state.var)
    # Without state too: the statistics do not need it.
    _, no_state = fast.batchnorm_forward(x, np.ones(4), np.zeros(4), momentum=None)
    assert np.array_equal(no_state.new_state.mean, cache.new_state.mean)


# ----------------------------------------------------------------------------
# The running averages of a whole model at once: the same bits as layer by layer
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("momentum", [0.1, 1 / 3, 1.0])
def test_running_averages_in_one_pass_equal_them_layer_by_layer(momentum):
    rng = np.random.default_rng(0)
    sizes = {"a.mean1": 5, "a.var1": 5, "b.mean_mu": 1, "c.var2": 12, "d.mean1": 3}
    state = {k: rng.normal(size=d).astype(np.float32) for k, d in sizes.items()}
    batch = {k: rng.normal(size=d).astype(np.float32) for k, d in sizes.items()}
    batch["e.mean1"] = np.ones(2, np.float32)             # no running average: left out
    before = {k: a.copy() for k, a in {**state, **batch}.items()}
    got = fast.running_averages(state, batch, momentum)
    assert set(got) == set(state)
    for k in state:
        assert _same_bits(got[k], (1 - momentum) * state[k] + momentum * batch[k])
    assert all(np.array_equal(a, before[k]) for k, a in {**state, **batch}.items())


def test_running_averages_promote_as_the_plain_form_does():
    rng = np.random.default_rng(1)
    state = {"x": rng.normal(size=3), "y": rng.normal(size=2).astype(np.float32)}
    batch = {"x": rng.normal(size=3).astype(np.float32),
             "y": rng.normal(size=2).astype(np.float32)}
    got = fast.running_averages(state, batch, 0.1)
    assert [got[k].dtype for k in ("x", "y")] == [np.float64, np.float32]
    for k in state:
        assert _same_bits(got[k], 0.9 * state[k] + 0.1 * batch[k])
    assert fast.running_averages({}, {}, 0.1) == {}


# ----------------------------------------------------------------------------
# Batch norm folded into the dense layers, against evaluation mode
# ----------------------------------------------------------------------------
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
    h, cache = blocks.mlp_forward(x, p, state=s, settings=BlockSettings(training=False))
    folded = fast.fold_batch_norm(p, s)
    assert set(folded) == {"W1", "b1", "W2", "b2"}
    h_folded, c_folded = blocks.mlp_forward(
        x, folded, settings=BlockSettings(batch_norm=False, training=False))
    assert_close(h_folded, h, "h")
    dh = rng.normal(size=h.shape)
    assert_close(blocks.mlp_backward(dh, c_folded)[0], blocks.mlp_backward(dh, cache)[0], "dx")
    # One layer by hand: BN(x W) = gamma (x W - mean) / sqrt(var + eps) + beta.
    a = x @ p["W1"]
    bn = p["gamma1"] * (a - s["mean1"]) / np.sqrt(s["var1"] + layers.BN_EPS) + p["beta1"]
    np.testing.assert_allclose(x @ folded["W1"] + folded["b1"], bn, rtol=1e-12, atol=1e-13)


def test_folded_head_batch_norm_equals_evaluation_mode():
    rng = np.random.default_rng(7)
    h, p, state = rng.normal(size=(6, 7)), _head(rng, batch_norm=True), _head_state(rng)
    (mu, var), cache = blocks.gaussian_head_forward(h, p, state=state,
                                                    settings=BlockSettings(training=False))
    folded = fast.fold_head_batch_norm(p, state)
    assert set(folded) == {"W_mu", "b_mu", "W_var", "b_var"}
    (mu_f, var_f), c_folded = blocks.gaussian_head_forward(h, folded)
    assert_close(mu_f, mu, "mu")
    assert_close(var_f, var, "var")
    dout = (rng.normal(size=mu.shape), rng.normal(size=var.shape))
    assert_close(blocks.gaussian_head_backward(dout, c_folded)[0],
                 blocks.gaussian_head_backward(dout, cache)[0], "dh")


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
    assert folded_model.fast is False
    assert Model(model.config, model.backend, fast=True).fold_batch_norm(params, state)[0].fast


# ----------------------------------------------------------------------------
# Adam in place, bit for bit the functional one
# ----------------------------------------------------------------------------
def test_in_place_adam_equals_the_functional_one_bit_for_bit():
    rng = np.random.default_rng(4)
    params = {"a": rng.normal(size=(5, 3)).astype(np.float32), "b": rng.normal(size=3)}
    inplace = {k: v.copy() for k, v in params.items()}
    opt, opt_ = optim.adam_init(params), optim.adam_init(inplace)
    for _ in range(5):
        grads = {k: rng.normal(size=v.shape).astype(v.dtype) for k, v in params.items()}
        params, opt = optim.adam_update(params, grads, opt)
        ids = {k: id(v) for k, v in inplace.items()}
        inplace, opt_ = fast.adam_update_(inplace, grads, opt_)
        assert {k: id(v) for k, v in inplace.items()} == ids  # the same arrays, updated
    for k in params:
        np.testing.assert_array_equal(inplace[k], params[k])
        np.testing.assert_array_equal(opt_["v"][k], opt["v"][k])
    assert opt_["t"] == opt["t"] == 5


# ----------------------------------------------------------------------------
# Backward passes reusing their forward's exp(-|x|): the bits of the sigmoid
# ----------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------
# The switch
# ----------------------------------------------------------------------------
def test_both_forms_offer_the_same_ops_with_the_same_signatures():
    def methods(forms):
        return {name: inspect.signature(getattr(forms, name))
                for name in dir(forms) if not name.startswith("_")
                and callable(getattr(forms, name))}
    plain, fast_ = methods(blocks.PLAIN), methods(fast.FAST)
    assert set(plain) == set(fast_) - {"running_averages"}
    assert all(plain[k] == fast_[k] for k in plain)
    assert blocks.PLAIN.running_averages is None and callable(fast.FAST.running_averages)
    assert BlockSettings().forms is blocks.PLAIN
    assert Model().forms is blocks.PLAIN and Model(fast=True).forms is fast.FAST
    assert "forms=blocks.PLAIN" in repr(Model().settings())


MODELS = [("lvae", {}), ("vae", {}), ("lvae", {"batch_norm": False}),
          ("lvae", {"head_batch_norm": True, "shared_top_down": False}),
          ("vae", {"head_batch_norm": True}), ("lvae", {"likelihood": "gaussian"})]


@pytest.mark.parametrize("kind,options", MODELS, ids=[f"{k}-{'-'.join(o) or 'paper'}"
                                                      for k, o in MODELS])
@pytest.mark.parametrize("training", [True, False])
def test_a_fast_model_equals_the_plain_model(kind, options, training):
    config = ModelConfig(kind=kind, x_dim=10, latent=(4, 3, 2), hidden=(9, 7, 5), **options)
    plain = Model(config, get_backend("numpy", dtype="float64", seed=2))
    quick = Model(config, get_backend("numpy", dtype="float64", seed=2), fast=True)
    params, state = plain.init()
    rng = np.random.default_rng(8)
    params = {k: v + 0.1 * rng.normal(size=v.shape) for k, v in params.items()}
    state = {k: v + rng.uniform(0.1, 0.5, size=v.shape) for k, v in state.items()}
    x = (rng.random((6, 10)) < 0.4).astype(float) if config.likelihood == "bernoulli" \
        else rng.normal(size=(6, 10))
    noise = [rng.normal(size=(12, d)) for d in config.latent]          # k = 2 samples each
    outs, grads = [], []
    dout = rng.normal(size=12)
    for model in (plain, quick):
        out, cache = model.forward(params, state, x, noise, beta=0.6, training=training, k=2,
                                   bn_momentum=0.2)
        outs.append(out)
        grads.append(model.backward(dout, cache))
    assert_close(outs[1].f, outs[0].f, "f")
    assert list(outs[1].state) == list(outs[0].state) == list(state)
    for k in state:
        assert_close(outs[1].state[k], outs[0].state[k], f"state {k}")
        assert np.array_equal(outs[0].state[k], state[k]) == (not training), k
    assert list(grads[1]) == list(grads[0]) and set(grads[0]) == set(params)
    for k in params:
        assert_close(grads[1][k], grads[0][k], k)


@pytest.mark.parametrize("kind,kl,options", [("lvae", "analytic", {}),
                                             ("vae", "mc", {"head_batch_norm": True})])
def test_a_fast_model_passes_the_gradient_check(kind, kl, options):
    """The whole model on the fast forms against central differences (float64)."""
    case = model_case(kind, 2, True, kl, 0.5, fast_forms=True, **options)
    assert case.name.endswith("-fast") and not case.course
    assert {"mlp-fast", "gaussian-head-fused"} <= set(case.uses)
    report = case.check(seed=2, max_elements=8)
    assert report.passed, str(report)
    assert max(a.max_rel_error for a in report.arguments) <= 1e-6


@pytest.mark.parametrize("name", ["gaussian-head-fused", "gaussian-head-fused-bn", "mlp-fast"])
def test_the_fast_composites_are_registered_gradient_checks(name):
    case = find_case(name)
    assert case.module == "fast"
    report = case.check(seed=5)
    assert report.passed, str(report)
