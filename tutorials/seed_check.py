"""Train notebook 03's five settings from several seeds, to test what its prose says of them.

Notebook 03 trains each setting once (seed 0) and says only what held in
every seed this script ran. It runs the notebook's own code cells (the setup,
``train_model`` and ``SETTINGS``; no plots), then, for each seed, trains the
five models and prints their test ELBO and units with KL > 0.01 per layer,
and at the end how many seeds agree with each statement of the notebook's
section 7. Takes about half a minute per seed on a laptop CPU:

    python tutorials/seed_check.py                 # seeds 0 to 4
    python tutorials/seed_check.py --seeds 0,1,2,3,4,5,6,7
"""
import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import nbformat  # noqa: E402

HERE = Path(__file__).resolve().parent
NOTEBOOK = HERE / "03_training_warmup_batchnorm.ipynb"
# The code cells that define what is trained, found by what they define.
DEFINES = ("LATENT = ", "def train_model(", "SETTINGS = {")


def notebook_namespace() -> dict:
    """Run the notebook's setup, ``train_model`` and ``SETTINGS`` cells; their namespace."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    ns = {"__name__": "notebook03"}
    for marker in DEFINES:
        cell = next(c for c in nb.cells if c.cell_type == "code" and marker in c.source)
        # only the definitions: stop before the cell starts training or checking
        lines = []
        for line in cell.source.splitlines():
            if line.startswith(("start = ", "runs = ", "for name, (kind")):
                break
            lines.append(line)
        exec(compile("\n".join(lines), f"{NOTEBOOK.name}:{marker}", "exec"), ns)
    return ns


STATEMENTS = {
    # what section 7 says, as a test of one seed's results: r[setting] = test metrics
    "without BN, z3..z5 end with no unit above 0.01 (both settings)":
        lambda r, L: all(r[s][f"au_kl_z{i}"] == 0 for s in ("LVAE", "LVAE, WU")
                         for i in range(3, L + 1)),
    "BN brings units alive in z3..z5 (LVAE, BN has more there than LVAE)":
        lambda r, L: sum(r["LVAE, BN"][f"au_kl_z{i}"] for i in range(3, L + 1))
        > sum(r["LVAE"][f"au_kl_z{i}"] for i in range(3, L + 1)),
    "warm-up keeps more z1 units active (BN + WU against BN)":
        lambda r, L: r["LVAE, BN + WU"]["au_kl_z1"] > r["LVAE, BN"]["au_kl_z1"],
    "warm-up raises the ELBO (BN + WU against BN)":
        lambda r, L: r["LVAE, BN + WU"]["test_elbo"] > r["LVAE, BN"]["test_elbo"],
    "BN + WU is the best LVAE":
        lambda r, L: all(r["LVAE, BN + WU"]["test_elbo"] > r[s]["test_elbo"]
                         for s in ("LVAE", "LVAE, BN", "LVAE, WU")),
    "BN + WU beats neither by 10 nats or more":
        lambda r, L: r["LVAE, BN + WU"]["test_elbo"] > r["LVAE"]["test_elbo"] + 10,
    "the LVAE (BN + WU) beats the VAE (BN + WU)":
        lambda r, L: r["LVAE, BN + WU"]["test_elbo"] > r["VAE, BN + WU"]["test_elbo"],
    "the VAE (BN + WU) has at least as many KL-active units as the LVAE (BN + WU)":
        lambda r, L: sum(r["VAE, BN + WU"][f"au_kl_z{i}"] for i in range(1, L + 1))
        >= sum(r["LVAE, BN + WU"][f"au_kl_z{i}"] for i in range(1, L + 1)),
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    ns = notebook_namespace()
    metrics, settings, test, L = ns["metrics"], ns["SETTINGS"], ns["test"], len(ns["LATENT"])
    agree = dict.fromkeys(STATEMENTS, 0)
    for seed in seeds:
        results = {}
        for name, (kind, batch_norm, warmup) in settings.items():
            model, params, state, _ = ns["train_model"](kind, batch_norm, warmup, seed=seed)
            results[name] = metrics.test_metrics(model, params, state,
                                                 model.backend.asarray(test), kl="analytic")
            units = "/".join(str(results[name][f"au_kl_z{i}"]) for i in range(1, L + 1))
            print(f"seed {seed}  {name:15} test ELBO {results[name]['test_elbo']:8.2f}  "
                  f"units with KL > 0.01 {units}", flush=True)
        for statement, holds in STATEMENTS.items():
            agree[statement] += bool(holds(results, L))
    print(f"\nseeds {', '.join(map(str, seeds))}: in how many each statement holds")
    for statement, n in agree.items():
        print(f"  {n}/{len(seeds)}  {statement}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
