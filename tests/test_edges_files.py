"""Nothing lost, round two: files a command did not make, bombs, and wrong diagnoses.

In the style of ``test_edges``: every fault ends in a non-zero exit status
and one line on stderr naming the file or option and what to do, with no
traceback, and leaves the files that were there byte-identical.

* a fresh ``train --out DIR`` never replaces run files it did not make;
* data and checkpoint "bombs" (a small file that claims or expands to far
  more) are refused as corrupt before they are expanded or allocated, and a
  checkpoint of random bytes is "corrupt", never a hint at ``allow_pickle``;
* smaller edges: ``~user`` data folders, CSV logs plots cannot read,
  gradcheck's ``--seed`` and ``--tol``, a refused runner's empty folders,
  out-of-memory hints that name the option sizing the allocation, a run
  that dies of it (status "failed"), ``--out ""``, and a FIFO for a log.
"""
import io
import os
import signal
import socket
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from lvae_np import bounds
from lvae_np.training import evaluate, plots, runs, train
from lvae_np import data as D
from lvae_np import experiments as E
from lvae_np.experiments import __main__ as experiments_cli
from lvae_np.experiments import locks
from lvae_np.gradcheck import __main__ as gradcheck_cli
from lvae_np.models import Model

# the helpers and fixtures of test_edges, whose style this file follows
from test_edges import (SMALL, base, epochs, files, never_trains, one_line_error,  # noqa: F401,E402
                        run_dir, run_train)

NO_USER = "~no_such_user_of_lvae_np"


def resume(run_dir):
    return run_train(["--out", run_dir, "--resume", "--epochs", 2, "--no-progress"])


# ----------------------------------------------------------------------------
# 6: a fresh run never replaces files it did not make
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", [runs.CONFIG, runs.METRICS, runs.KL_UNITS, runs.STATUS,
                                  "eval-test-k5000.json"])
def test_a_fresh_run_refuses_run_files_it_did_not_make(name, tmp_path, capsys, monkeypatch):
    out = tmp_path / "mine"
    out.mkdir()
    (out / name).write_text("the user's own\n")
    (out / "notes.txt").write_text("mine too\n")
    before = files(out)
    never_trains(monkeypatch)
    assert run_train(SMALL + ["--epochs", 1, "--out", out]) == 2
    err = one_line_error(capsys, "lvae_np.train")
    assert f"{out / name} would be replaced by a fresh run" in err
    assert "choose another --out, or move them away" in err
    assert files(out) == before


def test_a_run_whose_checkpoint_was_moved_keeps_its_history(run_dir, capsys, monkeypatch):
    (run_dir / runs.CHECKPOINT).rename(run_dir.parent / "moved.npz")
    before = files(run_dir)
    never_trains(monkeypatch)
    assert run_train(SMALL + ["--epochs", 1, "--out", run_dir]) == 2
    err = one_line_error(capsys, "lvae_np.train")
    assert f"{run_dir / runs.METRICS} (and 3 more run file(s)) would be replaced" in err
    assert "put it back and add --resume" in err
    assert files(run_dir) == before


def test_what_a_start_left_and_a_runners_log_are_not_in_the_way(tmp_path, capsys, monkeypatch):
    # the remains of a fresh start that died of memory before its first epoch...
    out = tmp_path / "run"
    out.mkdir()
    (out / "train.log").write_text("==> lvae_np.experiments: python -m lvae_np.train ...\n")

    def oom(self, x, beta):
        raise MemoryError("Unable to allocate 64.0 GiB for an array")

    monkeypatch.setattr(train.Trainer, "step", oom)
    argv = SMALL + ["--epochs", 1, "--iw-samples", 2, "--out", out]
    assert run_train(argv) == 1
    err = one_line_error(capsys, "lvae_np.train")
    assert "out of memory (Unable to allocate 64.0 GiB" in err and "--iw-samples" in err
    status = runs.read_status(out)
    assert status["state"] == "failed" and status["epoch"] == 0
    assert "out of memory" in status["reason"] and "--iw-samples" in status["reason"]
    # ... are replaced by the same command run again; the runner's log is kept
    monkeypatch.undo()
    assert run_train(argv) == 0
    assert epochs(out) == [1] and runs.read_status(out)["state"] == "done"
    assert (out / "train.log").read_text().startswith("==> lvae_np.experiments")


