"""One trainer per run folder: the lock ``lvae_np.train`` holds for the whole of a run.

The lock is an advisory ``flock`` on ``RUN_DIR/.lock`` (``runs.LOCK``), which
also records the holder's process id and host for messages. The operating
system releases it when the process ends, however it ends (SIGKILL
included), so a lock is never stale: a second ``lvae_np.train`` on the same
folder, or one started by a second experiment runner, stops at once with a
one-line error instead of training the run too. The file is removed on
release; a file left by a killed process is simply locked again.

Where ``fcntl`` is missing (Windows) the lock records its holder but
excludes no one.

Example::

    with RunLock(run_dir):
        ...  # train
"""
from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

from .runs import LOCK

try:
    import fcntl
except ImportError:  # not POSIX
    fcntl = None


class RunInUse(Exception):
    """Another process holds the run folder's lock (one-line message)."""


class RunLock:
    """The lock of one run folder; ``acquire`` it before writing there, ``release`` when done."""

    def __init__(self, run_dir, what: str = "lvae_np.train"):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK
        self.what = what
        self.fd = None

    def acquire(self) -> "RunLock":
        """Take the lock (without waiting) and write this process's id into it.

        Raises:
            RunInUse: another process holds it.
            OSError: the lock file cannot be made or written (read-only or full
                disk, no such folder), naming the lock file.
        """
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise OSError(exc.errno, exc.strerror, str(self.path)) from None
                raise RunInUse(f"{self.run_dir} is in use by another {self.what} "
                               f"({self.holder()}): wait for it to finish, or choose "
                               "another --out") from None
            if self._still_there(fd):
                break
            os.close(fd)  # its holder removed it while we waited: lock the new one
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        except OSError as exc:
            self.fd = fd
            self.release()
            raise OSError(exc.errno, exc.strerror, str(self.path)) from None
        self.fd = fd
        return self

    def _still_there(self, fd: int) -> bool:
        """Whether the locked file is still the one at ``self.path``."""
        try:
            now = os.stat(self.path)
        except FileNotFoundError:
            return False
        st = os.fstat(fd)
        return (st.st_ino, st.st_dev) == (now.st_ino, now.st_dev)

    def holder(self) -> str:
        """'process P on HOST' as the lock file says, or 'another process'."""
        try:
            pid, _, host = self.path.read_text().strip().partition(" ")
            return f"process {int(pid)} on {host}"
        except (OSError, ValueError):
            return "another process"

    def release(self) -> None:
        """Remove the lock file and let go of the lock (nothing happens when not held)."""
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass  # a read-only folder: the file stays, unlocked, and is locked again next time
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def lock_holder(run_dir) -> tuple | None:
    """``(pid, host)`` of the process holding ``run_dir``'s lock now; None when it is free.

    Changes nothing: the lock file, when there is one, is opened, tried and let
    go, never written or removed. ``pid`` is None (and ``host`` "") when the
    holder did not record itself. Always None where ``fcntl`` is missing.
    """
    if fcntl is None:
        return None
    path = Path(run_dir) / LOCK
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None  # no lock file (or none that can be read): nobody holds it
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return None
            try:
                pid, _, host = path.read_text().strip().partition(" ")
                return int(pid), host
            except (OSError, ValueError):
                return None, ""
        return None  # free: our flock goes with the descriptor
    finally:
        os.close(fd)
