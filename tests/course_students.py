"""Simulated students of the course, shared by the tests that grade them.

A student is a planted fault (or none) in the answers of the source
notebooks (``assignments/*.ipynb``, the solution cells by ``grade_id``). The
same answers go into the student's notebooks (the released notebooks with
their answer cells filled) and into the student's copy of the package (the
released stubs replaced by the notebook's functions), so both grading routes,
``nbgrader autograde`` and ``python -m lvae_np.gradcheck --grade --submission
DIR``, grade the same code. ``filled`` gives a module of the package as a
student who wrote the package's own bodies in the stubs hands it in (a copy
whose functions differ from the notebooks' code).

The faults are text edits, each made once: ``WRONG_BATCHNORM`` doubles dgamma
in batch norm's training mode only (evaluation mode stays right), and
``WRONG_MERGE`` flips the sign of the mean term of the merge's dvar_hat. Both
match the package's own bodies (``lvae_np/layers.py``, ``lvae_np/gaussian.py``)
and the source notebooks' solution cells alike.
"""
from __future__ import annotations

import ast
from pathlib import Path

from lvae_np.course import markers
from lvae_np.gradcheck import grading

ROOT = Path(__file__).resolve().parent.parent
ASSIGNMENTS = ROOT / "assignments"

# (old, new): one occurrence of ``old`` becomes ``new``.
WRONG_BATCHNORM = ("    return dx, dgamma, dbeta\n", "    return dx, 2.0 * dgamma, dbeta\n")
WRONG_MERGE = ("g_var * w_hat * w_hat - g_diff * w_hat", "g_var * w_hat * w_hat + g_diff * w_hat")

# name -> {answer cell's grade_id: fault}, or None for a student who wrote nothing.
CLASS = {
    "nothing": None,
    "wrong batch norm": {"batchnorm_backward": WRONG_BATCHNORM},
    "wrong merge": {"merge_backward": WRONG_MERGE},
    "all correct": {},
}


def replace_once(text: str, old: str, new: str) -> str:
    """``text`` with its one occurrence of ``old`` replaced by ``new`` (asserted to be one)."""
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times"
    return text.replace(old, new)


def replace_in(path: Path, old: str, new: str) -> None:
    """``replace_once`` in the file at ``path``."""
    path.write_text(replace_once(path.read_text(), old, new))


def filled(source: str) -> str:
    """A module's source as a student who wrote the package's own bodies hands it in: the code
    regions kept, the docstrings' solution regions cut as the release cuts them."""
    lines = source.splitlines()
    drop = {i for r in markers.regions(source) if r.kind == "code" for i in (r.begin, r.end)}
    return markers.cut("\n".join(line for i, line in enumerate(lines) if i not in drop) + "\n")


def _nbgrader(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def answers(notebook: Path) -> dict:
    """The source notebook's answer code: {grade_id: its solution cell's code, markers dropped}."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    found = {}
    for cell in nb.cells:
        meta = _nbgrader(cell)
        if cell.cell_type == "code" and meta.get("solution"):
            drop = {i for r in markers.regions(cell.source) for i in (r.begin, r.end)}
            lines = cell.source.splitlines()
            found[meta["grade_id"]] = "\n".join(
                line for i, line in enumerate(lines) if i not in drop) + "\n"
    return found


def student_answers(faults: dict) -> dict:
    """A student's answers: {source notebook: {grade_id: code}}, with ``faults`` planted.

    Args:
        faults: {grade_id: (old, new)}, as in ``CLASS``; each grade_id must be an
            answer cell of some notebook.
    """
    found = {nb: answers(nb) for nb in sorted(ASSIGNMENTS.glob("*.ipynb"))}
    for grade_id, (old, new) in faults.items():
        (code,) = [code for code in found.values() if grade_id in code]
        code[grade_id] = replace_once(code[grade_id], old, new)
    return found


def filled_notebook(released: Path, code: dict):
    """The released notebook at ``released`` with its answer cells' code replaced from ``code``.

    Args:
        released: a released notebook (its answer cells stubs).
        code: {grade_id: code} for every code answer cell of it (``answers``).

    Returns:
        The notebook (nbformat), the released file unchanged.
    """
    import nbformat

    nb = nbformat.read(released, as_version=4)
    seen = set()
    for cell in nb.cells:
        meta = _nbgrader(cell)
        if cell.cell_type == "code" and meta.get("solution"):
            assert "raise NotImplementedError()" in cell.source, meta["grade_id"]
            cell.source = code[meta["grade_id"]]
            seen.add(meta["grade_id"])
    assert seen == set(code), (sorted(seen), sorted(code))
    return nb


def _imports_of(setup: str) -> list:
    """The setup cell's imports from lvae_np (the grader's aside), as relative imports."""
    lines = []
    for node in ast.parse(setup).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and (
                node.module == "lvae_np" or node.module.startswith("lvae_np.")) \
                and not node.module.startswith("lvae_np.gradcheck"):
            names = ", ".join(a.name + (f" as {a.asname}" if a.asname else "")
                              for a in node.names)
            module = node.module.removeprefix("lvae_np").lstrip(".")
            lines.append(f"from .{module} import {names}")
    return lines


def write_into_copy(package: Path, notebook: Path, code: dict) -> list:
    """Put a notebook's answers into a student's copy of the package, in place of the stubs.

    Each function of an answer cell that an assignment asks for under the
    package's name (``grading.assigned_functions``) replaces the copy's
    definition of it; the notebook's setup cell's imports from lvae_np go,
    as relative imports, to the end of each module that got one (the names
    the notebook's code uses).

    Args:
        package: the copy's ``lvae_np`` folder.
        notebook: the source notebook (for its setup cell).
        code: its answer code, as ``answers`` returns it.

    Returns:
        The keys written (``"layers.batchnorm_backward"``).
    """
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    (setup,) = [c.source for c in nb.cells if _nbgrader(c).get("grade_id") == "setup"]
    imports = _imports_of(setup)
    keys = {key.rpartition(".")[2]: key for key in grading.assigned_functions()}
    written = []
    for source in code.values():
        tree = ast.parse(source)
        for node in tree.body:
            if not (isinstance(node, ast.FunctionDef) and node.name in keys):
                continue
            key = keys[node.name]
            path = package / (key.rpartition(".")[0].replace(".", "/") + ".py")
            text = path.read_text()
            (old,) = [n for n in ast.parse(text).body
                      if isinstance(n, ast.FunctionDef) and n.name == node.name]
            lines = text.splitlines()
            first = min([old.lineno] + [d.lineno for d in old.decorator_list]) - 1
            mine = ast.get_source_segment(source, node, padded=True).splitlines()
            lines[first:old.end_lineno] = mine
            tail = [line for line in imports if line not in lines]
            if tail:
                lines += ["", "", "# The names the notebook's code uses.", *tail]
            path.write_text("\n".join(lines) + "\n")
            written.append(key)
    return written
