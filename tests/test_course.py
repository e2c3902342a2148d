"""The course kit: the student release holds no answer, and the autograder points at the wrong op.

The release needs nbgrader (``pip install -e .[course]``, which CI installs);
where it is missing, the tests of the notebooks skip and say so, and the
package copy (which needs no nbgrader) is still tested.
"""
import ast
import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lvae_np import layers as L
from lvae_np.course import markers
from lvae_np.course.__main__ import main
from lvae_np.course.release import PACKAGE, SOURCE, copy_package, readme, release
from lvae_np.gradcheck import cases, grade, grading, points

from conftest import HAVE_NBGRADER, needs_nbgrader  # noqa: E402,F401

# The package's functions that a course assigns: each has a marked body.
ASSIGNED = {"layers.dense_backward", "layers.leaky_relu_backward", "layers.batchnorm_backward",
            "gaussian.merge_forward", "gaussian.merge_backward", "gaussian.kl_normal_forward",
            "gaussian.kl_normal_backward", "gaussian.reparameterize_forward",
            "gaussian.reparameterize_backward", "steps.ladder_step_backward",
            "bounds.logmeanexp_forward", "bounds.logmeanexp_backward"}
# Functions no assignment asks for whose body is an assigned answer in other clothes (the
# unshared ladder step is the ladder step's chain rule with its two blocks apart): stubs too.
ANSWER_HOLDERS = {"variants.unshared_ladder_step_backward"}


def _marked() -> set:
    """"module.function" for every function of the package source with a marked body."""
    found = set()
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        found |= {f"{module}.{name}" for name in markers.marked_functions(path.read_text())}
    return found


def _assigned_cases() -> set:
    """The cases whose own functions are cut in the student copy and assigned."""
    marked = _marked() - ANSWER_HOLDERS
    return {c.name for c in cases.CASES if set(c.functions()) & marked}


# ----------------------------------------------------------------------------
# The markers
# ----------------------------------------------------------------------------
SAMPLE = '''def f(x):
    """Twice x.

    Returns:
        y, shaped like x.

    ### BEGIN SOLUTION
    y = 2 x, computed as x + x.
    ### END SOLUTION
    """
    ### BEGIN SOLUTION
    y = x + x
    return y
    ### END SOLUTION


def g(x):
    return x
'''


def test_a_cut_stubs_the_body_and_drops_the_answer_from_the_docstring():
    student = markers.cut(SAMPLE)
    assert "x + x" not in student and "SOLUTION" not in student
    assert '''        y, shaped like x.
    """
    # YOUR CODE HERE
    raise NotImplementedError()


def g(x):''' in student
    namespace = {}
    exec(compile(student, "<student>", "exec"), namespace)
    with pytest.raises(NotImplementedError):
        namespace["f"](1)
    assert namespace["g"](3) == 3
    assert markers.marked_functions(SAMPLE) == ["f"]
    assert markers.solution_lines(SAMPLE) == ["y = 2 x, computed as x + x.", "y = x + x",
                                              "return y"]


@pytest.mark.parametrize("broken, message", [
    (SAMPLE.replace("    ### END SOLUTION\n\n\ndef g", "\n\ndef g"), "never closed"),
    (SAMPLE.replace("    ### BEGIN SOLUTION\n    y = x", "    y = x"), "without a ### BEGIN"),
    (SAMPLE.replace("    y = x + x\n", "    ### BEGIN SOLUTION\n"), "inside the region"),
    (SAMPLE.replace('    ### END SOLUTION\n    """', '    """\n    ### END SOLUTION'),
     "both be inside the docstring"),
])
def test_markers_that_do_not_pair_up_are_refused_with_the_line(broken, message):
    with pytest.raises(markers.MarkerError, match=message) as err:
        markers.cut(broken, "f.py")
    assert str(err.value).startswith("f.py:") and "\n" not in str(err.value)


def test_the_package_marks_exactly_the_assigned_functions():
    assert _marked() == ASSIGNED | ANSWER_HOLDERS


# ----------------------------------------------------------------------------
# The student copy of the package (no nbgrader needed)
# ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def student(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("student")
    copy_package(out)
    return out


def _run(args, student_dir: Path):
    """Python with the student copy first on the path, outside the source tree."""
    env = dict(os.environ, PYTHONPATH=str(student_dir), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          cwd=student_dir, timeout=600)


