"""The original code's choices as ModelConfig options: names, shapes, their effect, their gradients.

The PyTorch oracle (tests/test_torch_oracle_models.py) checks each option's
loss and gradients against autograd; here, what each option builds and does.
"""
import dataclasses
import math

import numpy as np
import pytest

from lvae_np import blocks, steps, variants
from lvae_np.gradcheck.cases import CASES, OPTION_TAGS
from lvae_np.models import Model, ModelConfig
from lvae_np.blocks import subtree

SMALL = {"x_dim": 7, "latent": (4, 3, 2), "hidden": (6, 5, 4)}


def small(kind="lvae", **options):
    return Model(ModelConfig(kind=kind, **SMALL, **options))


def problem(model, seed=0, n=8):
    params, state = model.init()
    rng = np.random.default_rng(seed)
    params = {k: v + 0.2 * rng.normal(size=v.shape) for k, v in params.items()}
    x = rng.uniform(size=(n, model.config.x_dim))
    noise = [rng.normal(size=(n, d)) for d in model.config.latent]
    return params, state, x, noise


# ----------------------------------------------------------------------------
# The config
# ----------------------------------------------------------------------------
def test_defaults_are_the_papers_form_and_old_configs_get_them():
    old = {"kind": "vae", "x_dim": 784, "latent": (64, 32), "hidden": (512, 256),
           "batch_norm": True, "likelihood": "bernoulli", "slope": 0.01}  # before the options
    c = ModelConfig(**old)
    assert (c.head_batch_norm, c.shared_top_down, c.only_mu_up, c.generative_widths, c.init,
            c.bn_eps) == (False, True, False, "mirror", "glorot-uniform", 1e-4)
    assert ModelConfig(**dataclasses.asdict(c)) == c


@pytest.mark.parametrize("field,value,message", [
    ("head_batch_norm", "yes", "head_batch_norm must be True or False, not 'yes'"),
    ("shared_top_down", 0, "shared_top_down must be True or False, not 0"),
    ("only_mu_up", None, "only_mu_up must be True or False, not None"),
    ("generative_widths", "wide", "unknown generative_widths 'wide': choose one of mirror, "
                                  "original"),
    ("init", "he", "unknown init 'he': choose one of glorot-uniform, original"),
    ("bn_eps", 0.0, "bn_eps must be a positive number, not 0.0"),
    ("bn_eps", -1e-5, "bn_eps must be a positive number, not -1e-05"),
    ("bn_eps", float("nan"), "bn_eps must be a positive number, not nan"),
    ("bn_eps", True, "bn_eps must be a positive number, not True"),
])
def test_bad_option_values_are_one_line_errors(field, value, message):
    with pytest.raises(ValueError) as err:
        ModelConfig(**{field: value})
    assert str(err.value) == message and "\n" not in message


# ----------------------------------------------------------------------------
# head_batch_norm
# ----------------------------------------------------------------------------
def test_batch_normalised_heads_names_and_shapes():
    for kind in ("lvae", "vae"):
        params, state = small(kind, head_batch_norm=True).init()
        for head, (d_in, d_out) in {"q1": (6, 4), "q3": (4, 2), "p1": (5, 4), "p2": (4, 3)}.items():
            p = subtree(params, head)
            assert sorted(p) == ["W_mu", "W_var", "beta_mu", "beta_var", "gamma_mu", "gamma_var"]
            assert p["W_mu"].shape == p["W_var"].shape == (d_in, d_out)
            assert all(p[k].shape == (d_out,) for k in p if not k.startswith("W"))
            assert sorted(subtree(state, head)) == ["mean_mu", "mean_var", "var_mu", "var_var"]
        assert sorted(subtree(params, "p0")) == ["W", "b"]  # the output layer is left as it is
        assert subtree(state, "p0") == {}


