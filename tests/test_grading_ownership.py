"""The autograder grades the student's own code: copying the package's scores nothing.

Autograding (``nbgrader autograde``, ``pytest --nbmake``) runs with the full
package installed, so ``grade(..., using={...})`` must refuse a function that
is lvae_np's own, wraps, copies or calls it, or (in a notebook) comes from
outside the notebook. The last tests run a real notebook in an IPython
kernel, as both routes do.
"""
import functools
import inspect
import json
import re
import textwrap
import types

import pytest

from lvae_np import layers as L
from lvae_np.gradcheck import grade, ownership
from lvae_np.gradcheck.ownership import CELL_FILE

KEY = "layers.batchnorm_backward"
PACKAGES_OWN = L.batchnorm_backward  # grade(using=...) replaces L's while it runs


def my_batchnorm_backward(dout, cache):
    """Batch norm's gradients, written anew (the student's own)."""
    xhat, inv_std, gamma, training, _ = cache
    g = dout * gamma
    if training:
        n = dout.shape[0]
        dx = inv_std / n * (n * g - g.sum(axis=0) - xhat * (g * xhat).sum(axis=0))
    else:
        dx = g * inv_std
    return dx, (dout * xhat).sum(axis=0), dout.sum(axis=0)


def _wrapper(dout, cache):
    return PACKAGES_OWN(dout, cache)


def _helper(dout, cache):
    return PACKAGES_OWN(dout, cache)


def _through_a_helper(dout, cache):
    return _helper(dout, cache)


def _closure():
    own = L.batchnorm_backward

    def batchnorm_backward(dout, cache):
        return own(dout, cache)
    return batchnorm_backward


def _default(dout, cache, _own=L.batchnorm_backward):
    return _own(dout, cache)


def _exec_copy():
    """The package's source, exec'd: a new function with the package's code, docstring and all."""
    scope = dict(vars(L), __name__="__main__")
    exec(textwrap.dedent(inspect.getsource(L.batchnorm_backward)), scope)
    return scope["batchnorm_backward"]


COPIES = {
    "imported": (L.batchnorm_backward, "lvae_np.layers.batchnorm_backward is lvae_np's own code"),
    "partial": (functools.partial(L.batchnorm_backward),
                "a partial around lvae_np.layers.batchnorm_backward is lvae_np's own code"),
    "wraps": (functools.wraps(L.batchnorm_backward)(lambda dout, cache: None),
              "lvae_np.layers.batchnorm_backward is lvae_np's own code"),
    "same code object": (types.FunctionType(L.batchnorm_backward.__code__, {}),
                         "made from the code of lvae_np/layers.py"),
    "another op": (L.dense_backward, "lvae_np.layers.dense_backward is lvae_np's own code"),
    "wrapper": (_wrapper, "_wrapper calls lvae_np's own layers.batchnorm_backward "
                          "(PACKAGES_OWN)"),
    "through a helper": (_through_a_helper, "calls lvae_np's own layers.batchnorm_backward "
                                            "(PACKAGES_OWN)"),
    "closure": (_closure(), "calls lvae_np's own layers.batchnorm_backward (own)"),
    "default": (_default, "calls lvae_np's own layers.batchnorm_backward (a default argument)"),
    "exec'd source": (_exec_copy(), "is a copy of lvae_np's own layers.batchnorm_backward"),
    "builtin": (print, "a builtin_function_or_method is not a function you wrote"),
}


@pytest.mark.parametrize("name", COPIES)
def test_the_package_s_code_in_any_form_is_not_the_student_s(name):
    function, why = COPIES[name]
    report = grade(["batchnorm", "mlp"], using={KEY: function})
    assert L.batchnorm_backward is PACKAGES_OWN  # never put in place, and nothing left behind
    assert report.status("batchnorm") == "not the student's code"
    assert report.status("mlp") == "passed"  # graded on its own, on the installed batch norm
    assert report.score == 0 and report.total == 6 and not report.passed
    (line,) = report.item("batchnorm").details  # one line saying why
    assert line.startswith(f"{KEY}: ") and why in line, line
    text = str(report)
    assert "not the student's code" in text and "\n    " + line in text
    assert len(text.splitlines()) == 9


def test_together_the_dependents_of_a_refused_function_are_blocked():
    report = grade(["batchnorm", "mlp"], using={KEY: L.batchnorm_backward}, together=True)
    assert report.status("batchnorm") == "not the student's code"
    assert report.status("mlp") == "blocked by batchnorm"  # as for a failure
    assert report.score == report.total == 0 and report.feedback


def test_the_student_s_own_function_is_graded():
    report = grade(["batchnorm", "batchnorm-eval", "mlp"], using={KEY: my_batchnorm_backward})
    assert report.passed, str(report)
    assert report.score == report.total == 6 + 1


def test_allow_package_grades_the_package_s_functions_for_its_own_tests():
    for name, (function, _) in COPIES.items():
        if name not in ("builtin", "another op", "wraps", "same code object"):
            report = grade(["batchnorm"], using={KEY: function}, allow_package=True)
            assert report.passed, (name, str(report))
    assert grade(["batchnorm"]).passed  # no using: the package as installed


