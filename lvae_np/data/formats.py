"""Reading the data file formats: IDX (MNIST), smallNORB matrices and MATLAB v5 ``.mat`` files.

Each ``parse_*`` function turns a file's content (bytes, already
decompressed) into arrays, checking the header against the data's length;
``source`` names the file in the one-line :class:`DataError` it raises. The
``read_*`` functions read a file from disk, gzipped or not, without checking
its hash (``files.read_verified`` does that).
"""
from __future__ import annotations

import math
import zlib

import numpy

from .files import DataError, read_content

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


def parse_idx(content: bytes, source: str) -> numpy.ndarray:
    """The array in IDX content: two zero bytes, a type code, ndim, big-endian uint32 dims, data."""
    if len(content) < 4 or content[:2] != b"\0\0":
        raise DataError(f"{source}: not an IDX file (magic bytes {content[:4].hex() or 'missing'})")
    code, ndim = content[2], content[3]
    if code not in _IDX_DTYPES or ndim == 0:
        raise DataError(f"{source}: bad IDX header (type code 0x{code:02x}, {ndim} dimensions)")
    if len(content) < 4 + 4 * ndim:
        raise DataError(f"{source}: truncated IDX file (header cut short)")
    dims = tuple(int(d) for d in numpy.frombuffer(content, ">u4", ndim, 4))
    return _array(content, _IDX_DTYPES[code], dims, 4 + 4 * ndim, source, "IDX")


def parse_norb(content: bytes, source: str) -> numpy.ndarray:
    """The array in smallNORB matrix content (the layout is given in ``read_norb``)."""
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
    return parse_idx(read_content(path), str(path))


def read_norb(path) -> numpy.ndarray:
    """The array in a smallNORB matrix file (``*-dat.mat``, ``*-cat.mat``), gzipped or not.

    Little-endian: an int32 magic (507333717 uint8, 507333716 int32, and the
    float32 / float64 / int16 codes of the NORB format), int32 ndim, max(3,
    ndim) int32 dimensions, then the data. No checksum is checked. The result
    may be read-only.
    """
    return parse_norb(read_content(path), str(path))


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


def parse_mat(content: bytes, source: str) -> dict:
    """The real numeric matrices of a MATLAB v5/v7 .mat file (zlib-compressed or not).

    Enough of the MAT-file format for ``chardata.mat``; cells, structs,
    strings, sparse and complex arrays are skipped.

    Args:
        content: the file's bytes.
        source: what error messages call the file.

    Returns:
        name -> array, each with MATLAB's shape (column-major data, so
        ``data[:, k]`` is column ``k``) and its MATLAB class's dtype.

    Raises:
        DataError: not a v5 .mat file (v7.3 is HDF5), or truncated or corrupt.
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
