"""The student release runs offline, out of the box, and releases what its options say.

``python -m lvae_np.course release DIR`` ships the files the released
notebooks read besides lvae_np (MNIST in ``data/``, the published runs'
records in ``results/``) where the notebooks look for them when run from
``DIR/tutorials``, and an ``nbgrader_config.py`` whose cell timeout fits the
slowest notebook. What the notebooks read is found here by reading the
released notebooks' sources, independently of the release's own table
(``release.NOTEBOOK_FILES``), so a notebook that starts reading a file the
release does not ship fails these tests. ``--assignments-only`` and
``--assignment NN`` release exactly what they say. The releases are made from
the repository into tmp_path; the tests that write one skip without nbgrader.
"""
import ast
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lvae_np.course import release as R
from lvae_np.course.__main__ import main
from lvae_np.course.release import MANIFEST, SOURCE
from lvae_np.data import MNIST_FILES, NORB_FILES
from lvae_np.gradcheck import points, report
from lvae_np.training.runs import KL_UNITS, METRICS

from conftest import HAVE_NBGRADER, needs_nbgrader  # noqa: E402,F401

EVAL = "eval-test-k5000-subset1000-seed0.json"   # the headline runs' evaluation (tutorial 05)

# A file name in a notebook's source: what a notebook reads or writes by name.
FILE_NAME = re.compile(r"^[\w.-]+\.(?:json|csv|npz|npy|txt|gz|pkl|pt)$")
# The package's loaders of a dataset, and the files each needs (lvae_np.data).
DATASET_FILES = {"mnist": tuple(MNIST_FILES.values()), "norb": tuple(NORB_FILES.values())}


def _run_release(out: Path, *options) -> Path:
    if not HAVE_NBGRADER:
        pytest.skip("nbgrader is not installed (pip install -e .[course])")
    assert main(["release", str(out), *options]) == 0
    return out


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> Path:
    return _run_release(tmp_path_factory.mktemp("whole") / "student")


@pytest.fixture(scope="module")
def assignments_only(tmp_path_factory) -> Path:
    return _run_release(tmp_path_factory.mktemp("only") / "student", "--assignments-only")


@pytest.fixture(scope="module")
def weekly(tmp_path_factory) -> Path:
    return _run_release(tmp_path_factory.mktemp("weekly") / "student", "--assignment", "4",
                        "--assignment", "02_batchnorm.ipynb", "--assignment", "04")


