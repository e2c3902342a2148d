"""The training and evaluation command lines: learning, exact resume, clear failures."""
import csv
import json
import shutil
import subprocess
import sys
import types
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from lvae_np import backend, data as D
from lvae_np.training import checkpoint, evaluate, runs, train
from lvae_np.training.config import TrainConfig, config_from_meta
from lvae_np.data import files as data_files

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--latent", "4,2", "--hidden", "16,8", "--batch-size", "50", "--no-progress"]


def run(argv):
    return train.main([str(a) for a in argv])


def rows(run_dir, name="metrics.csv"):
    with open(Path(run_dir) / name, newline="") as f:
        return list(csv.DictReader(f))


def ckpt(run_dir):
    return checkpoint.load(Path(run_dir) / runs.CHECKPOINT)


def assert_same_run(a, b):
    ca, cb = ckpt(a), ckpt(b)
    assert ca["meta"]["epoch"] == cb["meta"]["epoch"]
    for group in ("params", "state"):
        assert set(ca[group]) == set(cb[group])
        for k in ca[group]:
            np.testing.assert_array_equal(ca[group][k], cb[group][k], err_msg=f"{group} {k}")
    for k in ca["opt_state"]["m"]:
        np.testing.assert_array_equal(ca["opt_state"]["v"][k], cb["opt_state"]["v"][k])
    assert ca["meta"]["rng_state"] == cb["meta"]["rng_state"]
    strip = lambda rs: [{k: v for k, v in r.items() if "seconds" not in k} for r in rs]  # noqa
    assert strip(rows(a)) == strip(rows(b))
    assert rows(a, "kl_units.csv") == rows(b, "kl_units.csv")


# ----------------------------------------------------------------------------
# Learning
# ----------------------------------------------------------------------------
@pytest.mark.slow
def test_a_short_run_on_real_mnist_lowers_the_loss(tmp_path):
    out = tmp_path / "mnist"
    assert run(["--dataset", "mnist", "--epochs", 3, "--warmup-epochs", 0, "--out", out,
                "--latent", "16,8", "--hidden", "128,64", "--batch-size", "200",
                "--no-progress"]) == 0
    r = rows(out)
    assert len(r) == 3
    elbo = [float(x["test_elbo"]) for x in r]
    assert elbo[2] > elbo[0] + 5          # the bound improves clearly
    assert -200 < elbo[2] < -100          # in MNIST's range for a small, briefly trained model
    assert all(int(x["au_z1"]) > 0 for x in r)
    assert float(r[0]["train_seconds"]) > 0


def test_synthetic_run_writes_everything(tmp_path):
    out = tmp_path / "run"
    assert run(["--dataset", "synthetic", "--epochs", 2, "--warmup-epochs", 2, "--out", out]
               + SMALL) == 0
    r = rows(out)
    assert [x["epoch"] for x in r] == ["1", "2"] and [x["beta"] for x in r] == ["0.0", "0.5"]
    assert {"test_elbo", "au_z1", "au_z2", "train_kl_z2", "test_lk"} <= set(r[0])
    units = rows(out, "kl_units.csv")
    assert len(units) == 2 and len(units[0]) == 1 + 4 + 2
    assert (out / "config.json").exists()
    assert ckpt(out)["meta"]["epoch"] == 2
    assert runs.read_status(out) == {"state": "done", "epoch": 2}


# ----------------------------------------------------------------------------
# Resume
# ----------------------------------------------------------------------------
def test_resume_continues_exactly(tmp_path):
    common = ["--dataset", "synthetic", "--warmup-epochs", 3] + SMALL
    assert run(common + ["--epochs", 2, "--out", tmp_path / "straight"]) == 0
    assert run(common + ["--epochs", 1, "--out", tmp_path / "split"]) == 0
    assert run(["--out", tmp_path / "split", "--resume", "--epochs", 2, "--no-progress"]) == 0
    assert_same_run(tmp_path / "straight", tmp_path / "split")


