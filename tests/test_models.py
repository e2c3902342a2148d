"""The VAE and LVAE end to end: exact gradients, architecture, estimators' plumbing, backends."""
import itertools

import numpy as np
import pytest

from lvae_np import blocks
from lvae_np.backend import get_backend
from lvae_np.gradcheck.cases import model_case
from lvae_np.models import Model, ModelConfig
from lvae_np.blocks import subtree

KINDS = ("vae", "lvae")


# ----------------------------------------------------------------------------
# Whole-model gradient checks (float64, random upstream gradient per example)
# ----------------------------------------------------------------------------
GRID = [(kind, layers, bn, kl, beta)
        for kind, layers, bn, kl, beta in itertools.product(
            KINDS, (1, 2, 3), (True, False), ("analytic", "mc"), (0.0, 0.5, 1.0))]


@pytest.mark.parametrize("kind,layers,bn,kl,beta", GRID,
                         ids=[f"{k}-L{l}-{'bn' if b else 'nobn'}-{kl}-beta{beta}"
                              for k, l, b, kl, beta in GRID])
def test_whole_model_gradients(kind, layers, bn, kl, beta):
    # Every element at beta = 0.5; at the end points a random sample of each
    # parameter array (every array is still checked) keeps the grid quick.
    sample = None if beta == 0.5 else 6
    report = model_case(kind, layers, bn, kl, beta).check(seed=layers, max_elements=sample)
    assert report.passed, str(report)
    assert max(a.max_rel_error for a in report.arguments) <= 1e-6


@pytest.mark.parametrize("kind,layers,bn", list(itertools.product(KINDS, (1, 2), (True, False))))
def test_importance_weighted_objective_gradients(kind, layers, bn):
    report = model_case(kind, layers, bn, "mc", 1.0, iw=3).check(seed=1)
    assert report.passed, str(report)


@pytest.mark.parametrize("kind", KINDS)
def test_whole_model_on_array_api_strict(kind):
    """Forward and backward of the whole model use only the array API standard."""
    xs = pytest.importorskip("array_api_strict")
    report = model_case(kind, 2, True, "mc", 0.5).check(seed=0, xp=xs, max_elements=4)
    assert report.passed, str(report)


# ----------------------------------------------------------------------------
# Architecture
# ----------------------------------------------------------------------------
def test_paper_architecture_and_mirrored_decoder():
    model = Model(ModelConfig())  # the paper's MNIST defaults
    params, state = model.init()
    # Encoder: x -> 512 -> z1(64) ... -> 32 -> z5(4); the LVAE's blocks chain on d_i.
    assert params["up1.W1"].shape == (784, 512) and params["up1.W2"].shape == (512, 512)
    assert params["up2.W1"].shape == (512, 256)
    assert params["q5.W_mu"].shape == (32, 4)
    # Decoder mirrors it: z5 -> 32 -> z4, ..., z1 -> 512 -> x.
    assert params["down4.W1"].shape == (4, 32) and params["p4.W_mu"].shape == (32, 8)
    assert params["down1.W1"].shape == (32, 256) and params["p1.W_var"].shape == (256, 64)
    assert params["down0.W1"].shape == (64, 512) and params["p0.W"].shape == (512, 784)
    # With batch norm the dense layers carry no bias; BN keeps running averages.
    assert "up1.b1" not in params and params["up1.gamma1"].shape == (512,)
    assert set(state) == {k.replace("gamma", "mean") for k in params if "gamma" in k} | \
        {k.replace("gamma", "var") for k in params if "gamma" in k}


def test_vae_chains_on_samples_not_on_features():
    params, _ = Model(ModelConfig(kind="vae")).init()
    assert params["up2.W1"].shape == (64, 256)  # q(z2 | z1) reads the 64-d sample z1


@pytest.mark.parametrize("bad,match", [
    (dict(latent=(4, 2), hidden=(8,)), "same length"),
    (dict(kind="iwae"), "unknown model 'iwae'"),
    (dict(likelihood="poisson"), "unknown likelihood"),
    (dict(latent=(0,), hidden=(3,)), "positive"),
])
def test_bad_configurations_are_clear_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig(**bad)


# ----------------------------------------------------------------------------
# Behaviour
# ----------------------------------------------------------------------------
def _small(kind, bn=True, seed=0, dtype="float64", fast=False, **kw):
    cfg = ModelConfig(kind=kind, x_dim=10, latent=(4, 3), hidden=(8, 6), batch_norm=bn, **kw)
    model = Model(cfg, get_backend("numpy", dtype=dtype, seed=seed), fast=fast)
    params, state = model.init()
    x = np.random.default_rng(seed).uniform(size=(16, 10)).astype(dtype)
    return model, params, state, x


