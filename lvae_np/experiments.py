"""The paper's comparisons as named experiments: ``python -m lvae_np.experiments NAME``.

An experiment is a list of runs (:class:`RunSpec`). Each run lives in its own
folder ``RUNS_DIR/<run id>/``, named by a canonical id built from its settings
(``mnist-lvae-L5-bn-wu``, ``mnist-vae-L2-bn-wu``, ``mnist-lvae-L5-nobn-nowu``,
``omniglot-vae-L5-bn-wu``), so experiments that contain the same run share
its folder, its training and its evaluation.

Experiments (``EXPERIMENTS``):

* ``mnist-depth``: VAE and LVAE with 1 to 5 stochastic layers (latent sizes
  the first L of 64,32,16,8,4, block widths the first L of 512,256,128,64,32),
  batch norm and warm-up on. With one layer the two are the same model (the
  LVAE's top layer has nothing to merge with, so q(z_1 | x) is the VAE's),
  and the same seed gives the same numbers: that depth is one run, the VAE's;
* ``mnist-ablation``: the 5-layer VAE and LVAE without batch norm (BN) and
  warm-up (WU), with either, and with both;
* ``omniglot``: the 5-layer VAE and LVAE on OMNIGLOT, BN and WU on;
* ``all``: the union, each run once.

For each run the runner

1. trains it with ``python -m lvae_np.train`` in a subprocess (output appended
   to ``<run>/train.log``), resuming from ``<run>/checkpoint.npz`` when there is
   one and skipping runs that have reached ``--epochs`` already; a run whose
   saved settings differ from the experiment's in something ``--resume``
   cannot change stops everything with an error naming the run and setting;
2. evaluates the checkpoint with ``python -m lvae_np.evaluate`` (ELBO, L_K
   with each test example's value, KL and active units per layer); the result
   is kept in ``<run>/eval-test-k<K>.json`` (``-first<M>.json`` added with
   ``--eval-limit M``), and the evaluation is skipped when that file already
   holds the same epoch, K and limit;

then writes ``results.md``, ``results.csv`` and figures to ``--out``; where
an experiment has a VAE and an LVAE with the same settings, results.md also
gives their difference in L_K on the same test examples, with the standard
error of that paired difference (much smaller than either model's own,
since most of the spread of L_K is between images). Up to
``--jobs`` runs go at once, each child limited to ``cpu_count // jobs``
BLAS/OpenMP threads. A run whose loss becomes NaN or infinite ("diverged",
plausible without batch norm and warm-up) is recorded as such and the others
go on. Ctrl-C (or SIGTERM) asks the trainings to stop at a batch boundary and
write their checkpoints; the same command continues. While a runner works on
a run, the run folder holds a lock file (``.experiments.lock``), so a second
runner sharing that run stops with an error instead of training it too.

Examples::

    python -m lvae_np.experiments --list
    python -m lvae_np.experiments mnist-depth --epochs 10 --warmup-epochs 5 --jobs 2
    python -m lvae_np.experiments all --backend cupy        # the paper's budget: 2000 epochs
    python -m lvae_np.experiments mnist-ablation --no-train --no-eval   # tables of what exists
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
from collections import deque
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy

from .backend import BACKENDS
from .fileio import atomic_write
from .data import DATASETS, ENV_VAR
from .evaluate import eval_file_name
from .cli import HelpFormatter
from .train import CHECKPOINT, RESUMABLE, TrainConfig, _config_from_meta

PAPER_LATENT = (64, 32, 16, 8, 4)
PAPER_HIDDEN = (512, 256, 128, 64, 32)
MODELS = ("vae", "lvae")
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
LOG = "train.log"
LOCK = ".experiments.lock"  # in a run folder while a runner works on it
DEFAULT_RUNS_DIR = Path("runs") / "experiments"
DEFAULT_OUT_DIR = Path("results") / "experiments"
DPI = 120
POLL_SECONDS = 0.05
# What lvae_np.train prints when the loss stops being finite (exit status 1).
_DIVERGED = re.compile(r"lvae_np\.train: error: the loss became \S+ in epoch (\d+)")
_TRAIN_START = re.compile(r"^lvae_np\.train: .* run folder ", re.MULTILINE)


class ExperimentError(Exception):
    """Bad input or a run folder that disagrees with the experiment (one-line message)."""


# ----------------------------------------------------------------------------
# What runs
# ----------------------------------------------------------------------------
@dataclass(frozen=True)
class RunSpec:
    """The settings that make one run of an experiment.

    Parameters
    ----------
    dataset : one of ``lvae_np.data.DATASETS``.
    model : "vae" (bottom-up inference) or "lvae" (top-down).
    latent, hidden : sizes of z_1 .. z_L and the widths of their blocks.
    batch_norm : Dense -> BatchNorm -> leaky ReLU blocks.
    warmup : beta rises over the experiment's ``warmup_epochs`` (else 0: none).
    """

    dataset: str = "mnist"
    model: str = "lvae"
    latent: tuple = PAPER_LATENT
    hidden: tuple = PAPER_HIDDEN
    batch_norm: bool = True
    warmup: bool = True

    def __post_init__(self):
        object.__setattr__(self, "latent", tuple(int(v) for v in self.latent))
        object.__setattr__(self, "hidden", tuple(int(v) for v in self.hidden))
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}: choose one of "
                             f"{', '.join(DATASETS)}")
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}: choose vae or lvae")
        if not self.latent or len(self.latent) != len(self.hidden):
            raise ValueError(f"latent {self.latent} and hidden {self.hidden} must give one "
                             "size per stochastic layer, at least one layer")
        if min(self.latent + self.hidden) < 1:
            raise ValueError(f"sizes must be positive: latent {self.latent}, "
                             f"hidden {self.hidden}")

    @classmethod
    def paper(cls, dataset: str, model: str, layers: int, *, batch_norm: bool = True,
              warmup: bool = True) -> "RunSpec":
        """The paper's model with ``layers`` stochastic layers (the first L paper sizes)."""
        if not 1 <= layers <= len(PAPER_LATENT):
            raise ValueError(f"layers must be between 1 and {len(PAPER_LATENT)}, got {layers}")
        return cls(dataset, model, PAPER_LATENT[:layers], PAPER_HIDDEN[:layers],
                   batch_norm, warmup)

    @property
    def layers(self) -> int:
        return len(self.latent)

    def run_id(self, seed: int = 0) -> str:
        """The canonical folder name, e.g. ``mnist-lvae-L5-bn-wu``.

        Sizes other than the paper's (the first L of ``PAPER_LATENT`` and
        ``PAPER_HIDDEN``) are spelled out (``-z4.2-h16.8``); a seed other than
        0 is appended (``-seed1``), so repeats with other seeds get their own
        folders.
        """
        parts = [self.dataset, self.model, f"L{self.layers}",
                 "bn" if self.batch_norm else "nobn", "wu" if self.warmup else "nowu"]
        if (self.latent, self.hidden) != (PAPER_LATENT[:self.layers],
                                          PAPER_HIDDEN[:self.layers]):
            parts += ["z" + ".".join(map(str, self.latent)),
                      "h" + ".".join(map(str, self.hidden))]
        if seed:
            parts.append(f"seed{seed}")
        return "-".join(parts)

    def train_config(self, *, epochs: int, warmup_epochs: int, batch_size: int,
                     seed: int) -> TrainConfig:
        """The TrainConfig this run is trained with (lvae_np.train's defaults elsewhere)."""
        return TrainConfig(model=self.model, dataset=self.dataset, latent=self.latent,
                           hidden=self.hidden, batch_norm=self.batch_norm,
                           warmup_epochs=warmup_epochs if self.warmup else 0, epochs=epochs,
                           batch_size=batch_size, seed=seed)


