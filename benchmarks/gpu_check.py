#!/usr/bin/env python
"""One-shot GPU check: does lvae_np train and evaluate correctly on this GPU, and how fast?

    python benchmarks/gpu_check.py                       # writes gpu_check.json
    python benchmarks/gpu_check.py --out my_gpu.json --lk-images 100

It needs CuPy and a CUDA device (``pip install "cupy-cuda12x[ctk]"``), and
exits with status 2, saying why, where CuPy cannot run. On the paper's
5-layer LVAE and MNIST it checks, in this order:

1. **parity**: the first training step's loss and every gradient on CuPy
   (host noise, float64) against NumPy on the same weights, batch and noise:
   the largest relative difference of each;
2. **one epoch**: a whole MNIST epoch with noise drawn on the device, in ms
   per step (the GPU synchronised before each clock reading), then the
   per-epoch evaluation (test ELBO, KL, active units) and its time;
3. **checkpoint and resume**: the run is written after three more steps and
   read back; the next step from the copy equals the next step from the
   original, bit for bit (device noise replayed);
4. **L_k**: L_5000 on ``--lk-images`` test images, its mean and time per image;
5. **memory**: the bytes CuPy's memory pool holds at the end (it keeps what
   it once needed, so this is its peak).

Everything goes to one JSON file (``--out``), and a summary to stdout. The
exit status is 1 if parity or resume fails.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy

from lvae_np import data
from lvae_np.backend import cupy_unavailable_reason, get_backend, to_numpy
from lvae_np.bounds import log_likelihood
from lvae_np.training.config import TrainConfig
from lvae_np.models import Model
from lvae_np.training import checkpoint, metrics
from lvae_np.training.trainer import Position, Trainer


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("gpu_check.json"),
                   help="the JSON file to write (refused if it exists, unless --force)")
    p.add_argument("--force", action="store_true", help="overwrite --out")
    p.add_argument("--dataset", default="mnist", choices=data.DATASETS)
    p.add_argument("--data-dir", default=None, help="as lvae_np.train's --data-dir")
    p.add_argument("--latent", default="64,32,16,8,4", help="sizes of z_1 .. z_L")
    p.add_argument("--hidden", default="512,256,128,64,32", help="block widths")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lk-images", type=int, default=100, help="test images for L_k")
    p.add_argument("--iw-samples", type=int, default=5000, help="k of L_k")
    p.add_argument("--parity-tol", type=float, default=1e-9,
                   help="largest relative difference allowed in float64")
    return p.parse_args(argv)


def sync() -> None:
    """Wait for the GPU."""
    import cupy

    cupy.cuda.Stream.null.synchronize()


def rel_diff(a, b) -> float:
    a, b = numpy.asarray(a, dtype=numpy.float64), numpy.asarray(b, dtype=numpy.float64)
    scale = max(float(numpy.max(numpy.abs(b))), 1e-30)
    return float(numpy.max(numpy.abs(a - b))) / scale


def check_parity(cfg: TrainConfig, ds, tol: float) -> dict:
    """The first step on CuPy (host noise, float64) against NumPy on the same inputs."""
    cfg64 = replace(cfg, dtype="float64")
    results = []
    for name in ("numpy", "cupy"):
        be = get_backend(name, dtype="float64", seed=cfg.seed, noise="host")
        model = Model(cfg64.model_config(ds.train.shape[1], ds.likelihood), be, fast=True)
        params, state = model.init()
        rng = numpy.random.default_rng([cfg.seed, 1, 0, 0])
        batch = ds.train[:cfg.batch_size]
        x = be.asarray((rng.random(batch.shape) < batch).astype(numpy.float64))
        loss, grads, _ = model.loss_and_grads(params, state, x, 1.0, kl=cfg.kl)
        results.append((float(to_numpy(loss)), {k: to_numpy(g) for k, g in grads.items()}))
    (loss_np, g_np), (loss_cp, g_cp) = results
    worst = max(g_np, key=lambda k: rel_diff(g_cp[k], g_np[k]))
    out = {"loss_numpy": loss_np, "loss_cupy": loss_cp,
           "loss_rel_diff": abs(loss_cp - loss_np) / abs(loss_np),
           "grad_max_rel_diff": rel_diff(g_cp[worst], g_np[worst]), "grad_worst": worst,
           "tolerance": tol}
    out["ok"] = out["loss_rel_diff"] <= tol and out["grad_max_rel_diff"] <= tol
    return out


def train_epoch(trainer: Trainer) -> dict:
    """One epoch, timed step by step, then the evaluation."""
    order = trainer.batch_order(0)
    trainer.be.noise.start((0,))
    times = []
    for b, idx in enumerate(order):
        sync()
        t0 = time.perf_counter()
        x = trainer.batch_data(idx, 0, b)
        trainer.step(x, trainer.beta(0, b, len(order)))
        sync()
        times.append(time.perf_counter() - t0)
    trainer.pos = Position(1)
    t0 = time.perf_counter()
    row = trainer.evaluate()
    sync()
    steady = sorted(times[1:]) or times
    return {"steps": len(times), "first_step_ms": 1e3 * times[0],
            "median_step_ms": 1e3 * steady[len(steady) // 2],
            "mean_step_ms": 1e3 * sum(times[1:]) / max(1, len(times) - 1),
            "epoch_seconds": sum(times), "eval_seconds": time.perf_counter() - t0,
            "test_elbo": row["test_elbo"]}


def check_resume(trainer: Trainer, folder: Path) -> dict:
    """Three steps, checkpoint, read back; the next step from both must be the same."""
    order = trainer.batch_order(1)
    trainer.be.noise.start((1,))
    trainer.pos = Position(1)
    for b in range(3):
        x = trainer.batch_data(order[b], 1, b)
        loss, st = trainer.step(x, 1.0)
        metrics.accumulate(trainer.pos.sums, st, loss, x.shape[0])
        trainer.pos.batch = b + 1
    t0 = time.perf_counter()
    trainer.save()
    save_s = time.perf_counter() - t0
    be = get_backend("cupy", dtype=trainer.cfg.dtype, seed=trainer.cfg.seed)
    copy = Trainer(trainer.cfg, folder, be, trainer.ds, progress=False)
    t0 = time.perf_counter()
    copy.restore(checkpoint.load(folder / "checkpoint.npz"))
    restore_s = time.perf_counter() - t0
    losses = []
    for t in (trainer, copy):
        loss, _ = t.step(t.batch_data(order[3], 1, 3), 1.0)
        losses.append(float(to_numpy(loss)))
    same = all(numpy.array_equal(to_numpy(trainer.params[k]), to_numpy(copy.params[k]))
               for k in trainer.params)
    return {"save_seconds": save_s, "restore_seconds": restore_s, "loss_original": losses[0],
            "loss_resumed": losses[1], "ok": losses[0] == losses[1] and same}


def check_lk(trainer: Trainer, n: int, k: int) -> dict:
    x = trainer.test_x[:n]
    sync()
    t0 = time.perf_counter()
    lk = to_numpy(log_likelihood(trainer.model, trainer.params, trainer.state, x, k))
    sync()
    seconds = time.perf_counter() - t0
    return {"images": int(x.shape[0]), "k": k, "mean": float(numpy.mean(lk)),
            "seconds": seconds, "ms_per_image": 1e3 * seconds / max(1, x.shape[0])}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.out.exists() and not args.force:
        print(f"gpu_check: error: {args.out} exists: choose another --out, or --force",
              file=sys.stderr)
        return 2
    reason = cupy_unavailable_reason()
    if reason is not None:
        print(f"gpu_check: error: {reason}", file=sys.stderr)
        return 2
    import cupy

    cfg = TrainConfig(dataset=args.dataset, latent=tuple(map(int, args.latent.split(","))),
                      hidden=tuple(map(int, args.hidden.split(","))),
                      batch_size=args.batch_size, warmup_epochs=200, epochs=1,
                      backend="cupy", data_dir=args.data_dir)
    ds = data.load_dataset(cfg.dataset, args.data_dir, progress=False)
    device = cupy.cuda.runtime.getDeviceProperties(0)
    name = device["name"].decode() if isinstance(device.get("name"), bytes) else device.get("name")
    report = {"date": time.strftime("%Y-%m-%d"), "gpu": name, "cupy": cupy.__version__,
              "python": platform.python_version(), "numpy": numpy.__version__,
              "model": {"latent": cfg.latent, "hidden": cfg.hidden,
                        "batch_size": cfg.batch_size, "dataset": cfg.dataset}}
    report["parity"] = check_parity(cfg, ds, args.parity_tol)
    print(f"parity: loss rel diff {report['parity']['loss_rel_diff']:.1e}, gradients "
          f"{report['parity']['grad_max_rel_diff']:.1e} ({report['parity']['grad_worst']})",
          flush=True)
    be = get_backend("cupy", dtype="float32", seed=cfg.seed)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, Path(tmp), be, ds, progress=False)
        trainer.fresh()
        report["epoch"] = train_epoch(trainer)
        print(f"epoch: {report['epoch']['steps']} steps, median "
              f"{report['epoch']['median_step_ms']:.2f} ms/step; evaluation "
              f"{report['epoch']['eval_seconds']:.2f} s", flush=True)
        report["resume"] = check_resume(trainer, Path(tmp))
        print(f"resume: {'same' if report['resume']['ok'] else 'DIFFERENT'} next step; "
              f"save {report['resume']['save_seconds']:.2f} s", flush=True)
        report["lk"] = check_lk(trainer, args.lk_images, args.iw_samples)
        print(f"L_{args.iw_samples} on {report['lk']['images']} images: "
              f"{report['lk']['mean']:.2f}, {report['lk']['ms_per_image']:.1f} ms per image",
              flush=True)
    pool = cupy.get_default_memory_pool()
    report["memory_pool_bytes"] = int(pool.total_bytes())
    report["ok"] = bool(report["parity"]["ok"] and report["resume"]["ok"]
                        and math.isfinite(report["lk"]["mean"]))
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"memory pool: {report['memory_pool_bytes'] / 2**20:.0f} MiB; wrote {args.out}",
          flush=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
