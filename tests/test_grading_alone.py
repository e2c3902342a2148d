"""Each item graded on its own: one mistake costs one item, and a student's package copy is graded too.

``grade(names, using=...)`` runs each case with only its own functions from
``using`` (an op's forward and backward, the ladder step's backward) and the
installed package's for everything it builds on; ``together=True`` runs them
all in place at once, as feedback without points; ``submission=DIR``
(``python -m lvae_np.gradcheck --grade --submission DIR``) grades the
functions of a student's copy of the package, loaded beside lvae_np, with
lvae_np's functions for what they call.

The student copies here are made as a release makes them
(``lvae_np.course.release.copy_package``), then filled in: with the
package's own bodies for an "all correct" student, with a planted mistake
for the others.
"""
import ast
import inspect
import re
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

from lvae_np import gaussian, layers, steps
from lvae_np.course.release import PACKAGE, copy_package
from lvae_np.gradcheck import grade, grading, points
from lvae_np.gradcheck.__main__ import main

from course_students import WRONG_BATCHNORM, WRONG_MERGE, filled  # noqa: E402
from course_students import replace_in as _replace  # noqa: E402

ALL = 36  # every autograded case's points (points.CASE_POINTS)
ASSIGNED = grading.assigned_functions()
ORIGINALS = {key: getattr(sys.modules[f"lvae_np.{key.rpartition('.')[0]}"], key.rpartition(".")[2])
             for key in ASSIGNED}


def written_anew(function):
    """``function``'s source without its docstring, compiled in a scope of its own: the student's
    own code as the grader sees it (neither lvae_np's code nor a copy of it)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    body = tree.body[0].body
    if ast.get_docstring(tree.body[0]) is not None:
        del body[0]
    scope = dict(vars(sys.modules[function.__module__]), __name__="student")
    exec(compile(tree, "<student>", "exec"), scope)
    return scope[function.__name__]


RIGHT = {key: written_anew(function) for key, function in ORIGINALS.items()}


def wrong_batchnorm_backward(dout, cache):
    """Batch norm's gradients with dgamma doubled in training mode (evaluation mode is right)."""
    xhat, inv_std, gamma, training, _ = cache
    g = dout * gamma
    if not training:
        return g * inv_std, (dout * xhat).sum(axis=0), dout.sum(axis=0)
    n = dout.shape[0]
    dx = inv_std / n * (n * g - g.sum(axis=0) - xhat * (g * xhat).sum(axis=0))
    return dx, 2.0 * (dout * xhat).sum(axis=0), dout.sum(axis=0)


def wrong_merge_backward(dout, cache):
    """The merge's gradients with the sign of dvar_hat's mean term flipped."""
    g_mu, g_var = dout
    var_hat, var_p, w_hat, w_p, diff, s = cache
    g_diff = g_mu * diff / s
    return g_mu * w_hat, g_var * w_hat * w_hat + g_diff * w_hat, g_mu * w_p, \
        g_var * w_p * w_p + g_diff * w_p


def _earned(report) -> dict:
    return {i.name: (i.earned, i.points) for i in report.items if i.counted}


# ----------------------------------------------------------------------------
# grade(using=...): each case with its own functions only
# ----------------------------------------------------------------------------
def test_the_student_s_right_functions_earn_every_point():
    report = grade(using=RIGHT)
    assert report.passed and report.score == report.total == ALL, str(report)
    assert report.earned == float(ALL) and isinstance(report.earned, float)


def test_a_wrong_batchnorm_costs_only_the_batchnorm_points():
    using = dict(RIGHT, **{"layers.batchnorm_backward": wrong_batchnorm_backward})
    report = grade(using=using)
    earned = _earned(report)
    assert earned["batchnorm"] == (0, 6) and report.status("batchnorm") == "failed"
    assert earned["batchnorm-eval"] == (1, 1)  # evaluation mode is right
    assert earned["ladder-step"] == (5, 5) and earned["ladder-step-mc"] == (5, 5)
    assert report.score == ALL - 6 and report.earned == ALL - 6.0
    assert not [i.name for i in report.items if i.status.startswith("blocked")]
    # The cases the ladder step builds on were checked first, on the installed package.
    assert report.status("gaussian-block") == "passed" and not report.item("gaussian-block").counted
    assert "'gamma'" in str(report) and "'x'" not in str(report)  # the one wrong gradient