@dataclass(frozen=True)
class Experiment:
    """A named list of runs and what it compares."""

    name: str
    description: str
    specs: tuple


def _build_experiments() -> dict:
    # one layer: the VAE and the LVAE are the same model (see the module's docstring)
    depth = (RunSpec.paper("mnist", "vae", 1),) + tuple(
        RunSpec.paper("mnist", m, n) for n in range(2, 6) for m in MODELS)
    ablation = tuple(RunSpec.paper("mnist", m, 5, batch_norm=bn, warmup=wu)
                     for bn, wu in ((False, False), (True, False), (False, True), (True, True))
                     for m in MODELS)
    omniglot = tuple(RunSpec.paper("omniglot", m, 5) for m in MODELS)
    union = tuple(dict.fromkeys(depth + ablation + omniglot))
    return {e.name: e for e in (
        Experiment("mnist-depth", "VAE and LVAE on MNIST with 1 to 5 stochastic layers, "
                                  "batch norm and warm-up on", depth),
        Experiment("mnist-ablation", "the 5-layer VAE and LVAE on MNIST without and with "
                                     "batch norm (BN) and warm-up (WU)", ablation),
        Experiment("omniglot", "the 5-layer VAE and LVAE on OMNIGLOT, BN and WU on", omniglot),
        Experiment("all", "every run above, each once", union),
    )}


EXPERIMENTS = _build_experiments()


# ----------------------------------------------------------------------------
# A run folder's state
# ----------------------------------------------------------------------------
def saved_meta(run_dir) -> dict | None:
    """The ``meta`` record of ``run_dir``'s checkpoint (config, epoch, batch), or None.

    Reads only that record, not the arrays. Raises ExperimentError for a
    checkpoint that exists but cannot be read.
    """
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        return None
    try:
        with numpy.load(path, allow_pickle=False) as archive:
            return json.loads(str(archive["meta"]))
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise ExperimentError(f"{path} is not a readable checkpoint ({exc}); move it away "
                              "to train that run afresh") from None


def config_mismatches(expected: TrainConfig, meta: dict) -> list:
    """(setting, saved value, wanted value) for each setting --resume cannot change."""
    saved = _config_from_meta(meta)
    out = []
    for f in fields(TrainConfig):
        if f.name in RESUMABLE or f.name == "data_variant":
            continue
        have, want = getattr(saved, f.name), getattr(expected, f.name)
        if have != want:
            out.append((f.name, have, want))
    return out


def eval_path(run_dir, iw_samples: int, limit: int | None) -> Path:
    """Where a run's test-set evaluation with K samples (and a limit) is kept."""
    return Path(run_dir) / eval_file_name("test", iw_samples, limit)


def cached_eval(run_dir, iw_samples: int, limit: int | None, epoch: int | None) -> dict | None:
    """The stored evaluation when it is of ``epoch`` with the same K and limit, else None."""
    result = read_eval(run_dir, iw_samples, limit)
    if result is None or result.get("epoch") != epoch or result.get("limit") != limit \
            or result.get("iw_samples", 0) != iw_samples:
        return None
    return result


def read_eval(run_dir, iw_samples: int, limit: int | None) -> dict | None:
    """The stored evaluation (any epoch), or None when there is none or it is unreadable."""
    path = eval_path(run_dir, iw_samples, limit)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def logged_divergence(log_text: str) -> int | None:
    """The epoch in which the last training in ``log_text`` hit a non-finite loss, if it did."""
    starts = [m.start() for m in _TRAIN_START.finditer(log_text)]
    hits = list(_DIVERGED.finditer(log_text))
    if not hits or (starts and hits[-1].start() < starts[-1]):
        return None
    return int(hits[-1].group(1))


def last_test_elbo(run_dir) -> float | None:
    """The test ELBO of the last evaluated epoch in ``metrics.csv`` (running BN averages)."""
    try:
        with open(Path(run_dir) / "metrics.csv", newline="") as f:
            values = [r.get("test_elbo") or "" for r in csv.DictReader(f)]
    except OSError:
        return None
    for v in reversed(values):
        try:
            return float(v)
        except ValueError:
            continue
    return None


def child_env(jobs: int, environ=None) -> dict:
    """The environment of a child process: BLAS/OpenMP threads = cpu_count // jobs (>= 1).

    Variables the user set already are kept.
    """
    env = dict(os.environ if environ is None else environ)
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    for name in THREAD_VARS:
        if not env.get(name):
            env[name] = threads
    return env


# ----------------------------------------------------------------------------
# Commands
# ----------------------------------------------------------------------------
@dataclass
class Settings:
    """The options of one invocation, shared by all its runs."""

    epochs: int = 2000
    warmup_epochs: int = 200
    jobs: int = 1
    runs_dir: Path = DEFAULT_RUNS_DIR
    iw_samples: int = 5000
    eval_limit: int | None = None
    train: bool = True
    evaluate: bool = True
    batch_size: int = 256
    seed: int = 0
    backend: str = "auto"
    data_dir: str | None = None
    progress: bool = True

    def check(self) -> None:
        """Raise ExperimentError for a value out of range."""
        for name, low in (("epochs", 1), ("warmup_epochs", 0), ("jobs", 1), ("iw_samples", 0),
                          ("batch_size", 1), ("seed", 0)):
            if getattr(self, name) < low:
                raise ExperimentError(f"--{name.replace('_', '-')} must be >= {low}, "
                                      f"got {getattr(self, name)}")
        if self.eval_limit is not None and self.eval_limit < 1:
            raise ExperimentError(f"--eval-limit must be >= 1, got {self.eval_limit}")

    def config(self, spec: RunSpec) -> TrainConfig:
        return spec.train_config(epochs=self.epochs, warmup_epochs=self.warmup_epochs,
                                 batch_size=self.batch_size, seed=self.seed)


