"""The experiment's results in words and numbers: tables, paired differences, run listing.

``write_results`` writes ``results.csv`` (every value in full precision),
the figures and ``results.md`` (how the results were made, the protocol, the
budget, the table, and the LVAE's paired difference from the VAE in L_K; with
several seeds also their mean and spread across seeds, and ``seeds.csv``). The values
come from each run's stored evaluation, unchanged. ``describe_runs`` is the
``--list`` listing of where each run stands.
"""
from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy

from ..training.config import PRESETS
from ..training.fileio import atomic_write_text
from .claims import format_claims_markdown, judge_claims
from .figures import draw_figures
from .seeds import across_seeds, format_seeds_csv, format_seeds_markdown
from .specs import EXPERIMENTS, PROTOCOLS, ExperimentError, Settings
from .state import BadRecord, config_mismatches, format_number, read_eval, saved_meta


def table_rows(records: list, settings: Settings) -> tuple[list, list]:
    """The results table as (columns, rows of dicts); missing values are None.

    Values come from each run's stored evaluation (``eval_path``), unchanged.
    """
    n_layers = max(r.spec.layers for r in records) if records else 0
    z = range(1, n_layers + 1)
    cols = (["run_id", "dataset", "model", "layers", "latent", "batch_norm", "warmup",
             "warmup_epochs", "warmup_steps", "kl", "preset", "seed", "epochs_done",
             "target_epochs", "status", "eval_epoch", "test_elbo", "lk", "lk_stderr",
             "iw_samples", "n"]
            + [f"kl_z{i}" for i in z] + [f"au_z{i}" for i in z] + [f"au_kl_z{i}" for i in z])
    rows = []
    for rec in records:
        spec, ev = rec.spec, rec.eval or {}
        row = dict.fromkeys(cols)
        row.update(run_id=rec.run_id, dataset=spec.dataset, model=spec.model,
                   layers=spec.layers, latent="/".join(map(str, spec.latent)),
                   batch_norm=spec.batch_norm, warmup=spec.warmup,
                   warmup_epochs=settings.config(spec, rec.seed).warmup_epochs,
                   warmup_steps=settings.config(spec, rec.seed).warmup_steps, kl=spec.kl,
                   preset=spec.preset, seed=rec.seed,
                   epochs_done=rec.epoch, target_epochs=rec.target, status=rec.status)
        if ev:
            row.update(eval_epoch=ev.get("epoch"), test_elbo=ev.get("elbo"), lk=ev.get("lk"),
                       lk_stderr=ev.get("lk_stderr"), iw_samples=ev.get("iw_samples"),
                       n=ev.get("n"))
            for key, prefix in (("kl", "kl_z"), ("active_units", "au_z"),
                                ("active_units_kl", "au_kl_z")):
                for i, v in enumerate(ev.get(key) or [], start=1):
                    row[f"{prefix}{i}"] = v
        rows.append(row)
    return cols, rows


EXAMPLE_KEYS = ("limit", "subset", "subset_seed", "split_size")  # which examples were evaluated


def kl_label(kl: str, model: str, layers: int) -> str:
    """What the KL estimator of a run's training objective is, layer by layer, in a few words."""
    if kl == "mc" or model == "lvae" or layers == 1:
        return kl
    return f"analytic z{layers}, mc z1..z{layers - 1}"


