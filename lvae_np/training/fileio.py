"""Writing files safely: the one atomic write the whole package uses.

A file is written to a temporary file ``.NAME.<random>.tmp`` in the same
folder, flushed to disk, and renamed over the target; the folder is then
flushed too, so that the rename itself survives a power cut. A crash or
Ctrl-C leaves either the old file or the new one, never half of one; the
temporary file is removed on failure. ``atomic_write_many`` writes several
files so that a failure while writing leaves all of them as they were, and
``remove_stale_temporaries`` clears what a killed process left behind.

Errors are ``OSError`` with the target's path as ``filename`` (never the
temporary's), so a message can say which file could not be written.

Reading files that may not be what they claim: ``special_file`` says when a
name is a FIFO, a folder or a device rather than a regular file (never
opening it: a FIFO would block), and ``npy_headers`` reads the array headers
of an ``.npz`` archive without reading its data, so their shapes and sizes
can be checked before anything is allocated.
"""
from __future__ import annotations

import errno
import glob
import json
import math
import os
import stat
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy

# fsync of a folder: file systems that cannot do it say so with one of these
_NO_DIR_SYNC = {errno.EINVAL, errno.ENOTSUP, errno.EBADF, errno.EACCES, errno.EISDIR}


def atomic_write(path, write) -> None:
    """Call ``write(file_object)`` on a temporary binary file, then rename it to ``path``.

    Args:
        path: the file to (re)place; its folder is created when missing.
        write: a function of one argument, a file object open for binary writing.

    Raises:
        OSError: the write failed (``filename`` is ``path``); ``path`` is unchanged.
    """
    atomic_write_many([(path, write)])


def atomic_write_text(path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see ``atomic_write``)."""
    data = text.encode("utf-8")
    atomic_write(path, lambda f: f.write(data))


def atomic_write_many(items) -> None:
    """Write several files: every temporary first, then the renames, in the order given.

    A failure while writing (a full disk, Ctrl-C) leaves every target as it
    was. Only a crash between two renames can leave the first files new and
    the later ones old, so list first the file the others are rebuilt from.

    Args:
        items: (path, write) pairs, as ``atomic_write`` takes them.

    Raises:
        OSError: a write or rename failed; ``filename`` is the target's path.
    """
    temps, outer = [], sys.exc_info()[1]  # an exception the caller is handling, if any
    try:
        for path, write in items:
            path = Path(path)
            temps.append((_write_temporary(path, write), path))
        for i, (tmp, path) in enumerate(temps):
            try:
                os.replace(tmp, path)
            except OSError as exc:
                raise _about(exc, path) from None
            temps[i] = (None, path)
        for folder in dict.fromkeys(path.parent for _, path in temps):
            fsync_dir(folder)
    except BaseException as exc:
        for tmp, _ in temps:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
        interrupt = _interrupt_behind(exc, outer)
        if interrupt is not exc:
            raise interrupt from None  # not the writer's complaint about being cut short
        raise


def _write_temporary(path: Path, write) -> str:
    """Write a temporary file beside ``path`` with ``write``, flushed to disk; its name."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _about(exc, path) from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a plain file is wanted
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _about(exc, path) from None
        raise
    return tmp


def _about(exc: OSError, path: Path) -> OSError:
    """``exc`` naming ``path`` where it named nothing or the temporary file, errno kept."""
    named = exc.filename
    if named is not None and not (Path(named).name.startswith(f".{path.name}.")
                                  and str(named).endswith(".tmp")):
        return exc  # it names the file or folder at fault (e.g. a file where a folder should be)
    if exc.errno is None:
        return OSError(errno.EIO, str(exc), str(path))
    return OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(path))


def _interrupt_behind(exc: BaseException, outer) -> BaseException:
    """The KeyboardInterrupt or SystemExit that ``exc`` was raised while handling, else ``exc``.

    A signal that arrives inside a writer (``numpy.savez``'s ZIP file) makes
    the writer's clean-up fail in turn; the interrupt is what matters. Only
    exceptions raised during the write count, not ``outer``, the one the
    caller was handling when it started the write, nor those before it.
    """
    seen, e = set(), exc
    while e is not None and e is not outer and id(e) not in seen:
        if not isinstance(e, Exception):
            return e
        seen.add(id(e))
        e = e.__context__
    return exc


def fsync_dir(folder) -> None:
    """Flush a folder's entries (new names, renames) to disk, where the file system can."""
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError as exc:
        if exc.errno in _NO_DIR_SYNC:
            return
        raise _about(exc, Path(folder)) from None
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _NO_DIR_SYNC:
            raise _about(exc, Path(folder)) from None
    finally:
        os.close(fd)