def test_a_refused_function_that_no_graded_case_owns_is_reported_on_its_own():
    report = grade(["dense"], using={KEY: L.batchnorm_backward})
    assert report.status("dense") == "passed"
    assert report.status(KEY) == "not the student's code" and not report.passed
    assert report.item(KEY).details[0].startswith(f"{KEY}: lvae_np.layers.batchnorm_backward")


def test_in_a_notebook_a_function_from_a_file_is_refused(tmp_path):
    # What in_notebook() decides, forced: a module function is not the notebook's.
    why = ownership.refusal(KEY, my_batchnorm_backward, PACKAGES_OWN, notebook=True)
    assert why == (f"{KEY}: my_batchnorm_backward is defined in module {__name__}, not in this "
                   "notebook: write it in its answer cell")
    assert ownership.refusal(KEY, my_batchnorm_backward, PACKAGES_OWN, notebook=False) is None
    cell = types.FunctionType(compile("def f(dout, cache): pass", "<ipython-input-3-4f2a9c>",
                                      "exec").co_consts[0], {"__name__": "__main__"})
    assert ownership.refusal(KEY, cell, PACKAGES_OWN, notebook=True) is None
    assert not ownership.in_notebook()  # pytest is not an IPython kernel


@pytest.mark.parametrize("filename, is_cell", [
    ("/tmp/ipykernel_12345/3407227593.py", True),    # ipykernel 6+, IPython 8 and 9
    (r"C:\Users\a\AppData\Local\Temp\ipykernel_812\1296.py", True),
    ("<ipython-input-7-0a1b2c3d4e5f>", True),          # the terminal IPython
    ("/home/student/helper_ops.py", False),
    ("/tmp/ipykernel_12345/helper/ops.py", False),
    ("<string>", False),
])
def test_the_pseudo_files_of_notebook_cells(filename, is_cell):
    assert bool(CELL_FILE.search(filename)) is is_cell


# ----------------------------------------------------------------------------
# In a real kernel, as nbgrader autograde and pytest --nbmake run a notebook
# ----------------------------------------------------------------------------
CELLS = [
    "import json, re\n"
    "from lvae_np.gradcheck import grade\n"
    "from lvae_np.gradcheck.ownership import CELL_FILE\n"
    "KEY = 'layers.batchnorm_backward'",
    # An answer cell that copies: the import the instructor's report found.
    "from lvae_np.layers import batchnorm_backward",
    # An answer cell with the student's own function.
    inspect.getsource(my_batchnorm_backward),
    # A function from a file beside the notebook.
    "from helper_ops import helper_batchnorm_backward",
    # A function exec'd from source, as assignment 4 loads those of assignments 1-3.
    "scope = {}\n"
    f"exec({inspect.getsource(my_batchnorm_backward)!r}, scope)\n"
    "loaded = scope['my_batchnorm_backward']",
    "found = {}\n"
    "for name, f in [('copied', batchnorm_backward), ('mine', my_batchnorm_backward),\n"
    "                ('file', helper_batchnorm_backward), ('loaded', loaded)]:\n"
    "    report = grade(['batchnorm'], using={KEY: f})\n"
    "    found[name] = [report.status('batchnorm'), report.item('batchnorm').details, str(report)]\n"
    "found['where'] = [my_batchnorm_backward.__module__, my_batchnorm_backward.__code__.co_filename,\n"
    "                  bool(CELL_FILE.search(my_batchnorm_backward.__code__.co_filename))]\n"
    "print(json.dumps(found))",
]


@pytest.fixture(scope="module")
def kernel_run(tmp_path_factory):
    """Run CELLS in an IPython kernel; the JSON the last cell prints."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    folder = tmp_path_factory.mktemp("notebook")
    (folder / "helper_ops.py").write_text(
        inspect.getsource(my_batchnorm_backward).replace("my_batchnorm", "helper_batchnorm"))
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in CELLS]
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(folder)}})
    client.execute()
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    return json.loads(text)


def test_a_kernel_compiles_cells_as_the_pseudo_files_the_grader_knows(kernel_run):
    module, filename, is_cell = kernel_run["where"]
    assert module == "__main__" and is_cell, filename


def test_in_a_kernel_an_imported_answer_scores_nothing(kernel_run):
    status, details, text = kernel_run["copied"]
    assert status == "not the student's code"
    assert details == ["layers.batchnorm_backward: lvae_np.layers.batchnorm_backward is "
                       "lvae_np's own code, not yours: write the function in the notebook"]
    assert re.search(r"^batchnorm\s+0 / 6\s+-\s+not the student's code$", text, re.M), text


def test_in_a_kernel_the_student_s_own_functions_pass(kernel_run):
    for name in ("mine", "loaded"):  # written in a cell; exec'd from a notebook's source
        status, details, text = kernel_run[name]
        assert status == "passed" and details == [], (name, text)
        assert text.splitlines()[-1].startswith("score 6 / 6: 1 passed")


def test_in_a_kernel_a_function_from_a_file_is_not_the_notebook_s(kernel_run):
    status, (detail,), _ = kernel_run["file"]
    assert status == "not the student's code"
    assert re.fullmatch(r"layers\.batchnorm_backward: helper_batchnorm_backward is defined in "
                        r"module helper_ops, not in this notebook: write it in its answer cell",
                        detail), detail
