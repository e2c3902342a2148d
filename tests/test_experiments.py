"""The experiment runner: canonical run ids, resume and skip, clear errors, the results table.

Each of these bugs makes a test here fail: runs that restart instead of
resuming, table values taken from another file than the run's evaluation, an
evaluation cache that ignores the epoch, signals not forwarded to the
trainings, and failures counted as divergence (also from a status file left
by an earlier training).
"""
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lvae_np import experiments as E
from lvae_np.experiments import runner
from lvae_np.experiments.__main__ import main
from lvae_np.training.runs import STATUS, read_status

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TINY = dict(warmup_epochs=2, iw_samples=10, batch_size=50, progress=False)


def tiny(model="lvae", layers=2, **kw):
    """A run small enough for the tests: the 8x8 synthetic data, latent 4(,2), hidden 16(,8)."""
    return E.RunSpec("synthetic", model, (4, 2)[:layers], (16, 8)[:layers], **kw)


def run(specs, tmp_path, epochs, **kw):
    kw = {**TINY, "runs_dir": tmp_path / "runs", "out": tmp_path / "out", **kw}
    return E.run_experiment(specs, epochs=epochs, name="tiny", **kw)


def csv_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def by_id(report):
    return {r.run_id: r for r in report.records}


# ----------------------------------------------------------------------------
# Which runs
# ----------------------------------------------------------------------------
def test_run_ids_are_canonical_and_shared_between_experiments():
    ids = {name: [s.run_id() for s in e.specs] for name, e in E.EXPERIMENTS.items()}
    # one layer: VAE and LVAE are the same model, run once
    assert ids["mnist-depth"] == ["mnist-vae-L1-bn-wu"] + [
        f"mnist-{m}-L{n}-bn-wu" for n in range(2, 6) for m in ("vae", "lvae")]
    assert set(ids["mnist-ablation"]) == {f"mnist-{m}-L5-{bn}-{wu}" for m in ("vae", "lvae")
                                          for bn in ("bn", "nobn") for wu in ("wu", "nowu")}
    assert ids["omniglot"] == ["omniglot-vae-L5-bn-wu", "omniglot-lvae-L5-bn-wu"]
    # the 5-layer BN+WU runs are the same runs in both MNIST experiments
    assert set(ids["mnist-depth"]) & set(ids["mnist-ablation"]) == \
        {"mnist-vae-L5-bn-wu", "mnist-lvae-L5-bn-wu"}
    # all: each run once, every run of the others
    assert len(ids["all"]) == len(set(ids["all"])) == 9 + 8 - 2 + 2
    assert set(ids["all"]) == set(ids["mnist-depth"]) | set(ids["mnist-ablation"]) \
        | set(ids["omniglot"])
    spec = E.RunSpec.paper("mnist", "vae", 2)
    assert (spec.latent, spec.hidden) == ((64, 32), (512, 256))
    # other sizes and seeds are spelled out, so they never share a folder with the paper's
    assert tiny().run_id() == "synthetic-lvae-L2-bn-wu-z4.2-h16.8"
    assert spec.run_id(seed=3) == "mnist-vae-L2-bn-wu-seed3"
    cfg = E.RunSpec.paper("mnist", "lvae", 5, warmup=False).train_config(
        epochs=10, warmup_epochs=7, batch_size=256, seed=0)
    assert cfg.warmup_epochs == 0 and cfg.epochs == 10


