"""The student version of the course: notebooks cleared by nbgrader, a package copy without answers.

``release(out)`` writes into ``out``:

* ``assignments/*.ipynb`` and ``tutorials/*.ipynb``: the source notebooks
  through nbgrader's own preprocessors, as ``nbgrader generate_assignment``
  runs them (solution regions replaced by stubs, hidden tests removed,
  outputs cleared, grade cells locked, checksums computed); other files of
  those folders are copied;
* ``lvae_np/``: a copy of the package in which every solution region is cut
  (``markers.cut``): the assigned functions raise NotImplementedError and
  their docstrings keep the question but not the answer;
* ``pyproject.toml`` to install that copy, and ``README.md`` saying how to
  install, work and grade.

nbgrader is needed for the notebooks only (``pip install -e .[course]``);
``copy_package`` works without it.
"""
from __future__ import annotations

import importlib.metadata
import shutil
from pathlib import Path

from ..fileio import atomic_write, atomic_write_text
from . import markers

PACKAGE = Path(__file__).resolve().parents[1]   # the lvae_np folder being released
SOURCE = PACKAGE.parent                          # the source tree around it
NOTEBOOK_FOLDERS = ("assignments", "tutorials")
SKIP = ("__pycache__", ".ipynb_checkpoints", ".pytest_cache")
INSTALL_HINT = "pip install -e .[course]"


class CourseError(Exception):
    """The release cannot be made; the message is one line saying why and what to do."""


def _skipped(path: Path) -> bool:
    return any(part in SKIP or part.endswith(".egg-info") for part in path.parts) \
        or path.suffix in (".pyc", ".pyo")


def _copy_file(source: Path, target: Path) -> None:
    data = source.read_bytes()
    atomic_write(target, lambda f: f.write(data))


def copy_package(out: Path, package: Path = PACKAGE) -> dict:
    """Write the student copy of ``package`` to ``out / "lvae_np"``.

    Returns:
        ``{"module.py path": [cut function names]}`` for every module with a
        solution region (paths relative to the package's parent).

    Raises:
        markers.MarkerError: markers that do not pair up, or a cut that does not parse.
    """
    cut = {}
    for source in sorted(package.rglob("*")):
        rel = source.relative_to(package.parent)
        if source.is_dir() or _skipped(rel):
            continue
        target = Path(out) / rel
        if source.suffix == ".py":
            text = source.read_text(encoding="utf-8")
            student = markers.cut(text, str(rel))
            if student != text:
                cut[str(rel)] = markers.marked_functions(text, str(rel))
            atomic_write_text(target, student)
        else:
            _copy_file(source, target)
    return cut


def _preprocessors() -> list:
    """nbgrader's preprocessors of ``generate_assignment``, less those that need its database."""
    try:
        from nbgrader.preprocessors import (
            CheckCellMetadata,
            ClearHiddenTests,
            ClearMarkScheme,
            ClearOutput,
            ClearSolutions,
            ComputeChecksums,
            LockCells,
        )
    except ImportError:
        raise CourseError(f"the notebooks need nbgrader, which is not installed: "
                          f"{INSTALL_HINT}") from None
    return [LockCells(), ClearSolutions(), ClearOutput(), CheckCellMetadata(),
            ComputeChecksums(), ClearHiddenTests(), ClearMarkScheme(), ComputeChecksums(),
            CheckCellMetadata()]


def student_notebook(path: Path, preprocessors: list):
    """The notebook at ``path`` through ``preprocessors``; errors as one-line CourseError."""
    import nbformat

    nb = nbformat.read(str(path), as_version=nbformat.NO_CONVERT)
    resources = {"metadata": {"name": path.stem, "path": str(path.parent)}}
    for step in preprocessors:
        try:
            nb, resources = step.preprocess(nb, resources)
        except Exception as exc:  # noqa: BLE001 (nbgrader's errors, turned into one line)
            raise CourseError(f"{path}: nbgrader's {type(step).__name__} refused it: "
                              f"{' '.join(str(exc).split())}") from None
    return nb


