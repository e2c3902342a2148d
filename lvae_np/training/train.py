"""Train a VAE or Ladder VAE: ``python -m lvae_np.train [options]``.

The paper's protocol, by default: the 5-layer LVAE on MNIST (latent
64,32,16,8,4, hidden 512,256,128,64,32), batch norm, deterministic warm-up
over 200 epochs, Adam (lr 0.002, eps 1e-4), batch 256, dynamic binarisation
of the training set every epoch, up to 2000 epochs. Every epoch writes
``RUN_DIR/metrics.csv``, ``RUN_DIR/kl_units.csv`` and an atomic checkpoint;
Ctrl-C writes a checkpoint where it stopped, and ``--resume`` continues the
run exactly (bit for bit on NumPy). ``RUN_DIR/status.json`` says where the
run stands: training, done, diverged, interrupted or failed (see ``lvae_np.runs``).
``command_line`` builds the command that trains a given ``TrainConfig``.

Nothing is lost at the edges: the run folder is locked for the run's life
(``lvae_np.runlock``), temporaries of killed writes are removed on start,
the checkpoint is checked against the run before any work, the logs are
brought in step with it (``metrics.RunLog.sync``), a fresh run refuses a
folder holding run files it did not make (``runs.files_in_the_way``) and
any run file that is a FIFO or another non-regular file, and every failure (bad
input, a foreign checkpoint, a full or read-only disk, out of memory) is one
line on stderr that leaves the folder's files as they were. The run
remembers its ``--backend`` and ``--data-dir``; the loop itself is
``lvae_np.trainer``.

Examples::

    python -m lvae_np.train --backend cupy                        # the paper's run
    python -m lvae_np.train --epochs 10 --warmup-epochs 5 --out runs/quick
    python -m lvae_np.train --out runs/quick --resume --epochs 20  # go on to epoch 20
    python -m lvae_np.evaluate runs/quick --iw-samples 5000
"""
from __future__ import annotations

import os
import shlex
import signal
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

from .. import data
from ..backend import get_backend
from .checkpoint import CheckpointError
from .cli import (Parser, UsageError, entry, fail, folder_path, memory_hint, memory_message,
                  os_error_message, plain_warnings)
from .config import (CIRCUMSTANCES, PRESETS, RESUMABLE, TrainConfig, check_options,
                     option_flag)
from .evaluate import evaluate_run
from .fileio import atomic_write_many, remove_stale_temporaries, special_file
from .metrics import LogError
from .options import OPTIONS, add_options, config_values, given
from .runlock import RunInUse, RunLock
from .runs import (CHECKPOINT, CONFIG, RUN_FILES, check_same_run, data_dir_of,
                   files_in_the_way, read_checkpoint, saved_meta, write_status)
from .trainer import EvaluationStopped, NonFiniteLoss, StopNow, Trainer

PROG = "lvae_np.train"
MEMORY_HINT = "the model or a batch is too large for this machine: choose smaller --hidden, " \
              "--latent or --batch-size"
MODEL_MEMORY_HINT = "the model is too large for this machine: choose smaller --hidden or --latent"


# ----------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------
def build_parser() -> Parser:
    """The command line of ``python -m lvae_np.train``: one option per ``TrainConfig`` field.

    The options that set the config are defined once, in ``lvae_np.training.options``
    (``lvae_np.experiments`` takes some of them too); ``--out`` and ``--resume`` are this
    command's own.
    """
    p = Parser(prog="python -m lvae_np.train",
               description="Train a Ladder VAE (or the bottom-up hierarchical VAE) with "
                           "hand-written gradients. Defaults follow the paper's MNIST protocol.")
    add_options(p, [name for name in OPTIONS if name != "no_progress"],
                notes={"epochs": "with --resume: the new total"})
    p.add_argument("--out", metavar="RUN_DIR", type=folder_path,
                   help="folder for checkpoint, metrics and config (default: runs/<model>-"
                        "<dataset>-<date>-<time>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint; only "
                        + ", ".join(map(option_flag, RESUMABLE)) + " may change")
    add_options(p, ["no_progress"])
    return p