def paired_differences(records: list) -> list:
    """L_K of the LVAE minus the VAE's, example by example, for runs that differ only in model.

    For each (dataset, sizes, BN, WU, KL estimator, preset, choices, seed) with an evaluated VAE
    and LVAE whose per-example values cover the same test examples, a dict with both
    means, the mean difference and its standard error. The per-example difference
    removes the variation between images, which dominates each model's own
    standard error. Evaluations of other lengths or limits are not paired.

    Raises:
        ExperimentError: the two evaluations have as many values but one of them is
            of a seeded subset (``lvae_np.evaluate --subset``) and they do not
            record the same subset, seed and split size.
    """
    by_key = {}
    for rec in records:
        s = rec.spec
        by_key.setdefault((s.dataset, s.latent, s.hidden, s.batch_norm, s.warmup, s.kl,
                           s.preset, tuple(s.choices), rec.seed), {})[s.model] = rec
    out = []
    for (dataset, latent, hidden, bn, wu, kl, preset, choices, seed), pair in by_key.items():
        vae, lvae = pair.get("vae"), pair.get("lvae")
        ev = [r.eval if r is not None else None for r in (vae, lvae)]
        if any(e is None or "lk_per_example" not in e for e in ev) or \
                len(ev[0]["lk_per_example"]) != len(ev[1]["lk_per_example"]) or \
                ev[0].get("limit") != ev[1].get("limit"):
            continue
        which = [tuple(e.get(k) for k in EXAMPLE_KEYS) for e in ev]
        if which[0] != which[1] and (ev[0].get("subset") or ev[1].get("subset")):
            differ = ", ".join(f"{k} {a} and {b}"
                               for k, a, b in zip(EXAMPLE_KEYS, *which) if a != b)
            raise ExperimentError(
                f"cannot pair {vae.run_id} and {lvae.run_id}: they were evaluated on other "
                f"test examples ({differ}); evaluate both with the same --eval-subset and "
                "--eval-subset-seed")
        d = numpy.asarray(ev[1]["lk_per_example"]) - numpy.asarray(ev[0]["lk_per_example"])
        out.append(dict(dataset=dataset, layers=len(latent), latent=latent, hidden=hidden,
                        batch_norm=bn, warmup=wu, kl=kl, preset=preset, choices=choices,
                        seed=seed,
                        epochs=(ev[0].get("epoch"), ev[1].get("epoch")), n=len(d),
                        vae=ev[0]["lk"], lvae=ev[1]["lk"], diff=float(d.mean()),
                        diff_stderr=float(d.std(ddof=1) / math.sqrt(len(d)))
                        if len(d) > 1 else 0.0))
    return out


