"""Datasets: MNIST, OMNIGLOT, smallNORB and a small synthetic set.

``load_dataset(name)`` returns a :class:`Dataset`: training images as grey
levels in [0, 1] (Bernoulli data is binarised afresh every epoch by the
training loop, with :func:`binarize`), and a test set that, for Bernoulli
data, is binarised here once with a fixed seed, so every run scores the same
binary images.

Where files are looked for, in this order, each place first as
``<dir>/<dataset>/`` and then as ``<dir>/``:

1. ``data_dir`` (the command line's ``--data-dir``);
2. the directory named by the environment variable ``LVAE_NP_DATA``;
3. the repository's own ``data/`` folder (a clone ships ``data/mnist/*.gz``);
4. the cache, ``~/.cache/lvae_np`` (``$XDG_CACHE_HOME/lvae_np`` when set);
5. a download from the canonical mirrors (MNIST, smallNORB) into the cache,
   written to a temporary file and renamed only once its checksum is right.

A file may be gzipped or not (recognised by its first bytes). Every file is
checked against its known SHA-256 each time it is read: the data is read and
decompressed anyway, and hashing MNIST's 55 MB adds about 30 ms, so there is
no cache of verifications to go stale. A file that fails the check raises a
:class:`DataError` naming it and the expected hash, and is never used.

OMNIGLOT has no download mirror. Burda et al.'s ``chardata.mat`` (the set of
the IWAE and Ladder VAE papers) is used when found, read by the small MATLAB v5
reader below, so SciPy is not needed. Otherwise the 105x105 Omniglot arrays
are resized to 28x28 once and the result cached (see ``_load_omniglot``).
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import math
import os
import sys
import tempfile
import urllib.request
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy
from tqdm import tqdm

DATASETS = ("mnist", "omniglot", "norb", "synthetic")
ENV_VAR = "LVAE_NP_DATA"

TEST_BINARIZATION_SEED = 0   # the Bernoulli test sets are binarised once, with this seed
VALID_BINARIZATION_SEED = 1  # and the validation sets with this one
NORB_TEST_NOISE_SEED = 2     # the dequantisation noise of the NORB test set

MNIST_FILES = {"train": "train-images-idx3-ubyte", "test": "t10k-images-idx3-ubyte"}
NORB_FILES = {"train": "smallnorb-5x46789x9x18x6x2x96x96-training-dat.mat",
              "test": "smallnorb-5x01235x9x18x6x2x96x96-testing-dat.mat"}
OMNIGLOT_ARRAYS = ("images_background.npz", "images_evaluation.npz")
OMNIGLOT_BURDA = "chardata.mat"
OMNIGLOT_BURDA_URL = "https://github.com/yburda/iwae/raw/master/datasets/OMNIGLOT/chardata.mat"
OMNIGLOT_TRAIN_DRAWERS = 15  # drawers 1-15 of every character train, 16-20 test
OMNIGLOT_CACHE = "omniglot-28x28-area-15-5.npz"
SYNTHETIC_SIDE, SYNTHETIC_TRAIN, SYNTHETIC_TEST = 8, 1000, 200

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
# Omniglot arrays: SHA-256 of the ``images`` array's bytes (bool, C order), so
# that any faithful conversion passes, however the .npz file was compressed.
OMNIGLOT_IMAGES_SHA256 = {
    "images_background.npz": "97db6dcdf39955c3a949e197621f8f318092986b37e116c9b4996150e8d2d8a3",
    "images_evaluation.npz": "a76180acf0908643e1a9494a1a841d2af4bbbbdc6d7e01e0db92eed7d1c6f902",
}
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


@dataclass
class Dataset:
    """A dataset ready for training.

    Attributes
    ----------
    name : one of ``DATASETS``.
    train : (N, D) float32 grey levels in [0, 1].
    test : (M, D) float32; binarised once (``TEST_BINARIZATION_SEED``) for Bernoulli data.
    valid : (V, D) float32 held out from the training set, or None; binarised
        once (``VALID_BINARIZATION_SEED``) for Bernoulli data, grey otherwise.
    likelihood : "bernoulli" or "gaussian".
    image_shape : (height, width) of one image, for plotting.
    variant : one line saying exactly which data this is and where it came from.
    """

    name: str
    train: numpy.ndarray
    test: numpy.ndarray
    valid: numpy.ndarray | None
    likelihood: str
    image_shape: tuple
    variant: str

    @property
    def dynamic_binarization(self) -> bool:
        """True when the training loop should binarise ``train`` afresh every epoch."""
        return self.likelihood == "bernoulli"


def binarize(x: numpy.ndarray, rng: numpy.random.Generator) -> numpy.ndarray:
    """One Bernoulli sample per pixel with probability ``x``, as float32 zeros and ones."""
    return (rng.random(x.shape, dtype=numpy.float32) < x).astype(numpy.float32)


# ----------------------------------------------------------------------------- finding files

def cache_dir() -> Path:
    """Downloads and derived arrays: ``$XDG_CACHE_HOME/lvae_np``, else ``~/.cache/lvae_np``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lvae_np"


