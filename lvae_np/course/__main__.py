"""The course kit's command line: ``python -m lvae_np.course release --out DIR``.

Exit status 0 when the student version is written; 2 when it cannot be (the
folder is not empty without ``--force``, nbgrader is missing, markers do not
pair up), with one line on stderr.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ..cli import Parser, RawHelpFormatter, entry
from .markers import MarkerError
from .release import SOURCE, CourseError, release

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
    rel.add_argument("--out", type=Path, required=True, help="the folder to write (empty or new)")
    rel.add_argument("--force", action="store_true",
                     help="write into a non-empty --out, replacing a previous release there")
    rel.add_argument("--source", type=Path, default=SOURCE,
                     help="the source tree with assignments/ and tutorials/")
    return parser


@entry(PROG, errors=(CourseError, MarkerError))
def main(argv=None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    done = release(args.out, force=args.force, source=args.source)
    functions = sum(len(names) for names in done["cut"].values())
    notebooks = sum(str(p).endswith(".ipynb") for p in done["notebooks"])
    print(f"wrote {done['out']}: lvae_np with {functions} functions to write "
          f"({len(done['cut'])} modules), {notebooks} notebooks; see {done['out'] / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
