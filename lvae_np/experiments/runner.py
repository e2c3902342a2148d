"""Running an experiment: train and evaluate its runs in child processes, resuming and skipping.

Up to ``jobs`` children at once (``lvae_np.train``, then ``lvae_np.evaluate``
on the checkpoint), each limited to ``cpu_count // jobs`` BLAS/OpenMP threads
and with its output appended to the run's ``train.log``. A run that has its
epochs is not trained again, and an evaluation already stored for the
checkpoint's epoch is not made again. SIGINT and SIGTERM are forwarded to the
children as SIGTERM, so trainings stop at a batch boundary with their
checkpoints written, and the same command continues. The children end
with the runner however it ends (``executors``), a training found still
holding a run's lock is reported, not failed (``locks.check_no_orphans``), a
complete run's stale status file is corrected (``RunRecord.settle_status``),
and the results folder is replaced whole, its records checked first
(``records``).
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..training.fileio import atomic_write_text
from ..training.runs import STATUS, read_status
from ..training.train import command_line
from .executors import Submitter, die_with_parent, parse_options
from .locks import check_no_orphans, lock_runs, unlock_runs
from .records import check_results_folder, record_files, replace_folder
from .report import write_results
from .specs import DEFAULT_RUNS_DIR, LOG, ExperimentError, RunSpec, Settings, default_out
from .state import RunRecord, cached_eval, config_mismatches, eval_path, saved_meta

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
POLL_SECONDS = 0.05


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


def train_command(spec: RunSpec, run_dir: Path, settings: Settings, resume: bool) -> list:
    """The ``lvae_np.train`` command line of a run (fresh, or continuing its checkpoint).

    The run's seed is ``settings.seed`` (see ``Settings.for_seed``).
    """
    return command_line(settings.config(spec), run_dir, resume=resume,
                        backend=settings.backend, data_dir=settings.data_dir)


def evaluate_command(run_dir: Path, settings: Settings) -> list:
    """The ``lvae_np.evaluate`` command line of a run; it writes ``eval_path``'s file.

    The importance samples are seeded with the run's seed, ``settings.seed``; the
    examples of ``--eval-subset`` depend on ``settings.eval_subset_seed`` alone.
    """
    cmd = [sys.executable, "-m", "lvae_np.evaluate", str(run_dir),
           "--iw-samples", str(settings.iw_samples), "--backend", settings.backend,
           "--seed", str(settings.seed), "--per-example", "--no-progress"]
    if settings.eval_limit is not None:
        cmd += ["--limit", str(settings.eval_limit)]
    if settings.eval_subset is not None:
        cmd += ["--subset", str(settings.eval_subset),
                "--subset-seed", str(settings.eval_subset_seed)]
    if settings.data_dir:
        cmd += ["--data-dir", str(settings.data_dir)]
    return cmd


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
        self.status_file = None      # the status file's identity when the step started
        self.started = None
        self.signals = 0             # SIGTERMs forwarded to the running step


class _Runner:
    """Starts up to ``jobs`` subprocesses, collects their results, forwards signals."""

    def __init__(self, settings: Settings, stream=None):
        self.s = settings
        self.stream = sys.stdout if stream is None else stream
        self.env = child_env(settings.jobs)
        self.submitter = None
        if settings.executor == "pool" and settings.executor_options:
            raise ExperimentError(
                f"--executor-option {settings.executor_options[0]}: the pool executor (the "
                "default) takes no options; they are for --executor slurm or local")
        if settings.executor != "pool":  # SLURM jobs get their own CPUs: no thread counts
            threads = {} if settings.executor == "slurm" else \
                {name: self.env[name] for name in THREAD_VARS}
            self.submitter = Submitter(settings.executor,
                                       parse_options(settings.executor_options), threads)
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
        """Send each running child the SIGTERMs it has not had yet."""
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
                cmd = train_command(rec.spec, rec.run_dir, self.s.for_seed(rec.seed),
                                    resume=rec.epoch is not None)
            else:
                if rec.epoch is None or rec.batch or rec.train_failed or rec.interrupted:
                    continue
                problems = []
                rec.eval = cached_eval(rec.run_dir, self.s.iw_samples, self.s.eval_limit,
                                       rec.epoch, *self.s.eval_name()[1:], problems=problems)
                if rec.eval is not None:
                    continue
                for problem in problems:   # never trusted: made again
                    print(f"lvae_np.experiments: note: {problem}; evaluating run {rec.run_id} "
                          "again", file=self.stream, flush=True)
                cmd = evaluate_command(rec.run_dir, self.s.for_seed(rec.seed))
            self._launch(job, step, cmd)
            return True
        return False

    def _launch(self, job: _Job, step: str, cmd: list) -> None:
        rec = job.record
        rec.run_dir.mkdir(parents=True, exist_ok=True)
        where = "" if self.submitter is None else f" (a {self.s.executor} job)"
        header = (f"\n==> {time.strftime('%Y-%m-%d %H:%M:%S')} lvae_np.experiments{where}: "
                  f"{shlex.join(cmd)}\n")
        job.status_file = _identity(rec.run_dir / STATUS)
        if self.submitter is not None:
            # The job writes the header and its output itself: one that never starts (an
            # executor that refuses it) leaves no line in the log.
            job.proc = self.submitter.submit(cmd, rec.run_dir, header)
        else:
            with open(rec.run_dir / LOG, "a") as log:
                log.write(header)
                log.flush()
                # A new session: a Ctrl-C in the terminal reaches only this process, which
                # forwards one SIGTERM (lvae_np.train treats a second signal as "stop now").
                job.proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=self.env,
                                            stdin=subprocess.DEVNULL, start_new_session=True,
                                            preexec_fn=die_with_parent())
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
            # How this training ended, if it got as far as writing its status file (one
            # left by an earlier training says nothing of this one).
            status = read_status(rec.run_dir) \
                if _identity(rec.run_dir / STATUS) != job.status_file else None
            state = status["state"] if status else None
            if state == "diverged":
                rec.diverged_at = status["epoch"]
            elif self.stopping and (state == "interrupted" or rc in (
                    130, -signal.SIGTERM, -signal.SIGINT)):  # a child killed before it wrote
                rec.interrupted = True
            else:
                rec.train_failed = True
            return
        # evaluation: lvae_np.evaluate has written its result to eval_path's file
        if rc != 0:
            rec.eval_failed = not self.stopping  # an interrupted evaluation is no failure
            return
        rec.eval = cached_eval(rec.run_dir, self.s.iw_samples, self.s.eval_limit, rec.epoch,
                               *self.s.eval_name()[1:])
        if rec.eval is None:
            path = eval_path(rec.run_dir, self.s.iw_samples, *self.s.eval_name())
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


def _identity(path: Path) -> tuple | None:
    """(inode, mtime, size) of ``path``, None when missing: tells a rewritten file from the old."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def prepare(specs, settings: Settings) -> list:
    """A record per distinct run and seed, with its state on disk; checks saved settings first.

    Each spec is run with each of ``settings.run_seeds``, seed by seed.

    Raises:
        ExperimentError: a run folder was trained with a setting that
            ``--resume`` cannot change and that differs from this experiment's.
    """
    records, seen = [], set()
    for seed, spec in ((seed, spec) for seed in settings.run_seeds for spec in specs):
        run_id = spec.run_id(seed)
        if run_id in seen:
            continue
        seen.add(run_id)
        rec = RunRecord(spec, run_id, Path(settings.runs_dir) / run_id, settings.epochs,
                        seed=seed)
        meta = saved_meta(rec.run_dir)
        if meta is not None:
            bad = config_mismatches(settings.config(spec, seed), meta)
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