def test_an_interrupted_epoch_resumes_exactly(tmp_path, monkeypatch):
    common = ["--dataset", "synthetic", "--warmup-epochs", 3, "--epochs", 2] + SMALL
    assert run(common + ["--out", tmp_path / "straight"]) == 0

    calls = {"n": 0, "status": []}
    real_step = train.Trainer.step

    def step_then_ctrl_c(self, x, beta):
        calls["n"] += 1
        if calls["n"] in (1, 21):  # what the status file says while training
            calls["status"].append(runs.read_status(self.run_dir))
        if calls["n"] == 27:  # in the second epoch (20 batches per epoch)
            self.stop_requested = True  # what the Ctrl-C handler does
        return real_step(self, x, beta)

    monkeypatch.setattr(train.Trainer, "step", step_then_ctrl_c)
    assert run(common + ["--out", tmp_path / "split"]) == 130
    meta = ckpt(tmp_path / "split")["meta"]
    assert (meta["epoch"], meta["batch"]) == (1, 7)
    assert calls["status"] == [{"state": "training", "epoch": 0}] * 2  # written once, at start
    assert runs.read_status(tmp_path / "split") == {"state": "interrupted", "epoch": 1,
                                                     "batch": 7}
    seen = []
    monkeypatch.setattr(train.Trainer, "step", _recording_status(real_step, seen))
    assert run(["--out", tmp_path / "split", "--resume", "--no-progress"]) == 0
    assert seen[0] == {"state": "training", "epoch": 1}
    assert runs.read_status(tmp_path / "split") == {"state": "done", "epoch": 2}
    assert_same_run(tmp_path / "straight", tmp_path / "split")


def _recording_status(real_step, seen: list):
    """Trainer.step that also records the run's status file before each batch."""
    def step(self, x, beta):
        seen.append(runs.read_status(self.run_dir))
        return real_step(self, x, beta)
    return step


def test_a_stop_request_between_epochs_is_an_interruption_too(tmp_path, monkeypatch):
    out = tmp_path / "run"
    real_run_epoch = train.Trainer.train_epoch

    def epoch_then_ctrl_c(self, bar=None):
        beta = real_run_epoch(self, bar)
        self.stop_requested = True  # after the epoch's last batch: the loop stops after saving
        return beta

    monkeypatch.setattr(train.Trainer, "train_epoch", epoch_then_ctrl_c)
    assert run(["--dataset", "synthetic", "--epochs", 3, "--out", out] + SMALL) == 130
    assert runs.read_status(out) == {"state": "interrupted", "epoch": 1, "batch": 0}
    assert ckpt(out)["meta"]["epoch"] == 1