def test_the_student_package_imports_and_is_the_copy(student):
    proc = _run(["-c", "import lvae_np, lvae_np.models, lvae_np.gradcheck.cases; "
                       "print(lvae_np.__file__)"], student)
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()).resolve().is_relative_to(student.resolve())


def test_grading_the_student_package_reports_each_assigned_item_not_implemented(student):
    code = ("import json; from lvae_np.gradcheck import grade; r = grade(everything=True); "
            "print(json.dumps({i.name: [i.status, i.earned, i.points] for i in r.items}))")
    proc = _run(["-c", code], student)
    assert proc.returncode == 0, proc.stderr
    graded = json.loads(proc.stdout)
    assigned = _assigned_cases()
    assert {"dense", "leaky-relu", "batchnorm", "merge", "kl-normal", "ladder-step",
            "logmeanexp"} <= assigned
    for name in assigned:
        assert graded[name][:2] == ["not implemented", 0], name
    for name, (status, earned, worth) in graded.items():
        if name not in assigned:  # the rest pass, or wait for an assigned op
            assert status == "passed" or status.startswith("blocked by "), (name, status)
    assert graded["mlp"][0] == "blocked by dense, batchnorm, leaky-relu"
    assert graded["softplus"] == ["passed", 2, 2]

    proc = _run(["-m", "lvae_np.gradcheck", "--grade"], student)  # the command line
    assert proc.returncode == 1
    assert "Traceback" not in proc.stdout + proc.stderr and proc.stderr == ""
    lines = proc.stdout.splitlines()
    rows = {line.split()[0]: line for line in lines if line.strip()}
    # The notebook's points ("# 6 points" in 02_batchnorm.ipynb), not a weight of its own.
    assert re.search(r"^batchnorm +0 / 6 +- +not implemented yet \(batchnorm_backward\)$",
                     rows["batchnorm"]), rows["batchnorm"]
    assert "sigmoid" not in rows  # no assignment grades it, nor uses it
    for name in assigned & set(points.CASE_POINTS):  # those with a stub, at their points
        assert re.search(r" 0 / \d +- +not implemented yet \(", rows[name]), rows[name]
    assert re.match(r"score \d+ / 36: ", lines[-1]), lines[-1]  # the assigned cases only
    assert len(lines) <= 45


def test_every_package_function_an_assignment_asks_for_is_a_stub_in_the_student_copy():
    asked = {f for a in points.ASSIGNMENTS for f in a.functions if "." in f}
    assert asked - _marked() == set()
    assert {"gaussian.reparameterize_forward", "gaussian.reparameterize_backward"} <= asked


def _solution_text() -> list:
    """Lines inside the package's solution regions found nowhere else in the package."""
    unmarked, answers = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        answers += markers.solution_lines(text)
        unmarked.append(markers.cut(text))
    rest = "\n".join(unmarked)
    return sorted({line for line in answers if len(line) >= 8 and line not in rest})


def _texts(tree: Path):
    """(path, text) of every file under ``tree``; a notebook's cells as their sources."""
    for path in sorted(tree.rglob("*")):
        if path.is_dir() or "__pycache__" in path.parts:
            continue
        if path.suffix == ".ipynb":
            cells = json.loads(path.read_text())["cells"]
            yield path, "\n".join("".join(c["source"]) for c in cells)
        elif path.suffix not in (".png", ".jpg", ".svg", ".pdf", ".npz"):
            yield path, path.read_text(errors="replace")


def _assert_no_solution_text(tree: Path):
    answers = _solution_text()
    assert len(answers) > 40  # the bodies and the closed forms of the assigned functions
    assert "dL/dx = G W^T        (N, D)" in answers  # a docstring's closed form
    leaks = [f"{path.relative_to(tree)}: {line}" for path, text in _texts(tree)
             for line in answers if line in text]
    assert not leaks, "solution text in the student tree:\n" + "\n".join(leaks[:20])


def test_no_solution_text_in_the_student_package(student):
    _assert_no_solution_text(student)
    for path, text in _texts(student / "lvae_np"):  # no marker line is left
        assert not {markers.BEGIN, markers.END} & {line.strip() for line in text.splitlines()}, path


