"""The tutorial notebooks follow the conventions of tutorials/README.md.

The notebooks themselves are executed by nbmake (``--nbmake`` in pyproject.toml's
pytest options, with ``tutorials`` among the test paths); these tests check how
they are stored: outputs cleared, the opening cell, assertions in the code,
the file name, and a line in tutorials/README.md.
"""
import ast
import json
import re
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parent.parent / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))
HEADINGS = ("What you'll do", "What you'll learn", "What you'll need")
MIN_ASSERTS = 3


def _load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _python(source: str) -> str:
    """A code cell's source without IPython magics and shell escapes, which are not Python."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line
                     for line in source.splitlines())


def test_there_are_notebooks():
    assert NOTEBOOKS, f"no notebooks found in {TUTORIALS}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_name(path):
    assert re.fullmatch(r"\d\d_[a-z0-9]+(_[a-z0-9]+)*\.ipynb", path.name), (
        f"{path.name}: expected NN_name.ipynb (two digits, then lower-case words joined by _)")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_outputs_cleared(path):
    for number, cell in enumerate(_load(path)["cells"], start=1):
        if cell["cell_type"] != "code":
            continue
        assert cell.get("outputs") == [], f"{path.name}: cell {number} has stored outputs"
        assert cell.get("execution_count") is None, (
            f"{path.name}: cell {number} has execution count {cell.get('execution_count')}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_opens_with_what_to_expect(path):
    cells = _load(path)["cells"]
    assert cells and cells[0]["cell_type"] == "markdown", (
        f"{path.name}: the first cell must be markdown")
    text = _source(cells[0])
    missing = [h for h in HEADINGS if h not in text]
    assert not missing, f"{path.name}: the first cell lacks {missing}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_asserts_what_it_teaches(path):
    count = 0
    for number, cell in enumerate(_load(path)["cells"], start=1):
        if cell["cell_type"] != "code":
            continue
        try:
            tree = ast.parse(_python(_source(cell)))
        except SyntaxError as exc:
            pytest.fail(f"{path.name}: cell {number} is not valid Python: {exc}")
        count += sum(isinstance(node, ast.Assert) for node in ast.walk(tree))
    assert count >= MIN_ASSERTS, (
        f"{path.name}: {count} assert statements in code cells, expected at least {MIN_ASSERTS}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_listed_in_readme(path):
    readme = (TUTORIALS / "README.md").read_text(encoding="utf-8")
    assert path.name in readme, f"{path.name} is not listed in tutorials/README.md"
