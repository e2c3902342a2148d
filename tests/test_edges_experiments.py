"""Nothing lost at the edges of the experiment runner: killed runners, stops, bad records, publishing.

One test (or one parametrised family) per case of the issue "Nothing lost,
round two", items 2-5, in the style of ``test_edges.py``: a fault ends in a
non-zero exit status and one line on stderr naming the problem and the fix,
with no traceback, and leaves every file that was there byte-identical.

* 2: every child ends with the runner (``--executor local`` too), and a
  training still holding a run's lock is named, with how to end it, never
  counted "failed";
* 3: a stop during an epoch's test evaluation abandons it at once, and a run
  at its target is "done"; the runner corrects a stale status of a complete run;
* 4: bad run records (evaluations, status files, logs) and unavailable
  executors end in one line; a bad stored evaluation is made again;
* 5: publishing replaces the results folder whole, checking every record
  before it writes anything, and touches nothing outside it.
"""
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lvae_np.training import runs, train
from lvae_np import experiments as E
from lvae_np.experiments import records, report, runner
from lvae_np.experiments.__main__ import main
from lvae_np.training.fileio import atomic_write_text
from lvae_np.training.runlock import RunInUse, RunLock

SPEC = E.RunSpec("synthetic", "lvae", (4,), (16,))
RUN_ID = SPEC.run_id()              # synthetic-lvae-L1-bn-wu-z4-h16
TINY = dict(warmup_epochs=1, iw_samples=5, batch_size=50, progress=False)
CLI = ["--epochs", "1", "--warmup-epochs", "1", "--batch-size", "50", "--iw-samples", "5",
       "--no-progress"]
SMALL = ["--dataset", "synthetic", "--latent", "4", "--hidden", "16", "--batch-size", "50",
         "--warmup-epochs", "1", "--no-progress"]

from conftest import HAVE_SUBMITIT, needs_submitit  # noqa: E402
linux = pytest.mark.skipif(not sys.platform.startswith("linux"),
                           reason="parent-death signal and /proc: Linux")


def files(folder) -> dict:
    """Every file under ``folder``: relative path -> bytes."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def trainer_pid(run_dir) -> int | None:
    """The process holding the run folder's training lock, or None when it is free."""
    lock = RunLock(run_dir)
    try:
        lock.acquire()
    except RunInUse:
        return int((Path(run_dir) / runs.LOCK).read_text().split()[0])
    lock.release()
    return None


def stat(pid: int) -> tuple:
    """(state, parent pid) of a process from /proc, ("gone", None) when there is none."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return "gone", None
    return fields[0], int(fields[1])


def alive(pid: int) -> bool:
    return stat(pid)[0] not in ("gone", "Z")   # a zombie has ended


def one_line_error(capsys, prog: str = "lvae_np.experiments") -> str:
    """The single stderr line of a failed command (no traceback, nothing else)."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A runs folder holding the tiny run trained 1 epoch and evaluated with L_5."""
    runs_dir = tmp_path_factory.mktemp("edges-experiments") / "runs"
    report = E.run_experiment([SPEC], epochs=1, runs_dir=runs_dir, out=None, name="tiny",
                              **TINY)
    assert report.exit_status == 0 and report.records[0].evaluated
    return runs_dir


@pytest.fixture
def tiny(base, tmp_path, monkeypatch):
    """(runs folder, results folder, run folder): a fresh copy of ``base``; "tiny" registered."""
    monkeypatch.setitem(E.EXPERIMENTS, "tiny", E.Experiment("tiny", "a test", (SPEC,)))
    runs_dir = tmp_path / "runs"
    shutil.copytree(base, runs_dir)
    return runs_dir, tmp_path / "out", runs_dir / RUN_ID


def cli(runs_dir, out, *extra):
    return main(["tiny", "--runs-dir", str(runs_dir), "--out", str(out)] + CLI + list(extra))


# ----------------------------------------------------------------------------
# 2: one lifetime for every child
# ----------------------------------------------------------------------------
RUNNER = """
import sys
from lvae_np import experiments as E
from lvae_np.experiments.__main__ import main
E.EXPERIMENTS["tiny"] = E.Experiment("tiny", "a test", (E.RunSpec("synthetic", "lvae", (4,), (16,)),))
sys.exit(main(["tiny", "--runs-dir", sys.argv[1], "--out", sys.argv[2], "--epochs", "100000",
               "--warmup-epochs", "1", "--batch-size", "50", "--no-eval", "--no-progress",
               "--executor", "local"]))
"""


