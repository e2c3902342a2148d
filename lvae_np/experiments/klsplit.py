"""The KL per layer of both models in one order: the paper's KL-spread claim, like with like.

Both models' objective is ``log p(x | z_1) - sum_i KL_i``, and in both the
KL_i add up to the same total, ``E_q[log q(z | x) - log p(z)]``. They split it
in different orders::

    LVAE  KL_i = E_q KL(q(z_i | z_{i+1}, x) || p(z_i | z_{i+1}))          (top-down)
    VAE   KL_i = E_q[log q(z_i | z_{i-1}) - log p(z_i | z_{i+1})]          (q bottom-up)

The LVAE's split follows the generative model, layer L first. The VAE's
term i pairs a bottom-up factor of q with a top-down factor of p: at the
sampled values, z_{i+1} was drawn from q(z_{i+1} | z_i) and so carries
information about z_i, and z_i about z_{i-1}. Split in the generative order,
as the LVAE's, the VAE's KL of layer i is::

    KL_i^td = E_q KL(q(z_i | z_{>i}, x) || p(z_i | z_{i+1}))
            = KL_i + I_i - I_{i-1}

with ``I_i = I_q(z_i; z_{i+1} | x) = E_q[log q(z_{i+1} | z_i) - log q(z_{i+1} | x)]``,
the information the VAE's posterior passes from layer i to layer i+1
(``I_0 = I_L = 0``; the KL_i^td are >= 0 and add up to the same total). The
derivation is Bayes' rule, ``q(z_i | z_{>i}, x) = q(z_i | x) q(z_{i+1} | z_i) /
q(z_{i+1} | x)`` (q is a Markov chain upwards), put into the difference of the
top-down KL of the layers >= i and of the layers > i.

``q(z_{i+1} | x)`` is an integral over the layers below, so I_i is estimated
for each test image from K chains z_1 .. z_L drawn from q, bracketed by two
bounds (Poole et al., 2019, "On variational bounds of mutual information")::

    lower  mean_a [log q(z'_a | z_a) - log mean_{b}      q(z'_a | z_b)]   (<= I, and <= log K)
    upper  mean_a [log q(z'_a | z_a) - log mean_{b != a} q(z'_a | z_b)]   (>= I)

with z = z_i, z' = z_{i+1}, a and b over the K chains. The VAE's KL_i^td is
given as the interval these make; the LVAE's is its KL_i, exact.

    python -m lvae_np.experiments.klsplit RUN_DIR [RUN_DIR ...] --out split.json

writes each run's split (JSON, refused if the file exists) and prints a table.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy

from ..backend import to_numpy
from ..training.checkpoint import CheckpointError
from ..training.cli import UsageError, entry
from ..data import DataError
from ..training.fileio import atomic_write_text
from ..training.metrics import evaluation_bn_state
from ..blocks import gaussian_block_forward
from ..blocks import subtree
from ..training.runs import evaluation_train_set, load_run, subset_indices

PROG = "lvae_np.experiments.klsplit"
LOG_2PI = math.log(2.0 * math.pi)


def log_mean_exp(a, axis: int):
    """log mean exp(a) along ``axis``, shifted by the largest finite entry (entries may be -inf)."""
    top = numpy.max(a, axis=axis, keepdims=True)
    top = numpy.where(numpy.isfinite(top), top, 0.0)
    count = a.shape[axis] - numpy.sum(numpy.isneginf(a), axis=axis)
    total = numpy.sum(numpy.exp(a - top), axis=axis)
    return numpy.log(total / count) + numpy.squeeze(top, axis=axis)


def log_density_matrix(z, mu, var):
    """``out[n, a, b] = log N(z[n, a]; mu[n, b], diag(var[n, b]))``, summed over units.

    Args:
        z, mu, var: arrays of shape (N, K, D): for each of N inputs, K points
            and K diagonal Gaussians.

    Returns:
        (N, K, K): every point's log density under every Gaussian of its input.
    """
    xp = numpy
    z, mu, var = (xp.asarray(a, dtype=xp.float64) for a in (z, mu, var))
    prec = 1.0 / var                                                     # (N, K, D)
    # sum_d (z_a - mu_b)^2 / var_b = z_a^2 . prec_b - 2 z_a . (mu_b prec_b) + mu_b^2 . prec_b
    quad = (xp.matmul(z * z, xp.swapaxes(prec, 1, 2))
            - 2.0 * xp.matmul(z, xp.swapaxes(mu * prec, 1, 2))
            + xp.sum(mu * mu * prec, axis=2)[:, None, :])
    log_norm = xp.sum(xp.log(var), axis=2) + z.shape[2] * LOG_2PI       # (N, K), per b
    return -0.5 * (quad + log_norm[:, None, :])


def information_bounds(log_q):
    """Lower and upper bounds on I(z; z') per input from ``log_q[n, a, b] = log q(z'_a | z_b)``.

    The K pairs (z_a, z'_a) of each input are draws of the joint; z_b with b
    != a are independent of z'_a. Returns (lower, upper), each of shape (N,):
    the InfoNCE bound (the diagonal kept in the average, at most log K) and
    the leave-one-out bound (the diagonal left out). Needs K >= 2.
    """
    log_q = numpy.asarray(log_q, dtype=numpy.float64)
    k = log_q.shape[1]
    if k < 2 or log_q.shape[2] != k:
        raise ValueError(f"need K x K log densities with K >= 2, got {log_q.shape[1:]}")
    diag = numpy.diagonal(log_q, axis1=1, axis2=2)                      # (N, K)
    with_diag = log_mean_exp(log_q, axis=2)                             # over b, (N, K)
    without = log_mean_exp(numpy.where(numpy.eye(k, dtype=bool), -numpy.inf, log_q), axis=2)
    return numpy.mean(diag - with_diag, axis=1), numpy.mean(diag - without, axis=1)


def vae_chain_information(model, params, state, x, k: int):
    """The VAE's K posterior chains per input and the bounds on each I_i = I_q(z_i; z_{i+1} | x).

    Args:
        model: a VAE (``model.config.kind == "vae"``) on its backend.
        params, state: its parameters and the batch-norm statistics to evaluate with.
        x: inputs (N, x_dim) on the model's backend.
        k: chains per input (K >= 2).

    Returns:
        dict with ``kl`` (L,): the mean over inputs and chains of each training
        term KL_i (the model's own estimator: the closed form for z_L, the
        sampled difference below it); ``info_lower`` and ``info_upper`` (L-1,),
        the bounds on I_1 .. I_{L-1} averaged over the inputs.
    """
    if model.config.kind != "vae":
        raise ValueError("the chain information is the VAE's; the LVAE's split is top-down")
    n = x.shape[0]
    out, _ = model.forward(params, state, x, model.noise(k * n), beta=1.0, kl="analytic",
                           training=False, k=k)
    layers = len(out.z)
    kl = [float(numpy.mean(numpy.sum(to_numpy(a), axis=1))) for a in out.kl]
    settings = model.settings(training=False)
    lower, upper = [], []
    for i in range(1, layers):
        z_below = out.z[i - 1]                                  # z_i, rows sample-major
        (mu, var), _ = gaussian_block_forward(
            z_below, subtree(params, f"up{i + 1}"), subtree(params, f"q{i + 1}"),
            state=subtree(state, f"up{i + 1}") or None,
            head_state=subtree(state, f"q{i + 1}") or None,
            settings=settings)                                  # q(z_{i+1} | z_i)

        def per_input(a):     # (k*n, D) sample-major -> (n, k, D)
            a = to_numpy(a)
            return numpy.swapaxes(a.reshape(k, n, a.shape[1]), 0, 1)

        lo, up = information_bounds(log_density_matrix(per_input(out.z[i]), per_input(mu),
                                                       per_input(var)))
        lower.append(float(numpy.mean(lo)))
        upper.append(float(numpy.mean(up)))
    return {"kl": kl, "info_lower": lower, "info_upper": upper}


def top_down_split(kl, info_lower, info_upper):
    """Bounds on KL_i^td = KL_i + I_i - I_{i-1} (I_0 = I_L = 0), layer 1 first: (lower, upper)."""
    lo = [0.0] + list(info_lower) + [0.0]
    up = [0.0] + list(info_upper) + [0.0]
    lower = [kl[i] + lo[i + 1] - up[i] for i in range(len(kl))]
    upper = [kl[i] + up[i + 1] - lo[i] for i in range(len(kl))]
    return lower, upper


def split_run(run_dir, *, k: int = 1000, subset: int = 1000, subset_seed: int = 0,
              batch_size: int = 20, seed: int = 0, data_dir=None, backend: str = "numpy",
              progress: bool = False) -> dict:
    """One run's KL per layer, in its training form and in the generative (top-down) order.

    The test examples are the seeded subset that ``lvae_np.evaluate --subset``
    draws (``runs.subset_indices``), with the batch-norm statistics the run
    evaluates with (its ``bn_stats``).
    """
    run = load_run(run_dir, data_dir, backend=backend, seed=seed, progress=progress)
    be = run.model.backend
    train_x = be.asarray(evaluation_train_set(run.dataset))
    state = evaluation_bn_state(run.model, run.params, run.state, train_x,
                                run.config.bn_stats, 500, progress)
    rows = subset_indices(len(run.dataset.test), subset, subset_seed)
    test = run.dataset.test[rows]
    result = {"run": str(run_dir), "model": run.config.model, "epoch": run.meta["epoch"],
              "k": k, "subset": subset, "subset_seed": subset_seed, "seed": seed}
    if run.config.model == "lvae":
        kl = numpy.zeros(len(run.config.latent))
        for start in range(0, len(test), 500):
            x = be.asarray(test[start:start + 500])
            out, _ = run.model.forward(run.params, state, x, run.model.noise(x.shape[0]),
                                       training=False, kl="analytic")
            kl += [float(numpy.sum(to_numpy(a))) for a in out.kl]
        kl = list(kl / len(test))
        result.update(kl=kl, top_down_lower=kl, top_down_upper=kl)
    else:
        parts = []
        for start in range(0, len(test), batch_size):
            x = be.asarray(test[start:start + batch_size])
            parts.append((x.shape[0], vae_chain_information(run.model, run.params, state, x, k)))
        total = sum(m for m, _ in parts)

        def average(key):
            return list(numpy.sum([m * numpy.asarray(p[key]) for m, p in parts], axis=0) / total)

        kl, lo, up = average("kl"), average("info_lower"), average("info_upper")
        td_lo, td_up = top_down_split(kl, lo, up)
        result.update(kl=kl, info_lower=lo, info_upper=up, top_down_lower=td_lo,
                      top_down_upper=td_up)
    result["kl"] = [float(v) for v in result["kl"]]
    total_kl = sum(result["kl"])
    result["total_kl"] = total_kl
    result["share_above_z1"] = 1.0 - result["kl"][0] / total_kl
    # the share above z_1 in the generative order: 1 - KL_1^td / total
    result["top_down_share_above_z1"] = [1.0 - result["top_down_upper"][0] / total_kl,
                                         1.0 - result["top_down_lower"][0] / total_kl]
    return result


def format_table(results) -> str:
    """A Markdown table of the runs' splits."""
    lines = ["| run | model | epoch | KL per layer, training form | KL per layer, top-down "
             "(VAE: bounds) | share above z1, training form | share above z1, top-down |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        if r["model"] == "lvae":
            td = " / ".join(f"{v:.2f}" for v in r["top_down_lower"])
        else:
            td = " / ".join(f"{a:.2f}-{b:.2f}" for a, b in zip(r["top_down_lower"],
                                                               r["top_down_upper"]))
        lo, up = r["top_down_share_above_z1"]
        share = f"{100 * lo:.0f}%" if abs(up - lo) < 5e-3 else f"{100 * lo:.0f}-{100 * up:.0f}%"
        lines.append(f"| {Path(r['run']).name} | {r['model'].upper()} | {r['epoch']} | "
                     + " / ".join(f"{v:.2f}" for v in r["kl"])
                     + f" | {td} | {100 * r['share_above_z1']:.0f}% | {share} |")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m lvae_np.experiments.klsplit",
        description="Each run's KL per layer in its training form and in the generative "
                    "(top-down) order, the LVAE's: for the VAE the information its "
                    "posterior passes upwards moves from each layer's term to the one "
                    "above, and the top-down split gives it back (bounds from K posterior "
                    "chains per test image). See the module's docstring for the algebra.")
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="run folders")
    p.add_argument("--out", type=Path, required=True,
                   help="JSON file for the results; the table goes beside it, with .md in "
                        "place of the suffix (both refused if they exist, unless --force)")
    p.add_argument("--force", action="store_true", help="overwrite --out")
    p.add_argument("--k", type=int, default=1000,
                   help="posterior chains per test image for the VAE's bounds (default: 1000)")
    p.add_argument("--eval-subset", type=int, default=1000, metavar="M",
                   help="test examples, the seeded subset lvae_np.evaluate --subset draws "
                        "(default: 1000)")
    p.add_argument("--eval-subset-seed", type=int, default=0, metavar="S",
                   help="the seed of that subset (default: 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the chains' noise (default: 0)")
    p.add_argument("--data-dir", default=None, help="as lvae_np.evaluate's --data-dir")
    p.add_argument("--backend", default="numpy", choices=("auto", "numpy", "cupy"),
                   help="array library (default: numpy)")
    args = p.parse_args(argv)
    if args.k < 2:
        raise UsageError(f"--k must be >= 2, got {args.k}")
    if args.eval_subset < 1:
        raise UsageError(f"--eval-subset must be >= 1, got {args.eval_subset}")
    for path in (args.out, args.out.with_suffix(".md")):
        if path.exists() and not args.force:
            raise UsageError(f"{path} exists: choose another --out, or --force")
    return args


@entry(PROG, errors=(CheckpointError, DataError, ValueError))
def main(argv=None) -> int:
    args = parse_args(argv)
    results = []
    for run_dir in args.runs:
        results.append(split_run(run_dir, k=args.k, subset=args.eval_subset,
                                 subset_seed=args.eval_subset_seed, seed=args.seed,
                                 data_dir=args.data_dir, backend=args.backend))
        print(format_table(results[-1:]).splitlines()[-1], flush=True)
    atomic_write_text(args.out, json.dumps(results, indent=2) + "\n")
    command = " ".join(["python -m lvae_np.experiments.klsplit"] + list(argv or sys.argv[1:]))
    atomic_write_text(args.out.with_suffix(".md"),
                      f"Produced by `{command}`.\n\n{format_table(results)}\n")
    print(format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
