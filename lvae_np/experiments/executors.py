"""Runs as cluster jobs: each step of a run (train, evaluate) submitted through submitit.

``python -m lvae_np.experiments ... --executor slurm`` hands each child
command to submitit (the optional ``[cluster]`` extra) instead of starting it
on this machine: one SLURM job per step, with submitit's own files in
``<run>/submitit/``. The job (``run_logged``) runs the same command as the
built-in pool would, its output appended to the run's ``train.log``, so
resuming, skipping and the results are the same. ``--executor local`` uses
submitit's local executor (jobs on this machine), as the tests do.

Stopping works through the shared file system: each SIGTERM the runner
forwards adds a line to ``<run>/.experiments.stop`` (``STOP``), and the job
sends its command one SIGTERM per line, so a training stops at a batch
boundary with its checkpoint written, as with the pool. A SIGTERM to the job
itself (``scancel --signal=TERM``, or SLURM's at the time limit) is forwarded
the same way.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from .specs import LOG, ExperimentError
STOP = ".experiments.stop"   # in a run folder: one line per SIGTERM asked for the job's command
JOB_POLL_SECONDS = 0.2
DEFAULT_TIMEOUT_MIN = 3 * 24 * 60   # the jobs' time limit unless --executor-option says


def run_logged(cmd: list, log_path: str, stop_path: str, env: dict) -> int:
    """The job: run ``cmd`` with its output appended to ``log_path``; returns its exit status.

    Args:
        cmd: the child command (``lvae_np.train`` or ``lvae_np.evaluate``).
        log_path: the run's ``train.log``.
        stop_path: each line added to this file sends the command one SIGTERM.
        env: variables set on top of the job's own environment (thread counts).
    """
    with open(log_path, "a") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                env={**os.environ, **env})
    sent, asked = 0, [0]

    def forward(signum, frame):
        asked[0] += 1

    signal.signal(signal.SIGTERM, forward)
    while proc.poll() is None:
        want = asked[0] + _lines(stop_path)
        while sent < want and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            sent += 1
        time.sleep(JOB_POLL_SECONDS)
    return proc.returncode


def _lines(path: str) -> int:
    try:
        with open(path) as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


def parse_options(items) -> dict:
    """``KEY=VALUE`` strings (``--executor-option``) as submitit parameters; integers as ints.

    Raises:
        ExperimentError: an item without ``=`` (one-line message).
    """
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ExperimentError(f"--executor-option {item!r}: give KEY=VALUE, e.g. "
                                  "slurm_partition=gpu or timeout_min=600")
        out[key] = int(value) if value.lstrip("-").isdigit() else value
    return out


class SubmittedJob:
    """A submitit job seen as the runner sees a ``subprocess.Popen``: poll, signals, status."""

    def __init__(self, job, stop_path: Path):
        self.job, self.stop_path = job, stop_path
        self.returncode = None

    def poll(self):
        """The exit status when the job has finished (1 when it failed as a job), else None."""
        if self.returncode is None and self.job.done():
            try:
                self.returncode = int(self.job.result())
            except Exception:  # the job itself failed: submitit's files in <run>/submitit say why
                self.returncode = 1
        return self.returncode

    def send_signal(self, sig) -> None:
        """Ask the job to send its command a SIGTERM (what ``sig`` is, the job sends SIGTERM)."""
        with open(self.stop_path, "a") as f:
            f.write(f"{int(sig)}\n")

    def terminate(self) -> None:
        """Cancel the job."""
        self.job.cancel(check=False)

    def wait(self) -> int:
        """Wait until the job has finished; its exit status."""
        while self.poll() is None:
            time.sleep(JOB_POLL_SECONDS)
        return self.returncode


class Submitter:
    """Submits child commands as jobs of one submitit executor kind ("slurm" or "local")."""

    def __init__(self, kind: str, options: dict, env: dict):
        """``env``: variables the jobs set (the thread counts; none for SLURM, whose jobs
        get their own CPUs)."""
        try:
            import submitit
        except ImportError:
            raise ExperimentError(f"--executor {kind} needs submitit: pip install "
                                  "'lvae_np[cluster]' (or pip install submitit)") from None
        self.submitit, self.kind = submitit, kind
        self.options = {"timeout_min": DEFAULT_TIMEOUT_MIN, **options}
        self.env = env

    def submit(self, cmd: list, run_dir: Path) -> SubmittedJob:
        """Submit ``cmd`` for the run in ``run_dir``; its output goes to the run's log."""
        executor = self.submitit.AutoExecutor(folder=str(run_dir / "submitit"),
                                              cluster=self.kind)
        try:
            executor.update_parameters(name=f"lvae_np {run_dir.name}", **self.options)
        except (TypeError, ValueError) as exc:
            raise ExperimentError(f"--executor-option: {str(exc).splitlines()[0]}") from None
        stop = run_dir / STOP
        stop.unlink(missing_ok=True)
        job = executor.submit(run_logged, list(cmd), str(run_dir / LOG), str(stop), self.env)
        return SubmittedJob(job, stop)