def train_command(spec: RunSpec, run_dir: Path, settings: Settings, resume: bool) -> list:
    """The ``lvae_np.train`` command line of a run (fresh, or continuing its checkpoint)."""
    cmd = [sys.executable, "-m", "lvae_np.train", "--out", str(run_dir),
           "--epochs", str(settings.epochs), "--backend", settings.backend, "--no-progress"]
    if settings.data_dir:
        cmd += ["--data-dir", str(settings.data_dir)]
    if resume:
        return cmd + ["--resume"]
    cfg = settings.config(spec)
    return cmd + ["--model", cfg.model, "--dataset", cfg.dataset,
                  "--latent", ",".join(map(str, cfg.latent)),
                  "--hidden", ",".join(map(str, cfg.hidden)),
                  "--batch-norm" if cfg.batch_norm else "--no-batch-norm",
                  "--warmup-epochs", str(cfg.warmup_epochs),
                  "--batch-size", str(cfg.batch_size), "--seed", str(cfg.seed)]


def evaluate_command(run_dir: Path, settings: Settings) -> list:
    """The ``lvae_np.evaluate`` command line of a run; it writes ``eval_path``'s file."""
    cmd = [sys.executable, "-m", "lvae_np.evaluate", str(run_dir),
           "--iw-samples", str(settings.iw_samples), "--backend", settings.backend,
           "--seed", str(settings.seed), "--per-example", "--no-progress"]
    if settings.eval_limit is not None:
        cmd += ["--limit", str(settings.eval_limit)]
    if settings.data_dir:
        cmd += ["--data-dir", str(settings.data_dir)]
    return cmd


# ----------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------
@dataclass
class RunRecord:
    """What happened to one run in this invocation, and where it stands."""

    spec: RunSpec
    run_id: str
    run_dir: Path
    target: int
    epoch: int | None = None          # epochs done (None: no checkpoint)
    batch: int = 0                    # batches done in the epoch under way
    trained: bool = False             # a training ran in this invocation
    evaluated: bool = False           # an evaluation ran in this invocation
    eval: dict | None = None          # the evaluation of the current checkpoint
    train_failed: bool = False
    eval_failed: bool = False
    interrupted: bool = False
    diverged_at: int | None = None
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        """Failed for a reason other than divergence."""
        return self.train_failed or self.eval_failed

    @property
    def status(self) -> str:
        """Where the run stands, in words (the table's status column)."""
        if self.train_failed:
            text = f"failed, see {LOG}"
        elif self.diverged_at is not None:
            text = f"diverged at epoch {self.diverged_at}"
        elif self.epoch is None:
            text = "not started"
        elif self.interrupted or self.batch:
            text = f"interrupted in epoch {self.epoch + 1}"
        elif self.epoch >= self.target:
            text = "done"
        else:
            text = f"stopped at epoch {self.epoch} of {self.target}"
        if self.eval_failed:
            text += f"; evaluation failed, see {LOG}"
        return text

    def refresh(self) -> None:
        """Re-read epochs done from the checkpoint."""
        meta = saved_meta(self.run_dir)
        self.epoch, self.batch = (None, 0) if meta is None else (int(meta["epoch"]),
                                                                 int(meta.get("batch", 0)))

    def line(self, iw_samples: int) -> str:
        """One line for the log: id, status, epoch, last test ELBO, L_K, seconds."""
        elbo = last_test_elbo(self.run_dir)
        parts = [self.run_id, self.status,
                 f"epoch {'-' if self.epoch is None else self.epoch}/{self.target}",
                 f"test ELBO {_num(elbo)}"]
        if self.eval and "lk" in self.eval:
            parts.append(f"L_{iw_samples} {self.eval['lk']:.2f}")
        parts.append(f"{self.seconds:.0f} s")
        return " | ".join(parts)


@dataclass
class Report:
    """The outcome of ``run_experiment``: one record per run, exit status, files written."""

    records: list
    exit_status: int
    interrupted: bool = False
    written: list = field(default_factory=list)
    notes: list = field(default_factory=list)


class _Job:
    """One run's remaining steps ("train", then "eval") and its running subprocess."""

    def __init__(self, record: RunRecord, steps: list):
        self.record, self.steps = record, deque(steps)
        self.proc = None
        self.step = None
        self.log_offset = 0
        self.started = None
        self.signals = 0             # SIGTERMs forwarded to the running step


