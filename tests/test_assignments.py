"""The assignment notebooks are valid nbgrader sources, and their student versions fail as they should.

nbmake executes the source notebooks (with ``assignments`` among the test
paths): every test cell passes there. These tests check how the notebooks are
stored (outputs cleared, the opening cell and its points, nbgrader's cell
metadata, README's table), that each earns its points for the notebook's own
functions only (no cell awards points for a composite or a whole model run
on them: that is feedback), that no notebook reads another, and, where
nbgrader is installed, make the student versions with nbgrader's own
preprocessors and run them: no answer is left, and every test cell fails on
the stubs (raises, or ends with a partial credit below its points), while
nothing else does. The source notebooks, run here too, earn every point.
"""
import ast
import json
import re
from pathlib import Path

import pytest

ASSIGNMENTS = Path(__file__).resolve().parent.parent / "assignments"
NOTEBOOKS = sorted(ASSIGNMENTS.glob("*.ipynb"))
HEADINGS = ("What you'll do", "What you'll learn", "What you'll need")
POINTS_LINE = re.compile(r"\*\*Points: (\d+)\*\* \((\d+) autograded, (\d+) written\)")
SOLUTION = ("### BEGIN SOLUTION", "### END SOLUTION")
HIDDEN = ("### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")
# An answer cell's stub fails a test cell with one of these; anything else is a broken notebook.
STUB_FAILURES = (AssertionError, NotImplementedError)


def _load(path) -> dict:
    """The notebook at ``path``, each cell's source joined into one string."""
    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        if isinstance(cell["source"], list):
            cell["source"] = "".join(cell["source"])
    return nb


def _meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def _is_test(cell) -> bool:
    return cell["cell_type"] == "code" and bool(_meta(cell).get("grade"))


def _is_answer(cell) -> bool:
    """A code cell for the student's functions (nbgrader's "autograded answer")."""
    meta = _meta(cell)
    return cell["cell_type"] == "code" and bool(meta.get("solution")) and not meta.get("grade")


def _is_written(cell) -> bool:
    """A manually graded answer: markdown, solution and grade."""
    meta = _meta(cell)
    return cell["cell_type"] == "markdown" and bool(meta.get("solution")) and bool(meta.get("grade"))


def _partial(cell) -> bool:
    """A test cell that gives nbgrader's partial credit: it ends with ``<report>.earned``."""
    body = ast.parse(cell["source"]).body
    last = body[-1] if body else None
    return (isinstance(last, ast.Expr) and isinstance(last.value, ast.Attribute)
            and last.value.attr == "earned")


def run_cell(source: str, scope: dict, filename: str):
    """Execute a cell's source in ``scope``, as a kernel would; the value of its last line
    when that is an expression (what nbgrader reads as a partial credit), else None."""
    tree = ast.parse(source)
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    exec(compile(tree, filename, "exec"), scope)
    if last is None:
        return None
    return eval(compile(ast.Expression(last.value), filename, "eval"), scope)


def _points(cells, kind) -> int:
    return sum(_meta(c).get("points", 0) for c in cells if kind(c))


def _regions(text: str, markers) -> list:
    """The lines inside each ``markers`` region of ``text``; raises AssertionError if unpaired."""
    regions, inside = [], None
    for line in text.splitlines():
        if markers[0] in line:
            assert inside is None, f"nested {markers[0]!r}"
            inside = []
        elif markers[1] in line:
            assert inside is not None, f"{markers[1]!r} without {markers[0]!r}"
            regions.append(inside)
            inside = None
        elif inside is not None:
            inside.append(line)
    assert inside is None, f"{markers[0]!r} never closed"
    return regions


def _outside(text: str) -> str:
    """``text`` without its solution and hidden-test regions (markers included)."""
    kept, inside = [], False
    for line in text.splitlines():
        if SOLUTION[0] in line or HIDDEN[0] in line:
            inside = True
        elif SOLUTION[1] in line or HIDDEN[1] in line:
            inside = False
        elif not inside:
            kept.append(line)
    return "\n".join(kept)