# ----------------------------------------------------------------------------
# Failures: one line, non-zero exit, no traceback
# ----------------------------------------------------------------------------
def _one_line_error(capsys, argv, code=2):
    assert run(argv) == code
    err = capsys.readouterr().err.strip()
    assert err.startswith("lvae_np.train: error:") and "\n" not in err, err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("argv,match", [
    (["--dataset", "cifar"], "invalid choice: 'cifar'"),
    (["--latent", "8,4", "--hidden", "16"], "--latent has 2 layers but --hidden has 1"),
    (["--epochs", "-1"], "--epochs must be >= 0"),
    (["--latent", "8,x"], "comma-separated integers"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--resume"], "--resume needs --out"),
])
def test_bad_arguments(capsys, argv, match):
    assert match in _one_line_error(capsys, argv + ["--no-progress"])


def test_missing_data(capsys, tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv(D.ENV_VAR, str(empty))
    monkeypatch.setattr(data_files, "open_url", _no_network)
    err = _one_line_error(capsys, ["--dataset", "omniglot", "--data-dir", empty,
                                   "--out", tmp_path / "r", "--no-progress"])
    assert "images_background" in err or "chardata" in err
    assert not (tmp_path / "r" / runs.CHECKPOINT).exists()


def _no_network(*args, **kwargs):
    raise OSError("no network in this test")


def test_corrupt_idx_file(capsys, tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for f in (REPO / "data" / "mnist").glob("*.gz"):
        shutil.copy(f, folder / f.name)
    raw = bytearray((folder / "t10k-images-idx3-ubyte.gz").read_bytes())
    raw[-12] ^= 0xFF  # inside the compressed stream
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(bytes(raw))
    err = _one_line_error(capsys, ["--data-dir", tmp_path, "--epochs", 1, "--out",
                                   tmp_path / "r", "--no-progress"])
    assert "t10k-images-idx3-ubyte" in err


def test_corrupt_checkpoint(capsys, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / runs.CHECKPOINT).write_bytes(b"PK\x03\x04 truncated")
    err = _one_line_error(capsys, ["--out", out, "--resume", "--no-progress"])
    assert str(out / runs.CHECKPOINT) in err


def test_an_existing_run_is_not_overwritten(capsys, tmp_path):
    out = tmp_path / "run"
    assert run(["--dataset", "synthetic", "--epochs", 1, "--out", out] + SMALL) == 0
    before = (out / runs.CHECKPOINT).read_bytes()
    assert "already holds a run" in _one_line_error(
        capsys, ["--dataset", "synthetic", "--epochs", 1, "--out", out] + SMALL)
    assert (out / runs.CHECKPOINT).read_bytes() == before


def test_nan_in_the_data(capsys, tmp_path, nan_in_synthetic):
    nan_in_synthetic("train")
    err = _one_line_error(capsys, ["--dataset", "synthetic", "--epochs", 1,
                                   "--out", tmp_path / "r"] + SMALL)
    assert "NaN" in err


def test_a_nan_loss_stops_with_the_epoch_and_batch_and_keeps_the_checkpoint(
        capsys, tmp_path, monkeypatch):
    out = tmp_path / "run"
    common = ["--dataset", "synthetic", "--out", out] + SMALL
    assert run(common + ["--epochs", 1]) == 0
    good = (out / runs.CHECKPOINT).read_bytes()
    calls = {"n": 0}
    real_step = train.Trainer.step

    def step_nan(self, x, beta):
        calls["n"] += 1
        loss, st = real_step(self, x, beta)
        return (loss * np.nan if calls["n"] == 4 else loss), st

    monkeypatch.setattr(train.Trainer, "step", step_nan)
    assert runs.read_status(out) == {"state": "done", "epoch": 1}
    err = _one_line_error(capsys, ["--out", out, "--resume", "--epochs", 2, "--no-progress"],
                          code=1)
    assert "epoch 2, by batch 4 of 20" in err and "intact" in err
    assert (out / runs.CHECKPOINT).read_bytes() == good
    # the epoch that diverged (1-based), as the message says; one epoch is done
    assert runs.read_status(out) == {"state": "diverged", "epoch": 2}


def test_cli_runs_as_a_module_and_has_help():
    proc = subprocess.run([sys.executable, "-m", "lvae_np.train", "--help"],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "--warmup-epochs" in proc.stdout and "paper" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "lvae_np.train", "--latent", "1,2",
                           "--hidden", "3"], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


# ----------------------------------------------------------------------------
# The command line that recreates a config
# ----------------------------------------------------------------------------
CONFIGS = [
    TrainConfig(),
    TrainConfig(model="vae", dataset="synthetic", latent=(4, 2), hidden=(16, 8),
                batch_norm=False, warmup_epochs=0, epochs=3, batch_size=50, seed=7),
    TrainConfig(model="lvae", dataset="omniglot", latent=(8,), hidden=(32,), lr=1e-3,
                max_grad_norm=2.5, iw_samples=5, kl="mc", eval_every=4, eval_iw_samples=10,
                final_iw_samples=100, validation=500, dtype="float64", seed=123),
    TrainConfig(dataset="norb", latent=(6, 5, 4), hidden=(20, 10, 5), warmup_epochs=17,
                epochs=1, batch_size=1, lr=0.00012345678901234567, seed=0),
    TrainConfig(model="vae", dataset="synthetic", latent=(4, 2), hidden=(16, 8),
                warmup_epochs=0, warmup_steps=123, max_grad_norm=4.0, clip_elementwise=0.9,
                drop_last=True, head_batch_norm=True, shared_top_down=False, only_mu_up=True,
                generative_widths="original", init="original", bn_eps=1e-10, kl="mc"),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=range(len(CONFIGS)))
def test_command_line_recreates_the_config(cfg, tmp_path):
    cmd = train.command_line(cfg, tmp_path / "r")
    assert cmd[:3] == [sys.executable, "-m", "lvae_np.train"]
    got, args = train.parse_args(cmd[3:])
    assert got == cfg and got is not cfg
    assert (args.out, args.backend, args.data_dir, args.no_progress, args.resume) == \
        (str(tmp_path / "r"), "auto", None, True, False)


def test_command_line_of_a_resumed_run_gives_only_the_epochs():
    cfg = CONFIGS[1]
    cmd = train.command_line(cfg, "runs/x", resume=True, backend="cupy", data_dir="/d",
                             progress=True)
    assert cmd[3:] == ["--out", "runs/x", "--epochs", "3", "--resume", "--backend", "cupy",
                       "--data-dir", "/d"]
    got, args = train.parse_args(cmd[3:])
    assert args.resume and not args.no_progress and got.epochs == 3


def test_command_line_trains_that_config(tmp_path, capsys):
    cfg = CONFIGS[1]
    out = tmp_path / "r"
    assert run(train.command_line(cfg, out)[3:]) == 0
    saved = config_from_meta(ckpt(out)["meta"])
    assert saved.data_variant and saved == replace(cfg, data_variant=saved.data_variant)
    assert "backend numpy" in capsys.readouterr().out
    assert run(train.command_line(replace(cfg, epochs=4), out, resume=True)[3:]) == 0
    assert ckpt(out)["meta"]["epoch"] == 4


# ----------------------------------------------------------------------------
# Presets and the GPU path without a GPU
# ----------------------------------------------------------------------------
def test_paper_preset():
    cfg, _ = train.parse_args(["--preset", "paper-mnist"])
    assert (cfg.model, cfg.dataset, cfg.epochs, cfg.warmup_epochs, cfg.batch_size) == \
        ("lvae", "mnist", 2000, 200, 256)
    assert cfg.batch_norm and cfg.final_iw_samples == 5000 and cfg.lr == 0.002
    cfg, _ = train.parse_args(["--preset", "paper-mnist", "--epochs", "5"])
    assert cfg.epochs == 5  # explicit options override the preset


def test_cupy_fallback_warns_and_trains(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(backend, "_cupy_status", {"reason": "CuPy sees no CUDA device"})
    monkeypatch.setattr(backend, "_warned", False)
    assert run(["--backend", "cupy", "--dataset", "synthetic", "--epochs", 1,
                "--out", tmp_path / "r"] + SMALL) == 0
    captured = capsys.readouterr()
    assert "warning: --backend cupy: CuPy sees no CUDA device; running on NumPy" in captured.err
    assert "backend numpy" in captured.out


# ----------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------
def test_evaluate_cli(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(["--dataset", "synthetic", "--epochs", 2, "--out", out] + SMALL) == 0
    capsys.readouterr()
    assert evaluate.main([str(out), "--iw-samples", "50", "--json", "--no-progress"]) == 0
    import json
    res = json.loads(capsys.readouterr().out)
    assert res["lk"] >= res["elbo"] - 1.0  # L_50 is (noisily) above the ELBO
    assert len(res["active_units"]) == 2 and res["bn"] == "recollect"
    assert (out / "eval-test-k50.json").exists() and "lk_per_example" not in res
    assert evaluate.main([str(out), "--iw-samples", "0", "--bn", "running",
                          "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "ELBO" in text and "active units" in text
    # a limited evaluation has its own file and can give each example's L_k
    full = json.loads((out / "eval-test-k50.json").read_text())
    assert evaluate.main([str(out), "--iw-samples", "50", "--limit", "7", "--per-example",
                          "--json", "--no-progress"]) == 0
    lim = json.loads(capsys.readouterr().out)
    assert lim["n"] == 7 and lim["limit"] == 7 and len(lim["lk_per_example"]) == 7
    assert sum(lim["lk_per_example"]) / 7 == pytest.approx(lim["lk"], abs=1e-9)
    assert json.loads((out / "eval-test-k50-first7.json").read_text()) == lim
    assert json.loads((out / "eval-test-k50.json").read_text()) == full


def test_evaluate_recollects_batch_norm_statistics(tmp_path):
    out = tmp_path / "run"
    assert run(["--dataset", "synthetic", "--epochs", 1, "--out", out] + SMALL) == 0
    a = evaluate.evaluate_run(out, iw_samples=0, bn="recollect", progress=False)
    b = evaluate.evaluate_run(out, iw_samples=0, bn="running", progress=False)
    assert a["elbo"] != b["elbo"]


def test_single_pass_statistics_are_the_whole_training_sets(tmp_path):
    """--bn-stats single-pass: each BN layer normalises with the whole set's mean and variance."""
    from lvae_np.training.metrics import evaluation_bn_state
    from lvae_np.training.runs import evaluation_train_set, load_run
    out = tmp_path / "run"
    assert run(["--dataset", "synthetic", "--epochs", 1, "--bn-stats", "single-pass",
                "--dtype", "float64", "--out", out] + SMALL) == 0
    assert json.loads((out / "config.json").read_text())["bn_stats"] == "single-pass"
    loaded = load_run(out, backend="numpy", seed=0)
    x = evaluation_train_set(loaded.dataset)
    state = evaluation_bn_state(loaded.model, loaded.params, loaded.state, x, "single-pass", 7)
    # The first BN layer reads x @ W1 (no bias under batch norm): its statistics, by hand.
    h = x @ loaded.params["up1.W1"]
    assert np.allclose(state["up1.mean1"], h.mean(axis=0), rtol=1e-12, atol=1e-12)
    assert np.allclose(state["up1.var1"], h.var(axis=0), rtol=1e-12, atol=1e-12)
    # In batches of 7 the variances are the mean of the batches' own, which differs.
    batches = evaluation_bn_state(loaded.model, loaded.params, loaded.state, x, "recollect", 7)
    assert not np.allclose(batches["up1.var1"], state["up1.var1"], rtol=1e-3)
    # evaluate follows the run's config unless told otherwise, and says which it used
    assert evaluate.evaluate_run(out, iw_samples=0, progress=False)["bn"] == "single-pass"
    assert evaluate.evaluate_run(out, iw_samples=0, bn="recollect", progress=False)["bn"] \
        == "recollect"


def test_evaluate_errors(capsys, tmp_path):
    assert evaluate.main([str(tmp_path / "nowhere"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lvae_np.evaluate: error: no checkpoint") and "\n" not in err


@pytest.mark.parametrize("argv,match", [
    (["--iw-samples", "-1"], "--iw-samples must be >= 0, got -1 (see --help)"),
    (["--au-samples", "0"], "--au-samples must be >= 1, got 0"),
    (["--limit", "0"], "--limit must be >= 1, got 0"),
    (["--split", "dev"], "invalid choice: 'dev'"),
    (["--bogus"], "unrecognized arguments: --bogus"),
    ([], None),  # RUN_DIR missing
])
def test_evaluate_usage_errors_are_one_line(capsys, tmp_path, argv, match):
    argv = argv if match is None else [str(tmp_path)] + argv
    assert evaluate.main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("lvae_np.evaluate: error: ") and "\n" not in err, err
    assert "usage:" not in err and captured.out == ""
    assert match is None or match in err


def test_evaluate_reports_a_checkpoint_without_a_config_in_one_line(capsys, tmp_path):
    out = tmp_path / "run"
    checkpoint.save(out / runs.CHECKPOINT, params={"w": np.ones(2)}, state={},
                    opt_state={"t": 0, "m": {"w": np.ones(2)}, "v": {"w": np.ones(2)}},
                    meta={"epoch": 0})
    assert evaluate.main([str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "has no run config" in err and str(out / runs.CHECKPOINT) in err and "\n" not in err


def test_cli_modules_import_one_way():
    """train uses evaluate; evaluate, plots and the run contract never import train."""
    code = ("import sys; import lvae_np.evaluate, lvae_np.plots, lvae_np.training.runs, lvae_np.training.config; "
            "assert 'lvae_np.train' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)
