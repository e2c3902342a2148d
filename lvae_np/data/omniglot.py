"""OMNIGLOT: Burda et al.'s ``chardata.mat`` when found, else the 105x105 Omniglot arrays resized.

OMNIGLOT has no download mirror. Burda et al.'s ``chardata.mat`` (the set of
the IWAE and Ladder VAE papers) is used when found, read by the small MATLAB
v5 reader of ``formats``, so SciPy is not needed. Otherwise the 105x105
Omniglot arrays are resized to 28x28 once and the result cached; the cache
is checked before use (the source arrays it was built from, its shapes, the
image count the known source arrays give, and a hash of its content), and a
cache that fails is rebuilt, or refused in one line when the arrays are gone.
"""
from __future__ import annotations

import hashlib
import io
import sys
import warnings
import zipfile
import zlib

import numpy

from ..training.fileio import ArchiveError, atomic_write, npy_headers
from .files import (OMNIGLOT_ARRAYS, OMNIGLOT_BURDA, OMNIGLOT_CHARACTERS, OMNIGLOT_IMAGES_SHA256,
                    DataError, cache_dir, how_to_provide, locate, read_content, read_verified,
                    search_dirs)
from .formats import parse_mat
from .resize import resize_images

OMNIGLOT_BURDA_URL = "https://github.com/yburda/iwae/raw/master/datasets/OMNIGLOT/chardata.mat"
OMNIGLOT_TRAIN_DRAWERS = 15  # drawers 1-15 of every character train, 16-20 test
OMNIGLOT_CACHE = "omniglot-28x28-area-15-5.npz"


def _load_chardata(path):
    """Burda et al.'s (N, 784) train and test images from the 784 x N matrices of ``path``."""
    mats = parse_mat(read_verified(path, OMNIGLOT_BURDA), str(path))
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


def build_omniglot(paths) -> tuple[numpy.ndarray, numpy.ndarray]:
    """Ink = 1 - image, area-averaged 105 -> 28; drawers 1-15 train, 16-20 test.

    Args:
        paths: the ``OMNIGLOT_ARRAYS`` files, each an .npz with a bool array
            ``images`` of shape (characters, 20, 105, 105), True for background;
            its bytes are checked against ``OMNIGLOT_IMAGES_SHA256``.

    Returns:
        (train, test): float32 arrays of shape (characters * 15, 784) and
        (characters * 5, 784), all files' characters in order.

    Raises:
        DataError: a file is not such an .npz or its images fail their checksum.
    """
    train, test = [], []
    for path in paths:
        want = OMNIGLOT_IMAGES_SHA256[path.name.removesuffix(".gz")]
        characters = OMNIGLOT_CHARACTERS.get(want)
        # the known arrays' size (and some room for the archive's headers) bounds the read
        limit = characters * 20 * 105 * 105 + (1 << 20) if characters else None
        content = read_content(path, limit)
        try:
            arrays = npy_headers(io.BytesIO(content), size=len(content))
            if "images" not in arrays:
                raise KeyError("no 'images' array")
            shape, dtype = arrays["images"]
            if dtype != bool or shape[1:] != (20, 105, 105) \
                    or (characters and shape[0] != characters):
                raise DataError(f"{path}: expected bool images ({characters or 'characters'}, "
                                f"20, 105, 105), found {dtype} {shape}")
            with numpy.load(io.BytesIO(content), allow_pickle=False) as npz:
                images = npz["images"]
        except (ArchiveError, OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile,
                zlib.error) as exc:
            raise DataError(f"{path}: corrupt file, or not an .npz file with an 'images' "
                            f"array ({exc}); delete or replace it") from None
        got = hashlib.sha256(numpy.ascontiguousarray(images).data).hexdigest()
        if got != want:
            raise DataError(f"{path}: checksum mismatch, sha256 of its images array is {got}; "
                            f"expected sha256 {want}; the file was not used")
        ink = resize_images(~images.reshape(-1, 105, 105), 28).reshape(len(images), 20, 784)
        numpy.clip(ink, 0, 1, out=ink)  # float32 sums of ones can round to 1 + 1e-7
        train.append(ink[:, :OMNIGLOT_TRAIN_DRAWERS].reshape(-1, 784))
        test.append(ink[:, OMNIGLOT_TRAIN_DRAWERS:].reshape(-1, 784))
    return numpy.concatenate(train), numpy.concatenate(test)


def cache_digest(train, test, sources) -> str:
    """SHA-256 of a derived OMNIGLOT cache's content: its source hashes and both arrays.

    Args:
        train, test: the (N, 784) and (M, 784) float32 arrays.
        sources: the comma-separated hashes of the source arrays (a string).
    """
    h = hashlib.sha256(str(sources).encode())
    for a in (train, test):
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(numpy.ascontiguousarray(a).data)
    return h.hexdigest()