def test_a_wrong_merge_costs_only_the_merge_points():
    using = dict(RIGHT, **{"gaussian.merge_backward": wrong_merge_backward})
    report = grade(using=using)
    earned = _earned(report)
    assert earned["merge"] == (0, 4)
    assert earned["ladder-step"] == (5, 5) and earned["ladder-step-mc"] == (5, 5)
    assert report.score == ALL - 4
    assert [i.name for i in report.items if i.status != "passed"] == ["merge"]


def test_the_package_s_functions_are_back_after_grading_whatever_it_graded():
    grade(["ladder-step"], using=dict(RIGHT, **{"gaussian.merge_backward": wrong_merge_backward}))
    for key, function in ORIGINALS.items():
        module, name = grading.target(key)
        assert getattr(module, name) is function, key


def test_an_imported_answer_still_scores_nothing():
    using = dict(RIGHT, **{"layers.batchnorm_backward": layers.batchnorm_backward})
    report = grade(using=using)
    assert report.status("batchnorm") == report.status("batchnorm-eval") == \
        "not the student's code"
    assert report.score == ALL - 6 - 1
    assert "lvae_np.layers.batchnorm_backward is lvae_np's own code" in str(report)


def test_together_is_feedback_without_points():
    report = grade(using=RIGHT, together=True)
    assert report.passed and report.feedback
    assert report.score == report.total == 0 and report.earned == 0.0
    rows = str(report).splitlines()
    assert re.search(r"^batchnorm\s+feedback\s+\S+\s+passed$", "\n".join(rows), re.M), rows
    assert rows[-1].startswith("feedback, no points: ")
    # With a wrong batch norm in place everywhere, the whole LVAE is blocked by it.
    using = dict(RIGHT, **{"layers.batchnorm_backward": wrong_batchnorm_backward})
    models = ["lvae-L3-bn-analytic-beta0.5", "lvae-L3-bn-mc-beta0.5"]
    together = grade(models, using=using, together=True)
    assert together.status("lvae-L3-bn-mc-beta0.5") == "blocked by batchnorm"
    assert together.earned == 0.0
    # Graded on its own, a whole model has no function of the student's: it runs the package.
    assert grade(models, using=using).passed


def test_no_assignment_awards_points_for_a_whole_model():
    from lvae_np.gradcheck import cases

    assert ALL == sum(points.CASE_POINTS.values())
    assert not [n for n in points.CASE_POINTS if cases.find_case(n).kind == "model"]
    assert grading.points_of(cases.find_case("lvae-L3-bn-mc-beta0.5")) == 0


def test_a_case_checked_first_blames_the_installed_function_by_name(monkeypatch):
    """In a student's copy the installed batch norm is a stub; the student's own batch norm,
    given in using, passes its row, and the block built on the installed one says which."""
    def stub(dout, cache):
        raise NotImplementedError()

    monkeypatch.setattr(layers, "batchnorm_backward", stub)
    report = grade(["batchnorm", "mlp"], using={"layers.batchnorm_backward":
                                                RIGHT["layers.batchnorm_backward"]})
    assert report.status("batchnorm") == "passed"
    assert report.status("mlp") == "blocked by batchnorm (the package's: not implemented yet)"


# ----------------------------------------------------------------------------
# A student's copy of the package: --grade --submission DIR
# ----------------------------------------------------------------------------
def _student(folder: Path, edit=None) -> Path:
    """A release's package copy in ``folder``, its stubs filled with the package's bodies, then
    ``edit(layers_path, gaussian_path)`` applied (None: the stubs left as released)."""
    cut = copy_package(folder)
    if edit is not False:
        for rel in cut:
            (folder / rel).write_text(filled((PACKAGE.parent / rel).read_text()))
        if edit:
            edit(folder / "lvae_np" / "layers.py", folder / "lvae_np" / "gaussian.py")
    return folder


def _wrong_batchnorm(layers_py, gaussian_py):
    _replace(layers_py, *WRONG_BATCHNORM)


def _wrong_merge(layers_py, gaussian_py):
    _replace(gaussian_py, *WRONG_MERGE)


STUDENTS = {  # name -> (how the copy is filled, the score, the rows' earned / worth)
    "nothing": (False, 0, {"batchnorm": "0 / 6", "ladder-step": "0 / 5"}),
    "all correct": (None, ALL, {"batchnorm": "6 / 6", "merge": "4 / 4", "ladder-step": "5 / 5"}),
    "wrong batch norm": (_wrong_batchnorm, ALL - 6, {
        "batchnorm": "0 / 6", "batchnorm-eval": "1 / 1", "ladder-step": "5 / 5",
        "ladder-step-mc": "5 / 5"}),
    "wrong merge": (_wrong_merge, ALL - 4, {"merge": "0 / 4", "ladder-step": "5 / 5",
                                            "ladder-step-mc": "5 / 5"}),
}