class _Runner:
    """Starts up to ``jobs`` subprocesses, collects their results, forwards signals."""

    def __init__(self, settings: Settings):
        self.s = settings
        self.env = child_env(settings.jobs)
        self.active: list[_Job] = []
        self.stopping = 0  # signals received

    # -- signals ---------------------------------------------------------------
    def request_stop(self, signum=None, frame=None):
        """A signal handler: start nothing more, and have the loop forward a SIGTERM.

        The loop sends each running child one SIGTERM per signal received here:
        lvae_np.train stops at the next batch boundary and writes its checkpoint
        on the first, and stops at once on a second.
        """
        self.stopping += 1

    def forward_signals(self) -> None:
        for job in self.active:
            while job.signals < self.stopping and job.proc is not None \
                    and job.proc.poll() is None:
                job.signals += 1
                try:
                    job.proc.send_signal(signal.SIGTERM)
                except OSError:
                    pass

    # -- steps -------------------------------------------------------------------
    def start(self, job: _Job) -> bool:
        """Start the job's next step that is still needed; False when none is left."""
        rec = job.record
        while job.steps:
            step = job.steps.popleft()
            if step == "train":
                if rec.epoch is not None and rec.epoch >= rec.target and not rec.batch:
                    continue
                cmd = train_command(rec.spec, rec.run_dir, self.s, resume=rec.epoch is not None)
            else:
                if rec.epoch is None or rec.batch or rec.train_failed or rec.interrupted:
                    continue
                rec.eval = cached_eval(rec.run_dir, self.s.iw_samples, self.s.eval_limit,
                                       rec.epoch)
                if rec.eval is not None:
                    continue
                cmd = evaluate_command(rec.run_dir, self.s)
            self._launch(job, step, cmd)
            return True
        return False

    def _launch(self, job: _Job, step: str, cmd: list) -> None:
        rec = job.record
        rec.run_dir.mkdir(parents=True, exist_ok=True)
        log = open(rec.run_dir / LOG, "a")
        log.write(f"\n==> {time.strftime('%Y-%m-%d %H:%M:%S')} lvae_np.experiments: "
                  f"{shlex.join(cmd)}\n")
        log.flush()
        job.log_offset = log.tell()
        try:
            # A new session: a Ctrl-C in the terminal reaches only this process, which
            # forwards one SIGTERM (lvae_np.train treats a second signal as "stop now").
            job.proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=self.env,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            log.close()
        job.step, job.signals = step, 0
        if step == "train":
            rec.trained = True

    def finish(self, job: _Job) -> None:
        """Record the result of the job's finished step."""
        rec, rc = job.record, job.proc.returncode
        job.proc = None
        if job.step == "train":
            rec.refresh()
            if rc == 0:
                return
            if rc in (130, -signal.SIGTERM, -signal.SIGINT) and self.stopping:
                rec.interrupted = True
                return
            section = _read_from(rec.run_dir / LOG, job.log_offset)
            diverged = logged_divergence(section) if rc == 1 else None
            if diverged is not None:
                rec.diverged_at = diverged
            else:
                rec.train_failed = True
            return
        # evaluation: lvae_np.evaluate has written its result to eval_path's file
        if rc != 0:
            rec.eval_failed = not self.stopping  # an interrupted evaluation is no failure
            return
        rec.eval = cached_eval(rec.run_dir, self.s.iw_samples, self.s.eval_limit, rec.epoch)
        if rec.eval is None:
            path = eval_path(rec.run_dir, self.s.iw_samples, self.s.eval_limit)
            with open(rec.run_dir / LOG, "a") as log:
                log.write("lvae_np.experiments: lvae_np.evaluate wrote no result for epoch "
                          f"{rec.epoch} to {path}\n")
            rec.eval_failed = True
            return
        rec.evaluated = True

    # -- the loop ------------------------------------------------------------------
    def run(self, jobs: list, done) -> None:
        """Run all jobs, at most ``settings.jobs`` subprocesses at once; ``done(record)`` each."""
        pending = deque(jobs)
        try:
            while pending or self.active:
                self.forward_signals()
                while not self.stopping and pending and len(self.active) < self.s.jobs:
                    job = pending.popleft()
                    job.started = time.perf_counter()
                    if self.start(job):
                        self.active.append(job)
                    else:
                        done(job.record)
                for job in list(self.active):
                    if job.proc.poll() is None:
                        continue
                    self.finish(job)
                    job.record.seconds += time.perf_counter() - job.started
                    job.started = time.perf_counter()
                    if self.stopping or not self.start(job):
                        self.active.remove(job)
                        done(job.record)
                if self.stopping and not self.active:
                    break
                time.sleep(POLL_SECONDS)
        finally:
            for job in self.active:  # only after an error in this process
                if job.proc is not None and job.proc.poll() is None:
                    job.proc.terminate()
                    job.proc.wait()


def _read_from(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def prepare(specs, settings: Settings) -> list:
    """A record per distinct run, with its state on disk; checks saved settings first.

    Raises ExperimentError when a run folder was trained with a setting that
    ``--resume`` cannot change and that differs from this experiment's.
    """
    records, seen = [], set()
    for spec in specs:
        run_id = spec.run_id(settings.seed)
        if run_id in seen:
            continue
        seen.add(run_id)
        rec = RunRecord(spec, run_id, Path(settings.runs_dir) / run_id, settings.epochs)
        meta = saved_meta(rec.run_dir)
        if meta is not None:
            bad = config_mismatches(settings.config(spec), meta)
            if bad:
                what = "; ".join(f"{name} is {have!r} there but {want!r} here"
                                 for name, have, want in bad)
                raise ExperimentError(
                    f"run {run_id} ({rec.run_dir}) was trained with other settings: {what}. "
                    "--resume cannot change them: use the options it was started with, "
                    "another --runs-dir, or move that folder away")
        rec.refresh()
        records.append(rec)
    return records


def lock_runs(records: list, create: bool) -> list:
    """Mark the run folders as in use by this process; returns the lock files made.

    Two runners sharing a run (``mnist-depth`` and ``mnist-ablation`` share
    the 5-layer runs) would train it twice over. A lock left by a process of
    this machine that no longer exists is taken over. ``create``: make the
    folders that do not exist yet (else they are not locked).

    Raises ExperimentError, having released what it took, when a run is in use.
    """
    host, taken = socket.gethostname(), []
    try:
        for rec in records:
            if create:
                rec.run_dir.mkdir(parents=True, exist_ok=True)
            elif not rec.run_dir.is_dir():
                continue
            path = rec.run_dir / LOCK
            while True:
                try:
                    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                except FileExistsError:
                    owner = _lock_owner(path, host)
                    if owner is None:
                        path.unlink(missing_ok=True)   # stale: its process is gone
                        continue
                    raise ExperimentError(
                        f"run {rec.run_id} is in use by another lvae_np.experiments "
                        f"({owner}); wait for it to finish, or remove {path} if that "
                        "process is gone") from None
                with os.fdopen(fd, "w") as f:
                    f.write(f"{os.getpid()} {host}\n")
                taken.append(path)
                break
    except BaseException:
        unlock_runs(taken)
        raise
    return taken


def _lock_owner(path: Path, host: str) -> str | None:
    """'process P on HOST' holding the lock, or None when it is stale (or unreadable)."""
    try:
        pid_text, _, owner_host = path.read_text().strip().partition(" ")
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    if owner_host == host:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
    return f"process {pid} on {owner_host}"


def unlock_runs(paths: list) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _note_logged_divergence(rec: RunRecord) -> None:
    """Mark a run whose last training diverged (and has not moved since) as diverged."""
    if rec.diverged_at is not None or rec.train_failed:
        return
    try:
        text = (rec.run_dir / LOG).read_text(errors="replace")
    except OSError:
        return
    epoch = logged_divergence(text)
    if epoch is not None and (rec.epoch or 0) == epoch - 1 and not rec.batch:
        rec.diverged_at = epoch


def run_experiment(specs, *, epochs: int = 2000, warmup_epochs: int = 200, jobs: int = 1,
                   runs_dir=DEFAULT_RUNS_DIR, out=None, iw_samples: int = 5000,
                   eval_limit: int | None = None, train: bool = True, evaluate: bool = True,
                   batch_size: int = 256, seed: int = 0, backend: str = "auto",
                   data_dir=None, progress: bool = True, name: str = "experiment",
                   command: str | None = None, stream=None) -> Report:
    """Train, evaluate and tabulate the runs ``specs``.

    Parameters
    ----------
    specs : iterable of RunSpec; runs with the same id are run once.
    epochs : target epochs of every run (a run past it is left as it is).
    warmup_epochs : warm-up of the runs with ``warmup`` on (the others get 0).
    jobs : subprocesses at once.
    runs_dir : folder holding one folder per run id.
    out : where results.md, results.csv and the figures go (None: not written).
    iw_samples, eval_limit : L_K with K samples on the first ``eval_limit`` test
        examples (None: all); ``iw_samples=0`` evaluates the ELBO only.
    train, evaluate : False skips that step (what exists is still tabulated).
    batch_size, seed, backend, data_dir : passed to lvae_np.train (and the last
        three to lvae_np.evaluate).
    progress : a progress bar over runs on stderr when it is a terminal.
    name, command : the experiment's name and the command that produced the
        results, for the heading of results.md.
    stream : where the one-line summaries go (default sys.stdout).

    Returns
    -------
    Report : records, and ``exit_status`` 0 (all done, or diverged), 1 (some
        run failed otherwise) or 130 (interrupted by SIGINT/SIGTERM).

    Raises
    ------
    ExperimentError : bad settings, or a run folder trained with other settings.
    """
    s = Settings(epochs=epochs, warmup_epochs=warmup_epochs, jobs=jobs,
                 runs_dir=Path(runs_dir), iw_samples=iw_samples, eval_limit=eval_limit,
                 train=train, evaluate=evaluate, batch_size=batch_size, seed=seed,
                 backend=backend, data_dir=data_dir, progress=progress)
    s.check()
    stream = sys.stdout if stream is None else stream
    records = prepare(list(specs), s)
    for rec in records:
        rec.run_dir = rec.run_dir.absolute()
    steps = ["train"] * s.train + ["eval"] * s.evaluate
    locks = lock_runs(records, create=s.train) if steps else []
    bar = None
    if progress and sys.stderr.isatty() and records:
        from tqdm import tqdm
        bar = tqdm(total=len(records), desc="runs", unit="run", file=sys.stderr,
                   dynamic_ncols=True)

    def done(rec: RunRecord) -> None:
        if rec.eval is None:
            rec.eval = cached_eval(rec.run_dir, s.iw_samples, s.eval_limit, rec.epoch)
        if not rec.trained:
            _note_logged_divergence(rec)
        line = rec.line(s.iw_samples)
        if bar is not None:
            bar.write(line, file=stream)
            bar.update(1)
        else:
            print(line, file=stream, flush=True)

    runner = _Runner(s)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, runner.request_stop)
                    for sig in (signal.SIGINT, signal.SIGTERM)}
    t0 = time.perf_counter()
    try:
        runner.run([_Job(rec, steps) for rec in records], done)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        unlock_runs(locks)
        if bar is not None:
            bar.close()
    if command is None:
        command = _command_line(name, s, out)
    if runner.stopping:
        print("lvae_np.experiments: interrupted; the trainings under way stopped at a batch "
              f"boundary and wrote their checkpoints. Continue with:\n  {command}",
              file=sys.stderr, flush=True)
        return Report(records, 130, interrupted=True)
    report = Report(records, 1 if any(r.failed for r in records) else 0)
    if out is not None:
        report.written, report.notes = write_results(
            records, Path(out), settings=s, name=name, command=command,
            seconds=time.perf_counter() - t0)
        for note in report.notes:
            print(f"lvae_np.experiments: note: {note}", file=stream, flush=True)
    failed = [r.run_id for r in records if r.failed]
    if failed:
        print(f"lvae_np.experiments: error: {len(failed)} run(s) failed: {', '.join(failed)} "
              f"(see {LOG} in each run folder)", file=sys.stderr, flush=True)
    return report


