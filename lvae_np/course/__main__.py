"""The course kit's command line: ``python -m lvae_np.course release DIR``.

``release DIR`` (or ``release --out DIR``) writes the whole student version;
``--assignments-only`` leaves the tutorials out, and ``--assignment NN``
(repeatable) releases only those assignments, for a weekly release.

Exit status 0 when the student version is written; 2 when it cannot be (the
folder is the source tree, in it or above it; it is not empty without
``--force``, or with it holds files no release wrote or that changed since;
``--source`` is not an lvae_np source tree, or lacks the data a released
notebook reads; ``--assignment`` names no assignment; a notebook is not one;
nbgrader is missing; markers do not pair up), with one line on stderr and the
folder as it was.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ..training.cli import Parser, RawHelpFormatter, UsageError, entry
from .markers import MarkerError
from .release import MANIFEST, NBGRADER_TIMEOUT, NOTEBOOK_FOLDERS, SOURCE, CourseError, release

PROG = "lvae_np.course"


def build_parser() -> Parser:
    """The command line's parser; its errors raise UsageError."""
    parser = Parser(prog="python -m lvae_np.course", formatter_class=RawHelpFormatter,
                    description="The course kit of lvae_np.\n\n"
                    "release: write the student version into DIR: the notebooks of "
                    "assignments/ and tutorials/\ncleared by nbgrader, a copy of lvae_np "
                    "whose assigned functions raise NotImplementedError,\nthe data and "
                    "published runs the notebooks read (the release runs offline), and\n"
                    "nbgrader_config.py.")
    commands = parser.add_subparsers(dest="command", metavar="release", required=True,
                                     parser_class=Parser)
    rel = commands.add_parser(
        "release", help="write the student version", formatter_class=RawHelpFormatter,
        description="Write the student version into DIR (new or empty, outside the source "
        "tree).\n\nExamples:\n"
        "  python -m lvae_np.course release DIR                      # everything\n"
        "  python -m lvae_np.course release DIR --assignments-only   # no tutorials\n"
        "  python -m lvae_np.course release DIR --assignment 04      # one assignment "
        "(weekly)")
    rel.add_argument("dir", nargs="?", type=Path, metavar="DIR",
                     help="the folder to write (the same as --out DIR)")
    rel.add_argument("--out", type=Path, metavar="DIR",
                     help="the folder to write (empty or new, outside the source tree)")
    rel.add_argument("--force", action="store_true",
                     help=f"replace an earlier release in DIR: only the files its {MANIFEST} "
                     "lists, and only when none changed and nothing was added; the new "
                     "release replaces the whole earlier one (notebooks it leaves out "
                     "are removed)")
    rel.add_argument("--assignments-only", action="store_true",
                     help="release the assignments without the tutorials and the files "
                     "only they read (MNIST, the published runs)")
    rel.add_argument("--assignment", action="append", metavar="NN",
                     help="release only this assignment, and no tutorial: its number "
                     "(04) or file name (04_ladder_step.ipynb); repeat it for several. "
                     "The package copy is the same as in a whole release")
    rel.add_argument("--source", type=Path, default=SOURCE,
                     help="the source tree with lvae_np/, assignments/ and tutorials/ "
                     "(and data/ and results/, which the tutorials read)")
    rel.epilog = (f"DIR/nbgrader_config.py sets nbgrader's cell timeout to {NBGRADER_TIMEOUT} s "
                  "(nbgrader's default,\n30 s, is too short for the tutorials' training "
                  "cells).")
    return parser


def _out(args) -> Path:
    """The folder to write, from DIR or --out (one of them, or both the same)."""
    if args.dir is None and args.out is None:
        raise UsageError("release: give the folder to write, DIR (or --out DIR)")
    if args.dir is not None and args.out is not None and args.dir != args.out:
        raise UsageError(f"release: DIR {args.dir} and --out {args.out} differ: give one")
    return args.out if args.out is not None else args.dir


@entry(PROG, errors=(CourseError, MarkerError))
def main(argv=None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    done = release(_out(args), force=args.force, source=args.source,
                   tutorials=not args.assignments_only, assignments=args.assignment)
    functions = sum(len(names) for names in done["cut"].values())
    books = [p for p in done["notebooks"] if p.suffix == ".ipynb"]
    per_folder = ", ".join(f"{sum(p.parts[0] == folder for p in books)} in {folder}/"
                           for folder in NOTEBOOK_FOLDERS)
    print(f"{'replaced the release in' if done['replaced'] else 'wrote'} {done['out']}: "
          f"lvae_np with {functions} functions to write ({len(done['cut'])} modules), "
          f"{len(books)} notebooks ({per_folder}), {len(done['data'])} data files they read, "
          f"{len(done['files'])} files; see {done['out'] / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