def test_there_are_assignments():
    names = [p.name for p in NOTEBOOKS]
    for number in ("01", "02", "03", "04"):
        assert any(n.startswith(number + "_") for n in names), f"no assignment {number}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_name_and_outputs_cleared(path):
    assert re.fullmatch(r"\d\d_[a-z0-9]+(_[a-z0-9]+)*\.ipynb", path.name)
    for number, cell in enumerate(_load(path)["cells"], start=1):
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [], f"{path.name}: cell {number} has stored outputs"
            assert cell.get("execution_count") is None, f"{path.name}: cell {number} was run"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_opens_with_what_to_expect_and_the_points(path):
    cells = _load(path)["cells"]
    assert cells[0]["cell_type"] == "markdown"
    text = cells[0]["source"]
    missing = [h for h in HEADINGS if h not in text]
    assert not missing, f"{path.name}: the first cell lacks {missing}"
    found = POINTS_LINE.search(text)
    assert found, f"{path.name}: the first cell lacks '**Points: N** (A autograded, W written)'"
    total, auto, written = map(int, found.groups())
    assert (auto, written) == (_points(cells, _is_test), _points(cells, _is_written)), path.name
    assert total == auto + written


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_nbgrader_cell_metadata(path):
    nb = _load(path)
    assert nb["metadata"]["kernelspec"]["language"] == "python"
    ids = []
    for number, cell in enumerate(nb["cells"], start=1):
        meta, where = _meta(cell), f"{path.name}: cell {number}"
        text = cell["source"]
        if not meta:
            assert not any(m in text for m in SOLUTION + HIDDEN), f"{where}: markers, no metadata"
            continue
        assert meta["schema_version"] == 3 and meta["task"] is False, where
        ids.append(meta["grade_id"])
        if _is_test(cell):
            assert meta["locked"] and not meta["solution"] and meta["points"] > 0, where
            assert not any(m in text for m in SOLUTION), f"{where}: a solution in a test cell"
            _regions(text, HIDDEN)
        elif _is_answer(cell) or _is_written(cell):
            assert not meta["locked"], where
            assert _regions(text, SOLUTION), f"{where}: an answer cell without a solution region"
            assert not any(m in text for m in HIDDEN), where
            if _is_written(cell):
                assert meta["points"] > 0, where
        else:  # read-only: given code the student cannot change
            assert cell["cell_type"] == "code" and meta["locked"] and not meta["grade"], where
            assert not any(m in text for m in SOLUTION + HIDDEN), where
    assert len(ids) == len(set(ids)), f"{path.name}: grade_ids repeat"
    assert any(_is_test(c) for c in nb["cells"]) and any(_is_answer(c) for c in nb["cells"])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_answer_function_is_tested_and_every_test_can_fail(path):
    cells = _load(path)["cells"]
    tests = "\n".join(c["source"] for c in cells if _is_test(c))
    for cell in cells:
        if _is_answer(cell):
            tree = ast.parse(cell["source"])
            names = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
            assert names, f"{path.name}: an answer cell that defines no function"
            for name in names:
                assert re.search(rf"\b{name}\b", tests), f"{path.name}: no test cell uses {name}"
        if _is_test(cell):
            tree = ast.parse(cell["source"])
            assert _partial(cell) or any(isinstance(n, ast.Assert) for n in ast.walk(tree)), (
                f"{path.name}: test cell {_meta(cell)['grade_id']} neither asserts nor ends "
                "with its partial credit")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_a_cell_grading_several_cases_gives_partial_credit_and_feedback_no_points(path):
    """nbgrader gives 0 to a cell that raises or writes to stderr, else the number its last line
    shows: a cell naming several checks ends with ``report.earned`` and raises for none."""
    for cell in _load(path)["cells"]:
        if cell["cell_type"] != "code":
            continue
        where = f"{path.name}: {_meta(cell).get('grade_id', 'a cell')}"
        calls = [node for node in ast.walk(ast.parse(_outside(cell["source"])))
                 if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "grade"]
        together = [c for c in calls if any(k.arg == "together" for k in c.keywords)]
        if _is_test(cell):
            assert not together, f"{where}: a graded cell runs a feedback check"
            if calls and len(ast.literal_eval(calls[0].args[0])) > 1:
                assert _partial(cell), f"{where}: several checks, and no partial credit"
            if _partial(cell):
                assert not any(isinstance(n, ast.Assert)
                               for n in ast.walk(ast.parse(_outside(cell["source"])))), (
                    f"{where}: an assert would give 0 for what the partial credit counts")
        elif together:  # feedback: read-only, says so, and awards nothing
            assert _meta(cell).get("locked") and not _meta(cell).get("grade"), where
            assert cell["source"].startswith("# Feedback, no points"), where
            assert _meta(cell)["grade_id"].startswith("feedback_"), where


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_notebook_reads_another(path):
    """Each assignment works when released on its own (a weekly release): nothing loads the
    functions of another notebook."""
    for cell in _load(path)["cells"]:
        if cell["cell_type"] == "code":
            assert ".ipynb" not in cell["source"], (path.name, cell["source"][:200])
            assert "json.loads" not in cell["source"] and "exec(" not in cell["source"], path.name


