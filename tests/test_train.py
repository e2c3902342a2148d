"""The training and evaluation command lines: learning, exact resume, clear failures."""
import csv
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from lvae_np import backend, checkpoint, data as D, evaluate, train

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--latent", "4,2", "--hidden", "16,8", "--batch-size", "50", "--no-progress"]


def run(argv):
    return train.main([str(a) for a in argv])


def rows(run_dir, name="metrics.csv"):
    with open(Path(run_dir) / name, newline="") as f:
        return list(csv.DictReader(f))


def ckpt(run_dir):
    return checkpoint.load(Path(run_dir) / train.CHECKPOINT)


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

    calls = {"n": 0}
    real_step = train.Trainer.step

    def step_then_ctrl_c(self, x, beta):
        calls["n"] += 1
        if calls["n"] == 27:  # in the second epoch (20 batches per epoch)
            self.stop_requested = True  # what the Ctrl-C handler does
        return real_step(self, x, beta)

    monkeypatch.setattr(train.Trainer, "step", step_then_ctrl_c)
    assert run(common + ["--out", tmp_path / "split"]) == 130
    meta = ckpt(tmp_path / "split")["meta"]
    assert (meta["epoch"], meta["batch"]) == (1, 7)
    monkeypatch.setattr(train.Trainer, "step", real_step)
    assert run(["--out", tmp_path / "split", "--resume", "--no-progress"]) == 0
    assert_same_run(tmp_path / "straight", tmp_path / "split")


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
    monkeypatch.setattr(D, "cache_dir", lambda: tmp_path / "cache")
    monkeypatch.setenv(D.ENV_VAR, str(empty))
    monkeypatch.setattr(D, "_urlopen", _no_network)
    err = _one_line_error(capsys, ["--dataset", "omniglot", "--data-dir", empty,
                                   "--out", tmp_path / "r", "--no-progress"])
    assert "images_background" in err or "chardata" in err
    assert not (tmp_path / "r" / train.CHECKPOINT).exists()


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
    (out / train.CHECKPOINT).write_bytes(b"PK\x03\x04 truncated")
    err = _one_line_error(capsys, ["--out", out, "--resume", "--no-progress"])
    assert str(out / train.CHECKPOINT) in err


def test_an_existing_run_is_not_overwritten(capsys, tmp_path):
    out = tmp_path / "run"
    assert run(["--dataset", "synthetic", "--epochs", 1, "--out", out] + SMALL) == 0
    before = (out / train.CHECKPOINT).read_bytes()
    assert "already holds a run" in _one_line_error(
        capsys, ["--dataset", "synthetic", "--epochs", 1, "--out", out] + SMALL)
    assert (out / train.CHECKPOINT).read_bytes() == before


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
    good = (out / train.CHECKPOINT).read_bytes()
    calls = {"n": 0}
    real_step = train.Trainer.step

    def step_nan(self, x, beta):
        calls["n"] += 1
        loss, st = real_step(self, x, beta)
        return (loss * np.nan if calls["n"] == 4 else loss), st

    monkeypatch.setattr(train.Trainer, "step", step_nan)
    err = _one_line_error(capsys, ["--out", out, "--resume", "--epochs", 2, "--no-progress"],
                          code=1)
    assert "epoch 2, by batch 4 of 20" in err and "intact" in err
    assert (out / train.CHECKPOINT).read_bytes() == good


def test_cli_runs_as_a_module_and_has_help():
    proc = subprocess.run([sys.executable, "-m", "lvae_np.train", "--help"],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "--warmup-epochs" in proc.stdout and "paper" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "lvae_np.train", "--latent", "1,2",
                           "--hidden", "3"], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


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


def test_device_backend_keeps_data_on_the_device(tmp_path, monkeypatch):
    """A stand-in for CuPy: array_api_strict, whose arrays refuse NumPy-only calls.

    The whole training loop runs on it, so nothing NumPy-only slipped in, and the
    host sees only scalars: conversions to float are counted per batch.
    """
    xs = pytest.importorskip("array_api_strict")
    fake_cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 1))
    monkeypatch.setattr(xs, "cuda", fake_cuda, raising=False)
    monkeypatch.setitem(sys.modules, "cupy", xs)
    monkeypatch.setattr(backend, "_cupy_status", {})
    floats = {"n": 0}
    Array = type(xs.asarray(0.0))
    real_float = Array.__float__

    def counting_float(self):
        floats["n"] += 1
        return real_float(self)

    monkeypatch.setattr(Array, "__float__", counting_float)
    out = tmp_path / "r"
    assert run(["--backend", "cupy", "--dataset", "synthetic", "--epochs", 1,
                "--eval-every", 1, "--out", out] + SMALL) == 0
    cfg = ckpt(out)["meta"]["config"]
    assert cfg["dtype"] == "float32"
    batches = 20
    # One NaN check every 25 batches (here: the epoch's end), the epoch's row, the test
    # metrics: far fewer host syncs than batches.
    assert floats["n"] < batches, floats["n"]


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


def test_evaluate_errors(capsys, tmp_path):
    assert evaluate.main([str(tmp_path / "nowhere"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lvae_np.evaluate: error: no checkpoint") and "\n" not in err
