"""Where a training step (or an L_k estimate) spends its time, by lvae_np function.

Runs the paper's 5-layer model under cProfile and charges every NumPy call to
the lvae_np function that made it, so each row is "this function, with the
array work it started". Rows are grouped by what they do (matrix products,
batch norm, activations, ...). Usage::

    python benchmarks/profile_step.py                 # LVAE training step
    python benchmarks/profile_step.py --model vae
    python benchmarks/profile_step.py --iw            # L_5000 for one test image
    python benchmarks/profile_step.py --top 20        # also the 20 costliest functions

The profiler itself adds overhead to every Python call, so the profiled
total is larger than the step's time; read the shares, and take absolute
times from bench_step.py. The model runs the fast forms of the ops, as
training does (``Model(fast=True)``; ``--plain`` runs the plain forms).
Works with older versions of lvae_np as well (it only needs
``Model.loss_and_grads``, ``optim.adam_update`` and ``bounds.log_likelihood``;
a version without the switch runs its own forms), to compare before and
after a change: run it with ``PYTHONPATH`` pointing at a checkout of the
other version.
"""
from __future__ import annotations

import argparse
import cProfile
import importlib
import inspect
import os
import pstats
import sys
import time


GROUPS = (  # (name, module, function-name prefixes or None for all)
    ("matrix products (dense layers, incl. bias)", "layers", ("dense_",)),
    ("batch norm", "layers", ("batchnorm_", "init_bn")),
    ("activations (leaky ReLU, softplus, sigmoid)", "layers", None),
    ("output likelihood", "likelihoods", None),
    ("Gaussian ops (sample, merge, KL, log-density)", "gaussian", None),
    ("Adam", "optim", None),
    ("Adam", "fast", ("adam_update_",)),
    ("batch norm", "fast", ("batchnorm_", "running_averages")),
    ("activations (leaky ReLU, softplus, sigmoid)", "fast", ("leaky_relu_",)),
    ("networks (blocks, heads, tiling)", "fast", None),
    ("parameter tree (cutting, merging)", "blocks", ("subtree", "with_prefix", "merge",
                                                     "block_names", "_keys_under")),
    ("networks (blocks, heads, tiling)", "blocks", None),
    ("networks (blocks, heads, tiling)", "networks", None),         # older versions' name
    ("model (wiring, noise, sums)", "models", None),
    ("model steps and passes (sums, wiring)", "steps", None),
    ("model steps and passes (sums, wiring)", "variants", None),
    ("model steps and passes (sums, wiring)", "passes", None),        # older versions' names
    ("model steps and passes (sums, wiring)", "inference", None),
    ("parameter tree (cutting, merging)", "params", None),
    ("bounds (log-mean-exp, chunks)", "bounds", None),
    ("backend (random numbers, namespace)", "backend", None),
)


def group_of(filename: str, funcname: str) -> str | None:
    """The GROUPS name of an lvae_np function, or None for code outside lvae_np."""
    parts = filename.replace("\\", "/").split("/")
    if len(parts) < 2 or parts[-2] != "lvae_np":
        return None
    module = parts[-1].removesuffix(".py")
    for name, mod, prefixes in GROUPS:
        if mod == module and (prefixes is None or funcname.startswith(prefixes)):
            return name
    return f"other ({module})"


