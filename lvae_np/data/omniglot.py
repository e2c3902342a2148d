"""OMNIGLOT: Burda et al.'s ``chardata.mat`` when found, else the 105x105 Omniglot arrays resized.

OMNIGLOT has no download mirror. Burda et al.'s ``chardata.mat`` (the set of
the IWAE and Ladder VAE papers) is used when found, read by the small MATLAB
v5 reader of ``formats``, so SciPy is not needed. Otherwise the 105x105
Omniglot arrays are resized to 28x28 once and the result cached.
"""
from __future__ import annotations

import hashlib
import io
import sys
import warnings

import numpy

from ..fileio import atomic_write
from .files import (OMNIGLOT_ARRAYS, OMNIGLOT_BURDA, OMNIGLOT_IMAGES_SHA256, DataError,
                    cache_dir, how_to_provide, locate, read_content, read_verified, search_dirs)
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
        try:
            with numpy.load(io.BytesIO(read_content(path))) as npz:
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
    sources = numpy.array(",".join(OMNIGLOT_IMAGES_SHA256[n] for n in OMNIGLOT_ARRAYS))
    if cache.is_file():
        try:
            with numpy.load(cache) as npz:
                if npz["sources"] == sources:  # else built from other arrays: rebuild
                    return npz["train"], npz["test"], f"{variant}, cached in {cache}"
        except (OSError, ValueError, KeyError):
            pass  # unreadable: rebuild it
    paths = [locate(name, dirs) for name in OMNIGLOT_ARRAYS]
    if None in paths:
        raise DataError(
            f"OMNIGLOT not found (looked in {', '.join(str(d) for d in dirs)}) and it has no "
            f"download mirror: provide Burda et al.'s {OMNIGLOT_BURDA} ({OMNIGLOT_BURDA_URL}) or "
            f"{' and '.join(OMNIGLOT_ARRAYS)} (the Omniglot images of Lake et al., "
            "github.com/brendenlake/omniglot, as bool arrays 'images' of shape "
            f"(characters, 20, 105, 105)); {how_to_provide('omniglot', 'them')}")
    if progress:
        print(f"lvae_np: building OMNIGLOT 28x28 from {paths[0].parent} (once; cached in {cache})",
              file=sys.stderr)
    train, test = build_omniglot(paths)
    try:
        atomic_write(cache, lambda f: numpy.savez_compressed(f, train=train, test=test,
                                                             sources=sources))
    except OSError as exc:
        warnings.warn(f"could not cache {cache}: {exc}", stacklevel=2)
    return train, test, f"{variant}, built from {paths[0].parent}"