def test_a_batch_normalised_heads_halves_are_normalised_over_the_batch():
    rng = np.random.default_rng(0)
    p = blocks.init_gaussian_head(rng, 5, 3, xp=np, dtype=np.float64, batch_norm=True)
    h = 3.0 + 2.0 * rng.normal(size=(400, 5))
    (mu, var), cache = blocks.gaussian_head_forward(h, p, settings=blocks.BlockSettings(eps=1e-10))
    np.testing.assert_allclose(mu.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(mu.std(axis=0), 1.0, rtol=1e-8)
    a_var = np.log(np.expm1(var))                       # softplus^-1
    np.testing.assert_allclose(a_var.mean(axis=0), 0.0, atol=1e-9)
    np.testing.assert_allclose(a_var.std(axis=0), 1.0, rtol=1e-8)
    assert cache.new_state == {}                        # no state given: none kept


def test_a_batch_normalised_heads_running_averages_are_state():
    model = small(head_batch_norm=True)
    params, state, x, noise = problem(model)
    _, _, stats = model.loss_and_grads(params, state, x, noise=noise)
    new = stats["state"]
    assert list(new) == list(state)
    for key in ("q1.mean_mu", "q3.var_var", "p1.mean_var", "p2.var_mu"):
        assert not np.allclose(new[key], state[key]), key


def test_folding_batch_normalised_heads_gives_the_evaluation_mode_model():
    model = small(head_batch_norm=True, bn_eps=1e-3)
    params, state, x, noise = problem(model, seed=1)
    rng = np.random.default_rng(2)
    state = {k: (v + 0.3 * rng.normal(size=v.shape) if ".mean" in k
                 else v * rng.uniform(0.5, 2.0, size=v.shape)) for k, v in state.items()}
    want, _ = model.forward(params, state, x, noise, training=False)
    folded_model, folded = model.fold_batch_norm(params, state)
    assert not folded_model.config.head_batch_norm and not folded_model.config.batch_norm
    assert sorted(subtree(folded, "q1")) == ["W_mu", "W_var", "b_mu", "b_var"]
    got, _ = folded_model.forward(folded, {}, x, noise, training=False)
    np.testing.assert_allclose(got.f, want.f, rtol=1e-12)


# ----------------------------------------------------------------------------
# Where a variant comes in: the model picks its steps once, the passes run them
# ----------------------------------------------------------------------------
def test_the_model_picks_the_papers_steps_or_the_variants_from_its_config():
    assert type(small().ladder_layer) is steps.LadderLayer
    assert type(small(shared_top_down=False).ladder_layer) is variants.UnsharedLadderLayer
    assert type(small().up_input) is steps.UpInput
    assert type(small(only_mu_up=True).up_input) is variants.MuUpInput


def test_the_passes_run_the_steps_they_are_given_whatever_the_config_says():
    variant = small(shared_top_down=False, only_mu_up=True)
    params, state, x, noise = problem(variant, seed=8)
    swapped = small()   # the paper's config, with the variant's steps put in place
    swapped.ladder_layer, swapped.up_input = variants.UnsharedLadderLayer(), variants.MuUpInput()
    loss, grads, stats = variant.loss_and_grads(params, state, x, noise=noise, kl="mc")
    loss_s, grads_s, stats_s = swapped.loss_and_grads(params, state, x, noise=noise, kl="mc")
    assert loss_s == loss and list(grads_s) == list(grads) and set(grads) == set(params)
    for k in grads:
        np.testing.assert_array_equal(grads_s[k], grads[k], err_msg=k)
    assert list(stats_s["state"]) == list(stats["state"])
    for k in stats["state"]:
        np.testing.assert_array_equal(stats_s["state"][k], stats["state"][k], err_msg=k)


# ----------------------------------------------------------------------------
# shared_top_down=False
# ----------------------------------------------------------------------------
def test_unshared_top_down_path_has_its_own_blocks():
    params, state = small(shared_top_down=False).init()
    shared, _ = small().init()
    extra = sorted({k.split(".")[0] for k in set(params) - set(shared)})
    assert extra == ["tdown1", "tdown2", "tp1", "tp2"]
    assert all(np.array_equal(params[k], shared[k]) for k in shared)  # the rest as before
    for name in ("down1", "p1", "down2", "p2"):
        t = "t" + name
        assert {k: v.shape for k, v in subtree(params, t).items()} == \
            {k: v.shape for k, v in subtree(params, name).items()}
    assert "tdown1.mean1" in state
    vae, _ = small("vae", shared_top_down=False).init()   # the VAE has no top-down path
    assert not any(k.startswith("t") for k in vae)


def test_unshared_path_with_copies_of_the_generative_blocks_is_the_shared_model():
    """Loss equal, and each shared block's gradient the sum of its two copies' gradients."""
    shared, unshared = small(), small(shared_top_down=False)
    params, state, x, noise = problem(shared, seed=3)
    copies = dict(params)
    for i in (1, 2):
        copies.update({f"tdown{i}.{k}": v for k, v in subtree(params, f"down{i}").items()})
        copies.update({f"tp{i}.{k}": v for k, v in subtree(params, f"p{i}").items()})
    for kl in ("analytic", "mc"):
        loss, grads, _ = shared.loss_and_grads(params, state, x, noise=noise, kl=kl)
        loss_u, grads_u, _ = unshared.loss_and_grads(copies, state, x, noise=noise, kl=kl)
        np.testing.assert_allclose(loss_u, loss, rtol=1e-13)
        for k in grads:  # down1, p1, down2, p2 have a copy tdown1, tp1, ...; the rest none
            both = grads_u[k] + grads_u.get("t" + k, 0.0)
            np.testing.assert_allclose(both, grads[k], rtol=1e-10, atol=1e-13, err_msg=k)


def test_generation_uses_the_generative_blocks_only():
    model = small(shared_top_down=False)
    params, state, x, noise = problem(model, seed=4)
    moved = {k: (v + 1.0 if k.startswith("t") else v) for k, v in params.items()}
    eps = [np.random.default_rng(5).normal(size=(3, d)) for d in model.config.latent]
    np.testing.assert_array_equal(model.generate(params, state, 3, eps)[0],
                                  model.generate(moved, state, 3, eps)[0])
    assert model.loss_and_grads(moved, state, x, noise=noise)[0] != \
        model.loss_and_grads(params, state, x, noise=noise)[0]


# ----------------------------------------------------------------------------
# only_mu_up and generative_widths
# ----------------------------------------------------------------------------
def test_only_mu_up_feeds_each_block_the_mean_below():
    model = small(only_mu_up=True)
    params, state, x, _ = problem(model, seed=6)
    assert params["up2.W1"].shape == (4, 5) and params["up3.W1"].shape == (3, 4)
    part, _ = model.bottom_up_forward(params, state, x)
    d2, _ = blocks.mlp_forward(part.mu_hat[0], subtree(params, "up2"),
                               state=subtree(state, "up2"), settings=model.settings())
    np.testing.assert_array_equal(part.d[1], d2)
    vae, _ = small("vae", only_mu_up=True).init()
    assert vae["up2.W1"].shape == (4, 5)  # the VAE's blocks read z_{i-1} anyway


def test_original_generative_widths_are_one_size_wider_for_the_lvae():
    lvae, _ = Model(ModelConfig(generative_widths="original")).init()   # the paper's sizes
    assert [lvae[f"down{i}.W1"].shape for i in range(5)] == \
        [(64, 512), (32, 512), (16, 256), (8, 128), (4, 64)]
    assert lvae["p1.W_mu"].shape == (512, 64) and lvae["p4.W_mu"].shape == (64, 8)
    vae, _ = Model(ModelConfig(kind="vae", generative_widths="original")).init()
    assert [vae[f"down{i}.W1"].shape for i in range(5)] == \
        [(64, 512), (32, 256), (16, 128), (8, 64), (4, 32)]          # mirrored, as before
    # the unshared top-down inference blocks keep the mirror width (the released code's
    # hidden_sizes[i+1]); only its generative blocks are wider
    unshared, _ = Model(ModelConfig(generative_widths="original", shared_top_down=False)).init()
    assert [unshared[f"tdown{i}.W1"].shape for i in range(1, 5)] == \
        [(32, 256), (16, 128), (8, 64), (4, 32)]
    assert unshared["tp1.W_mu"].shape == (256, 64) and unshared["down1.W1"].shape == (32, 512)


# ----------------------------------------------------------------------------
# init and bn_eps
# ----------------------------------------------------------------------------
def test_original_initialisation():
    params, _ = Model(ModelConfig(init="original")).init()
    w = params["up1.W1"]                                   # an MLP layer: ReLU gain sqrt(2)
    np.testing.assert_allclose(w.std(), math.sqrt(2) * math.sqrt(2 / (784 + 512)), rtol=0.01)
    assert abs(w.mean()) < 1e-3 and np.abs(w).max() > math.sqrt(6 / (784 + 512))  # not uniform
    # a latent head: Glorot-uniform with gain 1, as the released code's denselayer default
    head = params["q1.W_mu"]
    bound = math.sqrt(6 / (512 + 64))
    assert np.abs(head).max() <= bound and np.abs(head).max() > 0.98 * bound   # uniform
    np.testing.assert_allclose(head.std(), bound / math.sqrt(3), rtol=0.03)
    assert np.all(params["q1.b_var"] == 1.0) and np.all(params["q1.b_mu"] == 0.0)
    assert np.all(params["p0.b"] == 0.0)
    # the output layer's Gaussian head (NORB): Glorot-normal with gain 1
    norb, _ = Model(ModelConfig(init="original", likelihood="gaussian", x_dim=1024)).init()
    out = norb["p0.W_mu"]
    np.testing.assert_allclose(out.std(), math.sqrt(2 / (512 + 1024)), rtol=0.02)
    assert np.abs(out).max() > math.sqrt(6 / (512 + 1024))                    # not uniform
    # with head batch norm the bias of 1 is normalised away: beta_var starts at 0
    bn, _ = Model(ModelConfig(init="original", head_batch_norm=True)).init()
    assert np.all(bn["p2.beta_var"] == 0.0) and np.all(bn["p2.beta_mu"] == 0.0)
    default, _ = Model(ModelConfig()).init()
    a = math.sqrt(6 / (784 + 512))
    assert np.abs(default["up1.W1"]).max() <= a and np.all(default["q1.b_var"] == 0.0)


def test_bn_eps_reaches_the_blocks_the_heads_and_the_folding():
    model = small(bn_eps=1e-10, head_batch_norm=True)
    assert model.settings().eps == 1e-10
    params, state, x, noise = problem(model, seed=7)
    state = {k: (v * 1e-8 if ".var" in k else v) for k, v in state.items()}  # tiny variances
    want, _ = model.forward(params, state, x, noise, training=False)
    other, _ = small(head_batch_norm=True).forward(params, state, x, noise, training=False)
    assert not np.allclose(other.f, want.f)                 # eps 1e-4 against 1e-10 shows
    folded_model, folded = model.fold_batch_norm(params, state)
    got, _ = folded_model.forward(folded, {}, x, noise, training=False)
    np.testing.assert_allclose(got.f, want.f, rtol=1e-9)


# ----------------------------------------------------------------------------
# Gradient checks of the option cases in the registry
# ----------------------------------------------------------------------------
TAGS = tuple(tag for _, tag in OPTION_TAGS.values()) + ("eps",)
OPTION_CASES = [c for c in CASES if c.kind == "model" and
                any(f"-{t}" in c.name for t in TAGS)]


def test_every_option_has_a_model_case():
    names = " ".join(c.name for c in OPTION_CASES)
    assert all(f"-{t}" in names for t in TAGS)


@pytest.mark.parametrize("case", OPTION_CASES, ids=[c.name for c in OPTION_CASES])
def test_option_model_gradients(case):
    report = case.check(seed=1)
    assert report.passed, str(report)
    assert max(a.max_rel_error for a in report.arguments) <= 1e-6