def run_experiment(specs, *, epochs: int = 2000, warmup_epochs: int = 200,
                   warmup_steps: int = 0, jobs: int = 1,
                   runs_dir=DEFAULT_RUNS_DIR, out=None, iw_samples: int = 5000,
                   eval_limit: int | None = None, eval_subset: int | None = None,
                   eval_subset_seed: int = 0, train: bool = True, evaluate: bool = True,
                   batch_size: int = 256, seed: int = 0, seeds: tuple = (),
                   backend: str = "auto",
                   data_dir=None, progress: bool = True, executor: str = "pool",
                   executor_options: tuple = (), name: str = "experiment",
                   command: str | None = None, stream=None) -> Report:
    """Train, evaluate and tabulate the runs ``specs``.

    Args:
        specs: iterable of RunSpec; runs with the same id are run once.
        epochs: target epochs of every run (a run past it is left as it is).
        warmup_epochs: warm-up of the runs with ``warmup`` on (the others get 0).
        warmup_steps: > 0: their warm-up in steps instead (``warmup_epochs`` must be 0).
        jobs: subprocesses at once.
        runs_dir: folder holding one folder per run id.
        out: where results.md, results.csv and the figures go (None: not written).
        iw_samples: L_K with K samples (0: the ELBO only).
        eval_limit: evaluate on the first ``eval_limit`` test examples (None: all;
            not a sample where the test set is ordered, as OMNIGLOT's is).
        eval_subset: evaluate on ``eval_subset`` test examples drawn by a permutation
            seeded with ``eval_subset_seed``: the same examples for every run
            (``lvae_np.evaluate --subset``); not with ``eval_limit``.
        eval_subset_seed: the seed of that permutation.
        train: False trains nothing (what exists is still tabulated).
        evaluate: False evaluates nothing (stored evaluations still show).
        batch_size: passed to lvae_np.train.
        seed: passed to lvae_np.train and lvae_np.evaluate.
        seeds: several seeds (``seed`` then 0): every run once per seed, and results.md
            gives each model's mean and spread across them.
        backend: passed to lvae_np.train and lvae_np.evaluate.
        data_dir: passed to lvae_np.train and lvae_np.evaluate.
        progress: a progress bar over runs on stderr when it is a terminal.
        executor: "pool" (subprocesses here), or submit each step through submitit:
            "slurm" (SLURM jobs) or "local" (its local executor), see ``executors``.
        executor_options: ``KEY=VALUE`` parameters of the submitit executor.
        name: the experiment's name, for the heading of results.md.
        command: the command that produced the results (default: rebuilt from
            the settings), for the heading of results.md.
        stream: where the one-line summaries go (default sys.stdout).

    Returns:
        Report: records, and ``exit_status`` 0 (all done, or diverged), 1 (some
        run failed otherwise) or 130 (interrupted by SIGINT/SIGTERM).

    Raises:
        ExperimentError: bad settings, or a run folder trained with other settings.
    """
    s = Settings(epochs=epochs, warmup_epochs=warmup_epochs, warmup_steps=warmup_steps,
                 jobs=jobs, runs_dir=Path(runs_dir), iw_samples=iw_samples, eval_limit=eval_limit,
                 eval_subset=eval_subset, eval_subset_seed=eval_subset_seed,
                 train=train, evaluate=evaluate, batch_size=batch_size, seed=seed,
                 seeds=tuple(seeds),
                 backend=backend, data_dir=data_dir, progress=progress, executor=executor,
                 executor_options=tuple(executor_options))
    s.check()
    stream = sys.stdout if stream is None else stream
    records = prepare(list(specs), s)
    for rec in records:
        rec.run_dir = rec.run_dir.absolute()
    steps = ["train"] * s.train + ["eval"] * s.evaluate
    if out is not None:
        check_results_folder(Path(out))   # before any work: it is to be replaced whole
    runner = _Runner(s, stream)   # before the locks: it may refuse (submitit missing, options)
    locks = lock_runs(records, create=s.train) if steps else []
    try:
        if steps:
            check_no_orphans(records)   # a training still under way: say so, not "failed"
    except BaseException:
        unlock_runs(locks)
        raise
    bar = None
    if progress and sys.stderr.isatty() and records:
        from tqdm import tqdm
        bar = tqdm(total=len(records), desc="runs", unit="run", file=sys.stderr,
                   dynamic_ncols=True)

    def done(rec: RunRecord) -> None:
        if rec.eval is None:
            problems = []
            rec.eval = cached_eval(rec.run_dir, s.iw_samples, s.eval_limit, rec.epoch,
                                   *s.eval_name()[1:], problems=problems)
            for problem in problems if not s.evaluate else ():
                print(f"lvae_np.experiments: note: {problem}; not shown: run without --no-eval "
                      f"to evaluate run {rec.run_id} again", file=stream, flush=True)
        if steps:   # this runner holds the run, and nothing trains in it now
            said = rec.settle_status()
            if said is not None:
                print(f"lvae_np.experiments: note: run {rec.run_id} is complete but its "
                      f"{STATUS} said {said}: corrected to done", file=stream, flush=True)
        if not rec.trained:
            rec.note_divergence()
        line = rec.line(s.iw_samples)
        if bar is not None:
            bar.write(line, file=stream)
            bar.update(1)
        else:
            print(line, file=stream, flush=True)

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
        command = _command_line(name, s, out, {r.spec.kl for r in records},
                                {r.spec.preset for r in records})
    if runner.stopping:
        print("lvae_np.experiments: interrupted; the trainings under way stopped at a batch "
              f"boundary and wrote their checkpoints. Continue with:\n  {command}",
              file=sys.stderr, flush=True)
        return Report(records, 130, interrupted=True)
    report = Report(records, 1 if any(r.failed for r in records) else 0)
    if out is not None:
        files = record_files(records, s)   # every record read and checked before any write
        seconds = time.perf_counter() - t0

        def fill(folder: Path) -> tuple:
            written, notes = write_results(records, folder, settings=s, name=name,
                                           command=command, seconds=seconds)
            for rel, text in files.items():
                atomic_write_text(folder / rel, text)
                written.append(folder / rel)
            return [Path(out) / p.relative_to(folder) for p in written], notes

        report.written, report.notes = replace_folder(Path(out), fill)
        for note in report.notes:
            print(f"lvae_np.experiments: note: {note}", file=stream, flush=True)
    failed = [r.run_id for r in records if r.failed]
    if failed:
        print(f"lvae_np.experiments: error: {len(failed)} run(s) failed: {', '.join(failed)} "
              f"(see {LOG} in each run folder)", file=sys.stderr, flush=True)
    return report


