"""What every command line of the package shares: one-line errors, help layout, warnings.

Each CLI (``python -m lvae_np.train``, ``.evaluate``, ``.plots``,
``.experiments``, ``.gradcheck``) builds its parser from ``Parser`` and
``HelpFormatter`` here, so that bad input gives one line on stderr and exit
status 2, never a usage dump or a traceback::

    parser = Parser(prog="python -m lvae_np.evaluate", description=...)
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        return fail("lvae_np.evaluate", exc)
"""
from __future__ import annotations

import argparse
import sys
import warnings


class UsageError(Exception):
    """Bad command-line input: printed as one line, exit status 2."""


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
