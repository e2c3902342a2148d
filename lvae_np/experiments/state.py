"""Where a run stands, read from its folder: checkpoint, saved settings, evaluation, outcome.

A run folder ``RUNS_DIR/<run id>/`` holds what ``lvae_np.train`` and
``lvae_np.evaluate`` wrote there (see ``lvae_np.runs``): the checkpoint
(epochs done), the metrics, the status file (how the last training ended),
the stored test-set evaluations (``eval_path``) and ``train.log``.
:class:`RunRecord` gathers a run's state and what happened to it in one
invocation, and says it in words for the tables.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, fields
from pathlib import Path

from ..checkpoint import CheckpointError, load_meta
from ..config import RESUMABLE, TrainConfig, config_from_meta
from ..runs import CHECKPOINT, METRICS, eval_file_name, read_status
from .specs import LOG, ExperimentError, RunSpec


def saved_meta(run_dir) -> dict | None:
    """The ``meta`` record of ``run_dir``'s checkpoint (config, epoch, batch), or None.

    Reads only that record, not the arrays.

    Raises:
        ExperimentError: the checkpoint exists but cannot be read, or holds no
            usable run config.
    """
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        return None
    try:
        meta = load_meta(path)
        config_from_meta(meta)
    except (CheckpointError, ValueError) as exc:
        where = "" if isinstance(exc, CheckpointError) else f"{path}: "  # its message names it
        raise ExperimentError(f"{where}{exc}; move it away to train that run afresh") from None
    return meta


def config_mismatches(expected: TrainConfig, meta: dict) -> list:
    """(setting, saved value, wanted value) for each setting --resume cannot change."""
    saved = config_from_meta(meta)
    out = []
    for f in fields(TrainConfig):
        if f.name in RESUMABLE or f.name == "data_variant":
            continue
        have, want = getattr(saved, f.name), getattr(expected, f.name)
        if have != want:
            out.append((f.name, have, want))
    return out


def eval_path(run_dir, iw_samples: int, limit: int | None, subset: int | None = None,
              subset_seed: int = 0) -> Path:
    """Where a run's test-set evaluation with K samples (and a limit or subset) is kept."""
    return Path(run_dir) / eval_file_name("test", iw_samples, limit, subset, subset_seed)


def read_eval(run_dir, iw_samples: int, limit: int | None, subset: int | None = None,
              subset_seed: int = 0) -> dict | None:
    """The stored evaluation (any epoch), or None when there is none or it is unreadable."""
    path = eval_path(run_dir, iw_samples, limit, subset, subset_seed)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def cached_eval(run_dir, iw_samples: int, limit: int | None, epoch: int | None,
                subset: int | None = None, subset_seed: int = 0) -> dict | None:
    """The stored evaluation when it is of ``epoch`` with the same K, limit, subset; or None."""
    result = read_eval(run_dir, iw_samples, limit, subset, subset_seed)
    if result is None or result.get("epoch") != epoch or result.get("limit") != limit \
            or result.get("iw_samples", 0) != iw_samples or result.get("subset") != subset \
            or (subset and result.get("subset_seed") != subset_seed):
        return None
    return result


def last_test_elbo(run_dir) -> float | None:
    """The test ELBO of the last evaluated epoch in ``metrics.csv`` (running BN averages)."""
    try:
        with open(Path(run_dir) / METRICS, newline="") as f:
            values = [r.get("test_elbo") or "" for r in csv.DictReader(f)]
    except OSError:
        return None
    for v in reversed(values):
        try:
            return float(v)
        except ValueError:
            continue
    return None


def format_number(v, digits: int = 2) -> str:
    """``v`` with ``digits`` decimals, or "-" for None and NaN (a missing value)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}f}"


@dataclass
class RunRecord:
    """What happened to one run in this invocation, and where it stands."""

    spec: RunSpec
    run_id: str
    run_dir: Path
    target: int
    epoch: int | None = None          # epochs done (None: no checkpoint)
    batch: int = 0                    # batches done in the epoch under way
    trained: bool = False             # a training ran in this invocation
    evaluated: bool = False           # an evaluation ran in this invocation
    eval: dict | None = None          # the evaluation of the current checkpoint
    train_failed: bool = False
    eval_failed: bool = False
    interrupted: bool = False
    diverged_at: int | None = None
    seconds: float = 0.0
    seed: int = 0                     # the seed it is trained (and its L_K sampled) with

    @property
    def failed(self) -> bool:
        """Failed for a reason other than divergence."""
        return self.train_failed or self.eval_failed

    @property
    def status(self) -> str:
        """Where the run stands, in words (the table's status column)."""
        if self.train_failed:
            text = f"failed, see {LOG}"
        elif self.diverged_at is not None:
            text = f"diverged at epoch {self.diverged_at}"
        elif self.epoch is None:
            text = "not started"
        elif self.interrupted or self.batch:
            text = f"interrupted in epoch {self.epoch + 1}"
        elif self.epoch >= self.target:
            text = "done"
        else:
            text = f"stopped at epoch {self.epoch} of {self.target}"
        if self.eval_failed:
            text += f"; evaluation failed, see {LOG}"
        return text

    def refresh(self) -> None:
        """Re-read epochs done from the checkpoint."""
        meta = saved_meta(self.run_dir)
        self.epoch, self.batch = (None, 0) if meta is None else (int(meta["epoch"]),
                                                                 int(meta.get("batch", 0)))

    def note_divergence(self) -> None:
        """Mark the run as diverged when its status file says so and it has not moved since.

        ``lvae_np.train`` writes "diverged" with the epoch that diverged, the
        checkpoint holding the end of the epoch before; any later training
        rewrites the file. A run folder without a status file (one trained
        before there was one) is judged from its checkpoint alone.
        """
        if self.diverged_at is not None or self.train_failed:
            return
        status = read_status(self.run_dir)
        if status is not None and status["state"] == "diverged" \
                and (self.epoch or 0) == status["epoch"] - 1 and not self.batch:
            self.diverged_at = status["epoch"]

    def line(self, iw_samples: int) -> str:
        """One line for the log: id, status, epoch, last test ELBO, L_K, seconds."""
        elbo = last_test_elbo(self.run_dir)
        parts = [self.run_id, self.status,
                 f"epoch {'-' if self.epoch is None else self.epoch}/{self.target}",
                 f"test ELBO {format_number(elbo)}"]
        if self.eval and "lk" in self.eval:
            parts.append(f"L_{iw_samples} {self.eval['lk']:.2f}")
        parts.append(f"{self.seconds:.0f} s")
        return " | ".join(parts)
