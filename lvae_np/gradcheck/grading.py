"""The autograder: registered cases graded in dependency order, with points and one verdict each.

For a course, in a notebook's test cell or a test file::

    from lvae_np.gradcheck import grade
    report = grade(["batchnorm"], using={"layers.batchnorm_backward": batchnorm_backward})
    print(report)          # a short table: points and verdict per case
    assert report.passed

and on the command line ``python -m lvae_np.gradcheck --grade [NAMES...]``.

What it does:

* ``names`` picks registered cases (``cases.py``) or groups of them
  (``groups``: ``ops``, ``composites``, ``models``, a module such as
  ``layers``, or ``all``); none picks the cases the course assigns
  (``points.py``). Each comes with the cases it uses (``Case.uses``),
  checked first, in the registry's order.
* ``using`` puts functions in place of the package's (``"layers.dense_backward"
  -> f``) while grading, and puts the package's back afterwards, even on an
  error. The cases, and every composite and model built on the replaced op,
  then run the replacement: the package calls its ops through their modules.
  Only the student's own functions are put in place (``ownership.py``): one
  that is lvae_np's own, wraps or calls it, copies its code or, in a notebook,
  comes from outside it, is refused and its cases get the verdict "not the
  student's code". The package's own tests pass ``allow_package=True``; to
  grade the package's functions as installed, give no ``using``.
* Verdicts (``GradeReport.status``): ``"passed"``; ``"failed"`` (a gradient is
  wrong, or the op broke its contract: one sentence says how, e.g. a backward
  that returned None); ``"not implemented"`` (a function raises
  NotImplementedError, the state of a released student copy); ``"error"``
  (another exception, in one sentence with the line that raised it);
  ``"not the student's code"`` (one line says why); and ``"blocked by
  <case>"`` for a case that uses one that did not pass: it is not run, and is
  listed once under the case to blame.
* Points: the course's point table (``points.py``) gives each case an
  assignment grades its points, the same as the notebook's test cell says;
  a case earns them when it passes. Only the cases asked for count: those
  checked first because they are used show "-" (they count where they are
  asked for), and so does a case no assignment grades, unless ``everything``
  (``--grade --all``) counts it at its registry weight ``Case.points``.
"""
from __future__ import annotations

import ast
import contextlib
import difflib
import functools
import importlib
import inspect
import os
import textwrap
import traceback

import numpy

from . import cases, ownership, points
from .builder import Case
from .engine import DEFAULT_TOL, backward_problem
from .report import (  # noqa: F401  (the verdicts are part of the grader's interface)
    BLOCKED,
    ERROR,
    FAILED,
    NOT_IMPLEMENTED,
    NOT_OWN,
    PASSED,
    GradeReport,
    Item,
)

WORST = 3     # wrong arguments shown per failed case (the largest errors)
KIND_GROUPS = {"ops": "op", "composites": "composite", "models": "model"}
# Frames of these folders are not where a student's error is
_SKIP = tuple(os.path.dirname(m.__file__) for m in (numpy, cases, contextlib))


class ContractError(Exception):
    """An op broke the op contract (wrong return); the message is one sentence."""


# ----------------------------------------------------------------------------
# Which cases, and their points
# ----------------------------------------------------------------------------
def groups() -> dict:
    """Group name -> its cases: ``all``, ``ops``, ``composites``, ``models`` and each module.

    Only the course's cases (``Case.course``): the original code's options
    are graded by name alone.
    """
    course = [c for c in cases.CASES if c.course]
    found = {"all": course}
    for group, kind in KIND_GROUPS.items():
        found[group] = [c for c in course if c.kind == kind]
    for case in course:
        if case.module not in found:
            found[case.module] = [c for c in course if c.module == case.module]
    return found


def assigned() -> list:
    """The cases the course's assignments grade (``points.CASE_POINTS``), in the registry's order.

    Raises:
        cases.UnknownCaseError: the point table names a case not registered.
    """
    names = {cases.find_case(name).name for name in points.CASE_POINTS}
    return [c for c in cases.CASES if c.name in names]


def asked(names=None, *, everything: bool = False) -> list:
    """The cases ``names`` asks for, in the registry's order (not those they use).

    Args:
        names: case or group names (one string or several); None for the
            assigned cases, or with ``everything`` for every case of the course.
        everything: see ``grade``.

    Raises:
        cases.UnknownCaseError: a name is neither (one line, naming close ones).
    """
    if names is None:
        return groups()["all"] if everything else assigned()
    if isinstance(names, str):
        names = [names]
    known, wanted = groups(), set()
    for name in names:
        wanted |= {c.name for c in known[name]} if name in known else {cases.find_case(name).name}
    return [c for c in cases.CASES if c.name in wanted]