def attribute(stats: pstats.Stats) -> dict:
    """Seconds per lvae_np function: its own time plus every non-lvae_np call it made.

    cProfile records, for each function, the time spent in it per caller. A
    NumPy function's time is charged to the lvae_np caller it was called
    from (time it spent calling further non-lvae_np code included, since
    NumPy never calls back into lvae_np).
    """
    own = {}
    for func, (_, _, tt, _, callers) in stats.stats.items():
        filename, _, funcname = func
        g = group_of(filename, funcname)
        if g is not None:
            own[func] = own.get(func, 0.0) + tt
            continue
        for caller, (_, _, _, ct) in callers.items():
            if group_of(caller[0], caller[2]) is not None:
                own[caller] = own.get(caller, 0.0) + ct
    return own


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", choices=("lvae", "vae"), default="lvae")
    p.add_argument("--iw", action="store_true",
                   help="profile L_k for one test image instead of a training step")
    p.add_argument("--k", type=int, default=5000, help="importance samples with --iw")
    p.add_argument("--max-rows", type=int,
                   help="rows per chunk of L_k with --iw (default: the library's own)")
    p.add_argument("--repeats", type=int, default=30,
                   help="profiled steps (with --iw: images)")
    p.add_argument("--threads", type=int, default=2, help="BLAS threads")
    p.add_argument("--top", type=int, default=0, help="also list the N costliest functions")
    p.add_argument("--plain", action="store_true",
                   help="the plain forms of the ops (Model's default), not the fast ones")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.threads < 1 or args.k < 1:
        p.error("--repeats, --threads and --k must be positive")
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    import numpy as np
    import lvae_np
    from lvae_np import bounds, optim
    from lvae_np.backend import get_backend
    from lvae_np.models import Model, ModelConfig

    be = get_backend("numpy", dtype="float32", seed=0)
    switch = {"fast": not args.plain} if "fast" in inspect.signature(Model).parameters else {}
    model = Model(ModelConfig(kind=args.model, x_dim=784, latent=(64, 32, 16, 8, 4),
                              hidden=(512, 256, 128, 64, 32), batch_norm=True,
                              likelihood="bernoulli"), be, **switch)
    params, state = model.init()
    rng = np.random.default_rng(0)
    x = (rng.random((256, 784)) < 0.13).astype(np.float32)  # MNIST's share of ones
    try:  # Adam in place: in fast.py, or in optim.py in older versions
        in_place = importlib.import_module("lvae_np.fast")
    except ImportError:
        in_place = optim
    adam = getattr(in_place, "adam_update_", optim.adam_update)
    opt = optim.adam_init(params)

    def step():
        nonlocal params, opt
        _, grads, _ = model.loss_and_grads(params, state, x, beta=1.0)
        params, opt = adam(params, grads, opt)

    chunking = {} if args.max_rows is None else {"max_rows": args.max_rows}

    def iw():
        bounds.log_likelihood(model, params, state, x[:1], args.k, batch_size=1, **chunking)

    work = iw if args.iw else step
    for _ in range(3):
        work()
    t0 = time.perf_counter()
    for _ in range(args.repeats):
        work()
    plain = (time.perf_counter() - t0) / args.repeats
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(args.repeats):
        work()
    prof.disable()
    own = attribute(pstats.Stats(prof))
    total = sum(own.values())
    what = f"L_{args.k} of one image" if args.iw else "training step (batch 256, Adam)"
    print(f"lvae_np from {os.path.dirname(lvae_np.__file__)}")
    print(f"{args.model.upper()} {what}, {args.threads} BLAS threads: {plain * 1e3:.1f} ms "
          f"unprofiled; {total / args.repeats * 1e3:.1f} ms profiled, split as:")
    by_group = {}
    for (filename, _, funcname), sec in own.items():
        g = group_of(filename, funcname)
        by_group[g] = by_group.get(g, 0.0) + sec
    for g, sec in sorted(by_group.items(), key=lambda kv: -kv[1]):
        print(f"  {sec / args.repeats * 1e3:7.2f} ms  {100 * sec / total:5.1f}%  {g}")
    if args.top:
        print(f"the {args.top} costliest functions:")
        for (filename, line, funcname), sec in sorted(own.items(), key=lambda kv: -kv[1])[:args.top]:
            print(f"  {sec / args.repeats * 1e3:7.2f} ms  {100 * sec / total:5.1f}%  "
                  f"{os.path.basename(filename)}:{funcname}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
