"""Train a VAE or Ladder VAE: ``python -m lvae_np.train [options]``.

The paper's protocol, by default: the 5-layer LVAE on MNIST (latent
64,32,16,8,4, hidden 512,256,128,64,32), batch norm, deterministic warm-up
over 200 epochs, Adam (lr 0.002, eps 1e-4), batch 256, dynamic binarisation
of the training set every epoch, up to 2000 epochs. Every epoch writes
``RUN_DIR/metrics.csv``, ``RUN_DIR/kl_units.csv`` and an atomic checkpoint;
Ctrl-C writes a checkpoint where it stopped, and ``--resume`` continues the
run exactly (bit for bit on NumPy). ``RUN_DIR/status.json`` says where the
run stands: training, done, diverged or interrupted (see ``lvae_np.runs``).
``command_line`` builds the command that trains a given ``TrainConfig``.

Examples::

    python -m lvae_np.train --backend cupy                        # the paper's run
    python -m lvae_np.train --epochs 10 --warmup-epochs 5 --out runs/quick
    python -m lvae_np.train --out runs/quick --resume --epochs 20  # go on to epoch 20
    python -m lvae_np.evaluate runs/quick --iw-samples 5000
"""
from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy

from . import bounds, checkpoint, data, metrics
from .backend import BACKENDS, DTYPES, get_backend, to_numpy
from .checkpoint import CheckpointError
from .cli import Parser, UsageError, fail, plain_warnings, positive_ints
from .config import PRESETS, RESUMABLE, TrainConfig, config_as_dict, config_from_meta
from .evaluate import evaluate_run
from .fileio import atomic_write_text
from .models import KL_ESTIMATORS, Model
from .optim import AdamConfig, adam_init, adam_update_, clip_by_global_norm
from .runs import CHECKPOINT, CONFIG, saved_meta, write_status