def test_paired_differences_are_taken_example_by_example():
    def rec(model, per_example, layers=2, limit=4):
        r = E.RunRecord(tiny(model, layers), "id", Path("."), 1)
        r.eval = {"lk": sum(per_example) / len(per_example), "lk_per_example": per_example,
                  "epoch": 3 if model == "vae" else 4, "limit": limit}
        return r

    got = E.paired_differences([rec("vae", [-1.0, -2.0, -3.0, -4.0]),
                                rec("lvae", [0.0, -2.0, -1.0, -4.0])])
    assert len(got) == 1
    q = got[0]
    # differences 1, 0, 2, 0: mean 0.75, sample sd sqrt(11/12), s.e. sd / 2
    assert (q["vae"], q["lvae"], q["n"], q["epochs"]) == (-2.5, -1.75, 4, (3, 4))
    assert q["diff"] == pytest.approx(0.75) and q["diff_stderr"] == pytest.approx(0.47871355)
    # not paired: other examples, other sizes, or one model missing
    assert E.paired_differences([rec("vae", [-1.0, -2.0]), rec("lvae", [0.0, -2.0, -1.0])]) == []
    assert E.paired_differences([rec("vae", [-1.0, -2.0], limit=2),
                                 rec("lvae", [0.0, -2.0], limit=None)]) == []
    assert E.paired_differences([rec("vae", [-1.0, -2.0], layers=1),
                                 rec("lvae", [0.0, -2.0], layers=2)]) == []


def test_the_kl_estimator_is_part_of_the_spec_and_only_equal_ones_are_paired():
    mc = E.RunSpec.paper("mnist", "lvae", 5, kl="mc")
    assert mc.run_id() == "mnist-lvae-L5-bn-wu-mc"
    assert mc.run_id(2) == "mnist-lvae-L5-bn-wu-mc-seed2"
    assert E.RunSpec.paper("mnist", "lvae", 5).run_id() == "mnist-lvae-L5-bn-wu"  # as before
    assert mc.train_config(epochs=1, warmup_epochs=3, batch_size=8, seed=0).kl == "mc"
    assert E.Settings().config(E.RunSpec.paper("mnist", "vae", 5)).kl == "analytic"

    def rec(model, kl):
        r = E.RunRecord(tiny(model, kl=kl), "id", Path("."), 1)
        r.eval = {"lk": -1.5, "lk_per_example": [-1.0, -2.0], "epoch": 1, "limit": None}
        return r

    assert E.paired_differences([rec("vae", "mc"), rec("lvae", "analytic")]) == []
    both = E.paired_differences([rec("vae", "mc"), rec("lvae", "mc"),
                                 rec("vae", "analytic"), rec("lvae", "analytic")])
    assert [q["kl"] for q in both] == ["mc", "analytic"]


def test_warmup_in_steps_replaces_the_epochs_and_is_never_scaled():
    spec = E.RunSpec.paper("mnist", "lvae", 5)
    cfg = E.Settings(epochs=10, warmup_epochs=0, warmup_steps=9400).config(spec)
    assert (cfg.warmup_steps, cfg.warmup_epochs, cfg.epochs) == (9400, 0, 10)
    off = E.Settings(warmup_epochs=0, warmup_steps=9400).config(
        E.RunSpec.paper("mnist", "lvae", 5, warmup=False))
    assert (off.warmup_steps, off.warmup_epochs) == (0, 0)
    with pytest.raises(E.ExperimentError, match="warm-up in steps or in epochs"):
        E.Settings(warmup_steps=100).check()   # warmup_epochs 200 by default


@pytest.mark.parametrize("kw,match", [
    (dict(kl="exact"), "unknown KL estimator"),
    (dict(model="iwae"), "unknown model"),
    (dict(dataset="cifar"), "unknown dataset"),
    (dict(latent=(4, 2), hidden=(16,)), "one size per stochastic layer"),
    (dict(latent=(0,), hidden=(16,)), "positive"),
])
def test_bad_specs_are_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        E.RunSpec(**{"dataset": "synthetic", **kw})


