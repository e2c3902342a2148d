"""The run folder's contract: its file names, its status file, and loading a run back.

``python -m lvae_np.train --out RUN_DIR`` writes, and every other part of the
package reads, these files of a run folder::

    checkpoint.npz   CHECKPOINT  everything needed to continue (see lvae_np.checkpoint)
    config.json      CONFIG      the run's TrainConfig (see lvae_np.config)
    metrics.csv      METRICS     one row per epoch (see lvae_np.metrics)
    kl_units.csv     KL_UNITS    the training KL of every latent unit, one row per epoch
    status.json      STATUS      where training stands (write_status, read_status,
                                 load_status)
    eval-*.json                  lvae_np.evaluate's results (eval_file_name)
    .lock            LOCK        held by the lvae_np.train working in the folder (lvae_np.runlock)

The checkpoint is the single source of truth for where a run stands: the
logs are brought in step with it whenever training starts, and everything
read from it is checked before use (``read_checkpoint``,
``check_model_arrays``): a checkpoint that is malformed, or of another model
than the folder's ``config.json`` and logs, is refused in one line.

The status file is a small JSON object ``{"state": ..., "epoch": ...}``, with
``state`` one of ``STATES``:

* ``"training"``: written when training starts or resumes; ``epoch`` is the
  number of epochs done. It stays so if the process dies without a word.
* ``"done"``: the run reached its target; ``epoch`` epochs are done (a stop
  asked during its last epoch's evaluation does not change that).
* ``"diverged"``: the loss became NaN or infinite in epoch ``epoch``
  (1-based); the checkpoint holds the end of the epoch before.
* ``"interrupted"``: stopped by Ctrl-C or SIGTERM after writing its checkpoint;
  ``epoch`` epochs and ``batch`` batches of the next one are done.
* ``"failed"``: stopped by an error it could not go on after (out of memory);
  ``reason`` says which, ``epoch`` is the epochs done (the checkpoint's, if any).
"""
from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import NamedTuple

import numpy

from . import checkpoint
from .. import architecture, data
from ..backend import get_backend
from .checkpoint import CheckpointError
from .config import CIRCUMSTANCES, RESUMABLE, TrainConfig, check_config, config_from_meta
from .fileio import atomic_write_text, read_json
from ..models import Model

CHECKPOINT = "checkpoint.npz"
CONFIG = "config.json"
METRICS = "metrics.csv"
KL_UNITS = "kl_units.csv"
STATUS = "status.json"
LOCK = ".lock"
RUN_FILES = (CHECKPOINT, CONFIG, METRICS, KL_UNITS, STATUS)  # what lvae_np.train writes

STATES = ("training", "done", "diverged", "interrupted", "failed")
EVAL_BINARIZATION_SEED = 1234  # binarises the training and validation sets once, for evaluation


def eval_file_name(split: str, iw_samples: int, limit: int | None = None,
                   subset: int | None = None, subset_seed: int = 0) -> str:
    """The name of the file ``lvae_np.evaluate`` writes into the run folder.

    Args:
        split: "test", "train" or "valid".
        iw_samples: K of the L_K estimate (0: ELBO only).
        limit: the number of leading examples evaluated (None: all).
        subset: the number of examples drawn by a seeded permutation of the split
            (None: no subset; see ``subset_indices``).
        subset_seed: the seed of that permutation.

    Returns:
        ``eval-<split>-k<K>.json``, ``eval-<split>-k<K>-first<limit>.json``, or
        ``eval-<split>-k<K>-subset<subset>-seed<subset_seed>.json``.
    """
    name = f"eval-{split}-k{iw_samples}" + (f"-first{limit}" if limit else "")
    if subset:
        name += f"-subset{subset}-seed{subset_seed}"
    return name + ".json"