def test_readme_lists_each_assignment_with_its_points():
    readme = (ASSIGNMENTS / "README.md").read_text(encoding="utf-8")
    total = 0
    for path in NOTEBOOKS:
        cells = _load(path)["cells"]
        auto, written = _points(cells, _is_test), _points(cells, _is_written)
        total += auto + written
        row = next((line for line in readme.splitlines() if f"[{path.name}]" in line), None)
        assert row, f"{path.name} is not in assignments/README.md"
        assert f"| {auto + written} ({auto} + {written})" in row, f"{path.name}: points in README"
        for cell in cells:
            if _is_test(cell):
                assert f"`{_meta(cell)['grade_id']}` | {_meta(cell)['points']} |" in readme, (
                    f"{path.name}: test cell {_meta(cell)['grade_id']} is not in README's table")
    assert f"Total: {total} points" in readme


# ----------------------------------------------------------------------------
# One point table: the notebooks, nbgrader's metadata and the grader agree
# ----------------------------------------------------------------------------
HEADER = re.compile(r"# (\d+) (points?): ")       # a test cell's first line
QUESTION = re.compile(r"\*\*\((\d+) (points?)\)\*\*")  # a written answer's question


def _grade_calls(source: str) -> list:
    """The case names of each ``grade([...])`` call in ``source``, in order."""
    calls = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "grade":
            calls.append(ast.literal_eval(node.args[0]))
    return calls


