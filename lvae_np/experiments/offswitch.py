"""The off-switch: how an LVAE unit stops carrying information, watched over the first epochs.

In the LVAE's ladder step the posterior of a unit of z_i merges the data's
bottom-up estimate (mu_hat, var_hat) with the generative model's prediction
(mu_p, var_p) from z_{i+1}, weighted by precision::

    mu_q = w * mu_hat + (1 - w) * mu_p,   w = var_p / (var_hat + var_p)

When var_hat grows much larger than var_p (or var_p shrinks), w goes to 0:
the posterior follows the prior, the unit's KL goes to 0 and z_i only relays
z_{i+1}: the unit is switched off. This module trains the paper's 5-layer
MNIST LVAE (BN and WU, warm-up over 100 epochs, as the headline runs) for a
few epochs, with and without batch norm on the Gaussian heads (the released
code's choice, ``head_batch_norm``), and every few steps measures on a fixed
set of training images, per unit of one layer (z2 by default): its KL
(mean over the images), and the geometric means of var_hat and var_p. The
forward pass of the measurement uses the batch's statistics in batch norm
(as training does) and changes nothing.

    python -m lvae_np.experiments.offswitch --seeds 0,1,2 --epochs 5 \\
        --out results/experiments/off-switch/offswitch.json

writes the JSON (refused if it exists), a summary table beside it
(``offswitch.md``: units of the layer with KL > 0.01 nats per epoch, per
configuration and seed) and prints the table. Tutorial 03 draws its figures
from the JSON.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import numpy


from ..backend import get_backend, to_numpy
from ..data import DataError, load_dataset
from ..models import PAPER_HIDDEN, PAPER_LATENT, Model
from ..training.cli import UsageError, entry
from ..training.config import TrainConfig
from ..training.fileio import atomic_write_text
from ..training.trainer import Trainer

PROG = "lvae_np.experiments.offswitch"
ACTIVE = 0.01          # nats: a unit with a larger KL is active (the paper's threshold)
CONFIGS = {"paper form": {}, "head batch norm": {"head_batch_norm": True}}


def run_config(seed: int, epochs: int, changes: dict, *, data_dir=None) -> TrainConfig:
    """The headline's training of the LVAE (warm-up over 100 epochs), ``epochs`` long."""
    return TrainConfig(model="lvae", dataset="mnist", latent=PAPER_LATENT, hidden=PAPER_HIDDEN,
                       batch_norm=True, warmup_epochs=100, epochs=epochs, seed=seed,
                       backend="numpy", data_dir=data_dir, **changes)


def probe(model: Model, params, state, x, noise, layer: int) -> dict:
    """Per unit of z_layer on the images x: mean KL, geometric means of var_hat and var_p."""
    outputs, cache = model.forward(params, state, x, noise, training=True)
    merge = cache.per_sample.ladder[layer].merge
    kl = numpy.asarray(to_numpy(outputs.kl[layer - 1]), dtype=float)
    var_hat = numpy.asarray(to_numpy(merge.var_hat), dtype=float)
    var_p = numpy.asarray(to_numpy(merge.var_p), dtype=float)
    return {"kl": kl.mean(axis=0).tolist(),
            "log_var_hat": numpy.log(var_hat).mean(axis=0).tolist(),
            "log_var_p": numpy.log(var_p).mean(axis=0).tolist()}