def _repo_data_dir() -> Path | None:
    """The ``data/`` folder of the repository this package runs from, if it has one."""
    root = Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file() and (root / "data").is_dir():
        return root / "data"
    return None  # an installed copy: site-packages has no data folder of ours


def search_dirs(dataset: str, data_dir=None) -> list[Path]:
    """The folders looked in for ``dataset``'s files, in order (see the module docstring)."""
    roots = []
    for label, root in (("--data-dir", data_dir), (ENV_VAR, os.environ.get(ENV_VAR))):
        if root:
            root = Path(root).expanduser()
            if not root.is_dir():
                raise DataError(f"data directory {root} (from {label}) does not exist")
            roots.append(root)
    roots += [d for d in (_repo_data_dir(), cache_dir()) if d is not None]
    dirs = []
    for root in roots:
        for d in (root / dataset, root):
            if d not in dirs:
                dirs.append(d)
    return dirs


def _locate(name: str, dirs) -> Path | None:
    for d in dirs:
        for candidate in (d / name, d / (name + ".gz")):
            if candidate.is_file():
                return candidate
    return None


def _how_to_provide(dataset: str, what: str = "the file") -> str:
    return f"put {what} in DIR/{dataset}/ and pass --data-dir DIR or set {ENV_VAR}=DIR"


def find_file(name: str, dataset: str, data_dir=None, *, download: bool = False,
              progress: bool = True) -> Path:
    """The path of file ``name`` (or ``name.gz``) of ``dataset``, downloading it if allowed.

    Parameters
    ----------
    name : the file's name without ``.gz``, e.g. ``"train-images-idx3-ubyte"``.
    dataset : one of ``DATASETS``: the subfolder to look in and the mirrors to use.
    data_dir : a folder to look in first (``--data-dir``).
    download : when the file is found nowhere, download ``name.gz`` from
        ``MIRRORS[dataset]`` into ``cache_dir()/dataset``.
    progress : print a line per download, with a progress bar on a terminal.

    The file is not read here; its checksum is verified whenever it is read.
    Raises DataError (one line: the file, where it was looked for, and how
    to provide it) when it cannot be found or downloaded.
    """
    dirs = search_dirs(dataset, data_dir)
    found = _locate(name, dirs)
    if found is not None:
        return found
    where = ", ".join(str(d) for d in dirs)
    if not MIRRORS.get(dataset) or not download:
        why = "downloading is off" if MIRRORS.get(dataset) else "it has no download mirror"
        raise DataError(f"{name}[.gz] not found (looked in {where}) and {why}; "
                        + _how_to_provide(dataset))
    return _download(name + ".gz", dataset, progress)


def _urlopen(url: str):
    """Open ``url`` for reading (a seam for tests; ``file://`` URLs work too)."""
    return urllib.request.urlopen(url, timeout=60)


def _fetch(url: str, out, progress: bool) -> None:
    """Copy ``url`` into the open file ``out``, with a progress bar on a terminal."""
    with _urlopen(url) as response:
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
    """Download ``filename`` from the first mirror that serves it intact, into the cache."""
    target_dir = cache_dir() / dataset
    failures = []
    for mirror in MIRRORS[dataset]:
        url, tmp = mirror + filename, None
        try:
            target_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{filename}.", suffix=".part", dir=target_dir)
            with os.fdopen(fd, "wb") as out:
                _fetch(url, out, progress)
            _read_verified(tmp, name=filename, source=url)
            os.replace(tmp, target_dir / filename)
            return target_dir / filename
        except DataError as exc:
            failures.append(str(exc))
        except (OSError, http.client.HTTPException) as exc:
            failures.append(f"{url}: {type(exc).__name__}: {exc}")
        finally:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)  # never leave a partial file behind
    raise DataError(f"could not download {filename} ({'; '.join(failures)}); "
                    + _how_to_provide(dataset))