def _command_line(name: str, s: Settings, out) -> str:
    """The command line that reproduces these settings (defaults left out)."""
    d = Settings()
    parts = ["python", "-m", "lvae_np.experiments", name]
    for f in fields(Settings):
        value, default = getattr(s, f.name), getattr(d, f.name)
        flag = "--" + f.name.replace("_", "-")
        if f.name in ("train", "evaluate", "progress"):
            if not value:
                parts.append({"train": "--no-train", "evaluate": "--no-eval",
                              "progress": "--no-progress"}[f.name])
        elif value != default and value is not None:
            parts += [flag, str(value)]
    if out is not None and Path(out) != DEFAULT_OUT_DIR / name:
        parts += ["--out", str(out)]
    return shlex.join(parts)


# ----------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------
def table_rows(records: list, settings: Settings) -> tuple[list, list]:
    """The results table as (columns, rows of dicts); missing values are None.

    Values come from each run's stored evaluation (``eval_path``), unchanged.
    """
    n_layers = max(r.spec.layers for r in records) if records else 0
    z = range(1, n_layers + 1)
    cols = (["run_id", "dataset", "model", "layers", "latent", "batch_norm", "warmup",
             "warmup_epochs", "epochs_done", "target_epochs", "status", "eval_epoch",
             "test_elbo", "lk", "lk_stderr", "iw_samples", "n"]
            + [f"kl_z{i}" for i in z] + [f"au_z{i}" for i in z] + [f"au_kl_z{i}" for i in z])
    rows = []
    for rec in records:
        spec, ev = rec.spec, rec.eval or {}
        row = dict.fromkeys(cols)
        row.update(run_id=rec.run_id, dataset=spec.dataset, model=spec.model,
                   layers=spec.layers, latent="/".join(map(str, spec.latent)),
                   batch_norm=spec.batch_norm, warmup=spec.warmup,
                   warmup_epochs=settings.warmup_epochs if spec.warmup else 0,
                   epochs_done=rec.epoch, target_epochs=rec.target, status=rec.status)
        if ev:
            row.update(eval_epoch=ev.get("epoch"), test_elbo=ev.get("elbo"), lk=ev.get("lk"),
                       lk_stderr=ev.get("lk_stderr"), iw_samples=ev.get("iw_samples"),
                       n=ev.get("n"))
            for key, prefix in (("kl", "kl_z"), ("active_units", "au_z"),
                                ("active_units_kl", "au_kl_z")):
                for i, v in enumerate(ev.get(key) or [], start=1):
                    row[f"{prefix}{i}"] = v
        rows.append(row)
    return cols, rows


def paired_differences(records: list) -> list:
    """L_K of the LVAE minus the VAE's, example by example, for runs that differ only in model.

    For each (dataset, sizes, BN, WU) with an evaluated VAE and LVAE whose
    per-example values cover the same test examples, a dict with both means,
    the mean difference and its standard error. The per-example difference
    removes the variation between images, which dominates each model's own
    standard error.
    """
    by_key = {}
    for rec in records:
        s = rec.spec
        by_key.setdefault((s.dataset, s.latent, s.hidden, s.batch_norm, s.warmup),
                          {})[s.model] = rec
    out = []
    for (dataset, latent, _, bn, wu), pair in by_key.items():
        vae, lvae = pair.get("vae"), pair.get("lvae")
        ev = [r.eval if r is not None else None for r in (vae, lvae)]
        if any(e is None or "lk_per_example" not in e for e in ev) or \
                len(ev[0]["lk_per_example"]) != len(ev[1]["lk_per_example"]) or \
                ev[0].get("limit") != ev[1].get("limit"):
            continue
        d = numpy.asarray(ev[1]["lk_per_example"]) - numpy.asarray(ev[0]["lk_per_example"])
        out.append(dict(dataset=dataset, layers=len(latent), batch_norm=bn, warmup=wu,
                        epochs=(ev[0].get("epoch"), ev[1].get("epoch")), n=len(d),
                        vae=ev[0]["lk"], lvae=ev[1]["lk"], diff=float(d.mean()),
                        diff_stderr=float(d.std(ddof=1) / math.sqrt(len(d)))
                        if len(d) > 1 else 0.0))
    return out