def subset_indices(n: int, subset: int, seed: int) -> numpy.ndarray:
    """The examples of a seeded random subset of a split, in increasing order.

    The first ``subset`` entries of a permutation of ``range(n)`` drawn with
    ``numpy.random.default_rng(seed)``: every run evaluated with the same
    ``(n, subset, seed)`` gets the same examples, so per-example values of two
    runs stay paired.

    Args:
        n: the number of examples in the split.
        subset: how many to take, 1 <= subset <= n.
        seed: the seed of the permutation.

    Returns:
        (subset,) int64 array of example indices, sorted.

    Raises:
        ValueError: ``subset`` out of range (one-line message).
    """
    if not 1 <= subset <= n:
        raise ValueError(f"--subset must be between 1 and the split's {n} examples, got {subset}")
    return numpy.sort(numpy.random.default_rng(seed).permutation(n)[:subset])


# ----------------------------------------------------------------------------
# The status file
# ----------------------------------------------------------------------------
def write_status(run_dir, state: str, epoch: int, **extra) -> None:
    """Write ``RUN_DIR/status.json`` atomically: ``{"state": state, "epoch": epoch, **extra}``.

    Args:
        run_dir: the run folder.
        state: one of ``STATES`` (see the module docstring for what each means).
        epoch: epochs done, or for "diverged" the epoch (1-based) that diverged.
        **extra: further JSON-ready entries, e.g. ``batch`` for "interrupted".

    Raises:
        ValueError: ``state`` is not one of ``STATES``.
    """
    if state not in STATES:
        raise ValueError(f"state must be one of {', '.join(STATES)}, got {state!r}")
    record = {"state": state, "epoch": int(epoch), **extra}
    atomic_write_text(Path(run_dir) / STATUS, json.dumps(record) + "\n")


def files_in_the_way(run_dir) -> list[Path]:
    """The files a fresh run in ``run_dir`` would replace, though no start of it made them.

    A folder without a checkpoint that holds a run's logs, evaluations,
    config or status holds another run's (whose checkpoint was moved away)
    or the user's files: a fresh ``lvae_np.train`` there would replace them.
    What a fresh start that did not finish an epoch leaves, ``status.json``
    saying "training" or "failed" at epoch 0 or "diverged" in epoch 1 (and
    ``config.json``) with no logs or evaluations, is not in the way: the same
    command, run again, replaces it. A runner's ``train.log`` (only ever
    appended to) never is.

    Returns:
        The files in the way, logs and evaluations first; [] when none.
    """
    run_dir = Path(run_dir)
    found = [run_dir / n for n in (METRICS, KL_UNITS) if (run_dir / n).exists()]
    found += sorted(run_dir.glob("eval-*.json"))
    others = [run_dir / n for n in (CONFIG, STATUS) if (run_dir / n).exists()]
    if found or not others:
        return found + others
    status = read_status(run_dir)
    if status is not None and (status["state"], status["epoch"]) in (
            ("training", 0), ("failed", 0), ("diverged", 1)):
        return []  # what a start that finished no epoch left
    return others


def read_status(run_dir) -> dict | None:
    """The run's status record, or None when the file is missing or unreadable.

    A record counts as readable when it is a JSON object whose ``state`` is one
    of ``STATES`` and whose ``epoch`` is an integer (see ``load_status``).
    """
    try:
        return load_status(run_dir)
    except ValueError:
        return None


def load_status(run_dir) -> dict | None:
    """The run's status record, checked; None when there is no status file.

    Raises:
        ValueError: the file is there but is not a status record (empty, not
            UTF-8, not JSON, or without a known ``state`` and an integer
            ``epoch``); one line naming the file and why.
    """
    path = Path(run_dir) / STATUS
    record = read_json(path, "a status record")
    if record is None:
        return None
    if not isinstance(record, dict) or record.get("state") not in STATES \
            or not isinstance(record.get("epoch"), int) or isinstance(record["epoch"], bool):
        raise ValueError(f"{path} is not a status record: it needs a \"state\" (one of "
                         f"{', '.join(STATES)}) and an integer \"epoch\"")
    return record


def saved_meta(run_dir) -> dict | None:
    """The meta record of the run's checkpoint (config, epoch, batch, ...), or None.

    Reads only that record, not the arrays. None when there is no checkpoint or
    it cannot be read (``checkpoint.load_meta`` says why).
    """
    try:
        return checkpoint.load_meta(Path(run_dir) / CHECKPOINT)
    except CheckpointError:
        return None


