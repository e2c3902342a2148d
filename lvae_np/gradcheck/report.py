"""What the autograder found, and the one table that both routes of the command line print.

``grade`` returns a ``GradeReport``: one ``Item`` per case, in the order
graded. ``python -m lvae_np.gradcheck --grade`` prints ``report.render()``
(points shown) and the plain ``python -m lvae_np.gradcheck`` prints
``report.render(points=False)``: the same rows, verdicts and details, so an
op that is not written yet, a wrong op and the cases built on it read alike
on both routes. One row per case (the largest relative error of its
arguments; ``verbose`` adds a row per argument); a failure's few lines under
its row; the cases blocked by the same failure, in one wrapped line.

``report.earned`` is the points earned, a float: a notebook's test cell that
checks several cases ends with it, and nbgrader takes that value as the
cell's partial credit. A feedback report (``grade(..., together=True)``)
shows "feedback" where the points go and earns nothing.
"""
from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, field

from .engine import DEFAULT_TOL

PASSED, FAILED, NOT_IMPLEMENTED, ERROR, BLOCKED, NOT_OWN = (
    "passed", "failed", "not implemented", "error", "blocked by", "not the student's code")
RESULT = {PASSED: "passed", FAILED: "FAILED", NOT_IMPLEMENTED: "not implemented yet",
          ERROR: "ERROR", NOT_OWN: "not the student's code"}
WIDTH = 100   # of the table's wrapped lines


@dataclass
class Item:
    """The grade of one case.

    Attributes:
        name: the case's name (or, for a function of ``using`` that no graded
            case owns, its key).
        kind: the case's kind (``"function"`` for such a key).
        points: what it is worth in this report (0 when it does not count).
        status: one of the verdicts, ``"blocked by <cases>"`` for a case
            built on one that did not pass.
        details: the lines under its row (for "not implemented": the names).
        counted: asked for, so its points count; False for a case checked
            first because one asked for uses it.
        arguments: the engine's ArgumentReports of its check, when it ran.
        roots: for a blocked case, the cases to blame, in the registry's order.
    """

    name: str
    kind: str
    points: int
    status: str = PASSED
    details: list = field(default_factory=list)
    counted: bool = True
    arguments: list = field(default_factory=list)
    roots: list = field(default_factory=list)

    @property
    def earned(self) -> int:
        return self.points if self.status == PASSED and self.counted else 0

    @property
    def max_rel_error(self) -> float:
        """The largest relative error of its arguments (NaN when it was not run or broke the contract)."""
        if not self.arguments or any(a.problems for a in self.arguments):
            return math.nan
        return max(a.max_rel_error for a in self.arguments)


def _counts(items) -> dict:
    """How many items got each verdict ("blocked" for every "blocked by ..."), none left out."""
    found = dict.fromkeys((PASSED, FAILED, NOT_IMPLEMENTED, ERROR, NOT_OWN, "blocked"), 0)
    for item in items:
        found["blocked" if item.status.startswith(BLOCKED) else item.status] += 1
    return {verdict: n for verdict, n in found.items() if n}


def _said(counts: dict) -> str:
    return ", ".join(f"{n} {verdict}" for verdict, n in counts.items())


def _error(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2e}"


