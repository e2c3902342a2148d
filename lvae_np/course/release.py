"""The student version of the course: notebooks cleared by nbgrader, a package copy without answers.

``release(out)`` writes into ``out``:

* ``assignments/*.ipynb`` and ``tutorials/*.ipynb``: the source notebooks
  through nbgrader's own preprocessors, as ``nbgrader generate_assignment``
  runs them (solution regions replaced by stubs, hidden tests removed,
  outputs cleared, grade cells locked, checksums computed); other files of
  those folders are copied, but for the instructor's notes
  (``INSTRUCTOR_ONLY``: ``assignments/README.md``). ``tutorials=False`` leaves the tutorials out
  (and what only they read), ``assignments`` releases only the assignments
  it names, without the tutorials (a weekly release); the package copy is
  the same in every case;
* the files the released notebooks read besides the package
  (``NOTEBOOK_FILES``: MNIST in ``data/``, the published runs' records in
  ``results/``), at the same place as in the source tree, where the
  notebooks find them when run from ``tutorials/``: the release runs
  offline;
* ``nbgrader_config.py``: nbgrader's cell timeout sized for the slowest
  notebook (``NBGRADER_TIMEOUT``);
* ``lvae_np/``: a copy of the package in which every solution region is cut
  (``markers.cut``): the assigned functions raise NotImplementedError and
  their docstrings keep the question but not the answer;
* ``pyproject.toml`` to install that copy, and ``README.md`` saying how to
  install, what to write (every function and graded cell of the assignments,
  from the course's point table, ``lvae_np.gradcheck.points``), how to
  grade oneself from the notebooks, and what the tutorials need written;
* ``.lvae_np-release.json``, the manifest: the package's version, the source
  tree, the notebooks released, and every file written with its SHA-256.

``release`` never deletes what it did not make. ``out`` may not be the
source tree, lie inside it or hold it; it must be new or empty, or, with
``force``, an earlier release: then the files its manifest lists are
replaced, and only when none of them changed and nothing was added (else the
release refuses and removes nothing); the new release replaces the whole
earlier one, notebooks it leaves out included. The release is built in a temporary
folder beside ``out`` and moved into place only once complete, so a failure
(a notebook that is not one, nbgrader missing, data a released notebook
reads missing from the source tree) leaves ``out`` as it was.

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

# What each notebook reads besides lvae_np: glob patterns relative to the source tree, shipped
# at the same place in the release when the notebook is released. Run from DIR/tutorials (or
# DIR/assignments), a notebook finds them there: lvae_np.data looks in the data/ folder beside
# the pyproject.toml of the lvae_np it imports (DIR's, installed with pip install -e), and
# tutorial 05 looks for results/ in its folder and every folder above. The published runs are
# shipped file by file: the four records tutorial 05 reads of each run (of the paper form's
# headline and of the original-code preset's), nothing else.
# tests/test_release_offline.py checks this table against what the notebooks' sources read.
MNIST = ("data/README.md", "data/mnist/*.gz")     # the loader's files, and where they come from
HEADLINES = ("results/experiments/mnist-headline/runs/*/",
             "results/experiments/mnist-headline-orig/runs/*/")
RUN_RECORDS = ("config.json", "metrics.csv", "kl_units.csv",
               "eval-test-k5000-subset1000-seed0.json")   # the evaluation: L_5000 per image
NOTEBOOK_FILES = {
    "tutorials/01_ladder_inference.ipynb": MNIST,
    "tutorials/03_training_warmup_batchnorm.ipynb": MNIST + (
        "results/experiments/off-switch/offswitch.json",),
    "tutorials/05_latent_hierarchy.ipynb": MNIST + tuple(
        runs + name for runs in HEADLINES for name in RUN_RECORDS),
}

# Files of the notebook folders that stay with the instructor: the assignments' README describes
# the source notebooks (their answers, their hidden checks, how to grade); the release's own
# README.md tells the students what they need.
INSTRUCTOR_ONLY = {Path("assignments") / "README.md"}

# nbgrader's limit on one cell's run time (nbgrader's default, 30 s, is too short: autograding
# tutorial 03 stopped at CellTimeoutError). The slowest cell of the notebooks, tutorial 03's
# training of four models, took 28 s on 2 cores kept busy by two other trainings (tutorial 05:
# 27 s, 01: 16 s, every other cell under 9 s); 300 s leaves ten times that for a slower or
# busier grading machine, and still stops a cell that never ends within five minutes.
NBGRADER_TIMEOUT = 300


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


def _notebooks(source: Path, folder: str) -> list:
    """The notebooks of ``source / folder``, relative to ``source``, sorted."""
    return [p.relative_to(source) for p in sorted((source / folder).rglob("*.ipynb"))
            if not skipped(p.relative_to(source))]


def find_assignment(name: str, source: Path = SOURCE) -> Path:
    """The assignment notebook that ``--assignment name`` means, relative to ``source``.

    Args:
        name: its number (``04`` or ``4``, the file name's leading digits), its
            file name (``04_ladder_step.ipynb``, the ``.ipynb`` optional), or
            that name under ``assignments/``.

    Raises:
        CourseError: no assignment, or more than one, has that number or name.
    """
    books = _notebooks(Path(source), "assignments")
    given = str(name).strip()
    key = given.removeprefix("assignments/").removesuffix(".ipynb")
    if key.isdigit():
        found = [b for b in books if b.stem.split("_")[0].isdigit()
                 and int(b.stem.split("_")[0]) == int(key)]
    else:
        found = [b for b in books if b.stem == key]
    if len(found) != 1:
        numbers = ", ".join(b.stem.split("_")[0] for b in books)
        example = books[0].name if books else "NN_name.ipynb"
        what = "more than one assignment has" if found else "no assignment has"
        raise CourseError(f"--assignment {given!r}: {what} that number or name in "
                          f"assignments/; give one of {numbers} (or a file name such as "
                          f"{example})")
    return found[0]


def select_notebooks(source: Path = SOURCE, *, tutorials: bool = True,
                     assignments=None) -> list:
    """The notebooks a release writes, relative to ``source``: assignments first, then tutorials.

    Args:
        source: the source tree.
        tutorials: release the tutorials too.
        assignments: None for every assignment; else the names ``find_assignment``
            takes, and then no tutorial whatever ``tutorials`` says (a weekly release).

    Raises:
        CourseError: a name of ``assignments`` is no assignment's, or none is given.
    """
    source = Path(source)
    if assignments is None:
        chosen = _notebooks(source, "assignments")
    else:
        if not list(assignments):
            raise CourseError("--assignment: no assignment named; give a number such as 04 "
                              "or a file name in assignments/")
        found = [find_assignment(name, source) for name in assignments]
        chosen = sorted(set(found))
        tutorials = False
    return chosen + (_notebooks(source, "tutorials") if tutorials else [])


def release_notebooks(out: Path, source: Path = SOURCE, notebooks=None) -> list:
    """Write the student notebooks and the other files of their folders; their paths.

    Args:
        out: the release folder.
        source: the source tree.
        notebooks: the notebooks to write, relative to ``source`` (``select_notebooks``);
            None for every notebook of ``NOTEBOOK_FOLDERS``. The other files of a
            folder (its README, scripts, figures) come along with any of its notebooks.
    """
    import nbformat

    source = Path(source)
    if notebooks is None:
        notebooks = select_notebooks(source)
    chosen = {Path(p) for p in notebooks}
    folders = [f for f in NOTEBOOK_FOLDERS if any(p.parts[0] == f for p in chosen)]
    preprocessors = _preprocessors()
    written = []
    for folder in folders:
        for path in sorted((source / folder).rglob("*")):
            rel = path.relative_to(source)
            if (path.is_dir() or skipped(rel) or rel in INSTRUCTOR_ONLY
                    or (path.suffix == ".ipynb" and rel not in chosen)):
                continue
            target = Path(out) / rel
            if path.suffix == ".ipynb":
                nb = student_notebook(path, preprocessors, rel.as_posix())
                atomic_write_text(target, nbformat.writes(nb) + "\n")
            else:
                _copy_file(path, target)
            written.append(rel)
    return written


def notebook_files(notebooks, source: Path = SOURCE) -> list:
    """What ``notebooks`` read besides lvae_np (``NOTEBOOK_FILES``): paths relative to ``source``.

    Raises:
        CourseError: a pattern of a released notebook matches no file of ``source``
            (a source tree without its data/ or results/).
    """
    source = Path(source)
    found = set()
    for notebook in notebooks:
        for pattern in NOTEBOOK_FILES.get(Path(notebook).as_posix(), ()):
            files = [p.relative_to(source) for p in source.glob(pattern)
                     if p.is_file() and not skipped(p.relative_to(source))]
            if not files:
                raise CourseError(f"{Path(notebook).as_posix()} reads {pattern}, which {source} "
                                  "lacks: release from a clone of the repository (it has data/ "
                                  "and results/), or leave the tutorials out (--assignments-only)")
            found.update(files)
    return sorted(found)


def nbgrader_config() -> str:
    """The release's ``nbgrader_config.py``: nbgrader's cell timeout (``NBGRADER_TIMEOUT``)."""
    return f'''"""nbgrader's settings for this course.

nbgrader reads this file when it runs in this folder (nbgrader validate) or in
an nbgrader course folder it is copied to (nbgrader autograde): copy it there,
or add its lines to the course's own nbgrader_config.py.
"""
c = get_config()  # noqa: F821 (defined by the loader of nbgrader's configuration)

# The longest a cell may run before nbgrader stops it (CellTimeoutError, no points for it and
# errors in the cells after it). nbgrader's default, 30 s, is too short: the slowest cell, the
# training of four models in tutorial 03, took 28 s on 2 busy cores.
# {NBGRADER_TIMEOUT} s leaves ten times that for a slower or busier grading machine.
c.Execute.timeout = {NBGRADER_TIMEOUT}
'''


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


def _released(notebooks) -> tuple:
    """The point table's assignments among ``notebooks`` (None: every assignment)."""
    if notebooks is None:
        return points.ASSIGNMENTS
    names = {Path(p).name for p in notebooks if Path(p).parts[0] == "assignments"}
    return tuple(a for a in points.ASSIGNMENTS if a.notebook in names)


def _number(a) -> str:
    """An assignment's number, as its file name starts (``04``)."""
    return a.notebook.split("_")[0]


def what_to_write(cut: dict, assignments=None) -> list:
    """README lines: per assignment, every function and cell to write, from the point table.

    Args:
        cut: as ``copy_package`` returns it, to say where a function's stub is.
        assignments: the point table's assignments in the release (default: all).
    """
    stubs = {f"{Path(path).with_suffix('').as_posix().removeprefix('lvae_np/').replace('/', '.')}"
             f".{name}": path for path, names in cut.items() for name in names}
    if assignments is None:
        assignments = points.ASSIGNMENTS
    if not assignments:
        return ["No assignment in this release.", ""]
    lines = [f"The assignments in `assignments/`: {sum(a.points for a in assignments)} points, "
             f"{sum(a.autograded for a in assignments)} autograded by their test cells and "
             f"{sum(a.written for a in assignments)} for written answers, graded by hand. "
             "Write each function in its answer cell, with the name and arguments given there.",
             ""]
    for a in assignments:
        functions = []
        for function in a.functions:
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
    listed = {f for a in assignments for f in a.functions}
    elsewhere = {f: a for a in points.ASSIGNMENTS if a not in assignments for f in a.functions}
    later = [f"`{stubs[f]}`: `{points.function_name(f)}` ({_number(elsewhere[f])})"
             for f in stubs if f in elsewhere and f not in listed]
    others = [f"`{stubs[f]}`: `{points.function_name(f)}`" for f in stubs
              if f not in listed and f not in elsewhere]
    if later:
        lines += ["Also stubs in this copy of lvae_np, for assignments not in this release "
                  "(their number in brackets): " + ", ".join(later), ""]
    if others:
        lines += ["Also stubs in this copy of lvae_np, asked for by no assignment: "
                  + ", ".join(others), ""]
    return lines


# What a tutorial's cell calls of the assigned functions, by what it does.
RUNS_A_MODEL = ("gaussian.merge_forward", "gaussian.kl_normal_forward")
TRAINS_A_MODEL = ("layers.dense_backward", "layers.leaky_relu_backward",
                  "layers.batchnorm_backward", *RUNS_A_MODEL, "gaussian.merge_backward",
                  "gaussian.kl_normal_backward", "gaussian.reparameterize_forward",
                  "gaussian.reparameterize_backward", "steps.ladder_step_backward")
WEIGHS_SAMPLES = ("bounds.logmeanexp_forward", "bounds.logmeanexp_backward")


def _assigned_in(functions) -> str:
    """The assignments asking for any of ``functions``: "assignment 03", "assignments 01 and 04"."""
    numbers = sorted({_number(a) for a in points.ASSIGNMENTS for f in a.functions
                      if f in functions})
    if not numbers:
        return ""
    return ("assignment " if len(numbers) == 1 else "assignments ") \
        + " and ".join(", ".join(numbers).rsplit(", ", 1))


def _tutorial_lines(notebooks) -> list:
    """README lines: the tutorials run on this copy of lvae_np, so on the student's functions."""
    if not any(Path(p).parts[0] == "tutorials" for p in notebooks):
        return []
    uses, before = [], ()
    for what, functions in (("a cell that runs a ladder model forward", RUNS_A_MODEL),
                            ("a cell that trains a model or takes its gradients",
                             TRAINS_A_MODEL),
                            ("a cell that estimates log p(x) by importance weighting",
                             WEIGHS_SAMPLES)):
        if _assigned_in(functions):
            new = [f"`{points.function_name(f)}`" for f in functions if f not in before]
            also = "those and " if set(before) & set(functions) else ""
            uses.append(f"- {what}: {also}{', '.join(new)} ({_assigned_in(functions)});")
            before = functions
    if uses:
        uses[-1] = uses[-1][:-1] + "."
    return [
        "## The tutorials run on your lvae_np",
        "",
        "The tutorials import this folder's `lvae_np`, so their cells call the functions you",
        "write" + (":" if uses else "."),
        "",
        *uses,
        "",
        "Until a function is written, a cell that needs it stops with `NotImplementedError`",
        "naming it: work through a tutorial after the assignments it relies on. The MNIST",
        "files (`data/mnist/`) and the published runs' records that the tutorials read",
        "(`results/`) are in this folder: nothing is downloaded. Run the notebooks from their",
        "own folder, with this folder's `lvae_np` installed as above (`pip install -e`): it",
        "finds `data/` beside it.",
        "",
    ]


def _weekly_lines(assignments) -> list:
    """README lines for a release of some of the assignments: keep your folder, add the next."""
    if assignments is None or len(assignments) == len(points.ASSIGNMENTS):
        return []
    return ["This release holds some of the course's assignments. A later release holds the",
            "same copy of lvae_np: keep working in this folder, and copy the later release's",
            "new notebooks into it, so that the functions you wrote in lvae_np stay.", ""]


def readme(cut: dict, notebooks: list, assignments=None) -> str:
    """The student folder's README: install, what to write, how to grade yourself.

    Args:
        cut: as ``copy_package`` returns it.
        notebooks: the released notebooks (and other files), relative to the release.
        assignments: the point table's assignments in the release (default: all).
    """
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
        *what_to_write(cut, assignments),
        *_weekly_lines(assignments),
        "## Notebooks",
        "",
        *(books or ["(none in this release)"]),
        "",
        *_tutorial_lines(notebooks),
        "## Grade yourself",
        "",
        "Write a function in its answer cell, run that cell, then run the test cell below it.",
        "A test cell grades your own functions and prints a table: its first line says the",
        "points at stake, then one row per check with its verdict:",
        "",
        "- `passed`: the gradient agrees with finite differences (and every other check of",
        "  the contract holds);",
        "- `FAILED`: the row names the wrong argument, its largest relative error and where;",
        "- `not implemented yet`: the function still raises `NotImplementedError`;",
        "- `ERROR`: it raised another exception (the message is shown);",
        "- `not the student's code`: a function imported from lvae_np, one calling it, or one",
        "  defined outside the notebook earns nothing;",
        "- `blocked by ...`: not run, because a check it is built on did not pass; fix that",
        "  one first.",
        "",
        "A test cell that checks several things ends with the points it earned, as a number",
        "(nbgrader's partial credit); a cell with one check earns its points when it runs",
        "without an error. The test cell that runs a whole three-layer LVAE on your functions",
        "in assignment 04 is feedback, not points: it tells you whether your functions work",
        "together. Some checks are hidden: they run only when the course grades the notebook,",
        "so a test cell that passes here can still lose points there. A test cell that writes",
        "anything to stderr (an error, a warning) scores 0 when graded: that is nbgrader's rule.",
        "",
        "From Python or a notebook, with your own function:",
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
        "`nbgrader validate NOTEBOOK` (with nbgrader installed) runs a notebook as the grading",
        "does, with this folder's `nbgrader_config.py`.",
        "",
    ])