# ----------------------------------------------------------------------------
# Loading a run
# ----------------------------------------------------------------------------
class LoadedRun(NamedTuple):
    """A run's checkpoint as a model with its parameters, on a backend, and the run's data."""

    model: Model           # built from the run's config, on the chosen backend
    params: dict           # name -> array on that backend
    state: dict            # batch-norm statistics, name -> array (see ``bn``)
    dataset: data.Dataset  # the data the run was trained on (same validation split)
    config: TrainConfig
    meta: dict             # the checkpoint's meta record
    bn: str = "running"    # the statistics in state: "running" (the checkpoint's averages),
                           # "recollect" or "single-pass" (metrics.evaluation_bn_state)

    @property
    def epoch(self) -> int:
        """Epochs done when the checkpoint was written."""
        return int(self.meta["epoch"])


def read_checkpoint(run_dir) -> tuple[dict, TrainConfig]:
    """The run's checkpoint and its config, both checked.

    Args:
        run_dir: the run folder.

    Returns:
        (``checkpoint.load``'s dict, the ``TrainConfig`` saved in it).

    Raises:
        CheckpointError: no readable checkpoint, a malformed meta record, or a
            run config that ``lvae_np.train`` would refuse (one line naming the file).
    """
    path = Path(run_dir) / CHECKPOINT
    meta = checkpoint.load_meta(path)
    try:
        cfg = config_from_meta(meta)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    try:
        check_config(cfg)
    except ValueError as exc:
        raise CheckpointError(f"{path} holds a run config lvae_np.train refuses: {exc}") from None
    # Its arrays' headers against the config's model before any array is read: a corrupt
    # or foreign checkpoint cannot make us allocate more than the run's own arrays.
    params, state = model_shapes(cfg.model_config(*data.data_shape(cfg.dataset)))
    checkpoint.check_headers(path, params, state, partial_sums_shapes(cfg.latent))
    return checkpoint.load(path), cfg


class _Shapes:
    """An array namespace and random generator whose arrays take no memory (broadcast zeros).

    ``architecture.init_params`` run with it gives a model's arrays' names and
    shapes, however large, without allocating them.
    """

    @staticmethod
    def _array(shape, dtype=None):
        return numpy.broadcast_to(numpy.zeros((), dtype or numpy.float64), tuple(shape))

    def zeros(self, shape, dtype=None):
        return self._array(shape, dtype)

    ones = zeros

    def full(self, shape, value, dtype=None):
        return self._array(shape, dtype)

    def asarray(self, a, dtype=None):
        return self._array(numpy.shape(a), dtype)

    def uniform(self, low=0.0, high=1.0, size=()):
        return self._array(size)

    def normal(self, loc=0.0, scale=1.0, size=()):
        return self._array(size)


def model_shapes(model_config) -> tuple[dict, dict]:
    """(params, state) of the model ``model_config`` describes, as stand-ins of their shapes.

    Each value has the array's ``shape`` and ``dtype`` (float64) but holds no
    memory, so a config of any size can be checked against a checkpoint.
    """
    shapes = _Shapes()
    return architecture.init_params(model_config, shapes, xp=shapes, dtype=numpy.float64)


def partial_sums_shapes(latent) -> dict:
    """name -> shape of the running sums a checkpoint written mid-epoch keeps (``extra/``)."""
    shapes = {"loss": (), "elbo": (), "rec": (), "n": ()}
    for i, d in enumerate(latent, start=1):
        shapes.update({f"kl_z{i}": (), f"kl_units_z{i}": (int(d),)})
    return shapes


def check_model_arrays(path, ckpt: dict, model_config) -> None:
    """Refuse a checkpoint whose arrays are not those of the model ``model_config`` describes.

    The model is built on the host in the checkpoint's dtype and never run,
    and no random generator of the caller's is touched.

    Raises:
        CheckpointError: one line naming the file and the first array that does not fit.
    """
    dtype = next(iter(ckpt["params"].values())).dtype.name
    dtype = dtype if dtype in ("float32", "float64") else "float64"
    params, state = Model(model_config, get_backend("numpy", dtype=dtype, seed=0)).init()
    checkpoint.check_arrays(path, ckpt, params, state)


