"""The gradient checker's command line: check registered cases by name and print a table.

    python -m lvae_np.gradcheck                  # every registered case
    python -m lvae_np.gradcheck batchnorm merge  # some, by their short names
    python -m lvae_np.gradcheck --list           # the names (with -v, what each checks)
    python -m lvae_np.gradcheck --grade [NAMES]  # the autograder: points, blocked dependents

Exit status 0 when every check passes, 1 when one fails, 2 for bad input
(one line on stderr). ``--grade`` takes group names too (``ops``,
``composites``, ``models``, a module such as ``layers``; see
``grading.groups``) and grades the cases each uses first.
"""
from __future__ import annotations

import argparse
import math
import sys

from ..training.cli import Parser, UsageError, entry, fail
from . import cases, grading
from .engine import DEFAULT_TOL, ArgumentReport

PROG = "lvae_np.gradcheck"
SUMMARY_ABOVE = 6  # the table shows only the worst argument of cases with more


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
                    "with a random upstream gradient, and print a table. Exits 1 if any "
                    "check fails.")
    parser.add_argument("ops", nargs="*", help="names of ops to check (default: all); "
                        "see --list")
    parser.add_argument("--list", action="store_true",
                        help="list the registered ops' names and exit (with -v, their titles too)")
    parser.add_argument("--grade", action="store_true",
                        help="grade instead: the cases named (or groups: ops, composites, "
                        "models, a module) with those they use, in dependency order; a table "
                        "of points, each failure once, its dependents as blocked")
    parser.add_argument("--seed", type=_seed, default=0,
                        help="seed of inputs and upstream gradients (an integer >= 0)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="one row per argument even for cases with more than "
                        f"{SUMMARY_ABOVE} (whole models)")
    parser.add_argument("--tol", type=_tol, default=DEFAULT_TOL,
                        help=f"largest acceptable relative error (default {DEFAULT_TOL:g})")
    return parser


def select(names) -> list:
    """The registered cases called ``names`` (all of them for none).

    Raises:
        UsageError: one line naming every unknown name and the close ones.
    """
    if not names:
        return list(cases.CASES)
    selected, unknown = [], []
    for name in names:
        try:
            selected.append(cases.find_case(name))
        except cases.UnknownCaseError as exc:
            unknown.append(str(exc))
    if unknown:
        raise UsageError("; ".join(unknown) + "; --list shows every name")
    return selected


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
    if args.grade:
        try:
            report = grading.grade(args.ops or None, seed=args.seed, tol=args.tol)
        except cases.UnknownCaseError as exc:
            return fail(PROG, exc)
        print(report)
        return 0 if report.passed else 1
    try:
        selected = select(args.ops)
    except UsageError as exc:
        return fail(PROG, exc)

    width = max(len(c.name) for c in selected)
    header = f"{'op':<{width}}  {'argument':<26} {'max rel error':>14}  verdict"
    print(header)
    print("-" * len(header))
    failed = 0
    for case in selected:
        report = case.check(seed=args.seed, tol=args.tol)
        rows = report.arguments
        if len(rows) > SUMMARY_ABOVE and not args.verbose:
            # A whole model: its worst parameter stands for all, failures always shown.
            worst = max(rows, key=lambda a: (not a.passed, a.max_rel_error))
            rows = [a for a in rows if not a.passed] or [worst]
            rows = [ArgumentReport(f"{a.name} (worst of {len(report.arguments)})", a.max_rel_error,
                                   problems=a.problems, tol=a.tol) if a is worst else a
                    for a in rows]
        for a in rows:
            err = "n/a" if a.problems else f"{a.max_rel_error:.2e}"
            print(f"{case.name:<{width}}  {a.name:<26} {err:>14}  {'ok' if a.passed else 'FAIL'}")
            for p in a.problems:
                print(f"{'':<{width}}  {'':<26} {'':>14}  {p}")
        for p in report.problems:
            print(f"{case.name:<{width}}  {'(contract)':<26} {'':>14}  FAIL: {p}")
        failed += not report.passed
    print("-" * len(header))
    print(f"{len(selected) - failed} of {len(selected)} ops passed "
          f"(tolerance {args.tol:g}, float64)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
