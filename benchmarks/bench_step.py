#!/usr/bin/env python
"""Training-step and log-likelihood benchmark: lvae_np against its floor and PyTorch eager.

Measured in one run, interleaved round-robin (each repeat runs every
contender once, the starting contender rotating), so that drifts in machine
load hit all contenders alike:

* ``lvae_np step``: ``model.loss_and_grads`` + ``adam_update_`` + the state
  update, on ``--backend``, with the fast forms of the ops
  (``Model(fast=True)``, as training runs it); and the same step split into
  forward (``model.forward``), backward (``model.backward``) and Adam.
* ``floor``: the same step's matrix products alone, replayed with
  preallocated operands and ``matmul(a, b, out=c)``. The products are
  recorded once per model by wrapping ``lvae_np.layers.dense_forward`` and
  ``dense_backward`` for one step: every (N,D)@(D,M) of the forward pass, and
  in the backward pass the products actually computed (dx = G W^T when it is
  returned, dW = x^T G), with the operands' shapes and memory layouts.
* ``PyTorch step``: the same model in eager mode (``torch_models.py``),
  zero_grad + forward + backward + Adam, on ``--threads`` threads.
* the importance-weighted log-likelihood L_k (k = ``--iw-k``) of test images:
  ``lvae_np.bounds.log_likelihood`` against torch under ``no_grad``, both
  with the x-only part computed once per image and the k samples in chunks.
* peak memory of each contender, each in a subprocess of this script.

Run it on a quiet machine: ``python benchmarks/bench_step.py`` (``--help``
for the options). See benchmarks/README.md for how to read the numbers.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONTENDERS = ("ours-step", "ours-split", "floor", "torch-step")
MEMORY_CONTENDERS = ("ours-step", "floor", "torch-step", "ours-iw", "torch-iw")
MEMORY_TAG = "@@MEMORY "
TARGETS = {"step_vs_floor": 2.0, "step_vs_torch": 1.0, "iw_vs_torch": 0.9}
BATCH = 256
BETA = 1.0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", choices=("lvae", "vae", "both"), default="both")
    p.add_argument("--repeats", type=int, default=30, help="timed rounds")
    p.add_argument("--warmup", type=int, default=5, help="untimed rounds before them")
    p.add_argument("--settle", type=int, default=1,
                   help="untimed calls of a contender just before each of its timed calls, so "
                        "that what the previous contender leaves behind (a thread pool still "
                        "spinning, cold caches) is not charged to it")
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="threads for NumPy's BLAS (OPENBLAS_NUM_THREADS, set before NumPy is "
                        "imported) and for torch (torch.set_num_threads)")
    p.add_argument("--backend", choices=("numpy", "cupy"), default="numpy",
                   help="lvae_np's backend (cupy: the GPU, synchronised before each clock read)")
    p.add_argument("--torch-device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: cuda when --backend cupy and torch sees a GPU, else cpu")
    p.add_argument("--iw-k", type=int, default=5000, help="importance samples per test image")
    p.add_argument("--iw-images", type=int, default=20, help="test images for the IW-LL timing")
    p.add_argument("--iw-batch-size", type=int, default=1,
                   help="lvae_np: test images per log_likelihood call (batch_size)")
    p.add_argument("--iw-max-rows", type=int, default=1000,
                   help="rows (samples x images) per top-down chunk: lvae_np's max_rows, and "
                        "torch's chunk of samples (one image at a time)")
    p.add_argument("--skip-torch", action="store_true")
    p.add_argument("--skip-iw", action="store_true")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--skip-check", action="store_true",
                   help="skip the float64 check that the torch model computes lvae_np's loss")
    p.add_argument("--alone-repeats", type=int, default=20,
                   help="timed steps of lvae_np and of PyTorch each run alone in a process of "
                        "its own, after the interleaved timing (0: skip): two libraries' "
                        "thread pools in one process can slow either one")
    p.add_argument("--memory-repeats", type=int, default=3,
                   help="training steps run by each memory subprocess")
    p.add_argument("--memory-iw-images", type=int, default=2,
                   help="test images run by each IW memory subprocess")
    p.add_argument("--list-matmuls", action="store_true",
                   help="print every recorded product, not just the grouped summary")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", help="write every number to this JSON file")
    # Internal: one contender alone, for the memory measurement.
    p.add_argument("--only", choices=MEMORY_CONTENDERS, help=argparse.SUPPRESS)
    p.add_argument("--data-file", help=argparse.SUPPRESS)
    p.add_argument("--matmuls-file", help=argparse.SUPPRESS)
    p.add_argument("--time-alone", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.only and args.model == "both":
        p.error("--only needs --model lvae or --model vae")
    if args.repeats < 1 or args.threads < 1 or args.iw_k < 1 or args.iw_images < 1:
        p.error("--repeats, --threads, --iw-k and --iw-images must be positive")
    return args


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None:  # before NumPy (and its BLAS) is loaded
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = str(ARGS.threads)

import numpy as np  # noqa: E402

import lvae_np.layers as layers_module  # noqa: E402
from lvae_np import bounds  # noqa: E402
from lvae_np.backend import get_backend  # noqa: E402
import op_count  # noqa: E402  (benchmarks/op_count.py, beside this script)
from lvae_np.steps import tile_part  # noqa: E402
from lvae_np.models import Model, ModelConfig  # noqa: E402
from lvae_np.fast import adam_update_  # noqa: E402
from lvae_np.optim import AdamConfig, adam_init  # noqa: E402

clock = time.perf_counter


# ============================================================================
# The machine
# ============================================================================
def _openblas_runtime():
    """(threads, config string) of the OpenBLAS NumPy loaded, or (None, None)."""
    import ctypes
    paths = set()
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower()}
    except OSError:
        return None, None
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        threads = config = None
        for prefix in ("scipy_openblas_", "openblas_"):
            for suffix in ("64_", ""):
                f_threads = getattr(lib, f"{prefix}get_num_threads{suffix}", None)
                f_config = getattr(lib, f"{prefix}get_config{suffix}", None)
                if f_threads is not None and threads is None:
                    threads = int(f_threads())
                if f_config is not None and config is None:
                    f_config.restype = ctypes.c_char_p
                    config = f_config().decode(errors="replace").strip()
        if threads is not None or config is not None:
            return threads, config
    return None, None


def machine_info(args, torch_mod, torch_device) -> dict:
    info = {"python": platform.python_version(), "platform": platform.platform(),
            "logical_cpus": os.cpu_count(), "threads": args.threads}
    try:
        info["usable_cpus"] = len(os.sched_getaffinity(0))
    except AttributeError:
        info["usable_cpus"] = os.cpu_count()
    model_name, cores = None, set()
    try:
        phys = core = None
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "model name" and model_name is None:
                    model_name = value
                elif key == "physical id":
                    phys = value
                elif key == "core id":
                    core = value
                elif not key and phys is not None:
                    cores.add((phys, core))
        if phys is not None:
            cores.add((phys, core))
    except OSError:
        pass
    info["cpu"] = model_name or platform.processor() or "unknown"
    info["physical_cores"] = len(cores) or None
    info["numpy"] = np.__version__
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        info["numpy_blas"] = {k: blas.get(k) for k in ("name", "version", "openblas configuration")
                              if blas.get(k)}
    except Exception as exc:  # the format of show_config changes between versions
        info["numpy_blas"] = {"error": f"{type(exc).__name__}: {exc}"}
    threads, config = _openblas_runtime()
    info["numpy_blas_threads"] = threads
    info["numpy_blas_runtime"] = config
    try:
        info["load_average_start"] = os.getloadavg()
    except OSError:
        info["load_average_start"] = None
    if torch_mod is not None:
        blas = [part.split("=", 1)[1] for part in torch_mod.__config__.show().replace(",", " ").split()
                if part.startswith("BLAS_INFO=")]
        info["torch"] = torch_mod.__version__
        info["torch_blas"] = blas[0] if blas else "unknown"
        info["torch_threads"] = torch_mod.get_num_threads()
        info["torch_device"] = torch_device
    return info


def print_machine(info, be_name):
    blas = info["numpy_blas"]
    print("== Machine ==")
    print(f"CPU: {info['cpu']}; {info['logical_cpus']} logical CPUs "
          f"({info['physical_cores'] or '?'} physical cores), {info['usable_cpus']} usable; "
          f"threads used: {info['threads']}")
    print(f"Python {info['python']}, NumPy {info['numpy']}: BLAS {blas.get('name', '?')} "
          f"{blas.get('version', '')}; at run time: {info['numpy_blas_runtime'] or 'unknown'}, "
          f"{info['numpy_blas_threads'] if info['numpy_blas_threads'] is not None else '?'} threads")
    if "torch" in info:
        print(f"PyTorch {info['torch']}: BLAS {info['torch_blas']}, "
              f"{info['torch_threads']} threads, device {info['torch_device']}")
    print(f"lvae_np backend: {be_name}, float32")
    la = info["load_average_start"]
    if la is not None:
        busy = la[0] > 0.5 * info["usable_cpus"]
        print(f"load average at the start (1/5/15 min): {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}"
              + ("   <-- the machine is busy: these timings are not trustworthy" if busy else ""))
    print()


# ============================================================================
# Data and models
# ============================================================================
def load_data(args):
    """A training batch of binarised MNIST (BATCH rows) and the first test images (binarised)."""
    if args.data_file:
        with np.load(args.data_file) as f:
            return f["batch"], f["test"]
    from lvae_np import data
    ds = data.load_dataset("mnist", progress=False)
    rng = np.random.default_rng(args.seed)
    idx = np.sort(rng.choice(ds.train.shape[0], size=BATCH, replace=False))
    batch = data.binarize(ds.train[idx], rng)
    test = np.ascontiguousarray(ds.test[:args.iw_images], dtype=np.float32)
    return np.ascontiguousarray(batch, dtype=np.float32), test


def make_sync(be):
    if be.name == "cupy":
        import cupy
        return lambda: cupy.cuda.Device().synchronize()
    return lambda: None


def copy_tree(tree: dict, xp):
    return {k: xp.array(v, copy=True) for k, v in tree.items()}


def config_for(kind):
    return ModelConfig(kind=kind)  # the paper's: latent 64..4, hidden 512..32, batch norm


# ============================================================================
# Contenders: each .run() performs one step and returns {phase: seconds}
# ============================================================================
class OursStep:
    """model.loss_and_grads + adam_update_ (in place) + the batch-norm state update."""

    def __init__(self, model, params, state, x, sync):
        xp = model.backend.xp
        self.model, self.x, self.sync = model, x, sync
        self.params, self.state = copy_tree(params, xp), copy_tree(state, xp)
        self.opt, self.adam = adam_init(self.params), AdamConfig()

    def run(self):
        t0 = clock()
        _, grads, stats = self.model.loss_and_grads(self.params, self.state, self.x, BETA)
        adam_update_(self.params, grads, self.opt, self.adam)  # in place, as the trainer does
        self.state = stats["state"]
        self.sync()
        return {"total": clock() - t0}


class OursSplit(OursStep):
    """The same step through model.forward / model.backward / adam_update, timed apart.

    Forward includes drawing the noise, the loss and the batch statistics that
    loss_and_grads also computes.
    """

    def run(self):
        model, x = self.model, self.x
        xp = model.backend.xp
        n = x.shape[0]
        t0 = clock()
        noise = model.noise(n)
        outputs, cache = model.forward(self.params, self.state, x, noise, beta=BETA,
                                       kl="analytic")
        f = outputs.f
        _ = -xp.mean(f)
        model.batch_means(outputs, "analytic")
        self.sync()
        t1 = clock()
        grads = model.backward(xp.full(f.shape, -1.0 / n, dtype=f.dtype), cache)
        self.sync()
        t2 = clock()
        adam_update_(self.params, grads, self.opt, self.adam)  # in place, as the trainer does
        self.state = outputs.state
        self.sync()
        t3 = clock()
        return {"total": t3 - t0, "forward": t1 - t0, "backward": t2 - t1, "adam": t3 - t2}


class Floor:
    """The recorded matrix products, replayed with preallocated operands and matmul(out=)."""

    def __init__(self, records, xp, sync, seed=0):
        rng = np.random.default_rng(seed)
        self.xp, self.sync, self.ops = xp, sync, []
        for r in records:
            a = _operand(rng, r["a_shape"], r["a_order"], xp)
            b = _operand(rng, r["b_shape"], r["b_order"], xp)
            c = xp.empty((r["a_shape"][0], r["b_shape"][1]), dtype=xp.float32)
            self.ops.append((a, b, c))

    def run(self):
        matmul = self.xp.matmul
        t0 = clock()
        for a, b, c in self.ops:
            matmul(a, b, out=c)
        self.sync()
        return {"total": clock() - t0}


def _operand(rng, shape, order, xp):
    """A float32 array of ``shape``, C-ordered, or a transposed view of a C array for "F"."""
    if order == "F":
        base = rng.standard_normal(tuple(shape[::-1]), dtype=np.float32)
        return xp.asarray(base).T
    return xp.asarray(rng.standard_normal(tuple(shape), dtype=np.float32))


class TorchStep:
    """zero_grad + forward + backward + Adam on the torch model."""

    def __init__(self, torch, module, x, device):
        self.torch, self.module, self.x = torch, module, x
        self.opt = torch.optim.Adam(module.parameters(), lr=0.002, betas=(0.9, 0.999), eps=1e-4)
        self.sync = (torch.cuda.synchronize if device == "cuda" else (lambda: None))

    def run(self):
        t0 = clock()
        self.opt.zero_grad(set_to_none=True)
        loss = self.module.loss(self.x, BETA)
        self.sync()
        t1 = clock()
        loss.backward()
        self.sync()
        t2 = clock()
        self.opt.step()
        self.sync()
        t3 = clock()
        return {"total": t3 - t0, "forward": t1 - t0, "backward": t2 - t1, "adam": t3 - t2}


# ============================================================================
# Recording the matrix products of one step
# ============================================================================
def _order(a):
    flags = a.flags
    return "C" if flags.c_contiguous else ("F" if flags.f_contiguous else "strided")


def _record(kind, a, b, name, note=None):
    m, k = a.shape
    n = b.shape[1]
    rec = {"kind": kind, "param": name, "a_shape": [m, k], "b_shape": [k, n],
           "a_order": _order(a), "b_order": _order(b), "flops": 2 * m * k * n}
    if note:
        rec["note"] = note
    return rec


def record_matmuls(model, params, state, x):
    """Run one training step with dense_forward/dense_backward wrapped; return the products.

    Returns (records, patched): records in call order, and the names that were
    patched (lvae_np.layers' two functions, plus any module that imported
    them by name, found by identity).
    """
    orig_f, orig_b = layers_module.dense_forward, layers_module.dense_backward
    params = copy_tree(params, model.backend.xp)
    names = {id(v): k for k, v in params.items()}
    # A Gaussian head multiplies by [W_mu | W_var], joined at each call: not a parameter.
    head = "head [W_mu|W_var]"
    records = []

    def dense_forward(*args, **kwargs):
        xin = args[0] if args else kwargs["x"]
        W = args[1] if len(args) > 1 else kwargs["W"]
        records.append(_record("forward", xin, W, names.get(id(W), head),
                               "input is the data" if xin is x else None))
        return orig_f(*args, **kwargs)

    def dense_backward(*args, **kwargs):
        dout = args[0] if args else kwargs["dout"]
        cache = args[1] if len(args) > 1 else kwargs["cache"]
        out = orig_b(*args, **kwargs)
        dx, dW = out[0], out[1]
        name = names.get(id(cache.W), head)
        if dx is not None:
            records.append(_record("dx", dout, cache.W.T, name,
                                   "unneeded: gradient of the data" if cache.x is x else None))
        if dW is not None:
            records.append(_record("dW", cache.x.T, dout, name))
        return out

    # Patch the module attributes, and any name bound to the originals elsewhere.
    patched = []
    targets = [(layers_module, "dense_forward", orig_f, dense_forward),
               (layers_module, "dense_backward", orig_b, dense_backward)]
    for mod_name, mod in list(sys.modules.items()):
        if not mod_name.startswith("lvae_np") or mod is layers_module or mod is None:
            continue
        for fn in (orig_f, orig_b):
            for key, value in list(vars(mod).items()):
                if value is fn:
                    targets.append((mod, key, fn, dense_forward if fn is orig_f else dense_backward))
    for mod, key, _, new in targets:
        setattr(mod, key, new)
        patched.append(f"{mod.__name__}.{key}")
    try:
        model.loss_and_grads(params, copy_tree(state, model.backend.xp), x, BETA)
    finally:
        for mod, key, old, _ in targets:
            setattr(mod, key, old)
    return records, patched


def expected_forward_products(config) -> int:
    """Products in one pass: 2 per MLP block (2L), 1 per Gaussian head (2L-1: mu and var
    share one product), 1 for the output layer (a Gaussian output is a head too)."""
    L_ = config.n_layers
    return 2 * 2 * L_ + (2 * L_ - 1) + 1


def summarize_matmuls(records):
    counts = {k: sum(1 for r in records if r["kind"] == k) for k in ("forward", "dx", "dW")}
    flops = sum(r["flops"] for r in records)
    unneeded = [r for r in records if r.get("note", "").startswith("unneeded")]
    return {"counts": counts, "products": len(records), "flops": flops,
            "unneeded_products": len(unneeded), "unneeded_flops": sum(r["flops"] for r in unneeded),
            "dx_skipped_for": [r["param"] for r in records if r["kind"] == "dW"
                               and not any(q["kind"] == "dx" and q["param"] == r["param"]
                                           for q in records)]}


def print_matmuls(kind, records, summary, patched, expected, full=False):
    c = summary["counts"]
    print(f"{kind.upper()}: {c['forward']} forward + {c['dx']} dx + {c['dW']} dW = "
          f"{summary['products']} products, {summary['flops'] / 1e9:.4f} GFLOP per step")
    if c["forward"] != expected:
        print(f"  WARNING: the config implies {expected} dense layers but {c['forward']} forward "
              "products went through dense_forward: the floor may miss products done elsewhere")
    if summary["dx_skipped_for"]:
        print(f"  dx not computed for: {', '.join(summary['dx_skipped_for'])}")
    if summary["unneeded_products"]:
        print(f"  {summary['unneeded_products']} computed product(s) nobody needs (the data's "
              f"gradient): {summary['unneeded_flops'] / 1e9:.4f} GFLOP, included in the floor")
    if full:
        for r in records:
            print(f"    {r['kind']:7s} {r['param']:10s} ({r['a_shape'][0]},{r['a_shape'][1]})"
                  f"@({r['b_shape'][0]},{r['b_shape'][1]}) {r['a_order']}{r['b_order']}"
                  + (f"  [{r['note']}]" if r.get("note") else ""))
        return
    groups = {}
    for r in records:
        key = (r["kind"], tuple(r["a_shape"]), tuple(r["b_shape"]), r["a_order"] + r["b_order"])
        groups.setdefault(key, []).append(r["param"])
    for (k, a, b, lay), params in groups.items():
        print(f"    {k:7s} ({a[0]},{a[1]})@({b[0]},{b[1]}) {lay} x{len(params)}: "
              f"{', '.join(params)}")


# ============================================================================
# The float64 check: the torch model computes lvae_np's loss
# ============================================================================
def equivalence_check(torch, tm_mod, kind, batch, test):
    model = Model(config_for(kind), backend=get_backend("numpy", dtype="float64", seed=123),
                  fast=True)
    params, state = model.init()
    x = batch.astype(np.float64)
    noise = model.noise(x.shape[0])
    loss, grads, _ = model.loss_and_grads(params, state, x, BETA, noise=noise)
    tmodel = tm_mod.HierarchicalVAE(kind).double()
    tm_mod.load_lvae_np(tmodel, params, state)
    tloss = tmodel.loss(torch.from_numpy(x), BETA, noise=[torch.from_numpy(e) for e in noise])
    tloss.backward()
    tgrads = tm_mod.lvae_np_grads(tmodel)
    grad_rel = max(float(np.max(np.abs(grads[k] - tgrads[k])) / (np.max(np.abs(grads[k])) + 1e-300))
                   for k in grads)
    # The IW log-weights of one test image, batch norm in evaluation mode, same noise.
    k = 16
    x1 = test[:1].astype(np.float64)
    part, _ = model.bottom_up_forward(params, state, x1, training=False)
    tiled = tile_part(part, k)
    eps = model.noise(k)
    f = model.per_sample_forward(params, state, tiled, eps, beta=1.0, kl="mc",
                                 training=False)[0].f
    tm_mod.load_lvae_np(tmodel, params, state)  # the running averages, before the step above
    tmodel.eval()
    tf = tmodel.log_weights(torch.from_numpy(x1), k, chunk=5,
                            noise=[torch.from_numpy(e) for e in eps]).numpy()
    return {"loss_lvae_np": float(loss), "loss_torch": float(tloss.item()),
            "max_abs_loss_diff": abs(float(loss) - float(tloss.item())),
            "max_rel_grad_diff": grad_rel,
            "max_abs_iw_log_weight_diff": float(np.max(np.abs(np.asarray(f) - tf)))}


# ============================================================================
# Statistics and printing
# ============================================================================
def stats_ms(seconds):
    ms = [1e3 * s for s in seconds]
    return {"median": statistics.median(ms), "min": min(ms), "max": max(ms),
            "mean": statistics.fmean(ms), "n": len(ms)}


def fmt_row(label, st, extra=""):
    return (f"  {label:44s} {st['median']:9.2f} {st['min']:9.2f} {st['max']:9.2f}"
            + (f"   {extra}" if extra else ""))


def verdict(ratio, target):
    return "met" if ratio <= target else "NOT met"


# ============================================================================
# Timing: steps round-robin
# ============================================================================
def time_steps(entries, args):
    """entries: list of (model kind, contender name, object). Returns {(kind, name): [results]}."""
    results = {(k, n): [] for k, n, _ in entries}
    for _ in range(args.warmup):
        for _, _, obj in entries:
            obj.run()
    for r in range(args.repeats):
        shift = r % len(entries)
        for kind, name, obj in entries[shift:] + entries[:shift]:
            for _ in range(args.settle):
                obj.run()
            results[(kind, name)].append(obj.run())
    return results


def time_iw(kind, args, ours, torch_side, test):
    """Interleaved per group of ``--iw-batch-size`` images. Returns per-image seconds and estimates."""
    model, params, state, be, sync = ours
    B = args.iw_batch_size
    groups = [(s, min(s + B, test.shape[0])) for s in range(0, test.shape[0], B)]
    x_dev = be.asarray(test)

    def run_ours(s, e):
        t0 = clock()
        lk = bounds.log_likelihood(model, params, state, x_dev[s:e], args.iw_k, batch_size=B,
                                   max_rows=args.iw_max_rows)
        sync()
        return clock() - t0, [float(v) for v in be.to_numpy(lk)]

    def run_torch(s, e):
        torch, tmodel, xt, tsync = torch_side
        t0 = clock()
        vals = []
        with torch.no_grad():
            for i in range(s, e):
                vals.append(tmodel.log_likelihood_estimate(xt[i:i + 1], args.iw_k,
                                                           chunk=args.iw_max_rows))
            tsync()
        dt = clock() - t0
        return dt, [float(v) for v in vals]

    sides = [("ours", run_ours)] + ([("torch", run_torch)] if torch_side else [])
    for _, fn in sides:  # warm-up: the first group, untimed
        fn(*groups[0])
    per_image = {name: [] for name, _ in sides}
    estimates = {name: [] for name, _ in sides}
    for g, (s, e) in enumerate(groups):
        order = sides if g % 2 == 0 else sides[::-1]
        for name, fn in order:
            dt, vals = fn(s, e)
            per_image[name].extend([dt / (e - s)] * (e - s))
            estimates[name].extend(vals)
    return per_image, estimates


# ============================================================================
# Memory: one contender per subprocess
# ============================================================================
def _rss_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM, the peak resident set size, to the current RSS
        return True
    except OSError:
        return False


def _trim_heap():
    gc.collect()
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # give freed heap pages back to the OS
    except Exception:
        pass


def run_only(args):
    """The --only child: baseline after imports, data and parameters; then the contender."""
    import resource
    kind, what = args.model, args.only
    batch, test = load_data(args)
    be = get_backend(args.backend, dtype="float32", seed=args.seed)
    sync = make_sync(be)
    model = Model(config_for(kind), backend=be, fast=True)
    params, state = model.init()
    torch = tmodel = device = None
    if what.startswith("torch"):
        torch, tm_mod, device = _import_torch(args)
        tmodel = tm_mod.HierarchicalVAE(kind).to(device)
        tm_mod.load_lvae_np(tmodel, {k: be.to_numpy(v) for k, v in params.items()},
                            {k: be.to_numpy(v) for k, v in state.items()})
        del params, state
    x = be.asarray(batch)
    records = None
    if what == "floor" and args.matmuls_file:
        with open(args.matmuls_file) as f:
            records = json.load(f)[kind]
    elif what == "floor":  # run alone: record the products here, before the baseline
        records, _ = record_matmuls(model, params, state, x)
    xt = torch.from_numpy(batch).to(device) if torch is not None else None
    test_dev = be.asarray(test) if not what.startswith("torch") else None
    test_t = torch.from_numpy(test).to(device) if torch is not None else None

    _trim_heap()
    pool = None
    if be.name == "cupy" and not what.startswith("torch"):
        import cupy
        pool = cupy.get_default_memory_pool()
        pool.free_all_blocks()
    if torch is not None and device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        dev_base = torch.cuda.memory_allocated()
    base_rss = _rss_kib("VmRSS")
    base_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    exact = _reset_peak()

    n_steps = args.warmup + args.repeats
    if args.time_alone:   # step times alone in this process: no memory probes, no other library
        obj = (OursStep(model, params, state, x, sync) if what == "ours-step"
               else TorchStep(torch, tmodel, xt, device))
        times = [obj.run()["total"] for _ in range(n_steps)][args.warmup:]
        print(MEMORY_TAG + json.dumps({"contender": what, "model": kind,
                                       "step_ms": [1e3 * t for t in times],
                                       "torch_imported": "torch" in sys.modules}), flush=True)
        return
    if what in ("ours-step", "floor", "torch-step"):
        if what == "ours-step":
            obj = OursStep(model, params, state, x, sync)  # Adam's state: after the baseline
        elif what == "floor":
            obj = Floor(records, be.xp, sync)
        else:
            obj = TorchStep(torch, tmodel, xt, device)
        for _ in range(n_steps):
            obj.run()
    elif what == "ours-iw":
        bounds.log_likelihood(model, params, state, test_dev, args.iw_k,
                              batch_size=args.iw_batch_size, max_rows=args.iw_max_rows)
        sync()
    else:
        tmodel.eval()
        with torch.no_grad():
            for i in range(test_t.shape[0]):
                tmodel.log_likelihood_estimate(test_t[i:i + 1], args.iw_k, chunk=args.iw_max_rows)
    if exact:
        peak_kib = _rss_kib("VmHWM")
        method = "VmHWM (reset at the baseline) - VmRSS at the baseline"
    else:
        peak_kib = base_rss + max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_maxrss)
        method = "ru_maxrss growth (a lower bound: an earlier, higher peak hides growth)"
    out = {"contender": what, "model": kind, "baseline_rss_mib": base_rss / 1024,
           "peak_rss_increase_mib": (peak_kib - base_rss) / 1024, "method": method,
           "steps": n_steps if what in ("ours-step", "floor", "torch-step") else None,
           "images": int(test.shape[0]) if what.endswith("iw") else None}
    if pool is not None:
        out["device_pool_mib"] = pool.total_bytes() / 2**20
    if torch is not None and device == "cuda":
        out["device_peak_mib"] = (torch.cuda.max_memory_allocated() - dev_base) / 2**20
    # NumPy's own account: peak traced bytes (arrays and Python objects) during one more call.
    if what in ("ours-step", "floor", "ours-iw") and be.name == "numpy":
        import tracemalloc
        tracemalloc.start()
        if what == "ours-iw":
            bounds.log_likelihood(model, params, state, test_dev[:1], args.iw_k,
                                  batch_size=1, max_rows=args.iw_max_rows)
        else:
            obj.run()
        out["tracemalloc_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    print(MEMORY_TAG + json.dumps(out), flush=True)


def time_alone(args, kinds, data_file, have_torch):
    """The step of lvae_np and of PyTorch, each timed in a process of its own (``--time-alone``)."""
    results = {}
    for kind in kinds:
        results[kind] = {}
        for what in ("ours-step", "torch-step") if have_torch else ("ours-step",):
            results[kind][what] = _child(args, kind, what, data_file, None, args.warmup,
                                         args.alone_repeats, ["--time-alone"])
    return results


def _child(args, kind, what, data_file, matmuls_file, warmup, repeats, extra=()):
    """Run this script with ``--only what`` and return its tagged JSON line (or the error)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--only", what, "--model", kind,
           "--repeats", str(repeats), "--warmup", str(warmup),
           "--threads", str(args.threads), "--backend", args.backend,
           "--torch-device", args.torch_device, "--iw-k", str(args.iw_k),
           "--iw-images", str(min(args.iw_images, args.memory_iw_images)),
           "--iw-batch-size", str(args.iw_batch_size),
           "--iw-max-rows", str(args.iw_max_rows), "--seed", str(args.seed),
           "--data-file", data_file, *extra]
    if matmuls_file:
        cmd += ["--matmuls-file", matmuls_file]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MEMORY_TAG)]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr or proc.stdout).strip()[-2000:]}
    return json.loads(lines[-1][len(MEMORY_TAG):])