def point_table_problems(nb: dict, assignment) -> list:
    """Every way notebook ``nb`` disagrees with its entry of the point table (none: [])."""
    from lvae_np.gradcheck import points

    problems = []
    cells = nb["cells"]
    table = {item.cell: item for item in assignment.items}
    graded = [(i, c) for i, c in enumerate(cells) if _meta(c).get("grade")]
    if [_meta(c)["grade_id"] for _, c in graded] != list(table):
        problems.append(f"graded cells {[_meta(c)['grade_id'] for _, c in graded]}, "
                        f"table {list(table)}")
    for i, cell in graded:
        meta = _meta(cell)
        item = table.get(meta["grade_id"])
        if item is None:
            continue
        where = f"{meta['grade_id']}"
        if meta.get("points") != item.points:
            problems.append(f"{where}: metadata points {meta.get('points')}, table {item.points}")
        if item.written != _is_written(cell):
            problems.append(f"{where}: written {_is_written(cell)}, table {item.written}")
        if _is_test(cell):
            found = HEADER.match(cell["source"])
            said = (int(found[1]), found[2]) if found else None
        else:  # the question is in the markdown cell before the answer
            found = QUESTION.search(cells[i - 1]["source"]) if i else None
            said = (int(found[1]), found[2]) if found else None
        if said != (item.points, "point" if item.points == 1 else "points"):
            problems.append(f"{where}: the header says {said}, the table {item.points}")
        if _is_test(cell):
            calls = _grade_calls(_outside(cell["source"]))
            named = sorted(calls[0]) if calls else []
            if named != sorted(item.cases):
                problems.append(f"{where}: grades {named}, the table {sorted(item.cases)}")
    found = POINTS_LINE.search(cells[0]["source"])
    opening = tuple(map(int, found.groups())) if found else None
    if opening != (assignment.points, assignment.autograded, assignment.written):
        problems.append(f"first cell: points {opening}, table "
                        f"{(assignment.points, assignment.autograded, assignment.written)}")
    defined = [n.name for c in cells if _is_answer(c) for n in ast.parse(c["source"]).body
               if isinstance(n, ast.FunctionDef)]
    if defined != [points.function_name(f) for f in assignment.functions]:
        problems.append(f"answer functions {defined}, table {list(assignment.functions)}")
    return problems


def test_the_point_table_has_one_entry_per_notebook():
    from lvae_np.gradcheck import points

    assert [a.notebook for a in points.ASSIGNMENTS] == [p.name for p in NOTEBOOKS]
    readme = (ASSIGNMENTS / "README.md").read_text(encoding="utf-8")
    assert f"Total: {points.total()} points" in readme


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_the_notebook_agrees_with_the_point_table(path):
    from lvae_np.gradcheck import points

    (assignment,) = [a for a in points.ASSIGNMENTS if a.notebook == path.name]
    assert point_table_problems(_load(path), assignment) == []


def test_the_point_table_check_finds_each_disagreement():
    from lvae_np.gradcheck import points

    path = ASSIGNMENTS / "02_batchnorm.ipynb"
    (assignment,) = [a for a in points.ASSIGNMENTS if a.notebook == path.name]

    def changed(edit) -> list:
        nb = _load(path)
        cell = next(c for c in nb["cells"] if _meta(c).get("grade_id") == "test_batchnorm_training")
        edit(nb, cell)
        return point_table_problems(nb, assignment)

    def header(nb, cell):
        cell["source"] = cell["source"].replace("# 6 points:", "# 5 points:", 1)

    def metadata(nb, cell):
        _meta(cell)["points"] = 5

    def grades(nb, cell):
        cell["source"] = cell["source"].replace('grade(["batchnorm"]', 'grade(["batchnorm-eval"]')

    def question(nb, cell):
        i = next(i for i, c in enumerate(nb["cells"]) if _meta(c).get("grade_id") == "q_ones")
        nb["cells"][i - 1]["source"] = nb["cells"][i - 1]["source"].replace("**(2 points)**",
                                                                            "**(3 points)**")

    def opening(nb, cell):
        nb["cells"][0]["source"] = nb["cells"][0]["source"].replace("**Points: 12**",
                                                                    "**Points: 13**")

    for edit, words in [(header, "the header says (5, 'points'), the table 6"),
                        (metadata, "metadata points 5, table 6"),
                        (grades, "grades ['batchnorm-eval'], the table ['batchnorm']"),
                        (question, "q_ones: the header says (3, 'points'), the table 2"),
                        (opening, "first cell: points (13, 7, 5), table (12, 7, 5)")]:
        found = changed(edit)
        assert len(found) == 1 and words in found[0], (edit.__name__, found)


def test_every_case_and_function_of_the_point_table_exists():
    import importlib

    from lvae_np.gradcheck import cases, points

    for case in points.CASE_POINTS:
        assert cases.find_case(case).name == case
    for assignment in points.ASSIGNMENTS:
        for function in assignment.functions:
            module, _, name = function.rpartition(".")
            if module:  # the package's name and signature
                assert callable(getattr(importlib.import_module(f"lvae_np.{module}"), name)), function


