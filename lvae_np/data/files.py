"""Finding, downloading and verifying the data files: where to look, the mirrors, the known hashes.

Where files are looked for, in this order, each place first as
``<dir>/<dataset>/`` and then as ``<dir>/``:

1. ``data_dir`` (the command line's ``--data-dir``);
2. the directory named by the environment variable ``LVAE_NP_DATA``;
3. the repository's own ``data/`` folder (a clone ships ``data/mnist/*.gz``);
4. the cache, ``~/.cache/lvae_np`` (``$XDG_CACHE_HOME/lvae_np`` when set);
5. a download from the canonical mirrors (MNIST, smallNORB) into the cache,
   checked against its hash before it is written, atomically, into place.

A file may be gzipped or not (recognised by its first bytes); where the
content's size is known (``SIZES``) decompression stops past it, so a small
file that expands without end is refused as corrupt, not read. Every file is
checked against its known SHA-256 each time it is read: the data is read and
decompressed anyway, and hashing MNIST's 55 MB adds about 30 ms, so there is
no cache of verifications to go stale. A file that fails the check raises a
:class:`DataError` naming it and the expected hash, and is never used.
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import os
import sys
import urllib.request
import zlib
from pathlib import Path

from tqdm import tqdm

from ..training.fileio import atomic_write

ENV_VAR = "LVAE_NP_DATA"

MNIST_FILES = {"train": "train-images-idx3-ubyte", "test": "t10k-images-idx3-ubyte"}
NORB_FILES = {"train": "smallnorb-5x46789x9x18x6x2x96x96-training-dat.mat",
              "test": "smallnorb-5x01235x9x18x6x2x96x96-testing-dat.mat"}
OMNIGLOT_BURDA = "chardata.mat"
OMNIGLOT_ARRAYS = ("images_background.npz", "images_evaluation.npz")

# SHA-256 keyed by the file whose bytes it hashes: the MNIST entries hash the
# decompressed IDX files (every mirror recompresses differently), the NORB
# entries the .gz files as the NYU server distributes them (the only published
# hashes; a NORB file found already decompressed gets its header checked only).
CHECKSUMS = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    NORB_FILES["train"] + ".gz": "5ffd6272a07d32695ee1082a26a41a93a37aab8c28da047f8c34ed348d214873",
    NORB_FILES["test"] + ".gz": "cf7104eed3e51174d2f65b66d1e5878b9da233b886f161b0d88f4510ba2c7474",
}
# Sizes of the files those hashes name (the decompressed IDX files), keyed by the hash:
# decompression stops past them, so a small file that expands without end is refused
# before it fills the memory.
SIZES = {CHECKSUMS[name]: size for name, size in (
    ("train-images-idx3-ubyte", 47040016), ("t10k-images-idx3-ubyte", 7840016),
    ("train-labels-idx1-ubyte", 60008), ("t10k-labels-idx1-ubyte", 10008))}
# Omniglot arrays: SHA-256 of the ``images`` array's bytes (bool, C order), so
# that any faithful conversion passes, however the .npz file was compressed.
OMNIGLOT_IMAGES_SHA256 = {
    "images_background.npz": "97db6dcdf39955c3a949e197621f8f318092986b37e116c9b4996150e8d2d8a3",
    "images_evaluation.npz": "a76180acf0908643e1a9494a1a841d2af4bbbbdc6d7e01e0db92eed7d1c6f902",
}
# Characters in the Omniglot arrays of those hashes (each drawn by 20 people): a cache
# derived from them must hold 15 and 5 images per character.
OMNIGLOT_CHARACTERS = {OMNIGLOT_IMAGES_SHA256["images_background.npz"]: 964,
                       OMNIGLOT_IMAGES_SHA256["images_evaluation.npz"]: 659}
# Burda et al.'s file is known by its git blob id in the iwae repository.
GIT_BLOB_SHA1 = {OMNIGLOT_BURDA: "016a3536ffe5e1d38e42563a18d7a78bfaf643ec"}

MIRRORS = {
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist/",
              "https://storage.googleapis.com/cvdf-datasets/mnist/",
              "http://yann.lecun.com/exdb/mnist/"),
    "norb": ("https://cs.nyu.edu/~ylclab/data/norb-v1.0-small/",),
}

_GZIP_MAGIC = b"\x1f\x8b"


class DataError(Exception):
    """A data file is missing, corrupt or malformed. The message is one line naming the file."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).splitlines()))


