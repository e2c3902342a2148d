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
  install, what to write (every function and graded cell of the assignments,
  from the course's point table, ``lvae_np.gradcheck.points``) and how to
  grade;
* ``.lvae_np-release.json``, the manifest: the package's version, the source
  tree, and every file written with its SHA-256.

``release`` never deletes what it did not make. ``out`` may not be the
source tree, lie inside it or hold it; it must be new or empty, or, with
``force``, an earlier release: then the files its manifest lists are
replaced, and only when none of them changed and nothing was added (else the
release refuses and removes nothing). The release is built in a temporary
folder beside ``out`` and moved into place only once complete, so a failure
(a notebook that is not one, nbgrader missing) leaves ``out`` as it was.

nbgrader is needed for the notebooks only (``pip install -e .[course]``);
``copy_package`` works without it.
"""
from __future__ import annotations

import importlib.metadata
import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

from ..gradcheck import points
from ..training.fileio import atomic_write, atomic_write_text
from . import markers
from .folders import (MANIFEST, NOTEBOOK_FOLDERS, CourseError, check_out, check_source,
                      earlier_release, move_into_place, private_folder_beside, read_manifest,
                      sha256, skipped)

PACKAGE = Path(__file__).resolve().parents[1]   # the lvae_np folder being released
SOURCE = PACKAGE.parent                          # the source tree around it
INSTALL_HINT = "pip install -e .[course]"


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
        if source.is_dir() or skipped(rel):
            continue
        target = Path(out) / rel
        if source.suffix == ".py":
            try:
                text = source.read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                raise CourseError(f"{rel} is not UTF-8 text (byte {exc.start})") from None
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


def read_notebook(path: Path, name: str = ""):
    """The notebook at ``path``; one-line CourseError naming ``name`` when it is not one."""
    import nbformat

    name = name or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CourseError(f"{name} is not a notebook (not UTF-8 text at byte {exc.start})") \
            from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CourseError(f"{name} is not a notebook (JSON error at line {exc.lineno} "
                          f"column {exc.colno})") from None
    if not (isinstance(data, dict) and data.get("nbformat") == 4
            and isinstance(data.get("cells"), list)):
        raise CourseError(f"{name} is not a notebook (JSON, but no nbformat 4 cells)")
    try:
        return nbformat.reads(text, as_version=nbformat.NO_CONVERT)
    except Exception as exc:  # noqa: BLE001 (nbformat's validation, turned into one line)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CourseError(f"{name} is not a valid notebook ({first})") from None


def student_notebook(path: Path, preprocessors: list, name: str = ""):
    """The notebook at ``path`` through ``preprocessors``; errors as one-line CourseError."""
    name = name or str(path)
    nb = read_notebook(path, name)
    resources = {"metadata": {"name": path.stem, "path": str(path.parent)}}
    for step in preprocessors:
        try:
            nb, resources = step.preprocess(nb, resources)
        except Exception as exc:  # noqa: BLE001 (nbgrader's errors, turned into one line)
            raise CourseError(f"{name}: nbgrader's {type(step).__name__} refused it: "
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
            if path.is_dir() or skipped(rel):
                continue
            target = Path(out) / rel
            if path.suffix == ".ipynb":
                nb = student_notebook(path, preprocessors, rel.as_posix())
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


def _version() -> str:
    try:
        return importlib.metadata.version("lvae_np")
    except importlib.metadata.PackageNotFoundError:
        return "0.1.0"


def _pyproject() -> str:
    version = _version()
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


def what_to_write(cut: dict) -> list:
    """README lines: per assignment, every function and cell to write, from the point table.

    Args:
        cut: as ``copy_package`` returns it, to say where a function's stub is.
    """
    stubs = {f"{Path(path).with_suffix('').as_posix().removeprefix('lvae_np/').replace('/', '.')}"
             f".{name}": path for path, names in cut.items() for name in names}
    assignments = points.ASSIGNMENTS
    lines = [f"The assignments in `assignments/`: {points.total()} points, "
             f"{sum(a.autograded for a in assignments)} autograded by their test cells and "
             f"{sum(a.written for a in assignments)} for written answers, graded by hand. "
             "Write each function in its answer cell, with the name and arguments given there.",
             ""]
    listed = set()
    for a in assignments:
        functions = []
        for function in a.functions:
            listed.add(function)
            where = f" (a stub in `{stubs[function]}` too)" if function in stubs else ""
            functions.append(f"`{points.function_name(function)}`{where}")
        tests = [i for i in a.items if not i.written]
        written = [i for i in a.items if i.written]
        lines += [f"### `assignments/{a.notebook}`: {a.title}, {a.points} points", "",
                  f"- functions: {', '.join(functions)}",
                  "- test cells: " + ", ".join(f"`{i.cell}` ({i.points})" for i in tests)]
        if written:
            lines.append("- written answers: "
                         + ", ".join(f"`{i.cell}` ({i.points})" for i in written))
        lines.append("")
    others = [f"`{stubs[f]}`: `{points.function_name(f)}`" for f in stubs if f not in listed]
    if others:
        lines += ["Also stubs in this copy of lvae_np, asked for by no assignment: "
                  + ", ".join(others), ""]
    return lines


def readme(cut: dict, notebooks: list) -> str:
    """The student folder's README: install, what to write, how to grade yourself."""
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
        *what_to_write(cut),
        "## Notebooks",
        "",
        *(books or ["(none in this release)"]),
        "",
        "## Grade yourself",
        "",
        "Each test cell grades your functions when you run it and prints a table: the",
        "points of the checks it names, as its first line says, and one verdict per check:",
        "passed, failed (with the argument, the relative error and where), not implemented,",
        "error, not the student's code, or blocked by the op it uses that did not pass. The",
        "checks it is built on run first, marked \"(used)\". Only your own code counts: a",
        "function imported from lvae_np, one calling it, or one defined outside the notebook",
        "earns nothing. From Python or a notebook, with your own function:",
        "",
        "```python",
        "from lvae_np.gradcheck import grade",
        'report = grade(["batchnorm"], using={"layers.batchnorm_backward": batchnorm_backward})',
        "print(report)",
        "```",
        "",
        "If you write the functions in this copy of lvae_np instead (the stubs above):",
        "",
        "```bash",
        "python -m lvae_np.gradcheck --grade             # every assigned check, with its points",
        "python -m lvae_np.gradcheck --grade batchnorm   # one check (after those it uses)",
        "```",
        "",
    ])


