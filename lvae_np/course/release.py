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
  install, work and grade;
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

import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import stat
import tempfile
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from ..fileio import atomic_write, atomic_write_text, fsync_dir
from . import markers

PACKAGE = Path(__file__).resolve().parents[1]   # the lvae_np folder being released
SOURCE = PACKAGE.parent                          # the source tree around it
NOTEBOOK_FOLDERS = ("assignments", "tutorials")
SKIP = ("__pycache__", ".ipynb_checkpoints", ".pytest_cache")
INSTALL_HINT = "pip install -e .[course]"
MANIFEST = ".lvae_np-release.json"   # in every release folder: what the release wrote
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


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
            if path.is_dir() or _skipped(rel):
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


# ----------------------------------------------------------------------------
# Where a release may go, and what a --force may remove
# ----------------------------------------------------------------------------
def check_source(source) -> Path:
    """``source`` resolved, when it is an lvae_np source tree (the package and notebooks).

    Raises:
        CourseError: it does not exist, is not a folder, or lacks ``lvae_np/__init__.py``
            or any notebook in ``assignments/`` and ``tutorials/``.
    """
    given = Path(source)
    path = given.resolve()
    if not path.exists():
        raise CourseError(f"--source {given}: no such folder")
    if not path.is_dir():
        raise CourseError(f"--source {given} is a file: it must be the lvae_np source tree "
                          "(the folder with lvae_np/, assignments/ and tutorials/)")
    if not (path / "lvae_np" / "__init__.py").is_file():
        raise CourseError(f"--source {given} is not an lvae_np source tree: it has no "
                          "lvae_np/__init__.py")
    if not any(not _skipped(p.relative_to(path)) for folder in NOTEBOOK_FOLDERS
               for p in (path / folder).rglob("*.ipynb")):
        raise CourseError(f"--source {given} is not an lvae_np source tree: no notebook in "
                          f"{' or '.join(f + '/' for f in NOTEBOOK_FOLDERS)}")
    return path


