"""Solution regions in Python source: find them, and cut them out for a student copy.

The package marks the answers to its course assignments with nbgrader's
markers: a line ``### BEGIN SOLUTION`` and a line ``### END SOLUTION``
(alone on their lines, any indentation) around

* the body of an assigned function: in the student copy it becomes
  ``# YOUR CODE HERE`` and ``raise NotImplementedError()``, as nbgrader
  writes it in a notebook, so the function is a stub that the autograder
  reports as "not implemented";
* the lines of its docstring that hold the answer (the closed-form
  gradients): in the student copy they are removed, and the question part
  of the docstring (shapes, what to compute) stays.

Which kind a region is comes from the source itself: markers inside a string
(a docstring) delimit text, markers among statements delimit code.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
CODE_STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")
_MARKER = re.compile(r"^(\s*)(### (?:BEGIN|END) SOLUTION)\s*$")


class MarkerError(ValueError):
    """Markers that do not pair up, or a cut that would not parse; one line naming the place."""


@dataclass(frozen=True)
class Region:
    """One solution region: the lines of its two markers (0-based) and what it is."""

    begin: int
    end: int
    kind: str          # "code" or "text" (inside a docstring)
    function: str      # the innermost function around it ("" at module level)
    indent: str        # the BEGIN marker's indentation


def _string_spans(tree) -> list:
    """(first, last) 0-based lines of every string constant that spans several lines."""
    return [(node.lineno - 1, node.end_lineno - 1) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and node.end_lineno > node.lineno]


def _functions(tree) -> list:
    """(first, last, name) 0-based lines of every function definition."""
    return [(node.lineno - 1, node.end_lineno - 1, node.name) for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def regions(source: str, filename: str = "<source>") -> list:
    """The solution regions of ``source``, in order.

    Raises:
        MarkerError: a BEGIN inside a region, an END outside one, a region
            never closed, or the two markers of a region in different places
            (one in a docstring, the other not); the message names the line.
    """
    lines = source.splitlines()
    if not any(_MARKER.match(line) for line in lines):
        return []
    try:
        tree = ast.parse(source, filename=filename)
    except SyntaxError as exc:
        raise MarkerError(f"{filename}:{exc.lineno}: not valid Python ({exc.msg})") from None
    strings, functions = _string_spans(tree), _functions(tree)

    def in_string(i):
        return any(first < i < last for first, last in strings)

    found, open_at = [], None
    for i, line in enumerate(lines):
        match = _MARKER.match(line)
        if not match:
            continue
        if match.group(2) == BEGIN:
            if open_at is not None:
                raise MarkerError(f"{filename}:{i + 1}: {BEGIN} inside the region opened at "
                                  f"line {open_at + 1}")
            open_at = i
            continue
        if open_at is None:
            raise MarkerError(f"{filename}:{i + 1}: {END} without a {BEGIN} before it")
        if in_string(open_at) != in_string(i):
            raise MarkerError(f"{filename}:{open_at + 1}: a region's two markers must both be "
                              "inside the docstring or both outside it")
        around = [f for f in functions if f[0] <= open_at <= f[1]]
        function = max(around, key=lambda f: f[0])[2] if around else ""
        found.append(Region(open_at, i, "text" if in_string(open_at) else "code", function,
                            _MARKER.match(lines[open_at]).group(1)))
        open_at = None
    if open_at is not None:
        raise MarkerError(f"{filename}:{open_at + 1}: {BEGIN} never closed by {END}")
    return found


def cut(source: str, filename: str = "<source>") -> str:
    """``source`` with every solution region cut (see the module docstring).

    A docstring that loses a region loses the blank line before it too, when
    a blank line or the docstring's end follows, so no gap is left.

    Raises:
        MarkerError: the markers do not pair up, or the result does not parse.
    """
    found = regions(source, filename)
    if not found:
        return source
    lines = source.splitlines()
    out, i = [], 0
    for region in found:
        out += lines[i:region.begin]
        if region.kind == "code":
            out += [region.indent + stub for stub in CODE_STUB]
        else:
            following = lines[region.end + 1].strip() if region.end + 1 < len(lines) else ""
            if out and not out[-1].strip() and following in ("", '"""', "'''"):
                out.pop()
        i = region.end + 1
    out += lines[i:]
    text = "\n".join(out) + ("\n" if source.endswith("\n") else "")
    try:
        ast.parse(text, filename=filename)
    except SyntaxError as exc:
        raise MarkerError(f"{filename}:{exc.lineno}: the student copy would not parse "
                          f"({exc.msg})") from None
    return text


def solution_lines(source: str, filename: str = "<source>") -> list:
    """The stripped, non-blank lines inside the solution regions (markers excluded)."""
    lines = source.splitlines()
    return [lines[j].strip() for r in regions(source, filename)
            for j in range(r.begin + 1, r.end) if lines[j].strip()]


def marked_functions(source: str, filename: str = "<source>") -> list:
    """The names of the functions whose body has a code region, in order."""
    names = []
    for region in regions(source, filename):
        if region.kind == "code" and region.function and region.function not in names:
            names.append(region.function)
    return names
