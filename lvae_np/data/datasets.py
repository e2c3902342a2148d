"""The datasets as arrays: the loaders, the validation split, binarisation and ``load_dataset``.

``load_dataset(name)`` returns a :class:`Dataset`: training images as grey
levels in [0, 1] (Bernoulli data is binarised afresh every epoch by the
training loop, with :func:`binarize`), and a test set that, for Bernoulli
data, is binarised here once with a fixed seed, so every run scores the same
binary images.

Each loader in ``LOADERS`` has the signature ``loader(data_dir, download,
progress, rng) -> (train, test, variant)``: float32 arrays of shape (N, D) and
(M, D) and one line saying which data this is and where it came from.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy

from .files import MNIST_FILES, NORB_FILES, DataError, find_file, read_verified
from .formats import parse_idx, parse_norb
from .omniglot import load_omniglot
from .resize import resize_images

DATASETS = ("mnist", "omniglot", "norb", "synthetic")

TEST_BINARIZATION_SEED = 0   # the Bernoulli test sets are binarised once, with this seed
VALID_BINARIZATION_SEED = 1  # and the validation sets with this one
NORB_TEST_NOISE_SEED = 2     # the dequantisation noise of the NORB test set

SYNTHETIC_SIDE, SYNTHETIC_TRAIN, SYNTHETIC_TEST = 8, 1000, 200


@dataclass
class Dataset:
    """A dataset ready for training.

    Attributes:
        name: one of ``DATASETS``.
        train: (N, D) float32 grey levels in [0, 1].
        test: (M, D) float32; binarised once (``TEST_BINARIZATION_SEED``) for Bernoulli data.
        valid: (V, D) float32 held out from the training set, or None; binarised
            once (``VALID_BINARIZATION_SEED``) for Bernoulli data, grey otherwise.
        likelihood: "bernoulli" or "gaussian".
        image_shape: (height, width) of one image, for plotting; height * width = D.
        variant: one line saying exactly which data this is and where it came from.
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
    """One Bernoulli sample per pixel with probability ``x``.

    Args:
        x: array of any shape, probabilities in [0, 1].
        rng: the random generator drawn from (``x.size`` float32 uniforms).

    Returns:
        Array of ``x``'s shape, float32 zeros and ones.
    """
    return (rng.random(x.shape, dtype=numpy.float32) < x).astype(numpy.float32)


def _check_values(x: numpy.ndarray, where: str) -> None:
    if not numpy.isfinite(x).all():
        raise DataError(f"{where} contains NaN or inf values")
    if x.size and (x.min() < 0 or x.max() > 1):
        raise DataError(f"{where} has values outside [0, 1]")


def _load_mnist(data_dir, download, progress, rng):
    """MNIST: pixels / 255, (60000, 784) train and (10000, 784) test."""
    paths, parts = {}, {}
    for part, name in MNIST_FILES.items():
        path = paths[part] = find_file(name, "mnist", data_dir, download=download,
                                       progress=progress)
        images = parse_idx(read_verified(path, name), str(path))
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
        pairs = parse_norb(read_verified(path, name), str(path))
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


LOADERS = {"mnist": _load_mnist, "omniglot": load_omniglot, "norb": _load_norb,
           "synthetic": _load_synthetic}
_IMAGE_SHAPES = {"mnist": (28, 28), "omniglot": (28, 28), "norb": (32, 32),
                 "synthetic": (SYNTHETIC_SIDE, SYNTHETIC_SIDE)}


def data_shape(name: str) -> tuple[int, str]:
    """(features per example, likelihood) of dataset ``name``, known without loading it.

    Raises:
        ValueError: an unknown ``name``.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
    height, width = _IMAGE_SHAPES[name]
    return height * width, _likelihood(name)


def _likelihood(name: str) -> str:
    return "gaussian" if name == "norb" else "bernoulli"


def load_dataset(name: str, data_dir=None, *, validation: int = 0, seed: int = 0,
                 download: bool = True, progress: bool = True) -> Dataset:
    """Load a dataset, finding (or downloading) and verifying its files.

    MNIST: pixels / 255. OMNIGLOT: see ``omniglot.load_omniglot``. NORB: the
    left image of each stereo pair (the Ladder VAE work used one 32x32 image
    per example), 3x3 block means rounded to grey levels 0..255 (the paper used
    bicubic resizing), plus U(0, 1) noise (test: ``NORB_TEST_NOISE_SEED``),
    divided by 256; Gaussian likelihood.

    Args:
        name: one of ``DATASETS``.
        data_dir: a folder to look in first (see ``files`` for the order).
        validation: hold out this many training images, chosen by a permutation
            drawn from ``seed``, as ``Dataset.valid``.
        seed: seeds the validation split, the synthetic images and the NORB
            training set's dequantisation noise. The test sets never depend on it.
        download: allow downloads from the canonical mirrors into ``cache_dir()``.
        progress: print a line per download or build on stderr, with a progress
            bar when stderr is a terminal.

    Returns:
        The :class:`Dataset`.

    Raises:
        ValueError: an unknown ``name`` or a ``validation`` size out of range.
        DataError: a file is missing, corrupt, malformed or holds NaN, inf or
            values outside [0, 1]; a one-line message naming the file.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
    split_seq, data_seq = numpy.random.SeedSequence(seed).spawn(2)
    train, test, variant = LOADERS[name](data_dir, download, progress,
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
    likelihood = _likelihood(name)
    if likelihood == "bernoulli":
        test = binarize(test, numpy.random.default_rng(TEST_BINARIZATION_SEED))
        if valid is not None:
            valid = binarize(valid, numpy.random.default_rng(VALID_BINARIZATION_SEED))
    return Dataset(name=name, train=numpy.ascontiguousarray(train, numpy.float32),
                   test=numpy.ascontiguousarray(test, numpy.float32), valid=valid,
                   likelihood=likelihood, image_shape=_IMAGE_SHAPES[name], variant=variant)
