"""Run-folder locks: one runner at a time works on a run, and no training of another.

Two runners sharing a run (``mnist-depth`` and ``mnist-ablation`` share the
5-layer runs) would train it twice over, so while a runner works on a run its
folder holds ``LOCK`` with the runner's process id and host. A lock left by a
process of this machine that no longer exists is stale and taken over.

A training holds its run folder's own lock (``lvae_np.runlock``) for its
whole life. One still holding it when a runner starts is not this runner's:
a training an earlier runner left behind (a SLURM job outlives its runner;
``JOB`` then names it), or one started by hand. ``check_no_orphans`` says so
in one line, with the process and how to end it, instead of starting a
training that could only fail.
"""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from ..training.runlock import lock_holder
from .specs import ExperimentError

LOCK = ".experiments.lock"  # in a run folder while a runner works on it
JOB = ".experiments.job"    # in a run folder while a submitted job runs: which job (JSON)


def lock_runs(records: list, create: bool) -> list:
    """Mark the run folders as in use by this process.

    Args:
        records: the runs (``RunRecord``: ``run_id`` and ``run_dir`` are used).
        create: make the folders that do not exist yet (else they are not locked).

    Returns:
        The lock files made, for ``unlock_runs``.

    Raises:
        ExperimentError: a run is in use by another runner (what this call
            took is released first, and the folders it made are removed).
    """
    host, taken, made = socket.gethostname(), [], []
    try:
        for rec in records:
            if create:
                made += [d for d in (rec.run_dir, *rec.run_dir.parents) if not d.exists()]
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
        for folder in made:  # a refused runner leaves no empty run folders behind
            try:
                folder.rmdir()  # only when empty
            except OSError:
                pass
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


def read_job(run_dir) -> dict | None:
    """The record of the job last submitted for ``run_dir`` (``JOB``), or None."""
    try:
        record = json.loads((Path(run_dir) / JOB).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def check_no_orphans(records: list) -> None:
    """Refuse to go on while another process trains one of the runs (holds its training lock).

    Call it while holding the runs (``lock_runs``): then no runner of this
    machine works on them, and a training still under way is one left by an
    earlier runner (or started by hand). It is neither failed nor waited for
    in silence: the error names it and how to end it.

    Raises:
        ExperimentError: one line naming each such run, its process (and
            SLURM job) and the command that ends it.
    """
    host, found, kill, cancel = socket.gethostname(), [], [], []
    for rec in records:
        holder = lock_holder(rec.run_dir)
        if holder is None:
            continue
        pid, where = holder
        job = read_job(rec.run_dir) or {}
        what = "a process" if pid is None else f"process {pid} on {where}"
        if job.get("executor") == "slurm" and job.get("job_id"):
            what += f", SLURM job {job['job_id']}"
            cancel.append(str(job["job_id"]))
        elif pid is not None:
            kill.append(str(pid) if where == host else f"{pid} (on {where})")
        found.append(f"{rec.run_id} ({what})")
    if not found:
        return
    ends = ([f"kill {' '.join(kill)}"] if kill else []) + \
        ([f"scancel {' '.join(cancel)}"] if cancel else [])
    how = f"end {'it' if len(found) == 1 else 'them'} with " + " and ".join(ends) \
        if ends else f"end {'it' if len(found) == 1 else 'them'}"
    raise ExperimentError(
        f"{'run' if len(found) == 1 else 'runs'} {', '.join(found)} "
        f"{'is' if len(found) == 1 else 'are'} still being trained, not by this runner (left "
        f"running by an earlier lvae_np.experiments, or started by hand): wait for "
        f"{'it' if len(found) == 1 else 'them'} to end, or {how} (a training stops at a batch "
        "boundary with its checkpoint written), then run the same command again")


def unlock_runs(paths: list) -> None:
    """Remove the lock files ``lock_runs`` made."""
    for path in paths:
        path.unlink(missing_ok=True)
