"""Writing files safely: the one atomic write the whole package uses.

A file is written to a temporary file in the same folder, flushed to disk,
and renamed over the target, so a crash or Ctrl-C leaves either the old file
or the new one, never half of one; the temporary file is removed on failure.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(path, write) -> None:
    """Call ``write(file_object)`` on a temporary binary file, then rename it to ``path``.

    Args:
        path: the file to (re)place; its folder is created when missing.
        write: a function of one argument, a file object open for binary writing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a plain file is wanted
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see ``atomic_write``)."""
    data = text.encode("utf-8")
    atomic_write(path, lambda f: f.write(data))
