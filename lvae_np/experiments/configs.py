"""The headline's claims under three configurations, side by side, from their evaluations.

The headline comparison (the 5-layer VAE and LVAE on MNIST, BN and WU, 200
epochs, warm-up over 100) is run in three configurations: the paper's form
(experiment ``mnist-headline``), the paper's form with batch norm on every
Gaussian head (``mnist-headline-headbn``), and the released code's settings
(``mnist-headline-orig``, the original-code preset). Each run's evaluation
file (``lvae_np.evaluate``: L_5000 and the test KL on the same seeded test
subset for every run) gives, per configuration and seed:

- units with KL > 0.01 nats in z2 and up, per model (Figure 4's claim: the
  LVAE keeps more);
- the share of the test KL above z1, per model (Figure 5's: the LVAE's is larger);
- L_5000 per model and the LVAE's paired difference on the same examples,
  with its standard error (Table 1's: the LVAE's is higher).

Verdicts follow ``claims``: a claim holds when every seed agrees (for L_K,
beyond two standard errors), does not hold when every seed contradicts it,
else cannot tell.

    python -m lvae_np.experiments.configs --seeds 0,1,2 \\
        --out results/experiments/mnist-headline-configs.md
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from ..training.fileio import atomic_write_text
from .claims import higher_units, share_above_z1, sign, verdict

RESULTS = Path("results") / "experiments"
# (label, experiment whose published runs hold it, run-id suffix after "mnist-<model>-L5-bn-wu")
CONFIGS = (("paper form", "mnist-headline", ""),
           ("head batch norm", "mnist-headline-headbn", "-headbn"),
           ("original-code preset", "mnist-headline-orig", "-mc-orig"))
EVAL_FILE = "eval-test-k5000-subset1000-seed0.json"


class ConfigsError(Exception):
    """An evaluation file that cannot be read, or two that do not pair (one-line message)."""


def read_eval(path: Path) -> dict | None:
    """A run's evaluation (None: not there)."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigsError(f"{path} cannot be read ({type(exc).__name__}: {exc})") from None


def paired(lvae: dict, vae: dict) -> tuple:
    """LVAE minus VAE in L_K, example by example: (mean, standard error)."""
    a, b = lvae.get("lk_per_example"), vae.get("lk_per_example")
    if not a or not b or len(a) != len(b):
        raise ConfigsError("the LVAE's and the VAE's evaluations do not hold L_K for the same "
                           "examples (evaluate both with --per-example on the same subset)")
    d = [x - y for x, y in zip(a, b)]
    mean = sum(d) / len(d)
    var = sum((x - mean) ** 2 for x in d) / max(1, len(d) - 1)
    return mean, math.sqrt(var / len(d))


def table(results_dir: Path, seeds, eval_file: str = EVAL_FILE) -> list:
    """One dict per configuration: per-seed numbers of both models and the three verdicts."""
    out = []
    for label, experiment, suffix in CONFIGS:
        per_seed = {}
        for seed in seeds:
            evs = {m: read_eval(results_dir / experiment / "runs" / (
                f"mnist-{m}-L5-bn-wu{suffix}" + (f"-seed{seed}" if seed else "")) / eval_file)
                for m in ("vae", "lvae")}
            if all(evs.values()):
                per_seed[seed] = dict(evs, diff=paired(evs["lvae"], evs["vae"]))
        missing = [s for s in seeds if s not in per_seed]
        short = f"not evaluated in every seed ({len(per_seed)} of {len(seeds)})"

        def judged(signs):
            return short if missing else verdict(signs)

        out.append({"config": label, "experiment": experiment, "seeds": per_seed,
                    "missing": missing,
                    "units": judged([sign(higher_units(p["lvae"]) - higher_units(p["vae"]))
                                     for p in per_seed.values()]),
                    "share": judged([sign(share_above_z1(p["lvae"]["kl"])
                                          - share_above_z1(p["vae"]["kl"]))
                                     for p in per_seed.values()]),
                    "lk": judged([sign(p["diff"][0], 2 * p["diff"][1])
                                  for p in per_seed.values()])})
    return out


def markdown(rows: list, seeds) -> str:
    lines = ["# The headline's claims under three configurations: 200 epochs, seeds "
             + ", ".join(map(str, seeds)),
             "",
             "Each run's evaluation (`lvae_np.evaluate`, L_5000 on the same 1000 test images "
             "drawn with seed 0, batch-norm statistics re-collected over the training set: as "
             "the mean of its batches' statistics, or in one pass for the preset, as its "
             "released code does). "
             "Units: units with KL > 0.01 nats in z1..z5 (their count above z1). Share: the "
             "share of the test KL above z1. LVAE - VAE: the paired difference in L_5000 "
             "(its standard error). Verdicts: holds when every seed agrees (L_5000: beyond two "
             "standard errors), does not hold when every seed contradicts, else cannot tell.",
             "",
             "| configuration | seed | LVAE units | VAE units | LVAE share | VAE share | "
             "LVAE L_5000 | VAE L_5000 | LVAE - VAE |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        for seed, p in row["seeds"].items():
            lv, va = p["lvae"], p["vae"]
            lines.append(
                f"| {row['config']} | {seed} | {'/'.join(map(str, lv['active_units_kl']))} "
                f"({higher_units(lv)}) | {'/'.join(map(str, va['active_units_kl']))} "
                f"({higher_units(va)}) | {share_above_z1(lv['kl']):.0%} | "
                f"{share_above_z1(va['kl']):.0%} | "
                f"{lv['lk']:.2f} | {va['lk']:.2f} | {p['diff'][0]:+.2f} ({p['diff'][1]:.2f}) |")
        for seed in row["missing"]:
            lines.append(f"| {row['config']} | {seed} | not evaluated | | | | | | |")
    lines += ["", "| configuration | LVAE keeps more units above z1 | LVAE puts more KL above "
              "z1 | LVAE's L_5000 is higher |", "|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['config']} | {row['units']} | {row['share']} | {row['lk']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lvae_np.experiments.configs",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0,1,2", help="seeds (default: 0,1,2)")
    p.add_argument("--results-dir", type=Path, default=RESULTS,
                   help=f"where the experiments' published runs are (default: {RESULTS})")
    p.add_argument("--out", type=Path, default=None,
                   help="write the table to this Markdown file; refused if it exists "
                        "(default: print only)")
    args = p.parse_args(argv)
    try:
        seeds = tuple(int(s) for s in args.seeds.split(","))
        text = markdown(table(args.results_dir, seeds), seeds)
    except (ValueError, ConfigsError) as exc:
        print(f"{p.prog}: error: {exc}", file=sys.stderr)
        return 2
    if args.out is None:
        print(text, end="")
        return 0
    if args.out.exists():
        print(f"{p.prog}: error: {args.out} exists: choose another --out", file=sys.stderr)
        return 2
    atomic_write_text(args.out, text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