def check_same_run(run_dir, cfg: TrainConfig) -> None:
    """Refuse a checkpoint whose run differs from the folder's ``config.json``.

    Only the settings ``--resume`` cannot change are compared; a missing or
    unreadable ``config.json`` says nothing and passes.

    Raises:
        CheckpointError: one line naming both files and the first setting that differs.
    """
    try:
        saved = config_from_meta({"config": json.loads((Path(run_dir) / CONFIG).read_text())})
    except (OSError, ValueError, TypeError):
        return
    for name in (f.name for f in fields(TrainConfig)):
        if name in RESUMABLE or name in CIRCUMSTANCES:
            continue
        have, want = getattr(cfg, name), getattr(saved, name)
        if have != want:
            raise CheckpointError(
                f"{Path(run_dir) / CHECKPOINT} is not this folder's run: its {name} is "
                f"{have!r}, {Path(run_dir) / CONFIG} says {want!r}; put the run's own "
                "checkpoint back, or give that one a folder of its own")


def data_dir_of(cfg: TrainConfig, given=None):
    """Where a run's data is looked for: ``given`` (--data-dir), else the run's own folder.

    The folder saved with the run is used while it exists; otherwise None
    (the usual places, see lvae_np.data), since the files are checked by
    their hashes wherever they are found.
    """
    if given:
        return given
    if cfg.data_dir and Path(cfg.data_dir).is_dir():
        return cfg.data_dir
    return None


def load_run(run_dir, data_dir=None, *, backend: str = "auto", seed: int = 0,
             progress: bool = False) -> LoadedRun:
    """Load a run's checkpoint, its config and its data set.

    Args:
        run_dir: a folder written by ``lvae_np.train``.
        data_dir: folder with the data files (None: the run's own, see ``data_dir_of``).
        backend: "auto", "numpy" or "cupy" (falls back to NumPy with a warning).
        seed: seed of the backend's random numbers (the model's noise).
        progress: show progress bars while data is fetched.

    Returns:
        A ``LoadedRun`` with the checkpoint's batch-norm running averages.

    Raises:
        CheckpointError: no readable checkpoint, or one that is malformed or does
            not fit its own run config (``read_checkpoint``, ``check_model_arrays``).
        data.DataError: the run's data cannot be found or read.
    """
    path = Path(run_dir) / CHECKPOINT
    ckpt, cfg = read_checkpoint(run_dir)
    ds = data.load_dataset(cfg.dataset, data_dir_of(cfg, data_dir), validation=cfg.validation,
                           seed=cfg.seed, progress=progress)
    model_config = cfg.model_config(ds.train.shape[1], ds.likelihood)
    check_model_arrays(path, ckpt, model_config)
    be = get_backend(backend, dtype=cfg.dtype, seed=seed, noise=cfg.noise)
    model = Model(model_config, be, fast=True)   # the forms of the ops training runs
    params = {k: be.asarray(v) for k, v in ckpt["params"].items()}
    state = {k: be.asarray(v) for k, v in ckpt["state"].items()}
    return LoadedRun(model, params, state, ds, cfg, ckpt["meta"])


def evaluation_train_set(dataset: data.Dataset, limit: int | None = None) -> numpy.ndarray:
    """The training set as evaluations see it: binarised once, with ``EVAL_BINARIZATION_SEED``.

    Args:
        dataset: a run's data.
        limit: keep only the first ``limit`` examples (None: all).

    Returns:
        (N, x_dim) host array; the grey levels themselves when the data set is not
        binarised dynamically.
    """
    x = dataset.train[:limit] if limit else dataset.train
    if not dataset.dynamic_binarization:
        return x
    return data.binarize(x, numpy.random.default_rng(EVAL_BINARIZATION_SEED))