# ----------------------------------------------------------------------------- finding files

def cache_dir() -> Path:
    """Downloads and derived arrays: ``$XDG_CACHE_HOME/lvae_np``, else ``~/.cache/lvae_np``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lvae_np"


def repo_data_dir() -> Path | None:
    """The ``data/`` folder of the repository this package runs from, if it has one."""
    root = Path(__file__).resolve().parents[2]  # lvae_np/data/files.py -> the repository
    if (root / "pyproject.toml").is_file() and (root / "data").is_dir():
        return root / "data"
    return None  # an installed copy: site-packages has no data folder of ours


def search_dirs(dataset: str, data_dir=None) -> list[Path]:
    """The folders looked in for ``dataset``'s files, in order (see the module docstring).

    Args:
        dataset: the subfolder looked in first in each place, e.g. ``"mnist"``.
        data_dir: a folder to look in first (``--data-dir``), or None.

    Returns:
        The folders, without repeats.

    Raises:
        DataError: ``data_dir`` or the folder named by ``ENV_VAR`` does not exist.
    """
    roots = []
    for label, root in (("--data-dir", data_dir), (ENV_VAR, os.environ.get(ENV_VAR))):
        if root:
            try:
                root = Path(root).expanduser()
            except RuntimeError:  # ~name of no user on this machine
                raise DataError(f"data directory {root} (from {label}): {str(root).split('/')[0]} "
                                "is no user's home folder here; write the folder's full "
                                "path") from None
            if not root.is_dir():
                raise DataError(f"data directory {root} (from {label}) does not exist")
            roots.append(root)
    roots += [d for d in (repo_data_dir(), cache_dir()) if d is not None]
    dirs = []
    for root in roots:
        for d in (root / dataset, root):
            if d not in dirs:
                dirs.append(d)
    return dirs


def locate(name: str, dirs) -> Path | None:
    """The first ``d / name`` or ``d / (name + ".gz")`` that is a file, for ``d`` in ``dirs``."""
    for d in dirs:
        for candidate in (d / name, d / (name + ".gz")):
            if candidate.is_file():
                return candidate
    return None


def how_to_provide(dataset: str, what: str = "the file") -> str:
    """The end of a not-found message: where to put ``what`` and how to point at it."""
    return f"put {what} in DIR/{dataset}/ and pass --data-dir DIR or set {ENV_VAR}=DIR"


def find_file(name: str, dataset: str, data_dir=None, *, download: bool = False,
              progress: bool = True) -> Path:
    """The path of file ``name`` (or ``name.gz``) of ``dataset``, downloading it if allowed.

    The file is not read here; its checksum is verified whenever it is read.

    Args:
        name: the file's name without ``.gz``, e.g. ``"train-images-idx3-ubyte"``.
        dataset: one of ``DATASETS``: the subfolder to look in and the mirrors to use.
        data_dir: a folder to look in first (``--data-dir``).
        download: when the file is found nowhere, download ``name.gz`` from
            ``MIRRORS[dataset]`` into ``cache_dir()/dataset``.
        progress: print a line per download, with a progress bar on a terminal.

    Returns:
        The file's path.

    Raises:
        DataError: one line (the file, where it was looked for, and how to
            provide it) when it cannot be found or downloaded.
    """
    dirs = search_dirs(dataset, data_dir)
    found = locate(name, dirs)
    if found is not None:
        return found
    where = ", ".join(str(d) for d in dirs)
    if not MIRRORS.get(dataset) or not download:
        why = "downloading is off" if MIRRORS.get(dataset) else "it has no download mirror"
        raise DataError(f"{name}[.gz] not found (looked in {where}) and {why}; "
                        + how_to_provide(dataset))
    return _download(name + ".gz", dataset, progress)


# ----------------------------------------------------------------------------- downloading

def open_url(url: str):
    """Open ``url`` for reading: the one network call (tests replace it; ``file://`` works)."""
    return urllib.request.urlopen(url, timeout=60)


def _fetch(url: str, out, progress: bool) -> None:
    """Copy ``url`` into the binary file object ``out``, with a progress bar on a terminal."""
    with open_url(url) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        if progress:
            print(f"lvae_np: downloading {url}", file=sys.stderr)
        done = 0
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, leave=False,
                  disable=not (progress and sys.stderr.isatty())) as bar:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                done += len(chunk)
                bar.update(len(chunk))
    if total is not None and done != total:
        raise OSError(f"incomplete download, {done} of {total} bytes")