def _same(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` are the same folder (by path, or by device and inode)."""
    if a == b:
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_out(out, source: Path) -> Path:
    """``out`` resolved (symlinks too), when it is neither the source tree, in it, nor above it.

    Raises:
        CourseError: ``out`` is a file, or overlaps the (resolved) ``source``.
    """
    given = Path(out)
    path = given.resolve()
    if path.exists() and not path.is_dir():
        raise CourseError(f"--out {given} is a file: it must be a folder")
    if any(_same(p, source) for p in (path, *path.parents)):
        where = "is the source tree" if _same(path, source) else "is inside the source tree"
        raise CourseError(f"--out {given} {where} ({source}): choose a folder outside it")
    if any(_same(path, p) for p in source.parents):
        raise CourseError(f"--out {given} holds the source tree ({source}): choose a folder "
                          "outside it")
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(out: Path):
    """The manifest of the release in ``out``; None when ``out`` has none.

    Raises:
        CourseError: the manifest is there but not one a release wrote.
    """
    path = out / MANIFEST
    if not path.exists() and not path.is_symlink():
        return None
    try:
        if path.is_symlink() or not path.is_file():
            raise ValueError("not a plain file")
        data = json.loads(path.read_text(encoding="utf-8"))
        files = data["files"]
        if not isinstance(files, dict):
            raise ValueError("'files' is not a mapping")
        for rel, digest in files.items():
            parts = PurePosixPath(rel).parts
            if (not isinstance(digest, str) or not _SHA256.match(digest) or not parts
                    or PurePosixPath(rel).is_absolute() or ".." in parts or rel == MANIFEST
                    or "\\" in rel):
                raise ValueError(f"bad entry {rel!r}")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CourseError(f"not a release folder: {path} is not a release manifest "
                          f"({' '.join(str(exc).split())})") from None
    return data


def _cache(rel: str) -> bool:
    """Python's bytecode cache of a released module: rebuilt on import, so removable."""
    parts = PurePosixPath(rel).parts
    return len(parts) >= 2 and parts[-2] == "__pycache__" and parts[-1].endswith(".pyc")


def scan(out: Path, files: dict) -> tuple:
    """What is in ``out`` besides the manifest: (removable, kept), paths relative to ``out``.

    Removable: the regular files the manifest lists with their content unchanged,
    and Python's ``__pycache__/*.pyc``. Kept: everything else (a file changed,
    added or replaced by a link, an empty folder no release made), sorted.
    """
    removable, kept = [], []
    made = {str(p) for rel in files for p in PurePosixPath(rel).parents}
    for root, dirs, names in os.walk(out):
        root = Path(root)
        empty = not dirs and not names
        for name in sorted(dirs):
            if (root / name).is_symlink():
                kept.append((root / name).relative_to(out).as_posix())
                dirs.remove(name)  # never followed
        for name in names:
            path = root / name
            rel = path.relative_to(out).as_posix()
            if rel == MANIFEST:
                continue
            regular = stat.S_ISREG(os.lstat(path).st_mode)
            if regular and (_cache(rel) or (rel in files and _sha256(path) == files[rel])):
                removable.append(rel)
            else:
                kept.append(rel)
        rel_root = root.relative_to(out).as_posix()
        if (empty and root != out and rel_root not in made
                and root.name != "__pycache__"):
            kept.append(rel_root + "/")
    return sorted(removable), sorted(kept)


def _earlier_release(out: Path, force: bool) -> list:
    """The files of the earlier release in ``out`` that ``force`` may replace ([] if none).

    Raises:
        CourseError: ``out`` is not empty and ``force`` is off, is not a release
            folder, or holds files changed or added since the release.
    """
    if not out.exists() or not any(out.iterdir()):
        return []
    manifest = read_manifest(out)
    if not force:
        if manifest is None:
            raise CourseError(f"{out} is not empty and no release wrote it: choose an empty "
                              "or new folder (--force replaces only an earlier release)")
        raise CourseError(f"{out} is not empty: it holds an earlier release; add --force to "
                          "replace it, or choose an empty folder")
    if manifest is None:
        raise CourseError(f"not a release folder: {out} is not empty and has no {MANIFEST}; "
                          "--force replaces only an earlier release: choose an empty or new "
                          "folder")
    removable, kept = scan(out, manifest["files"])
    if kept:
        many = len(kept) > 1
        raise CourseError(f"{out}: {len(kept)} file{'s' if many else ''} changed or added since "
                          f"the release (first: {kept[0]}); nothing was removed: move "
                          f"{'them' if many else 'it'} out of that folder, or choose another "
                          "--out")
    return removable


def _private_folder_beside(out: Path) -> Path:
    """A new empty folder next to ``out``, with the permissions of a plain ``mkdir``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.release-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    return tmp


def _move_into_place(tmp: Path, out: Path, old: list) -> None:
    """Replace the files ``old`` of ``out`` (if any) by the complete release in ``tmp``."""
    if not out.exists():
        os.rename(tmp, out)
        fsync_dir(out.parent)
        return
    for rel in old:
        (out / rel).unlink(missing_ok=True)
    for root, _, _ in sorted(os.walk(out), key=lambda w: -len(Path(w[0]).parts)):
        if Path(root) != out:
            try:
                os.rmdir(root)  # only ever an empty folder
            except OSError:
                pass
    for entry in sorted(tmp.iterdir()):
        if entry.name == MANIFEST:
            continue
        target = out / entry.name
        if target.exists() or target.is_symlink():
            raise CourseError(f"{target} appeared while the release was moved into place: "
                              "the release is incomplete; run it again")
        os.rename(entry, target)
    os.replace(tmp / MANIFEST, out / MANIFEST)  # last: the manifest says the release is whole
    tmp.rmdir()
    fsync_dir(out)


def _build(tmp: Path, source: Path) -> dict:
    """Write the whole release into the new folder ``tmp``, manifest last."""
    cut = copy_package(tmp, source / "lvae_np")
    notebooks = release_notebooks(tmp, source)
    atomic_write_text(tmp / "pyproject.toml", _pyproject())
    atomic_write_text(tmp / "README.md", readme(cut, notebooks))
    files = {p.relative_to(tmp).as_posix(): _sha256(p)
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
    _earlier_release(out, force)
    replaced = out.is_dir() and read_manifest(out) is not None
    _preprocessors()  # before writing anything: nbgrader must be there
    tmp = _private_folder_beside(out)
    try:
        done = _build(tmp, source)
        old = _earlier_release(out, force)  # again: nothing may have been added meanwhile
        _move_into_place(tmp, out, old)
    except BaseException:
        if tmp.exists():
            shutil.rmtree(tmp)  # the folder this release made, and only it
        raise
    return {**done, "out": out, "replaced": replaced}