def test_one_layer_lvae_equals_one_layer_vae():
    cfg = dict(x_dim=10, latent=(4,), hidden=(8,))
    vae = Model(ModelConfig(kind="vae", **cfg))
    lvae = Model(ModelConfig(kind="lvae", **cfg))
    params, state = vae.init()
    rng = np.random.default_rng(3)
    params = {k: v + 0.1 * rng.normal(size=v.shape) for k, v in params.items()}
    x, noise = rng.uniform(size=(6, 10)), [rng.normal(size=(6, 4))]
    for kl in ("analytic", "mc"):
        lv, gv, sv = vae.loss_and_grads(params, state, x, 0.3, noise=noise, kl=kl)
        ll, gl, sl = lvae.loss_and_grads(params, state, x, 0.3, noise=noise, kl=kl)
        assert float(lv) == float(ll)
        for k in params:
            np.testing.assert_array_equal(gv[k], gl[k], err_msg=k)
        np.testing.assert_array_equal(sv["kl_units"][0], sl["kl_units"][0])


def test_the_vae_never_uses_the_biased_closed_form():
    model, params, state, x = _small("vae")
    _, _, stats = model.loss_and_grads(params, state, x, 1.0, kl="analytic")
    assert stats["kl_estimator"] == ["mc", "analytic"]  # closed form for the top layer only
    lvae, params, state, x = _small("lvae")
    _, _, stats = lvae.loss_and_grads(params, state, x, 1.0, kl="analytic")
    assert stats["kl_estimator"] == ["analytic", "analytic"]
    with pytest.raises(ValueError, match="unknown KL estimator"):
        lvae.loss_and_grads(params, state, x, 1.0, kl="exact")


def test_noise_makes_the_model_deterministic_and_is_drawn_otherwise():
    model, params, state, x = _small("lvae")
    noise = model.noise(x.shape[0])
    a = model.loss_and_grads(params, state, x, 1.0, noise=noise)[0]
    b = model.loss_and_grads(params, state, x, 1.0, noise=noise)[0]
    c = model.loss_and_grads(params, state, x, 1.0)[0]
    assert float(a) == float(b) and float(a) != float(c)


def test_stats_are_consistent():
    model, params, state, x = _small("lvae")
    loss, _, st = model.loss_and_grads(params, state, x, 0.25)
    kl_total = sum(float(k) for k in st["kl"])
    assert float(st["elbo"]) == pytest.approx(float(st["rec"]) - kl_total, rel=1e-12)
    assert float(loss) == pytest.approx(-(float(st["rec"]) - 0.25 * kl_total), rel=1e-12)
    for units, layer in zip(st["kl_units"], st["kl"]):
        assert float(np.sum(units)) == pytest.approx(float(layer), rel=1e-12)
    assert [u.shape for u in st["kl_units"]] == [(4,), (3,)]
    assert all(float(k) >= 0 for k in st["kl"])  # analytic KLs are non-negative


def test_batch_norm_state_is_returned_and_evaluation_uses_it():
    model, params, state, x = _small("lvae")
    before = {k: v.copy() for k, v in state.items()}
    _, _, st = model.loss_and_grads(params, state, x, 1.0)
    new = st["state"]
    assert set(new) == set(state)
    for k in state:
        np.testing.assert_array_equal(state[k], before[k])  # not mutated
        assert not np.array_equal(new[k], before[k])        # but updated
    # Evaluation mode: each example's objective depends on it (and its noise) alone.
    noise = model.noise(16)
    f_all = model.forward(params, new, x, noise, training=False)[0].f
    f_one = model.forward(params, new, x[3:4], [e[3:4] for e in noise], training=False)[0].f
    assert f_one[0] == pytest.approx(f_all[3], rel=1e-12)
    assert model.forward(params, new, x, noise, training=False)[0].state is not None


@pytest.mark.parametrize("fast", [False, True], ids=["plain", "fast"])
@pytest.mark.parametrize("kind,options", [("lvae", {}), ("vae", {}),
                                          ("lvae", {"head_batch_norm": True,
                                                    "shared_top_down": False}),
                                          ("vae", {"head_batch_norm": True})])