def _csv_value(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _per_layer(row: dict, prefix: str, layers: int, fmt) -> str:
    values = [row.get(f"{prefix}{i}") for i in range(1, layers + 1)]
    if all(v is None for v in values):
        return "-"
    return " / ".join("-" if v is None else fmt(v) for v in values)


def format_csv(cols: list, rows: list) -> str:
    """results.csv: one row per run; missing values are empty cells; floats in full."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(cols)
    for row in rows:
        writer.writerow([_csv_value(row[c]) for c in cols])
    return buf.getvalue()


def format_markdown(rows: list, settings: Settings, *, name: str, command: str,
                    seconds: float, figures: list, notes: list, paired: list = (),
                    protocol: str | None = None, summary: list = (),
                    claims: list = ()) -> str:
    """results.md: how it was made, the protocol, the budget, the table, figures.

    ``protocol``: the runs' preset (None: the paper's protocol); ``summary``:
    ``seeds.across_seeds``'s rows, shown when there are several seeds;
    ``claims``: ``claims.judge_claims``'s verdicts. Missing values are "-".
    """
    k = settings.iw_samples
    if settings.eval_subset is not None:
        test = (f"{settings.eval_subset} test examples drawn at random (a permutation "
                f"seeded with {settings.eval_subset_seed}, the same examples for every run)")
    elif settings.eval_limit is not None:
        test = f"the first {settings.eval_limit} test examples"
    else:
        test = "the whole test set"
    seeds = settings.run_seeds
    several = len(seeds) > 1
    seed_text = f"seed {seeds[0]}" if not several else \
        f"seeds {', '.join(map(str, seeds))} (each run once per seed)"
    lines = [
        f"Produced by `{command}` on {time.strftime('%Y-%m-%d %H:%M')} "
        f"({seconds:.0f} s this time).",
        "",
        f"Experiment `{name}`: {len(rows)} runs in `{settings.runs_dir}`. Protocol: "
        f"{PROTOCOLS[protocol]}. Budget: "
        f"{settings.epochs} epochs per run, warm-up over {_warmup(settings)} where "
        f"WU is on (else none), batch {settings.batch_size}, {seed_text}; "
        + (f"evaluated by `lvae_np.evaluate` with L_{k} on {test} "
           f"(batch-norm statistics {_bn_words(protocol)})."
           if k else f"evaluated by `lvae_np.evaluate` (ELBO only) on {test}."),
        "",
        f"| run | model | layers | BN | WU | KL in training | epochs | status | test ELBO "
        f"| L_{k} (s.e., n) | KL per layer, z1/.../zL (nats) | active units A_u "
        "| units with KL > 0.01 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lk = "-" if r["lk"] is None else \
            f"{r['lk']:.2f} ({format_number(r['lk_stderr'])}, {r['n']})"
        epochs = f"{'-' if r['epochs_done'] is None else r['epochs_done']}/{r['target_epochs']}"
        L = r["layers"]
        lines.append(" | ".join([
            f"| {r['run_id']}", "VAE = LVAE" if L == 1 else r["model"].upper(),
            f"{L} ({r['latent']})",
            "on" if r["batch_norm"] else "off", "on" if r["warmup"] else "off",
            kl_label(r["kl"], r["model"], L), epochs,
            r["status"], format_number(r["test_elbo"]), lk,
            _per_layer(r, "kl_z", L, lambda v: f"{v:.2f}"),
            _per_layer(r, "au_z", L, str), _per_layer(r, "au_kl_z", L, str)]) + " |")
    lines += ["", "Columns: `epochs` is epochs done / target; test ELBO, L_K, KL and active "
              "units come from each run's evaluation at the epoch it had then (its JSON file "
              "in the run folder). A_u counts units whose posterior mean varies over the test "
              "inputs with variance above 0.01 (Burda et al.); the last column counts units "
              "whose KL averages above 0.01 nats. A_u does not compare the two models: an "
              "LVAE unit with no KL still counts as active under it, because its posterior "
              "mean follows mu_p(z_{i+1}), which varies with the input; compare the models "
              "by the last column. `KL in training`: the estimator of the training "
              "objective's KL terms: analytic where it is exact, which for the VAE is its "
              "top layer only (its z1..z(L-1) terms are single-sample, mc, estimates), or mc "
              "(single-sample) everywhere. \"-\": no value (not evaluated, or the run has fewer layers). "
              "`results.csv` holds the same values in full precision."]
    if paired:
        lines += ["", f"LVAE minus VAE in L_{k}, example by example on the same test "
                  "examples (positive: the LVAE is better); the standard error is that of the "
                  "paired difference:", "",
                  f"| dataset | layers | {'seed | ' * several}BN | WU | KL in training "
                  f"| epochs (VAE, LVAE) | n | VAE L_{k} | LVAE L_{k} | LVAE - VAE (s.e.) |",
                  "|---|---|---|---|---|---|---|---|---|---|" + "---|" * several]
        for q in paired:
            seed = f" | {q['seed']}" if several else ""
            lines.append(f"| {q['dataset']} | {q['layers']}{seed} | "
                         f"{'on' if q['batch_norm'] else 'off'}"
                         f" | {'on' if q['warmup'] else 'off'} | {q['kl']} | {q['epochs'][0]}, "
                         f"{q['epochs'][1]} | {q['n']} | {q['vae']:.2f} | {q['lvae']:.2f} | "
                         f"{q['diff']:+.2f} ({q['diff_stderr']:.2f}) |")
    if several:
        lines += format_seeds_markdown(list(summary), k)
    lines += format_claims_markdown(list(claims), k)
    if figures:
        lines += [""] + [f"![{Path(p).stem}]({Path(p).name})" for p in figures]
    if notes:
        lines += [""] + [f"Note: {n}" for n in notes]
    return "\n".join(lines) + "\n"


def _bn_words(protocol: str | None) -> str:
    """How the evaluations collected batch-norm statistics, as the runs' preset says."""
    if PRESETS.get(protocol, {}).get("bn_stats") == "single-pass":
        return "collected over the whole training set in one pass"
    return "re-collected over the training set"


def _warmup(settings: Settings) -> str:
    """The warm-up's length in words: "200 epochs" or "10000 steps"."""
    if settings.warmup_steps:
        return f"{settings.warmup_steps} steps"
    return f"{settings.warmup_epochs} epochs"