def read_cache(cache, sources: str):
    """The arrays of a derived OMNIGLOT cache, checked before use.

    Args:
        cache: the cache file.
        sources: the comma-separated hashes of the source arrays it must come from.

    Returns:
        (train, test, None) when the cache passes; (None, None, why) when it
        does not, with ``why`` saying what is wrong in a few words; (None,
        None, None) when it comes from other source arrays (rebuilt in silence).
    """
    try:
        with numpy.load(cache, allow_pickle=False) as npz:
            if str(npz["sources"]) != sources:
                return None, None, None
            train, test = npz["train"], npz["test"]
            content = str(npz["content"]) if "content" in npz.files else None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        return None, None, f"unreadable ({exc})"
    hashes = sources.split(",")
    if any(a.dtype != numpy.float32 or a.ndim != 2 or a.shape[1] != 784 for a in (train, test)):
        return None, None, f"arrays of the wrong kind ({train.dtype} {train.shape}, " \
                           f"{test.dtype} {test.shape}; want float32 (N, 784))"
    if all(h in OMNIGLOT_CHARACTERS for h in hashes):
        want = sum(OMNIGLOT_CHARACTERS[h] for h in hashes)
        shapes = (want * OMNIGLOT_TRAIN_DRAWERS, want * (20 - OMNIGLOT_TRAIN_DRAWERS))
    else:  # arrays of unknown size: at least the 15/5 split must hold
        shapes = (len(test) * 3, max(len(test), 1))
    if (len(train), len(test)) != shapes:
        return None, None, f"{len(train)} and {len(test)} images, not {shapes[0]} and {shapes[1]}"
    if content != cache_digest(train, test, sources):
        return None, None, "no content hash" if content is None else "a content hash mismatch"
    return train, test, None


def load_omniglot(data_dir, download, progress, rng):
    """Burda et al.'s chardata.mat if present, else the 105x105 arrays resized (cached).

    chardata.mat holds 784 x N matrices ``data`` and ``testdata``, each column
    an image flattened column-major. The arrays route inverts the images (ink
    = 1 - image, ``True`` being background), resizes 105 -> 28 by exact area
    averaging (``area_resize_matrix``), and splits every character's drawers
    1-15 / 16-20 into train / test. Its result is cached, keyed by the source
    arrays' hashes, as a compressed .npz (8 MB; loads in about 0.25 s against
    about 3 s to rebuild); a cache that cannot be written is warned about.

    Args:
        data_dir: a folder to look in first (``--data-dir``), or None.
        download: unused (OMNIGLOT has no mirror); the loaders' common signature.
        progress: print a line on stderr when the arrays are built.
        rng: unused; the loaders' common signature.

    Returns:
        (train, test, variant): float32 arrays of shape (N, 784) and (M, 784)
        in [0, 1], and one line saying which data this is and where it came from.
    """
    dirs = search_dirs("omniglot", data_dir)
    burda = locate(OMNIGLOT_BURDA, dirs)
    if burda is not None:
        train, test = _load_chardata(burda)
        return train, test, f"OMNIGLOT 28x28 from Burda et al.'s chardata.mat ({burda})"
    variant = ("OMNIGLOT resized from the 105x105 Omniglot arrays (not Burda et al.'s "
               "chardata.mat) by area averaging to 28x28, 15/5 drawer split")
    cache = cache_dir() / "omniglot" / OMNIGLOT_CACHE
    sources = ",".join(OMNIGLOT_IMAGES_SHA256[n] for n in OMNIGLOT_ARRAYS)
    bad = None
    if cache.is_file():
        train, test, bad = read_cache(cache, sources)
        if train is not None:
            return train, test, f"{variant}, cached in {cache}"
    paths = [locate(name, dirs) for name in OMNIGLOT_ARRAYS]
    if None in paths and bad is not None:
        raise DataError(f"{cache} is not a usable OMNIGLOT cache ({bad}) and the arrays to "
                        f"rebuild it are missing: delete it, and provide "
                        f"{' and '.join(OMNIGLOT_ARRAYS)}; {how_to_provide('omniglot', 'them')}")
    if None in paths:
        raise DataError(
            f"OMNIGLOT not found (looked in {', '.join(str(d) for d in dirs)}) and it has no "
            f"download mirror: provide Burda et al.'s {OMNIGLOT_BURDA} ({OMNIGLOT_BURDA_URL}) or "
            f"{' and '.join(OMNIGLOT_ARRAYS)} (the Omniglot images of Lake et al., "
            "github.com/brendenlake/omniglot, as bool arrays 'images' of shape "
            f"(characters, 20, 105, 105)); {how_to_provide('omniglot', 'them')}")
    if bad is not None:
        warnings.warn(f"the OMNIGLOT cache {cache} is not usable ({bad}): rebuilding it",
                      stacklevel=2)
    if progress:
        print(f"lvae_np: building OMNIGLOT 28x28 from {paths[0].parent} (once; cached in {cache})",
              file=sys.stderr)
    train, test = build_omniglot(paths)
    digest = numpy.array(cache_digest(train, test, sources))
    try:
        atomic_write(cache, lambda f: numpy.savez_compressed(
            f, train=train, test=test, sources=numpy.array(sources), content=digest))
    except OSError as exc:
        warnings.warn(f"could not cache {cache}: {exc}", stacklevel=2)
    return train, test, f"{variant}, built from {paths[0].parent}"
