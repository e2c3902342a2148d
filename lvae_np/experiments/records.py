"""Each run's small records copied beside the results: settings, logs, evaluation; no checkpoint.

With ``--publish`` the runner copies, for every run of the experiment, what
``lvae_np.train`` and ``lvae_np.evaluate`` wrote to its folder (``config.json``,
``metrics.csv``, ``kl_units.csv``, ``status.json`` and the evaluation the
tables came from) into ``OUT/runs/<run id>/``, so that the committed results
keep the per-seed numbers behind every mean, and anyone can recompute them.
The checkpoints (about 22 MB each) and ``train.log`` stay behind.

The copies name no folder of this machine: in the JSON files, the data
folder becomes ``<data-dir>`` and the runs folder ``<runs-dir>``. Nothing else
changes, so the values are those the tables were made from.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from ..config import config_as_dict, config_from_meta
from ..fileio import atomic_write_text
from ..runs import CONFIG, KL_UNITS, METRICS, STATUS
from .state import eval_path, saved_meta

RUNS = "runs"                               # OUT/runs/<run id>/
COPIED = (CONFIG, METRICS, KL_UNITS, STATUS)  # besides the evaluation, when present
DATA_DIR = "<data-dir>"
RUNS_DIR = "<runs-dir>"
_FILES_FROM = re.compile(r"(files from )(.+)/([^/]+)$")   # data_variant: "... files from DIR/NAME"


def _portable(value, runs_dirs: tuple):
    """``value`` (parsed JSON) with this machine's data and runs folders replaced by names.

    ``runs_dirs``: the runs folder as the commands named it (relative or absolute).
    """
    if isinstance(value, dict):
        return {k: _portable(v, runs_dirs) for k, v in value.items()}
    if isinstance(value, list):
        return [_portable(v, runs_dirs) for v in value]
    if isinstance(value, str):
        for runs_dir in runs_dirs:
            if value == runs_dir or value.startswith(runs_dir + "/"):
                return RUNS_DIR + value[len(runs_dir):]
        return _FILES_FROM.sub(lambda m: f"{m.group(1)}{DATA_DIR}/{m.group(3)}", value)
    return value


def copy_text(src: Path, dest: Path, runs_dirs: tuple) -> None:
    """Copy one record; a JSON file with its machine-specific folders replaced."""
    text = src.read_text()
    if src.suffix == ".json":
        text = json.dumps(_portable(json.loads(text), runs_dirs), indent=2) + "\n"
    atomic_write_text(dest, text)


def publish_records(records: list, out: Path, settings) -> list:
    """Copy each evaluated run's records to ``out/runs/<run id>/``; the paths written.

    Args:
        records: the runs (``RunRecord``); those without an evaluation are skipped.
        out: the results folder.
        settings: the invocation's ``Settings`` (which evaluation the tables used).

    Returns:
        The files written, in order.
    """
    runs_dirs = tuple(dict.fromkeys(str(p).rstrip("/") for p in (
        Path(settings.runs_dir).resolve(), settings.runs_dir)))
    written = []
    for rec in records:
        if rec.eval is None:
            continue
        evaluation = eval_path(rec.run_dir, settings.iw_samples, *settings.eval_name())
        dest = Path(out) / RUNS / rec.run_id
        dest.mkdir(parents=True, exist_ok=True)
        meta = saved_meta(rec.run_dir)
        for src in [Path(rec.run_dir) / name for name in COPIED] + [evaluation]:
            if src.name == CONFIG and meta is not None:
                # The checkpoint's config: the settings the run ended with (a run folder
                # written before train rewrote config.json on resume may hold older ones).
                saved = config_as_dict(config_from_meta(meta))
                text = json.dumps(_portable(saved, runs_dirs), indent=2) + "\n"
                atomic_write_text(dest / CONFIG, text)
            elif src.is_file():
                copy_text(src, dest / src.name, runs_dirs)
            else:
                continue
            written.append(dest / src.name)
    return written
