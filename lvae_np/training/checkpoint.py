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

Reading is checked before anything uses the contents: ``load`` refuses a
file that is not a complete checkpoint, ``check_meta`` a meta record whose
position (epoch, batch, Adam's step) is malformed, and ``check_arrays``
arrays whose names or shapes are not those of the model they should fit.
No array is read before its header is: ``headers`` reads the ``.npy``
headers alone (a corrupt file, or an entry claiming more data than it
holds, is refused there), and ``check_headers`` compares them with the
arrays a run's config calls for, so a checkpoint cannot make the reader
allocate more than the run's own arrays.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy

from ..backend import to_numpy
from .fileio import ArchiveError, atomic_write, npy_headers

FORMAT_VERSION = 1
GROUPS = ("param", "state", "adam_m", "adam_v", "extra")
META_BYTES = 1 << 24  # the meta record's largest size: its JSON is a few kB


class CheckpointError(Exception):
    """A checkpoint is missing, unreadable or incomplete (one-line message)."""


def save(path, *, params: dict, state: dict, opt_state: dict, meta: dict,
         extra: dict | None = None) -> None:
    """Write a checkpoint atomically. Arrays may live on any backend; they are copied to the host."""
    atomic_write(path, writer(params=params, state=state, opt_state=opt_state, meta=meta,
                              extra=extra))


def writer(*, params: dict, state: dict, opt_state: dict, meta: dict, extra: dict | None = None):
    """The checkpoint as a function ``write(file_object)``, for ``fileio.atomic_write_many``.

    The arrays are copied to the host now; the arguments are those of ``save``.
    """
    arrays = {}
    for group, tree in (("param", params), ("state", state), ("adam_m", opt_state["m"]),
                        ("adam_v", opt_state["v"]), ("extra", extra or {})):
        for name, value in tree.items():
            arrays[f"{group}/{name}"] = to_numpy(value)
    meta = dict(meta, format_version=FORMAT_VERSION, adam_t=int(opt_state["t"]))
    arrays["meta"] = numpy.array(json.dumps(meta))
    return lambda f: numpy.savez(f, **arrays)


def load(path) -> dict:
    """Read a checkpoint: a dict with "params", "state", "opt_state", "meta", "extra".

    Arrays come back as NumPy arrays; move them to the run's backend yourself.
    Raises CheckpointError, with a one-line message naming the file, when it is
    missing, not an archive, truncated or lacks a part, or when its meta record
    fails ``check_meta``.
    """
    path = Path(path)
    headers(path)
    try:
        with numpy.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise CheckpointError(_unreadable(path, exc)) from None
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

    The record is checked with ``check_meta``. Raises CheckpointError as ``load`` does.
    """
    path = Path(path)
    headers(path)
    try:
        with numpy.load(path, allow_pickle=False) as archive:
            record = archive["meta"]
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise CheckpointError(_unreadable(path, exc)) from None
    return _parse_meta(path, record)


def _unreadable(path: Path, exc: BaseException) -> str:
    """The one line for a checkpoint that cannot be read: a corrupt file, never more advice.

    NumPy's own words for a file that is not an archive suggest
    ``allow_pickle=True``: a wrong diagnosis, and an unsafe fix; they are left out.
    """
    why = " ".join(str(exc).split())
    why = "" if not why or "pickle" in why.lower() else f" ({why})"
    return (f"{path} is a corrupt file, not a readable checkpoint{why}; put the run's own "
            "checkpoint back, or start the run again in another --out")


def headers(path) -> dict:
    """The checkpoint's arrays as their ``.npy`` headers say: name -> (shape, dtype).

    Reads no array data (``fileio.npy_headers``); checks that the archive is
    sound, holds a meta record of a sane size, and that no entry claims more
    data than it holds.

    Raises:
        CheckpointError: one line naming the file: missing, corrupt, or not a
            lvae_np checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        arrays = npy_headers(path)
    except ArchiveError as exc:
        raise CheckpointError(_unreadable(path, exc)) from None
    except OSError as exc:
        raise CheckpointError(f"{path} is not a readable checkpoint "
                              f"({exc.strerror or exc})") from None
    if "meta" not in arrays:
        raise CheckpointError(f"{path} is not a lvae_np checkpoint (no meta record)")
    shape, dtype = arrays["meta"]
    if shape != () or dtype.kind not in "US" or dtype.itemsize > META_BYTES:
        raise CheckpointError(f"{path} is corrupt or not a lvae_np checkpoint: its meta record "
                              f"is {dtype} {shape}, not a JSON text of at most {META_BYTES} "
                              "bytes")
    return arrays


def check_headers(path, params: dict, state: dict, extra: dict) -> None:
    """Refuse a checkpoint whose arrays are not those a run's config calls for, unread.

    Compares the ``.npy`` headers (``headers``) with the arrays of the run's
    model before any array is loaded, so a corrupt or foreign checkpoint
    cannot make the reader allocate more than the run's own arrays.

    Args:
        path: the checkpoint.
        params, state: the model's arrays, or anything with their ``shape``.
        extra: name -> shape of every ``extra/`` array the run may keep (all optional).

    Raises:
        CheckpointError: one line naming the file and the first array that does not fit.
    """
    trees = {g: {} for g in GROUPS}
    for key, (shape, dtype) in headers(path).items():
        if key == "meta":
            continue
        group, _, name = key.partition("/")
        if group not in trees or not name:
            raise CheckpointError(f"{path} is corrupt or not a lvae_np checkpoint: it holds "
                                  f"an unexpected entry {key!r}")
        trees[group][name] = numpy.broadcast_to(numpy.zeros((), dtype), shape)  # no memory
    ckpt = {"params": trees["param"], "state": trees["state"],
            "opt_state": {"m": trees["adam_m"], "v": trees["adam_v"]}}
    check_arrays(path, ckpt, params, state)
    for name, got in trees["extra"].items():
        if name not in extra or got.shape != tuple(extra[name]) or got.dtype.kind not in "fiu":
            raise CheckpointError(
                f"{path} is corrupt or not a checkpoint of this run: it holds an array "
                f"extra/{name} ({got.dtype} {got.shape}) that no run of its config keeps")


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
    check_meta(path, meta)
    return meta


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_meta(path, meta: dict) -> None:
    """Refuse a meta record whose position in training is missing or malformed.

    Args:
        path: the checkpoint, for messages.
        meta: its meta record (``load``'s ``"meta"``).

    Raises:
        CheckpointError: one line naming the file and the entry.
    """
    for key, required in (("epoch", True), ("batch", False), ("adam_t", True)):
        if key not in meta:
            if required:
                raise CheckpointError(f"{path} has no {key!r} in its meta record: it was not "
                                      "written by lvae_np.train")
            continue
        if not _count(meta[key]):
            raise CheckpointError(f"{path} has a malformed {key!r} in its meta record "
                                  f"({meta[key]!r}, not a count)")
    seconds = meta.get("epoch_seconds", 0.0)
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds >= 0:
        raise CheckpointError(f"{path} has a malformed 'epoch_seconds' in its meta record "
                              f"({seconds!r})")
    for key in ("rng_state", "log"):
        if key in meta and not isinstance(meta[key], dict):
            raise CheckpointError(f"{path} has a malformed {key!r} in its meta record")


def check_arrays(path, ckpt: dict, params: dict, state: dict) -> None:
    """Refuse a checkpoint whose arrays are not those of the model ``params`` and ``state`` are of.

    Args:
        path: the checkpoint, for messages.
        ckpt: what ``load`` returned.
        params, state: a fresh model's arrays (any backend); only names and shapes are used.

    Raises:
        CheckpointError: one line naming the file and the first array that does not fit.
    """
    groups = (("parameter", ckpt["params"], params), ("batch-norm statistic", ckpt["state"], state),
              ("Adam first moment", ckpt["opt_state"]["m"], params),
              ("Adam second moment", ckpt["opt_state"]["v"], params))
    for what, got, want in groups:
        missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        if missing or extra:
            names = ", ".join(missing[:3] + extra[:3])
            raise CheckpointError(
                f"{path} is corrupt or not a checkpoint of this run's model: {what} names "
                f"differ ({len(missing)} missing, {len(extra)} unknown: {names})")
        for name in sorted(want):
            shape = tuple(want[name].shape)
            if got[name].shape != shape or got[name].dtype.kind != "f":
                raise CheckpointError(
                    f"{path} is corrupt or not a checkpoint of this run's model: {what} "
                    f"{name} is {got[name].dtype} {got[name].shape}, the model's is {shape}")