def watch(cfg: TrainConfig, dataset, *, every: int, n_probe: int, layer: int,
          progress: bool = True) -> dict:
    """Train ``cfg`` and probe z_layer every ``every`` steps (and at step 0)."""
    backend = get_backend("numpy", dtype=cfg.dtype, seed=cfg.seed)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(cfg, Path(run_dir), backend, dataset, progress=False)
        trainer.fresh()
        plain = Model(trainer.model.config, backend)   # the plain forms, to read the caches
        rng = numpy.random.default_rng([cfg.seed, 7])
        idx = rng.choice(dataset.train.shape[0], n_probe, replace=False)
        x = backend.asarray((rng.random((n_probe, dataset.train.shape[1]))
                             < dataset.train[idx]).astype(cfg.dtype))
        noise = [backend.asarray(rng.standard_normal((n_probe, d)).astype(cfg.dtype))
                 for d in cfg.latent]
        record = {"step": [], "epoch": [], "beta": [], "kl": [], "log_var_hat": [],
                  "log_var_p": []}

        def measure(step: int, epoch: float, beta: float):
            found = probe(plain, trainer.params, trainer.state, x, noise, layer)
            record["step"].append(step)
            record["epoch"].append(epoch)
            record["beta"].append(beta)
            for key, value in found.items():
                record[key].append(value)

        measure(0, 0.0, 0.0)
        step = 0
        for epoch in range(cfg.epochs):
            order = trainer.batch_order(epoch)
            for b, idx_b in enumerate(order):
                beta = trainer.beta(epoch, b, len(order))
                loss, _ = trainer.step(trainer.batch_data(idx_b, epoch, b), beta)
                if not math.isfinite(float(loss)):
                    raise FloatingPointError(f"the loss became {float(loss)} at step {step + 1}")
                step += 1
                if step % every == 0 or b + 1 == len(order):
                    measure(step, epoch + (b + 1) / len(order), beta)
            if progress:
                active = sum(k > ACTIVE for k in record["kl"][-1])
                print(f"  seed {cfg.seed} head_bn={cfg.head_batch_norm}: epoch {epoch + 1}, "
                      f"z{layer} units with KL > {ACTIVE}: {active}", file=sys.stderr, flush=True)
    return record


def summary(result: dict) -> list:
    """Markdown lines: per configuration and seed, active units of the layer at each whole epoch."""
    layer, epochs = result["layer"], result["epochs"]
    lines = [f"Units of z{layer} with KL > {ACTIVE} nats on {result['probe']} training images "
             f"(batch statistics), LVAE, paper's MNIST model, warm-up over 100 epochs:", "",
             "| configuration | seed | " + " | ".join(f"epoch {e}" for e in range(epochs + 1))
             + " |", "|---|---|" + "---|" * (epochs + 1)]
    for name, runs in result["runs"].items():
        for seed, rec in runs.items():
            counts = []
            for e in range(epochs + 1):
                at = min(range(len(rec["epoch"])), key=lambda j: abs(rec["epoch"][j] - e))
                counts.append(str(sum(k > ACTIVE for k in rec["kl"][at])))
            lines.append(f"| {name} | {seed} | " + " | ".join(counts) + " |")
    return lines + [""]


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog=f"python -m {PROG}", description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default: 0,1,2)")
    p.add_argument("--epochs", type=int, default=5, help="epochs per run (default: 5)")
    p.add_argument("--every", type=int, default=20, help="steps between probes (default: 20)")
    p.add_argument("--probe", type=int, default=1000,
                   help="training images the probes run on (default: 1000)")
    p.add_argument("--layer", type=int, default=2, help="the layer watched, 2..4 (default: 2)")
    p.add_argument("--data-dir", metavar="DIR", default=None, help="where MNIST is")
    p.add_argument("--out", required=True, type=Path, help="the JSON to write (must not exist)")
    p.add_argument("--no-progress", action="store_true", help="no line per epoch")
    args = p.parse_args(argv)
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"--seeds must be integers separated by commas, not {args.seeds!r}")
    if not args.seeds or min(args.seeds) < 0:
        raise UsageError("--seeds needs at least one seed, none negative")
    for name in ("epochs", "every", "probe"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name} must be at least 1")
    if not 2 <= args.layer <= len(PAPER_LATENT) - 1:
        raise UsageError(f"--layer must be 2 to {len(PAPER_LATENT) - 1} (a ladder step's layer)")
    if args.out.exists():
        raise UsageError(f"{args.out} exists: choose another --out (results are not overwritten)")
    return args


@entry(PROG, errors=(DataError, FloatingPointError))
def main(argv=None) -> int:
    args = parse_args(argv)
    dataset = load_dataset("mnist", args.data_dir, progress=not args.no_progress)
    result = {"layer": args.layer, "epochs": args.epochs, "every": args.every,
              "probe": args.probe, "active": ACTIVE, "runs": {}}
    for name, changes in CONFIGS.items():
        result["runs"][name] = {}
        for seed in args.seeds:
            cfg = run_config(seed, args.epochs, changes, data_dir=args.data_dir)
            result["runs"][name][str(seed)] = watch(cfg, dataset, every=args.every,
                                                   n_probe=args.probe, layer=args.layer,
                                                   progress=not args.no_progress)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(result) + "\n")
    lines = summary(result)
    atomic_write_text(args.out.with_suffix(".md"), "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
