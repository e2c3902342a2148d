"""Flat buffers: a dict of same-dtype arrays as views into one contiguous array.

Adam, gradient clipping and zeroing treat every parameter the same way,
element by element. On separate arrays that is one pass per array and
operation (the paper's LVAE has 98 parameter arrays, so Adam's twelve
operations make 1,176 passes, each a kernel launch on a GPU); on one buffer
that holds them all it is one pass per operation. Readers keep the per-array
dict: its values are views into the buffer, so they see every update::

    lay = layout(params)                     # keys, shapes and where each starts
    buffer = pack(params, lay)               # one new 1-D array, the values copied in
    params = unpack(buffer, lay)             # {key: view of shape params[key].shape}
    g = pack(grads, lay)                     # the gradients in the same layout
    fast.adam_update_({"all": buffer}, {"all": g}, opt)   # one pass per operation

Elementwise work gives the same bits on the buffer as array by array (each
element sees the same operations in the same order); sums over all
parameters (the global norm) add in another order and agree to rounding.
"""
from __future__ import annotations

import math
from typing import NamedTuple

from .backend import namespace


class Layout(NamedTuple):
    """Where each array of a dict lies in its flat buffer."""

    keys: tuple     # the dict's keys, in order
    shapes: tuple   # each array's shape
    starts: tuple   # each array's first index in the buffer
    size: int       # the buffer's length


def layout(tree: dict) -> Layout:
    """The layout of ``tree``'s arrays, one after the other in the dict's order.

    Raises:
        ValueError: the arrays do not all have the same dtype.
    """
    dtypes = {a.dtype for a in tree.values()}
    if len(dtypes) > 1:
        raise ValueError("a flat buffer holds one dtype; these arrays have "
                         f"{sorted(map(str, dtypes))}")
    keys, shapes, starts, size = [], [], [], 0
    for k, a in tree.items():
        keys.append(k)
        shapes.append(tuple(a.shape))
        starts.append(size)
        size += math.prod(a.shape)
    return Layout(tuple(keys), tuple(shapes), tuple(starts), size)


def pack(tree: dict, lay: Layout):
    """A new 1-D buffer holding ``tree``'s arrays laid out as ``lay`` (one concatenation).

    Args:
        tree: a dict with the keys and shapes of ``lay`` (in any order).
        lay: from ``layout``.

    Returns:
        an array of shape (lay.size,).
    """
    first = tree[lay.keys[0]]
    xp = namespace(first)
    for k, shape in zip(lay.keys, lay.shapes):
        if tuple(tree[k].shape) != shape:
            raise ValueError(f"{k!r} has shape {tuple(tree[k].shape)}, the layout {shape}")
    return xp.concat([xp.reshape(tree[k], (-1,)) for k in lay.keys], axis=0)


def unpack(buffer, lay: Layout) -> dict:
    """The dict of views into ``buffer``: writing one writes the buffer, and the other way round."""
    xp = namespace(buffer)
    return {k: xp.reshape(buffer[s:s + math.prod(shape)], shape)
            for k, shape, s in zip(lay.keys, lay.shapes, lay.starts)}
