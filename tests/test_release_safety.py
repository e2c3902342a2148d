"""``python -m lvae_np.course release`` never deletes what it did not make.

Every test runs the command line on a copy of the source tree in tmp_path
(``PYTHONPATH`` points at the copy, so the command's default ``--source`` is
the copy, as in a clone), never on the repository itself. The refusals need
no nbgrader; the tests that write a release skip without it.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lvae_np.course import markers
from lvae_np.course.release import MANIFEST, SOURCE

from conftest import HAVE_NBGRADER, needs_nbgrader  # noqa: E402,F401

# What a clone holds that a release reads: the package, the notebooks, and the data and
# published runs the tutorials read (release.NOTEBOOK_FILES; the rest of results/ is not needed).
PARTS = ("lvae_np", "assignments", "tutorials", "README.md", "pyproject.toml", "data/mnist",
         "data/README.md", "results/experiments/mnist-headline/runs",
         "results/experiments/mnist-headline-orig/runs",
         "results/experiments/off-switch/offswitch.json")
IGNORE = shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints", ".pytest_cache",
                                "*.egg-info", "*.pyc")
BAD = "tutorials/03_training_warmup_batchnorm.ipynb"


def _copy_tree(target: Path) -> Path:
    """A clone-like copy of the source tree at ``target``: the package, notebooks, a .git."""
    target.mkdir(parents=True)
    for name in PARTS:
        source = SOURCE / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=IGNORE)
        else:
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    (target / ".git").mkdir()
    (target / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    return target


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return _copy_tree(tmp_path_factory.mktemp("pristine") / "tree")


@pytest.fixture
def clone(tmp_path, pristine) -> Path:
    """A fresh copy of the source tree, named like the package (as a clone of it would be)."""
    target = tmp_path / "lvae_np"
    shutil.copytree(pristine, target)
    return target


@pytest.fixture(scope="module")
def first_release(tmp_path_factory, pristine) -> Path:
    """An earlier release of the pristine copy, made through the command line."""
    if not HAVE_NBGRADER:
        pytest.skip("nbgrader is not installed (pip install -e .[course])")
    out = tmp_path_factory.mktemp("first") / "student"
    proc = _release(["--out", str(out)], pristine, cwd=pristine)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture
def earlier(tmp_path, first_release) -> Path:
    """A copy of the earlier release, to replace or to refuse to."""
    out = tmp_path / "student"
    shutil.copytree(first_release, out)
    return out


def _release(args, tree: Path, cwd: Path):
    """``python -m lvae_np.course release ARGS`` with ``tree``'s package first on the path."""
    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE="1",
               OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "lvae_np.course", "release", *args],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


def _snapshot(folder: Path) -> dict:
    """Every entry under ``folder`` (caches aside): a file's SHA-256, "dir", or a link's target."""
    found = {}
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in dirs + files:
            path = Path(root) / name
            rel = path.relative_to(folder).as_posix()
            if path.is_symlink():
                found[rel] = "-> " + os.readlink(path)
            elif path.is_dir():
                found[rel] = "dir"
            else:
                found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def _one_line_error(proc, *fragments):
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stderr.startswith("lvae_np.course: error: ") and proc.stderr.count("\n") == 1, \
        proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr, proc.stderr
    assert proc.stdout == ""


# ----------------------------------------------------------------------------
# 1, 2, 4: --out that is the source tree, above it or inside it
# ----------------------------------------------------------------------------
def test_out_dot_in_a_clone_is_refused_and_nothing_is_deleted(clone):
    before = _snapshot(clone)
    proc = _release(["--out", ".", "--force"], clone, cwd=clone)
    _one_line_error(proc, "--out . is the source tree", "choose a folder outside it")
    assert _snapshot(clone) == before


def test_out_above_a_clone_named_like_the_package_is_refused(clone):
    (clone.parent / "mine.txt").write_text("a file next to the clone\n")
    before = _snapshot(clone.parent)
    proc = _release(["--out", "..", "--force"], clone, cwd=clone)
    _one_line_error(proc, "--out .. holds the source tree")
    assert _snapshot(clone.parent) == before
    assert (clone / ".git" / "HEAD").is_file()

    proc = _release(["--out", "..", "--force"], clone, cwd=clone / "lvae_np")  # the package's
    _one_line_error(proc, "--out .. is the source tree")
    assert _snapshot(clone.parent) == before