def parse_args(argv=None):
    """Parse and validate the command line: (TrainConfig, other options).

    The checks are ``config.check_options``', the same as ``lvae_np.experiments``'.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.preset:
        parser.set_defaults(**PRESETS[args.preset])
        args = parser.parse_args(argv)
    cfg = TrainConfig(**config_values(args, [f.name for f in fields(TrainConfig)
                                             if f.name in OPTIONS]))
    try:
        check_options(vars(cfg), trains=not args.resume)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.resume and not args.out:
        raise UsageError("--resume needs --out RUN_DIR: the run to continue")
    return cfg, args


def command_line(cfg: TrainConfig, out, *, resume: bool = False, backend: str | None = None,
                 data_dir=None, progress: bool = False) -> list[str]:
    """The command that trains ``cfg`` into ``out``, or continues that run to ``cfg.epochs``.

    A fresh run's command spells out every field of ``cfg`` (each has the
    option of the same name, see ``build_parser``; ``data_variant`` is filled
    in by training), so ``parse_args(command_line(cfg, out)[3:])`` gives back
    ``cfg``. A resumed run takes its settings from its checkpoint:
    ``--out OUT --epochs N --resume``, with ``--backend`` and ``--data-dir``.

    Args:
        cfg: the run's config.
        out: the run folder (``--out``).
        resume: continue the run in ``out`` instead of starting it.
        backend: ``--backend`` (None: ``cfg.backend``).
        data_dir: ``--data-dir`` (None: ``cfg.data_dir``; not given when that is None too).
        progress: progress bars (else ``--no-progress``).

    Returns:
        ``[sys.executable, "-m", "lvae_np.train", ...]``, ready for ``subprocess``.
    """
    cmd = [sys.executable, "-m", "lvae_np.train", "--out", str(out)]
    if resume:
        cmd += ["--epochs", str(cfg.epochs), "--resume"]
    else:
        for f in fields(TrainConfig):
            if f.name in CIRCUMSTANCES:
                continue
            value, option = getattr(cfg, f.name), option_flag(f.name)
            if isinstance(value, bool):
                cmd.append(option if value else "--no-" + option[2:])
            elif isinstance(value, (tuple, list)):
                cmd += [option, ",".join(map(str, value))]
            else:
                cmd += [option, str(value)]
    cmd += ["--backend", backend or cfg.backend]
    if data_dir or cfg.data_dir:
        cmd += ["--data-dir", str(data_dir or cfg.data_dir)]
    return cmd if progress else cmd + ["--no-progress"]


@entry(PROG, errors=(CheckpointError, data.DataError, LogError, RunInUse),
       memory_hint=MEMORY_HINT)
def main(argv=None) -> int:
    """The command line; returns the exit status.

    0 done; 1 diverged, or could not write (full or read-only disk) or
    allocate; 2 bad input (options, checkpoint, logs, data, a folder in use);
    130 stopped by Ctrl-C or SIGTERM. Every failure is one line on stderr and
    leaves the run folder's files as they were, save ``status.json``.
    """
    cfg, args = parse_args(argv)
    plain_warnings()
    run_dir = Path(args.out) if args.out else Path("runs") / \
        f"{cfg.model}-{cfg.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    for folder in (run_dir, *run_dir.parents):
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"--out {run_dir}: {folder} is a file, not a folder; choose "
                             "another --out")
    created = [folder for folder in (run_dir, *run_dir.parents) if not folder.exists()]
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = RunLock(run_dir)
    try:
        lock.acquire()
        return _train(cfg, args, run_dir)
    finally:
        lock.release()
        for folder in created:  # a run that failed before writing anything leaves nothing
            try:
                folder.rmdir()  # only when empty
            except OSError:
                break


def _train(cfg: TrainConfig, args, run_dir: Path) -> int:
    """Train in ``run_dir``, whose lock this process holds (see ``main``)."""
    for name in RUN_FILES:  # a FIFO would block the reads below for ever
        kind = special_file(run_dir / name)
        if kind:
            return fail(PROG, f"{run_dir / name} is {kind}, not a regular file: lvae_np.train "
                              "reads and replaces only regular files; move it away")
    removed = remove_stale_temporaries(run_dir, RUN_FILES)
    if removed:
        print(f"lvae_np.train: note: removed {len(removed)} temporary file(s) of interrupted "
              f"writes ({sum(size for _, size in removed) / 1e6:.1f} MB) from {run_dir}",
              flush=True)
    ckpt = None
    if args.resume:
        ckpt, saved = read_checkpoint(run_dir)
        ignored = [f.name for f in fields(TrainConfig)
                   if f.name not in RESUMABLE and f.name in given(args)]
        if ignored:
            print("lvae_np.train: note: --resume keeps the run's saved "
                  + ", ".join(map(option_flag, ignored)), flush=True)
        changed = {k: getattr(cfg, k) for k in RESUMABLE if k in given(args)}
        cfg = TrainConfig(**{**asdict(saved), **changed})
        check_same_run(run_dir, cfg)
    elif (run_dir / CHECKPOINT).exists():
        raise UsageError(f"{run_dir} already holds a run: add --resume to continue it, "
                         "or choose another --out")
    elif in_the_way := files_in_the_way(run_dir):
        more = f" (and {len(in_the_way) - 1} more run file(s))" if len(in_the_way) > 1 else ""
        return fail(PROG, f"{in_the_way[0]}{more} would be replaced by a fresh run: {run_dir} "
                          "holds a run's files but no checkpoint; choose another --out, or "
                          "move them away (if they are a run's whose checkpoint.npz was moved, "
                          "put it back and add --resume)")
    if args.data_dir:
        cfg.data_dir = os.path.abspath(os.path.expanduser(args.data_dir))
    try:
        backend = get_backend(cfg.backend, dtype=cfg.dtype, seed=cfg.seed, noise=cfg.noise)
        with memory_hint(f"the {cfg.dataset} data set does not fit in this machine's memory "
                         "(no option makes it smaller)"):
            ds = data.load_dataset(cfg.dataset, args.data_dir or data_dir_of(cfg),
                                   validation=cfg.validation, seed=cfg.seed,
                                   progress=not args.no_progress)
    except ValueError as exc:
        return fail(PROG, exc)
    if cfg.drop_last and ds.train.shape[0] < cfg.batch_size:
        return fail(PROG, f"--drop-last with --batch-size {cfg.batch_size} leaves no batch of "
                          f"the {ds.train.shape[0]} training examples: choose a smaller "
                          "--batch-size", status=2)
    cfg.data_variant = ds.variant
    trainer = Trainer(cfg, run_dir, backend, ds,
                      progress=sys.stdout.isatty() and not args.no_progress)
    with memory_hint(MODEL_MEMORY_HINT):
        if ckpt is None:
            trainer.fresh()
        else:
            trainer.restore(ckpt)
    # The checkpoint says where the run stands (the start of a fresh one): the logs follow it.
    stale = trainer.log.sync(trainer.pos.epoch, trainer.last_log)
    if ckpt is None:  # a resume rewrites it with its first checkpoint (Trainer.run)
        atomic_write_many([(run_dir / CONFIG, trainer.config_writer())])
    if stale:
        atomic_write_many(trainer.log.writers(stale))
    print(f"lvae_np.train: {cfg.model.upper()} on {ds.variant}; backend {backend.name} "
          f"({cfg.dtype}); run folder {run_dir}; epoch {trainer.pos.epoch} of {cfg.epochs}",
          flush=True)
    # Ctrl-C (or SIGTERM) asks the trainer to stop at the next batch boundary, so
    # the checkpoint is consistent; a second one stops at once, abandoning any write.
    # One during an epoch's test evaluation abandons it at once, keeping the epoch.
    def request_stop(signum, frame):
        if trainer.stop_requested:
            raise StopNow
        trainer.stop_requested = True
        if trainer.evaluating:
            raise EvaluationStopped

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        write_status(run_dir, "training", trainer.pos.epoch)
        try:
            with memory_hint(_step_memory_hint(cfg)):
                trainer.run()
        except KeyboardInterrupt:
            trainer.save()
            write_status(run_dir, "interrupted", trainer.pos.epoch, batch=trainer.pos.batch)
            print(f"\nlvae_np.train: interrupted in epoch {trainer.pos.epoch + 1} after batch "
                  f"{trainer.pos.batch}; checkpoint written. Continue with:\n"
                  f"  {resume_command(run_dir, cfg)}", file=sys.stderr)
            return 130
    except StopNow:
        return fail(PROG, f"stopped at once by a second signal; {_where(run_dir, cfg)}",
                    status=130)
    except NonFiniteLoss as exc:
        write_status(run_dir, "diverged", exc.epoch)
        return fail(PROG, f"{exc}; {_where(run_dir, cfg, resume=False)}; try a smaller --lr "
                          "or --max-grad-norm", status=1)
    except OSError as exc:
        return fail(PROG, f"{os_error_message(exc)}; {_where(run_dir, cfg)}", status=1)
    except MemoryError as exc:
        reason = memory_message(exc, MEMORY_HINT)
        try:
            write_status(run_dir, "failed", trainer.pos.epoch, reason=reason)
        except OSError:
            pass  # the one line below says it all
        return fail(PROG, f"{reason}; {_where(run_dir, cfg)}", status=1)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    write_status(run_dir, "done", trainer.pos.epoch)
    if cfg.final_iw_samples > 0:
        later = (f"the run is done: evaluate it with python -m lvae_np.evaluate "
                 f"{shlex.quote(str(run_dir))} --iw-samples {cfg.final_iw_samples}")
        if trainer.stop_requested:  # asked during the last epoch: do not start another wait
            return fail(PROG, f"stopped before the final evaluation; {later}", status=130)
        term = signal.signal(signal.SIGTERM, signal.default_int_handler)  # as Ctrl-C
        try:
            result = evaluate_run(run_dir, iw_samples=cfg.final_iw_samples, backend=cfg.backend,
                                  data_dir=args.data_dir, progress=trainer.progress,
                                  options=FINAL_EVALUATION_OPTIONS)
        except KeyboardInterrupt:
            return fail(PROG, f"interrupted in the final evaluation; {later}", status=130)
        finally:
            signal.signal(signal.SIGTERM, term)
        print(f"lvae_np.train: test L_{cfg.final_iw_samples} = {result['lk']:.3f}", flush=True)
    return 0


# lvae_np.evaluate's options as this command has them, for the final L_k's memory hints
FINAL_EVALUATION_OPTIONS = {"--iw-samples": "--final-iw-samples", "--bn": "--bn-stats",
                            "--au-samples": None, "--batch-size": None}


def _step_memory_hint(cfg: TrainConfig) -> str:
    """What to do when a training step runs out of memory: the options that size its batch."""
    rows = "--batch-size or --iw-samples (a step holds batch-size x iw-samples rows)" \
        if cfg.iw_samples > 1 else "--batch-size"
    return f"a training step is too large for this machine: choose a smaller {rows}, or " \
           "smaller --hidden"


def resume_command(run_dir, cfg: TrainConfig) -> str:
    """The command that continues the run in ``run_dir``, with its backend and data folder."""
    cmd = ["python", "-m", "lvae_np.train", "--out", str(run_dir), "--resume"]
    if cfg.backend != "auto":
        cmd += ["--backend", cfg.backend]
    if cfg.data_dir:
        cmd += ["--data-dir", cfg.data_dir]
    return shlex.join(cmd)


def _where(run_dir: Path, cfg: TrainConfig, resume: bool = True) -> str:
    """Where the run stands on disk after a failure, and how to go on, for one-line messages."""
    meta = saved_meta(run_dir)
    if meta is None:
        return f"no checkpoint was written yet in {run_dir}"
    batch = f", batch {meta.get('batch')}" if meta.get("batch") else ""
    where = (f"the checkpoint {run_dir / CHECKPOINT} (epoch {meta['epoch']}{batch} done) "
             "is intact")
    return where + (f"; continue with: {resume_command(run_dir, cfg)}" if resume else "")


if __name__ == "__main__":
    sys.exit(main())
