"""The whole course cycle: release, a class of four students graded two ways, the release run.

1. ``release(DIR)`` writes the student version once (a module fixture).
2. A class of four (``course_students.CLASS``): "nothing" (the release
   untouched), "wrong batch norm" (every answer right but batch norm's
   dgamma, doubled in training mode), "wrong merge" (every answer right but
   the sign of a term of the merge's dvar_hat; the ladder step right), "all
   correct" (the source notebooks' solutions). A student's notebooks are the
   released ones with the answer cells filled from the source notebooks'
   solution cells (by ``grade_id``), the faults planted in that code.
3. nbgrader, as an instructor runs it: a course folder with ``source/`` (the
   source notebooks) and the release's ``nbgrader_config.py`` (its cell
   timeout) plus the folder's root, ``nbgrader generate_assignment``, the
   notebooks in ``submitted/<student>/<assignment>/``, ``nbgrader
   autograde``; the scores are read from the gradebook. All five
   assignments are autograded for all four students: measured on 2 cores
   kept busy by two trainings, generate_assignment took 9 s and autograde
   56 to 61 s for the 20 notebooks (02 to 04 alone, where the students
   differ, would save about 25 s), and 01 and 05 show that "nothing" scores
   0 there too. The whole file took about 3 minutes there.
4. ``--grade --submission DIR``: each student's functions (the same
   notebook code) written into the stubs of their own copy of the package,
   graded by ``grade(submission=DIR)``.
5. Both routes against the score table derived from ``points.py``:
   "nothing" 0, "wrong batch norm" everything but batch norm's training-mode
   item, "wrong merge" everything but the merge's backward item, "all
   correct" everything. ``pytest -s`` prints the tables.
6. The released notebooks in the student layout, offline: a copy of the
   release whose ``lvae_np`` stubs the all-correct student filled, each
   tutorial (its exercise cells answered from the source tutorials' solution
   cells: a released tutorial stops at its first "Your turn" cell until the
   student writes it) and each assignment notebook executed
   from its folder in ``DIR`` with ``PYTHONPATH=DIR``, an empty ``HOME``, no
   ``LVAE_NP_DATA`` and a proxy that refuses every connection, so any
   download would fail.

In that copy the stubs hold the package's own bodies (``course_students.filled``)
and the notebooks the notebooks' code. Two tests at the end: the very same
function in a notebook and in the student's copy (installed) is the
student's, and ``--grade --submission .`` run from inside the submission (so
that its copy is the lvae_np running) is a one-line error, not a silent 0.
"""
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import course_students as cs
from conftest import needs_nbgrader  # noqa: E402
from lvae_np.gradcheck import grade, points

pytestmark = [pytest.mark.slow, needs_nbgrader]

ROOT = cs.ROOT
NOTEBOOKS = [a.notebook for a in points.ASSIGNMENTS]   # the assignments, in the table's order
TUTORIALS = sorted(p.name for p in (ROOT / "tutorials").glob("*.ipynb"))
# What each student's fault costs: the cases of the items it must lose (None: every item).
LOSES = {"nothing": None, "wrong batch norm": ("batchnorm",), "wrong merge": ("merge",),
         "all correct": ()}
AUTOGRADE = "nbgrader autograde"
GRADE = "--grade --submission"
CELL_TIMEOUT = 300   # s per cell, as the release's nbgrader_config.py says
TIMINGS = {}         # what each stage took, printed at the end


def _sid(name: str) -> str:
    """A student's id in nbgrader's folders and gradebook."""
    return name.replace(" ", "_")