def _files(tree: Path) -> dict:
    """path (relative, posix) -> SHA-256 of every file under ``tree``, caches aside."""
    return {p.relative_to(tree).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(tree.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts}


# ----------------------------------------------------------------------------
# What the released notebooks read, from their sources
# ----------------------------------------------------------------------------
def _code(notebook: Path) -> ast.Module:
    """A notebook's code cells as one module (IPython's %magics and !commands left out)."""
    cells = [c for c in json.loads(notebook.read_text(encoding="utf-8"))["cells"]
             if c["cell_type"] == "code"]
    lines = [line for c in cells for line in "".join(c["source"]).splitlines() + [""]
             if not line.lstrip().startswith(("%", "!"))]
    return ast.parse("\n".join(lines), str(notebook))


def _chain(node) -> list:
    """The operands of ``a / b / c`` (left to right); [node] for anything else."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        return _chain(node.left) + _chain(node.right)
    return [node]


def _text(node):
    """The string a path operand spells: "x" or Path("x"); None when it is not constant."""
    if isinstance(node, ast.Call) and len(node.args) == 1 and not node.keywords:
        node = node.args[0]
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def reads(notebook: Path) -> dict:
    """What a notebook's source reads besides lvae_np.

    Returns:
        ``{"datasets": {name}, "paths": {path under results/ or data/, as far as it is
        constant}, "names": {file names it spells}}``; ``names`` also holds the run
        records that ``lvae_np.training.plots`` reads when the notebook uses it.
    """
    tree = _code(notebook)
    datasets, paths, names = set(), set(), set()
    inner = {id(n.left) for n in ast.walk(tree)  # a / b inside (a / b) / c: only the whole
             if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(
                node.func, "id", None)) == "load_dataset":
            name = _text(node.args[0]) if node.args else None
            datasets.add(name or "<not constant>")
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and id(node) not in inner:
            parts = [_text(n) for n in _chain(node)]
            for i, part in enumerate(parts):
                if part is not None and part.split("/")[0] in ("results", "data"):
                    constant = []
                    for p in parts[i:]:
                        if p is None:
                            break
                        constant.append(p)
                    paths.add("/".join(constant))
        value = _text(node) if isinstance(node, ast.Constant) else None
        if value is not None:
            if value.startswith(("results/", "data/")):
                paths.add(value.rstrip("/"))
            if FILE_NAME.match(value):
                names.add(value)
    if any(isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
           and n.value.id == "plots" for n in ast.walk(tree)):
        names |= {METRICS, KL_UNITS}  # a run folder's records, read by plots' functions
    return {"datasets": datasets, "paths": paths, "names": names}


def needed(release_dir: Path, source: Path = SOURCE) -> dict:
    """The files (relative paths) the notebooks of ``release_dir`` read: "data" and "results".

    A dataset loaded by name needs the files its loader reads, in ``data/NAME/``. A
    constant path under ``results/`` names a file, or a folder of which the notebook reads
    the files it spells by name (at any depth): those files of the source tree.
    """
    found = {"data": set(), "results": set()}
    for notebook in sorted(release_dir.rglob("*.ipynb")):
        said = reads(notebook)
        rel = notebook.relative_to(release_dir)
        for name in said["datasets"]:
            assert name in DATASET_FILES, f"{rel} loads dataset {name!r}: unknown to this test"
            found["data"] |= {f"data/{name}/{f}" for f in DATASET_FILES[name]}
        for path in said["paths"]:
            where = source / path
            assert where.exists(), f"{rel} reads {path}, which the source tree lacks"
            if path.startswith("data/"):
                continue  # the datasets, by name above
            files = [where] if where.is_file() else [
                p for p in where.rglob("*") if p.is_file() and p.name in said["names"]]
            assert files, f"{rel} reads files of {path} but names none the source tree has"
            found["results"] |= {p.relative_to(source).as_posix() for p in files}
    return found


def assert_ships_what_it_reads(release_dir: Path, source: Path = SOURCE) -> dict:
    """The release holds every file its notebooks read, as in the source, in its manifest."""
    manifest = json.loads((release_dir / MANIFEST).read_text())["files"]
    want = needed(release_dir, source)
    for path in sorted(want["results"]):
        assert (release_dir / path).is_file(), f"the release lacks {path}"
        digest = hashlib.sha256((source / path).read_bytes()).hexdigest()
        assert manifest.get(path) == digest, f"{path}: not the source's file, or not listed"
    for path in sorted(want["data"]):
        shipped = [p for p in (path, path + ".gz") if (release_dir / p).is_file()]
        assert shipped, f"the release lacks {path} (or {path}.gz)"
        assert all(manifest.get(p) for p in shipped), f"{path}: not in the manifest"
    # Exactly the runs' records that are read, and data only of the datasets loaded.
    shipped = {p for p in manifest if p.startswith("results/")}
    assert shipped == want["results"], sorted(shipped ^ want["results"])[:5]
    folders = {str(Path(p).parent) for p in want["data"]}
    extra = [p for p in manifest if p.startswith("data/")
             and str(Path(p).parent) not in folders and p != "data/README.md"]
    assert not extra, extra
    return want


@needs_nbgrader
def test_the_release_ships_the_data_and_runs_the_notebooks_read(whole):
    want = assert_ships_what_it_reads(whole)
    # The tutorials that load MNIST and read the published runs are in this release.
    assert {"data/mnist/train-images-idx3-ubyte", "data/mnist/t10k-images-idx3-ubyte"} \
        <= want["data"]
    headline = [p for p in want["results"]
                if "/mnist-headline/runs/" in p or "/mnist-headline-orig/runs/" in p]
    runs = {Path(p).parent.name for p in headline}
    # Six runs of the paper form and six of the original-code preset, four records each.
    assert len(runs) == 12 and len(headline) == 48 and {Path(p).name for p in headline} == {
        "config.json", METRICS, KL_UNITS, EVAL}
    assert set(want["results"]) - set(headline) == {
        "results/experiments/off-switch/offswitch.json"}          # tutorial 03's records
    # What no notebook reads stays out: other evaluations, the runs' logs, other experiments.
    results = [p for p in _files(whole) if p.startswith("results/")]
    assert results and not any(p.endswith(("train.log", "status.json")) or "headbn" in p
                               or "choices" in p or ("eval-test" in p and not p.endswith(EVAL))
                               for p in results)


@needs_nbgrader
def test_the_check_fails_when_a_notebook_reads_a_file_not_shipped(whole, tmp_path):
    copy = tmp_path / "student"
    shutil.copytree(whole, copy)
    assert_ships_what_it_reads(copy)

    # A run's record removed from the release.
    record = next(p for p in sorted(copy.glob("results/**/kl_units.csv")))
    record.unlink()
    with pytest.raises(AssertionError, match="the release lacks results/"):
        assert_ships_what_it_reads(copy)
    shutil.copy2(whole / record.relative_to(copy), record)

    # A notebook that starts reading another published file.
    notebook = copy / "tutorials" / "05_latent_hierarchy.ipynb"
    nb = json.loads(notebook.read_text())
    nb["cells"].append({"cell_type": "code", "execution_count": None, "id": "extra",
                        "metadata": {}, "outputs": [], "source":
                        'split = Path("results") / "experiments" / "kl-split" '
                        '/ "choices-epoch30.json"'})
    notebook.write_text(json.dumps(nb))
    with pytest.raises(AssertionError, match="kl-split/choices-epoch30.json"):
        assert_ships_what_it_reads(copy)

    # A notebook that starts loading a dataset the release does not ship.
    nb["cells"][-1]["source"] = 'norb = data.load_dataset("norb")'
    notebook.write_text(json.dumps(nb))
    with pytest.raises(AssertionError, match="the release lacks data/norb/"):
        assert_ships_what_it_reads(copy)


@needs_nbgrader
def test_the_released_tutorials_find_mnist_and_the_runs_offline(whole, tmp_path):
    """From DIR/tutorials, with the release's lvae_np, no cache and no LVAE_NP_DATA."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("LVAE_NP_DATA", "PYTHONPATH")}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), PYTHONPATH=str(whole),
               PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    script = (
        "from pathlib import Path\n"
        "import lvae_np\n"
        "from lvae_np import data\n"
        "print(Path(lvae_np.__file__).resolve().parent)\n"
        "m = data.load_dataset('mnist', download=False, progress=False)\n"
        "print(m.train.shape, m.test.shape)\n"
        # tutorial 05's search: results/ in the notebook's folder or one above it
        "runs = Path('results') / 'experiments' / 'mnist-headline' / 'runs'\n"
        "print(next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / runs).is_dir()))\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=whole / "tutorials", env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    package, shapes, root = proc.stdout.splitlines()
    assert Path(package) == (whole / "lvae_np").resolve()
    assert shapes == "(60000, 784) (10000, 784)"
    assert Path(root) == whole.resolve()
    assert not (home / ".cache").exists()  # nothing downloaded or cached


# ----------------------------------------------------------------------------
# nbgrader_config.py
# ----------------------------------------------------------------------------
def _config_problems(text: str, folder: Path) -> list:
    """What is wrong with an nbgrader_config.py: settings nbgrader does not have, a bad timeout.

    Args:
        text: the file's text.
        folder: where to write it, to load it as nbgrader does (traitlets' loader).
    """
    from traitlets.config import Configurable
    from traitlets.config.loader import PyFileConfigLoader
    import nbgrader.coursedir
    import nbgrader.preprocessors

    (folder / "nbgrader_config.py").write_text(text)
    config = PyFileConfigLoader("nbgrader_config.py", path=str(folder)).load_config()
    classes = {name: getattr(module, name) for module in (nbgrader.preprocessors,
                                                          nbgrader.coursedir)
               for name in dir(module)}
    problems = []
    for section, values in config.items():
        cls = classes.get(section)
        if not (isinstance(cls, type) and issubclass(cls, Configurable)):
            problems.append(f"{section}: not a class of nbgrader")
            continue
        settable = cls.class_traits(config=True)
        problems += [f"{section}.{key}: not a setting" for key in values if key not in settable]
    timeout = config.get("Execute", {}).get("timeout")
    if not isinstance(timeout, int) or timeout < 120:
        problems.append(f"Execute.timeout {timeout!r}: below 120 s (the slowest cell takes 28 s)")
    return problems


@needs_nbgrader
def test_the_nbgrader_config_sets_a_timeout_nbgrader_reads(whole, tmp_path):
    text = (whole / "nbgrader_config.py").read_text()
    assert _config_problems(text, tmp_path) == []
    assert f"c.Execute.timeout = {R.NBGRADER_TIMEOUT}" in text
    # Planted faults: a misspelt option, nbconvert's class instead of nbgrader's, no timeout.
    assert _config_problems(text.replace("Execute.timeout", "Execute.timout"), tmp_path) == [
        "Execute.timout: not a setting",
        "Execute.timeout None: below 120 s (the slowest cell takes 28 s)"]
    assert "ExecutePreprocessor: not a class of nbgrader" in _config_problems(
        text.replace("c.Execute.", "c.ExecutePreprocessor."), tmp_path)
    assert len(_config_problems(text.replace(f"= {R.NBGRADER_TIMEOUT}", "= 30"), tmp_path)) == 1

    # nbgrader itself, run with the release as its course folder, reads it.
    script = ("from nbgrader.apps.baseapp import NbGrader\n"
              "from nbgrader.preprocessors import Execute\n"
              "app = NbGrader()\n"
              f"app.initialize([], root={str(whole)!r})\n"
              "print(Execute(parent=app).timeout)\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=whole, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(R.NBGRADER_TIMEOUT)]


# ----------------------------------------------------------------------------
# --assignments-only and --assignment NN
# ----------------------------------------------------------------------------
def _notebooks(tree: Path) -> list:
    return sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*.ipynb"))


@needs_nbgrader
def test_assignments_only_leaves_the_tutorials_and_their_data_out(whole, assignments_only):
    books = _notebooks(assignments_only)
    assert books == [f"assignments/{a.notebook}" for a in points.ASSIGNMENTS]
    assert books == [b for b in _notebooks(whole) if b.startswith("assignments/")]
    files = _files(assignments_only)
    assert not [p for p in files if p.startswith(("tutorials/", "data/", "results/"))]
    # The package copy and the assignments' files are the whole release's.
    same = {p: h for p, h in _files(whole).items()
            if p.startswith(("lvae_np/", "assignments/")) or p in ("pyproject.toml",
                                                                   "nbgrader_config.py")}
    assert {p: h for p, h in files.items() if p in same or p.startswith("lvae_np/")} == same
    manifest = json.loads((assignments_only / MANIFEST).read_text())
    assert manifest["files"] == {p: h for p, h in files.items() if p != MANIFEST}
    assert manifest["notebooks"] == books
    readme = (assignments_only / "README.md").read_text()
    assert "tutorials/" not in readme and "## The tutorials" not in readme
    assert_ships_what_it_reads(assignments_only)


@needs_nbgrader
def test_assignment_nn_releases_those_assignments_only(whole, weekly):
    chosen = ["assignments/02_batchnorm.ipynb", "assignments/04_ladder_step.ipynb"]
    assert _notebooks(weekly) == chosen
    files = _files(weekly)
    assert not [p for p in files if p.startswith(("tutorials/", "data/", "results/"))]
    full = _files(whole)
    for path in chosen + ["nbgrader_config.py", "pyproject.toml"]:
        assert files[path] == full[path], path
    assert {p: h for p, h in files.items() if p.startswith("lvae_np/")} == \
        {p: h for p, h in full.items() if p.startswith("lvae_np/")}  # no answers either way
    assert json.loads((weekly / MANIFEST).read_text())["notebooks"] == chosen
    readme = (weekly / "README.md").read_text()
    written = readme.split("## What to write", 1)[1].split("## Notebooks", 1)[0]
    headed = re.findall(r"^### `assignments/([^`]+)`", written, flags=re.M)
    assert headed == ["02_batchnorm.ipynb", "04_ladder_step.ipynb"]
    total = sum(a.points for a in points.ASSIGNMENTS if a.notebook in headed)
    assert f"The assignments in `assignments/`: {total} points" in written
    assert "for assignments not in this release" in written  # 01's stubs, say
    assert "`dense_backward` (01)" in written
    assert "copy the later release's" in readme


@pytest.mark.parametrize("given", ["4", "04", "04_ladder_step", "04_ladder_step.ipynb",
                                   "assignments/04_ladder_step.ipynb"])
def test_an_assignment_is_named_by_number_or_file_name(given):
    assert R.find_assignment(given) == Path("assignments/04_ladder_step.ipynb")


@pytest.mark.parametrize("options, fragments", [
    (["OUT", "--assignment", "9"], ["--assignment '9': no assignment has that number or name",
                             "01, 02, 03, 04, 05"]),
    (["OUT", "--assignment", "ladder"], ["--assignment 'ladder': no assignment"]),
    (["OUT", "--assignment", ""], ["--assignment '': no assignment"]),
    (["OUT", "--assignment", "01_ladder_inference.ipynb"], ["no assignment has that number"]),
    (["OUT", "--assignment"], ["--assignment: expected one argument", "(see --help)"]),
    (["--assignment", "04"], ["give the folder to write, DIR (or --out DIR)"]),
])
def test_a_bad_release_option_is_one_line(tmp_path, capsys, options, fragments):
    out = tmp_path / "out"
    assert main(["release", *(str(out) if o == "OUT" else o for o in options)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1, captured.err
    assert captured.err.startswith("lvae_np.course: error: ")
    for fragment in fragments:
        assert fragment in captured.err, captured.err
    assert not out.exists()


def test_dir_and_out_must_agree(tmp_path, capsys):
    assert main(["release", str(tmp_path / "a"), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "differ: give one" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_help_explains_each_option(capsys):
    with pytest.raises(SystemExit):
        main(["release", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for said in ("--assignments-only release the assignments without the tutorials",
                 "--assignment NN release only this assignment", "repeat it for several",
                 "--force replace an earlier release", "DIR the folder to write",
                 f"timeout to {R.NBGRADER_TIMEOUT} s"):
        assert said in text, said


def test_a_source_without_the_tutorials_data_is_refused_unless_they_stay_out(tmp_path):
    """A source tree without data/ cannot release the tutorials, and says why in one line."""
    source = tmp_path / "tree"
    for name in ("lvae_np", "assignments", "tutorials"):
        shutil.copytree(SOURCE / name, source / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    with pytest.raises(R.CourseError, match=r"^tutorials/01_ladder_inference\.ipynb reads "
                       r"data/README\.md, which .* lacks: .*--assignments-only\)$"):
        R.notebook_files(R.select_notebooks(source), source)
    assert R.notebook_files(R.select_notebooks(source, tutorials=False), source) == []
    assert R.notebook_files(R.select_notebooks(source, assignments=["04"]), source) == []


# ----------------------------------------------------------------------------
# The student README: how to grade yourself
# ----------------------------------------------------------------------------
def test_the_student_readme_says_how_to_grade_from_the_notebooks(tmp_path):
    text = R.readme(R.copy_package(tmp_path), [Path("tutorials/01_ladder_inference.ipynb")])
    grading = text.split("## Grade yourself", 1)[1]
    verdicts = re.findall(r"^- `([^`]+)`:", grading, flags=re.M)
    grader = set(report.RESULT.values()) | {report.BLOCKED + " ..."}
    assert verdicts and set(verdicts) == grader, set(verdicts) ^ grader  # the grader's words
    for said in ("points it earned", "feedback, not points", "stderr", "nbgrader_config.py",
                 "hidden"):
        assert said in grading, said
    tutorials = text.split("## The tutorials run on your lvae_np", 1)[1].split("##", 1)[0]
    assert "`merge_forward`" in tutorials and "(assignment 03)" in tutorials
    assert "`logmeanexp_backward`" in tutorials and "(assignment 05)" in tutorials
    assert "data/mnist/" in tutorials and "results/" in tutorials
    # Without tutorials, no word about them.
    assert "## The tutorials" not in R.readme(R.copy_package(tmp_path / "b"), [])