def _build(tmp: Path, source: Path, chosen: list, support: list) -> dict:
    """Write the whole release into the new folder ``tmp``, manifest last.

    Args:
        tmp: the new, empty folder.
        source: the source tree.
        chosen: the notebooks to release (``select_notebooks``).
        support: the files they read (``notebook_files``), relative to ``source``.
    """
    cut = copy_package(tmp, source / "lvae_np")
    notebooks = release_notebooks(tmp, source, chosen)
    for rel in support:
        _copy_file(source / rel, tmp / rel)
    assignments = _released(chosen)
    atomic_write_text(tmp / "pyproject.toml", _pyproject())
    atomic_write_text(tmp / "nbgrader_config.py", nbgrader_config())
    atomic_write_text(tmp / "README.md", readme(cut, notebooks, assignments))
    files = {p.relative_to(tmp).as_posix(): sha256(p)
             for p in sorted(tmp.rglob("*")) if p.is_file()}
    manifest = {"package": "lvae_np", "version": _version(), "source": str(source),
                "released": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "notebooks": [p.as_posix() for p in chosen], "files": files}
    atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    return {"cut": cut, "notebooks": notebooks, "data": support, "files": files}


def release(out, *, force: bool = False, source: Path = SOURCE, tutorials: bool = True,
            assignments=None) -> dict:
    """Write the student version into ``out`` (see the module docstring).

    Args:
        out: the folder to write: new, empty, or (with ``force``) an earlier
            release; never the source tree, in it or above it.
        force: replace the earlier release in ``out``: only the files its
            manifest lists, and only when none changed and nothing was added.
        source: the source tree holding ``lvae_np/``, ``assignments/`` and ``tutorials/``.
        tutorials: release the tutorials (and what only they read); False for
            the assignments alone.
        assignments: None for every assignment; else the assignments to release
            (numbers such as ``"04"`` or file names, see ``find_assignment``),
            and no tutorial.

    Returns:
        ``{"cut": {module: [functions]}, "notebooks": [paths of the notebook
        folders' files], "data": [paths of the files they read], "files": {path: sha256},
        "out": Path (resolved), "replaced": bool}``.

    Raises:
        CourseError: ``source`` or ``out`` is not acceptable (see above), an
            assignment named is none, a released notebook's data is missing
            from ``source``, a notebook is not one, or nbgrader is missing;
            ``out`` is unchanged.
        markers.MarkerError: the package's markers do not pair up; ``out`` is unchanged.
    """
    source = check_source(source)
    chosen = select_notebooks(source, tutorials=tutorials, assignments=assignments)
    support = notebook_files(chosen, source)
    out = check_out(out, source)
    earlier_release(out, force)
    replaced = out.is_dir() and read_manifest(out) is not None
    _preprocessors()  # before writing anything: nbgrader must be there
    tmp = private_folder_beside(out)
    try:
        done = _build(tmp, source, chosen, support)
        old = earlier_release(out, force)  # again: nothing may have been added meanwhile
        move_into_place(tmp, out, old)
    except BaseException:
        if tmp.exists():
            shutil.rmtree(tmp)  # the folder this release made, and only it
        raise
    return {**done, "out": out, "replaced": replaced}
