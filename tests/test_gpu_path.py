"""The GPU path on the CuPy stand-in: the command lines, the traffic between host and device.

The stand-in (tests/cupy_standin) has the real CuPy's names and signatures
(13 or 14) and refuses what CuPy refuses; it also counts host-to-device and
device-to-host copies and host syncs, which pins the traffic here:

* a training step, after setup: no device-to-host copy, no sync, and only the
  batch's indices go over (noise and binarisation are drawn on the device);
* a checkpoint: one copy per flat buffer, not one per parameter array;
* an L_k image: no noise copied from the host.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lvae_np import data
from lvae_np.training import checkpoint, metrics
from lvae_np.backend import get_backend, to_numpy
from lvae_np.bounds import log_likelihood
from lvae_np.training.config import TrainConfig
from lvae_np.training.trainer import Position, Trainer

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
SMALL = ["--latent", "4,2", "--hidden", "16,8", "--batch-size", "50", "--no-progress"]
BATCH = 50


def _cli(module, args, version):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS / "cupy_standin"), str(ROOT)]),
               LVAE_NP_CUPY_STANDIN=str(version))
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=600, cwd=ROOT)


@pytest.mark.slow
@pytest.mark.parametrize("version", [13, 14])
def test_train_resume_evaluate_through_the_command_lines_on_cupy(tmp_path, version):
    out = tmp_path / "run"
    first = _cli("lvae_np.train", ["--backend", "cupy", "--dataset", "synthetic", "--epochs", 1,
                                   "--out", out, *SMALL], version)
    assert first.returncode == 0, first.stderr
    assert "backend cupy" in first.stdout and "NumPy" not in first.stderr   # no fallback
    resumed = _cli("lvae_np.train", ["--out", out, "--resume", "--epochs", 2, "--backend",
                                     "cupy", "--no-progress"], version)
    assert resumed.returncode == 0, resumed.stderr
    assert "backend cupy" in resumed.stdout and "NumPy" not in resumed.stderr
    assert checkpoint.load(out / "checkpoint.npz")["meta"]["rng_state"]["kind"] == "device"
    ev = _cli("lvae_np.evaluate", [out, "--backend", "cupy", "--iw-samples", 20,
                                   "--no-progress"], version)
    assert ev.returncode == 0, ev.stderr
    result = json.loads(next(out.glob("eval-test-k20*.json")).read_text())
    assert result["backend"] == "cupy" and np.isfinite(result["lk"]) and result["epoch"] == 2


def _trainer(tmp_path, noise="device", **kw):
    cfg = TrainConfig(dataset="synthetic", latent=(4, 2), hidden=(16, 8), batch_size=BATCH,
                      epochs=1, warmup_epochs=2, backend="cupy", noise=noise, **kw)
    be = get_backend("cupy", dtype="float32", seed=cfg.seed, noise=noise)
    assert be.name == "cupy"
    trainer = Trainer(cfg, tmp_path, be, data.load_dataset("synthetic", progress=False),
                      progress=False)
    trainer.fresh()
    return trainer


def _steps(trainer, batches, epoch=0):
    order = trainer.batch_order(epoch)
    for b in batches:
        x = trainer.batch_data(order[b], epoch, b)
        loss, st = trainer.step(x, trainer.beta(epoch, b, len(order)))
        metrics.accumulate(trainer.pos.sums, st, loss, x.shape[0])
        trainer.pos.batch = b + 1
    return loss


@pytest.mark.gpu
@pytest.mark.parametrize("iw_samples,clip", [(1, 0.0), (3, 4.0)])
def test_a_training_step_makes_no_sync_and_copies_only_the_batch_indices(
        standin, tmp_path, iw_samples, clip):
    from cupy._standin import count_traffic

    trainer = _trainer(tmp_path, iw_samples=iw_samples, max_grad_norm=clip)
    trainer.be.noise.start((0,))
    _steps(trainer, range(2))                       # warm: nothing left to set up
    with count_traffic() as t:
        _steps(trainer, range(2, 5))
    assert (t.d2h_copies, t.syncs) == (0, 0), dict(t.reasons)
    assert t.h2d_copies <= 3 and t.h2d_bytes <= 3 * BATCH * 8, dict(t.reasons)


@pytest.mark.gpu
def test_host_noise_copies_the_noise_and_gives_numpys_numbers(standin, tmp_path):
    from cupy._standin import count_traffic

    trainer = _trainer(tmp_path, noise="host")
    with count_traffic() as t:
        loss = _steps(trainer, range(1))
    assert t.h2d_bytes > BATCH * 64 * 4     # the binarisation's uniforms came over
    cfg = trainer.cfg
    ref = Trainer(cfg, tmp_path / "np", get_backend("numpy", seed=cfg.seed),
                  trainer.ds, progress=False)
    ref.fresh()
    ref_loss = _steps(ref, range(1))
    np.testing.assert_allclose(float(to_numpy(loss)), float(ref_loss), rtol=1e-5)


@pytest.mark.gpu
def test_a_checkpoint_is_one_copy_per_buffer_and_resumes_mid_epoch(standin, tmp_path):
    from cupy._standin import count_traffic

    trainer = _trainer(tmp_path)
    trainer.be.noise.start((0,))
    trainer.pos = Position(0)
    _steps(trainer, range(3))
    with count_traffic() as t:
        trainer.save()
    # parameters, Adam's two moments, the BN state, the running sums (float32 ones: one)
    assert t.d2h_copies <= 5, dict(t.reasons)
    assert len(trainer.params) > 20           # ... instead of one per array
    copy = Trainer(trainer.cfg, tmp_path, get_backend("cupy", seed=trainer.cfg.seed),
                   trainer.ds, progress=False)
    with count_traffic() as t:
        copy.restore(checkpoint.load(tmp_path / "checkpoint.npz"))
    assert t.h2d_copies <= 4 + len(copy.pos.sums), dict(t.reasons)
    # the next step is the same from the original and from the copy: the device
    # noise was reseeded and replayed to where the checkpoint stood
    losses = [float(to_numpy(_steps(tr, [3]))) for tr in (trainer, copy)]
    assert losses[0] == losses[1]
    for k in trainer.params:
        np.testing.assert_array_equal(to_numpy(trainer.params[k]), to_numpy(copy.params[k]))


@pytest.mark.gpu
def test_an_lk_image_copies_no_noise_from_the_host(standin, tmp_path):
    from cupy._standin import count_traffic

    trainer = _trainer(tmp_path)
    x = trainer.test_x[:1]
    log_likelihood(trainer.model, trainer.params, trainer.state, x, 50)   # warm
    with count_traffic() as t:
        lk = log_likelihood(trainer.model, trainer.params, trainer.state, x, 500)
    assert t.h2d_bytes <= 64, dict(t.reasons)      # 500 x 6 normals would be 12 kB
    assert t.d2h_copies == 0 and lk.shape == (1,)


@pytest.mark.slow
def test_the_gpu_check_runs_on_the_standin_and_writes_its_json(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS / "cupy_standin"), str(ROOT)]),
               LVAE_NP_CUPY_STANDIN="14")
    args = ["--dataset", "synthetic", "--latent", "4,2", "--hidden", "16,8", "--batch-size",
            "50", "--lk-images", "5", "--iw-samples", "20", "--out", str(out)]
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), *args],
                          env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["ok"] and report["parity"]["grad_max_rel_diff"] <= 1e-9
    assert report["resume"]["ok"] and report["epoch"]["steps"] == 20
    again = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), *args],
                           env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert again.returncode == 2 and "exists" in again.stderr   # never overwritten by default


@pytest.mark.slow
def test_a_cupy_run_resumed_on_numpy_goes_on_with_a_new_stream_and_says_so(tmp_path):
    out = tmp_path / "run"
    first = _cli("lvae_np.train", ["--backend", "cupy", "--dataset", "synthetic", "--epochs", 1,
                                   "--out", out, *SMALL], 14)
    assert first.returncode == 0, first.stderr
    moved = _cli("lvae_np.train", ["--out", out, "--resume", "--epochs", 2, "--backend",
                                   "numpy", "--no-progress"], 14)
    assert moved.returncode == 0, moved.stderr
    assert "drew its noise on the device, this run on the host" in moved.stdout
    assert "backend numpy" in moved.stdout
    assert checkpoint.load(out / "checkpoint.npz")["meta"]["epoch"] == 2