def _command_line(name: str, s: Settings, out, kls=(), presets=()) -> str:
    """The command line that reproduces these settings (defaults left out).

    ``kls``: the runs' KL estimators; one other than "analytic" gives ``--kl``.
    ``presets``: the runs' presets; one other than None gives ``--preset``.
    """
    d = Settings()
    parts = ["python", "-m", "lvae_np.experiments", name]
    for f in fields(Settings):
        value, default = getattr(s, f.name), getattr(d, f.name)
        flag = "--" + f.name.replace("_", "-")
        if f.name == "executor_options":
            for item in value:
                parts += ["--executor-option", item]
        elif f.name == "seeds":
            if value:
                parts += ["--seeds", ",".join(map(str, value))]
        elif f.name in ("train", "evaluate", "progress"):
            if not value:
                parts.append({"train": "--no-train", "evaluate": "--no-eval",
                              "progress": "--no-progress"}[f.name])
        elif value != default and value is not None:
            parts += [flag, str(value)]
    if len(presets) == 1 and set(presets) != {None}:
        parts += ["--preset", next(iter(presets))]
    if len(kls) == 1 and set(kls) != {"analytic"}:
        parts += ["--kl", next(iter(kls))]
    if out is not None and Path(out) == default_out(s.runs_dir, name, publish=True):
        parts.append("--publish")
    elif out is not None and Path(out) != default_out(s.runs_dir, name):
        parts += ["--out", str(out)]
    return shlex.join(parts)