def _csv_value(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _num(v, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}f}"


def _per_layer(row: dict, prefix: str, layers: int, fmt) -> str:
    values = [row.get(f"{prefix}{i}") for i in range(1, layers + 1)]
    if all(v is None for v in values):
        return "-"
    return " / ".join("-" if v is None else fmt(v) for v in values)


def format_csv(cols: list, rows: list) -> str:
    """results.csv: one row per run; missing values are empty cells; floats in full."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(cols)
    for row in rows:
        writer.writerow([_csv_value(row[c]) for c in cols])
    return buf.getvalue()


def format_markdown(rows: list, settings: Settings, *, name: str, command: str,
                    seconds: float, figures: list, notes: list, paired: list = ()) -> str:
    """results.md: how it was made, the budget, the table (missing values: "-"), figures."""
    k = settings.iw_samples
    test = "the whole test set" if settings.eval_limit is None else \
        f"the first {settings.eval_limit} test examples"
    lines = [
        f"Produced by `{command}` on {time.strftime('%Y-%m-%d %H:%M')} "
        f"({seconds:.0f} s this time).",
        "",
        f"Experiment `{name}`: {len(rows)} runs in `{settings.runs_dir}`. Budget: "
        f"{settings.epochs} epochs per run, warm-up over {settings.warmup_epochs} epochs where "
        f"WU is on (else none), batch {settings.batch_size}, seed {settings.seed}; "
        + (f"evaluated by `lvae_np.evaluate` with L_{k} on {test} "
           f"(batch-norm statistics re-collected over the training set)."
           if k else f"evaluated by `lvae_np.evaluate` (ELBO only) on {test}."),
        "",
        f"| run | model | layers | BN | WU | epochs | status | test ELBO | L_{k} (s.e., n) "
        "| KL per layer, z1/.../zL (nats) | active units A_u | units with KL > 0.01 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lk = "-" if r["lk"] is None else \
            f"{r['lk']:.2f} ({_num(r['lk_stderr'])}, {r['n']})"
        epochs = f"{'-' if r['epochs_done'] is None else r['epochs_done']}/{r['target_epochs']}"
        L = r["layers"]
        lines.append(" | ".join([
            f"| {r['run_id']}", "VAE = LVAE" if L == 1 else r["model"].upper(),
            f"{L} ({r['latent']})",
            "on" if r["batch_norm"] else "off", "on" if r["warmup"] else "off", epochs,
            r["status"], _num(r["test_elbo"]), lk,
            _per_layer(r, "kl_z", L, lambda v: f"{v:.2f}"),
            _per_layer(r, "au_z", L, str), _per_layer(r, "au_kl_z", L, str)]) + " |")
    lines += ["", "Columns: `epochs` is epochs done / target; test ELBO, L_K, KL and active "
              "units come from each run's evaluation at the epoch it had then (its JSON file "
              "in the run folder). A_u counts units whose posterior mean varies over the test "
              "inputs with variance above 0.01 (Burda et al.); the last column counts units "
              "whose KL averages above 0.01 nats. \"-\": no value (not evaluated, or the run "
              "has fewer layers). `results.csv` holds the same values in full precision."]
    if paired:
        lines += ["", f"LVAE minus VAE in L_{k}, example by example on the same test "
                  "examples (positive: the LVAE is better); the standard error is that of the "
                  "paired difference:", "",
                  f"| dataset | layers | BN | WU | epochs (VAE, LVAE) | n | VAE L_{k} "
                  f"| LVAE L_{k} | LVAE - VAE (s.e.) |", "|---|---|---|---|---|---|---|---|---|"]
        for q in paired:
            lines.append(f"| {q['dataset']} | {q['layers']} | {'on' if q['batch_norm'] else 'off'}"
                         f" | {'on' if q['warmup'] else 'off'} | {q['epochs'][0]}, "
                         f"{q['epochs'][1]} | {q['n']} | {q['vae']:.2f} | {q['lvae']:.2f} | "
                         f"{q['diff']:+.2f} ({q['diff_stderr']:.2f}) |")
    if figures:
        lines += [""] + [f"![{Path(p).stem}]({Path(p).name})" for p in figures]
    if notes:
        lines += [""] + [f"Note: {n}" for n in notes]
    return "\n".join(lines) + "\n"


def write_results(records: list, out: Path, *, settings: Settings, name: str, command: str,
                  seconds: float = 0.0) -> tuple[list, list]:
    """Write results.csv, the figures and results.md to ``out``; (paths written, notes)."""
    cols, rows = table_rows(records, settings)
    figures, notes = draw_figures(records, out)
    md = format_markdown(rows, settings, name=name, command=command, seconds=seconds,
                         figures=figures, notes=notes, paired=paired_differences(records))
    written = []
    for file_name, text in (("results.csv", format_csv(cols, rows)), ("results.md", md)):
        atomic_write(out / file_name, lambda f, t=text: f.write(t.encode()))
        written.append(out / file_name)
    return written + figures, notes


# ----------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------
MODEL_STYLE = {"vae": dict(linestyle="--", colour="tab:orange", label="VAE"),
               "lvae": dict(linestyle="-", colour="tab:blue", label="LVAE")}


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _layers(n: int) -> str:
    return f"{n} layer{'s' if n != 1 else ''}"


def _setting(spec: RunSpec) -> str:
    return f"{'BN' if spec.batch_norm else 'no BN'}, {'WU' if spec.warmup else 'no WU'}"


def plot_test_elbo(records: list):
    """Test ELBO per epoch from each run's metrics.csv: VAE dashed, LVAE solid.

    One panel per dataset; a VAE and an LVAE with the same layers and settings
    share a colour. Returns None when no run has a logged test ELBO.
    """
    from matplotlib import colormaps

    from .plots import PlotError, read_csv

    curves = []
    for rec in records:
        try:
            m = read_csv(rec.run_dir / "metrics.csv")
        except PlotError:
            continue
        ep, y = m.get("epoch"), m.get("test_elbo")
        if ep is None or y is None or not numpy.isfinite(y).any():
            continue
        ok = numpy.isfinite(y)
        curves.append((rec.spec, ep[ok], y[ok]))
    if not curves:
        return None
    datasets = list(dict.fromkeys(spec.dataset for spec, _, _ in curves))
    groups = list(dict.fromkeys((s.layers, s.latent, s.batch_norm, s.warmup)
                                for s, _, _ in curves))
    fig = _figure(6.5 * len(datasets) + 2.5, 4.8)
    axes = fig.subplots(1, len(datasets), squeeze=False)[0]
    for ax, dataset in zip(axes, datasets):
        lows, highs = [], []
        for spec, ep, y in curves:
            if spec.dataset != dataset:
                continue
            style = MODEL_STYLE[spec.model]
            colour = colormaps["tab10"](groups.index((spec.layers, spec.latent,
                                                      spec.batch_norm, spec.warmup)) % 10)
            ax.plot(ep, y, linestyle=style["linestyle"], color=colour,
                    marker="." if len(ep) < 30 else None,
                    label=f"{style['label']}, {_layers(spec.layers)}, {_setting(spec)}")
            # the first epochs (about a tenth) lie far below; fit the axis to the rest
            later = y[max(len(y) // 10, 1):] if len(y) > 3 else y
            lows.append(later.min())
            highs.append(y.max())
        if len(curves) > 1 and lows:
            lo, hi = min(lows), max(highs)
            span = max(hi - lo, 1e-3)
            ax.set_ylim(lo - 0.1 * span, hi + 0.1 * span)
        ax.set(xlabel="epoch", ylabel="test ELBO (nats, batch-norm running averages)",
               title=f"Test ELBO per epoch: {dataset}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def plot_depth(records: list):
    """Test L_K against the number of stochastic layers, VAE vs LVAE, with standard errors.

    Drawn for each (dataset, BN, WU) setting with at least two depths among
    the runs; returns None when none has two evaluated depths.
    """
    panels = {}
    for rec in records:
        key = (rec.spec.dataset, rec.spec.batch_norm, rec.spec.warmup)
        panels.setdefault(key, []).append(rec)
    panels = {k: v for k, v in panels.items()
              if len({r.spec.layers for r in v if r.eval and "lk" in r.eval}) >= 2}
    if not panels:
        return None
    fig = _figure(5.5 * len(panels), 4.5)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, ((dataset, bn, wu), recs) in zip(axes, panels.items()):
        k = next(r.eval["iw_samples"] for r in recs if r.eval and "lk" in r.eval)
        for model in MODELS:
            # with one layer the two models are one (mnist-depth runs it once, as the VAE)
            pts = sorted((r.spec.layers, r.eval["lk"], r.eval.get("lk_stderr", 0.0))
                         for r in recs if r.eval and "lk" in r.eval and (
                             r.spec.model == model or (r.spec.layers == 1 and not any(
                                 o.spec.layers == 1 and o.spec.model == model for o in recs))))
            if not pts:
                continue
            x, y, e = map(numpy.array, zip(*pts))
            style = MODEL_STYLE[model]
            ax.errorbar(x, y, yerr=e, linestyle=style["linestyle"], color=style["colour"],
                        marker="o", capsize=4, label=style["label"])
        ax.set_xticks(sorted({r.spec.layers for r in recs}))
        ax.set(xlabel="stochastic layers", ylabel=f"test L_{k} (nats; bars: 1 s.e.)",
               title=f"Log-likelihood by depth: {dataset}, "
                     f"{'BN' if bn else 'no BN'}, {'WU' if wu else 'no WU'}")
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


def plot_active_units(records: list):
    """Active units per layer of the deepest VAE and LVAE runs, as grouped bars.

    One panel per (dataset, settings) among the runs with the most layers of
    their dataset; per layer, for each model, the units with KL > 0.01 (solid)
    and A_u (hatched). Returns None when none of those runs was evaluated.
    """
    from matplotlib.patches import Patch

    deepest = {}
    for rec in records:
        deepest[rec.spec.dataset] = max(deepest.get(rec.spec.dataset, 0), rec.spec.layers)
    panels = {}
    for rec in records:
        s = rec.spec
        if s.layers == deepest[s.dataset] and rec.eval and rec.eval.get("active_units"):
            panels.setdefault((s.dataset, s.latent, s.batch_norm, s.warmup), {})[s.model] = rec
    if not panels:
        return None
    cols = min(len(panels), 3)
    rows = math.ceil(len(panels) / cols)
    fig = _figure(5.2 * cols, 4.2 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    width = 0.2
    for ax, ((dataset, latent, bn, wu), by_model) in zip(axes, panels.items()):
        x = numpy.arange(1, len(latent) + 1)
        slot = 0
        for model in MODELS:
            rec = by_model.get(model)
            for key, hatch, alpha in (("active_units_kl", None, 1.0),
                                      ("active_units", "//", 0.45)):
                pos = x + (slot - 1.5) * width
                slot += 1
                if rec is None or not rec.eval.get(key):
                    continue
                bars = ax.bar(pos, rec.eval[key], width, color=MODEL_STYLE[model]["colour"],
                              alpha=alpha, hatch=hatch, edgecolor="black", linewidth=0.5)
                ax.bar_label(bars, fontsize=6, padding=1)
        ax.set_xticks(x, [f"z{i}\n({d} units)" for i, d in zip(x, latent)])
        ax.set(xlabel="latent layer", ylabel="active units",
               title=f"{dataset}, {_layers(len(latent))}, "
                     f"{'BN' if bn else 'no BN'}, {'WU' if wu else 'no WU'}")
        ax.margins(y=0.15)
        ax.legend(handles=[Patch(facecolor=MODEL_STYLE[m]["colour"], edgecolor="black",
                                 alpha=a, hatch=h, label=f"{MODEL_STYLE[m]['label']}: {what}")
                           for m in MODELS for what, h, a in
                           (("KL > 0.01 nats", None, 1.0), ("A_u", "//", 0.45))], fontsize=7)
    return fig


def draw_figures(records: list, out: Path) -> tuple[list, list]:
    """Write test_elbo.png, depth.png and active_units.png where there is something to draw.

    Returns (paths written, notes on the figures skipped).
    """
    has_depth = len({(r.spec.dataset, r.spec.layers) for r in records}) > \
        len({r.spec.dataset for r in records})
    has_models = {r.spec.model for r in records} == set(MODELS)
    wanted = [("test_elbo", plot_test_elbo, "no run has a logged test ELBO yet"),
              ("depth", plot_depth if has_depth else None,
               "no setting has L_K results for two or more depths"),
              ("active_units", plot_active_units if has_models else None,
               "none of the deepest runs has an evaluation")]
    paths, notes = [], []
    for stem, draw, why in wanted:
        if draw is None:
            continue
        fig = draw(records)
        if fig is None:
            notes.append(f"{stem}.png skipped: {why}")
            continue
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI)
        path = out / f"{stem}.png"
        atomic_write(path, lambda f: f.write(buf.getvalue()))
        paths.append(path)
    return paths, notes


# ----------------------------------------------------------------------------
# Listing
# ----------------------------------------------------------------------------
def describe_runs(names: list, settings: Settings) -> str:
    """The experiments and their runs, each with epochs done / target and evaluation state."""
    lines = []
    for name in names:
        exp = EXPERIMENTS[name]
        lines.append(f"{name}: {exp.description} ({len(exp.specs)} runs)")
        for spec in exp.specs:
            run_id = spec.run_id(settings.seed)
            run_dir = Path(settings.runs_dir) / run_id
            try:
                meta = saved_meta(run_dir)
            except ExperimentError as exc:
                lines.append(f"  {run_id:<26} unreadable checkpoint: {exc}")
                continue
            if meta is None:
                lines.append(f"  {run_id:<26} not started")
                continue
            epoch, batch = int(meta["epoch"]), int(meta.get("batch", 0))
            state = f"{epoch}/{settings.epochs} epochs"
            if batch:
                state += f" (+{batch} batches)"
            stored = read_eval(run_dir, settings.iw_samples, settings.eval_limit)
            if stored is None:
                state += ", not evaluated"
            elif stored.get("epoch") == epoch:
                state += f", evaluated (L_{settings.iw_samples} {_num(stored.get('lk'))})"
            else:
                state += f", evaluated at epoch {stored.get('epoch')} (out of date)"
            bad = config_mismatches(settings.config(spec), meta)
            if bad:
                state += "; other settings: " + ", ".join(
                    f"{n} {h!r} (here {w!r})" for n, h, w in bad)
            lines.append(f"  {run_id:<26} {state}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------
DESCRIPTION = """\
Run the paper's comparisons. Each run of the experiment NAME is trained with
lvae_np.train (resuming what exists, up to --epochs), evaluated with
lvae_np.evaluate (test ELBO, L_K, KL and active units per layer), and the
results go to OUT/results.md, OUT/results.csv and figures (test_elbo.png,
depth.png, active_units.png). Runs live in RUNS_DIR/<run id>/, e.g.
mnist-lvae-L5-bn-wu, shared by the experiments that contain them; each keeps
the output of its trainings and evaluations in train.log. A run that diverges
(non-finite loss) is reported and the others go on. Ctrl-C stops the
trainings at a batch boundary with their checkpoints written; the same
command continues."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        raise ExperimentError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    d = Settings()
    epilog = "experiments:\n" + "\n".join(
        textwrap.fill(f"{e.description} ({len(e.specs)} runs)", 78,
                      initial_indent=f"  {e.name:<16}", subsequent_indent=" " * 18)
        for e in EXPERIMENTS.values())
    p = _Parser(prog="python -m lvae_np.experiments",
                description=DESCRIPTION,
                epilog=epilog, formatter_class=_Formatter)
    p.add_argument("name", nargs="?", choices=list(EXPERIMENTS), metavar="NAME",
                   help="the experiment: " + ", ".join(EXPERIMENTS))
    p.add_argument("--list", action="store_true",
                   help="list the experiments (or NAME's) with their run ids and states "
                        "(epochs done / target, evaluated or not); runs nothing")
    p.add_argument("--epochs", type=int, default=d.epochs,
                   help="target epochs of every run (the paper's: 2000); existing runs "
                        "resume up to it")
    p.add_argument("--warmup-epochs", type=int, default=d.warmup_epochs,
                   help="warm-up length of the runs with warm-up (the paper's: 200); runs "
                        "without warm-up get 0. Cannot change for an existing run")
    p.add_argument("--jobs", type=int, default=d.jobs,
                   help="trainings at once; each gets cpu_count // JOBS BLAS threads "
                        f"({', '.join(THREAD_VARS)}) unless set already")
    p.add_argument("--runs-dir", default=str(d.runs_dir), metavar="DIR",
                   help="folder of the run folders, shared by all experiments")
    p.add_argument("--out", metavar="DIR",
                   help=f"where results and figures go (default: {DEFAULT_OUT_DIR}/NAME)")
    p.add_argument("--iw-samples", type=int, default=d.iw_samples, metavar="K",
                   help="importance samples of the test L_K (0: ELBO only)")
    p.add_argument("--eval-limit", type=int, metavar="M",
                   help="evaluate on the first M test examples (default: all)")
    p.add_argument("--no-eval", action="store_true",
                   help="skip evaluations (stored ones of the same epoch still show)")
    p.add_argument("--no-train", action="store_true",
                   help="train nothing: evaluate and tabulate the runs as they are")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help="training batch size (cannot change for an existing run)")
    p.add_argument("--seed", type=int, default=d.seed,
                   help="seed of every run; other than 0 it is part of the run ids")
    p.add_argument("--backend", choices=BACKENDS, default=d.backend,
                   help="passed to lvae_np.train and lvae_np.evaluate")
    p.add_argument("--data-dir", metavar="DIR",
                   help=f"folder with the data files (also ${ENV_VAR})")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (the line per finished run still shows)")
    return p


