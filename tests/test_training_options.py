"""The released code's training choices as options: clipping, whole batches, warm-up in steps,
the model's options passed on, the ``original-code`` preset."""
import math

import numpy as np
import pytest

from lvae_np import fast, optim
from lvae_np.training import config, train
from lvae_np.training.config import PRESETS, TrainConfig, config_from_meta
from test_train import ckpt, rows, run

SMALL = ["--dataset", "synthetic", "--latent", "4,2", "--hidden", "16,8", "--no-progress"]


def one_line_error(capsys, argv) -> str:
    assert run(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lvae_np.train: error:") and "\n" not in err, err
    return err


# ----------------------------------------------------------------------------
# Clipping: total norm, then each element
# ----------------------------------------------------------------------------
def test_clip_elementwise_clips_each_element_and_keeps_the_rest():
    g = {"a": np.array([-2.0, -0.9, 0.5, 0.95]), "b": np.array([[3.0], [-0.1]])}
    out = optim.clip_elementwise(g, 0.9)
    np.testing.assert_array_equal(out["a"], [-0.9, -0.9, 0.5, 0.9])
    np.testing.assert_array_equal(out["b"], [[0.9], [-0.1]])
    assert g["a"][0] == -2.0  # the input is left as it was
    assert optim.clip_elementwise({"f": np.ones(2, np.float32) * 2}, 0.9)["f"].dtype == \
        np.float32


def test_clip_gradients_takes_the_norm_first_then_each_element():
    g = {"a": np.array([10.0]), "b": np.array([0.1])}
    out = optim.clip_gradients(g, max_norm=4.0, elementwise=0.9)
    # norm sqrt(100.01) scaled to 4: a -> 3.9998..., b -> 0.039998...; then a -> 0.9.
    # (elementwise first would give a 0.9, b 0.1: norm 0.906 is under 4, no scaling)
    assert out["a"][0] == 0.9
    assert out["b"][0] == pytest.approx(0.1 * 4.0 / math.sqrt(100.01), rel=1e-12)
    assert out["b"][0] < 0.0400
    only_norm = optim.clip_gradients(g, max_norm=4.0)
    assert only_norm["a"][0] == pytest.approx(40.0 / math.sqrt(100.01), rel=1e-12)
    none = optim.clip_gradients(g)
    assert none["a"][0] == 10.0 and none["b"][0] == 0.1


@pytest.mark.parametrize("whole_buffer", [False, True])
def test_flat_adam_clips_each_element_bit_for_bit(whole_buffer):
    rng = np.random.default_rng(0)
    params = {"w": rng.normal(size=(5, 3)), "b": rng.normal(size=3)}
    grads = {k: 3 * rng.normal(size=v.shape) for k, v in params.items()}
    assert max(np.abs(g).max() for g in grads.values()) > 0.9  # the clip acts
    want, _ = optim.adam_update(params, optim.clip_elementwise(grads, 0.9),
                                optim.adam_init(params))
    opt = fast.FlatAdam(params, whole_buffer=whole_buffer)
    opt.step(grads, clip_value=0.9)
    for k in params:
        np.testing.assert_array_equal(opt.params[k], want[k], err_msg=k)
    unclipped, _ = optim.adam_update(params, grads, optim.adam_init(params))
    assert not np.array_equal(unclipped["w"], want["w"])


def test_training_clips_in_the_released_codes_order(tmp_path, monkeypatch):
    seen = []
    real = optim.clip_gradients

    def recording(grads, max_norm=0.0, elementwise=0.0):
        seen.append((max_norm, elementwise))
        return real(grads, max_norm, elementwise)

    monkeypatch.setattr(optim, "clip_gradients", recording)
    assert run(SMALL + ["--epochs", 1, "--warmup-epochs", 0, "--batch-size", 500,
                        "--max-grad-norm", 4, "--clip-elementwise", 0.9,
                        "--out", tmp_path / "r"]) == 0
    assert seen == [(4.0, 0.9)] * 2


# ----------------------------------------------------------------------------
# Whole batches only
# ----------------------------------------------------------------------------
def _trainer(tmp_path, **changes):
    from lvae_np import data
    from lvae_np.backend import get_backend
    from lvae_np.training.trainer import Trainer
    cfg = TrainConfig(dataset="synthetic", latent=(4, 2), hidden=(16, 8), **changes)
    ds = data.load_dataset("synthetic", None, validation=0, seed=0, progress=False)
    return Trainer(cfg, tmp_path, get_backend("numpy", seed=0), ds, progress=False)


def test_drop_last_keeps_only_full_batches(tmp_path):
    kept = _trainer(tmp_path, batch_size=300).batch_order(3)   # 1000 examples
    dropped = _trainer(tmp_path, batch_size=300, drop_last=True).batch_order(3)
    assert [len(b) for b in kept] == [300, 300, 300, 100]
    assert [len(b) for b in dropped] == [300, 300, 300]
    for a, b in zip(kept, dropped):   # the same shuffle, less its tail
        np.testing.assert_array_equal(a, b)
    exact = _trainer(tmp_path, batch_size=250, drop_last=True).batch_order(0)
    assert sorted(np.concatenate(exact).tolist()) == list(range(1000))


def test_drop_last_with_a_batch_larger_than_the_data_is_a_one_line_error(capsys, tmp_path):
    err = one_line_error(capsys, SMALL + ["--drop-last", "--batch-size", 1001,
                                          "--out", tmp_path / "r"])
    assert "--drop-last with --batch-size 1001 leaves no batch" in err


# ----------------------------------------------------------------------------
# Warm-up in steps
# ----------------------------------------------------------------------------
def test_warmup_in_steps_rises_step_by_step_and_logs_the_epochs_mean(tmp_path, monkeypatch):
    betas = []
    real_step = train.Trainer.step

    def recording(self, x, beta):
        betas.append(beta)
        return real_step(self, x, beta)

    monkeypatch.setattr(train.Trainer, "step", recording)
    out = tmp_path / "r"   # 1000 examples in batches of 50: 20 steps per epoch
    assert run(SMALL + ["--epochs", 2, "--warmup-steps", 30, "--batch-size", 50,
                        "--out", out]) == 0
    assert len(betas) == 40
    assert betas[0] == 0.0 and betas[15] == 0.5 and betas[29] == pytest.approx(29 / 30)
    assert betas[30:] == [1.0] * 10
    assert all(b > a for a, b in zip(betas[:30], betas[1:30]))
    logged = [float(r["beta"]) for r in rows(out)]
    # epoch 1: (0 + 1 + ... + 19) / 30 / 20; epoch 2: ((20 + ... + 29) / 30 + 10) / 20
    assert logged == pytest.approx([190 / 600, (245 / 30 + 10) / 20], rel=1e-12)
    saved = config_from_meta(ckpt(out)["meta"])
    assert (saved.warmup_steps, saved.warmup_epochs) == (30, 0)


def test_warmup_in_steps_or_epochs_not_both(capsys):
    err = one_line_error(capsys, SMALL + ["--warmup-steps", 10, "--warmup-epochs", 3])
    assert "--warmup-steps 10 and --warmup-epochs 3" in err
    cfg, _ = train.parse_args(["--warmup-steps", "10"])
    assert (cfg.warmup_steps, cfg.warmup_epochs) == (10, 0)   # replaces, does not scale
    cfg, _ = train.parse_args(["--preset", "paper-mnist", "--warmup-steps", "10"])
    assert (cfg.warmup_steps, cfg.warmup_epochs) == (10, 0)
    with pytest.raises(ValueError, match="warm-up in steps or in epochs"):
        config.check_config(TrainConfig(warmup_steps=5))   # warmup_epochs 200 by default


@pytest.mark.parametrize("argv,match", [
    (["--warmup-steps", "-1"], "--warmup-steps must be >= 0"),
    (["--clip-elementwise", "-0.5"], "--clip-elementwise must be >= 0"),
    (["--clip-elementwise", "nan"], "--clip-elementwise must be >= 0"),
    (["--bn-eps", "0"], "--bn-eps must be > 0"),
    (["--init", "he"], "invalid choice: 'he'"),
    (["--generative-widths", "wide"], "invalid choice: 'wide'"),
])
def test_bad_option_values(capsys, argv, match):
    assert match in one_line_error(capsys, argv + ["--no-progress"])


def test_the_training_options_resume_exactly_mid_epoch(tmp_path, monkeypatch):
    common = SMALL + ["--epochs", 3, "--warmup-steps", 5, "--batch-size", 300, "--drop-last",
                      "--max-grad-norm", 4, "--clip-elementwise", 0.9]
    assert run(common + ["--out", tmp_path / "straight"]) == 0
    calls = {"n": 0}
    real_step = train.Trainer.step

    def step_then_ctrl_c(self, x, beta):
        calls["n"] += 1
        if calls["n"] == 5:   # the second batch of the second epoch (3 batches each)
            self.stop_requested = True
        return real_step(self, x, beta)

    monkeypatch.setattr(train.Trainer, "step", step_then_ctrl_c)
    assert run(common + ["--out", tmp_path / "split"]) == 130
    meta = ckpt(tmp_path / "split")["meta"]
    assert (meta["epoch"], meta["batch"]) == (1, 2)
    monkeypatch.setattr(train.Trainer, "step", real_step)
    assert run(["--out", tmp_path / "split", "--resume", "--no-progress"]) == 0
    a, b = ckpt(tmp_path / "straight"), ckpt(tmp_path / "split")
    for k in a["params"]:
        np.testing.assert_array_equal(a["params"][k], b["params"][k], err_msg=k)
    assert a["opt_state"]["t"] == b["opt_state"]["t"] == 9
    strip = lambda rs: [{k: v for k, v in r.items() if "seconds" not in k} for r in rs]  # noqa
    assert strip(rows(tmp_path / "straight")) == strip(rows(tmp_path / "split"))


# ----------------------------------------------------------------------------
# The model's options and old configs
# ----------------------------------------------------------------------------
def test_a_config_without_the_new_fields_loads_with_their_defaults():
    old = {k: v for k, v in config.config_as_dict(TrainConfig(seed=3)).items()
           if k not in config.MODEL_OPTIONS + ("clip_elementwise", "drop_last",
                                               "warmup_steps")}
    cfg = config_from_meta({"config": old})
    assert cfg == TrainConfig(seed=3)
    assert (cfg.head_batch_norm, cfg.shared_top_down, cfg.only_mu_up, cfg.generative_widths,
            cfg.init, cfg.bn_eps, cfg.clip_elementwise, cfg.drop_last, cfg.warmup_steps) == \
        (False, True, False, "mirror", "glorot-uniform", 1e-4, 0.0, False, 0)


def test_the_model_options_reach_the_model():
    cfg = TrainConfig(head_batch_norm=True, shared_top_down=False, only_mu_up=True,
                      generative_widths="original", init="original", bn_eps=1e-10)
    mc = cfg.model_config(12, "bernoulli")
    assert (mc.head_batch_norm, mc.shared_top_down, mc.only_mu_up, mc.generative_widths,
            mc.init, mc.bn_eps) == (True, False, True, "original", "original", 1e-10)
    default = TrainConfig().model_config(12, "bernoulli")
    assert (default.head_batch_norm, default.shared_top_down, default.only_mu_up,
            default.generative_widths, default.init, default.bn_eps) == \
        (False, True, False, "mirror", "glorot-uniform", 1e-4)


def test_command_line_recreates_the_model_options(tmp_path):
    cfg = TrainConfig(model="lvae", dataset="synthetic", latent=(4, 2), hidden=(16, 8),
                      head_batch_norm=True, shared_top_down=False, only_mu_up=True,
                      generative_widths="original", init="original", bn_eps=1e-10,
                      bn_stats="single-pass")
    got, _ = train.parse_args(train.command_line(cfg, tmp_path / "r")[3:])
    assert got == cfg


# ----------------------------------------------------------------------------
# The original-code preset
# ----------------------------------------------------------------------------
ORIGINAL = dict(head_batch_norm=True, shared_top_down=False, only_mu_up=True,
                generative_widths="original", init="original", bn_eps=1e-10, max_grad_norm=4.0,
                clip_elementwise=0.9, drop_last=True, kl="mc", lr=2e-4, bn_stats="single-pass")


def test_the_original_code_preset_holds_the_released_codes_choices():
    assert PRESETS["original-code"] == ORIGINAL
    assert PRESETS["paper-mnist"] == dict(
        model="lvae", dataset="mnist", latent=(64, 32, 16, 8, 4), hidden=(512, 256, 128, 64, 32),
        batch_norm=True, warmup_epochs=200, epochs=2000, batch_size=256, lr=0.002,
        kl="analytic", iw_samples=1, eval_every=10, final_iw_samples=5000)


def test_the_original_code_preset_on_the_command_line():
    cfg, _ = train.parse_args(["--preset", "original-code"])
    assert {k: getattr(cfg, k) for k in ORIGINAL} == ORIGINAL
    assert cfg.warmup_epochs == 200 and cfg.model == "lvae"   # the rest: the defaults
    cfg, _ = train.parse_args(["--preset", "original-code", "--lr", "0.002", "--no-drop-last",
                               "--shared-top-down", "--kl", "analytic"])
    assert (cfg.lr, cfg.drop_last, cfg.shared_top_down, cfg.kl) == \
        (0.002, False, True, "analytic")   # explicit options override the preset
    assert cfg.head_batch_norm and cfg.clip_elementwise == 0.9


def test_the_training_options_of_the_preset_without_the_models(capsys):
    cfg, _ = train.parse_args(["--max-grad-norm", "4", "--clip-elementwise", "0.9",
                               "--drop-last", "--kl", "mc", "--lr", "2e-4"])
    assert (cfg.max_grad_norm, cfg.clip_elementwise, cfg.drop_last, cfg.kl, cfg.lr) == \
        (4.0, 0.9, True, "mc", 2e-4)
    got, _ = train.parse_args(train.command_line(cfg, "r")[3:])
    assert got == cfg
