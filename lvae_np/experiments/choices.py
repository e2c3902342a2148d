"""Which of the released code's choices decides the paper's claims: the ablation table.

The runs of experiment ``mnist-choices`` (the paper-form headline with one of
the released code's choices switched on, or all of them: the original-code
preset) are compared with the paper-form runs at the same epoch, seed by
seed, on what the paper's Figures 4 and 5 claim:

- units: the LVAE keeps more units with KL > 0.01 in z2 and up than the VAE;
- KL share: the LVAE puts a larger share of its KL above z1.

Each number comes from the run's ``metrics.csv`` row of that epoch (the test
set, batch norm's running averages), the same measurement for every run. The
paper-form rows may come from longer runs (the headline's 200 epochs): a row
depends only on the epochs before it, since warm-up is given in epochs
(checked: the headline's first rows repeat bit for bit). A verdict follows
``claims``: holds when every seed agrees, does not hold when every seed
contradicts, else cannot tell.

    python -m lvae_np.experiments.choices --epoch 30 --seeds 0,1,2 \\
        --paper results/experiments/mnist-headline/runs --out results/experiments/mnist-choices
"""
from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

from ..training.fileio import atomic_write_text
from .claims import share_above_z1, sign, verdict
from .records import COPIED, copy_text
from .specs import DEFAULT_RUNS_DIR, LVAE_ONLY_CHOICES

# (label, run-id suffix after "mnist-<model>-L5-bn-wu"; None: the paper form)
CONFIGS = (("paper form", None), ("head batch norm", "-headbn"), ("lr 2e-4", "-lr2e-4"),
           ("unshared top-down path (LVAE only)", "-unshared"),
           ("only mu up (LVAE only)", "-muup"), ("Monte Carlo KL", "-mc"),
           ("clipping (norm 4, then 0.9)", "-clip"),
           ("all: the original-code preset", "-mc-orig"))
LAYERS = 5


class ChoicesError(Exception):
    """A run folder or metrics file that cannot be read (one-line message)."""


def run_folder(suffix: str | None, model: str, seed: int, runs_dir: Path, paper_dir: Path) -> Path:
    """Where the run of ``suffix`` (None: the paper form), ``model`` and ``seed`` lies.

    An LVAE-only choice leaves the VAE as it is: its VAE is the paper form's.
    """
    base, suffix = (paper_dir, "") if is_paper_form(suffix, model) else (runs_dir, suffix)
    return base / (f"mnist-{model}-L5-bn-wu{suffix}" + (f"-seed{seed}" if seed else ""))


def is_paper_form(suffix: str | None, model: str) -> bool:
    """Whether the run of ``suffix`` and ``model`` is the paper form's (no run of its own)."""
    lvae_only = suffix is not None and suffix.lstrip("-") in LVAE_ONLY_CHOICES
    return suffix is None or (model == "vae" and lvae_only)


def numbers_at(folder: Path, epoch: int) -> dict | None:
    """Units per layer with KL > 0.01, test KL per layer and test ELBO at ``epoch`` (None: no row).

    Raises:
        ChoicesError: the metrics file exists but cannot be read.
    """
    path = folder / "metrics.csv"
    if not path.is_file():
        return None
    try:
        rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
        for row in rows:
            if int(row["epoch"]) == epoch and row.get("test_elbo"):
                return {"units": [int(row[f"au_kl_z{i}"]) for i in range(1, LAYERS + 1)],
                        "kl": [float(row[f"test_kl_z{i}"]) for i in range(1, LAYERS + 1)],
                        "elbo": float(row["test_elbo"])}
    except (OSError, UnicodeDecodeError, KeyError, ValueError, TypeError) as exc:
        raise ChoicesError(f"{path} cannot be read ({type(exc).__name__}: {exc})") from None
    return None


def table(runs_dir: Path, paper_dir: Path, epoch: int, seeds) -> list:
    """One dict per configuration: its per-seed numbers of both models and the two verdicts."""
    out = []
    for label, suffix in CONFIGS:
        per_seed = {}
        for seed in seeds:
            pair = {m: numbers_at(run_folder(suffix, m, seed, runs_dir, paper_dir), epoch)
                    for m in ("vae", "lvae")}
            if all(pair.values()):
                per_seed[seed] = pair
        units = [sign(sum(p["lvae"]["units"][1:]) - sum(p["vae"]["units"][1:]))
                 for p in per_seed.values()]
        shares = [sign(share_above_z1(p["lvae"]["kl"]) - share_above_z1(p["vae"]["kl"]))
                  for p in per_seed.values()]
        missing = [s for s in seeds if s not in per_seed]
        short = f"not run in every seed ({len(per_seed)} of {len(seeds)})"
        out.append({"config": label, "seeds": per_seed, "missing": missing,
                    "units_verdict": short if missing else verdict(units),
                    "share_verdict": short if missing else verdict(shares)})
    return out