def remove_stale_temporaries(folder, names) -> list:
    """Remove the temporary files ``.NAME.<random>.tmp`` that killed writes left in ``folder``.

    Call it only while no other process can be writing those files (e.g.
    holding the folder's lock).

    Args:
        folder: the folder to clear.
        names: the file names whose temporaries are removed.

    Returns:
        [(path, size in bytes)] of the files removed.
    """
    removed = []
    for name in names:
        for tmp in Path(folder).glob(f".{glob.escape(name)}.*.tmp"):
            try:
                size = tmp.stat().st_size
                tmp.unlink()
            except FileNotFoundError:
                continue
            removed.append((tmp, size))
    return removed


def read_json(path, what: str):
    """The JSON value stored in ``path``, or None when there is no such file.

    Raises:
        ValueError: the file cannot be read, or is empty, not UTF-8 text or not
            JSON; one line, "``path`` is not ``what``: it is empty" and the like.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ValueError(f"{path} cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not {what}: not UTF-8 text") from None
    try:
        return json.loads(text)
    except ValueError:
        raise ValueError(f"{path} is not {what}: "
                         + ("it is empty" if not text.strip() else "not JSON")) from None


def special_file(path) -> str | None:
    """What ``path`` is when it exists but is not a regular file ("a FIFO", "a folder", ...).

    None when it is missing or a regular file (a link to one counts as one).
    Only ``stat`` is used: the file is never opened.
    """
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    if stat.S_ISREG(mode):
        return None
    for test, what in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISDIR, "a folder"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return what
    return "not a regular file"


class ArchiveError(ValueError):
    """An ``.npz`` archive that is corrupt or claims more than it holds (one-line message)."""


def npy_headers(source, *, size: int | None = None) -> dict:
    """The arrays of an ``.npz`` archive, from their ``.npy`` headers alone: no data is read.

    Each member must be an ``.npy`` file of format 1.0 or 2.0 holding no
    Python objects, whose stored size is exactly its header plus the data
    its header claims, and the members together must fit in the archive; so
    loading the arrays afterwards allocates no more than their headers say.

    Args:
        source: the archive's path or a binary file object.
        size: the archive's size in bytes (default: the file's size).

    Returns:
        name (without ``.npy``) -> (shape, dtype), in the archive's order.

    Raises:
        ArchiveError: not a ZIP archive, a member that is not such an array,
            or sizes that do not add up (the message says which).
        OSError: the file cannot be read.
    """
    if size is None:
        size = os.fstat(source.fileno()).st_size if hasattr(source, "fileno") \
            else os.path.getsize(source)
    fmt = numpy.lib.format
    try:
        with zipfile.ZipFile(source) as archive:
            infos = archive.infolist()
            if sum(info.compress_size for info in infos) > size:
                raise ArchiveError("its members claim more bytes than the file holds")
            arrays = {}
            for info in infos:
                if not info.filename.endswith(".npy"):
                    raise ArchiveError(f"an entry {info.filename!r} that is not an array")
                if info.compress_type == zipfile.ZIP_STORED \
                        and info.compress_size != info.file_size:
                    raise ArchiveError(f"the entry {info.filename!r} has inconsistent sizes")
                with archive.open(info) as f:
                    version = fmt.read_magic(f)
                    if version == (1, 0):
                        shape, _, dtype = fmt.read_array_header_1_0(f)
                    elif version == (2, 0):
                        shape, _, dtype = fmt.read_array_header_2_0(f)
                    else:
                        raise ArchiveError(f"the entry {info.filename!r} has .npy format "
                                           f"version {version}")
                    header = f.tell()
                if dtype.hasobject:
                    raise ArchiveError(f"the entry {info.filename!r} holds Python objects")
                if header + math.prod(shape) * dtype.itemsize != info.file_size:
                    raise ArchiveError(
                        f"the entry {info.filename!r} claims {dtype} {tuple(shape)} "
                        f"({math.prod(shape) * dtype.itemsize} bytes) but holds "
                        f"{info.file_size - header}")
                arrays[info.filename[:-len(".npy")]] = (tuple(shape), dtype)
            return arrays
    except ArchiveError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, KeyError,
            NotImplementedError, zlib.error) as exc:
        raise ArchiveError(str(exc) or type(exc).__name__) from None
    except OSError as exc:
        if exc.errno is None:  # zlib and zipfile report damage as errno-less OSErrors
            raise ArchiveError(str(exc) or type(exc).__name__) from None
        raise