def test_a_run_that_diverged_in_its_first_epoch_can_be_started_again(tmp_path, capsys,
                                                                      monkeypatch):
    real_step = train.Trainer.step

    def nan_step(self, x, beta):
        loss, st = real_step(self, x, beta)
        return loss * np.nan, st

    out = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(train.Trainer, "step", nan_step)
        assert run_train(SMALL + ["--epochs", 1, "--out", out]) == 1
    assert runs.read_status(out) == {"state": "diverged", "epoch": 1}
    capsys.readouterr()
    assert run_train(SMALL + ["--epochs", 1, "--lr", "0.001", "--out", out]) == 0
    assert epochs(out) == [1]


# ----------------------------------------------------------------------------
# 7: data and checkpoint bombs, and wrong diagnoses
# ----------------------------------------------------------------------------
def gzip_of_zeros(path, size: int) -> Path:
    """A gzip file of ``size`` zero bytes, written in pieces (a few hundred kB on disk)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    packer, chunk = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS), bytes(1 << 20)
    with open(path, "wb") as f:
        for _ in range(size >> 20):
            f.write(packer.compress(chunk))
        f.write(packer.flush())
    return path


def test_a_gzip_bomb_stops_at_the_expected_size(tmp_path, capsys, monkeypatch):
    bomb = gzip_of_zeros(tmp_path / "data" / "mnist" / (D.MNIST_FILES["train"] + ".gz"),
                         160 << 20)
    out = tmp_path / "run"
    tracemalloc.start()
    try:
        status = run_train(["--dataset", "mnist", "--data-dir", tmp_path / "data", "--epochs",
                            1, "--out", out, "--no-progress"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert status == 2
    err = one_line_error(capsys, "lvae_np.train")
    assert f"{bomb}: corrupt file: its gzip data expands past the 47040016 bytes" in err
    assert "out of memory" not in err
    assert peak < 120 << 20          # at most the expected 47 MB (and a copy), not 160 MB
    assert not out.exists()


def test_a_truncated_omniglot_array_file_is_corrupt(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(D.ENV_VAR, raising=False)
    folder = tmp_path / "data" / "omniglot"
    folder.mkdir(parents=True)
    for name in D.OMNIGLOT_ARRAYS:
        buf = io.BytesIO()
        np.savez_compressed(buf, images=np.ones((3, 20, 105, 105), bool))
        (folder / name).write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    before = files(tmp_path / "data")
    out = tmp_path / "run"
    assert run_train(["--dataset", "omniglot", "--data-dir", tmp_path / "data", "--epochs", 1,
                      "--out", out, "--no-progress"]) == 2
    err = one_line_error(capsys, "lvae_np.train")
    assert f"{folder / D.OMNIGLOT_ARRAYS[0]}: corrupt file" in err
    assert files(tmp_path / "data") == before and not out.exists()


def add_member(checkpoint_path, name: str, shape, data: bytes, *, compress: bool = False,
               repeat: int = 1) -> None:
    """Append an array entry to a checkpoint: a .npy header for ``shape`` (float64), then
    ``data`` written ``repeat`` times (claims and contents may disagree on purpose)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": tuple(shape)})
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(checkpoint_path, "a", compression=method) as archive:
        with archive.open(name + ".npy", "w", force_zip64=True) as f:
            f.write(header.getvalue())          # the magic string and the header
            for _ in range(repeat):
                f.write(data)


def refused_by_evaluate_and_resume(run_dir, capsys, monkeypatch) -> list:
    """Both commands' one-line errors; neither trains nor changes a file."""
    before = files(run_dir)
    never_trains(monkeypatch)
    capsys.readouterr()
    assert evaluate.main([str(run_dir), "--iw-samples", "0", "--no-progress"]) == 2
    errors = [one_line_error(capsys, "lvae_np.evaluate")]
    assert resume(run_dir) == 2
    errors.append(one_line_error(capsys, "lvae_np.train"))
    assert files(run_dir) == before
    return errors


