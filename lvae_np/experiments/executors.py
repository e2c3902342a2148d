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

One lifetime for every child: the job's command dies with the job
(``die_with_parent``), and a job on the runner's own machine (``--executor
local``) watches the runner and stops its command, as on Ctrl-C, once the
runner is gone, however it ended. A SLURM job cannot see the runner; while
it runs, ``<run>/.experiments.job`` (``JOB``) names it, so that a later
runner that finds its training still holding the run folder's lock says
which job and process it is and how to end them (``locks.check_no_orphans``).
The executor and its ``--executor-option`` values are tried before anything
starts (``Submitter``), so an executor that is not available here is one line.
"""
from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..training.fileio import atomic_write_text
from .locks import JOB
from .specs import LOG, ExperimentError

STOP = ".experiments.stop"   # in a run folder: one line per SIGTERM asked for the job's command
JOB_POLL_SECONDS = 0.2
DEFAULT_TIMEOUT_MIN = 3 * 24 * 60   # the jobs' time limit unless --executor-option says
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies (Linux)


def die_with_parent():
    """A ``preexec_fn`` that has the child sent SIGTERM when this process ends; None if unsupported.

    Linux only (``prctl(PR_SET_PDEATHSIG)``, kept across ``exec``); a child
    whose parent died before the call stops at once.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec():
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)
    return preexec


def process_identity(pid: int | None = None) -> tuple:
    """``(pid, host, start)`` of a process (default: this one), to tell later if it still runs.

    ``start`` is the process's start time from ``/proc`` (Linux), so that a new
    process given the same id is not taken for it; None where unknown.
    """
    pid = os.getpid() if pid is None else pid
    return pid, socket.gethostname(), _proc_stat(pid)[1]


def is_running(identity) -> bool | None:
    """Whether the process ``process_identity`` described still runs; None: cannot tell here.

    Only a process of this host can be seen; a zombie (ended, not yet reaped)
    counts as ended.
    """
    pid, host, start = identity
    if host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    state, now = _proc_stat(pid)
    return state != "Z" and (start is None or now is None or now == start)


def _proc_stat(pid: int) -> tuple:
    """(state letter, start time) of ``pid`` from ``/proc/<pid>/stat``; (None, None) if unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return fields[0], fields[19]
    except (OSError, IndexError):
        return None, None


def run_logged(cmd: list, log_path: str, stop_path: str, env: dict, header: str = "",
               runner: tuple | None = None) -> int:
    """The job: run ``cmd`` with its output appended to ``log_path``; returns its exit status.

    Args:
        cmd: the child command (``lvae_np.train`` or ``lvae_np.evaluate``).
        log_path: the run's ``train.log``.
        stop_path: each line added to this file sends the command one SIGTERM.
        env: variables set on top of the job's own environment (thread counts).
        header: a line written to the log first (what runs, and as which job).
        runner: the runner's ``process_identity``: when it is seen to have ended,
            the command gets one SIGTERM (a training stops at a batch boundary
            with its checkpoint written). A runner on another host cannot be seen.
    """
    with open(log_path, "a") as log:
        if header:
            log.write(header)
            log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                env={**os.environ, **env}, preexec_fn=die_with_parent())
    sent, asked = 0, [0]

    def forward(signum, frame):
        asked[0] += 1

    signal.signal(signal.SIGTERM, forward)
    watching = runner is not None
    while proc.poll() is None:
        if watching and is_running(runner) is False:
            watching = False
            asked[0] += 1
            with open(log_path, "a") as log:
                log.write(f"lvae_np.experiments: the runner (process {runner[0]}) has ended: "
                          "stopping this job's command\n")
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

    def __init__(self, job, stop_path: Path, record: Path | None = None):
        self.job, self.stop_path, self.record = job, stop_path, record
        self.returncode = None

    def poll(self):
        """The exit status when the job has finished (1 when it failed as a job), else None."""
        if self.returncode is None and self.job.done():
            try:
                self.returncode = int(self.job.result())
            except Exception:  # the job itself failed: submitit's files in <run>/submitit say why
                self.returncode = 1
            if self.record is not None:
                self.record.unlink(missing_ok=True)   # the job is over: nothing to find later
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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0].rstrip(". ") if text else "") or type(exc).__name__


class Submitter:
    """Submits child commands as jobs of one submitit executor kind ("slurm" or "local")."""

    def __init__(self, kind: str, options: dict, env: dict):
        """``env``: variables the jobs set (the thread counts; none for SLURM, whose jobs
        get their own CPUs).

        Raises:
            ExperimentError: submitit is missing, the executor is not available
                here (no SLURM), or it refuses the options (one line each).
        """
        try:
            import submitit
        except ImportError:
            raise ExperimentError(f"--executor {kind} needs submitit: pip install "
                                  "'lvae_np[cluster]' (or pip install submitit)") from None
        self.submitit, self.kind = submitit, kind
        self.options = {"timeout_min": DEFAULT_TIMEOUT_MIN, **options}
        self.env = env
        self.runner = process_identity()
        with tempfile.TemporaryDirectory() as folder:   # try both before anything starts
            self._executor(Path(folder), "lvae_np")

    def _executor(self, folder: Path, name: str):
        """submitit's executor for jobs with their files in ``folder``, options set."""
        try:
            executor = self.submitit.AutoExecutor(folder=str(folder), cluster=self.kind)
        except Exception as exc:  # noqa: BLE001 - submitit's own: RuntimeError, no srun, ...
            raise ExperimentError(f"--executor {self.kind} is not available here "
                                  f"({_first_line(exc)}): use --executor local or pool on this "
                                  "machine") from None
        try:
            executor.update_parameters(name=name, **self.options)
        except Exception as exc:  # noqa: BLE001 - NameError, AssertionError, TypeError, ...
            raise ExperimentError(f"--executor-option: --executor {self.kind} refuses them "
                                  f"({_first_line(exc)}); see submitit's parameters") from None
        return executor

    def submit(self, cmd: list, run_dir: Path, header: str = "") -> SubmittedJob:
        """Submit ``cmd`` for the run in ``run_dir``; its output goes to the run's log.

        The job writes ``header`` to the log first, so a job that never started
        leaves no line there. ``run_dir/JOB`` names the job while it runs.

        Raises:
            ExperimentError: the submission failed (one line).
        """
        executor = self._executor(run_dir / "submitit", f"lvae_np {run_dir.name}")
        stop = run_dir / STOP
        stop.unlink(missing_ok=True)
        try:
            job = executor.submit(run_logged, list(cmd), str(run_dir / LOG), str(stop),
                                  self.env, header, self.runner)
        except Exception as exc:  # noqa: BLE001 - sbatch's failure, as submitit reports it
            raise ExperimentError(f"--executor {self.kind}: submitting the job of run "
                                  f"{run_dir.name} failed ({_first_line(exc)})") from None
        record = {"executor": self.kind, "job_id": str(job.job_id), "runner": self.runner[0],
                  "host": self.runner[1]}
        atomic_write_text(run_dir / JOB, json.dumps(record) + "\n")
        return SubmittedJob(job, stop, run_dir / JOB)
