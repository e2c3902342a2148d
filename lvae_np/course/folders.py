"""Where a course release may go, and what ``release --force`` may remove: the manifest.

Every release writes ``MANIFEST`` in its folder: the package's version, the
source tree, and every file written with its SHA-256. ``check_out`` keeps a
release out of the source tree (and the source tree out of it);
``earlier_release`` lets ``--force`` replace only an earlier release whose
files are unchanged and to which nothing was added; ``move_into_place``
swaps a complete release in, manifest last.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import tempfile
from pathlib import Path, PurePosixPath

from ..training.fileio import fsync_dir

NOTEBOOK_FOLDERS = ("assignments", "tutorials")
SKIP = ("__pycache__", ".ipynb_checkpoints", ".pytest_cache")
MANIFEST = ".lvae_np-release.json"   # in every release folder: what the release wrote
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class CourseError(Exception):
    """The release cannot be made; the message is one line saying why and what to do."""


def skipped(path: Path) -> bool:
    """Whether a source path is left out of a release (caches, build leftovers, bytecode)."""
    return any(part in SKIP or part.endswith(".egg-info") for part in path.parts) \
        or path.suffix in (".pyc", ".pyo")


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
    if not any(not skipped(p.relative_to(path)) for folder in NOTEBOOK_FOLDERS
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


def sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, in hex."""
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
            if regular and (_cache(rel) or (rel in files and sha256(path) == files[rel])):
                removable.append(rel)
            else:
                kept.append(rel)
        rel_root = root.relative_to(out).as_posix()
        if (empty and root != out and rel_root not in made
                and root.name != "__pycache__"):
            kept.append(rel_root + "/")
    return sorted(removable), sorted(kept)


def earlier_release(out: Path, force: bool) -> list:
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


def private_folder_beside(out: Path) -> Path:
    """A new empty folder next to ``out``, with the permissions of a plain ``mkdir``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.release-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    return tmp


def move_into_place(tmp: Path, out: Path, old: list) -> None:
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
