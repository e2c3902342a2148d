"""Nothing lost at the edges: kills, full and read-only disks, crafted checkpoints, two writers.

One test (or one parametrised family) per defect D1-D10 of the run folder,
and the command lines' common behaviour. A fault ends in a non-zero exit
status and one line on stderr naming the problem, with no traceback, and
leaves every file that was there byte-identical (``status.json`` aside where
training had started: it then says "training", as for a killed process).

Full and read-only disks are simulated at the lowest write points: the
``os.open`` / ``os.fdopen`` / ``os.write`` calls under the folder raise the
real ``OSError`` with ``ENOSPC`` or ``EROFS``, as the kernel would.
"""
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from lvae_np.training import checkpoint, evaluate, plots, runs, train
from lvae_np import data as D
from lvae_np.data import omniglot
from lvae_np.experiments import __main__ as experiments_cli
from lvae_np.training.runlock import RunInUse, RunLock

SMALL = ["--dataset", "synthetic", "--latent", "4,2", "--hidden", "16,8", "--batch-size", "50",
         "--warmup-epochs", "2", "--no-progress"]


def run_train(argv):
    return train.main([str(a) for a in argv])


def files(folder) -> dict:
    """Every file under ``folder``: relative path -> bytes."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def without_status(snapshot: dict) -> dict:
    return {k: v for k, v in snapshot.items() if k != runs.STATUS}


def one_line_error(capsys, prog: str) -> str:
    """The single stderr line of a failed command (no traceback, nothing else)."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
    assert "Traceback" not in err
    return lines[0]


