"""What every command line of the package shares: one-line errors, help layout, warnings.

Each CLI (``python -m lvae_np.train``, ``.evaluate``, ``.plots``,
``.experiments``, ``.gradcheck``) builds its parser from ``Parser`` and
``HelpFormatter`` here, so that bad input gives one line on stderr and exit
status 2, never a usage dump or a traceback, and wraps its ``main`` in
``entry``, so that every CLI ends the same way whatever goes wrong::

    @entry("lvae_np.evaluate", errors=(CheckpointError, DataError))
    def main(argv=None) -> int:
        args = build_parser().parse_args(argv)   # UsageError: one line, status 2
        ...

Exit statuses: 0 done; 1 could not finish (a full or read-only disk, out of
memory, a diverged run); 2 bad input (options, files); 130 interrupted;
141 stdout closed early (``... | head``), silently, as for SIGPIPE.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import os
import sys
import warnings

BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a reader that went away

# What to do about the usual OSErrors, by errno.
_OS_ERROR_HINTS = {
    errno.ENOSPC: "the disk is full: free some space, then try again",
    errno.EDQUOT: "the disk quota is used up: free some space, then try again",
    errno.EROFS: "the file system is read-only: use a folder on a writable disk",
    errno.EACCES: "permission denied: use a folder you can write to, or change its permissions",
    errno.EPERM: "not permitted: use a folder you can write to, or change its permissions",
    errno.ENOTDIR: "a part of that path is a file, not a folder: choose another path",
    errno.EEXIST: "a file of that name is in the way: choose another path",
    errno.EISDIR: "that is a folder, not a file: choose another path",
    errno.EIO: "the disk reported an input/output error: check it",
    errno.ENAMETOOLONG: "the name is too long: choose a shorter path",
}


class UsageError(Exception):
    """Bad command-line input: printed as one line, exit status 2."""


class OutOfMemory(MemoryError):
    """A ``MemoryError`` that knows what to do: ``hint`` names the option that sized it."""

    def __init__(self, detail: str, hint: str):
        super().__init__(detail)
        self.hint = hint


@contextlib.contextmanager
def memory_hint(hint: str | None):
    """Turn a ``MemoryError`` inside the block into ``OutOfMemory`` with ``hint``.

    Wrap each step whose allocations one option sizes, e.g. ``with
    memory_hint("choose a smaller --iw-samples"): ...``; an inner block's
    hint wins over an outer one's, and over the CLI's default (``entry``).
    """
    try:
        yield
    except OutOfMemory:
        raise
    except MemoryError as exc:
        if not hint:  # nothing to add: the caller's hint applies
            raise
        raise OutOfMemory(str(exc), hint) from None


def memory_message(exc: MemoryError, default_hint: str = "") -> str:
    """One line for a ``MemoryError``: "out of memory (detail); what to do"."""
    hint = getattr(exc, "hint", None) or default_hint
    detail = f" ({exc})" if str(exc) else ""
    return f"out of memory{detail}" + (f"; {hint}" if hint else "")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except empty ones; tuples as the command line writes them."""

    def _get_help_string(self, action):
        default = action.default
        if default is None or default is False or default is argparse.SUPPRESS \
                or "default" in (action.help or ""):
            return action.help
        if isinstance(default, tuple):
            return f"{action.help} (default: {','.join(map(str, default))})"
        return super()._get_help_string(action)


class RawHelpFormatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """HelpFormatter that keeps the description's and epilog's own line breaks."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors raise UsageError instead of printing usage and exiting."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):  # one line, no usage dump
        raise UsageError(message)


def fail(prog: str, exc: BaseException, *, status: int = 2, hint: bool = False) -> int:
    """Print ``prog: error: <message>`` as one line on stderr; return ``status``.

    ``hint`` adds "(see --help)", for errors in the command line itself.
    """
    message = " ".join(str(exc).split())
    print(f"{prog}: error: {message}{' (see --help)' if hint else ''}", file=sys.stderr,
          flush=True)
    return status


def os_error_message(exc: OSError) -> str:
    """One line for an ``OSError``: the file, the reason, and what to do about it.

    Example: ``runs/a/checkpoint.npz: No space left on device; the disk is
    full: free some space and run the same command again``.
    """
    where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
    reason = exc.strerror or str(exc) or type(exc).__name__
    hint = _OS_ERROR_HINTS.get(exc.errno)
    return (f"{where}: " if where else "") + reason + (f"; {hint}" if hint else "")


def entry(prog: str, *, errors: tuple = (), memory_hint: str = ""):
    """Decorate a CLI's ``main(argv) -> status`` so that it ends in one line whatever happens.

    The wrapped ``main`` flushes stdout itself and turns

    * ``UsageError`` into ``prog: error: ... (see --help)``, status 2;
    * an exception of ``errors`` (a bad file: checkpoint, data) into one line, status 2;
    * ``OSError`` into one line naming the file and the fix (``os_error_message``), status 1;
    * ``MemoryError`` into one line (with its ``OutOfMemory.hint``, else ``memory_hint``),
      status 1;
    * ``BrokenPipeError`` on stdout (the reader went away) into silence, status 141;
    * ``KeyboardInterrupt`` (Ctrl-C where the CLI does not handle it) into one line, status 130.

    Args:
        prog: the name in messages, e.g. ``"lvae_np.train"``.
        errors: exception classes whose one-line message says what is wrong with the input.
        memory_hint: what to do when memory runs out, e.g. "choose smaller --hidden".
    """
    def wrap(main):
        @functools.wraps(main)
        def wrapped(argv=None) -> int:
            try:
                status = main(argv)
                sys.stdout.flush()  # here, not at exit, so a closed pipe is caught
                return status
            except UsageError as exc:
                return fail(prog, exc, hint=True)
            except BrokenPipeError:
                _detach_stdout()
                return BROKEN_PIPE
            except errors as exc:
                return fail(prog, exc)
            except MemoryError as exc:
                return fail(prog, memory_message(exc, memory_hint), status=1)
            except OSError as exc:
                return fail(prog, os_error_message(exc), status=1)
            except KeyboardInterrupt:
                return fail(prog, "interrupted", status=130)
        return wrapped
    return wrap


def _detach_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no real stdout (e.g. captured by a test)
        pass


def plain_warnings() -> None:
    """Show warnings (such as the CuPy fallback) as one plain line each on stderr."""
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"lvae_np: warning: {message}", file=sys.stderr, flush=True)
    warnings.showwarning = show


def positive_ints(text: str) -> tuple:
    """An argparse type: comma-separated positive integers, e.g. ``64,32,16``."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return values


def folder_path(text: str) -> str:
    """An argparse type: a folder to write to; the empty string (the current folder) is refused."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path would mean the current folder: give "
                                         "a folder's name")
    return text