def _build(tmp: Path, source: Path) -> dict:
    """Write the whole release into the new folder ``tmp``, manifest last."""
    cut = copy_package(tmp, source / "lvae_np")
    notebooks = release_notebooks(tmp, source)
    atomic_write_text(tmp / "pyproject.toml", _pyproject())
    atomic_write_text(tmp / "README.md", readme(cut, notebooks))
    files = {p.relative_to(tmp).as_posix(): sha256(p)
             for p in sorted(tmp.rglob("*")) if p.is_file()}
    manifest = {"package": "lvae_np", "version": _version(), "source": str(source),
                "released": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "files": files}
    atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    return {"cut": cut, "notebooks": notebooks, "files": files}


def release(out, *, force: bool = False, source: Path = SOURCE) -> dict:
    """Write the student version into ``out`` (see the module docstring).

    Args:
        out: the folder to write: new, empty, or (with ``force``) an earlier
            release; never the source tree, in it or above it.
        force: replace the earlier release in ``out``: only the files its
            manifest lists, and only when none changed and nothing was added.
        source: the source tree holding ``lvae_np/``, ``assignments/`` and ``tutorials/``.

    Returns:
        ``{"cut": {module: [functions]}, "notebooks": [paths], "files": {path: sha256},
        "out": Path (resolved), "replaced": bool}``.

    Raises:
        CourseError: ``source`` or ``out`` is not acceptable (see above), a
            notebook is not one, or nbgrader is missing; ``out`` is unchanged.
        markers.MarkerError: the package's markers do not pair up; ``out`` is unchanged.
    """
    source = check_source(source)
    out = check_out(out, source)
    earlier_release(out, force)
    replaced = out.is_dir() and read_manifest(out) is not None
    _preprocessors()  # before writing anything: nbgrader must be there
    tmp = private_folder_beside(out)
    try:
        done = _build(tmp, source)
        old = earlier_release(out, force)  # again: nothing may have been added meanwhile
        move_into_place(tmp, out, old)
    except BaseException:
        if tmp.exists():
            shutil.rmtree(tmp)  # the folder this release made, and only it
        raise
    return {**done, "out": out, "replaced": replaced}