def _download(filename: str, dataset: str, progress: bool) -> Path:
    """Download ``filename`` from the first mirror that serves it intact, into the cache.

    The download is held in memory and checked against its known hash; only
    then is it written to the cache, atomically, so nothing partial or wrong
    is ever left there.
    """
    target = cache_dir() / dataset / filename
    failures = []
    for mirror in MIRRORS[dataset]:
        url = mirror + filename
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            received = io.BytesIO()
            _fetch(url, received, progress)
            raw = received.getvalue()
            verify(raw, filename, source=url)
            atomic_write(target, lambda f: f.write(raw))  # noqa: B023 (called right here)
            return target
        except DataError as exc:
            failures.append(str(exc))
        except (OSError, http.client.HTTPException) as exc:
            failures.append(f"{url}: {type(exc).__name__}: {exc}")
    raise DataError(f"could not download {filename} ({'; '.join(failures)}); "
                    + how_to_provide(dataset))


# ----------------------------------------------------------------------------- reading and checking

def _expected(name: str) -> str:
    """``"; expected <kind> <hash>"`` for file ``name``, or "" when no hash is known."""
    base = name.removesuffix(".gz")
    for table, key, label in ((CHECKSUMS, base, "sha256"), (CHECKSUMS, base + ".gz", "sha256"),
                              (GIT_BLOB_SHA1, base, "git blob sha1")):
        if key in table:
            return f"; expected {label} {table[key]}"
    return ""


def _read_bytes(path, source: str, limit: int | None = None) -> bytes:
    """The file's bytes; with ``limit`` (the content's known size), refused when far larger."""
    try:
        if limit is not None:
            size = os.stat(path).st_size
            if size > limit + limit // 64 + (1 << 16):  # deflate's worst case stays below
                raise DataError(f"{source}: corrupt file: {size} bytes, more than any copy of "
                                f"its {limit} bytes of content can take")
        return Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"{source}: cannot be read ({exc.strerror or exc})") from None