@dataclass
class GradeReport:
    """What ``grade`` found: one Item per graded case, in the order graded.

    Attributes:
        items: the Items.
        seed, tol: what the checks ran with.
        feedback: graded together (``grade(..., together=True)``): verdicts
            without points.
    """

    items: list
    seed: int = 0
    tol: float = DEFAULT_TOL
    feedback: bool = False

    @property
    def passed(self) -> bool:
        """Every graded case passed (those checked first too)."""
        return all(item.status == PASSED for item in self.items)

    @property
    def score(self) -> int:
        """The points earned (an int; see ``earned``)."""
        return sum(item.earned for item in self.items)

    @property
    def earned(self) -> float:
        """The points earned, as a float: the value a test cell checking several cases ends
        with, which nbgrader takes as the cell's partial credit (0 for a feedback report)."""
        return float(self.score)

    @property
    def total(self) -> int:
        """The points of the cases that count (those asked for)."""
        return sum(item.points for item in self.items if item.counted)

    def item(self, name: str) -> Item:
        """The graded case called ``name`` (KeyError if it was not graded)."""
        for item in self.items:
            if item.name == name:
                return item
        raise KeyError(f"{name!r} was not graded; graded: {', '.join(self.names())}")

    def names(self) -> list:
        return [item.name for item in self.items]

    def status(self, name: str) -> str:
        """One of the verdicts: ``"passed"``, ``"failed"``, ``"not implemented"``, ``"error"``,
        ``"not the student's code"`` or ``"blocked by X"``."""
        return self.item(name).status

    def counts(self) -> dict:
        """How many cases got each verdict ("blocked" for every "blocked by ..."), none left out."""
        return _counts(self.items)

    def render(self, *, points: bool = True, verbose: bool = False) -> str:
        """The table: with its points column (``--grade``) or without (the plain checker).

        Args:
            points: show each case's points and the score.
            verbose: a row for every argument of every case that ran.
        """
        shown = [i for i in self.items if not i.status.startswith(BLOCKED)]
        width = max([len(i.name) for i in shown] + [4])
        header = (f"{'case':<{width}}" + (f"  {'points':>{self._worth_width}}" if points else "")
                  + f"  {'max rel error':>13}  result")
        rule = "-" * max(len(header), 60)
        lines = [header, rule]
        for item in shown:
            lines += self._rows(item, width, points, verbose)
        blocked = {}
        for item in self.items:
            if item.status.startswith(BLOCKED):
                blocked.setdefault(item.status, []).append(item)
        for status, items in blocked.items():
            lost = sum(i.points for i in items if i.counted)
            head = f"{status}" + (f" (0 / {lost} points)" if points and lost else "") + ": "
            lines += textwrap.wrap(", ".join(i.name for i in items), WIDTH,
                                   initial_indent=head, subsequent_indent="    ",
                                   break_on_hyphens=False)
        lines += [rule, self._summary(points)]
        return "\n".join(lines)

    def _rows(self, item: Item, width: int, points: bool, verbose: bool) -> list:
        result, details = RESULT[item.status], item.details
        if item.status == NOT_IMPLEMENTED:  # the function's name fits on the row
            result, details = f"{result} ({', '.join(details)})", []
        worth = ("(used)" if not item.counted else "feedback" if self.feedback
                 else "-" if not item.points else f"{item.earned:>2} / {item.points:<2}")
        row = f"{item.name:<{width}}" + (f"  {worth:>{self._worth_width}}" if points else "")
        rows = [f"{row}  {_error(item.max_rel_error):>13}  {result}"]
        rows += [f"    {d}" for d in details]
        if verbose:
            indent = width + (self._worth_width + 2 if points else 0) - 4
            for a in item.arguments:
                err = "n/a" if a.problems else f"{a.max_rel_error:.2e}"
                rows.append(f"    {a.name:<{indent}}  {err:>13}  {'ok' if a.passed else 'FAIL'}")
        return rows

    def _summary(self, points: bool) -> str:
        where = f"(seed {self.seed}, tolerance {self.tol:g}, float64)"
        if not points:
            done = sum(i.status == PASSED for i in self.items)
            rest = "" if done == len(self.items) else f": {_said(self.counts())}"
            return f"{done} of {len(self.items)} cases passed{rest} {where}"
        asked = [i for i in self.items if i.counted]
        first = [i for i in self.items if not i.counted]
        text = ("feedback, no points" if self.feedback
                else f"score {self.score} / {self.total}" if self.total
                else "no points (no assignment grades these cases)")
        text += f": {_said(_counts(asked))}" if asked else ""
        text += f"; checked first, no points here: {_said(_counts(first))}" if first else ""
        return f"{text} {where}"

    @property
    def _worth_width(self) -> int:
        return 8 if self.feedback else 7

    def __str__(self) -> str:
        return self.render()

    def __repr__(self) -> str:
        what = "feedback" if self.feedback else f"score {self.score} / {self.total}"
        return f"<GradeReport {what}: {'passed' if self.passed else 'not passed'}>"
