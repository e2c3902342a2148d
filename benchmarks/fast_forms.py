#!/usr/bin/env python
"""Each fast form of ``lvae_np/fast.py`` against its plain twin: the time of each, interleaved.

On the paper's shapes (batch 256, float32, the 5-layer LVAE), each pair runs
in turn, round after round, and the script prints the medians and their
ratio, then the same for the whole training step (``Model(fast=False)`` with
``optim.adam_update`` against ``Model(fast=True)`` with ``fast.FlatAdam``, as
training runs it)::

    python benchmarks/fast_forms.py --repeats 50 --threads 1

benchmarks/README.md ("Fast forms") says what each one saves. A script, not
a test; run it on a quiet machine.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--repeats", type=int, default=50, help="timed rounds of each pair")
    p.add_argument("--step-repeats", type=int, default=15, help="timed rounds of the whole step")
    p.add_argument("--threads", type=int, default=1, help="BLAS threads")
    args = p.parse_args(argv)
    if min(args.repeats, args.step_repeats, args.threads) < 1:
        p.error("--repeats, --step-repeats and --threads must be positive")
    return args


def interleaved(pairs: dict, repeats: int) -> dict:
    """name -> (plain median s, fast median s), each pair's two calls alternating."""
    times = {name: ([], []) for name in pairs}
    for r in range(repeats + 2):
        for name, (plain, fast) in pairs.items():
            order = ((0, plain), (1, fast)) if r % 2 else ((1, fast), (0, plain))
            for which, call in order:
                t = time.perf_counter()
                call()
                if r >= 2:   # two untimed rounds warm the caches and the allocator
                    times[name][which].append(time.perf_counter() - t)
    return {name: (statistics.median(a), statistics.median(b)) for name, (a, b) in times.items()}


def main(argv=None) -> int:
    args = parse_args(argv)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import numpy as np

    from lvae_np import blocks, fast, layers, optim
    from lvae_np.backend import get_backend
    from lvae_np.blocks import BlockSettings, subtree
    from lvae_np.models import Model, ModelConfig

    rng = np.random.default_rng(0)
    f32 = np.float32
    x = rng.normal(size=(256, 512)).astype(f32)
    gamma, beta = np.ones(512, f32), np.zeros(512, f32)
    bn_state = layers.BNState(np.zeros(512, f32), np.ones(512, f32))
    dout = rng.normal(size=(256, 512)).astype(f32)

    config = ModelConfig()   # the paper's 5-layer LVAE
    be = get_backend("numpy", dtype="float32", seed=0)
    plain_model, fast_model = Model(config, be), Model(config, be, fast=True)
    params, state = plain_model.init()
    head = subtree(params, "q1")                          # (512, 64)
    h = rng.normal(size=(256, 512)).astype(f32)
    g = (rng.normal(size=(256, 64)).astype(f32), rng.normal(size=(256, 64)).astype(f32))
    batch_stats = {k: v + 0.5 for k, v in state.items()}
    block, block_state = subtree(params, "up2"), subtree(state, "up2")
    rows = rng.normal(size=(1000, 512)).astype(f32)       # a chunk of L_k: 1000 rows
    eval_settings = BlockSettings(training=False, forms=fast.FAST)  # only the folding differs
    folded = fast.fold_batch_norm(block, block_state)
    adam_params = {k: v.copy() for k, v in params.items()}
    adam_grads = {k: 1e-3 * rng.normal(size=v.shape).astype(f32) for k, v in params.items()}
    opt_plain, opt_fast = optim.adam_init(adam_params), optim.adam_init(adam_params)
    in_place = {k: v.copy() for k, v in adam_params.items()}

    def plain_running_averages():   # the two lines of layers.batchnorm_forward, layer by layer
        return {k: 0.9 * state[k] + 0.1 * batch_stats[k] for k in state}

    def head_pair(head_forward, head_backward):
        def run():
            out, cache = head_forward(h, head)
            return head_backward(g, cache)
        return run

    pairs = {
        "leaky ReLU forward (256, 512)": (lambda: layers.leaky_relu_forward(x),
                                          lambda: fast.leaky_relu_forward(x)),
        "batch norm forward (256, 512)": (
            lambda: layers.batchnorm_forward(x, gamma, beta, state=bn_state),
            lambda: fast.batchnorm_forward(x, gamma, beta, state=bn_state, momentum=None)),
        "Gaussian head q1, forward + backward": (
            head_pair(blocks.gaussian_head_forward, blocks.gaussian_head_backward),
            head_pair(fast.gaussian_head_forward, fast.gaussian_head_backward)),
        "running averages of all 20 layers": (plain_running_averages,
                                              lambda: fast.running_averages(state, batch_stats,
                                                                            0.1)),
        "MLP block up2 in evaluation, 1000 rows": (   # batch norm folded: fold_batch_norm
            lambda: blocks.mlp_forward(rows, block, state=block_state, settings=eval_settings),
            lambda: blocks.mlp_forward(rows, folded, settings=BlockSettings(
                batch_norm=False, training=False, forms=fast.FAST))),
        "Adam on 98 arrays": (lambda: optim.adam_update(adam_params, adam_grads, opt_plain),
                              lambda: fast.adam_update_(in_place, adam_grads, opt_fast)),
    }
    print(f"fast forms against their plain twins: medians of {args.repeats} interleaved "
          f"rounds, float32, {args.threads} BLAS thread(s), load average "
          f"{os.getloadavg()[0]:.2f}")
    print(f"  {'':42s} {'plain ms':>9s} {'fast ms':>9s} {'fast/plain':>10s}")
    for name, (a, b) in interleaved(pairs, args.repeats).items():
        print(f"  {name:42s} {a * 1e3:9.3f} {b * 1e3:9.3f} {b / a:10.2f}")

    heads = [subtree(params, name) for name in sorted({k.split(".")[0] for k in params})
             if "W_mu" in subtree(params, name)]

    def join_heads():   # what the fused heads add: [W_mu | W_var] and [b_mu | b_var], per call
        for p in heads:
            np.concatenate([p["W_mu"], p["W_var"]], axis=1)
            np.concatenate([p["b_mu"], p["b_var"]])
    joins = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        join_heads()
        joins.append(time.perf_counter() - t)
    print(f"  joining [W_mu | W_var] and [b_mu | b_var] of the {len(heads)} heads of a step: "
          f"{statistics.median(joins) * 1e3:.3f} ms")

    xb = be.asarray((rng.random((256, 784)) < 0.13).astype(f32))
    plain_run = {"params": {k: v.copy() for k, v in params.items()}, "state": dict(state)}
    plain_run["opt"] = optim.adam_init(plain_run["params"])
    flat_opt = fast.FlatAdam({k: v.copy() for k, v in params.items()})
    fast_run = {"state": dict(state)}

    def plain_step():
        _, grads, stats = plain_model.loss_and_grads(plain_run["params"], plain_run["state"], xb)
        plain_run["params"], plain_run["opt"] = optim.adam_update(plain_run["params"], grads,
                                                                  plain_run["opt"])
        plain_run["state"] = stats["state"]

    def fast_step():
        _, grads, stats = fast_model.loss_and_grads(flat_opt.params, fast_run["state"], xb)
        flat_opt.step(grads)
        fast_run["state"] = stats["state"]

    (a, b), = interleaved({"step": (plain_step, fast_step)}, args.step_repeats).values()
    print(f"LVAE training step, batch 256 (loss_and_grads and Adam), medians of "
          f"{args.step_repeats} rounds: plain forms {a * 1e3:.1f} ms, fast forms "
          f"{b * 1e3:.1f} ms, fast/plain {b / a:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
