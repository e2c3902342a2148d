"""Parameter trees: cutting a model's flat dict of arrays into blocks and putting them back.

A model keeps its parameters (and its batch-norm state) in one flat dict
whose keys name the block, then the array: ``"down1.W1"``, ``"p1.W_mu"``. An
op of a block takes that block's own dict (``{"W1": ..., "gamma1": ...}``) and
its backward returns the gradients in a dict with the same keys::

    block = subtree(params, "down1")              # {"W1": ..., "gamma1": ..., ...}
    h, cache = mlp_forward(z, block, ...)
    dz, dblock = mlp_backward(dh, cache)
    grads = merge([with_prefix("down1", dblock), ...])   # {"down1.W1": ..., ...}

None of these functions changes the dicts it is given.
"""
from __future__ import annotations

from functools import lru_cache

SEP = "."


def subtree(tree: dict, prefix: str) -> dict:
    """The entries of ``tree`` under ``prefix.``, with the prefix removed.

    Plainly ``{k[len(prefix) + 1:]: v for k, v in tree.items() if
    k.startswith(prefix + ".")}``; the key selection is cached, since a
    training step cuts the same few dicts up many times.

    Args:
        tree: a flat dict name -> array.
        prefix: a block's name, e.g. ``"up1"``.

    Returns:
        a new dict short name -> array (empty when no key is under ``prefix``).
    """
    return {short: tree[k] for k, short in _keys_under(tuple(tree), prefix)}


@lru_cache(maxsize=1024)
def _keys_under(keys: tuple, prefix: str) -> tuple:
    cut = len(prefix) + len(SEP)
    return tuple((k, k[cut:]) for k in keys if k.startswith(prefix + SEP))


def with_prefix(prefix: str, sub: dict) -> dict:
    """A block's dict with full keys: ``{"W1": a}`` -> ``{"up1.W1": a}``."""
    return {f"{prefix}{SEP}{k}": v for k, v in sub.items()}


def merge(trees) -> dict:
    """One flat dict from several; where a key appears more than once, the values are summed.

    A block used twice in one forward pass (which the paper's models never
    do, but a variant may) gets the sum of its two gradients, in the order
    given.

    Args:
        trees: an iterable of flat dicts.

    Returns:
        a new dict.
    """
    out: dict = {}
    for tree in trees:
        for k, v in tree.items():
            out[k] = v if k not in out else out[k] + v
    return out


def block_names(tree: dict) -> list:
    """The block names of a flat dict, in the order they first appear: ``["up1", "q1", ...]``."""
    seen: dict = {}
    for k in tree:
        seen.setdefault(k.split(SEP, 1)[0], None)
    return list(seen)