# ----------------------------------------------------------------------------
# The autograder on the source package
# ----------------------------------------------------------------------------
def test_the_source_package_scores_full_points():
    report = grade()  # the assigned cases, at the notebooks' points
    assert report.passed, str(report)
    assert report.score == report.total == 36
    everything = grade(everything=True)
    assert everything.passed, str(everything)
    course = [c for c in cases.CASES if c.course]  # the original code's options are not graded
    assert [i.name for i in everything.items] == [c.name for c in course]
    assert not any(c.course for c in cases.CASES if c.name.endswith(("-headbn", "-unshared")))
    options = grade(["unshared-ladder-step"])  # by name they are graded all the same
    assert options.status("unshared-ladder-step") == "passed"


RIGHT_BATCHNORM_BACKWARD = L.batchnorm_backward  # grade(using=...) replaces L's while it runs


def _batchnorm_without_the_variance_term(dout, cache):
    """Training mode forgets the gradient through the batch variance; evaluation mode is right."""
    xhat, inv_std, gamma, training, _ = cache
    if not training:
        return RIGHT_BATCHNORM_BACKWARD(dout, cache)
    g = dout * gamma
    n = dout.shape[0]
    dx = (inv_std / n) * (n * g - g.sum(axis=0))
    return dx, (dout * xhat).sum(axis=0), dout.sum(axis=0)


def test_a_wrong_batchnorm_fails_exactly_batchnorm_and_blocks_its_dependents():
    original = L.batchnorm_backward
    # It calls the package's batch norm in evaluation mode, which a course refuses: a test's
    # own (allow_package), graded on every case of the course, at their registry weights too.
    refused = grade(["batchnorm"], using={"layers.batchnorm_backward":
                                          _batchnorm_without_the_variance_term})
    assert refused.status("batchnorm") == "not the student's code"
    wrong = {"layers.batchnorm_backward": _batchnorm_without_the_variance_term}
    # Graded item by item (the default): every case runs the package's batch norm but
    # batchnorm's own, so only batchnorm fails and only its points are lost.
    alone = grade(using=wrong, everything=True, allow_package=True)
    assert L.batchnorm_backward is original  # put back
    assert [i.name for i in alone.items if i.status != "passed"] == ["batchnorm"]
    assert alone.score == alone.total - grading.points_of(cases.find_case("batchnorm"),
                                                          everything=True) > 0
    # Together (feedback): the wrong batch norm runs everywhere, its dependents are blocked.
    report = grade(using=wrong, everything=True, allow_package=True, together=True)
    assert L.batchnorm_backward is original
    failed = [i.name for i in report.items if i.status != "passed"
              and not i.status.startswith("blocked")]
    assert failed == ["batchnorm"]
    blocked = {i.name for i in report.items if i.status == "blocked by batchnorm"}
    assert {"mlp", "gaussian-block", "bottom-up-step", "ladder-step", "vae-step", "output-step",
            "lvae-L3-bn-mc-beta0.5", "vae-L2-bn-iw3"} <= blocked
    assert {i.name for i in report.items if i.status.startswith("blocked")} == blocked
    for name in ("batchnorm-eval", "mlp-eval", "mlp-nobn", "lvae-L2-nobn-iw3", "top-step"):
        assert report.status(name) == "passed", name  # they do not use batch norm's training mode
    assert report.feedback and report.score == report.total == 0   # feedback, no points

    text = str(report)
    assert len(text.splitlines()) <= 40
    assert text.count("blocked by batchnorm") == 1  # its dependents, once
    detail = text.splitlines()[text.splitlines().index(
        next(line for line in text.splitlines() if line.startswith("batchnorm ") and "FAILED" in line)) + 1]
    assert "gradient of 'x': max relative error" in detail and "at index" in detail
    assert "'gamma'" not in text and "'beta'" not in text  # the right gradients are not blamed


def test_a_backward_returning_none_is_named_in_one_sentence():
    def forgets_return(dout, cache):
        dx = dout * cache.gamma * cache.inv_std  # noqa: F841

    report = grade(["batchnorm", "mlp"], using={"layers.batchnorm_backward": forgets_return},
                   together=True)
    assert report.status("batchnorm") == "failed" and report.status("mlp").startswith("blocked")
    assert report.item("batchnorm").details == [
        "batchnorm_backward returned None: it must return one gradient per input "
        "(3: x, gamma, beta)"]
    assert "Traceback" not in str(report) and len(str(report).splitlines()) <= 10


