"""Where a run stands, read from its folder: checkpoint, saved settings, evaluation, outcome.

A run folder ``RUNS_DIR/<run id>/`` holds what ``lvae_np.train`` and
``lvae_np.evaluate`` wrote there (see ``lvae_np.runs``): the checkpoint
(epochs done), the metrics, the status file (how the last training ended),
the stored test-set evaluations (``eval_path``) and ``train.log``.
:class:`RunRecord` gathers a run's state and what happened to it in one
invocation, and says it in words for the tables.

Every record is checked where it is read, by one reader per kind of file:
``read_eval`` (an evaluation), ``runs.load_status`` (the status file),
``check_logs`` (the CSV logs, by ``lvae_np.train``'s own ``metrics.RunLog``)
and ``saved_meta`` (the checkpoint). A record that is there but unusable is
a ``BadRecord``: one line naming the file and what to do. A bad stored
evaluation is never trusted: it counts as none, and is made again.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, fields
from pathlib import Path

from ..training.checkpoint import CheckpointError, load_meta
from ..training.config import RESUMABLE, TrainConfig, config_from_meta
from ..training.fileio import read_json
from ..training.metrics import LogError, RunLog
from ..training.runs import (CHECKPOINT, KL_UNITS, METRICS, STATUS, eval_file_name, load_status,
                    read_status, write_status)
from .specs import LOG, ExperimentError, RunSpec


class BadRecord(ExperimentError):
    """A run record that is there but cannot be used (one line naming the file and the fix)."""


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


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def eval_problem(result, iw_samples: int) -> str | None:
    """What makes ``result`` (a parsed evaluation file) unusable, or None when it is usable.

    An evaluation is what ``lvae_np.evaluate`` writes: a JSON object with the
    epoch, the number of examples, the ELBO, the KL and active units per layer
    as lists of numbers, and with K > 0 samples L_K, its standard error and K
    (each example's L_K, when there, one number per example).
    """
    if not isinstance(result, dict):
        return f"a JSON {type(result).__name__}, not an object"
    for key, ok, what in (("epoch", _is_int, "an integer"), ("n", _is_int, "an integer"),
                          ("elbo", _is_number, "a number")):
        if key not in result:
            return f"no {key!r}"
        if not ok(result[key]):
            return f"{key!r} is {result[key]!r}, not {what}"
    if result["epoch"] < 0 or result["n"] < 1:
        return f"epoch {result['epoch']} with {result['n']} examples"
    for key in ("limit", "subset"):
        if result.get(key) is not None and not _is_int(result[key]):
            return f"{key!r} is {result[key]!r}, not an integer"
    for key in ("kl", "active_units", "active_units_kl"):
        if key not in result and key != "active_units_kl":
            return f"no {key!r}"
        v = result.get(key, [])
        if not isinstance(v, list) or not all(_is_number(x) for x in v):
            return f"{key!r} is not a list of numbers"
    if iw_samples > 0:
        for key, ok, what in (("lk", _is_number, "a number"),
                              ("lk_stderr", _is_number, "a number"),
                              ("iw_samples", _is_int, "an integer")):
            if key not in result:
                return f"no {key!r}, though the file is of L_{iw_samples}"
            if not ok(result[key]):
                return f"{key!r} is {result[key]!r}, not {what}"
        per = result.get("lk_per_example")
        if per is not None and (not isinstance(per, list) or len(per) != result["n"]
                                or not all(_is_number(x) for x in per)):
            return f"'lk_per_example' is not a list of {result['n']} numbers"
    return None


def read_eval(run_dir, iw_samples: int, limit: int | None, subset: int | None = None,
              subset_seed: int = 0) -> dict | None:
    """The stored evaluation (any epoch), checked (``eval_problem``); None when there is none.

    Raises:
        BadRecord: the file is there but is not a usable evaluation (empty, not
            UTF-8 or JSON, or missing or malformed entries).
    """
    path = eval_path(run_dir, iw_samples, limit, subset, subset_seed)
    try:
        result = read_json(path, "a usable evaluation")
    except ValueError as exc:
        raise BadRecord(str(exc)) from None
    if result is None:
        return None
    problem = eval_problem(result, iw_samples)
    if problem is not None:
        raise BadRecord(f"{path} is not a usable evaluation ({problem})")
    return result


def cached_eval(run_dir, iw_samples: int, limit: int | None, epoch: int | None,
                subset: int | None = None, subset_seed: int = 0,
                problems: list | None = None) -> dict | None:
    """The stored evaluation when it is of ``epoch`` with the same K, limit, subset; or None.

    A stored file that is not a usable evaluation counts as none (it is made
    again); its ``BadRecord`` message is appended to ``problems`` when given.
    """
    try:
        result = read_eval(run_dir, iw_samples, limit, subset, subset_seed)
    except BadRecord as exc:
        if problems is not None:
            problems.append(str(exc))
        return None
    if result is None or result.get("epoch") != epoch or result.get("limit") != limit \
            or result.get("iw_samples", 0) != iw_samples or result.get("subset") != subset \
            or (subset and result.get("subset_seed") != subset_seed):
        return None
    return result


def last_test_elbo(run_dir) -> float | None:
    """The test ELBO of the last evaluated epoch in ``metrics.csv`` (running BN averages).

    None when there is none, or the file cannot be read (``check_logs`` says why).
    """
    try:
        with open(Path(run_dir) / METRICS, newline="", encoding="utf-8") as f:
            values = [r.get("test_elbo") or "" for r in csv.DictReader(f)]
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    for v in reversed(values):
        try:
            return float(v)
        except ValueError:
            continue
    return None


def check_status(run_dir) -> dict | None:
    """The run's status record (``runs.load_status``); None when there is no status file.

    Raises:
        BadRecord: the file is not a status record (one line naming it and the fix).
    """
    try:
        return load_status(run_dir)
    except ValueError as exc:
        raise BadRecord(f"{exc}; move it away (the run's next training writes it "
                        "again)") from None


_LOG_FIX = "put the run's own log back, or move it away (the results then go without it)"


def check_logs(run_dir, meta: dict) -> dict:
    """The text of each CSV log of the run that exists (metrics.csv, kl_units.csv), checked.

    Checked by ``lvae_np.train``'s own reader (``metrics.RunLog``) against the
    model and epoch of the checkpoint whose ``meta`` record is given: UTF-8,
    a header of that model, numbers in every cell.

    Raises:
        BadRecord: a log that is empty, unreadable or not the run's (one line
            naming the file and the fix).
    """
    run_dir = Path(run_dir)
    texts = {}
    for name in (METRICS, KL_UNITS):
        path = run_dir / name
        try:
            texts[name] = path.read_bytes().decode("utf-8")
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise BadRecord(f"{path} cannot be read ({exc.strerror or exc})") from None
        except UnicodeDecodeError:
            raise BadRecord(f"{path} is not a log: not UTF-8 text; {_LOG_FIX}") from None
        if not texts[name].strip():
            raise BadRecord(f"{path} is empty; {_LOG_FIX}")
    try:
        RunLog(run_dir, config_from_meta(meta).latent).sync(int(meta["epoch"]), meta.get("log"))
    except LogError as exc:
        raise BadRecord(str(exc)) from None
    return texts


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

    def settle_status(self) -> str | None:
        """Correct the status file of a complete run that says otherwise; what it said, or None.

        Complete: the checkpoint stands at the end of an epoch at or past both
        this invocation's target and its own training's. Such a run is
        "done", but a stop during its last evaluation (before lvae_np.train
        knew better), or a kill after its last checkpoint, left "interrupted"
        or "training", and an unreadable file says nothing; these are rewritten
        as ``{"state": "done", "epoch": E}``. A missing file and every other
        state are left alone. Call it only while this runner holds the run and
        no training works in it.
        """
        meta = saved_meta(self.run_dir)
        if meta is None or meta.get("batch", 0):
            return None
        epoch = int(meta["epoch"])
        if epoch < max(self.target, config_from_meta(meta).epochs) \
                or not (self.run_dir / STATUS).is_file():
            return None
        try:
            status = load_status(self.run_dir)
        except ValueError:
            status = None
        said = "nothing readable" if status is None else repr(status["state"])
        if status is not None and status["state"] not in ("interrupted", "training"):
            return None
        write_status(self.run_dir, "done", epoch)
        return said

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
