"""Across-seed summaries: each model's L_K and the paired LVAE - VAE difference over seeds.

An experiment run with ``--seeds 0,1,2`` trains every run once per seed.
``across_seeds`` groups the evaluated runs that differ only in their seed and
gives, for each model and depth, the mean of L_K over the seeds, its
standard deviation (ddof 1) and standard error (sd / sqrt(seeds)); and the
same for the per-seed paired difference LVAE - VAE (each seed's mean
difference over the same test examples, ``report.paired_differences``).
"""
from __future__ import annotations

import csv
import io
import math

SEED_COLUMNS = ("dataset", "layers", "latent", "batch_norm", "warmup", "kl", "preset",
                "quantity", "n_seeds", "seeds", "mean", "sd", "stderr", "values")


def spread(values: list) -> tuple:
    """(mean, sample standard deviation, standard error) of ``values``; sd and s.e. None for one.

    Args:
        values: the per-seed numbers, at least one.
    """
    n = len(values)
    mean = math.fsum(values) / n
    if n < 2:
        return mean, None, None
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, sd, sd / math.sqrt(n)


def _group(spec) -> tuple:
    return (spec.dataset, spec.latent, spec.hidden, spec.batch_norm, spec.warmup, spec.kl,
            spec.preset, spec.choices)


def across_seeds(records: list, paired: list) -> list:
    """Mean and spread over seeds of each model's L_K and of the paired LVAE - VAE difference.

    Args:
        records: the runs (``RunRecord``), each with its ``seed`` and its evaluation.
        paired: ``report.paired_differences(records)``, one entry per seed and pair.

    Returns:
        One dict per (settings, quantity) with ``SEED_COLUMNS``' keys, quantity
        "VAE", "LVAE" (L_K of each; "VAE = LVAE" with one layer) or "LVAE - VAE";
        groups with no evaluated seed are left out.
    """
    groups, order = {}, []
    for rec in records:
        if not rec.eval or rec.eval.get("lk") is None:
            continue
        spec = rec.spec
        what = "VAE = LVAE" if spec.layers == 1 else spec.model.upper()
        key = _group(spec) + (what,)
        if key not in groups:
            order.append(key)
            groups[key] = []
        groups[key].append((rec.seed, rec.eval["lk"]))
    for q in paired:
        key = (q["dataset"], q["latent"], q["hidden"], q["batch_norm"], q["warmup"], q["kl"],
               q["preset"], q.get("choices", ()), "LVAE - VAE")
        if key not in groups:
            order.append(key)
            groups[key] = []
        groups[key].append((q["seed"], q["diff"]))
    out = []
    for key in order:
        dataset, latent, _, bn, wu, kl, preset, _, what = key
        pairs = sorted(groups[key])
        values = [v for _, v in pairs]
        mean, sd, se = spread(values)
        out.append(dict(dataset=dataset, layers=len(latent), latent="/".join(map(str, latent)),
                        batch_norm=bn, warmup=wu, kl=kl, preset=preset or "", quantity=what,
                        n_seeds=len(values), seeds=" ".join(str(s) for s, _ in pairs),
                        mean=mean, sd=sd, stderr=se, values=" ".join(repr(v) for v in values)))
    return out


def format_seeds_csv(summary: list) -> str:
    """seeds.csv: one row per model (or difference) and settings; floats in full."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(SEED_COLUMNS)
    for row in summary:
        writer.writerow(["" if row[c] is None else repr(row[c]) if isinstance(row[c], float)
                         else str(row[c]) for c in SEED_COLUMNS])
    return buf.getvalue()


def format_seeds_markdown(summary: list, k: int) -> list:
    """The lines of results.md's across-seed table (none when ``summary`` is empty)."""
    if not summary:
        return []

    def num(v, fmt):
        return "-" if v is None else format(v, fmt)

    lines = ["", f"Across seeds: the mean of L_{k} over the seeds, its standard deviation "
             "(s.d.) and standard error (s.e. = s.d. / sqrt(seeds)); for LVAE - VAE, of each "
             "seed's paired difference on the same test examples (positive: the LVAE is "
             "better):", "",
             f"| dataset | layers | BN | WU | KL in training | model | seeds | mean L_{k} "
             "| s.d. | s.e. |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in summary:
        fmt = "+.2f" if r["quantity"] == "LVAE - VAE" else ".2f"
        lines.append(f"| {r['dataset']} | {r['layers']} ({r['latent']}) | "
                     f"{'on' if r['batch_norm'] else 'off'} | {'on' if r['warmup'] else 'off'} | "
                     f"{r['kl']} | {r['quantity']} | {r['n_seeds']} ({r['seeds']}) | "
                     f"{num(r['mean'], fmt)} | {num(r['sd'], '.2f')} | "
                     f"{num(r['stderr'], '.2f')} |")
    return lines