# ----------------------------------------------------------------------------
# The release (nbgrader)
# ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def released(tmp_path_factory) -> Path:
    if not HAVE_NBGRADER:
        pytest.skip("nbgrader is not installed (pip install -e .[course])")
    out = tmp_path_factory.mktemp("release")
    release(out, force=True)
    return out


@needs_nbgrader
def test_the_release_has_the_package_notebooks_and_a_readme(released):
    assert (released / "lvae_np" / "layers.py").is_file()
    assert (released / "pyproject.toml").is_file()
    # the instructor's notes on the source notebooks (answers, hidden checks) stay behind
    assert (SOURCE / "assignments" / "README.md").is_file()
    assert not (released / "assignments" / "README.md").exists()
    readme = (released / "README.md").read_text()
    assert "python -m lvae_np.gradcheck --grade" in readme and "pip install -e" in readme
    for name in ("batchnorm_backward", "merge_backward", "ladder_step_backward"):
        assert f"`{name}`" in readme
    _assert_readme_lists_what_the_notebooks_ask(readme)
    sources = [p for f in ("assignments", "tutorials") for p in sorted((SOURCE / f).glob("*.ipynb"))]
    assert sources
    for source in sources:
        student = released / source.relative_to(SOURCE)
        assert student.is_file(), student
        nb = json.loads(student.read_text())
        text = "\n".join("".join(c["source"]) for c in nb["cells"])
        assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text, student
        assert all(not c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code")
        if "### BEGIN SOLUTION" in source.read_text():
            assert "YOUR CODE HERE" in text or "YOUR ANSWER HERE" in text, student


def _asked(notebook: Path) -> tuple:
    """What a source notebook asks for: its answer functions, and (grade_id, points) per graded cell."""
    functions, graded = [], []
    for cell in json.loads(notebook.read_text())["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        source = "".join(cell["source"])
        if cell["cell_type"] == "code" and meta.get("solution") and not meta.get("grade"):
            functions += [n.name for n in ast.parse(source).body if isinstance(n, ast.FunctionDef)]
        if meta.get("grade"):
            graded.append((meta["grade_id"], meta["points"]))
    return functions, graded


def _assert_readme_lists_what_the_notebooks_ask(readme: str):
    notebooks = sorted((SOURCE / "assignments").glob("*.ipynb"))
    assert len(notebooks) == 5
    functions = []
    for notebook in notebooks:
        asked, graded = _asked(notebook)
        functions += asked
        # The notebook's own part of the README: from its heading to the next one.
        part = readme.split(f"### `assignments/{notebook.name}`", 1)[1].split("\n#", 1)[0]
        for name in asked:
            assert f"`{name}`" in part, (notebook.name, name)
        for grade_id, worth in graded:
            assert f"`{grade_id}` ({worth})" in part, (notebook.name, grade_id)
    assert len(functions) == len(set(functions)) == 14  # every function the notebooks ask for
    assert {"reparameterize_forward", "toy_log_weights", "iw_bound"} <= set(functions)


def test_the_student_readme_lists_every_function_and_cell_of_the_notebooks(tmp_path):
    _assert_readme_lists_what_the_notebooks_ask(readme(copy_package(tmp_path), []))
    batchnorm = points.ASSIGNMENTS[1]
    assert batchnorm.notebook == "02_batchnorm.ipynb"
    wrong = list(points.ASSIGNMENTS)
    wrong[1] = dataclasses.replace(batchnorm, functions=())  # forgets batchnorm_backward
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(points, "ASSIGNMENTS", tuple(wrong))
        with pytest.raises(AssertionError, match="batchnorm_backward"):
            _assert_readme_lists_what_the_notebooks_ask(readme(copy_package(tmp_path / "b"), []))


@needs_nbgrader
def test_no_solution_text_anywhere_in_the_release(released):
    _assert_no_solution_text(released)


@needs_nbgrader
def test_the_released_package_grades_without_a_traceback(released):
    proc = _run(["-m", "lvae_np.gradcheck", "--grade", "batchnorm", "ladder-step"], released)
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr
    assert "not implemented yet (batchnorm_backward)" in proc.stdout
    assert "not implemented yet (ladder_step_backward)" in proc.stdout


def test_release_refuses_a_folder_that_is_not_empty(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["release", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not empty" in err and "--force" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_release_without_nbgrader_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "nbgrader.preprocessors", None)  # import fails
    assert main(["release", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install -e .[course]" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