def test_out_inside_the_source_tree_is_refused(clone, tmp_path):
    before = _snapshot(clone)
    proc = _release(["--out", "tutorials/student"], clone, cwd=clone)
    _one_line_error(proc, "--out tutorials/student is inside the source tree")
    assert _snapshot(clone) == before and not (clone / "tutorials" / "student").exists()

    (tmp_path / "link").symlink_to(clone)  # through a symlink, resolved
    for out in (tmp_path / "link", tmp_path / "link" / "assignments" / "student"):
        proc = _release(["--out", str(out), "--force"], clone, cwd=tmp_path)
        _one_line_error(proc, "the source tree")
    (tmp_path / "to-tutorials").symlink_to(clone / "tutorials")
    proc = _release(["--out", str(tmp_path / "to-tutorials"), "--force"], clone, cwd=tmp_path)
    _one_line_error(proc, "is inside the source tree")
    assert _snapshot(clone) == before


# ----------------------------------------------------------------------------
# 3: --force removes only an earlier release's unchanged files
# ----------------------------------------------------------------------------
def test_force_refuses_a_folder_no_release_made(clone, tmp_path):
    out = tmp_path / "course"
    (out / "tutorials").mkdir(parents=True)
    (out / "tutorials" / "notes.md").write_text("my notes\n")
    (out / "lvae_np").mkdir()
    before = _snapshot(out)
    proc = _release(["--out", str(out), "--force"], clone, cwd=tmp_path)
    _one_line_error(proc, "not a release folder", str(out), MANIFEST)
    assert _snapshot(out) == before

    proc = _release(["--out", str(out)], clone, cwd=tmp_path)
    _one_line_error(proc, "is not empty", "--force")
    assert _snapshot(out) == before


@needs_nbgrader
def test_force_keeps_a_user_file_in_a_released_folder_and_refuses(clone, earlier):
    (earlier / "tutorials" / "notes.md").write_text("my notes\n")
    before = _snapshot(earlier)
    proc = _release(["--out", str(earlier), "--force"], clone, cwd=clone.parent)
    _one_line_error(proc, "1 file changed or added since the release",
                    "(first: tutorials/notes.md)", "nothing was removed")
    assert _snapshot(earlier) == before

    (earlier / "assignments" / "02_batchnorm.ipynb").write_text("{}")  # a changed file too
    (earlier / "extra").mkdir()                                         # and an empty folder
    before = _snapshot(earlier)
    proc = _release(["--out", str(earlier), "--force"], clone, cwd=clone.parent)
    _one_line_error(proc, "3 files changed or added", "(first: assignments/02_batchnorm.ipynb)")
    assert _snapshot(earlier) == before


@needs_nbgrader
def test_without_force_an_earlier_release_is_kept(clone, earlier):
    before = _snapshot(earlier)
    proc = _release(["--out", str(earlier)], clone, cwd=clone.parent)
    _one_line_error(proc, "is not empty", "earlier release", "--force")
    assert _snapshot(earlier) == before


@needs_nbgrader
def test_force_replaces_an_unchanged_release_and_its_bytecode(clone, earlier):
    cache = earlier / "lvae_np" / "__pycache__"
    cache.mkdir()
    (cache / "layers.cpython-312.pyc").write_bytes(b"\x00bytecode")
    (clone / "tutorials" / "README.md").write_text("new text\n")  # the source moved on
    proc = _release(["--out", str(earlier), "--force"], clone, cwd=clone.parent)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"replaced the release in {earlier.resolve()}: ")
    assert (earlier / "tutorials" / "README.md").read_text() == "new text\n"
    assert not cache.exists()
    manifest = json.loads((earlier / MANIFEST).read_text())
    files = {p: h for p, h in _snapshot(earlier).items() if p != MANIFEST and h != "dir"}
    assert manifest["files"] == files
    assert [p.name for p in earlier.parent.iterdir() if p.name.startswith(".")] == []


