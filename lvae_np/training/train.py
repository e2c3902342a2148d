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

import argparse
import os
import shlex
import signal
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

from .. import data
from ..backend import BACKENDS, DTYPES, NOISE, get_backend
from .checkpoint import CheckpointError
from .cli import (Parser, UsageError, entry, fail, folder_path, memory_hint, memory_message,
                  os_error_message, plain_warnings, positive_ints)
from .config import (BN_STATS, CIRCUMSTANCES, GENERATIVE_WIDTHS, INITS, PRESETS, RESUMABLE,
                     TrainConfig, check_config)
from .evaluate import evaluate_run
from .fileio import atomic_write_many, remove_stale_temporaries, special_file
from .metrics import LogError
from ..models import KL_ESTIMATORS
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
    """The command line of ``python -m lvae_np.train``: one option per ``TrainConfig`` field."""
    d = TrainConfig()
    p = Parser(prog="python -m lvae_np.train",
               description="Train a Ladder VAE (or the bottom-up hierarchical VAE) with "
                           "hand-written gradients. Defaults follow the paper's MNIST protocol.")
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="a named protocol; options given explicitly override it. paper-mnist: "
                        "2000 epochs, warm-up 200, batch norm, test L_5000 at the end. "
                        "original-code: the released code's choices (head batch norm, "
                        "unshared top-down path, only mu up, its widths, init and bn eps "
                        "1e-10, clipping 4 then 0.9, drop last, MC KL, lr 2e-4)")
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="cupy runs on the GPU; without CuPy or a GPU it warns and uses NumPy")
    p.add_argument("--noise", choices=NOISE, default=d.noise,
                   help="with CuPy: draw the training noise and the binarisation on the device "
                        "(device), or on the host with NumPy's generator and copy it over "
                        "(host: NumPy's numbers, for parity checks; slower). No effect on NumPy")
    p.add_argument("--model", choices=("lvae", "vae"), default=d.model,
                   help="lvae: top-down inference; vae: bottom-up inference")
    p.add_argument("--dataset", choices=data.DATASETS, default=d.dataset,
                   help="mnist and omniglot: Bernoulli output; norb: Gaussian output; "
                        "synthetic: tiny, for smoke tests")
    p.add_argument("--data-dir", help=f"folder with the data files (also ${data.ENV_VAR}; "
                                      "default: the repository's data/, then the cache)")
    p.add_argument("--latent", type=positive_ints, default=d.latent, metavar="D1,D2,...",
                   help="sizes of z_1 .. z_L")
    p.add_argument("--hidden", type=positive_ints, default=d.hidden, metavar="H1,H2,...",
                   help="width of the deterministic block under each z_i")
    p.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, default=d.batch_norm,
                   help="Dense -> BatchNorm -> leaky ReLU blocks (else Dense -> leaky ReLU)")
    p.add_argument("--warmup-epochs", type=int, default=d.warmup_epochs,
                   help="beta rises linearly from 0 to 1 over this many epochs (0: none)")
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps,
                   help="beta rises linearly from 0 to 1 over this many optimizer steps, "
                        "step by step (0: none); given alone it sets --warmup-epochs to 0")
    p.add_argument("--epochs", type=int, default=d.epochs,
                   help="train until this many epochs are done (with --resume: the new total)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="examples per step")
    p.add_argument("--lr", type=float, default=d.lr, help="Adam's step size")
    p.add_argument("--max-grad-norm", type=float, default=d.max_grad_norm,
                   help="clip the total gradient norm to this (0: no clipping)")
    p.add_argument("--clip-elementwise", type=float, default=d.clip_elementwise,
                   help="then clip each gradient element to +-this (0: no clipping)")
    p.add_argument("--drop-last", action=argparse.BooleanOptionalAction, default=d.drop_last,
                   help="drop the last partial batch of each epoch")
    p.add_argument("--iw-samples", type=int, default=d.iw_samples,
                   help="importance samples per example in the training objective "
                        "(1: the warm-up ELBO; >1: the IWAE bound, MC KL)")
    p.add_argument("--kl", choices=KL_ESTIMATORS, default=d.kl,
                   help="KL estimator: analytic where exact (LVAE every layer, VAE top "
                        "layer), or mc (single-sample) everywhere")
    p.add_argument("--head-batch-norm", action=argparse.BooleanOptionalAction,
                   default=d.head_batch_norm,
                   help="batch norm on every Gaussian head of q and p (not the x output)")
    p.add_argument("--shared-top-down", action=argparse.BooleanOptionalAction,
                   default=d.shared_top_down,
                   help="LVAE: the top-down inference path shares the generative model's "
                        "blocks (else its own MLP)")
    p.add_argument("--only-mu-up", action=argparse.BooleanOptionalAction,
                   default=d.only_mu_up,
                   help="each bottom-up block reads the previous layer's mu_hat (else the "
                        "previous block's output)")
    p.add_argument("--generative-widths", choices=GENERATIVE_WIDTHS,
                   default=d.generative_widths,
                   help="LVAE generative blocks: mirror (the VAE's) or original (the "
                        "released code's, width hidden[i-1])")
    p.add_argument("--init", choices=INITS, default=d.init,
                   help="glorot-uniform (gain 1, zero biases) or original (the released "
                        "code's)")
    p.add_argument("--bn-eps", type=float, default=d.bn_eps, help="batch norm's epsilon")
    p.add_argument("--bn-stats", choices=BN_STATS, default=d.bn_stats,
                   help="the batch-norm statistics lvae_np.evaluate and lvae_np.plots use by "
                        "default: recollect (the mean of the training set's batch statistics) "
                        "or single-pass (the whole training set as one batch, as the released "
                        "code)")
    p.add_argument("--eval-every", type=int, default=d.eval_every,
                   help="evaluate test ELBO and active units every N epochs")
    p.add_argument("--eval-iw-samples", type=int, default=d.eval_iw_samples,
                   help="also estimate test L_k with this many samples at evaluations (0: no)")
    p.add_argument("--final-iw-samples", type=int, default=d.final_iw_samples,
                   help="estimate test L_k with this many samples when training ends (0: no)")
    p.add_argument("--validation", type=int, default=d.validation,
                   help="hold out this many training examples as a validation split")
    p.add_argument("--dtype", choices=DTYPES, default=d.dtype, help="floating-point precision")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of everything random")
    p.add_argument("--out", metavar="RUN_DIR", type=folder_path,
                   help="folder for checkpoint, metrics and config (default: runs/<model>-"
                        "<dataset>-<date>-<time>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint; only "
                        + ", ".join("--" + o.replace("_", "-") for o in RESUMABLE)
                        + " may change")
    p.add_argument("--no-progress", action="store_true", help="plain log lines, no bars")
    return p


def parse_args(argv=None):
    """Parse and validate the command line: (TrainConfig, other options)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.preset:
        parser.set_defaults(**PRESETS[args.preset])
        args = parser.parse_args(argv)
    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)
                         if hasattr(args, f.name)})
    argv = sys.argv[1:] if argv is None else list(argv)
    if _explicit(argv, "warmup_steps") and not _explicit(argv, "warmup_epochs"):
        cfg.warmup_epochs = 0  # the warm-up is given in steps instead
    try:
        check_config(cfg)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.resume and not args.out:
        raise UsageError("--resume needs --out RUN_DIR: the run to continue")
    if cfg.epochs == 0 and not args.resume:
        raise UsageError("--epochs 0 trains nothing: give 1 or more (lvae_np.evaluate and "
                         "lvae_np.plots need a run with at least one epoch)")
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
            value, flag = getattr(cfg, f.name), "--" + f.name.replace("_", "-")
            if isinstance(value, bool):
                cmd.append(flag if value else "--no-" + flag[2:])
            elif isinstance(value, (tuple, list)):
                cmd += [flag, ",".join(map(str, value))]
            else:
                cmd += [flag, str(value)]
    cmd += ["--backend", backend or cfg.backend]
    if data_dir or cfg.data_dir:
        cmd += ["--data-dir", str(data_dir or cfg.data_dir)]
    return cmd if progress else cmd + ["--no-progress"]


def _explicit(argv, name: str) -> bool:
    """Whether the command line ``argv`` gives the option of field ``name`` itself."""
    flag = "--" + name.replace("_", "-")
    return any(a == flag or a.startswith(flag + "=") for a in argv)


@entry(PROG, errors=(CheckpointError, data.DataError, LogError, RunInUse),
       memory_hint=MEMORY_HINT)
def main(argv=None) -> int:
    """The command line; returns the exit status.

    0 done; 1 diverged, or could not write (full or read-only disk) or
    allocate; 2 bad input (options, checkpoint, logs, data, a folder in use);
    130 stopped by Ctrl-C or SIGTERM. Every failure is one line on stderr and
    leaves the run folder's files as they were, save ``status.json``.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
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
        return _train(cfg, args, argv, run_dir)
    finally:
        lock.release()
        for folder in created:  # a run that failed before writing anything leaves nothing
            try:
                folder.rmdir()  # only when empty
            except OSError:
                break


def _train(cfg: TrainConfig, args, argv: list, run_dir: Path) -> int:
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
        ignored = [n for n in fields(TrainConfig) if n.name not in RESUMABLE
                   and _explicit(argv, n.name)]
        if ignored:
            print("lvae_np.train: note: --resume keeps the run's saved "
                  + ", ".join("--" + f.name.replace("_", "-") for f in ignored), flush=True)
        changed = {k: getattr(cfg, k) for k in RESUMABLE if _explicit(argv, k)}
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