def markdown(rows: list, epoch: int, seeds) -> str:
    """The ablation table: per configuration and seed, both models' numbers and the verdicts."""
    lines = [f"# The released code's choices, one at a time: epoch {epoch}, seeds "
             + ", ".join(map(str, seeds)),
             "",
             "Units: units with test KL > 0.01 nats in z1..z5, and their count above z1. "
             "Share: the share of the test KL above z1. ELBO: test ELBO. All from each run's "
             f"metrics.csv row of epoch {epoch} (batch norm's running averages). Verdicts by "
             "the claims rule: holds when every seed agrees, does not hold when every seed "
             "contradicts, else cannot tell.",
             "",
             "| configuration | seed | LVAE units | VAE units | LVAE share | VAE share | "
             "LVAE ELBO | VAE ELBO |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        for seed, pair in row["seeds"].items():
            lv, va = pair["lvae"], pair["vae"]
            lines.append(
                f"| {row['config']} | {seed} | {'/'.join(map(str, lv['units']))} "
                f"({sum(lv['units'][1:])}) | {'/'.join(map(str, va['units']))} "
                f"({sum(va['units'][1:])}) | {share_above_z1(lv['kl']):.0%} | "
                f"{share_above_z1(va['kl']):.0%} | {lv['elbo']:.2f} | {va['elbo']:.2f} |")
        for seed in row["missing"]:
            lines.append(f"| {row['config']} | {seed} | not run | | | | | |")
    lines += ["", "| configuration | LVAE keeps more units above z1 | LVAE puts more KL above z1 |",
              "|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['config']} | {row['units_verdict']} | {row['share_verdict']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lvae_np.experiments.choices",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--epoch", type=int, default=30, help="the epoch compared (default: 30)")
    p.add_argument("--seeds", default="0,1,2", help="seeds (default: 0,1,2)")
    p.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS_DIR,
                   help=f"the choices' run folders (default: {DEFAULT_RUNS_DIR})")
    p.add_argument("--paper", type=Path, default=Path("results/experiments/mnist-headline/runs"),
                   help="the paper-form run folders (default: the published headline's)")
    p.add_argument("--out", type=Path, default=None,
                   help="write OUT/choices.md and copy the records of the choices' runs (config, "
                        "metrics, KL per unit, status; no checkpoint) into OUT/runs/; refused if "
                        "OUT exists (default: print only)")
    args = p.parse_args(argv)
    try:
        seeds = tuple(int(s) for s in args.seeds.split(","))
        text = markdown(table(args.runs_dir, args.paper, args.epoch, seeds), args.epoch, seeds)
    except (ValueError, ChoicesError) as exc:
        print(f"{p.prog}: error: {exc}", file=sys.stderr)
        return 2
    if args.out is None:
        print(text, end="")
        return 0
    if args.out.exists():
        print(f"{p.prog}: error: {args.out} exists: choose another --out", file=sys.stderr)
        return 2
    copied = copy_records(args.runs_dir, args.out / "runs", seeds, args.epoch)
    atomic_write_text(args.out / "choices.md", text)
    print(f"wrote {args.out / 'choices.md'} and the records of {copied} runs")
    return 0


def copy_records(runs_dir: Path, out: Path, seeds, epoch: int) -> int:
    """Copy the records (``records.COPIED``, never a checkpoint) of each choice run that
    reached ``epoch`` into ``out``/RUN_ID, their JSON without this machine's folders."""
    runs_dirs = tuple(dict.fromkeys(str(p).rstrip("/") for p in (runs_dir.resolve(), runs_dir)))
    count = 0
    for _, suffix in CONFIGS[1:]:
        for model in ("vae", "lvae"):
            if is_paper_form(suffix, model):
                continue
            for seed in seeds:
                folder = run_folder(suffix, model, seed, runs_dir, runs_dir)
                if numbers_at(folder, epoch) is None:
                    continue
                target = out / folder.name
                target.mkdir(parents=True)
                for name in COPIED:
                    if (folder / name).is_file():
                        copy_text(folder / name, target / name, runs_dirs)
                count += 1
    return count


if __name__ == "__main__":
    sys.exit(main())