@pytest.fixture(scope="module")
def students(tmp_path_factory) -> dict:
    return {name: _student(tmp_path_factory.mktemp(name.replace(" ", "_")), edit)
            for name, (edit, _, _) in STUDENTS.items()}


@pytest.mark.parametrize("name", STUDENTS)
def test_cli_grades_a_student_s_copy_item_by_item(name, students, capsys):
    _, score, rows = STUDENTS[name]
    status = main(["--grade", "--submission", str(students[name])])
    captured = capsys.readouterr()
    assert captured.err == "" and "Traceback" not in captured.out
    lines = captured.out.splitlines()
    assert lines[-1].startswith(f"score {score} / {ALL}: "), lines[-1]
    assert status == (0 if score == ALL else 1)
    found = {line.split()[0]: line for line in lines[2:-2] if not line.startswith(" ")}
    for case, worth in rows.items():
        assert re.match(rf"{re.escape(case)}\s+{worth}\s", found[case]), found[case]
    if name == "nothing":  # a stub in the copy is "not implemented", not an error
        assert "not implemented yet (batchnorm_backward)" in found["batchnorm"]
        assert "not implemented yet (ladder_step_backward)" in found["ladder-step"]
    # Nothing of the copy is left loaded, and lvae_np's functions are its own again.
    assert not [m for m in sys.modules if m.startswith("_lvae_np_submission_")]
    for key, function in ORIGINALS.items():
        module, attribute = grading.target(key)
        assert getattr(module, attribute) is function, key


def test_grade_takes_a_submission_from_python_and_together_blocks_what_fails(students):
    report = grade(submission=students["wrong batch norm"])
    assert report.score == ALL - 6 and report.status("ladder-step") == "passed"
    # Together: the copy's ladder step runs the copy's wrong batch norm, put in place.
    together = grade(["ladder-step"], submission=students["wrong batch norm"], together=True)
    assert together.status("batchnorm") == "failed"
    assert together.status("ladder-step") == "blocked by batchnorm" and together.earned == 0.0
    assert grade(["ladder-step"], submission=students["all correct"], together=True).passed


def test_nothing_is_written_into_the_submission(students):
    grade(["dense"], submission=students["all correct"])
    assert not list(students["all correct"].rglob("__pycache__"))


def test_a_submission_is_not_lvae_np_s_own_code(students, tmp_path):
    # The package's own folder as a submission: the lvae_np running the grader, refused.
    with pytest.raises(grading.SubmissionError, match="is the lvae_np running this grader"):
        grade(["batchnorm", "ladder-step"], submission=PACKAGE.parent)
    # The package's files copied into a release (docstrings and answers and all): copies.
    copied = _student(tmp_path / "copied", False)
    for module in ("layers", "gaussian", "steps", "bounds"):
        shutil.copyfile(PACKAGE / f"{module}.py", copied / "lvae_np" / f"{module}.py")
    report = grade(submission=copied)
    assert report.score == 0
    for item in report.items:
        if item.counted:  # each case holds a function whose docstring holds the answer
            assert item.status == "not the student's code", item.name
            assert "is a copy of lvae_np's own" in item.details[0], item.details


def test_a_submission_s_wrapper_or_outside_function_is_refused(tmp_path, monkeypatch):
    folder = _student(tmp_path / "s", None)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "helper_ops.py").write_text(
        inspect.getsource(wrong_batchnorm_backward).replace("wrong_batchnorm_backward",
                                                            "dense_backward"))
    monkeypatch.syspath_prepend(str(tmp_path / "elsewhere"))
    layers_py = folder / "lvae_np" / "layers.py"
    layers_py.write_text(layers_py.read_text()
                         + "\n\nfrom lvae_np.layers import batchnorm_backward as _reference\n\n\n"
                         "def batchnorm_backward(dout, cache):\n"
                         "    return _reference(dout, cache)\n\n\n"
                         "from helper_ops import dense_backward  # noqa: E402\n")
    report = grade(["dense", "batchnorm"], submission=folder)
    assert report.status("batchnorm") == report.status("dense") == "not the student's code"
    assert "calls lvae_np's own layers.batchnorm_backward (_reference)" in \
        report.item("batchnorm").details[0]
    assert re.search(r"dense_backward is defined in .*helper_ops\.py, not in the submission ",
                     report.item("dense").details[0])