def test_every_running_average_is_updated_as_its_layer_alone_would(kind, options, fast):
    """(1 - m) * old + m * batch for each running average, bit for bit: in its batch norm with
    the plain forms, all at once after the pass with the fast ones."""
    model, params, state, x = _small(kind, dtype="float32", fast=fast, **options)
    rng = np.random.default_rng(3)
    state = {k: (v + rng.uniform(0.1, 1.0, size=v.shape)).astype(np.float32)
             for k, v in state.items()}
    noise = model.noise(16)
    batch = model.forward(params, state, x, noise, bn_momentum=1.0)[0].state  # the batch's own
    new = model.forward(params, state, x, noise, bn_momentum=0.1)[0].state
    assert list(new) == list(state)
    for k in state:
        want = (1 - 0.1) * state[k] + 0.1 * batch[k]
        assert new[k].dtype == np.float32 and new[k].tobytes() == want.tobytes(), k
        assert not np.array_equal(new[k], state[k]), k


@pytest.mark.parametrize("kind", KINDS)
def test_float32_end_to_end(kind):
    model, params, state, x = _small(kind, dtype="float32")
    loss, grads, st = model.loss_and_grads(params, state, x, 1.0)
    assert loss.dtype == np.float32
    assert all(g.dtype == np.float32 for g in grads.values())
    assert all(v.dtype == np.float32 for v in st["state"].values())
    assert set(grads) == set(params)


def test_gaussian_likelihood_model_runs_and_has_a_variance_head():
    model, params, state, x = _small("lvae", likelihood="gaussian")
    assert {"p0.W_mu", "p0.W_var"} <= set(params)
    loss, grads, _ = model.loss_and_grads(params, state, x, 1.0)
    assert np.isfinite(float(loss)) and set(grads) == set(params)


def test_tile_rows_is_sample_major_and_its_backward_sums_copies():
    a = np.arange(6.0).reshape(3, 2)
    out, cache = blocks.tile_rows_forward(a, k=2)
    np.testing.assert_array_equal(out, np.concatenate([a, a]))
    (da,) = blocks.tile_rows_backward(np.arange(12.0).reshape(6, 2), cache)
    np.testing.assert_array_equal(da, np.arange(12.0).reshape(2, 3, 2).sum(axis=0))


@pytest.mark.parametrize("kind", KINDS)
def test_generate_and_reconstruct(kind):
    model, params, state, x = _small(kind)
    means, zs = model.generate(params, state, 7)
    assert means.shape == (7, 10) and np.all((means > 0) & (means < 1))
    assert [z.shape for z in zs] == [(7, 4), (7, 3)]
    # The top layer is the noise itself: z_L ~ N(0, I).
    noise = model.noise(7)
    np.testing.assert_array_equal(model.generate(params, state, 7, noise=noise)[1][-1], noise[-1])
    rec = model.reconstruct(params, state, x)
    assert rec.shape == x.shape and np.all((rec > 0) & (rec < 1))


def test_generate_follows_the_prior_chain():
    """With the same noise, generate's z_1 is the reparameterised p(z_1 | z_2)."""
    from lvae_np import gaussian as G

    model, params, state, _ = _small("lvae", bn=False)
    noise = model.noise(5)
    _, zs = model.generate(params, state, 5, noise=noise)
    (mu, var), _ = blocks.gaussian_block_forward(
        zs[1], subtree(params, "down1"), subtree(params, "p1"), state=subtree(state, "down1"),
        settings=model.settings(training=False))
    np.testing.assert_allclose(zs[0], mu + np.sqrt(var) * noise[0], rtol=1e-12)
    assert G.VAR_FLOOR < var.min()


@pytest.mark.parametrize("kind", KINDS)
def test_folding_batch_norm_gives_the_same_evaluation(kind):
    model, params, state, x = _small(kind)
    rng = np.random.default_rng(8)
    params = {k: v + 0.1 * rng.normal(size=v.shape) for k, v in params.items()}
    state = {k: (np.abs(v) + 0.5 if ".var" in k else v + rng.normal(size=v.shape))
             for k, v in state.items()}
    folded_model, folded = model.fold_batch_norm(params, state)
    assert not folded_model.config.batch_norm and not any("gamma" in k for k in folded)
    noise = model.noise(x.shape[0])
    f = model.forward(params, state, x, noise, training=False)[0].f
    g = folded_model.forward(folded, {}, x, noise, training=False)[0].f
    np.testing.assert_allclose(g, f, rtol=1e-12)
    assert folded_model.fold_batch_norm(folded, {})[1] is folded  # nothing left to fold
