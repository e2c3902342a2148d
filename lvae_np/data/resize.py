"""Resizing images by area averaging (smallNORB 96 -> 32, Omniglot 105 -> 28)."""
from __future__ import annotations

import numpy


def area_resize_matrix(n_in: int, n_out: int) -> numpy.ndarray:
    """The (n_out, n_in) matrix A that resizes by area averaging: ``A @ image @ A.T``.

    Output pixel i covers input interval [i s, (i + 1) s), s = n_in / n_out;
    ``A[i, j]`` is the length of its overlap with input pixel [j, j + 1),
    divided by s. Rows sum to one; for s = 3 (96 -> 32) it is exact 3x3 block
    averaging, for s = 3.75 (105 -> 28) pixels on a boundary count in part.

    Args:
        n_in: the input side length.
        n_out: the output side length.

    Returns:
        A: array of shape (n_out, n_in), float64.
    """
    scale = n_in / n_out
    lo = numpy.arange(n_out)[:, None] * scale
    j = numpy.arange(n_in)[None, :]
    overlap = numpy.minimum(lo + scale, j + 1) - numpy.maximum(lo, j)
    return numpy.clip(overlap, 0, None) / scale


def resize_images(images: numpy.ndarray, size: int, chunk: int = 2048) -> numpy.ndarray:
    """Resize images by area averaging, ``chunk`` images at a time.

    Args:
        images: array of shape (n, h, w), any real or bool dtype.
        size: the output side length.
        chunk: how many images to convert to float32 at once.

    Returns:
        Array of shape (n, size, size), float32.
    """
    n, h, w = images.shape
    rows = area_resize_matrix(h, size).astype(numpy.float32)
    cols_t = area_resize_matrix(w, size).T.astype(numpy.float32)
    out = numpy.empty((n, size, size), numpy.float32)
    for s in range(0, n, chunk):
        x = images[s:s + chunk].astype(numpy.float32)
        out[s:s + chunk] = rows @ (x.reshape(-1, w) @ cols_t).reshape(len(x), h, size)
    return out