def test_a_checkpoint_holding_an_array_no_config_wants_is_refused_unread(run_dir, capsys,
                                                                          monkeypatch):
    path = run_dir / runs.CHECKPOINT
    add_member(path, "extra/junk", (64 << 17,), bytes(1 << 20), compress=True, repeat=64)
    assert path.stat().st_size < 2 << 20                   # 64 MiB of zeros in a small file
    tracemalloc.start()
    try:
        errors = refused_by_evaluate_and_resume(run_dir, capsys, monkeypatch)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    for err in errors:
        assert f"{path} is corrupt or not a checkpoint of this run: it holds an array " \
               "extra/junk (float64 (8388608,))" in err
    assert peak < 48 << 20                                  # the 64 MiB were never read


def test_a_checkpoint_header_claiming_a_huge_array_is_corrupt_not_out_of_memory(
        run_dir, capsys, monkeypatch):
    path = run_dir / runs.CHECKPOINT
    add_member(path, "extra/huge", (200000, 200000), bytes(80))
    for err in refused_by_evaluate_and_resume(run_dir, capsys, monkeypatch):
        assert f"{path} is a corrupt file, not a readable checkpoint" in err
        assert "claims float64 (200000, 200000)" in err and "out of memory" not in err


def test_a_checkpoint_of_random_bytes_is_corrupt_and_pickle_is_never_suggested(
        run_dir, capsys, monkeypatch):
    path = run_dir / runs.CHECKPOINT
    path.write_bytes(np.random.default_rng(0).bytes(5000))
    for err in refused_by_evaluate_and_resume(run_dir, capsys, monkeypatch):
        assert f"{path} is a corrupt file, not a readable checkpoint" in err
        assert "pickle" not in err.lower()


