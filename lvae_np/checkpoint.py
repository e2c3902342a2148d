"""Checkpoints: everything a run needs to continue exactly, in one .npz file, no pickle.

Layout of the archive (all NumPy arrays, read back with ``allow_pickle=False``)::

    param/<name>    the model's parameters
    state/<name>    batch-norm running averages
    adam_m/<name>   Adam's first moments
    adam_v/<name>   Adam's second moments
    extra/<name>    any other arrays the trainer keeps (e.g. partial-epoch sums)
    meta            a JSON string: format version, config, epoch, Adam's step
                    count, the random generator's state, and whatever else
                    the trainer records

Writing is atomic: the archive goes to a temporary file in the same folder,
is flushed to disk, and then renamed over the old one, so a crash or Ctrl-C
leaves either the old checkpoint or the new one, never half of one.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy

from .backend import to_numpy
from .fileio import atomic_write

FORMAT_VERSION = 1
GROUPS = ("param", "state", "adam_m", "adam_v", "extra")


class CheckpointError(Exception):
    """A checkpoint is missing, unreadable or incomplete (one-line message)."""


def save(path, *, params: dict, state: dict, opt_state: dict, meta: dict,
         extra: dict | None = None) -> None:
    """Write a checkpoint atomically. Arrays may live on any backend; they are copied to the host."""
    arrays = {}
    for group, tree in (("param", params), ("state", state), ("adam_m", opt_state["m"]),
                        ("adam_v", opt_state["v"]), ("extra", extra or {})):
        for name, value in tree.items():
            arrays[f"{group}/{name}"] = to_numpy(value)
    meta = dict(meta, format_version=FORMAT_VERSION, adam_t=int(opt_state["t"]))
    arrays["meta"] = numpy.array(json.dumps(meta))
    atomic_write(path, lambda f: numpy.savez(f, **arrays))


def load(path) -> dict:
    """Read a checkpoint: a dict with "params", "state", "opt_state", "meta", "extra".

    Arrays come back as NumPy arrays; move them to the run's backend yourself.
    Raises CheckpointError, with a one-line message naming the file, when it is
    missing, not an archive, truncated or lacks a part.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with numpy.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise CheckpointError(f"{path} is not a readable checkpoint ({exc})") from None
    if "meta" not in arrays:
        raise CheckpointError(f"{path} is not a lvae_np checkpoint (no meta record)")
    meta = _parse_meta(path, arrays.pop("meta"))
    trees = {g: {} for g in GROUPS}
    for key, value in arrays.items():
        group, _, name = key.partition("/")
        if group not in trees or not name:
            raise CheckpointError(f"{path} holds an unexpected entry {key!r}")
        trees[group][name] = value
    if not trees["param"] or set(trees["adam_m"]) != set(trees["param"]) \
            or set(trees["adam_v"]) != set(trees["param"]):
        raise CheckpointError(f"{path} is incomplete: parameters and optimizer state disagree")
    return {"params": trees["param"], "state": trees["state"], "extra": trees["extra"],
            "opt_state": {"t": meta["adam_t"], "m": trees["adam_m"], "v": trees["adam_v"]},
            "meta": meta}


def load_meta(path) -> dict:
    """Read only a checkpoint's meta record (config, epoch, batch, ...), not its arrays.

    Raises CheckpointError as ``load`` does.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with numpy.load(path, allow_pickle=False) as archive:
            if "meta" not in archive.files:
                raise CheckpointError(f"{path} is not a lvae_np checkpoint (no meta record)")
            return _parse_meta(path, archive["meta"])
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise CheckpointError(f"{path} is not a readable checkpoint ({exc})") from None


def _parse_meta(path: Path, record) -> dict:
    """The meta record's JSON as a dict, its format version checked."""
    try:
        meta = json.loads(str(record))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} has a corrupt meta record ({exc})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} has a corrupt meta record (not a JSON object)")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} has format version {meta.get('format_version')}, "
                              f"this lvae_np reads version {FORMAT_VERSION}")
    return meta
