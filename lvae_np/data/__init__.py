"""Datasets for the Ladder VAE: MNIST, OMNIGLOT, smallNORB and a small synthetic set.

``load_dataset(name)`` finds (or downloads), verifies and loads a dataset;
this package's namespace is its public face. The modules, each one job:

- ``files``: where data files are looked for, the download mirrors, the known
  hashes, reading a file verified (and the :class:`DataError` of the package);
- ``formats``: the IDX, smallNORB and MATLAB v5 file formats;
- ``resize``: area-averaging resizes (smallNORB 96 -> 32, Omniglot 105 -> 28);
- ``omniglot``: OMNIGLOT from Burda et al.'s file or from the Omniglot arrays;
- ``datasets``: the :class:`Dataset`, the loaders (``LOADERS``), the
  validation split, binarisation and ``load_dataset``.

To replace a function that others call (as tests do), patch it in the module
that defines it, e.g. ``files.open_url``; ``LOADERS`` and the tables of file
names, hashes and mirrors are shared dicts, changed in place.
"""
from .datasets import (DATASETS, LOADERS, NORB_TEST_NOISE_SEED, SYNTHETIC_SIDE, SYNTHETIC_TEST,
                       SYNTHETIC_TRAIN, TEST_BINARIZATION_SEED, VALID_BINARIZATION_SEED, Dataset,
                       binarize, data_shape, load_dataset)
from .files import (CHECKSUMS, ENV_VAR, GIT_BLOB_SHA1, MIRRORS, MNIST_FILES, NORB_FILES,
                    OMNIGLOT_ARRAYS, OMNIGLOT_BURDA, OMNIGLOT_IMAGES_SHA256, DataError, cache_dir,
                    find_file, search_dirs)
from .formats import read_idx, read_norb
from .omniglot import OMNIGLOT_BURDA_URL, OMNIGLOT_CACHE, OMNIGLOT_TRAIN_DRAWERS
from .resize import area_resize_matrix, resize_images

__all__ = [
    "CHECKSUMS", "DATASETS", "ENV_VAR", "GIT_BLOB_SHA1", "LOADERS", "MIRRORS", "MNIST_FILES",
    "NORB_FILES", "NORB_TEST_NOISE_SEED", "OMNIGLOT_ARRAYS", "OMNIGLOT_BURDA",
    "OMNIGLOT_BURDA_URL", "OMNIGLOT_CACHE", "OMNIGLOT_IMAGES_SHA256", "OMNIGLOT_TRAIN_DRAWERS",
    "SYNTHETIC_SIDE", "SYNTHETIC_TEST", "SYNTHETIC_TRAIN", "TEST_BINARIZATION_SEED",
    "VALID_BINARIZATION_SEED", "DataError", "Dataset", "area_resize_matrix", "binarize",
    "cache_dir", "data_shape", "find_file", "load_dataset", "read_idx", "read_norb", "resize_images",
    "search_dirs",
]
