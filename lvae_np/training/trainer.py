"""One training run's loop: model, data, optimizer, and the checkpoint and logs it writes.

A ``Trainer`` trains a ``TrainConfig`` in its run folder epoch by epoch
(``run``), from fresh parameters (``fresh``) or from a checkpoint, even one
written mid-epoch (``restore``, which checks the checkpoint first). Every
epoch ends with one write of the checkpoint and the CSV logs together
(``fileio.atomic_write_many``, the checkpoint first), so a failure or a kill
leaves them consistent, and a start brings the logs back in step with the
checkpoint (``metrics.RunLog.sync``). A stop during an epoch's test
evaluation abandons it at once and keeps the epoch (``evaluate_unless_stopped``);
at its target epoch a run is done, stop or not. ``lvae_np.train`` is its
command line.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy

from . import checkpoint, metrics
from .. import bounds, data, flat
from ..backend import to_numpy
from .checkpoint import CheckpointError
from .config import TrainConfig, config_as_dict
from .fileio import atomic_write_many
from ..fast import FlatAdam
from ..models import Model
from ..optim import AdamConfig
from .runs import CHECKPOINT, CONFIG, check_model_arrays


class NonFiniteLoss(Exception):
    """The training loss became NaN or infinite in epoch ``epoch`` (1-based)."""

    def __init__(self, message: str, epoch: int):
        super().__init__(message)
        self.epoch = epoch


def _to_host(tree: dict) -> dict:
    """NumPy copies of a dict of arrays: one device-to-host copy per dtype (``flat``)."""
    out = {}
    for dtype in dict.fromkeys(getattr(v, "dtype", None) for v in tree.values()):
        part = {k: v for k, v in tree.items() if getattr(v, "dtype", None) == dtype}
        if dtype is None:                                 # Python numbers (a count)
            out.update(part)
            continue
        lay = flat.layout(part)
        out.update(flat.unpack(to_numpy(flat.pack(part, lay)), lay))
    return {k: out[k] for k in tree}


def _noise_kind(state) -> str | None:
    """"host" (NumPy's PCG64 state), "device" (a ``DeviceNoise`` record), or None: unusable."""
    if isinstance(state, dict) and state.get("kind") == "device":
        return "device"
    try:
        numpy.random.PCG64().state = state
    except (TypeError, ValueError, KeyError):
        return None
    return "host"


def _from_host(tree: dict, asarray) -> dict:
    """A dict of NumPy arrays (one dtype) on the device, in one host-to-device copy (``flat``)."""
    if not tree:
        return {}
    lay = flat.layout(tree)
    return flat.unpack(asarray(flat.pack(tree, lay)), lay)


class StopNow(BaseException):
    """A second Ctrl-C (or SIGTERM): stop at once, abandoning any write under way."""


class EvaluationStopped(BaseException):
    """A stop asked for during an epoch's test evaluation: the evaluation is abandoned.

    Raised by the signal handler while ``Trainer.evaluating`` is set (see
    ``Trainer.evaluate_unless_stopped``); the evaluation holds no file open.
    """


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
        # Training runs the fast forms of the ops (fast.py), the same numbers as the plain ones
        # to rounding; and Adam in place on one flat buffer (FlatAdam).
        self.model = Model(cfg.model_config(dataset.train.shape[1], dataset.likelihood), backend,
                           fast=True)
        self.adam = AdamConfig(lr=cfg.lr)
        self.train_x = backend.asarray(dataset.train)   # on the device for CuPy
        self.test_x = backend.asarray(dataset.test)
        self.log = metrics.RunLog(run_dir, cfg.latent)
        self.last_log = None         # the log rows of the last epoch done, kept in checkpoints
        self.stop_requested = False  # set by Ctrl-C; honoured between batches
        self.evaluating = False      # in an epoch's test evaluation, which a stop abandons

    # -- state ---------------------------------------------------------------
    @property
    def params(self) -> dict:
        """The model's parameters: views into the optimizer's flat buffer."""
        return self.opt.params

    def fresh(self):
        """Start from new parameters, a new optimizer and epoch 0."""
        params, self.state = self.model.init()
        self.opt = FlatAdam(params, config=self.adam)   # its .params: views into one buffer
        self.pos = Position()

    def restore(self, ckpt: dict):
        """Continue from a checkpoint (``checkpoint.load``'s dict), mid-epoch if it was.

        Raises:
            CheckpointError: its arrays do not fit the model, its random state or
                its position in the epoch is unusable. Nothing is changed then.
        """
        path, meta = self.run_dir / CHECKPOINT, ckpt["meta"]
        check_model_arrays(path, ckpt, self.model.config)
        batches = len(self.batch_order(0))
        if meta.get("batch", 0) >= batches:
            raise CheckpointError(f"{path} stands at batch {meta['batch']} of an epoch of "
                                  f"{batches} batches: it is not of this run")
        sums = self._sums(path, ckpt["extra"]) if meta.get("batch", 0) else {}
        self._restore_noise(path, meta)
        # one host-to-device copy per flat buffer (parameters, Adam's moments, BN state)
        o = ckpt["opt_state"]
        self.opt = FlatAdam.from_host(ckpt["params"], {"t": o["t"], "m": o["m"], "v": o["v"]},
                                      self.be.asarray, config=self.adam)
        self.state = _from_host(ckpt["state"], self.be.asarray)
        self.pos = Position(meta["epoch"], meta.get("batch", 0), sums,
                            meta.get("epoch_seconds", 0.0))
        self.last_log = meta.get("log")

    def _restore_noise(self, path, meta: dict) -> None:
        """Continue the noise stream of the checkpoint (``Backend.noise``'s saved state).

        A run moved between a device stream (CuPy) and the host one (NumPy, or
        ``--noise host``) cannot continue the old stream: it goes on with a new
        one seeded from (seed, epoch), and says so.
        """
        state, noise = meta.get("rng_state"), self.be.noise
        saved_kind = _noise_kind(state)
        if saved_kind is None:
            raise CheckpointError(f"{path} has no usable random-generator state (neither "
                                  "NumPy's PCG64 state nor a device-noise record)")
        if saved_kind != noise.kind:
            print(f"lvae_np.train: note: {path} drew its noise on the {saved_kind}, this run "
                  f"on the {noise.kind}: the noise continues from a new stream seeded "
                  "with (seed, epoch), so the numbers differ from an uninterrupted run",
                  flush=True)
            if noise.kind == "device":
                noise.start((meta["epoch"],))
            else:
                self.be.random.reseed([self.cfg.seed, 0x6E6F697365, meta["epoch"]])
            return
        try:
            if noise.kind == "device" and not meta.get("batch", 0):
                noise.start((meta["epoch"],))   # an epoch's start: nothing drawn to replay
            else:
                noise.set_state(state)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"{path} has no usable random-generator state "
                                  f"({type(exc).__name__}: {exc})") from None

    def _sums(self, path, extra: dict) -> dict:
        """The running sums of a checkpoint written mid-epoch, checked, on the backend."""
        shapes = {"loss": (), "elbo": (), "rec": (), "n": ()}
        for i, d in enumerate(self.cfg.latent, start=1):
            shapes.update({f"kl_z{i}": (), f"kl_units_z{i}": (d,)})
        if set(extra) != set(shapes) or any(extra[k].shape != v for k, v in shapes.items()) \
                or not int(extra["n"]) > 0:
            raise CheckpointError(f"{path} was written mid-epoch but its running sums are "
                                  "missing or malformed")
        sums = {k: self.be.asarray(v, dtype=None) for k, v in extra.items()}
        sums["n"] = int(sums["n"])
        return sums

    def checkpoint_writer(self):
        """The checkpoint as it stands, as a ``write(file)`` function (see checkpoint.writer)."""
        meta = {"config": config_as_dict(self.cfg), "epoch": self.pos.epoch,
                "batch": self.pos.batch, "epoch_seconds": self.pos.seconds,
                "rng_state": self.be.noise.get_state()}
        if self.last_log is not None:
            meta["log"] = self.last_log
        params, opt_state = self.opt.to_host()   # one device-to-host copy per flat buffer
        return checkpoint.writer(params=params, state=_to_host(self.state), opt_state=opt_state,
                                 meta=meta, extra=_to_host(self.pos.sums))

    def config_writer(self):
        """config.json as ``lvae_np.train`` writes it, as a ``write(file)`` function."""
        text = json.dumps(config_as_dict(self.cfg), indent=2) + "\n"
        return lambda f, data=text.encode(): f.write(data)

    def save(self):
        """Write the checkpoint: parameters, optimizer, random state, position in the epoch."""
        atomic_write_many([(self.run_dir / CHECKPOINT, self.checkpoint_writer())])

    # -- one epoch -------------------------------------------------------------
    def batch_order(self, epoch: int):
        """The epoch's shuffled batches, a function of (seed, epoch) alone, so resumable.

        With ``drop_last`` the last partial batch is left out (every batch is full).
        """
        n, bs = self.train_x.shape[0], self.cfg.batch_size
        perm = numpy.random.default_rng([self.cfg.seed, 0, epoch]).permutation(n)
        end = n - n % bs if self.cfg.drop_last else n
        return [perm[i:i + bs] for i in range(0, end, bs)]

    def beta(self, epoch: int, batch: int, batches: int) -> float:
        """The warm-up's beta for batch ``batch`` (0-based) of ``epoch``, of ``batches`` each.

        Constant over an epoch with ``warmup_epochs``; with ``warmup_steps`` it
        rises step by step, the step counting every batch trained before.
        """
        if self.cfg.warmup_steps:
            return bounds.warmup_beta(epoch * batches + batch, self.cfg.warmup_steps)
        return bounds.warmup_beta(epoch, self.cfg.warmup_epochs)

    def epoch_beta(self, epoch: int, batches: int) -> float:
        """The mean beta over the epoch's steps (its one beta with ``warmup_epochs``)."""
        if not self.cfg.warmup_steps:
            return self.beta(epoch, 0, batches)
        return math.fsum(self.beta(epoch, b, batches) for b in range(batches)) / batches

    def batch_data(self, idx, epoch: int, b: int):
        """The examples ``idx`` (batch ``b`` of ``epoch``), binarised afresh if the data wants."""
        xp = self.be.xp
        x = xp.take(self.train_x, self.be.asarray(idx, dtype=xp.int64), axis=0)
        if not self.ds.dynamic_binarization:
            return x
        if self.be.noise_on_device:   # CuPy: drawn there, from the run's device stream
            u = self.be.uniform(x.shape)
        else:                         # the host: its own stream per (seed, epoch, batch)
            u = self.be.asarray(numpy.random.default_rng([self.cfg.seed, 1, epoch, b])
                                .random(x.shape))
        return xp.astype(u < x, self.be.dtype)

    def step(self, x, beta: float):
        """One Adam step on the batch x (N, x_dim); returns the loss and the batch statistics."""
        cfg = self.cfg
        if cfg.iw_samples > 1:
            loss, grads, st = bounds.iwae_loss_and_grads(self.model, self.params, self.state, x,
                                                         cfg.iw_samples, beta=beta)
        else:
            loss, grads, st = self.model.loss_and_grads(self.params, self.state, x, beta,
                                                        kl=cfg.kl)
        # in place, on one buffer: the run owns it
        self.opt.step(grads, cfg.max_grad_norm, cfg.clip_elementwise)
        self.state = st["state"]
        return loss, st

    def train_epoch(self, bar=None):
        """Run the rest of the current epoch; updates self.pos as batches finish.

        Returns:
            The epoch's beta for its log row: ``epoch_beta``, the mean over its steps.
        """
        epoch = self.pos.epoch
        order = self.batch_order(epoch)
        # NaN checks need the loss on the host; on a GPU only every few batches.
        check_every = 1 if self.be.name == "numpy" else 25
        start = time.perf_counter() - self.pos.seconds
        if self.pos.batch == 0:
            self.be.noise.start((epoch,))   # device noise: reseeded per epoch (resumable)
        for b in range(self.pos.batch, len(order)):
            if self.stop_requested:
                raise KeyboardInterrupt
            x = self.batch_data(order[b], epoch, b)
            loss, st = self.step(x, self.beta(epoch, b, len(order)))
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
        return self.epoch_beta(epoch, len(order))

    def evaluate(self) -> dict:
        """Test ELBO, KL per layer and active units of the current parameters, maybe L_k.

        Batch norm normalises with its running averages (evaluation mode).
        """
        return metrics.test_metrics(self.model, self.params, self.state, self.test_x,
                                    self.cfg.kl, iw_samples=self.cfg.eval_iw_samples)

    def evaluate_unless_stopped(self, epoch: int) -> dict:
        """``evaluate``'s test metrics with ``eval_seconds``, or {} when a stop is asked.

        A stop asked before the evaluation skips it; one asked during it
        abandons it at once (the signal handler raises ``EvaluationStopped``
        while ``evaluating`` is set). Either is said in one line on stderr, and
        the epoch's training part is kept: its row is logged without test values.
        """
        t0 = time.perf_counter()
        try:
            self.evaluating = True   # first: a signal from here on abandons the evaluation
            try:
                if self.stop_requested:
                    raise EvaluationStopped
                row = self.evaluate()
            finally:
                self.evaluating = False
            row["eval_seconds"] = time.perf_counter() - t0
            return row
        except EvaluationStopped:
            self.evaluating = False
        print(f"lvae_np.train: stopping: the test evaluation of epoch {epoch} is abandoned "
              f"after {time.perf_counter() - t0:.1f} s; the epoch's training is kept",
              file=sys.stderr, flush=True)
        return {}

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
                    row.update(self.evaluate_unless_stopped(epoch))
                units = metrics.kl_unit_row(epoch, self.pos.sums, len(cfg.latent))
                self.pos = Position(epoch)
                self.last_log = self.log.add(row, units)
                # the checkpoint first: a start rebuilds the logs from it (RunLog.sync);
                # config.json with it, so that it follows a resume's new --epochs
                atomic_write_many([(self.run_dir / CHECKPOINT, self.checkpoint_writer())]
                                  + self.log.writers()
                                  + [(self.run_dir / CONFIG, self.config_writer())])
                if self.stop_requested and self.pos.epoch < cfg.epochs:
                    raise KeyboardInterrupt   # (at its target the run is done, stop or not)
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