def own_function_problems(assignments) -> list:
    """Each case a cell awards points for whose own functions the notebook does not ask for."""
    from lvae_np.gradcheck import cases

    problems = []
    for assignment in assignments:
        for item in assignment.items:
            for name in item.cases:
                own = set(cases.find_case(name).functions())
                if not own & set(assignment.functions):
                    problems.append(f"{assignment.notebook}: {item.cell} awards points for {name}, "
                                    f"whose own functions ({', '.join(sorted(own)) or 'none'}) "
                                    "the notebook does not ask for")
    return problems


def test_a_cell_awards_points_only_for_the_notebook_s_own_functions():
    """``grade`` runs a case with the student's functions for its own only: a composite or a
    whole model of the student's ops would earn its points for the package's code."""
    from lvae_np.gradcheck import points

    assert own_function_problems(points.ASSIGNMENTS) == []
    before = points.Assignment("01.ipynb", "x", ("layers.dense_backward",), (
        points.Assigned("test_mlp_block", 2, ("mlp-nobn",)),
        points.Assigned("test_whole_lvae", 4, ("lvae-L3-bn-analytic-beta0.5",
                                               "lvae-L3-bn-mc-beta0.5"))))
    found = own_function_problems([before])  # the table as it was: three cases found
    assert len(found) == 3 and "mlp-nobn, whose own functions (blocks.mlp_backward" in found[0]
    assert "lvae-L3-bn-analytic-beta0.5, whose own functions (none)" in found[1]


# ----------------------------------------------------------------------------
# The student versions, made by nbgrader
# ----------------------------------------------------------------------------
def _student(nb: dict) -> dict:
    """``nb`` through nbgrader's ClearSolutions and ClearHiddenTests, as its release runs them."""
    nbformat = pytest.importorskip("nbformat")
    preprocessors = pytest.importorskip("nbgrader.preprocessors",
                                        reason="nbgrader is not installed (pip install -e .[course])")
    node = nbformat.reads(json.dumps(nb), as_version=4)  # sources joined into strings
    resources = {}
    for step in (preprocessors.ClearSolutions(), preprocessors.ClearHiddenTests()):
        node, resources = step.preprocess(node, resources)
    return json.loads(nbformat.writes(node))


@pytest.fixture(scope="module")
def students(tmp_path_factory) -> Path:
    """A folder with the student version of every assignment, under its own name."""
    folder = tmp_path_factory.mktemp("student")
    for path in NOTEBOOKS:
        (folder / path.name).write_text(json.dumps(_student(_load(path))), encoding="utf-8")
    return folder


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_the_student_version_holds_no_answer(path, students):
    source = _load(path)
    answers = {line.strip() for c in source["cells"] if _is_answer(c) or _is_written(c)
               for region in _regions(c["source"], SOLUTION) for line in region}
    hidden = {line.strip() for c in source["cells"] if _is_test(c)
              for region in _regions(c["source"], HIDDEN) for line in region}
    shown = {line.strip() for c in source["cells"] for line in _outside(c["source"]).splitlines()}
    answers = {a for a in answers | (hidden - shown) if len(a) >= 8}
    assert answers
    student = _load(students / path.name)
    lines = {line.strip() for c in student["cells"] for line in c["source"].splitlines()}
    leaks = sorted(answers & lines)
    assert not leaks, f"{path.name}: answer lines in the student version: {leaks[:5]}"
    for cell in student["cells"]:
        if _is_answer(cell):
            assert "raise NotImplementedError()" in cell["source"]
        if _is_written(cell):
            assert cell["source"].strip() == "YOUR ANSWER HERE"