def test_threads_per_child():
    env = E.child_env(2, {"PATH": "/bin"})
    expected = str(max(1, (os.cpu_count() or 1) // 2))
    assert [env[v] for v in E.THREAD_VARS] == [expected] * 3 and env["PATH"] == "/bin"
    assert E.child_env(10 ** 6, {})["OMP_NUM_THREADS"] == "1"
    assert E.child_env(1, {"OPENBLAS_NUM_THREADS": "3"})["OPENBLAS_NUM_THREADS"] == "3"


# ----------------------------------------------------------------------------
# Train, resume, skip; the table and figures
# ----------------------------------------------------------------------------
def test_runs_train_resume_and_skip_and_the_table_holds_the_evaluation(tmp_path):
    specs = [tiny("vae", 1), tiny("lvae", 2)]
    first = run(specs, tmp_path, epochs=1)
    assert first.exit_status == 0
    lvae = by_id(first)["synthetic-lvae-L2-bn-wu-z4.2-h16.8"]
    assert lvae.trained and lvae.evaluated and lvae.status == "done"
    before = csv_rows(lvae.run_dir / "metrics.csv")
    assert [r["epoch"] for r in before] == ["1"]

    # a larger target resumes the run: epoch 1's row is kept as it was, epoch 2 follows
    second = run(specs, tmp_path, epochs=2)
    after = csv_rows(lvae.run_dir / "metrics.csv")
    assert [r["epoch"] for r in after] == ["1", "2"] and after[0] == before[0]
    assert [r["beta"] for r in after] == ["0.0", "0.5"]   # warm-up over 2 epochs, continued
    # config.json follows the resumed run's settings: its target is now 2 epochs
    assert json.loads((lvae.run_dir / "config.json").read_text())["epochs"] == 2
    log = (lvae.run_dir / E.LOG).read_text()
    assert log.count("-m lvae_np.train") == 2 and log.count("--resume") == 1
    stored = json.loads(E.eval_path(lvae.run_dir, 10, None).read_text())
    assert stored["epoch"] == 2 and stored["iw_samples"] == 10 and stored["limit"] is None
    assert all(r.trained and r.evaluated for r in second.records)

    # the same target again: nothing trains, nothing is evaluated, no file changes
    files = [lvae.run_dir / "checkpoint.npz", E.eval_path(lvae.run_dir, 10, None)]
    stamps = [f.stat().st_mtime_ns for f in files]
    third = run(specs, tmp_path, epochs=2)
    assert not any(r.trained or r.evaluated for r in third.records)
    assert [f.stat().st_mtime_ns for f in files] == stamps
    assert all(r.status == "done" and r.epoch == 2 for r in third.records)

    # results.csv: the evaluation's own numbers, in full
    rows = {r["run_id"]: r for r in csv_rows(tmp_path / "out" / "results.csv")}
    assert set(rows) == {"synthetic-vae-L1-bn-wu-z4-h16", "synthetic-lvae-L2-bn-wu-z4.2-h16.8"}
    for rec in third.records:
        ev = json.loads(E.eval_path(rec.run_dir, 10, None).read_text())
        row = rows[rec.run_id]
        assert float(row["test_elbo"]) == ev["elbo"] and float(row["lk"]) == ev["lk"]
        assert float(row["lk_stderr"]) == ev["lk_stderr"] and int(row["n"]) == ev["n"] == 200
        assert int(row["eval_epoch"]) == ev["epoch"] == int(row["epochs_done"]) == 2
        L = rec.spec.layers
        assert [float(row[f"kl_z{i}"]) for i in range(1, L + 1)] == ev["kl"]
        assert [int(row[f"au_z{i}"]) for i in range(1, L + 1)] == ev["active_units"]
        assert [int(row[f"au_kl_z{i}"]) for i in range(1, L + 1)] == ev["active_units_kl"]
    assert rows["synthetic-vae-L1-bn-wu-z4-h16"]["kl_z2"] == ""   # no second layer
    md = (tmp_path / "out" / "results.md").read_text()
    assert md.startswith("Produced by `python -m lvae_np.experiments tiny --epochs 2")
    assert "Budget: 2 epochs per run, warm-up over 2 epochs" in md
    ev = json.loads(E.eval_path(lvae.run_dir, 10, None).read_text())
    assert f"{ev['lk']:.2f} ({ev['lk_stderr']:.2f}, 200)" in md
    for name in ("test_elbo", "depth", "active_units"):
        assert (tmp_path / "out" / f"{name}.png").read_bytes().startswith(PNG_SIGNATURE)
        assert f"({name}.png)" in md

    # a setting --resume cannot change stops everything, naming run, setting and values
    with pytest.raises(E.ExperimentError) as err:
        run(specs, tmp_path, epochs=3, warmup_epochs=5)
    msg = str(err.value)
    assert "synthetic-vae-L1-bn-wu-z4-h16" in msg and "warmup_epochs is 2 there but 5 here" \
        in msg and "\n" not in msg
    assert [r["epoch"] for r in csv_rows(lvae.run_dir / "metrics.csv")] == ["1", "2"]


def test_a_limited_evaluation_is_kept_apart(tmp_path):
    spec = tiny("lvae", 1)
    run([spec], tmp_path, epochs=1, eval_limit=50)
    run_dir = tmp_path / "runs" / spec.run_id()
    limited = json.loads(E.eval_path(run_dir, 10, 50).read_text())
    assert limited["n"] == 50 and limited["limit"] == 50
    assert E.eval_path(run_dir, 10, 50).name == "eval-test-k10-first50.json"
    assert not E.eval_path(run_dir, 10, None).exists()
    assert not (run_dir / "eval-test-k10.json").exists()
    report = run([spec], tmp_path, epochs=1, train=False)
    assert report.records[0].evaluated and report.records[0].eval["n"] == 200
    assert json.loads(E.eval_path(run_dir, 10, 50).read_text()) == limited


def test_failed_and_diverged_runs_are_reported_and_the_others_finish(tmp_path, monkeypatch):
    ok, bad, diverging = tiny("lvae", 1), tiny("vae", 1), tiny("lvae", 2)
    real = runner.train_command

    def command(spec, run_dir, settings, resume):
        extra = {bad: ["--lr", "-1"], diverging: ["--lr", "1e30"]}.get(spec, [])
        return real(spec, run_dir, settings, resume) + extra

    monkeypatch.setattr(runner, "train_command", command)
    report = run([ok, bad, diverging], tmp_path, epochs=1)
    recs = {r.spec: r for r in report.records}
    assert recs[ok].status == "done" and recs[ok].eval is not None
    assert recs[bad].status == f"failed, see {E.LOG}" and recs[bad].failed
    assert "--lr must be > 0" in (recs[bad].run_dir / E.LOG).read_text()
    assert recs[diverging].status == "diverged at epoch 1" and not recs[diverging].failed
    assert report.exit_status == 1           # the failure, not the divergence
    rows = {r["run_id"]: r for r in csv_rows(tmp_path / "out" / "results.csv")}
    assert rows[bad.run_id()]["status"] == "failed, see train.log"
    assert rows[bad.run_id()]["lk"] == "" and rows[ok.run_id()]["lk"] != ""
    md_line = next(line for line in (tmp_path / "out" / "results.md").read_text().splitlines()
                   if line.startswith(f"| {diverging.run_id()} "))
    assert "diverged at epoch 1" in md_line and "| - |" in md_line

    # a divergence alone exits 0; collecting again still says what happened (the
    # status file lvae_np.train left)
    assert read_status(recs[diverging].run_dir) == {"state": "diverged", "epoch": 1}
    monkeypatch.setattr(runner, "train_command", real)
    again = run([ok, diverging], tmp_path, epochs=1, train=False)
    assert again.exit_status == 0
    assert by_id(again)[diverging.run_id()].status == "diverged at epoch 1"
    assert by_id(again)[ok.run_id()].status == "done"

    # a training that fails before it writes a status is a failure, whatever the
    # status file left by the training before says
    monkeypatch.setattr(runner, "train_command", lambda spec, run_dir, settings, resume:
                        real(spec, run_dir, settings, resume) + ["--lr", "-1"])
    failed = run([diverging], tmp_path, epochs=1)
    assert read_status(recs[diverging].run_dir)["state"] == "diverged"   # untouched
    assert failed.records[0].status == f"failed, see {E.LOG}" and failed.exit_status == 1

    # run folders from before the status file: judged from their checkpoints alone
    for spec in (ok, diverging):
        (recs[spec].run_dir / STATUS).unlink()
    old = by_id(run([ok, diverging], tmp_path, epochs=1, train=False))
    assert old[ok.run_id()].status == "done" and old[ok.run_id()].eval is not None
    assert old[diverging.run_id()].status == "not started"   # it never finished an epoch


def test_jobs_2_gives_the_table_of_jobs_1(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")      # the same BLAS threads in both
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    specs = [tiny("vae", 2), tiny("lvae", 2)]
    one = run(specs, tmp_path / "a", epochs=1, jobs=1)
    two = run(specs, tmp_path / "b", epochs=1, jobs=2)
    assert one.exit_status == two.exit_status == 0
    for a, b in zip(one.records, two.records):
        ra, rb = (csv_rows(r.run_dir / "metrics.csv") for r in (a, b))
        strip = lambda rows: [{k: v for k, v in r.items() if "seconds" not in k}  # noqa: E731
                              for r in rows]
        assert strip(ra) == strip(rb)
    table = (tmp_path / "a" / "out" / "results.csv").read_text()
    assert table == (tmp_path / "b" / "out" / "results.csv").read_text()
    assert all(r["lk"] for r in csv_rows(tmp_path / "a" / "out" / "results.csv"))


def test_collecting_runs_that_do_not_exist_yet(tmp_path):
    report = run([tiny("vae", 2), tiny("lvae", 2)], tmp_path, epochs=1, train=False)
    assert report.exit_status == 0 and not (tmp_path / "runs").exists()
    assert [r.status for r in report.records] == ["not started"] * 2
    # nothing to draw: the figures are skipped with a note (depth.png: one depth only)
    assert sorted(n.split(" skipped")[0] for n in report.notes) == \
        ["active_units.png", "test_elbo.png"]
    assert not list((tmp_path / "out").glob("*.png"))
    md = (tmp_path / "out" / "results.md").read_text()
    assert "| LVAE | 2 (4/2) | on | on | analytic | -/1 | not started | - |" in md
    # the VAE's training KL is analytic only at its top layer: the label says so
    assert "| VAE | 2 (4/2) | on | on | analytic z2, mc z1..z1 | -/1 |" in md
    assert "A_u does not compare the two models" in md
    assert "Note: test_elbo.png skipped" in md


def terminate_once_training(run_dir, timeout):
    """SIGTERM to this process, from a thread, once the run has logged an epoch."""
    def terminate():
        deadline = time.monotonic() + timeout
        while not (run_dir / "metrics.csv").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=terminate, daemon=True).start()


def test_sigterm_stops_the_trainings_with_their_checkpoints(tmp_path, capsys):
    spec = tiny("lvae", 1)
    run_dir = tmp_path / "runs" / spec.run_id()
    handler = signal.getsignal(signal.SIGTERM)

    terminate_once_training(run_dir, 60)
    report = run([spec], tmp_path, epochs=500, command="THE COMMAND")
    assert report.exit_status == 130 and report.interrupted
    meta = E.saved_meta(run_dir)
    assert 1 <= meta["epoch"] < 500     # stopped early, checkpoint written
    assert read_status(run_dir)["state"] == "interrupted"
    assert report.records[0].status.startswith("interrupted in epoch ")
    assert "Continue with:\n  THE COMMAND" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is handler
    assert not (tmp_path / "out" / "results.csv").exists()


# ----------------------------------------------------------------------------
# The command line
# ----------------------------------------------------------------------------
def test_help_and_list_run_without_training(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lvae_np.experiments", "--help"],
                          capture_output=True, text=True)
    assert proc.returncode == 0
    for text in ("--epochs", "--jobs", "--warmup-epochs", "mnist-ablation", "default: 2000"):
        assert text in proc.stdout
    runs = tmp_path / "runs"
    proc = subprocess.run([sys.executable, "-m", "lvae_np.experiments", "--list",
                           "--runs-dir", str(runs)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "mnist-lvae-L5-nobn-nowu" in proc.stdout and "omniglot-vae-L5-bn-wu" in proc.stdout
    assert "not started" in proc.stdout and not runs.exists()


def test_cli_lists_states_and_gives_one_line_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(E.EXPERIMENTS, "tiny", E.Experiment("tiny", "a test", (tiny("lvae", 1),)))
    common = ["tiny", "--runs-dir", str(tmp_path / "runs"), "--warmup-epochs", "2",
              "--iw-samples", "10", "--batch-size", "50", "--no-progress"]
    run_dir = tmp_path / "runs" / tiny("lvae", 1).run_id()
    run_dir.mkdir(parents=True)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (run_dir / E.LOCK).write_text(f"{gone.pid} {socket.gethostname()}\n")  # a stale lock
    assert main(common + ["--epochs", "1", "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "results.md").exists() and not (run_dir / E.LOCK).exists()
    capsys.readouterr()
    assert main(common + ["--epochs", "3", "--list"]) == 0
    out = capsys.readouterr().out
    assert "synthetic-lvae-L1-bn-wu-z4-h16" in out and "1/3 epochs, evaluated" in out
    assert E.saved_meta(run_dir)["epoch"] == 1

    (run_dir / E.LOCK).write_text(f"{os.getpid()} {socket.gethostname()}\n")  # a live one
    assert main(common + ["--epochs", "2"]) == 2
    assert f"in use by another lvae_np.experiments (process {os.getpid()}" in \
        capsys.readouterr().err
    assert E.saved_meta(run_dir)["epoch"] == 1
    (run_dir / E.LOCK).unlink()

    for argv, match in [(common + ["--warmup-epochs", "3"], "warmup_epochs is 2 there but 3"),
                        (["nothing"], "invalid choice: 'nothing'"),
                        ([], "name an experiment"),
                        (common + ["--jobs", "0"], "--jobs must be >= 1"),
                        (common + ["--eval-limit", "0"], "--eval-limit must be >= 1")]:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("lvae_np.experiments: error:") and match in err, err
        assert "\n" not in err


def test_results_go_under_the_runs_folder_unless_published(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)   # results/ here is this test's, not the repository's
    monkeypatch.setitem(E.EXPERIMENTS, "tiny", E.Experiment("tiny", "a test", (tiny("lvae", 1),)))
    common = ["tiny", "--runs-dir", "runs", "--no-train", "--no-eval", "--no-progress",
              "--epochs", "1"]
    assert main(common) == 0
    assert (tmp_path / "runs" / "results" / "tiny" / "results.md").exists()
    assert not (tmp_path / "results").exists()
    committed = tmp_path / "results" / "experiments" / "tiny" / "results.md"
    committed.parent.mkdir(parents=True)
    committed.write_text("committed")
    assert main(common + ["--runs-dir", "other"]) == 0   # the default never touches it
    assert committed.read_text() == "committed"
    assert (tmp_path / "other" / "results" / "tiny" / "results.md").exists()
    assert main(common + ["--publish"]) == 0
    assert committed.read_text().startswith("Produced by `python -m lvae_np.experiments tiny")
    assert main(common + ["--out", "results/experiments/mine"]) == 0
    assert (tmp_path / "results" / "experiments" / "mine" / "results.md").exists()
    capsys.readouterr()
    assert main(common + ["--publish", "--out", "x"]) == 2
    assert "--out and --publish" in capsys.readouterr().err
    cmd = runner._command_line("tiny", E.Settings(runs_dir=Path("runs")),
                               E.default_out("runs", "tiny", publish=True))
    assert cmd.endswith("tiny --runs-dir runs --publish")
    assert runner._command_line("tiny", E.Settings(), E.default_out(E.DEFAULT_RUNS_DIR,
                                                                          "tiny")).endswith("tiny")


def test_the_cli_trains_with_the_kl_and_warmup_steps_given(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(E.EXPERIMENTS, "tiny", E.Experiment(
        "tiny", "a test", (tiny("vae", 1), tiny("lvae", 2))))
    assert main(["tiny", "--runs-dir", str(tmp_path / "runs"), "--kl", "mc",
                 "--warmup-steps", "5", "--iw-samples", "3", "--batch-size", "250",
                 "--epochs", "1", "--no-progress"]) == 0
    for run_id in ("synthetic-vae-L1-bn-wu-z4-h16-mc", "synthetic-lvae-L2-bn-wu-z4.2-h16.8-mc"):
        saved = E.saved_meta(tmp_path / "runs" / run_id)["config"]
        assert (saved["kl"], saved["warmup_steps"], saved["warmup_epochs"]) == ("mc", 5, 0)
    out = tmp_path / "runs" / "results" / "tiny"
    assert {r["kl"] for r in csv_rows(out / "results.csv")} == {"mc"}
    assert [r["warmup_steps"] for r in csv_rows(out / "results.csv")] == ["5", "5"]
    md = (out / "results.md").read_text()
    assert "warm-up over 5 steps" in md and "| 1 (4) | on | on | mc |" in md
    assert main(["tiny", "--runs-dir", str(tmp_path / "runs"), "--kl", "mc", "--list",
                 "--warmup-steps", "5", "--iw-samples", "3", "--epochs", "1"]) == 0
    assert "synthetic-lvae-L2-bn-wu-z4.2-h16.8-mc" in capsys.readouterr().out


# ----------------------------------------------------------------------------
# Runs as jobs through submitit
# ----------------------------------------------------------------------------
from conftest import needs_submitit  # noqa: E402


@needs_submitit
def test_submitit_jobs_give_the_pools_runs_and_table(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")      # the same BLAS threads in both
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    specs = [tiny("vae", 1), tiny("lvae", 2)]
    pool = run(specs, tmp_path / "pool", epochs=1, jobs=2)
    jobs = run(specs, tmp_path / "jobs", epochs=1, jobs=2, executor="local")
    assert pool.exit_status == jobs.exit_status == 0
    strip = lambda rows: [{k: v for k, v in r.items() if "seconds" not in k}  # noqa: E731
                          for r in rows]
    for a, b in zip(pool.records, jobs.records):
        assert b.trained and b.evaluated and b.status == "done"
        assert strip(csv_rows(a.run_dir / "metrics.csv")) == \
            strip(csv_rows(b.run_dir / "metrics.csv"))
        assert list((b.run_dir / "submitit").iterdir())       # submitit's own files
        assert "(a local job)" in (b.run_dir / E.LOG).read_text()
        assert "lvae_np.train: " in (b.run_dir / E.LOG).read_text()  # the job's output
    table = (tmp_path / "pool" / "out" / "results.csv").read_text()
    assert table == (tmp_path / "jobs" / "out" / "results.csv").read_text()
    again = run(specs, tmp_path / "jobs", epochs=1, executor="local")   # nothing left to do
    assert not any(r.trained or r.evaluated for r in again.records)


@needs_submitit
def test_a_stop_reaches_the_training_inside_the_job(tmp_path):
    spec = tiny("lvae", 1)
    run_dir = tmp_path / "runs" / spec.run_id()

    terminate_once_training(run_dir, 120)
    report = run([spec], tmp_path, epochs=500, executor="local", command="THE COMMAND")
    assert report.exit_status == 130 and report.interrupted
    assert 1 <= E.saved_meta(run_dir)["epoch"] < 500     # stopped early, checkpoint written
    assert read_status(run_dir)["state"] == "interrupted"


def test_executor_options_and_errors(monkeypatch, tmp_path):
    from lvae_np.experiments import executors
    assert executors.parse_options(["slurm_partition=gpu", "timeout_min=600", "a=b=c"]) == \
        {"slurm_partition": "gpu", "timeout_min": 600, "a": "b=c"}
    with pytest.raises(E.ExperimentError, match="give KEY=VALUE"):
        executors.parse_options(["gpu"])
    with pytest.raises(E.ExperimentError, match="--executor must be one of pool, slurm, local"):
        E.Settings(executor="dask").check()
    monkeypatch.setitem(sys.modules, "submitit", None)   # as if not installed
    with pytest.raises(E.ExperimentError, match=r"pip install 'lvae_np\[cluster\]'"):
        run([tiny("vae", 1)], tmp_path, epochs=1, executor="slurm")
    assert not (tmp_path / "runs").exists()   # refused before any run folder or lock
    cmd = runner._command_line("tiny", E.Settings(executor="slurm", executor_options=(
        "slurm_partition=gpu", "gpus_per_node=1")), None)
    assert cmd.endswith("tiny --executor slurm --executor-option slurm_partition=gpu "
                        "--executor-option gpus_per_node=1")