# ----------------------------------------------------------------------------
# 4 (counts), manifest, and the success line
# ----------------------------------------------------------------------------
@needs_nbgrader
def test_a_release_writes_a_manifest_and_tells_the_true_counts(pristine, first_release):
    books = {f: sorted(p.name for p in (pristine / f).glob("*.ipynb"))
             for f in ("assignments", "tutorials")}
    assert len(books["assignments"]) == len(books["tutorials"]) == 5
    manifest = json.loads((first_release / MANIFEST).read_text())
    files = {p: h for p, h in _snapshot(first_release).items() if p != MANIFEST}
    assert manifest["source"] == str(pristine.resolve()) and manifest["package"] == "lvae_np"
    assert manifest["version"]
    assert manifest["files"] == {p: h for p, h in files.items() if h != "dir"}
    released = sorted(p for p in manifest["files"] if p.endswith(".ipynb"))
    assert released == sorted(f"{f}/{n}" for f, names in books.items() for n in names)

    read = [p for p in manifest["files"] if p.startswith(("data/", "results/"))]
    assert read and manifest["notebooks"] == released

    out = first_release.parent / "again"
    proc = _release(["--out", str(out)], pristine, cwd=pristine.parent)
    assert proc.returncode == 0, proc.stderr
    assert (f"10 notebooks (5 in assignments/, 5 in tutorials/), {len(read)} data files they "
            f"read, {len(manifest['files'])} files") in proc.stdout
    stubs = sum(len(markers.marked_functions(p.read_text(), str(p)))
                for p in (pristine / "lvae_np").rglob("*.py")
                if markers.BEGIN in p.read_text())
    assert stubs >= 10
    assert proc.stdout.startswith(f"wrote {out.resolve()}: lvae_np with {stubs} functions to "
                                  "write")


# ----------------------------------------------------------------------------
# 5: a --source that is not an lvae_np source tree
# ----------------------------------------------------------------------------
def test_a_source_that_is_not_a_source_tree_is_refused(clone, tmp_path):
    out = tmp_path / "out"
    proc = _release(["--out", str(out), "--source", str(tmp_path / "nonexistent")], clone,
                    cwd=tmp_path)
    _one_line_error(proc, f"--source {tmp_path / 'nonexistent'}: no such folder")
    assert not out.exists()

    (tmp_path / "empty").mkdir()
    proc = _release(["--out", str(out), "--source", str(tmp_path / "empty")], clone, cwd=tmp_path)
    _one_line_error(proc, "is not an lvae_np source tree", "lvae_np/__init__.py")
    assert not out.exists()

    for folder in ("assignments", "tutorials"):
        shutil.rmtree(clone / folder)
    proc = _release(["--out", str(out), "--source", str(clone)], clone, cwd=tmp_path)
    _one_line_error(proc, "is not an lvae_np source tree", "no notebook")
    assert not out.exists()


# ----------------------------------------------------------------------------
# 6: a notebook that is not one
# ----------------------------------------------------------------------------
@needs_nbgrader
def test_a_corrupt_notebook_is_one_line_and_leaves_an_earlier_release_intact(clone, earlier):
    (clone / BAD).write_text("this is not JSON\n")
    before = _snapshot(earlier)
    proc = _release(["--out", str(earlier), "--force"], clone, cwd=clone.parent)
    _one_line_error(proc)
    assert proc.stderr == (f"lvae_np.course: error: {BAD} is not a notebook "
                           "(JSON error at line 1 column 1)\n")
    assert _snapshot(earlier) == before
    assert sorted(p.name for p in earlier.parent.iterdir()) == ["lvae_np", "student"]  # no temp

    out = earlier.parent / "new"
    proc = _release(["--out", str(out)], clone, cwd=clone.parent)
    _one_line_error(proc, f"{BAD} is not a notebook")
    assert not out.exists()

    (clone / BAD).write_text('{"cells": []}')  # JSON, not a notebook
    proc = _release(["--out", str(out)], clone, cwd=clone.parent)
    _one_line_error(proc, f"{BAD} is not a notebook (JSON, but no nbformat 4 cells)")
    assert not out.exists()


def test_a_marked_module_that_is_not_python_is_one_line():
    from lvae_np.course import markers

    broken = "def f(x:\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION\n"
    with pytest.raises(markers.MarkerError, match=r"^lvae_np/bad\.py:1: not valid Python") as err:
        markers.cut(broken, "lvae_np/bad.py")
    assert "\n" not in str(err.value)
