"""No assigned answer anywhere in the student release: not in the package, not in a notebook.

For every function the course assigns (``points.ASSIGNMENTS``, those with a
module: ``"layers.dense_backward"``), the answer is what its solution regions
hold in the source package: the code of its body and the closed forms of its
docstring (``lvae_np.course.markers``). These tests build a release and search
every text file in it (the package copy, the READMEs, every notebook cell) for
each non-trivial line of those answers, whitespace-normalised, and for a
tutorial cell that prints an assigned function's source
(``inspect.getsource``), which in the full package prints the answer. A
failure names the released file, the line (or the notebook's cell and line)
and the answer it repeats.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lvae_np.course import markers
from lvae_np.course.release import PACKAGE, release
from lvae_np.gradcheck import points

from conftest import needs_nbgrader  # noqa: E402

# A released file is searched when its name ends so; notebooks are searched cell by cell.
TEXT_SUFFIXES = (".py", ".md", ".txt", ".toml", ".cfg", ".rst", ".ipynb")
# Lines of an answer too common to be one: a bare return, the namespace, a short unpacking, the
# cache's fields, and a line that only opens a call (its arguments, on the next line, are kept).
TRIVIAL = re.compile(r"^(return \w+,?|return \(\w+,\)|xp = .*|\w+ = \w+|[\w, ]+ = cache|::|.*\()$")
MIN_CHARS = 12
GETSOURCE = re.compile(r"getsource\(\s*([\w.]+)\s*\)")


def normalised(line: str) -> str:
    """A line with its whitespace runs made one space, and stripped."""
    return " ".join(line.split())


def assigned_functions() -> list:
    """``"module.function"`` for every package function an assignment asks for."""
    return sorted({f for a in points.ASSIGNMENTS for f in a.functions if "." in f})


def answers(package: Path = PACKAGE) -> dict:
    """Normalised answer line -> ``"module.function (code|docstring)"``, for every assigned function.

    Raises:
        AssertionError: an assigned function without a solution region of each kind it needs
            (a body region; the docstring's closed forms, where it has them).
    """
    found = {}
    for function in assigned_functions():
        module, name = function.rsplit(".", 1)
        path = package / (module.replace(".", "/") + ".py")
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        own = [r for r in markers.regions(text, str(path)) if r.function == name]
        assert any(r.kind == "code" for r in own), f"{function}: no solution region in its body"
        for region in own:
            kind = "code" if region.kind == "code" else "docstring"
            for line in lines[region.begin + 1:region.end]:
                line = normalised(line)
                if len(line) >= MIN_CHARS and not TRIVIAL.match(line):
                    found.setdefault(line, f"{function} ({kind})")
    return found


def text_lines(tree: Path):
    """(where, line) for every line of every text file under ``tree``; a notebook's by cell."""
    for path in sorted(tree.rglob("*")):
        if not path.is_file() or path.suffix not in TEXT_SUFFIXES or "__pycache__" in path.parts:
            continue
        rel = path.relative_to(tree).as_posix()
        if path.suffix == ".ipynb":
            for number, cell in enumerate(json.loads(path.read_text(encoding="utf-8"))["cells"],
                                          start=1):
                source = cell["source"]
                source = "".join(source) if isinstance(source, list) else source
                for j, line in enumerate(source.splitlines(), start=1):
                    yield f"{rel}: cell {number}, line {j}", line
        else:
            for j, line in enumerate(path.read_text(encoding="utf-8", errors="replace")
                                     .splitlines(), start=1):
                yield f"{rel}:{j}", line


def leaks(tree: Path, found: dict | None = None) -> list:
    """One sentence per released line that repeats an answer or prints an assigned function's code."""
    found = answers() if found is None else found
    names = {f.rsplit(".", 1)[1] for f in assigned_functions()}
    modules = {f.rsplit(".", 1)[0] for f in assigned_functions()}
    out = []
    for where, line in text_lines(tree):
        flat = normalised(line)
        for answer, owner in found.items():
            if answer in flat:
                out.append(f"{where} repeats {owner}: {answer!r}")
        for target in GETSOURCE.findall(line):
            parts = target.split(".")
            if parts[-1] in names or parts[-1] in modules:
                out.append(f"{where} prints the source of {target}, an assigned answer")
    return out


# ----------------------------------------------------------------------------
# The search itself (no release needed)
# ----------------------------------------------------------------------------
def test_every_assigned_function_has_answer_lines_of_code_and_of_closed_forms():
    found = answers()
    owners = set(found.values())
    for function in assigned_functions():
        assert f"{function} (code)" in owners, function
    # The closed forms of the docstrings are answers too, and the reparameterisation is marked.
    assert found[normalised("dL/dx = G W^T        (N, D)")] == "layers.dense_backward (docstring)"
    assert found[normalised("dL/dvar = G * eps / (2 sqrt(var_f))")] == \
        "gaussian.reparameterize_backward (docstring)"
    assert "return (cache.weights * dout,)" in found
    assert not [a for a in found if TRIVIAL.match(a) or len(a) < MIN_CHARS]
    assert "(dmu_p + dmu_p_kl, dvar_p + dvar_p_kl), cache.prior)" in found  # a call's arguments


def test_a_planted_answer_is_found_with_its_file_and_line(tmp_path):
    (tmp_path / "lvae_np").mkdir()
    (tmp_path / "lvae_np" / "layers.py").write_text(
        "def dense_backward(dout, cache):\n"
        "    x, W, has_bias = cache\n"
        "    dx = dout   @ W.T if input_grad else None   # copied, spaced out\n"
        "    raise NotImplementedError()\n")
    (tmp_path / "notes.md").write_text("The answer:\n\n    dL/dW = x^T G        (D, M)\n")
    notebook = {"cells": [{"cell_type": "markdown", "source": ["# Title\n"]},
                          {"cell_type": "code", "source": ["import inspect\n",
                                                           "print(inspect.getsource("
                                                           "layers.batchnorm_backward))"]}],
                "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "tutorials").mkdir()
    (tmp_path / "tutorials" / "t.ipynb").write_text(json.dumps(notebook))
    found = leaks(tmp_path)
    assert len(found) == 3, found
    assert found[0].startswith("lvae_np/layers.py:3 repeats layers.dense_backward (code)")
    assert found[1].startswith("notes.md:3 repeats layers.dense_backward (docstring)")
    assert found[2] == ("tutorials/t.ipynb: cell 2, line 2 prints the source of "
                        "layers.batchnorm_backward, an assigned answer")


def test_a_clean_tree_has_no_leak(tmp_path):
    (tmp_path / "a.py").write_text("def dense_backward(dout, cache):\n"
                                   "    # YOUR CODE HERE\n    raise NotImplementedError()\n"
                                   "print(inspect.getsource(Model.bottom_up_forward))\n")
    assert leaks(tmp_path) == []


# ----------------------------------------------------------------------------
# The release
# ----------------------------------------------------------------------------
@pytest.mark.slow
@needs_nbgrader
def test_the_release_holds_no_assigned_answer(tmp_path):
    out = tmp_path / "release"
    release(out)
    searched = {where.split(":")[0] for where, _ in text_lines(out)}
    assert {"lvae_np/gaussian.py", "lvae_np/variants.py", "README.md",
            "tutorials/02_backprop_by_hand.ipynb", "assignments/03_merge_and_kl.ipynb"} <= searched
    found = leaks(out)
    assert not found, "assigned answers in the release:\n" + "\n".join(found[:30])