def select(names=None, *, everything: bool = False) -> list:
    """The cases ``names`` asks for (see ``asked``), with every case they use, in the registry's order.

    Raises:
        cases.UnknownCaseError: a name is neither (one line, naming close ones).
    """
    by_name = {c.name: c for c in cases.CASES}
    needed, todo = set(), [c.name for c in asked(names, everything=everything)]
    while todo:
        name = todo.pop()
        if name not in needed:
            needed.add(name)
            todo += list(by_name[name].uses)
    return [c for c in cases.CASES if c.name in needed]


def points_of(case: Case, *, everything: bool = False) -> int:
    """What ``case`` is worth: the point table's points, else its registry weight with
    ``everything``, else nothing (no assignment grades it)."""
    if case.name in points.CASE_POINTS:
        return points.CASE_POINTS[case.name]
    return case.points if everything else 0


# ----------------------------------------------------------------------------
# Functions in place of the package's
# ----------------------------------------------------------------------------
def target(key: str):
    """``(module, name)`` for ``"layers.dense_backward"`` (or ``"lvae_np.layers.dense_backward"``).

    Raises:
        ValueError: no such module or function of lvae_np (one line).
    """
    if not isinstance(key, str) or "." not in key:
        raise ValueError(f"using: {key!r} is not 'module.function' "
                         "(such as 'layers.batchnorm_backward')")
    module_name, _, name = key.removeprefix("lvae_np.").rpartition(".")
    try:
        module = importlib.import_module(f"lvae_np.{module_name}")
    except ImportError:
        raise ValueError(f"using: lvae_np has no module {module_name!r} (in {key!r})") from None
    if not callable(getattr(module, name, None)):
        public = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))]
        close = difflib.get_close_matches(name, public, n=3)
        hint = f" (close: {', '.join(module_name + '.' + c for c in close)})" if close else ""
        raise ValueError(f"using: lvae_np.{module_name} has no function {name!r}{hint}")
    return module, name


@contextlib.contextmanager
def swapped(targets: list):
    """Set each ``(module, name, function)``; the module's own are back afterwards, whatever happens."""
    saved = []
    try:
        for module, name, function in targets:
            saved.append((module, name, getattr(module, name)))
            setattr(module, name, function)
        yield
    finally:
        for module, name, original in reversed(saved):
            setattr(module, name, original)


def replaced(using: dict):
    """Put ``using``'s functions in place of the package's (a context manager, see ``swapped``)."""
    targets = []
    for key, function in using.items():
        module, name = target(key)
        if not callable(function):
            raise TypeError(f"using[{key!r}] is a {type(function).__name__}, not a function")
        targets.append((module, name, function))
    return swapped(targets)


def input_names(forward) -> list:
    """The names of a forward's positional parameters: its inputs, one gradient each."""
    try:
        params = inspect.signature(forward).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def checking(module, name: str, function):
    """``function`` (``module.name``) with its result held to the op contract (ContractError)."""
    if name.endswith("_forward"):
        @functools.wraps(function)
        def forward(*args, **kwargs):
            result = function(*args, **kwargs)
            if not (isinstance(result, tuple) and len(result) == 2):
                what = "None" if result is None else f"a {type(result).__name__}"
                raise ContractError(f"{name} returned {what}: it must return (out, cache)")
            return result
        return forward

    @functools.wraps(function)
    def backward(*args, **kwargs):
        result = function(*args, **kwargs)
        partner = getattr(module, name.removesuffix("_backward") + "_forward", None)
        names = input_names(partner) if partner is not None else []
        problem = backward_problem(result, names, name) if names else None
        if problem:
            raise ContractError(problem)
        return result
    return backward


def contract_checked(case: Case):
    """While grading ``case``, its own forward and backward checked by ``checking``."""
    targets = [target(key) for key in case.functions()]
    return swapped([(module, name, checking(module, name, getattr(module, name)))
                    for module, name in targets])


def not_implemented(function) -> bool:
    """Whether ``function``'s body raises NotImplementedError unconditionally (a stub)."""
    try:
        source = textwrap.dedent(inspect.getsource(inspect.unwrap(function)))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError, IndentationError):
        return False
    node = tree.body[0] if tree.body else None
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return False
    for stmt in node.body:
        if isinstance(stmt, ast.Raise) and stmt.exc is not None:
            exc = stmt.exc.func if isinstance(stmt.exc, ast.Call) else stmt.exc
            if isinstance(exc, ast.Name) and exc.id == "NotImplementedError":
                return True
    return False


def stub_of(case: Case) -> str | None:
    """The first of the case's own functions that is a stub, by name, or None."""
    for key in case.functions():
        module, name = target(key)
        if not_implemented(getattr(module, name)):
            return name
    return None


def _where(exc: BaseException):
    """The frame where a student's code raised: the deepest outside NumPy and the checker."""
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [f for f in frames if not f.filename.startswith(_SKIP)]
    return (mine or frames or [None])[-1]


def _sentence(exc: Exception) -> str:
    frame = _where(exc)
    message = (str(exc).strip().splitlines() or [""])[0]
    if len(message) > 160:
        message = message[:157] + "..."
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    if frame is None:
        return f"raised {text}"
    line = f"`{frame.line.strip()}`" if frame.line else f"line {frame.lineno}"
    return f"{frame.name} raised {text} (at {line})"