def run_notebook(path, capsys) -> dict:
    """Run a notebook in this process, cell by cell, as a kernel would.

    Returns:
        grade_id -> what each graded or read-only code cell gave: ``("raised", exc)``,
        or ``("value", the value of its last line or None, what it printed, the scope)``.
    """
    scope, found = {"__name__": "__main__"}, {}
    for number, cell in enumerate(_load(path)["cells"], start=1):
        if cell["cell_type"] != "code":
            continue
        capsys.readouterr()
        try:
            value = run_cell(cell["source"], scope, f"{path.name}:cell {number}")
        except STUB_FAILURES as exc:
            outcome = ("raised", exc)
        else:
            outcome = ("value", value, capsys.readouterr(), scope)
        found[_meta(cell).get("grade_id", f"cell {number}")] = outcome
    return found


def _earned(cell, outcome) -> float:
    """The points nbgrader gives a test cell for ``outcome`` (as ``run_notebook`` gives it)."""
    if outcome[0] == "raised" or outcome[2].err:
        return 0.0
    value = outcome[1]
    return float(value) if _partial(cell) else float(_meta(cell)["points"])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_the_student_version_fails_its_test_cells_and_nothing_else(path, students, monkeypatch,
                                                                    capsys):
    """Run in this process, cell by cell, as a kernel would, in the students' folder."""
    monkeypatch.chdir(students)
    cells = {_meta(c).get("grade_id"): c for c in _load(students / path.name)["cells"]}
    failed = []
    for grade_id, outcome in run_notebook(students / path.name, capsys).items():
        cell = cells.get(grade_id)
        if cell is None or not _is_test(cell):
            assert outcome[0] != "raised", (
                f"{path.name}: {grade_id} fails on the stubs: {outcome[1]!r}")
            continue
        earned = _earned(cell, outcome)
        assert earned == 0.0 or outcome[0] == "raised", (
            f"{path.name}: test cell {grade_id} earns {earned} without an answer")
        failed.append(grade_id)
    tests = [_meta(c)["grade_id"] for c in _load(path)["cells"] if _is_test(c)]
    assert failed == tests


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_the_source_notebook_earns_every_point(path, monkeypatch, capsys):
    """With the answers in place, every test cell earns its points (a partial-credit cell's
    last line equals them) and every feedback check passes: nbmake alone would not see a
    partial-credit cell that earns less, as it raises nothing."""
    monkeypatch.chdir(ASSIGNMENTS)
    cells = {_meta(c).get("grade_id"): c for c in _load(path)["cells"]}
    for grade_id, outcome in run_notebook(path, capsys).items():
        assert outcome[0] != "raised", f"{path.name}: {grade_id} raised {outcome[1]!r}"
        cell = cells.get(grade_id)
        if cell is not None and _is_test(cell):
            assert _earned(cell, outcome) == _meta(cell)["points"], (grade_id, outcome[2].out)
        if grade_id.startswith("feedback_"):
            assert outcome[3]["feedback"].passed, outcome[2].out


def test_a_partial_credit_cell_earns_what_passed(capsys):
    """The ladder-step cell of assignment 4, run with an answer right for the closed-form KL
    only (it drops the single-sample KL's path through z): half its points, nothing raised,
    nothing on stderr."""
    nb = _load(ASSIGNMENTS / "04_ladder_step.ipynb")
    answer = next(c for c in nb["cells"] if _meta(c).get("grade_id") == "ladder_step_backward")
    source = answer["source"]
    assert "dz = dz + dz_kl" in source
    answer["source"] = source.replace("dz = dz + dz_kl", "dz = dz")
    scope = {"__name__": "__main__"}
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        capsys.readouterr()
        value = run_cell(cell["source"], scope, "04")
        if _meta(cell).get("grade_id") == "test_ladder_step":
            printed = capsys.readouterr()
            assert value == 5.0 and isinstance(value, float) and printed.err == ""
            assert "ladder-step-mc" in printed.out and "FAILED" in printed.out
            assert _earned(cell, ("value", value, printed, scope)) == 5.0
            break
    else:
        raise AssertionError("no test_ladder_step cell")