def _env(**extra) -> dict:
    """This process's environment, one BLAS thread, the venv's scripts (alembic) first on PATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LVAE_NP_DATA")}
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1",
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    env.update(extra)
    return env


def _lost(item, name: str) -> bool:
    """Whether student ``name`` must lose ``item`` (a points.Assigned, autograded)."""
    loses = LOSES[name]
    return loses is None or any(case in loses for case in item.cases)


def expected(name: str, route: str) -> dict:
    """{notebook: {cell or case: points}}: what student ``name`` earns by the point table.

    Under ``AUTOGRADE`` every autograded cell counts; under ``GRADE`` the
    cases the cells grade by name, each with its share (``points.CASE_POINTS``).
    """
    table = {}
    for a in points.ASSIGNMENTS:
        rows = {}
        for item in a.items:
            if item.written:
                continue
            if route == AUTOGRADE:
                rows[item.cell] = 0 if _lost(item, name) else item.points
            else:
                rows.update({case: 0 if _lost(item, name) else points.CASE_POINTS[case]
                             for case in item.cases})
        table[a.notebook] = rows
    return table


def worth(route: str) -> dict:
    """{notebook: the points at stake} under ``route``."""
    return {nb: sum(rows.values()) for nb, rows in expected("all correct", route).items()}


def table(scores: dict) -> str:
    """Markdown: one row per student and route, earned / at stake per notebook and in all.

    Args:
        scores: {(student, route): {notebook: earned}}.
    """
    head = ["student", "route", *[nb.split("_")[0] for nb in NOTEBOOKS], "total"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (name, route), earned in scores.items():
        stake = worth(route)
        cells = [f"{earned[nb]:g} / {stake[nb]}" for nb in NOTEBOOKS]
        cells.append(f"{sum(earned.values()):g} / {sum(stake.values())}")
        lines.append(f"| {name} | `{route}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------
# The release and the class
# ----------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def _timings():
    yield
    if TIMINGS:
        print("\n\ntimings:\n" + "\n".join(f"- {k}: {v:.0f} s" for k, v in TIMINGS.items()))


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cycle")


@pytest.fixture(scope="module")
def released(work) -> Path:
    from lvae_np.course.release import release

    start = time.perf_counter()
    out = release(work / "student")["out"]
    TIMINGS["release"] = time.perf_counter() - start
    return out


@pytest.fixture(scope="module")
def answers() -> dict:
    """{student: {source notebook: {grade_id: code}}}; None for the student who wrote nothing."""
    return {name: None if faults is None else cs.student_answers(faults)
            for name, faults in cs.CLASS.items()}


def test_the_class_differs_only_where_the_faults_were_planted(answers):
    right = answers["all correct"]
    for name in ("wrong batch norm", "wrong merge"):
        differ = {gid for nb in right for gid in right[nb]
                  if answers[name][nb][gid] != right[nb][gid]}
        assert differ == set(cs.CLASS[name]), name
    # Every answer cell of every assignment is answered, and every assigned function found.
    assert sorted(nb.name for nb in right) == sorted(NOTEBOOKS)
    found = {f.rpartition(".")[2] for code in right.values() for source in code.values()
             for f in _defined(source)}
    assert {points.function_name(f) for a in points.ASSIGNMENTS for f in a.functions} <= found


def _defined(source: str) -> list:
    import ast

    return [n.name for n in ast.parse(source).body if isinstance(n, ast.FunctionDef)]


# ----------------------------------------------------------------------------
# Route 1: nbgrader generate_assignment / autograde, scores from the gradebook
# ----------------------------------------------------------------------------
def _nbgrader(course: Path, *args) -> None:
    proc = subprocess.run([sys.executable, "-m", "nbgrader", *args, "--force"], cwd=course,
                          env=_env(), capture_output=True, text=True, timeout=1200)
    errors = [line for line in proc.stderr.splitlines() if "| ERROR]" in line]
    assert proc.returncode == 0 and not errors, f"nbgrader {args[0]}:\n{proc.stderr[-4000:]}"


@pytest.fixture(scope="module")
def autograded(released, answers, work) -> dict:
    """{student: {notebook: {cell: nbgrader's autograded score}}}, from the gradebook."""
    import nbformat
    from nbgrader.api import Gradebook

    course = work / "course"
    course.mkdir()
    (course / "nbgrader_config.py").write_text(
        (released / "nbgrader_config.py").read_text()
        + f"\nc.CourseDirectory.root = {str(course)!r}\n")
    for notebook in NOTEBOOKS:
        source = course / "source" / Path(notebook).stem
        source.mkdir(parents=True)
        shutil.copyfile(cs.ASSIGNMENTS / notebook, source / notebook)
    start = time.perf_counter()
    _nbgrader(course, "generate_assignment", "*")
    TIMINGS["nbgrader generate_assignment (5 assignments)"] = time.perf_counter() - start
    for notebook in NOTEBOOKS:  # what generate_assignment wrote is what the release holds
        ours = nbformat.read(released / "assignments" / notebook, as_version=4)
        theirs = nbformat.read(course / "release" / Path(notebook).stem / notebook, as_version=4)
        assert [c.source for c in ours.cells] == [c.source for c in theirs.cells], notebook
    for name, code in answers.items():
        for notebook in NOTEBOOKS:
            folder = course / "submitted" / _sid(name) / Path(notebook).stem
            folder.mkdir(parents=True)
            given = released / "assignments" / notebook
            if code is None:
                shutil.copyfile(given, folder / notebook)
            else:
                nbformat.write(cs.filled_notebook(given, code[cs.ASSIGNMENTS / notebook]),
                               folder / notebook)
    start = time.perf_counter()
    _nbgrader(course, "autograde", "*")
    TIMINGS[f"nbgrader autograde ({len(answers)} students x {len(NOTEBOOKS)} notebooks)"] = \
        time.perf_counter() - start
    scores = {}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        for name in answers:
            scores[name] = {}
            for notebook in NOTEBOOKS:
                stem = Path(notebook).stem
                submitted = gradebook.find_submission_notebook(stem, stem, _sid(name))
                scores[name][notebook] = {g.name: g.auto_score for g in submitted.grades
                                          if g.cell_type == "code"}
                assert submitted.code_score == sum(scores[name][notebook].values())
    return scores


def assert_route_scores(scores: dict, route: str, what: str) -> None:
    """Each student's points per notebook and item, by ``route``, are the point table's."""
    got = {(name, route): {nb: sum(items.values()) for nb, items in by_nb.items()}
           for name, by_nb in scores.items()}
    print(f"\n\n{route}{what}:\n\n{table(got)}\n")
    for name, by_nb in scores.items():
        assert by_nb == expected(name, route), name


def test_nbgrader_autograde_gives_the_point_table_s_scores(autograded):
    assert_route_scores(autograded, AUTOGRADE, ", autograded points (written answers aside)")


# ----------------------------------------------------------------------------
# Route 2: --grade --submission DIR, each student's functions in their copy's stubs
# ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def submissions(released, answers, work) -> dict:
    """{student: the folder of their copy of lvae_np, the notebooks' functions in its stubs}."""
    found = {}
    for name, code in answers.items():
        folder = work / "submissions" / _sid(name)
        shutil.copytree(released / "lvae_np", folder / "lvae_np")
        for notebook, cells in (code or {}).items():
            cs.write_into_copy(folder / "lvae_np", notebook, cells)
        found[name] = folder
    return found


@pytest.fixture(scope="module")
def graded(submissions) -> dict:
    """{student: {notebook: {case: earned}}} from ``grade(submission=DIR)``."""
    case_notebook = {case: a.notebook for a in points.ASSIGNMENTS for i in a.items
                     for case in i.cases}
    scores = {}
    start = time.perf_counter()
    for name, folder in submissions.items():
        report = grade(submission=folder)
        scores[name] = {nb: {} for nb in NOTEBOOKS}
        for item in report.items:
            if item.counted:
                scores[name][case_notebook[item.name]][item.name] = item.earned
    TIMINGS[f"grade(submission=DIR) ({len(submissions)} students)"] = time.perf_counter() - start
    return scores


def test_grade_submission_gives_the_point_table_s_scores(graded):
    assert_route_scores(graded, GRADE, " (the cases the cells grade by name)")


def test_the_command_line_grades_a_submission_as_grade_does(submissions, graded):
    """``python -m lvae_np.gradcheck --grade --submission DIR``, run as a student or an instructor
    runs it: its score line is the sum of the cases' points above."""
    folder = submissions["wrong merge"]
    proc = subprocess.run([sys.executable, "-m", "lvae_np.gradcheck", "--grade", "--submission",
                           str(folder)], cwd=folder.parent, env=_env(), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 1 and proc.stderr == "", proc.stderr
    earned = sum(sum(cases.values()) for cases in graded["wrong merge"].values())
    assert proc.stdout.splitlines()[-1].startswith(
        f"score {earned:g} / {sum(points.CASE_POINTS.values())}: ")
    assert earned == sum(points.CASE_POINTS.values()) - points.CASE_POINTS["merge"]


def test_both_routes_cost_a_fault_the_same_items(autograded, graded):
    """Per student, an item loses its points under both routes or under neither."""
    scores = {}
    for name in cs.CLASS:
        scores[(name, AUTOGRADE)] = {nb: sum(c.values()) for nb, c in autograded[name].items()}
        scores[(name, GRADE)] = {nb: sum(c.values()) for nb, c in graded[name].items()}
        for a in points.ASSIGNMENTS:
            for item in a.items:
                if item.cases:
                    by_autograde = autograded[name][a.notebook][item.cell] < item.points
                    by_grade = any(graded[name][a.notebook][c] < points.CASE_POINTS[c]
                                   for c in item.cases)
                    assert by_autograde == by_grade, (name, item.cell)
    print(f"\n\nBoth routes, per student and notebook:\n\n{table(scores)}\n")


# ----------------------------------------------------------------------------
# The released notebooks, run in the student layout, offline
# ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def layout(released, answers, work) -> dict:
    """The all-correct student's folder: a copy of the release, the stubs of its lvae_np filled,
    the notebooks' answer cells too; and the environment a kernel runs in there."""
    import nbformat

    folder = work / "all_correct"
    shutil.copytree(released, folder)
    for module in (folder / "lvae_np").rglob("*.py"):
        source = ROOT / module.relative_to(folder)
        if "### BEGIN SOLUTION" in source.read_text():
            module.write_text(cs.filled(source.read_text()))
    assert grade(submission=folder).earned == sum(points.CASE_POINTS.values())
    for notebook, code in answers["all correct"].items():
        nbformat.write(cs.filled_notebook(folder / "assignments" / notebook.name, code),
                       folder / "assignments" / notebook.name)
    for tutorial in TUTORIALS:
        code = cs.answers(ROOT / "tutorials" / tutorial)
        nbformat.write(cs.filled_notebook(folder / "tutorials" / tutorial, code),
                       folder / "tutorials" / tutorial)
    home = work / "home"
    home.mkdir()
    refuse = "http://127.0.0.1:9"   # the discard port: a download attempt fails at once
    env = _env(PYTHONPATH=str(folder), HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"),
               MPLBACKEND="Agg", http_proxy=refuse, https_proxy=refuse, HTTP_PROXY=refuse,
               HTTPS_PROXY=refuse, no_proxy="", NO_PROXY="")
    return {"folder": folder, "home": home, "env": env}


WHERE = textwrap.dedent("""\
    import os, lvae_np
    from lvae_np.data import files
    print(os.path.dirname(lvae_np.__file__), files.repo_data_dir(), sep="\\n")""")


@pytest.mark.parametrize("notebook", [f"tutorials/{t}" for t in TUTORIALS]
                         + [f"assignments/{n}" for n in NOTEBOOKS])
def test_a_released_notebook_runs_to_the_end_in_the_student_layout(notebook, layout):
    import nbclient
    import nbformat

    path = layout["folder"] / notebook
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(WHERE))
    start = time.perf_counter()
    try:
        nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                                resources={"metadata": {"path": str(path.parent)}}
                                ).execute(env=layout["env"])
    except nbclient.exceptions.CellExecutionError as exc:
        pytest.fail(f"{notebook} stops in the student layout:\n{str(exc)[-3000:]}")
    TIMINGS[notebook] = time.perf_counter() - start
    print(f"\n{notebook}: ran to the end in {TIMINGS[notebook]:.0f} s")
    package, data = "".join(o.get("text", "") for o in nb.cells[-1].outputs).split()
    assert Path(package) == (layout["folder"] / "lvae_np").resolve()     # the student's copy
    assert Path(data) == (layout["folder"] / "data").resolve()           # the release's data
    assert not (layout["home"] / ".cache" / "lvae_np").exists()         # nothing downloaded
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error" or o.get("name") == "stderr"]
    assert not errors, errors  # nbgrader gives 0 to a cell writing to stderr


def test_grading_a_submission_from_inside_its_folder_does_not_silently_score_0(submissions):
    folder = submissions["all correct"]
    proc = subprocess.run([sys.executable, "-m", "lvae_np.gradcheck", "--grade", "--submission",
                           "."], cwd=folder, env=_env(), capture_output=True, text=True,
                          timeout=600)
    last = proc.stdout.splitlines()[-1] if proc.stdout else ""
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, (proc.returncode, last,
                                                                    proc.stderr)
    assert "is the lvae_np running this grader" in proc.stderr


def test_the_same_function_in_the_notebook_and_the_student_s_copy_is_the_student_s(submissions):
    """The all-correct student's copy holds the notebook's dense_backward; the same function
    in a notebook run with that copy installed is the student's code, and passes."""
    import nbclient
    import nbformat

    code = cs.student_answers({})[cs.ASSIGNMENTS / NOTEBOOKS[0]]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in (
        "from lvae_np.backend import namespace\nfrom lvae_np.gradcheck import grade",
        code["dense_backward"],
        'grade(["dense"], using={"layers.dense_backward": dense_backward}).status("dense")')])
    nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3").execute(
        env=_env(PYTHONPATH=str(submissions["all correct"])))
    assert nb.cells[-1].outputs[0]["data"]["text/plain"] == "'passed'"
