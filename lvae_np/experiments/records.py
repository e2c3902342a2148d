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

Every record is read and checked (``record_files``) before anything is
written, and a results folder is replaced whole (``replace_folder``): the new
one is written beside it and swapped in when complete, so no file of an
earlier invocation survives, a failure leaves the old folder as it was, and
nothing outside the folder is touched.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from ..training.config import config_as_dict, config_from_meta
from ..training.fileio import atomic_write_text, fsync_dir
from ..training.runs import CONFIG, KL_UNITS, METRICS, STATUS
from .specs import ExperimentError
from .state import check_logs, check_status, eval_path, saved_meta

RUNS = "runs"                               # OUT/runs/<run id>/
COPIED = (CONFIG, METRICS, KL_UNITS, STATUS)  # besides the evaluation, when present
RESULT_SUFFIXES = (".md", ".csv", ".png")     # what write_results puts in a results folder
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


def record_files(records: list, settings) -> dict:
    """Each evaluated run's records as they are to be published, every one read and checked.

    The checkpoint's config (the settings the run ended with), the CSV logs
    as they are (``state.check_logs``: those of every run with a checkpoint
    are checked, since the figures read them), the status file
    (``state.check_status``) and the evaluation the tables were made from.

    Args:
        records: the runs (``RunRecord``); those without an evaluation are not copied.
        settings: the invocation's ``Settings`` (which evaluation the tables used).

    Returns:
        {path relative to the results folder: text}, in order.

    Raises:
        ExperimentError: a record that cannot be published (``state.BadRecord``:
            one line naming the file and the fix), or an unreadable checkpoint.
    """
    runs_dirs = tuple(dict.fromkeys(str(p).rstrip("/") for p in (
        Path(settings.runs_dir).resolve(), settings.runs_dir)))
    dump = lambda value: json.dumps(_portable(value, runs_dirs), indent=2) + "\n"  # noqa: E731
    files = {}
    for rec in records:
        meta = saved_meta(rec.run_dir)
        logs = check_logs(rec.run_dir, meta) if meta is not None else {}
        if rec.eval is None:
            continue
        dest = Path(RUNS) / rec.run_id
        if meta is not None:
            # The checkpoint's config: the settings the run ended with (a run folder
            # written before train rewrote config.json on resume may hold older ones).
            files[dest / CONFIG] = dump(config_as_dict(config_from_meta(meta)))
        for name in (METRICS, KL_UNITS):
            if name in logs:
                files[dest / name] = logs[name]
        status = check_status(rec.run_dir)
        if status is not None:
            files[dest / STATUS] = dump(status)
        evaluation = eval_path(rec.run_dir, settings.iw_samples, *settings.eval_name())
        files[dest / evaluation.name] = dump(rec.eval)   # the very record the tables used
    return files


def publish_records(records: list, out: Path, settings) -> list:
    """Copy each evaluated run's records to ``out/runs/<run id>/``; the paths written.

    Every record is read and checked first (``record_files``), so a bad one
    stops the copy before any file is written.

    Args:
        records: the runs (``RunRecord``); those without an evaluation are skipped.
        out: the results folder.
        settings: the invocation's ``Settings`` (which evaluation the tables used).

    Returns:
        The files written, in order.
    """
    written = []
    for rel, text in record_files(records, settings).items():
        atomic_write_text(Path(out) / rel, text)
        written.append(Path(out) / rel)
    return written


def check_results_folder(out: Path) -> None:
    """Refuse to replace a folder that holds more than results (``write_results``, ``RUNS``).

    Raises:
        ExperimentError: ``out`` is a file, or holds something an invocation
            does not write there (one line naming it).
    """
    out = Path(out)
    if not out.exists() and not out.is_symlink():
        return
    if out.is_symlink() or not out.is_dir():
        raise ExperimentError(f"--out {out} is not a folder: choose another --out")

    def ours(p: Path) -> bool:
        if p.is_symlink():
            return False
        if p.name == RUNS and p.is_dir():
            return all(run.is_dir() and not run.is_symlink()
                       and all(f.is_file() and not f.is_symlink() for f in run.iterdir())
                       for run in p.iterdir())
        return p.is_file() and p.suffix in RESULT_SUFFIXES

    for p in sorted(out.iterdir()):
        if not ours(p):
            raise ExperimentError(
                f"{out} holds {p.name}, which lvae_np.experiments does not write there; results "
                f"replace their folder whole: move {p.name} away, or choose another --out")


def replace_folder(out: Path, fill):
    """Make the folder ``out`` anew with ``fill(folder)``; returns what ``fill`` returns.

    ``fill`` writes the new content into a fresh hidden folder beside ``out``;
    only when it has succeeded is the old ``out`` renamed aside, the new one
    renamed in, and the old one removed. No file of the old folder survives,
    a failure (in ``fill`` or a rename) leaves ``out`` as it was, and nothing
    else in ``out``'s parent is touched. ``check_results_folder`` is asked first.

    Raises:
        ExperimentError: ``check_results_folder``'s refusal.
        OSError: a write or rename failed (``out`` unchanged).
    """
    out = Path(out)
    check_results_folder(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    new = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".new", dir=out.parent))
    try:
        result = fill(new)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(new, 0o777 & ~umask)   # mkdtemp's folder is private; a plain one is wanted
        old = None
        if out.exists():
            old = Path(tempfile.mktemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.rename(out, old)
        try:
            os.rename(new, out)
        except OSError:
            if old is not None:
                os.rename(old, out)
            raise
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    fsync_dir(out.parent)
    return result