def epochs(run_dir, name=runs.METRICS) -> list:
    text = (Path(run_dir) / name).read_text().splitlines()
    return [int(line.split(",")[0]) for line in text[1:]]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny LVAE trained 1 epoch (the source of copies)."""
    out = tmp_path_factory.mktemp("edges") / "run"
    assert run_train(SMALL + ["--epochs", 1, "--out", out]) == 0
    return out


@pytest.fixture
def run_dir(base, tmp_path):
    """A fresh copy of ``base``."""
    dst = tmp_path / "run"
    shutil.copytree(base, dst)
    return dst


# ----------------------------------------------------------------------------
# Simulated disks
# ----------------------------------------------------------------------------
class _FullFile:
    """A file object whose writes fail as on a full disk."""

    def __init__(self, f):
        self._f = f

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def full_disk(monkeypatch, folder, names=None):
    """Writes to files under ``folder`` fail with ENOSPC (only temporaries of ``names`` if given)."""
    folder, tracked = str(folder), set()
    real_open, real_fdopen, real_write = os.open, os.fdopen, os.write

    def hit(path) -> bool:
        path = os.fspath(path)
        return path.startswith(folder) and (names is None or any(
            os.path.basename(path).startswith(f".{n}.") for n in names))

    def fake_open(path, flags, mode=0o777, *, dir_fd=None):
        fd = real_open(path, flags, mode, dir_fd=dir_fd)
        tracked.discard(fd)
        if flags & (os.O_WRONLY | os.O_RDWR) and hit(path):
            tracked.add(fd)
        return fd

    def fake_fdopen(fd, *args, **kwargs):
        f = real_fdopen(fd, *args, **kwargs)
        return _FullFile(f) if fd in tracked else f

    def fake_write(fd, data):
        if fd in tracked:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "fdopen", fake_fdopen)
    monkeypatch.setattr(os, "write", fake_write)


def read_only(monkeypatch, folder):
    """Every change under ``folder`` fails with EROFS, as on a read-only file system."""
    folder = str(folder)

    def refuse(real, path_arg=0, writes=lambda *a: True):
        def fake(*args, **kwargs):
            path = os.fspath(args[path_arg])
            if path.startswith(folder) and writes(*args):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
            return real(*args, **kwargs)
        return fake

    creating = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC
    monkeypatch.setattr(os, "open", refuse(os.open, writes=lambda p, flags, *a: flags & creating))
    for name in ("mkdir", "unlink", "rmdir", "replace", "rename", "chmod"):
        monkeypatch.setattr(os, name, refuse(getattr(os, name)))


def never_trains(monkeypatch):
    def step(self, x, beta):
        raise AssertionError("a training step ran")
    monkeypatch.setattr(train.Trainer, "step", step)


# ----------------------------------------------------------------------------
# D1: the checkpoint is the single source of truth; the logs follow it
# ----------------------------------------------------------------------------
def test_d1_logs_follow_the_checkpoint_on_every_start(tmp_path, run_dir, capsys):
    # killed before its first checkpoint (it left config.json and status.json "training" at
    # epoch 0), then the same command: epochs once each. (Logs in a folder without a
    # checkpoint are another run's or the user's: a fresh run refuses them, test_edges_files.)
    out = tmp_path / "fresh"
    assert run_train(SMALL + ["--epochs", 2, "--out", out]) == 0
    for name in (runs.CHECKPOINT, runs.METRICS, runs.KL_UNITS):
        (out / name).unlink()
    runs.write_status(out, "training", 0)
    assert run_train(SMALL + ["--epochs", 2, "--out", out]) == 0
    assert epochs(out) == [1, 2] and epochs(out, runs.KL_UNITS) == [1, 2]
    # killed between the checkpoint's rename and the logs': the row is rebuilt from it
    assert run_train(["--out", run_dir, "--resume", "--epochs", 2, "--no-progress"]) == 0
    full = {name: (run_dir / name).read_text() for name in (runs.METRICS, runs.KL_UNITS)}
    for name, text in full.items():
        (run_dir / name).write_text("".join(text.splitlines(keepends=True)[:2]))  # epoch 1
    assert run_train(["--out", run_dir, "--resume", "--epochs", 2, "--no-progress"]) == 0
    assert {name: (run_dir / name).read_text() for name in full} == full
    # epochs logged twice (the old bug) are logged once again
    (run_dir / runs.METRICS).write_text(full[runs.METRICS] + "".join(
        full[runs.METRICS].splitlines(keepends=True)[1:]))
    assert run_train(["--out", run_dir, "--resume", "--epochs", 2, "--no-progress"]) == 0
    assert (run_dir / runs.METRICS).read_text() == full[runs.METRICS]


# ----------------------------------------------------------------------------
# D2, D3: checkpoints checked before any work
# ----------------------------------------------------------------------------
def test_d2_a_checkpoint_of_another_model_is_refused(tmp_path, run_dir, capsys, monkeypatch):
    other = tmp_path / "other"
    assert run_train(SMALL + ["--latent", "3", "--hidden", "8", "--epochs", 1,
                              "--out", other]) == 0
    shutil.copy(other / runs.CHECKPOINT, run_dir / runs.CHECKPOINT)
    before = files(run_dir)
    never_trains(monkeypatch)
    capsys.readouterr()
    assert run_train(["--out", run_dir, "--resume", "--epochs", 2, "--no-progress"]) == 2
    err = one_line_error(capsys, "lvae_np.train")
    assert "not this folder's run" in err and runs.CONFIG in err and "latent" in err
    assert files(run_dir) == before
    # without config.json, the logs of another model give it away
    (run_dir / runs.CONFIG).unlink()
    before = files(run_dir)
    assert run_train(["--out", run_dir, "--resume", "--epochs", 2, "--no-progress"]) == 2
    assert "metrics.csv is not the log of this run's model" in \
        one_line_error(capsys, "lvae_np.train")
    assert files(run_dir) == before


def _craft(path, change):
    ckpt = checkpoint.load(path)
    meta = {k: v for k, v in ckpt["meta"].items() if k not in ("format_version", "adam_t")}
    parts = dict(params=ckpt["params"], state=ckpt["state"], opt_state=ckpt["opt_state"],
                 meta=meta, extra=ckpt["extra"])
    change(parts)
    checkpoint.save(path, **parts)


def _set(key, value, where="meta"):
    def change(parts):
        if where == "config":
            parts["meta"]["config"][key] = value
        elif value is None:
            del parts["meta"][key]
        else:
            parts["meta"][key] = value
    return change


def _reshape_param(parts):
    name = sorted(parts["params"])[0]
    parts["params"][name] = np.zeros((3, 3), np.float32)


def _extra_param(parts):
    for tree in (parts["params"], parts["opt_state"]["m"], parts["opt_state"]["v"]):
        tree["up9.W1"] = np.zeros(2, np.float32)


CRAFTED = {
    "no epoch": (_set("epoch", None), "no 'epoch'"),
    "unknown model": (_set("model", "xvae", "config"), "--model must be one of"),
    "latent as a string": (_set("latent", "4,2", "config"), "--latent must be positive"),
    "wrong shape": (_reshape_param, "the model's is"),
    "another model's parameters": (_extra_param, "names differ"),
    "batch size 0": (_set("batch_size", 0, "config"), "--batch-size must be >= 1, got 0"),
    "bad random state": (_set("rng_state", {"bit_generator": "MT19937", "state": 1}),
                         "random-generator state"),
}


@pytest.mark.parametrize("case", list(CRAFTED))
def test_d3_crafted_checkpoints_give_one_line_on_resume_and_evaluate(case, run_dir, capsys,
                                                                     monkeypatch):
    change, words = CRAFTED[case]
    _craft(run_dir / runs.CHECKPOINT, change)
    before = files(run_dir)
    never_trains(monkeypatch)
    capsys.readouterr()
    assert run_train(["--out", run_dir, "--resume", "--epochs", 2, "--no-progress"]) == 2
    err = one_line_error(capsys, "lvae_np.train")
    assert words in err and str(run_dir / runs.CHECKPOINT) in err
    assert files(run_dir) == before
    if case != "bad random state":  # evaluate draws its own noise
        assert evaluate.main([str(run_dir), "--iw-samples", "0", "--no-progress"]) == 2
        assert words in one_line_error(capsys, "lvae_np.evaluate")
        assert files(run_dir) == before


# ----------------------------------------------------------------------------
# D4: full and read-only disks, --out in the way
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", [runs.CHECKPOINT, runs.METRICS])
def test_d4_a_full_disk_at_the_end_of_an_epoch_loses_nothing(name, run_dir, capsys, monkeypatch):
    before = files(run_dir)
    full_disk(monkeypatch, run_dir, names=[name])
    assert run_train(["--out", run_dir, "--resume", "--epochs", 3, "--no-progress"]) == 1
    err = one_line_error(capsys, "lvae_np.train")
    assert f"{run_dir / name}: No space left on device" in err
    assert "epoch 1 done) is intact; continue with: python -m lvae_np.train --out" in err
    assert without_status(files(run_dir)) == without_status(before)   # no temporaries either
    assert runs.read_status(run_dir) == {"state": "training", "epoch": 1}


def test_d4_ctrl_c_on_a_full_disk_says_so_in_one_line(run_dir, capsys, monkeypatch):
    before = files(run_dir)
    real_step = train.Trainer.step

    def step_then_ctrl_c(self, x, beta):
        self.stop_requested = True
        return real_step(self, x, beta)

    monkeypatch.setattr(train.Trainer, "step", step_then_ctrl_c)
    full_disk(monkeypatch, run_dir, names=[runs.CHECKPOINT])
    assert run_train(["--out", run_dir, "--resume", "--epochs", 3, "--no-progress"]) == 1
    assert "No space left on device" in one_line_error(capsys, "lvae_np.train")
    assert without_status(files(run_dir)) == without_status(before)


def test_d4_a_fresh_run_on_a_full_disk_leaves_nothing(tmp_path, capsys, monkeypatch):
    full_disk(monkeypatch, tmp_path)
    assert run_train(SMALL + ["--epochs", 1, "--out", tmp_path / "runs" / "run"]) == 1
    assert "No space left on device; the disk is full" in one_line_error(capsys, "lvae_np.train")
    assert list(tmp_path.iterdir()) == []          # no folder, no 0-byte config.json


def test_d4_a_read_only_run_folder_fails_before_training(run_dir, capsys, monkeypatch):
    before = files(run_dir)
    never_trains(monkeypatch)
    read_only(monkeypatch, run_dir)
    assert run_train(["--out", run_dir, "--resume", "--epochs", 2, "--no-progress"]) == 1
    assert "Read-only file system; the file system is read-only" in \
        one_line_error(capsys, "lvae_np.train")
    assert files(run_dir) == before


@pytest.mark.parametrize("fault", [full_disk, read_only])
def test_d4_evaluate_prints_its_result_before_a_failed_write(fault, run_dir, capsys,
                                                             monkeypatch):
    before = files(run_dir)
    fault(monkeypatch, run_dir)
    assert evaluate.main([str(run_dir), "--iw-samples", "3", "--json", "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["iw_samples"] == 3            # the result is not lost
    err = captured.err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert err.startswith("lvae_np.evaluate: error: the result above was not saved: "
                          f"{run_dir / 'eval-test-k3.json'}")
    assert files(run_dir) == before


def test_d4_an_out_or_runs_dir_that_is_a_file_is_refused_first(tmp_path, capsys, monkeypatch):
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    monkeypatch.setattr(D, "load_dataset", lambda *a, **k: pytest.fail("data loaded"))
    for out in (a_file, a_file / "run"):
        assert run_train(SMALL + ["--epochs", 1, "--out", out]) == 2
        assert f"{a_file} is a file, not a folder" in one_line_error(capsys, "lvae_np.train")
    assert experiments_cli.main(["mnist-depth", "--runs-dir", str(a_file), "--no-progress"]) == 2
    assert "is a file, not a folder" in one_line_error(capsys, "lvae_np.experiments")
    assert plots.main([str(tmp_path), "--out", str(a_file)]) == 2
    assert "is a file, not a folder" in one_line_error(capsys, "lvae_np.plots")
    assert a_file.read_text() == "mine" and sorted(tmp_path.iterdir()) == [a_file]


# ----------------------------------------------------------------------------
# D5, D6: a second Ctrl-C mid-write; temporaries of killed writes
# ----------------------------------------------------------------------------
def test_d5_a_second_ctrl_c_during_the_checkpoint_write_exits_130(run_dir, capsys, monkeypatch):
    before = files(run_dir)
    real_step, real_close = train.Trainer.step, zipfile._ZipWriteFile.close

    def step_then_ctrl_c(self, x, beta):
        os.kill(os.getpid(), signal.SIGINT)  # the first: stop at the next batch boundary
        return real_step(self, x, beta)

    def close_after_ctrl_c(self):
        # the second, while numpy.savez closes an array's entry: the ZIP file's own
        # clean-up then fails ("Can't close the ZIP file while there is an open
        # writing handle"), and that must not hide the interrupt
        os.kill(os.getpid(), signal.SIGINT)
        return real_close(self)

    monkeypatch.setattr(train.Trainer, "step", step_then_ctrl_c)
    monkeypatch.setattr(zipfile._ZipWriteFile, "close", close_after_ctrl_c)
    assert run_train(["--out", run_dir, "--resume", "--epochs", 3, "--no-progress"]) == 130
    err = one_line_error(capsys, "lvae_np.train")
    assert "stopped at once by a second signal" in err and "epoch 1 done) is intact" in err
    assert without_status(files(run_dir)) == without_status(before)


def test_d6_temporaries_of_killed_writes_are_removed_on_start(run_dir, capsys):
    stale = [run_dir / ".checkpoint.npz.k1ll3d.tmp", run_dir / ".metrics.csv.abc_12.tmp"]
    for path in stale:
        path.write_bytes(b"x" * 1000)
    keep = [run_dir / ".other.k1ll3d.tmp", run_dir / "notes.txt"]
    for path in keep:
        path.write_text("mine")
    assert run_train(["--out", run_dir, "--resume", "--epochs", 2, "--no-progress"]) == 0
    assert "removed 2 temporary file(s) of interrupted writes" in capsys.readouterr().out
    assert not any(p.exists() for p in stale) and all(p.read_text() == "mine" for p in keep)


# ----------------------------------------------------------------------------
# D7, D8: one trainer per run folder
# ----------------------------------------------------------------------------
RUNNER = """
import sys
from lvae_np import experiments as E
from lvae_np.experiments.__main__ import main
E.EXPERIMENTS["tiny"] = E.Experiment("tiny", "a test", (E.RunSpec("synthetic", "lvae", (4,), (16,)),))
sys.exit(main(["tiny", "--runs-dir", sys.argv[1], "--out", sys.argv[2], "--epochs", "100000",
               "--warmup-epochs", "2", "--batch-size", "50", "--no-eval", "--no-progress"]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal: Linux")
def test_d7_a_killed_runner_takes_its_training_with_it(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    runner = subprocess.Popen([sys.executable, "-c", RUNNER, str(tmp_path / "runs"),
                               str(tmp_path / "out")], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    run_dir = tmp_path / "runs" / "synthetic-lvae-L1-bn-wu-z4-h16"
    deadline = time.monotonic() + 60
    while not (run_dir / runs.CHECKPOINT).exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # the training child is under way once it has a checkpoint
    assert (run_dir / runs.CHECKPOINT).exists(), "the training never started"
    trainer_pid = int((run_dir / runs.LOCK).read_text().split()[0])
    assert trainer_pid != runner.pid
    runner.kill()
    runner.wait()
    lock = RunLock(run_dir)
    while time.monotonic() < deadline:
        try:
            lock.acquire()      # free once the orphaned training has stopped
            break
        except RunInUse:
            time.sleep(0.05)
    assert lock.fd is not None, "the training outlived its runner"
    lock.release()
    # it stopped as on Ctrl-C, at a batch boundary, with its checkpoint written
    assert runs.read_status(run_dir)["state"] == "interrupted"


def test_d8_a_second_trainer_on_the_same_folder_is_refused(run_dir, capsys, monkeypatch):
    seen = []
    real_step = train.Trainer.step

    def step(self, x, beta):
        if not seen:  # while training, the folder is locked by this process
            with pytest.raises(RunInUse, match=f"process {os.getpid()}"):
                RunLock(self.run_dir).acquire()
            seen.append(True)
        return real_step(self, x, beta)

    monkeypatch.setattr(train.Trainer, "step", step)
    assert run_train(["--out", run_dir, "--resume", "--epochs", 2, "--no-progress"]) == 0
    assert seen and not (run_dir / runs.LOCK).exists()
    before = files(run_dir)
    capsys.readouterr()
    with RunLock(run_dir):  # another lvae_np.train
        for argv in (["--resume", "--epochs", 3], SMALL + ["--epochs", 1]):
            assert run_train(argv + ["--out", run_dir, "--no-progress"]) == 2
            err = one_line_error(capsys, "lvae_np.train")
            assert f"{run_dir} is in use by another lvae_np.train (process {os.getpid()}" in err
        assert files(run_dir) == before | {runs.LOCK: (run_dir / runs.LOCK).read_bytes()}
    assert files(run_dir) == before


# ----------------------------------------------------------------------------
# D9: messages that name the option or file
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("argv,status,words", [
    (["--seed", "-1"], 2, "--seed must be >= 0, got -1"),
    (["--max-grad-norm", "nan"], 2, "--max-grad-norm must be >= 0 (a finite number"),
    (["--lr", "inf"], 2, "--lr must be > 0 (a finite number), got inf"),
    (["--epochs", "0"], 2, "--epochs 0 trains nothing"),
    (["--hidden", "1000000000000000,16"], 1, "out of memory"),
])
def test_d9_bad_settings_name_the_option(argv, status, words, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_train(SMALL + ["--epochs", 1, "--out", out] + argv) == status
    err = one_line_error(capsys, "lvae_np.train")
    assert words in err
    assert status == 2 or "--hidden" in err
    assert not out.exists()


def test_d9_a_garbage_log_on_resume_names_the_file_and_line(run_dir, capsys, monkeypatch):
    with open(run_dir / runs.METRICS, "a") as f:
        f.write("two,0.5\n")
    before = files(run_dir)
    never_trains(monkeypatch)
    assert run_train(["--out", run_dir, "--resume", "--epochs", 2, "--no-progress"]) == 2
    err = one_line_error(capsys, "lvae_np.train")
    assert f"{run_dir / runs.METRICS}, line 3: epoch 'two' is not an epoch number" in err
    assert files(run_dir) == before


# ----------------------------------------------------------------------------
# D10: the derived OMNIGLOT cache is checked before use
# ----------------------------------------------------------------------------
def test_d10_a_hand_made_omniglot_cache_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv(D.ENV_VAR, str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    cache = D.cache_dir() / "omniglot" / D.OMNIGLOT_CACHE
    cache.parent.mkdir(parents=True)
    fake = np.random.default_rng(0).random((10, 784)).astype(np.float32)
    sources = ",".join(D.OMNIGLOT_IMAGES_SHA256[n] for n in D.OMNIGLOT_ARRAYS)
    np.savez(cache, train=fake, test=fake[:3], sources=np.array(sources),
             content=np.array(omniglot.cache_digest(fake, fake[:3], sources)))
    before = cache.read_bytes()
    out = tmp_path / "run"
    assert run_train(["--dataset", "omniglot", "--epochs", 1, "--out", out, "--no-progress"]) == 2
    err = one_line_error(capsys, "lvae_np.train")
    assert f"{cache} is not a usable OMNIGLOT cache (10 and 3 images, not 24345 and 8115)" in err
    assert cache.read_bytes() == before and not out.exists()


# ----------------------------------------------------------------------------
# The command lines, one way
# ----------------------------------------------------------------------------
def test_the_run_remembers_its_backend_and_data_dir(tmp_path, capsys, monkeypatch):
    out, data_dir = tmp_path / "run", tmp_path / "data"
    data_dir.mkdir()
    real_step = train.Trainer.step

    def step_then_ctrl_c(self, x, beta):
        self.stop_requested = True
        return real_step(self, x, beta)

    monkeypatch.setattr(train.Trainer, "step", step_then_ctrl_c)
    assert run_train(SMALL + ["--epochs", 2, "--out", out, "--backend", "numpy",
                              "--data-dir", data_dir]) == 130
    err = capsys.readouterr().err
    assert f"python -m lvae_np.train --out {out} --resume --backend numpy --data-dir " \
           f"{data_dir}" in err
    config = checkpoint.load_meta(out / runs.CHECKPOINT)["config"]
    assert (config["backend"], config["data_dir"]) == ("numpy", str(data_dir))
    asked, real_get_backend = [], train.get_backend

    def spy(name, **kwargs):
        asked.append(name)
        return real_get_backend(name, **kwargs)

    monkeypatch.setattr(train.Trainer, "step", real_step)
    monkeypatch.setattr(train, "get_backend", spy)
    assert run_train(["--out", out, "--resume", "--no-progress"]) == 0
    assert asked == ["numpy"]                 # not "auto": the run's own backend


def test_plots_and_evaluate_default_to_the_same_batch_norm_statistics(base, monkeypatch):
    # Both follow the run's --bn-stats unless told otherwise: recollect for this run.
    assert evaluate.build_parser().get_default("bn") is None
    asked = {}
    monkeypatch.setattr(plots, "write_all", lambda *a, **kw: asked.update(kw) or [])
    assert plots.main([str(base)]) == 0 and asked["bn"] is None
    run = plots.load_model(base)
    assert run.bn == "recollect" == run.config.bn_stats
    assert evaluate.evaluate_run(base, iw_samples=0, progress=False, write=False)["bn"] \
        == "recollect"
    assert "re-collected over the training set" in plots.plot_samples(run, n=4).axes[0].get_title()


def test_a_closed_stdout_ends_quietly(base, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    run_dir = tmp_path / "run"
    shutil.copytree(base, run_dir)
    for cmd in (["lvae_np.evaluate", str(run_dir), "--iw-samples", "2", "--json",
                 "--no-progress"],
                ["lvae_np.experiments", "--list", "--runs-dir", str(tmp_path / "none")]):
        proc = subprocess.Popen([sys.executable, "-m", *cmd], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env)
        proc.stdout.close()           # `| head` that has read what it wanted
        err = proc.stderr.read().decode()
        assert proc.wait() == 141 and err == "", err
    assert json.loads((run_dir / "eval-test-k2.json").read_text())["iw_samples"] == 2


def test_a_loss_that_diverges_before_any_checkpoint_says_so(tmp_path, capsys, monkeypatch):
    real_step = train.Trainer.step

    def nan_step(self, x, beta):
        loss, st = real_step(self, x, beta)
        return loss * np.nan, st

    monkeypatch.setattr(train.Trainer, "step", nan_step)
    assert run_train(SMALL + ["--epochs", 1, "--out", tmp_path / "run"]) == 1
    err = one_line_error(capsys, "lvae_np.train")
    assert "no checkpoint was written yet" in err and "none yet" not in err


def test_one_name_for_one_option_in_help_texts():
    parser = experiments_cli.build_parser()
    assert parser.parse_args(["--limit", "7"]).eval_limit == 7
    assert parser.parse_args(["--eval-limit", "7"]).eval_limit == 7  # the old name still works
    for p in (parser, train.build_parser(), evaluate.build_parser()):
        assert "L_K" not in p.format_help()