# ----------------------------------------------------------------------------
# 8: smaller edges
# ----------------------------------------------------------------------------
def test_a_data_folder_of_an_unknown_user_is_one_line(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    argv = ["--dataset", "mnist", "--epochs", 1, "--out", out, "--no-progress"]
    assert run_train(argv + ["--data-dir", f"{NO_USER}/data"]) == 2
    err = one_line_error(capsys, "lvae_np.train")
    assert f"{NO_USER}/data (from --data-dir)" in err and "full path" in err
    monkeypatch.setenv(D.ENV_VAR, NO_USER)
    assert run_train(argv) == 2
    assert f"(from {D.ENV_VAR})" in one_line_error(capsys, "lvae_np.train")
    assert not out.exists()


@pytest.mark.parametrize("content,words", [
    ("epoch,train_elbo\n1," + "9" * (200 << 10) + "\n", "is malformed (field larger than"),
    (b"epoch,train_elbo\n1,-90\xff\n", "is malformed: not UTF-8 text"),
])
def test_plots_names_a_log_it_cannot_read(content, words, tmp_path, capsys):
    path = tmp_path / runs.METRICS
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    assert plots.main([str(tmp_path)]) == 2
    assert f"{path} {words}" in one_line_error(capsys, "lvae_np.plots")


@pytest.mark.parametrize("argv,words", [
    (["--seed", "-1"], "seed must be an integer >= 0, got -1"),
    (["--tol", "nan"], "tol must be a finite number > 0, got 'nan'"),
    (["--tol", "-1"], "tol must be a finite number > 0, got '-1'"),
    (["--tol", "inf"], "tol must be a finite number > 0, got 'inf'"),
    (["--tol", "0"], "tol must be a finite number > 0, got '0'"),
])
def test_gradcheck_refuses_a_negative_seed_and_a_tolerance_that_decides_nothing(argv, words,
                                                                                capsys):
    assert gradcheck_cli.main(["dense"] + argv) == 2
    assert words in one_line_error(capsys, "lvae_np.gradcheck")
    assert gradcheck_cli.main(["dense", "--grade"] + argv) == 2
    assert words in one_line_error(capsys, "lvae_np.gradcheck")


def test_a_refused_runner_leaves_no_empty_run_folders(tmp_path, capsys, monkeypatch):
    specs = (E.RunSpec("synthetic", "lvae", (4,), (16,)),
             E.RunSpec("synthetic", "lvae", (3,), (8,)))
    monkeypatch.setitem(E.EXPERIMENTS, "tiny2", E.Experiment("tiny2", "a test", specs))
    runs_dir = tmp_path / "runs"
    busy = runs_dir / specs[1].run_id()
    busy.mkdir(parents=True)
    (busy / locks.LOCK).write_text(f"{os.getpid()} {socket.gethostname()}\n")  # a live runner
    before = files(runs_dir)
    assert experiments_cli.main(["tiny2", "--runs-dir", str(runs_dir), "--epochs", "1",
                                 "--no-eval", "--no-progress"]) == 2
    assert "is in use by another lvae_np.experiments" in \
        one_line_error(capsys, "lvae_np.experiments")
    assert sorted(p.name for p in runs_dir.iterdir()) == [busy.name]   # no empty folder
    assert files(runs_dir) == before


def test_evaluate_names_the_option_that_sized_the_allocation(run_dir, capsys, monkeypatch):
    def oom(*args, **kwargs):
        raise MemoryError("Unable to allocate 80.0 GiB for an array with shape (10000000000,)")

    with monkeypatch.context() as m:
        m.setattr(bounds, "log_likelihood", oom)
        assert evaluate.main([str(run_dir), "--iw-samples", "5", "--no-progress"]) == 1
        err = one_line_error(capsys, "lvae_np.evaluate")
        assert err.endswith("; choose a smaller --iw-samples") and "Unable to allocate" in err
    real_forward = Model.forward

    def forward(self, *args, **kwargs):
        if kwargs.get("k", 1) > 1:   # the passes of summarize: au-samples x batch-size rows
            oom()
        return real_forward(self, *args, **kwargs)

    monkeypatch.setattr(Model, "forward", forward)
    assert evaluate.main([str(run_dir), "--iw-samples", "0", "--au-samples", "3",
                          "--no-progress"]) == 1
    assert one_line_error(capsys, "lvae_np.evaluate").endswith(
        "; choose a smaller --au-samples or --batch-size")


def test_train_names_the_option_of_its_test_estimate(tmp_path, capsys, monkeypatch):
    def oom(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(bounds, "log_likelihood", oom)
    out = tmp_path / "run"
    assert run_train(SMALL + ["--epochs", 1, "--eval-iw-samples", 3, "--out", out]) == 1
    err = one_line_error(capsys, "lvae_np.train")
    assert "choose a smaller --eval-iw-samples" in err and "--batch-size" not in err
    assert runs.read_status(out)["state"] == "failed"


def test_an_empty_out_is_refused(tmp_path, base, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_train(SMALL + ["--epochs", 1, "--out", ""]) == 2
    assert "--out: an empty path would mean the current folder" in \
        one_line_error(capsys, "lvae_np.train")
    assert plots.main([str(base), "--out", ""]) == 2
    assert "an empty path would mean the current folder" in \
        one_line_error(capsys, "lvae_np.plots")
    assert experiments_cli.main(["mnist-depth", "--runs-dir", "", "--no-progress"]) == 2
    assert "--runs-dir: an empty path" in one_line_error(capsys, "lvae_np.experiments")
    assert list(tmp_path.iterdir()) == []


class Hung(BaseException):
    """Raised by the alarm when a command blocks (on the original code: opening a FIFO)."""


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs: POSIX")
@pytest.mark.parametrize("name", [runs.METRICS, runs.CONFIG])
def test_a_fifo_in_place_of_a_run_file_is_refused_not_opened(name, run_dir, capsys,
                                                             monkeypatch):
    (run_dir / name).unlink()
    os.mkfifo(run_dir / name)
    never_trains(monkeypatch)

    def hung(signum, frame):
        raise Hung(f"blocked on {name}")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(20)
    try:
        status = resume(run_dir)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert status == 2
    err = one_line_error(capsys, "lvae_np.train")
    assert f"{run_dir / name} is a FIFO (named pipe), not a regular file" in err
    assert "move it away" in err
    assert (run_dir / name).is_fifo()