def write_results(records: list, out: Path, *, settings: Settings, name: str, command: str,
                  seconds: float = 0.0) -> tuple[list, list]:
    """Write results.csv, the figures and results.md to ``out``.

    Args:
        records: the runs (``RunRecord``), in table order.
        out: the results folder.
        settings: the invocation's options (budget and evaluation, for results.md).
        name: the experiment's name.
        command: the command that produced the results.
        seconds: how long this invocation took.

    Returns:
        (paths written, notes on the figures skipped).

    Raises:
        ExperimentError: a VAE and LVAE to pair were evaluated on other examples
            (``paired_differences``).

    With several seeds the figures show the first seed's runs, and ``seeds.csv``
    holds the across-seed summary (``seeds.across_seeds``) in full precision.
    """
    cols, rows = table_rows(records, settings)
    paired = paired_differences(records)
    seeds = settings.run_seeds
    summary = across_seeds(records, paired) if len(seeds) > 1 else []
    claims = judge_claims(records, paired) if len(seeds) > 1 else []
    figures, notes = draw_figures([r for r in records if r.seed == seeds[0]], out)
    if len(seeds) > 1 and figures:
        notes = notes + [f"the figures show the runs of seed {seeds[0]}"]
    presets = {r.spec.preset for r in records}
    md = format_markdown(rows, settings, name=name, command=command, seconds=seconds,
                         figures=figures, notes=notes, paired=paired,
                         protocol=presets.pop() if len(presets) == 1 else None, summary=summary,
                         claims=claims)
    files = [("results.csv", format_csv(cols, rows)), ("results.md", md)]
    if len(seeds) > 1:
        files.append(("seeds.csv", format_seeds_csv(summary)))
    written = []
    for file_name, text in files:
        atomic_write_text(out / file_name, text)
        written.append(out / file_name)
    return written + figures, notes


def describe_runs(names: list, settings: Settings, kl: str | None = None,
                  preset: str | None = None) -> str:
    """The experiments and their runs, each with epochs done / target and evaluation state.

    ``kl``: the KL estimator the runs are trained with (``--kl``; None: each
    run's own); ``preset``: their preset (``--preset``; None: each run's own); each run is listed once per seed of ``settings``.
    """
    lines = []
    for name in names:
        exp = EXPERIMENTS[name]
        lines.append(f"{name}: {exp.description} ({len(exp.specs)} runs)")
        for seed, spec in ((seed, spec) for seed in settings.run_seeds for spec in exp.specs):
            spec = replace(spec, kl=kl or spec.kl, preset=preset or spec.preset)
            run_id = spec.run_id(seed)
            run_dir = Path(settings.runs_dir) / run_id
            try:
                meta = saved_meta(run_dir)
            except ExperimentError as exc:
                lines.append(f"  {run_id:<26} unreadable checkpoint: {exc}")
                continue
            if meta is None:
                lines.append(f"  {run_id:<26} not started")
                continue
            epoch, batch = int(meta["epoch"]), int(meta.get("batch", 0))
            state = f"{epoch}/{settings.epochs} epochs"
            if batch:
                state += f" (+{batch} batches)"
            try:
                stored = read_eval(run_dir, settings.iw_samples, *settings.eval_name())
            except BadRecord as exc:
                stored = exc
            if isinstance(stored, BadRecord):
                state += f", not evaluated: {stored} (it is made again)"
            elif stored is None:
                state += ", not evaluated"
            elif stored.get("epoch") == epoch:
                state += f", evaluated (L_{settings.iw_samples} "\
                         f"{format_number(stored.get('lk'))})"
            else:
                state += f", evaluated at epoch {stored.get('epoch')} (out of date)"
            bad = config_mismatches(settings.config(spec, seed), meta)
            if bad:
                state += "; other settings: " + ", ".join(
                    f"{n} {h!r} (here {w!r})" for n, h, w in bad)
            lines.append(f"  {run_id:<26} {state}")
    return "\n".join(lines)