PROG = "lvae_np.train"


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
                        "2000 epochs, warm-up 200, batch norm, test L_5000 at the end")
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="cupy runs on the GPU; without CuPy or a GPU it warns and uses NumPy")
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
    p.add_argument("--epochs", type=int, default=d.epochs,
                   help="train until this many epochs are done (with --resume: the new total)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="examples per step")
    p.add_argument("--lr", type=float, default=d.lr, help="Adam's step size")
    p.add_argument("--max-grad-norm", type=float, default=d.max_grad_norm,
                   help="clip the total gradient norm to this (0: no clipping)")
    p.add_argument("--iw-samples", type=int, default=d.iw_samples,
                   help="importance samples per example in the training objective "
                        "(1: the warm-up ELBO; >1: the IWAE bound, MC KL)")
    p.add_argument("--kl", choices=KL_ESTIMATORS, default=d.kl,
                   help="KL estimator: analytic where exact (LVAE every layer, VAE top "
                        "layer), or mc (single-sample) everywhere")
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
    p.add_argument("--out", metavar="RUN_DIR",
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
    if len(cfg.latent) != len(cfg.hidden):
        raise UsageError(f"--latent has {len(cfg.latent)} layers but --hidden has "
                         f"{len(cfg.hidden)}: give one width per stochastic layer")
    for name in ("epochs", "warmup_epochs", "validation", "eval_iw_samples",
                 "final_iw_samples"):
        if getattr(cfg, name) < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 0, "
                             f"got {getattr(cfg, name)}")
    for name in ("batch_size", "iw_samples", "eval_every"):
        if getattr(cfg, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, "
                             f"got {getattr(cfg, name)}")
    if not cfg.lr > 0 or cfg.max_grad_norm < 0:
        raise UsageError("--lr must be > 0 and --max-grad-norm >= 0")
    if args.resume and not args.out:
        raise UsageError("--resume needs --out RUN_DIR: the run to continue")
    return cfg, args


def command_line(cfg: TrainConfig, out, *, resume: bool = False, backend: str = "auto",
                 data_dir=None, progress: bool = False) -> list[str]:
    """The command that trains ``cfg`` into ``out``, or continues that run to ``cfg.epochs``.

    A fresh run's command spells out every field of ``cfg`` (each has the
    option of the same name, see ``build_parser``; ``data_variant`` is filled
    in by training), so ``parse_args(command_line(cfg, out)[3:])`` gives back
    ``cfg``. A resumed run takes its settings from its checkpoint:
    ``--out OUT --epochs N --resume``.

    Args:
        cfg: the run's config.
        out: the run folder (``--out``).
        resume: continue the run in ``out`` instead of starting it.
        backend: ``--backend``.
        data_dir: ``--data-dir`` (None: not given).
        progress: progress bars (else ``--no-progress``).

    Returns:
        ``[sys.executable, "-m", "lvae_np.train", ...]``, ready for ``subprocess``.
    """
    cmd = [sys.executable, "-m", "lvae_np.train", "--out", str(out)]
    if resume:
        cmd += ["--epochs", str(cfg.epochs), "--resume"]
    else:
        for f in fields(TrainConfig):
            if f.name == "data_variant":
                continue
            value, flag = getattr(cfg, f.name), "--" + f.name.replace("_", "-")
            if isinstance(value, bool):
                cmd.append(flag if value else "--no-" + flag[2:])
            elif isinstance(value, (tuple, list)):
                cmd += [flag, ",".join(map(str, value))]
            else:
                cmd += [flag, str(value)]
    cmd += ["--backend", backend]
    if data_dir:
        cmd += ["--data-dir", str(data_dir)]
    return cmd if progress else cmd + ["--no-progress"]


# ----------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------
class NonFiniteLoss(Exception):
    """The training loss became NaN or infinite in epoch ``epoch`` (1-based)."""

    def __init__(self, message: str, epoch: int):
        super().__init__(message)
        self.epoch = epoch


@dataclass
class Position:
    """Where a run stands: epochs done, and batches done in the epoch under way."""

    epoch: int = 0
    batch: int = 0
    sums: dict = field(default_factory=dict)  # running sums of the epoch under way
    seconds: float = 0.0                      # training seconds spent in that epoch


class Trainer:
    """One run: model, data, optimizer and the files in its folder."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, backend, dataset: data.Dataset,
                 progress: bool):
        self.cfg, self.run_dir, self.be, self.ds = cfg, run_dir, backend, dataset
        self.progress = progress
        self.model = Model(cfg.model_config(dataset.train.shape[1], dataset.likelihood), backend)
        self.adam = AdamConfig(lr=cfg.lr)
        self.train_x = backend.asarray(dataset.train)   # on the device for CuPy
        self.test_x = backend.asarray(dataset.test)
        self.log = metrics.RunLog(run_dir, cfg.latent)
        self.stop_requested = False  # set by Ctrl-C; honoured between batches

    # -- state ---------------------------------------------------------------
    def fresh(self):
        """Start from new parameters, a new optimizer and epoch 0."""
        self.params, self.state = self.model.init()
        self.opt = adam_init(self.params)
        self.pos = Position()

    def restore(self, ckpt: dict):
        """Continue from a checkpoint (``checkpoint.load``'s dict), mid-epoch if it was."""
        asarray = self.be.asarray
        self.params = {k: asarray(v) for k, v in ckpt["params"].items()}
        self.state = {k: asarray(v) for k, v in ckpt["state"].items()}
        o = ckpt["opt_state"]
        self.opt = {"t": o["t"], "m": {k: asarray(v) for k, v in o["m"].items()},
                    "v": {k: asarray(v) for k, v in o["v"].items()}}
        meta = ckpt["meta"]
        self.be.random.set_state(meta["rng_state"])
        sums = {k: asarray(v, dtype=None) for k, v in ckpt["extra"].items()}
        if "n" in sums:
            sums["n"] = int(sums["n"])
        self.pos = Position(meta["epoch"], meta["batch"], sums, meta.get("epoch_seconds", 0.0))
        self.log.truncate(self.pos.epoch)

    def save(self):
        """Write the checkpoint: parameters, optimizer, random state, position in the epoch."""
        meta = {"config": config_as_dict(self.cfg), "epoch": self.pos.epoch,
                "batch": self.pos.batch, "epoch_seconds": self.pos.seconds,
                "rng_state": self.be.random.get_state()}
        checkpoint.save(self.run_dir / CHECKPOINT, params=self.params, state=self.state,
                        opt_state=self.opt, meta=meta,
                        extra={k: to_numpy(v) for k, v in self.pos.sums.items()})

    # -- one epoch -------------------------------------------------------------
    def batch_order(self, epoch: int):
        """The epoch's shuffled batches, a function of (seed, epoch) alone, so resumable."""
        n, bs = self.train_x.shape[0], self.cfg.batch_size
        perm = numpy.random.default_rng([self.cfg.seed, 0, epoch]).permutation(n)
        return [perm[i:i + bs] for i in range(0, n, bs)]

    def batch_data(self, idx, epoch: int, b: int):
        """The examples ``idx`` (batch ``b`` of ``epoch``), binarised afresh if the data wants."""
        xp = self.be.xp
        x = xp.take(self.train_x, self.be.asarray(idx, dtype=xp.int64), axis=0)
        if not self.ds.dynamic_binarization:
            return x
        u = numpy.random.default_rng([self.cfg.seed, 1, epoch, b]).random(x.shape)
        return self.be.xp.astype(self.be.asarray(u) < x, self.be.dtype)

    def step(self, x, beta: float):
        """One Adam step on the batch x (N, x_dim); returns the loss and the batch statistics."""
        cfg = self.cfg
        if cfg.iw_samples > 1:
            loss, grads, st = bounds.iwae_loss_and_grads(self.model, self.params, self.state, x,
                                                         cfg.iw_samples, beta=beta)
        else:
            loss, grads, st = self.model.loss_and_grads(self.params, self.state, x, beta,
                                                        kl=cfg.kl)
        if cfg.max_grad_norm > 0:
            grads, _ = clip_by_global_norm(grads, cfg.max_grad_norm)
        adam_update_(self.params, grads, self.opt, self.adam)  # in place: the run owns them
        self.state = st["state"]
        return loss, st

    def train_epoch(self, bar=None):
        """Run the rest of the current epoch; updates self.pos as batches finish."""
        epoch, cfg = self.pos.epoch, self.cfg
        beta = bounds.warmup_beta(epoch, cfg.warmup_epochs)
        order = self.batch_order(epoch)
        # NaN checks need the loss on the host; on a GPU only every few batches.
        check_every = 1 if self.be.name == "numpy" else 25
        start = time.perf_counter() - self.pos.seconds
        for b in range(self.pos.batch, len(order)):
            if self.stop_requested:
                raise KeyboardInterrupt
            x = self.batch_data(order[b], epoch, b)
            loss, st = self.step(x, beta)
            metrics.accumulate(self.pos.sums, st, loss, x.shape[0])
            self.pos.batch = b + 1
            self.pos.seconds = time.perf_counter() - start
            if (b + 1) % check_every == 0 or b + 1 == len(order):
                value = float(self.pos.sums["loss"])
                if not math.isfinite(value):
                    raise NonFiniteLoss(f"the loss became {value} in epoch {epoch + 1}, "
                                        f"by batch {b + 1} of {len(order)}", epoch + 1)
            if bar is not None:
                bar.update(1)
        return beta

    def evaluate(self, epoch: int) -> dict:
        """Test ELBO, KL per layer and active units (BN running averages), maybe L_k."""
        return metrics.test_metrics(self.model, self.params, self.state, self.test_x,
                                    self.cfg.kl, iw_samples=self.cfg.eval_iw_samples)

    # -- the loop --------------------------------------------------------------
    def run(self):
        """Train until ``cfg.epochs`` are done: log, evaluate and checkpoint every epoch."""
        cfg = self.cfg
        batches = len(self.batch_order(0))
        epochs_bar = batch_bar = None
        if self.progress:
            from tqdm import tqdm
            epochs_bar = tqdm(total=cfg.epochs, initial=self.pos.epoch, desc="epochs",
                              unit="ep", file=sys.stdout, dynamic_ncols=True)
            batch_bar = tqdm(total=batches, initial=self.pos.batch, desc="batches",
                             unit="batch", leave=False, file=sys.stdout, dynamic_ncols=True)
        try:
            while self.pos.epoch < cfg.epochs:
                beta = self.train_epoch(batch_bar)
                epoch = self.pos.epoch + 1
                row = metrics.epoch_row(epoch, beta, self.pos.sums, self.pos.seconds,
                                        len(cfg.latent))
                if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
                    t0 = time.perf_counter()
                    row.update(self.evaluate(epoch))
                    row["eval_seconds"] = time.perf_counter() - t0
                self.log.append(row, metrics.kl_unit_row(epoch, self.pos.sums, len(cfg.latent)))
                self.pos = Position(epoch)
                self.save()
                if self.stop_requested:
                    raise KeyboardInterrupt
                line = metrics.describe(row)
                if epochs_bar is not None:
                    epochs_bar.update(1)
                    test_elbo = row.get("test_elbo", float("nan"))
                    epochs_bar.set_postfix_str(f"test ELBO {test_elbo:.2f}")
                    batch_bar.reset()
                    epochs_bar.write(line)
                else:
                    print(line, flush=True)
        finally:
            for bar in (batch_bar, epochs_bar):
                if bar is not None:
                    bar.close()


def _explicit(argv, name: str) -> bool:
    """Whether the command line ``argv`` gives the option of field ``name`` itself."""
    flag = "--" + name.replace("_", "-")
    return any(a == flag or a.startswith(flag + "=") for a in argv)


def main(argv=None) -> int:
    """The command line; returns the exit status (0 done, 1 diverged, 2 bad input, 130 stopped)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        cfg, args = parse_args(argv)
    except UsageError as exc:
        return fail(PROG, exc, hint=True)
    plain_warnings()
    run_dir = Path(args.out) if args.out else Path("runs") / \
        f"{cfg.model}-{cfg.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    ckpt = None
    try:
        if args.resume:
            ckpt = checkpoint.load(run_dir / CHECKPOINT)
            saved = config_from_meta(ckpt["meta"])
            ignored = [n for n in fields(TrainConfig) if n.name not in RESUMABLE
                       and _explicit(argv, n.name)]
            if ignored:
                print("lvae_np.train: note: --resume keeps the run's saved "
                      + ", ".join("--" + f.name.replace("_", "-") for f in ignored), flush=True)
            changed = {k: getattr(cfg, k) for k in RESUMABLE if _explicit(argv, k)}
            cfg = TrainConfig(**{**asdict(saved), **changed})
        elif (run_dir / CHECKPOINT).exists():
            raise UsageError(f"{run_dir} already holds a run: add --resume to continue it, "
                             "or choose another --out")
        backend = get_backend(args.backend, dtype=cfg.dtype, seed=cfg.seed)
        ds = data.load_dataset(cfg.dataset, args.data_dir, validation=cfg.validation,
                               seed=cfg.seed, progress=not args.no_progress)
    except (UsageError, CheckpointError, data.DataError, ValueError) as exc:
        return fail(PROG, exc)
    cfg.data_variant = ds.variant
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(cfg, run_dir, backend, ds,
                      progress=sys.stdout.isatty() and not args.no_progress)
    if ckpt is None:
        trainer.fresh()
        atomic_write_text(run_dir / CONFIG, json.dumps(config_as_dict(cfg), indent=2) + "\n")
    else:
        trainer.restore(ckpt)
    print(f"lvae_np.train: {cfg.model.upper()} on {ds.variant}; backend {backend.name} "
          f"({cfg.dtype}); run folder {run_dir}; epoch {trainer.pos.epoch} of {cfg.epochs}",
          flush=True)
    # Ctrl-C (or SIGTERM) asks the trainer to stop at the next batch boundary, so
    # the checkpoint is consistent; a second Ctrl-C stops at once, writing nothing.
    def request_stop(signum, frame):
        if trainer.stop_requested:
            raise SystemExit(130)
        trainer.stop_requested = True

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    write_status(run_dir, "training", trainer.pos.epoch)
    try:
        trainer.run()
    except KeyboardInterrupt:
        trainer.save()
        write_status(run_dir, "interrupted", trainer.pos.epoch, batch=trainer.pos.batch)
        print(f"\nlvae_np.train: interrupted in epoch {trainer.pos.epoch + 1} after batch "
              f"{trainer.pos.batch}; checkpoint written. Continue with:\n"
              f"  python -m lvae_np.train --out {run_dir} --resume", file=sys.stderr)
        return 130
    except NonFiniteLoss as exc:
        write_status(run_dir, "diverged", exc.epoch)
        return fail(PROG, f"{exc}. The last good checkpoint ({run_dir / CHECKPOINT}, end of "
                          f"epoch {_saved_epoch(run_dir)}) is intact; try a smaller --lr or "
                          "--max-grad-norm.", status=1)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    write_status(run_dir, "done", trainer.pos.epoch)
    if cfg.final_iw_samples > 0:
        result = evaluate_run(run_dir, iw_samples=cfg.final_iw_samples, backend=args.backend,
                              data_dir=args.data_dir, progress=trainer.progress)
        print(f"lvae_np.train: test L_{cfg.final_iw_samples} = {result['lk']:.3f}", flush=True)
    return 0


def _saved_epoch(run_dir: Path) -> str:
    """The epoch of the run's checkpoint, for messages ("none yet" without one)."""
    meta = saved_meta(run_dir)
    return "none yet" if meta is None else str(meta["epoch"])


if __name__ == "__main__":
    sys.exit(main())