def _gunzip(raw: bytes, source: str, expected: str = "", limit: int | None = None) -> bytes:
    """``raw`` decompressed when it starts with the gzip magic bytes, else ``raw`` itself.

    With ``limit`` (the content's known size) decompression stops after
    ``limit + 1`` bytes: gzip data that expands past it is refused as corrupt
    without being expanded in full.
    """
    if raw[:2] != _GZIP_MAGIC:
        if limit is not None and len(raw) > limit:
            raise DataError(f"{source}: corrupt file: {len(raw)} bytes, more than the {limit} "
                            f"bytes of the file it should be{expected}")
        return raw
    try:
        return gzip.decompress(raw) if limit is None else _gunzip_at_most(raw, limit, source,
                                                                          expected)
    except (EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{source}: truncated or corrupt gzip data ({exc}){expected}") from None


def _gunzip_at_most(raw: bytes, limit: int, source: str, expected: str) -> bytes:
    """The content of gzip data ``raw`` (one or more members): ``limit + 1`` bytes at most."""
    parts, size, data = [], 0, raw
    while data:
        member = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        part = member.decompress(data, limit + 1 - size)
        parts.append(part)
        size += len(part)
        if size > limit:
            raise DataError(f"{source}: corrupt file: its gzip data expands past the {limit} "
                            f"bytes of the file it should hold (decompression stopped there); "
                            f"it was not used (delete or replace it){expected}")
        if not member.eof:
            raise EOFError("compressed file ended before the end-of-stream marker was reached")
        data = member.unused_data
        if data[:2] != _GZIP_MAGIC:
            if data.strip(b"\0"):
                raise OSError("unexpected data after the gzip data")
            break
    return parts[0] if len(parts) == 1 else b"".join(parts)


def read_content(path, limit: int | None = None) -> bytes:
    """The content of the file at ``path``, decompressed when it is gzip; no checksum is checked.

    Args:
        path: the file.
        limit: the content's largest possible size in bytes, if known: a larger
            file, or gzip data that expands past it, is refused as corrupt
            (decompression stops there).

    Raises:
        DataError: the file cannot be read, its gzip data is corrupt, or it is
            larger than ``limit``.
    """
    return _gunzip(_read_bytes(path, str(path), limit), str(path), limit=limit)


def verify(raw: bytes, name: str, source: str, advice: str = "") -> bytes:
    """The content of ``raw`` (the bytes of file ``name``), checked against the known hash.

    Args:
        raw: the file's bytes, gzipped or not.
        name: the file's name; it selects the hash (``CHECKSUMS``, ``GIT_BLOB_SHA1``).
        source: what error messages call the file (its path or URL).
        advice: appended to a checksum-mismatch message.

    Returns:
        The content (``raw`` decompressed when it is gzip). A file with no
        known hash (e.g. a NORB file stored decompressed) is returned unchecked.

    Raises:
        DataError: corrupt gzip data or a checksum mismatch, naming ``source``
            and the expected hash.
    """
    expected = _expected(name)
    base = name.removesuffix(".gz")

    def check(what: str, want: str, got: str) -> None:
        if got != want:
            raise DataError(f"{source}: checksum mismatch, {what} is {got}{expected}; the file "
                            f"is corrupt or not the original and was not used{advice}")

    if base not in CHECKSUMS and base + ".gz" in CHECKSUMS and raw[:2] == _GZIP_MAGIC:
        # the gzip file's own hash (NORB's): checked before anything is decompressed
        check("sha256", CHECKSUMS[base + ".gz"], hashlib.sha256(raw).hexdigest())
        return _gunzip(raw, source, expected)
    content = _gunzip(raw, source, expected, limit=SIZES.get(CHECKSUMS.get(base)))
    if base in CHECKSUMS:
        check("sha256", CHECKSUMS[base], hashlib.sha256(content).hexdigest())
    elif base in GIT_BLOB_SHA1:
        blob = hashlib.sha1(b"blob %d\0" % len(content))
        blob.update(content)
        check("git blob sha1", GIT_BLOB_SHA1[base], blob.hexdigest())
    return content


def read_verified(path, name: str | None = None) -> bytes:
    """The content of the file at ``path``, checked against the known hash of file ``name``.

    Args:
        path: the file to read.
        name: the name that selects the hash; default the path's file name.

    Returns:
        The content, decompressed when the file is gzip.

    Raises:
        DataError: the file cannot be read, is corrupt or fails its checksum.
    """
    source, name = str(path), name or Path(path).name
    limit = SIZES.get(CHECKSUMS.get(name.removesuffix(".gz")))
    return verify(_read_bytes(path, source, limit), name, source,
                  advice=" (delete or replace it)")
