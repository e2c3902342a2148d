"""The course kit's command line: ``python -m lvae_np.course release --out DIR``.

Exit status 0 when the student version is written; 2 when it cannot be (the
folder is the source tree, in it or above it; it is not empty without
``--force``, or with it holds files no release wrote or that changed since;
``--source`` is not an lvae_np source tree; a notebook is not one; nbgrader is
missing; markers do not pair up), with one line on stderr and ``--out`` as it
was.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ..training.cli import Parser, RawHelpFormatter, entry
from .markers import MarkerError
from .release import MANIFEST, NOTEBOOK_FOLDERS, SOURCE, CourseError, release

PROG = "lvae_np.course"


def build_parser() -> Parser:
    """The command line's parser; its errors raise UsageError."""
    parser = Parser(prog="python -m lvae_np.course", formatter_class=RawHelpFormatter,
                    description="The course kit of lvae_np.\n\n"
                    "release: write the student version into --out: the notebooks of "
                    "assignments/ and tutorials/\ncleared by nbgrader, and a copy of lvae_np "
                    "whose assigned functions raise NotImplementedError.")
    commands = parser.add_subparsers(dest="command", metavar="release", required=True,
                                     parser_class=Parser)
    rel = commands.add_parser("release", help="write the student version",
                              formatter_class=RawHelpFormatter)
    rel.add_argument("--out", type=Path, required=True,
                     help="the folder to write (empty or new, outside the source tree)")
    rel.add_argument("--force", action="store_true",
                     help=f"replace an earlier release in --out: only the files its {MANIFEST} "
                     "lists, and only when none changed and nothing was added")
    rel.add_argument("--source", type=Path, default=SOURCE,
                     help="the source tree with lvae_np/, assignments/ and tutorials/")
    return parser


@entry(PROG, errors=(CourseError, MarkerError))
def main(argv=None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    done = release(args.out, force=args.force, source=args.source)
    functions = sum(len(names) for names in done["cut"].values())
    books = [p for p in done["files"] if p.endswith(".ipynb")]
    per_folder = ", ".join(f"{sum(p.startswith(folder + '/') for p in books)} in {folder}/"
                           for folder in NOTEBOOK_FOLDERS)
    print(f"{'replaced the release in' if done['replaced'] else 'wrote'} {done['out']}: "
          f"lvae_np with {functions} functions to write ({len(done['cut'])} modules), "
          f"{len(books)} notebooks ({per_folder}), {len(done['files'])} files; "
          f"see {done['out'] / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