class _Formatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown (as lvae_np.train's), the epilog's lines kept."""


def main(argv=None) -> int:
    """The command line; returns the exit status (2 with a one-line error)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
        settings = Settings(epochs=args.epochs, warmup_epochs=args.warmup_epochs,
                            jobs=args.jobs, runs_dir=Path(args.runs_dir),
                            iw_samples=args.iw_samples, eval_limit=args.eval_limit,
                            train=not args.no_train, evaluate=not args.no_eval,
                            batch_size=args.batch_size, seed=args.seed, backend=args.backend,
                            data_dir=args.data_dir, progress=not args.no_progress)
        settings.check()
        if args.list:
            print(describe_runs([args.name] if args.name else list(EXPERIMENTS), settings))
            return 0
        if args.name is None:
            raise ExperimentError("name an experiment (" + ", ".join(EXPERIMENTS)
                                  + "), or use --list (see --help)")
        out = Path(args.out) if args.out else DEFAULT_OUT_DIR / args.name
        report = run_experiment(
            EXPERIMENTS[args.name].specs, **asdict(settings),
            out=out, name=args.name,
            command=shlex.join(["python", "-m", "lvae_np.experiments"] + argv))
    except ExperimentError as exc:
        print(f"lvae_np.experiments: error: {exc}", file=sys.stderr)
        return 2
    return report.exit_status


if __name__ == "__main__":
    sys.exit(main())
