"""Adam on one flat buffer or array by array: the CPU step time of each, interleaved.

``fast.FlatAdam`` updates the whole buffer at once on a GPU (fewer kernel
launches) and array by array on a CPU. This script shows why on the CPU: it
times the paper's training step (``loss_and_grads`` and the Adam update,
batch 256, float32) with ``whole_buffer=True`` and with ``False``, one step of
each in turn, and prints the medians::

    python benchmarks/adam_layout.py --steps 40 --threads 1
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=("lvae", "vae"), default="lvae")
    p.add_argument("--steps", type=int, default=40, help="timed steps of each (default 40)")
    p.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1)")
    args = p.parse_args(argv)
    os.environ["OPENBLAS_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = str(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import numpy

    from lvae_np.backend import get_backend
    from lvae_np.fast import FlatAdam
    from lvae_np.models import Model, ModelConfig

    model = Model(ModelConfig(kind=args.model), get_backend("numpy", dtype="float32", seed=0),
                  fast=True)
    params, state = model.init()
    x = model.backend.asarray((numpy.random.default_rng(0).random((256, 784)) < 0.3)
                              .astype("float32"))
    runs = {name: [FlatAdam({k: v.copy() for k, v in params.items()}, whole_buffer=whole),
                   dict(state), []]
            for name, whole in (("whole buffer", True), ("array by array", False))}
    for i in range(args.steps + 3):
        for name, run in runs.items():
            opt, st, times = run
            t = time.perf_counter()
            _, grads, stats = model.loss_and_grads(opt.params, st, x, beta=0.5)
            opt.step(grads)
            if i >= 3:  # the first steps warm caches and allocators
                times.append(time.perf_counter() - t)
            run[1] = stats["state"]
    for name, (_, _, times) in runs.items():
        print(f"{args.model.upper()} step, Adam {name:15}: median {numpy.median(times) * 1e3:6.1f} ms "
              f"over {len(times)} steps, {args.threads} BLAS thread(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