# ----------------------------------------------------------------------------
# Grading
# ----------------------------------------------------------------------------
def grade_case(case: Case, blame: dict, *, seed: int, tol: float, worth: int | None = None,
               counted: bool = True, refused: dict | None = None) -> Item:
    """Grade one case, given the blame of those graded before (case -> cases at fault).

    Args:
        worth: its points (default: ``case.points``).
        counted: whether it was asked for (its points count) or is checked first.
        refused: ``using`` key -> why its function is not the student's (``ownership``).
    """
    item = Item(case.name, case.kind, case.points if worth is None else worth,
                counted=counted)
    order = [c.name for c in cases.CASES]
    roots = sorted({r for u in case.uses for r in blame.get(u, ())}, key=order.index)
    mine = [refused[key] for key in case.functions() if key in (refused or {})]
    stub = None if mine else stub_of(case)
    if mine:
        item.status, item.details = NOT_OWN, mine[:1]
    elif stub is not None:
        item.status, item.details = NOT_IMPLEMENTED, [stub]
    elif roots:
        item.status = f"{BLOCKED} {', '.join(roots)}"
    else:
        try:
            with contract_checked(case):
                report = case.check(seed=seed, tol=tol)
        except NotImplementedError as exc:
            frame = _where(exc)
            item.status = NOT_IMPLEMENTED
            item.details = [frame.name if frame else case.name]
        except ContractError as exc:
            item.status, item.details = FAILED, [str(exc)]
        except Exception as exc:  # noqa: BLE001 (a student's error, in one sentence)
            item.status, item.details = ERROR, [_sentence(exc)]
        else:
            item.arguments = list(report.arguments)
            if not report.passed:
                item.status = FAILED
                wrong = sorted((a for a in report.arguments if not a.passed),
                               key=lambda a: (not a.problems, -a.max_rel_error))
                item.details = list(report.problems) + [a.describe() for a in wrong[:WORST]]
                if len(wrong) > WORST:
                    item.details.append(f"... and {len(wrong) - WORST} more wrong arguments")
    blame[case.name] = () if item.status == PASSED else (
        roots if item.status.startswith(BLOCKED) else (case.name,))
    return item


def refusals(using: dict, *, allow_package: bool = False) -> dict:
    """``using`` key -> one line saying why its function is not the student's own, for those refused.

    Raises:
        ValueError, TypeError: as ``replaced``.
    """
    found = {}
    for key, function in using.items():
        module, name = target(key)
        if not callable(function):
            raise TypeError(f"using[{key!r}] is a {type(function).__name__}, not a function")
        why = None if allow_package else ownership.refusal(key, function, getattr(module, name))
        if why:
            found[key] = why
    return found


def grade(names=None, *, using: dict | None = None, seed: int = 0, tol: float = DEFAULT_TOL,
          everything: bool = False, allow_package: bool = False) -> GradeReport:
    """Grade registered cases: ops before the composites and models built on them.

    Args:
        names: case names (``"batchnorm"``, ``"ladder-step"``), group names
            (``"ops"``, ``"layers"``, see ``groups``), one or several; None for
            the cases the course's assignments grade (``points.py``). The
            cases they use are graded too, first, without counting.
        using: ``"module.function" -> function`` to grade in place of the
            package's (``{"layers.batchnorm_backward": my_backward}``), for the
            duration of the call. Each must be the student's own (see
            ``ownership``): a refused one is not put in place, and its cases
            score 0 as "not the student's code".
        seed: seed of the inputs and upstream gradients.
        tol: largest acceptable relative error (float64).
        everything: with no names, every case of the course, not only the
            assigned ones; and a case no assignment grades counts at its
            registry weight (``Case.points``) instead of nothing.
        allow_package: accept lvae_np's own functions (and functions calling
            them) in ``using``: for the package's own tests, never for a course.

    Returns:
        a GradeReport; ``print`` it for the table. Nothing is raised for a
        wrong or missing gradient.

    Raises:
        cases.UnknownCaseError: an unknown case or group name.
        ValueError, TypeError: a key of ``using`` names no function of
            lvae_np, or a value is not callable.
    """
    wanted = {c.name for c in asked(names, everything=everything)}
    selected = select(names, everything=everything)
    using = dict(using or {})
    refused = refusals(using, allow_package=allow_package)
    mine = {key: function for key, function in using.items() if key not in refused}
    blame, items = {}, []
    with replaced(mine):
        for case in selected:
            counted = case.name in wanted
            worth = points_of(case, everything=everything) if counted else 0
            items.append(grade_case(case, blame, seed=seed, tol=tol, worth=worth,
                                    counted=counted, refused=refused))
    owned = {key for case in selected for key in case.functions()}
    items += [Item(key, "function", 0, NOT_OWN, [why]) for key, why in refused.items()
              if key not in owned]  # refused, and no case graded here is its own
    return GradeReport(items, seed, tol)