def measure_memory(args, kinds, data_file, matmuls_file, have_torch):
    results = {}
    for kind in kinds:
        results[kind] = {}
        for what in MEMORY_CONTENDERS:
            if what.startswith("torch") and not have_torch:
                continue
            if what.endswith("iw") and args.skip_iw:
                continue
            results[kind][what] = _child(args, kind, what, data_file, matmuls_file, 0,
                                         args.memory_repeats)
    return results


# ============================================================================
# Main
# ============================================================================
def _import_torch(args):
    """(torch, torch_models, device) or raises ImportError."""
    import torch
    sys.path.insert(0, str(HERE))
    import torch_models
    torch.set_num_threads(args.threads)
    device = args.torch_device
    if device == "auto":
        device = "cuda" if args.backend == "cupy" and torch.cuda.is_available() else "cpu"
    return torch, torch_models, device


def main(args):
    if args.only:
        return run_only(args)
    kinds = ["lvae", "vae"] if args.model == "both" else [args.model]
    torch = tm_mod = None
    device = None
    torch_skip_reason = None
    if args.skip_torch:
        torch_skip_reason = "--skip-torch"
    else:
        try:
            torch, tm_mod, device = _import_torch(args)
        except Exception as exc:
            torch_skip_reason = f"import torch failed ({type(exc).__name__}: {exc})"
    be = get_backend(args.backend, dtype="float32", seed=args.seed)
    sync = make_sync(be)
    info = machine_info(args, torch, device)
    print_machine(info, be.name)
    if torch_skip_reason:
        print(f"PyTorch baseline skipped: {torch_skip_reason}\n")

    batch, test = load_data(args)
    report = {"machine": info, "args": vars(args), "backend": be.name, "batch": BATCH,
              "beta": BETA, "torch_skipped": torch_skip_reason, "models": {}}

    # -- set up every contender; record the products ---------------------------
    x = be.asarray(batch)
    entries, ours_iw, torch_iw, all_records = [], {}, {}, {}
    print("== Matrix products of one training step (through lvae_np.layers.dense_*) ==")
    for kind in kinds:
        config = config_for(kind)
        model = Model(config, backend=be, fast=True)   # the forms training runs
        params, state = model.init()
        records, patched = record_matmuls(model, params, state, x)
        summary = summarize_matmuls(records)
        all_records[kind] = records
        print_matmuls(kind, records, summary, patched, expected_forward_products(config),
                      args.list_matmuls)
        report["models"][kind] = {"matmuls": records, "matmul_summary": summary,
                                  "patched": patched}
        entries.append((kind, "ours-step", OursStep(model, params, state, x, sync)))
        entries.append((kind, "ours-split", OursSplit(model, params, state, x, sync)))
        entries.append((kind, "floor", Floor(records, be.xp, sync, seed=args.seed)))
        np_params = {k: be.to_numpy(v) for k, v in params.items()}
        np_state = {k: be.to_numpy(v) for k, v in state.items()}
        if torch is not None:
            tmodel = tm_mod.HierarchicalVAE(kind).to(device)
            tm_mod.load_lvae_np(tmodel, np_params, np_state)
            entries.append((kind, "torch-step",
                            TorchStep(torch, tmodel, torch.from_numpy(batch).to(device), device)))
            iw_model = tm_mod.HierarchicalVAE(kind).to(device)
            tm_mod.load_lvae_np(iw_model, np_params, np_state)
            iw_model.eval()
            torch_iw[kind] = (torch, iw_model, torch.from_numpy(test).to(device),
                              torch.cuda.synchronize if device == "cuda" else (lambda: None))
        ours_iw[kind] = (model, copy_tree(params, be.xp), copy_tree(state, be.xp), be, sync)
    print(f"  patched: {', '.join(sorted(set(report['models'][kinds[0]]['patched'])))}")
    print()
    print("== What a GPU would launch: array operations and host syncs per training step ==")
    for kind in kinds:  # counted on NumPy behind a counting namespace (op_count.py)
        counts = op_count.count_step(kind, config=config_for(kind))
        report["models"][kind]["op_counts"] = {"kernels": counts.kernels, "views": counts.views,
                                               "syncs": counts.syncs}
        print(f"{kind.upper()}: {counts.kernels} kernels, {counts.views} views, "
              f"{counts.syncs} host syncs (Adam on one flat buffer, as on a GPU)")
    print()

    # -- the torch model computes lvae_np's loss --------------------------------
    if torch is not None and not args.skip_check:
        report["equivalence"] = {}
        for kind in kinds:
            try:
                eq = equivalence_check(torch, tm_mod, kind, batch, test)
            except Exception as exc:
                eq = {"error": f"{type(exc).__name__}: {exc}"}
            report["equivalence"][kind] = eq
            if "error" in eq:
                print(f"torch model check ({kind.upper()}) could not run: {eq['error']}")
            else:
                print(f"torch model matches lvae_np ({kind.upper()}, float64, batch {BATCH}): "
                      f"max |loss diff| = {eq['max_abs_loss_diff']:.2e} "
                      f"(loss {eq['loss_lvae_np']:.6f}); max relative gradient diff = "
                      f"{eq['max_rel_grad_diff']:.2e}; max |IW log-weight diff| = "
                      f"{eq['max_abs_iw_log_weight_diff']:.2e}")
        print()

    # -- the training step, round-robin -------------------------------------------
    print(f"timing {len(entries)} contenders x {args.repeats} repeats "
          f"({args.warmup} warm-up rounds, {args.settle} settle call(s) before each timed one)...",
          flush=True)
    t_start = clock()
    results = time_steps(entries, args)
    report["step_seconds_wall"] = clock() - t_start

    # -- the importance-weighted log-likelihood -----------------------------------
    iw = {}
    if not args.skip_iw:
        for kind in kinds:
            print(f"timing IW-LL ({kind.upper()}, k={args.iw_k}, {test.shape[0]} images)...",
                  flush=True)
            iw[kind] = time_iw(kind, args, ours_iw[kind], torch_iw.get(kind), test)
    try:
        info["load_average_end"] = os.getloadavg()
    except OSError:
        info["load_average_end"] = None

    # -- each step alone, and memory: in subprocesses ---------------------------------
    memory, alone = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        data_file = os.path.join(tmp, "data.npz")
        np.savez(data_file, batch=batch, test=test)
        if args.alone_repeats > 0:
            print("timing each step alone (one subprocess per library)...", flush=True)
            alone = time_alone(args, kinds, data_file, torch is not None)
        if not args.skip_memory:
            print("measuring peak memory (one subprocess per contender)...", flush=True)
            matmuls_file = os.path.join(tmp, "matmuls.json")
            with open(matmuls_file, "w") as f:
                json.dump(all_records, f)
            memory = measure_memory(args, kinds, data_file, matmuls_file, torch is not None)
    print()

    # -- report -------------------------------------------------------------------------
    for kind in kinds:
        report["models"][kind].update(
            summarize_model(kind, args, results, iw.get(kind), memory.get(kind),
                            report["models"][kind]["matmul_summary"], be.name, alone.get(kind)))
    if info.get("load_average_end") is not None:
        la = info["load_average_end"]
        print(f"load average at the end (1/5/15 min): {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, default=str)
        print(f"wrote {args.json}")


def summarize_model(kind, args, results, iw, memory, mm, be_name, alone=None):
    """Print the model's table; return its numbers for the JSON file."""
    out = {"times_ms": {}, "stats_ms": {}}
    for (k, name), runs in results.items():
        if k != kind:
            continue
        phases = runs[0].keys()
        out["times_ms"][name] = {p: [1e3 * r[p] for r in runs] for p in phases}
        out["stats_ms"][name] = {p: stats_ms([r[p] for r in runs]) for p in phases}
    st = out["stats_ms"]
    print(f"== {kind.upper()}: 5 layers, batch {BATCH}, float32, lvae_np on {be_name}; "
          f"{args.repeats} repeats ==")
    print(f"  {'':44s} {'median':>9s} {'min':>9s} {'max':>9s}   (ms)")
    print(fmt_row("lvae_np step (loss_and_grads + Adam)", st["ours-step"]["total"]))
    split = st["ours-split"]
    for p, label in (("forward", "forward (model.forward + loss)"),
                     ("backward", "backward (model.backward)"), ("adam", "Adam (adam_update_)"),
                     ("total", "sum of the three")):
        print(fmt_row("  " + label, split[p]))
    fl = st["floor"]["total"]
    gflops = mm["flops"] / 1e9
    out["floor_gflops_per_s"] = gflops / (fl["median"] / 1e3)
    print(fmt_row(f"floor: {mm['products']} matmuls, {gflops:.3f} GFLOP", fl,
                  f"{out['floor_gflops_per_s']:.1f} GFLOP/s at the median"))
    have_torch = "torch-step" in st
    if have_torch:
        tt = st["torch-step"]
        print(fmt_row("PyTorch step (zero_grad+fwd+bwd+Adam)", tt["total"]))
        for p, label in (("forward", "forward (zero_grad + loss)"), ("backward", "backward"),
                         ("adam", "Adam (optimizer.step)")):
            print(fmt_row("  " + label, tt[p]))

    def ratio(a, b):
        med = st[a]["total"]["median"] / st[b]["total"]["median"]
        xs, ys = out["times_ms"][a]["total"], out["times_ms"][b]["total"]
        paired = statistics.median(x / y for x, y in zip(xs, ys))
        return med, paired

    ratios = {}
    print("  ratios (of the medians; [median of the per-round ratios]):")
    r, pr = ratio("ours-step", "floor")
    ratios["step_vs_floor"] = {"of_medians": r, "paired": pr, "target": TARGETS["step_vs_floor"]}
    print(f"    lvae_np / floor    {r:6.3f} [{pr:6.3f}]   target <= {TARGETS['step_vs_floor']}: "
          f"{verdict(r, TARGETS['step_vs_floor'])}")
    if have_torch:
        r, pr = ratio("ours-step", "torch-step")
        ratios["step_vs_torch"] = {"of_medians": r, "paired": pr,
                                   "target": TARGETS["step_vs_torch"]}
        print(f"    lvae_np / PyTorch  {r:6.3f} [{pr:6.3f}]   target <= "
              f"{TARGETS['step_vs_torch']}: {verdict(r, TARGETS['step_vs_torch'])}")
        r, pr = ratio("floor", "torch-step")
        ratios["floor_vs_torch"] = {"of_medians": r, "paired": pr}
        print(f"    floor / PyTorch    {r:6.3f} [{pr:6.3f}]")
        for p in ("forward", "backward", "adam"):
            ratios[f"{p}_vs_torch"] = split[p]["median"] / tt[p]["median"]
        print("    lvae_np / PyTorch by phase: " + ", ".join(
            f"{p} {ratios[f'{p}_vs_torch']:.2f}" for p in ("forward", "backward", "adam")))
    out["ratios"] = ratios
    if alone:
        out["alone"] = alone
        print("  each step alone, in a process of its own (ms):")
        med = {}
        for what, label in (("ours-step", "lvae_np step"), ("torch-step", "PyTorch step")):
            a = alone.get(what)
            if a is None:
                continue
            if "error" in a:
                print(f"    {label:16s} failed: {a['error'].splitlines()[-1]}")
                continue
            med[what] = statistics.median(a["step_ms"])
            print(fmt_row(f"  {label} alone", stats_ms([t / 1e3 for t in a["step_ms"]])))
            inside = st[what]["total"]["median"]
            print(f"      alone / in this process: {med[what] / inside:.3f}")
        if len(med) == 2:
            r = med["ours-step"] / med["torch-step"]
            ratios["step_vs_torch_alone"] = {"of_medians": r, "target": TARGETS["step_vs_torch"]}
            print(f"    lvae_np / PyTorch, each alone  {r:6.3f}   target <= "
                  f"{TARGETS['step_vs_torch']}: {verdict(r, TARGETS['step_vs_torch'])}")

    if iw is not None:
        per_image, estimates = iw
        out["iw"] = {"k": args.iw_k, "images": len(per_image["ours"]),
                     "lvae_np_batch_size": args.iw_batch_size, "max_rows": args.iw_max_rows,
                     "ms_per_image": {n: [1e3 * v for v in vals] for n, vals in per_image.items()},
                     "stats_ms_per_image": {n: stats_ms(v) for n, v in per_image.items()},
                     "estimates": estimates}
        print(f"  IW-LL, k={args.iw_k}, {len(per_image['ours'])} test images (lvae_np: "
              f"batch_size {args.iw_batch_size}, max_rows {args.iw_max_rows}; PyTorch: one image "
              f"at a time, chunks of {args.iw_max_rows} samples), ms per image:")
        print(fmt_row("lvae_np bounds.log_likelihood", out["iw"]["stats_ms_per_image"]["ours"]))
        if "torch" in per_image:
            print(fmt_row("PyTorch (no_grad)", out["iw"]["stats_ms_per_image"]["torch"]))
            r = (out["iw"]["stats_ms_per_image"]["ours"]["median"]
                 / out["iw"]["stats_ms_per_image"]["torch"]["median"])
            out["iw"]["ratio"] = r
            print(f"    lvae_np / PyTorch  {r:6.3f}            target <= {TARGETS['iw_vs_torch']}: "
                  f"{verdict(r, TARGETS['iw_vs_torch'])}")
        means = {n: statistics.fmean(v) for n, v in estimates.items()}
        print("    mean L_k over the images (same weights, independent samples): "
              + ", ".join(f"{'lvae_np' if n == 'ours' else 'PyTorch'} {m:.3f}"
                          for n, m in means.items()))
    if memory:
        out["memory"] = memory
        labels = {"ours-step": "lvae_np step", "floor": "floor", "torch-step": "PyTorch step",
                  "ours-iw": "lvae_np IW-LL", "torch-iw": "PyTorch IW-LL"}
        print("  peak memory, MiB above the baseline (a subprocess per contender; baseline after "
              "imports, data and parameters):")
        for what, m in memory.items():
            if "error" in m:
                print(f"    {labels[what]:16s} failed: {m['error'].splitlines()[-1]}")
                continue
            extra = []
            if "tracemalloc_peak_mib" in m:
                extra.append(f"NumPy/Python peak traced by tracemalloc: "
                             f"{m['tracemalloc_peak_mib']:.1f}")
            if "device_pool_mib" in m:
                extra.append(f"CuPy pool: {m['device_pool_mib']:.1f}")
            if "device_peak_mib" in m:
                extra.append(f"CUDA peak: {m['device_peak_mib']:.1f}")
            runs = f"{m['steps']} steps" if m["steps"] is not None else f"{m['images']} images"
            print(f"    {labels[what]:16s} RSS +{m['peak_rss_increase_mib']:7.1f} ({runs})"
                  + (f"; {'; '.join(extra)}" if extra else ""))
    print()
    return out


if __name__ == "__main__":
    main(ARGS)