# ----------------------------------------------------------------------------- reading files

def _expected(name: str) -> str:
    base = name.removesuffix(".gz")
    for table, key, label in ((CHECKSUMS, base, "sha256"), (CHECKSUMS, base + ".gz", "sha256"),
                              (GIT_BLOB_SHA1, base, "git blob sha1")):
        if key in table:
            return f"; expected {label} {table[key]}"
    return ""


def _read_content(path, source: str, expected: str = "") -> tuple[bytes, bytes]:
    """The file's raw bytes and its content (decompressed when the raw bytes are gzip)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"{source}: cannot be read ({exc.strerror or exc})") from None
    if raw[:2] != _GZIP_MAGIC:
        return raw, raw
    try:
        return raw, gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{source}: truncated or corrupt gzip data ({exc}){expected}") from None


def _read_verified(path, name: str | None = None, source: str | None = None) -> bytes:
    """The content of ``path``, checked against the known hash of file ``name``.

    ``name`` (default: the path's file name) selects the checksum; ``source``
    (default: the path) is what error messages call the file.
    """
    name = name or Path(path).name
    advice = " (delete or replace it)" if source is None else ""
    source = source or str(path)
    expected = _expected(name)
    raw, content = _read_content(path, source, expected)
    base = name.removesuffix(".gz")
    if base in CHECKSUMS:
        what, want, got = "sha256", CHECKSUMS[base], hashlib.sha256(content).hexdigest()
    elif raw is not content and base + ".gz" in CHECKSUMS:
        what, want, got = "sha256", CHECKSUMS[base + ".gz"], hashlib.sha256(raw).hexdigest()
    elif base in GIT_BLOB_SHA1:
        blob = hashlib.sha1(b"blob %d\0" % len(content))
        blob.update(content)
        what, want, got = "git blob sha1", GIT_BLOB_SHA1[base], blob.hexdigest()
    else:
        return content  # no published hash (e.g. a NORB file stored decompressed)
    if got != want:
        raise DataError(f"{source}: checksum mismatch, {what} is {got}{expected}; the file is "
                        f"corrupt or not the original and was not used{advice}")
    return content


_IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_NORB_DTYPES = {0x1E3D4C51: "<f4", 0x1E3D4C53: "<f8", 0x1E3D4C54: "<i4",
                0x1E3D4C55: "u1", 0x1E3D4C56: "<i2"}  # 507333716 = int32, 507333717 = uint8


def _array(content: bytes, dtype: str, dims: tuple, offset: int, source: str, kind: str):
    """The array of ``dims`` after a header of ``offset`` bytes, checking the length."""
    dtype = numpy.dtype(dtype)
    need, have = math.prod(dims) * dtype.itemsize, len(content) - offset
    if have != need:
        raise DataError(f"{source}: truncated or corrupt {kind} file (its header says "
                        f"{dims} {dtype.name}, {need} bytes of data; found {have})")
    return numpy.frombuffer(content, dtype, offset=offset).reshape(dims).astype(
        dtype.newbyteorder("="), copy=False)


def _parse_idx(content: bytes, source: str) -> numpy.ndarray:
    if len(content) < 4 or content[:2] != b"\0\0":
        raise DataError(f"{source}: not an IDX file (magic bytes {content[:4].hex() or 'missing'})")
    code, ndim = content[2], content[3]
    if code not in _IDX_DTYPES or ndim == 0:
        raise DataError(f"{source}: bad IDX header (type code 0x{code:02x}, {ndim} dimensions)")
    if len(content) < 4 + 4 * ndim:
        raise DataError(f"{source}: truncated IDX file (header cut short)")
    dims = tuple(int(d) for d in numpy.frombuffer(content, ">u4", ndim, 4))
    return _array(content, _IDX_DTYPES[code], dims, 4 + 4 * ndim, source, "IDX")


def _parse_norb(content: bytes, source: str) -> numpy.ndarray:
    if len(content) < 8:
        raise DataError(f"{source}: truncated smallNORB file (header cut short)")
    magic, ndim = (int(v) for v in numpy.frombuffer(content, "<i4", 2))
    if magic not in _NORB_DTYPES or not 0 < ndim < 64:
        raise DataError(f"{source}: not a smallNORB matrix file (magic {magic}, {ndim} dimensions)")
    offset = 8 + 4 * max(3, ndim)  # at least three dimensions are always stored
    if len(content) < offset:
        raise DataError(f"{source}: truncated smallNORB file (header cut short)")
    dims = tuple(int(d) for d in numpy.frombuffer(content, "<i4", ndim, 8))
    if min(dims) < 0:
        raise DataError(f"{source}: bad smallNORB header (dimensions {dims})")
    return _array(content, _NORB_DTYPES[magic], dims, offset, source, "smallNORB")


def read_idx(path) -> numpy.ndarray:
    """The array in an IDX file (MNIST's format), gzipped or not; no checksum is checked.

    Raises DataError naming the file for a wrong magic number or data type
    code, or when the data does not have the length the header gives. The
    result may be read-only (a view on the file's bytes).
    """
    return _parse_idx(_read_content(path, str(path))[1], str(path))


def read_norb(path) -> numpy.ndarray:
    """The array in a smallNORB matrix file (``*-dat.mat``, ``*-cat.mat``), gzipped or not.

    Little-endian: an int32 magic (507333717 uint8, 507333716 int32, and the
    float32 / float64 / int16 codes of the NORB format), int32 ndim, max(3,
    ndim) int32 dimensions, then the data. No checksum is checked. The result
    may be read-only.
    """
    return _parse_norb(_read_content(path, str(path))[1], str(path))


_MAT_TYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8",
              12: "i8", 13: "u8"}
_MAT_CLASSES = {6: "f8", 7: "f4", 8: "i1", 9: "u1", 10: "i2", 11: "u2", 12: "i4",
                13: "u4", 14: "i8", 15: "u8"}


def _mat_elements(buf: bytes, order: str):
    """(type, bytes) of each data element in ``buf``, small (4-byte) elements included."""
    pos = 0
    while pos + 8 <= len(buf):
        kind, size = (int(v) for v in numpy.frombuffer(buf, order + "u4", 2, pos))
        if kind >> 16:  # small element: size and type share the tag, data in the next 4 bytes
            yield kind & 0xFFFF, buf[pos + 4:pos + 4 + (kind >> 16)]
            pos += 8
        else:
            if pos + 8 + size > len(buf):
                raise ValueError("data element runs past the end")
            yield kind, buf[pos + 8:pos + 8 + size]
            pos += 8 + size + (-size % 8 if kind != 15 else 0)


def _parse_mat(content: bytes, source: str) -> dict:
    """The real numeric matrices of a MATLAB v5/v7 .mat file (zlib-compressed or not).

    Enough of the MAT-file format for ``chardata.mat``; cells, structs,
    strings, sparse and complex arrays are skipped. Matrices keep MATLAB's
    shape (column-major data, so ``data[:, k]`` is column ``k``).
    """
    if content[:10] == b"MATLAB 7.3":
        raise DataError(f"{source}: MATLAB v7.3 (HDF5) files are not supported; save it with -v7")
    order = {b"IM": "<", b"MI": ">"}.get(content[126:128])
    if len(content) < 128 or order is None:
        raise DataError(f"{source}: not a MATLAB v5 .mat file")
    matrices = {}
    try:
        for kind, body in _mat_elements(content[128:], order):
            if kind == 15:  # miCOMPRESSED: a zlib stream holding one element
                kind, body = next(_mat_elements(zlib.decompress(body), order))
            parts = list(_mat_elements(body, order)) if kind == 14 else []
            if len(parts) < 4:
                continue
            flags = int(numpy.frombuffer(parts[0][1], order + "u4", 1)[0])
            if flags & 0x800 or (flags & 0xFF) not in _MAT_CLASSES:
                continue  # complex, or not a numeric array
            dims = tuple(int(d) for d in numpy.frombuffer(parts[1][1], order + "i4"))
            values = numpy.frombuffer(parts[3][1], order + _MAT_TYPES[parts[3][0]])
            matrices[parts[2][1].decode("latin-1")] = values.reshape(dims, order="F").astype(
                _MAT_CLASSES[flags & 0xFF])
    except (ValueError, KeyError, StopIteration, zlib.error) as exc:
        raise DataError(f"{source}: truncated or corrupt .mat file ({exc})") from None
    return matrices


# ----------------------------------------------------------------------------- the datasets

def area_resize_matrix(n_in: int, n_out: int) -> numpy.ndarray:
    """The (n_out, n_in) matrix A that resizes by area averaging: ``A @ image @ A.T``.

    Output pixel i covers input interval [i s, (i + 1) s), s = n_in / n_out;
    ``A[i, j]`` is the length of its overlap with input pixel [j, j + 1),
    divided by s. Rows sum to one; for s = 3 (96 -> 32) it is exact 3x3 block
    averaging, for s = 3.75 (105 -> 28) pixels on a boundary count in part.
    """
    scale = n_in / n_out
    lo = numpy.arange(n_out)[:, None] * scale
    j = numpy.arange(n_in)[None, :]
    overlap = numpy.minimum(lo + scale, j + 1) - numpy.maximum(lo, j)
    return numpy.clip(overlap, 0, None) / scale


def resize_images(images: numpy.ndarray, size: int, chunk: int = 2048) -> numpy.ndarray:
    """(n, h, w) images -> (n, size, size) float32 by area averaging, a chunk at a time."""
    n, h, w = images.shape
    rows = area_resize_matrix(h, size).astype(numpy.float32)
    cols_t = area_resize_matrix(w, size).T.astype(numpy.float32)
    out = numpy.empty((n, size, size), numpy.float32)
    for s in range(0, n, chunk):
        x = images[s:s + chunk].astype(numpy.float32)
        out[s:s + chunk] = rows @ (x.reshape(-1, w) @ cols_t).reshape(len(x), h, size)
    return out


def _check_values(x: numpy.ndarray, where: str) -> None:
    if not numpy.isfinite(x).all():
        raise DataError(f"{where} contains NaN or inf values")
    if x.size and (x.min() < 0 or x.max() > 1):
        raise DataError(f"{where} has values outside [0, 1]")


def _load_mnist(data_dir, download, progress, rng):
    paths, parts = {}, {}
    for part, name in MNIST_FILES.items():
        path = paths[part] = find_file(name, "mnist", data_dir, download=download,
                                       progress=progress)
        images = _parse_idx(_read_verified(path, name), str(path))
        if images.dtype != numpy.uint8 or images.shape[1:] != (28, 28):
            raise DataError(f"{path}: expected 28x28 uint8 images, "
                            f"found {images.dtype} {images.shape}")
        parts[part] = images.reshape(len(images), 784) / numpy.float32(255)
    where = {str(p.parent) for p in paths.values()}
    return parts["train"], parts["test"], (
        f"MNIST (LeCun, Cortes and Burges), files from {' and '.join(sorted(where))}")


def _load_norb(data_dir, download, progress, rng):
    """smallNORB: left image of each stereo pair, 3x3 block means (96 -> 32), dequantised."""
    parts, where = {}, set()
    for part, name in NORB_FILES.items():
        path = find_file(name, "norb", data_dir, download=download, progress=progress)
        pairs = _parse_norb(_read_verified(path, name), str(path))
        if pairs.dtype != numpy.uint8 or pairs.ndim != 4 or pairs.shape[1:] != (2, 96, 96):
            raise DataError(f"{path}: expected (n, 2, 96, 96) uint8 image pairs, "
                            f"found {pairs.dtype} {pairs.shape}")
        levels = numpy.rint(resize_images(pairs[:, 0], 32)).reshape(len(pairs), 1024)
        noise_rng = rng if part == "train" else numpy.random.default_rng(NORB_TEST_NOISE_SEED)
        parts[part] = (levels + noise_rng.random(levels.shape, dtype=numpy.float32)) / 256
        where.add(str(path.parent))
    return parts["train"], parts["test"], (
        "smallNORB (LeCun et al.), left camera image of each pair, 3x3 block means to 32x32, "
        f"dequantised with U(0,1) noise, /256, files from {' and '.join(sorted(where))}")


def _load_chardata(path):
    mats = _parse_mat(_read_verified(path, OMNIGLOT_BURDA), str(path))
    parts = []
    for key in ("data", "testdata"):
        m = mats.get(key)
        if m is None or m.ndim != 2 or m.shape[0] != 784:
            raise DataError(f"{path}: expected a 784 x N matrix {key!r}, found "
                            f"{'none' if m is None else m.shape}")
        # columns are images flattened column-major: transpose each image back
        parts.append(m.T.reshape(-1, 28, 28).transpose(0, 2, 1).reshape(-1, 784)
                     .astype(numpy.float32))
    return parts


def _build_omniglot(paths):
    """Ink = 1 - image, area-averaged 105 -> 28; drawers 1-15 train, 16-20 test."""
    train, test = [], []
    for path in paths:
        try:
            with numpy.load(io.BytesIO(_read_content(path, str(path))[1])) as npz:
                images = npz["images"]
        except (OSError, ValueError, KeyError) as exc:
            raise DataError(f"{path}: not an .npz file with an 'images' array ({exc})") from None
        want = OMNIGLOT_IMAGES_SHA256[path.name.removesuffix(".gz")]
        if images.dtype != bool or images.shape[1:] != (20, 105, 105):
            raise DataError(f"{path}: expected bool images (characters, 20, 105, 105), "
                            f"found {images.dtype} {images.shape}")
        got = hashlib.sha256(numpy.ascontiguousarray(images).data).hexdigest()
        if got != want:
            raise DataError(f"{path}: checksum mismatch, sha256 of its images array is {got}; "
                            f"expected sha256 {want}; the file was not used")
        ink = resize_images(~images.reshape(-1, 105, 105), 28).reshape(len(images), 20, 784)
        numpy.clip(ink, 0, 1, out=ink)  # float32 sums of ones can round to 1 + 1e-7
        train.append(ink[:, :OMNIGLOT_TRAIN_DRAWERS].reshape(-1, 784))
        test.append(ink[:, OMNIGLOT_TRAIN_DRAWERS:].reshape(-1, 784))
    return numpy.concatenate(train), numpy.concatenate(test)


def _save_npz_atomic(path: Path, **arrays) -> None:
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            numpy.savez_compressed(f, **arrays)
        os.replace(tmp, path)
    except OSError as exc:
        warnings.warn(f"could not cache {path}: {exc}", stacklevel=3)
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _load_omniglot(data_dir, download, progress, rng):
    """Burda et al.'s chardata.mat if present, else the 105x105 arrays resized (cached).

    chardata.mat holds 784 x N matrices ``data`` and ``testdata``, each column
    an image flattened column-major. The arrays route inverts the images (ink
    = 1 - image, ``True`` being background), resizes 105 -> 28 by exact area
    averaging (``area_resize_matrix``), and splits every character's drawers
    1-15 / 16-20 into train / test. Its result is cached, keyed by the source
    arrays' hashes, as a compressed .npz (8 MB; loads in about 0.25 s against
    about 3 s to rebuild).
    """
    dirs = search_dirs("omniglot", data_dir)
    burda = _locate(OMNIGLOT_BURDA, dirs)
    if burda is not None:
        train, test = _load_chardata(burda)
        return train, test, f"OMNIGLOT 28x28 from Burda et al.'s chardata.mat ({burda})"
    variant = ("OMNIGLOT resized from the 105x105 Omniglot arrays (not Burda et al.'s "
               "chardata.mat) by area averaging to 28x28, 15/5 drawer split")
    cache = cache_dir() / "omniglot" / OMNIGLOT_CACHE
    sources = numpy.array(",".join(OMNIGLOT_IMAGES_SHA256[n] for n in OMNIGLOT_ARRAYS))
    if cache.is_file():
        try:
            with numpy.load(cache) as npz:
                if npz["sources"] == sources:  # else built from other arrays: rebuild
                    return npz["train"], npz["test"], f"{variant}, cached in {cache}"
        except (OSError, ValueError, KeyError):
            pass  # unreadable: rebuild it
    paths = [_locate(name, dirs) for name in OMNIGLOT_ARRAYS]
    if None in paths:
        raise DataError(
            f"OMNIGLOT not found (looked in {', '.join(str(d) for d in dirs)}) and it has no "
            f"download mirror: provide Burda et al.'s {OMNIGLOT_BURDA} ({OMNIGLOT_BURDA_URL}) or "
            f"{' and '.join(OMNIGLOT_ARRAYS)} (the Omniglot images of Lake et al., "
            "github.com/brendenlake/omniglot, as bool arrays 'images' of shape "
            f"(characters, 20, 105, 105)); {_how_to_provide('omniglot', 'them')}")
    if progress:
        print(f"lvae_np: building OMNIGLOT 28x28 from {paths[0].parent} (once; cached in {cache})",
              file=sys.stderr)
    train, test = _build_omniglot(paths)
    _save_npz_atomic(cache, train=train, test=test, sources=sources)
    return train, test, f"{variant}, built from {paths[0].parent}"


def _load_synthetic(data_dir, download, progress, rng):
    """Random horizontal and vertical bars on 8x8 images, grey levels from the seed."""
    n, side = SYNTHETIC_TRAIN + SYNTHETIC_TEST, SYNTHETIC_SIDE
    rows = rng.random((n, side, 1)) < 0.2
    cols = rng.random((n, 1, side)) < 0.2
    level = rng.uniform(0.7, 1.0, (n, 1, 1))
    images = numpy.where(rows | cols, level, 0.05).reshape(n, side * side).astype(numpy.float32)
    return images[:SYNTHETIC_TRAIN], images[SYNTHETIC_TRAIN:], (
        f"synthetic {side}x{side} random bars, {SYNTHETIC_TRAIN} train / {SYNTHETIC_TEST} test, "
        "generated from the seed")


_LOADERS = {"mnist": _load_mnist, "omniglot": _load_omniglot, "norb": _load_norb,
            "synthetic": _load_synthetic}
_IMAGE_SHAPES = {"mnist": (28, 28), "omniglot": (28, 28), "norb": (32, 32),
                 "synthetic": (SYNTHETIC_SIDE, SYNTHETIC_SIDE)}


def load_dataset(name: str, data_dir=None, *, validation: int = 0, seed: int = 0,
                 download: bool = True, progress: bool = True) -> Dataset:
    """Load a dataset, finding (or downloading) and verifying its files.

    Parameters
    ----------
    name : one of ``DATASETS``.
    data_dir : a folder to look in first (see the module docstring for the order).
    validation : hold out this many training images, chosen by a permutation
        drawn from ``seed``, as ``Dataset.valid``.
    seed : seeds the validation split, the synthetic images and the NORB
        training set's dequantisation noise. The test sets never depend on it.
    download : allow downloads from the canonical mirrors into ``cache_dir()``.
    progress : print a line per download or build on stderr, with a progress
        bar when stderr is a terminal.

    MNIST: pixels / 255. OMNIGLOT: see ``_load_omniglot``. NORB: the left
    image of each stereo pair (the Ladder VAE work used one 32x32 image per
    example), 3x3 block means rounded to grey levels 0..255 (the paper used
    bicubic resizing), plus U(0, 1) noise (test: ``NORB_TEST_NOISE_SEED``),
    divided by 256; Gaussian likelihood.

    Raises
    ------
    DataError : a file is missing, corrupt, malformed or holds NaN, inf or
        values outside [0, 1]; a one-line message naming the file.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
    split_seq, data_seq = numpy.random.SeedSequence(seed).spawn(2)
    train, test, variant = _LOADERS[name](data_dir, download, progress,
                                          numpy.random.default_rng(data_seq))
    for part, x in (("train", train), ("test", test)):
        _check_values(x, f"{variant}: {part} set")
    valid = None
    if validation:
        if not 0 < validation < len(train):
            raise ValueError(f"validation must be between 0 and {len(train) - 1}, got {validation}")
        order = numpy.random.default_rng(split_seq).permutation(len(train))
        valid = train[numpy.sort(order[-validation:])]
        train = train[numpy.sort(order[:-validation])]
    likelihood = "gaussian" if name == "norb" else "bernoulli"
    if likelihood == "bernoulli":
        test = binarize(test, numpy.random.default_rng(TEST_BINARIZATION_SEED))
        if valid is not None:
            valid = binarize(valid, numpy.random.default_rng(VALID_BINARIZATION_SEED))
    return Dataset(name=name, train=numpy.ascontiguousarray(train, numpy.float32),
                   test=numpy.ascontiguousarray(test, numpy.float32), valid=valid,
                   likelihood=likelihood, image_shape=_IMAGE_SHAPES[name], variant=variant)