def release_notebooks(out: Path, source: Path = SOURCE) -> list:
    """Write the student notebooks (and the other files) of ``NOTEBOOK_FOLDERS``; their paths."""
    import nbformat

    preprocessors = _preprocessors()
    written = []
    for folder in NOTEBOOK_FOLDERS:
        for path in sorted((Path(source) / folder).rglob("*")):
            rel = path.relative_to(source)
            if path.is_dir() or _skipped(rel):
                continue
            target = Path(out) / rel
            if path.suffix == ".ipynb":
                nb = student_notebook(path, preprocessors)
                atomic_write_text(target, nbformat.writes(nb) + "\n")
            else:
                _copy_file(path, target)
            written.append(rel)
    return written


def _requirements() -> list:
    """The package's own dependencies (no extras), for the student copy's pyproject.toml."""
    try:
        found = importlib.metadata.requires("lvae_np") or []
    except importlib.metadata.PackageNotFoundError:
        found = []
    return [r for r in found if "extra ==" not in r] or ["numpy>=2.0"]


def _pyproject() -> str:
    try:
        version = importlib.metadata.version("lvae_np")
    except importlib.metadata.PackageNotFoundError:
        version = "0.1.0"
    deps = ", ".join(f'"{r}"' for r in _requirements())
    return f"""[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "lvae_np"
version = "{version}"
description = "lvae_np, student version: the assigned functions are yours to write"
requires-python = ">=3.10"
dependencies = [{deps}]

[project.optional-dependencies]
notebooks = ["jupyterlab>=4"]

[tool.setuptools.packages.find]
include = ["lvae_np*"]
"""


def readme(cut: dict, notebooks: list) -> str:
    """The student folder's README: install, what to write, how to grade yourself."""
    functions = [f"- `{path}`: {', '.join(f'`{name}`' for name in names)}"
                 for path, names in cut.items()]
    books = [f"- `{rel}`" for rel in notebooks if str(rel).endswith(".ipynb")]
    return "\n".join([
        "# lvae_np: student version",
        "",
        "A copy of lvae_np in which the functions you are asked to write raise",
        "`NotImplementedError` (look for `# YOUR CODE HERE`), with the course's notebooks.",
        "",
        "## Install",
        "",
        "```bash",
        "python -m venv .venv && . .venv/bin/activate",
        "pip install -e '.[notebooks]'   # this folder's lvae_np, and JupyterLab",
        "jupyter lab                     # then open the notebooks below",
        "```",
        "",
        "## What to write",
        "",
        *functions,
        "",
        "## Notebooks",
        "",
        *(books or ["(none in this release)"]),
        "",
        "## Grade yourself",
        "",
        "```bash",
        "python -m lvae_np.gradcheck --grade             # every op, composite and model",
        "python -m lvae_np.gradcheck --grade batchnorm   # one op (with the ops it uses)",
        "```",
        "",
        "Each case gets points, and one verdict: passed, failed (with the argument,",
        "the relative error and where), not implemented, error, or blocked by the op it",
        "uses that did not pass. From Python or a notebook, with your own function:",
        "",
        "```python",
        "from lvae_np.gradcheck import grade",
        'report = grade(["batchnorm"], using={"layers.batchnorm_backward": batchnorm_backward})',
        "print(report)",
        "```",
        "",
    ])


def release(out, *, force: bool = False, source: Path = SOURCE) -> dict:
    """Write the student version into ``out`` (see the module docstring).

    Args:
        out: the folder to write; it must be empty or missing unless ``force``.
        force: write into a non-empty ``out``, replacing what a release writes there.
        source: the source tree holding ``assignments/`` and ``tutorials/``.

    Returns:
        ``{"cut": {module: [functions]}, "notebooks": [paths], "out": Path}``.

    Raises:
        CourseError: ``out`` is a file or not empty, or nbgrader is missing.
        markers.MarkerError: the package's markers do not pair up.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CourseError(f"{out} is a file: --out must be a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise CourseError(f"{out} is not empty: choose an empty folder, or add --force to "
                          "write into it")
    _preprocessors()  # before writing anything: nbgrader must be there
    for name in ("lvae_np",) + NOTEBOOK_FOLDERS:
        if (out / name).is_dir():
            shutil.rmtree(out / name)  # a previous release's, with --force
    cut = copy_package(out)
    notebooks = release_notebooks(out, source)
    atomic_write_text(out / "pyproject.toml", _pyproject())
    atomic_write_text(out / "README.md", readme(cut, notebooks))
    return {"cut": cut, "notebooks": notebooks, "out": out}
