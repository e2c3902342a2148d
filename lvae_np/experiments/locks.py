"""Run-folder locks: one runner at a time works on a run.

Two runners sharing a run (``mnist-depth`` and ``mnist-ablation`` share the
5-layer runs) would train it twice over, so while a runner works on a run its
folder holds ``LOCK`` with the runner's process id and host. A lock left by a
process of this machine that no longer exists is stale and taken over.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

from .specs import ExperimentError

LOCK = ".experiments.lock"  # in a run folder while a runner works on it


def lock_runs(records: list, create: bool) -> list:
    """Mark the run folders as in use by this process.

    Args:
        records: the runs (``RunRecord``: ``run_id`` and ``run_dir`` are used).
        create: make the folders that do not exist yet (else they are not locked).

    Returns:
        The lock files made, for ``unlock_runs``.

    Raises:
        ExperimentError: a run is in use by another runner (what this call
            took is released first).
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
    """Remove the lock files ``lock_runs`` made."""
    for path in paths:
        path.unlink(missing_ok=True)