@linux
@needs_submitit
def test_2_a_killed_runner_takes_its_local_jobs_and_trainings_with_it(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    runner = subprocess.Popen([sys.executable, "-c", RUNNER, str(tmp_path / "runs"),
                               str(tmp_path / "out")], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    run_dir = tmp_path / "runs" / RUN_ID
    children = []   # the training, submitit's task running the job, and its controller
    try:
        deadline = time.monotonic() + 60
        while not (run_dir / runs.CHECKPOINT).exists() and time.monotonic() < deadline:
            time.sleep(0.05)  # the training inside the job is under way once it has a checkpoint
        assert (run_dir / runs.CHECKPOINT).exists(), "the training never started"
        children = [trainer_pid(run_dir)]
        for _ in range(3):
            children.append(stat(children[-1])[1])
        assert children[-1] == runner.pid    # the job is the runner's, the training the job's
        children.pop()
        runner.kill()    # SIGKILL: nothing of the runner runs after it
        runner.wait()
        while any(alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(children[0]), "the training outlived its runner"
        assert not any(alive(pid) for pid in children), "the job outlived its runner"
        assert trainer_pid(run_dir) is None
        # it stopped as on Ctrl-C, at a batch boundary, with its checkpoint written
        assert runs.read_status(run_dir)["state"] == "interrupted"
        assert "the runner (process" in (run_dir / E.LOG).read_text()
    finally:
        for pid in children:   # only if the test failed: end what it started
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    # the same command again is no "failure": it continues the run
    target = E.saved_meta(run_dir)["epoch"] + 2     # past where it stopped, mid-epoch
    again = E.run_experiment([SPEC], epochs=target, runs_dir=tmp_path / "runs", out=None,
                             name="tiny", evaluate=False, executor="local", **TINY)
    assert again.exit_status == 0 and again.records[0].status == "done"


HOLDER = """
import sys, time
from lvae_np.training.runlock import RunLock
RunLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(120)
"""


def test_2_a_rerun_names_a_training_left_running_instead_of_failing_it(tiny, capsys):
    runs_dir, out, run_dir = tiny
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = files(run_dir)
        for job, words in ((None, f"kill {holder.pid}"),
                           ({"executor": "slurm", "job_id": "4242"}, "scancel 4242")):
            if job is not None:
                (run_dir / ".experiments.job").write_text(json.dumps(job))  # locks.JOB
                before = files(run_dir)
            capsys.readouterr()
            assert cli(runs_dir, out, "--epochs", "2") == 2
            err = one_line_error(capsys)
            assert f"run {RUN_ID} (process {holder.pid} on {socket.gethostname()}" in err
            assert "still being trained, not by this runner" in err and words in err
            assert "failed" not in err
            assert files(run_dir) == before and not out.exists()
    finally:
        holder.kill()
        holder.wait()


# ----------------------------------------------------------------------------
# 3: a stop during an evaluation; a stale status
# ----------------------------------------------------------------------------
def slow_evaluation_after_a_signal(monkeypatch, seconds=10.0):
    """Trainer.evaluate sends this process SIGTERM, then works ``seconds`` before evaluating."""
    real = train.Trainer.evaluate

    def evaluate(self):
        os.kill(os.getpid(), signal.SIGTERM)
        end = time.monotonic() + seconds
        while time.monotonic() < end:   # a long evaluation, in small steps
            time.sleep(0.01)
        return real(self)

    monkeypatch.setattr(train.Trainer, "evaluate", evaluate)


def test_3_a_signal_during_the_last_evaluation_leaves_a_done_run_done(tmp_path, capsys,
                                                                      monkeypatch):
    out = tmp_path / "run"
    slow_evaluation_after_a_signal(monkeypatch)
    t0 = time.monotonic()
    assert train.main(SMALL + ["--epochs", "1", "--out", str(out)]) == 0
    assert time.monotonic() - t0 < 8            # abandoned at once, not after 10 s
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lvae_np.train: stopping: the test "
                                               "evaluation of epoch 1 is abandoned")
    assert runs.read_status(out) == {"state": "done", "epoch": 1}
    rows = (out / runs.METRICS).read_text().splitlines()
    header, row = rows[0].split(","), rows[1].split(",")
    assert len(rows) == 2 and row[0] == "1"    # the epoch's training part is kept
    assert row[header.index("test_elbo")] == ""

    # before the target, the same stop is an interruption at the epoch's end
    out = tmp_path / "two"
    assert train.main(SMALL + ["--epochs", "2", "--out", str(out)]) == 130
    assert runs.read_status(out) == {"state": "interrupted", "epoch": 1, "batch": 0}
    monkeypatch.undo()
    assert train.main(["--out", str(out), "--resume", "--no-progress"]) == 0
    assert runs.read_status(out) == {"state": "done", "epoch": 2}


@pytest.mark.parametrize("stale", [b'{"state": "interrupted", "epoch": 1, "batch": 0}\n',
                                   b'{"state": "training", "epoch": 0}\n', b"", b"\xff\xfe"])
def test_3_the_runner_corrects_a_stale_status_of_a_complete_run(stale, tiny, capsys):
    runs_dir, out, run_dir = tiny
    (run_dir / runs.STATUS).write_bytes(stale)
    assert cli(runs_dir, out) == 0
    assert f"run {RUN_ID} is complete but its status.json said" in capsys.readouterr().out
    assert runs.read_status(run_dir) == {"state": "done", "epoch": 1}
    published = json.loads((out / records.RUNS / RUN_ID / runs.STATUS).read_text())
    assert published == {"state": "done", "epoch": 1}


# ----------------------------------------------------------------------------
# 4: bad run records and unavailable executors
# ----------------------------------------------------------------------------
def _eval_file(run_dir) -> Path:
    return E.eval_path(run_dir, 5, None)


BAD_EVALS = {
    "a list": lambda good: [1, 2],
    "lk not a number": lambda good: {**good, "lk": "abc"},
    "no lk": lambda good: {k: v for k, v in good.items() if k != "lk"},
}


@pytest.mark.parametrize("case", list(BAD_EVALS))
def test_4_a_bad_stored_evaluation_is_made_again(case, tiny, capsys):
    runs_dir, out, run_dir = tiny
    good = json.loads(_eval_file(run_dir).read_text())
    _eval_file(run_dir).write_text(json.dumps(BAD_EVALS[case](good)))
    assert cli(runs_dir, out) == 0
    captured = capsys.readouterr()
    assert f"note: {_eval_file(run_dir)} is not a usable evaluation" in captured.out
    assert f"evaluating run {RUN_ID} again" in captured.out and captured.err == ""
    redone = json.loads(_eval_file(run_dir).read_text())
    assert redone["lk"] == good["lk"] and redone["epoch"] == 1   # the same seed: the same L_5
    assert (run_dir / E.LOG).read_text().count("-m lvae_np.evaluate") == 2
    assert json.loads((out / records.RUNS / RUN_ID / _eval_file(run_dir).name).read_text()) \
        ["lk"] == good["lk"]


def test_4_a_bad_stored_evaluation_under_no_eval_is_not_shown(tiny, capsys):
    runs_dir, out, run_dir = tiny
    _eval_file(run_dir).write_text("[1, 2]")
    assert cli(runs_dir, out, "--no-eval") == 0
    captured = capsys.readouterr()
    assert f"note: {_eval_file(run_dir)} is not a usable evaluation (a JSON list, not an " \
           f"object); not shown: run without --no-eval" in captured.out
    row = (out / "results.csv").read_text().splitlines()[1].split(",")
    header = (out / "results.csv").read_text().splitlines()[0].split(",")
    assert row[header.index("lk")] == "" and not (out / records.RUNS).exists()


BAD_RECORDS = {
    "empty status": (runs.STATUS, b"", "is not a status record: it is empty; move it away"),
    "status not UTF-8": (runs.STATUS, b"\xff\xfe{}", "is not a status record: not UTF-8 text"),
    "empty metrics": (runs.METRICS, b"", "is empty; put the run's own log back, or move it"),
    "metrics not UTF-8": (runs.METRICS, b"epoch\n\xff\xfe\n", "is not a log: not UTF-8 text"),
}


@pytest.mark.parametrize("case", list(BAD_RECORDS))
def test_4_a_bad_record_stops_publishing_before_anything_is_written(case, tiny, capsys):
    runs_dir, out, run_dir = tiny
    assert cli(runs_dir, out) == 0                       # published once
    name, content, words = BAD_RECORDS[case]
    (run_dir / name).write_bytes(content)
    published, before = files(out), files(run_dir)
    capsys.readouterr()
    # --epochs 2 without training: the run is not complete, so its status stays its own
    assert cli(runs_dir, out, "--epochs", "2", "--no-train") == 2
    err = one_line_error(capsys)
    assert f"{run_dir / name} {words}" in err
    assert files(out) == published and files(run_dir) == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["out", "runs"]


EXECUTORS = {
    "slurm without SLURM": (["--executor", "slurm"], "--executor slurm"),
    "an unknown option": (["--executor", "local", "--executor-option", "foo=1"],
                          "--executor-option: --executor local refuses them (Parameter 'foo'"),
    "an option of the wrong type": (["--executor", "local", "--executor-option",
                                     "timeout_min=abc"], 'Parameter "timeout_min" expected'),
    "an option under the pool": (["--executor-option", "timeout_min=5"],
                                 "--executor-option timeout_min=5: the pool executor (the "
                                 "default) takes no options"),
}


@pytest.mark.parametrize("case", list(EXECUTORS))
def test_4_an_unavailable_executor_is_one_line_before_anything_starts(case, tiny, capsys):
    argv, words = EXECUTORS[case]
    if "local" in argv or "slurm" in argv:
        if not HAVE_SUBMITIT:
            pytest.skip("submitit is not installed (the optional [cluster] extra)")
        if "slurm" in argv and shutil.which("srun"):
            pytest.skip("SLURM is available here")
    runs_dir, out, run_dir = tiny
    before = files(runs_dir)
    assert cli(runs_dir, out, "--epochs", "2", *argv) == 2   # a training would be due
    assert words in one_line_error(capsys)
    assert files(runs_dir) == before and not out.exists()    # no "job" line in train.log


# ----------------------------------------------------------------------------
# 5: publishing replaces a results folder whole
# ----------------------------------------------------------------------------
def test_5_publishing_replaces_the_results_folder_whole(base, tmp_path):
    runs_dir = tmp_path / "runs"
    shutil.copytree(base, runs_dir)
    out = tmp_path / "results" / "tiny"
    keep = tmp_path / "results" / "keep.txt"
    keep.parent.mkdir()
    keep.write_text("mine")
    first = E.run_experiment([SPEC], epochs=1, runs_dir=runs_dir, out=out, name="tiny", **TINY)
    assert first.exit_status == 0 and f"runs/{RUN_ID}/eval-test-k5.json" in files(out)
    # what an earlier invocation with more seeds and runs left there
    (out / "seeds.csv").write_text("model,lk_mean\n")
    shutil.copytree(out / records.RUNS / RUN_ID, out / records.RUNS / f"{RUN_ID}-seed1")
    # one seed, another K: nothing of the earlier invocations may stay
    second = E.run_experiment([SPEC], epochs=1, runs_dir=runs_dir, out=out, name="tiny",
                              **{**TINY, "iw_samples": 3})
    assert second.exit_status == 0
    now = files(out)
    assert set(now) == {str(p.relative_to(out)) for p in second.written}
    assert "seeds.csv" not in now and not any("seed1" in name for name in now)
    assert f"runs/{RUN_ID}/eval-test-k3.json" in now
    assert f"runs/{RUN_ID}/eval-test-k5.json" not in now
    assert "L_3" in now["results.md"].decode()
    # nothing outside the folder is touched, and nothing is left beside it
    assert keep.read_text() == "mine"
    assert sorted(p.name for p in keep.parent.iterdir()) == ["keep.txt", "tiny"]


def test_5_a_failed_publication_leaves_the_old_results_as_they_were(tiny, capsys,
                                                                      monkeypatch):
    runs_dir, out, run_dir = tiny
    assert cli(runs_dir, out) == 0
    published = files(out)
    calls = []

    def full_disk_after_two(path, text):
        calls.append(path)
        if len(calls) > 2:       # results.csv and results.md written, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        atomic_write_text(path, text)

    for module in (report, records, runner):   # where results and records are written
        monkeypatch.setattr(module, "atomic_write_text", full_disk_after_two, raising=False)
    capsys.readouterr()
    assert cli(runs_dir, out, "--iw-samples", "3") == 1   # results other than those there
    assert "No space left on device" in one_line_error(capsys)
    assert files(out) == published
    assert sorted(p.name for p in out.parent.iterdir()) == ["out", "runs"]


def test_5_a_results_folder_holding_other_files_is_refused_before_any_work(tiny, capsys):
    runs_dir, out, run_dir = tiny
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    before = files(runs_dir)
    assert cli(runs_dir, out, "--epochs", "2") == 2
    err = one_line_error(capsys)
    assert f"{out} holds notes.txt, which lvae_np.experiments does not write there" in err
    assert files(runs_dir) == before and files(out) == {"notes.txt": b"mine"}
