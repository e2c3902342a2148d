"""The gradient checker's command line: check registered cases by name and print a table.

    python -m lvae_np.gradcheck                  # every registered case
    python -m lvae_np.gradcheck batchnorm merge  # some, by their short names
    python -m lvae_np.gradcheck --list           # the names (with -v, what each checks)
    python -m lvae_np.gradcheck --grade [NAMES]  # the autograder: the assigned cases, with points
    python -m lvae_np.gradcheck --grade --all    # every case of the course, with points
    python -m lvae_np.gradcheck --grade --submission DIR   # a student's copy, DIR/lvae_np
    python -m lvae_np.gradcheck --grade --submission DIR --together   # feedback, no points

Both routes run the autograder (``grading.grade``) on the package as it is
and print the same table (``report.py``), ``--grade`` with the points: one
row per case, checked after the cases it uses; an op that raises
NotImplementedError is "not implemented yet" and the checks go on; a failure
gets a few lines, and the cases built on it are listed once, as blocked by
it. Names may be groups (``ops``, ``composites``, ``models``, a module such
as ``layers``; see ``grading.groups``).

``--submission DIR`` grades a student's copy of the package (a release's
folder, ``DIR/lvae_np`` with the stubs filled in) in this environment: each
assigned function of the copy is graded on its own, on this package's
functions for everything it builds on (``grade(..., submission=DIR)``);
``--together`` runs all of the copy's functions together instead, as
feedback without points.

Exit status 0 when every check passes, 1 when one does not, 2 for bad input
(one line on stderr).
"""
from __future__ import annotations

import argparse
import math
import sys

from ..training.cli import Parser, UsageError, entry, fail
from . import cases, grading
from .engine import DEFAULT_TOL

PROG = "lvae_np.gradcheck"


def _seed(text: str) -> int:
    """An argparse type: a seed, an integer >= 0 (NumPy's generators take no other)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seed must be an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"seed must be an integer >= 0, got {value}")
    return value


def _tol(text: str) -> float:
    """An argparse type: a tolerance, a finite number > 0 (nan and -1 fail every check, inf
    passes every one)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"tol must be a finite number > 0, got {text!r}")
    return value


def build_parser() -> Parser:
    """The command line's parser; its errors raise UsageError."""
    parser = Parser(
        prog="python -m lvae_np.gradcheck",
        description="Gradient-check the registered ops, composites and whole models of "
                    "lvae_np (all, or those named) in float64 against central differences, "
                    "with a random upstream gradient, and print a table: one row per case, "
                    "each after the cases it uses; an op not written yet is 'not implemented "
                    "yet', and the cases built on one that did not pass are listed once, as "
                    "blocked by it. Exits 1 unless every check passes.")
    parser.add_argument("ops", nargs="*", help="names of ops to check (default: all); "
                        "see --list")
    parser.add_argument("--list", action="store_true",
                        help="list the registered ops' names and exit (with -v, their titles too)")
    parser.add_argument("--grade", action="store_true",
                        help="grade instead: the cases the course's assignments grade (or those "
                        "named), with points as the notebooks give them; the cases they use "
                        "are checked first, without points")
    parser.add_argument("--all", action="store_true",
                        help="with --grade: every case of the course when no names are given, "
                        "and those no assignment grades count at their registry weight")
    parser.add_argument("--submission", metavar="DIR",
                        help="with --grade: grade a student's copy of the package, DIR/lvae_np "
                        "(a release's folder with the stubs filled in): each assigned function "
                        "on its own, with this package's functions for what it builds on")
    parser.add_argument("--together", action="store_true",
                        help="with --submission: feedback, not points: all of the copy's "
                        "functions in place together, composites and whole models on them")
    parser.add_argument("--seed", type=_seed, default=0,
                        help="seed of inputs and upstream gradients (an integer >= 0)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="a row for every argument of every case (the table shows each "
                        "case's largest relative error)")
    parser.add_argument("--tol", type=_tol, default=DEFAULT_TOL,
                        help=f"largest acceptable relative error (default {DEFAULT_TOL:g})")
    return parser


def check_names(names) -> None:
    """Refuse unknown case or group names, all of them in one line.

    Raises:
        UsageError: one line naming every unknown name and the close ones.
    """
    unknown = []
    for name in names:
        if name not in grading.groups():
            try:
                cases.find_case(name)
            except cases.UnknownCaseError as exc:
                unknown.append(str(exc))
    if unknown:
        raise UsageError("; ".join(unknown) + "; --list shows every name")


def print_list(verbose: bool) -> None:
    """One registered name a line; with ``verbose`` its title beside it."""
    width = max(len(c.name) for c in cases.CASES)
    for case in cases.CASES:
        print(f"{case.name:<{width}}  {case.title}" if verbose else case.name)


@entry(PROG)
def main(argv=None) -> int:
    """Run the command line; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        return fail(PROG, exc, hint=True)
    if args.list:
        print_list(args.verbose)
        return 0
    try:
        check_names(args.ops)
        if args.submission is not None and not args.grade:
            raise UsageError("--submission goes with --grade")
        if args.together and args.submission is None:
            raise UsageError("--together goes with --grade --submission DIR")
    except UsageError as exc:
        return fail(PROG, exc)
    if args.grade:
        try:
            report = grading.grade(args.ops or None, seed=args.seed, tol=args.tol,
                                   everything=args.all, submission=args.submission,
                                   together=args.together)
        except grading.SubmissionError as exc:
            return fail(PROG, exc)
    else:  # the checker: every registered case, the original code's options too
        report = grading.grade(args.ops or [c.name for c in cases.CASES], seed=args.seed,
                               tol=args.tol)
    print(report.render(points=args.grade, verbose=args.verbose))
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