@pytest.mark.parametrize("make, words", [
    (lambda d: d.mkdir(), "holds no lvae_np/ package"),
    (lambda d: (_student(d, False) / "lvae_np" / "steps.py").write_text("def f(:\n"),
     "lvae_np does not import: SyntaxError"),
    (lambda d: _replace(_student(d, False) / "lvae_np" / "bounds.py", "def logmeanexp_backward",
                        "def logmeanexp_backward_renamed"),
     "bounds.py has no function logmeanexp_backward: the assignments ask for it"),
])
def test_a_submission_that_cannot_be_graded_is_one_line(make, words, tmp_path, capsys):
    folder = tmp_path / "sub"
    make(folder)
    assert main(["--grade", "--submission", str(folder)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("lvae_np.gradcheck: error: ") and words in captured.err
    with pytest.raises(grading.SubmissionError, match=re.escape(words)):
        grade(submission=folder)
    assert not [m for m in sys.modules if m.startswith("_lvae_np_submission_")]


def test_the_options_of_a_submission_go_with_grade(capsys):
    assert main(["--submission", "x"]) == 2
    assert "--submission goes with --grade" in capsys.readouterr().err
    assert main(["--grade", "--together"]) == 2
    assert "--together goes with --grade --submission DIR" in capsys.readouterr().err


def test_every_assigned_function_s_docstring_holds_a_solution_region():
    """A submission's copy of the package's file keeps that region's marker: how the grader
    tells a copied file from a student who wrote the same lines (ownership.answer_in_docstring)."""
    assert [k for k, f in ORIGINALS.items()
            if "### " + "BEGIN SOLUTION" not in (f.__doc__ or "")] == []


# ----------------------------------------------------------------------------
# Partial credit: the value a test cell ends with
# ----------------------------------------------------------------------------
def test_earned_is_the_points_of_the_cases_that_passed():
    def ladder_step_backward(dout, cache):  # right for the closed form only: drops dz_kl
        dz, dkl = dout
        _, dmu_q, dvar_q, dmu_p_kl, dvar_p_kl = steps.kl_term_backward(dkl, cache.kl)
        dmu_r, dvar_r, deps = gaussian.reparameterize_backward(dz, cache.sample)
        dmu_hat, dvar_hat, dmu_p, dvar_p = gaussian.merge_backward(
            (dmu_q + dmu_r, dvar_q + dvar_r), cache.merge)
        dz_above, dblock, dhead = steps.blocks.gaussian_block_backward(
            (dmu_p + dmu_p_kl, dvar_p + dvar_p_kl), cache.prior)
        return dz_above, dmu_hat, dvar_hat, deps, dblock, dhead

    report = grade(["ladder-step", "ladder-step-mc"],
                   using={"steps.ladder_step_backward": ladder_step_backward})
    assert report.status("ladder-step") == "passed" and report.status("ladder-step-mc") == "failed"
    assert report.earned == 5.0 and report.total == 10 and not report.passed
    assert repr(report) == "<GradeReport score 5 / 10: not passed>"


def test_nbgrader_gives_a_cell_its_partial_credit(tmp_path):
    """Assignment 4 run in a kernel, as ``nbgrader autograde`` runs it, with a ladder step right
    for the closed-form KL only: nbgrader's own ``determine_grade`` gives its cell 5 of 10, and
    full points to the rest (no error, nothing on stderr)."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    utils = pytest.importorskip("nbgrader.utils")
    path = Path(__file__).resolve().parent.parent / "assignments" / "04_ladder_step.ipynb"
    nb = nbformat.read(path, as_version=4)
    (answer,) = [c for c in nb.cells
                 if c.metadata.get("nbgrader", {}).get("grade_id") == "ladder_step_backward"]
    assert "dz = dz + dz_kl" in answer.source
    answer.source = answer.source.replace("dz = dz + dz_kl", "dz = dz")  # drops the MC path
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    grades = {c.metadata.nbgrader["grade_id"]: utils.determine_grade(c) for c in nb.cells
              if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("grade")}
    assert grades == {"test_reparameterize": (3.0, 3.0), "test_ladder_step": (5.0, 10.0)}
    feedback = [c for c in nb.cells
                if c.metadata.get("nbgrader", {}).get("grade_id") == "feedback_whole_lvae"]
    text = "".join(o.get("text", "") for o in feedback[0].outputs)
    assert "feedback, no points" in text and "FAILED" in text  # the whole LVAE shows the error
