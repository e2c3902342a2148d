"""Evaluate a trained run: ``python -m lvae_np.evaluate RUN_DIR [options]``.

Prints (or writes as JSON) the ELBO, the importance-weighted estimate L_k of
log p(x) (the paper's test log-likelihood is L_5000), the KL of each layer
and the active units of each layer (Burda et al.'s A_u: units whose posterior
mean varies over the inputs with variance above 0.01).

Batch norm: as in the paper's code, the statistics are first re-collected
over the whole training set (the average of the batch statistics, with the
network in training mode), which is more accurate than the running averages
kept during training. ``--bn running`` uses those instead.

Examples::

    python -m lvae_np.evaluate runs/quick                      # L_5000 on the test set
    python -m lvae_np.evaluate runs/quick --iw-samples 100 --json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy

from . import bounds, checkpoint, data as D
from .backend import BACKENDS, get_backend, namespace, to_numpy
from .checkpoint import CheckpointError
from .fileio import atomic_write
from .metrics import ACTIVE_THRESHOLD, KL_ACTIVE_THRESHOLD, active_units, kl_active_units
from .models import Model
from .cli import HelpFormatter, plain_warnings
from .train import CHECKPOINT, _config_from_meta

SPLITS = ("test", "train", "valid")
EVAL_BINARIZATION_SEED = 1234  # binarises train/valid splits once, for evaluation


def _bar(progress: bool, total: int, desc: str):
    if not progress:
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="x", file=sys.stderr, dynamic_ncols=True,
                leave=False)


def recollect_bn_state(model, params, state, x, batch_size: int, progress=False):
    """Batch-norm statistics averaged over all batches of x, network in training mode.

    Batch t enters with weight 1/t (momentum 1/t), so after T batches every
    layer's statistics are the plain mean of its T batch statistics.
    """
    if not state:
        return state
    bar = _bar(progress, x.shape[0], "batch-norm statistics")
    for t, start in enumerate(range(0, x.shape[0], batch_size), start=1):
        xb = x[start:min(start + batch_size, x.shape[0]), ...]
        _, _, state, _ = model.forward(params, state, xb, model.noise(xb.shape[0]),
                                       training=True, bn_momentum=1.0 / t)
        if bar is not None:
            bar.update(xb.shape[0])
    if bar is not None:
        bar.close()
    return state


def summarize(model, params, state, x, *, kl: str, iw_samples: int, au_samples: int,
              batch_size: int, progress=False, per_example: bool = False) -> dict:
    """ELBO, L_k, KL per layer and active units of ``x`` (batch norm in evaluation mode).

    ``per_example``: also return each example's L_k (``lk_per_example``), so
    that two models evaluated on the same examples can be compared pairwise.
    """
    n_layers, n = model.config.n_layers, x.shape[0]
    elbo, kls, means = 0.0, numpy.zeros(n_layers), [[] for _ in range(n_layers)]
    unit_kl = [0.0] * n_layers
    for start in range(0, n, batch_size):
        xb = x[start:min(start + batch_size, x.shape[0]), ...]
        m = xb.shape[0]
        f, terms, _, _ = model.forward(params, state, xb, model.noise(au_samples * m),
                                       kl=kl, training=False, k=au_samples)
        xp = namespace(f)
        elbo += float(xp.sum(f)) / au_samples
        for i, (k, mu) in enumerate(zip(terms["kl"], terms["mu_q"])):
            kls[i] += float(xp.sum(k)) / au_samples
            unit_kl[i] = unit_kl[i] + xp.sum(k, axis=0) / au_samples
            means[i].append(xp.mean(xp.reshape(mu, (au_samples, m, mu.shape[1])), axis=0))
    result = {"n": n, "elbo": elbo / n, "kl": [float(v) / n for v in kls],
              "active_units": [active_units(namespace(p[0]).concat(p, axis=0)) for p in means],
              "active_units_kl": [kl_active_units(u / n) for u in unit_kl],
              "kl_active_threshold": KL_ACTIVE_THRESHOLD,
              "units": list(model.config.latent), "kl_estimator": model.kl_estimators(kl),
              "active_threshold": ACTIVE_THRESHOLD, "au_samples": au_samples}
    if iw_samples > 0:
        bar = _bar(progress, n, f"L_{iw_samples}")
        lk = bounds.log_likelihood(model, params, state, x, iw_samples,
                                   progress=None if bar is None else bar.update)
        if bar is not None:
            bar.close()
        lk = to_numpy(lk)
        result.update(lk=float(lk.mean()), lk_stderr=float(lk.std(ddof=1) / numpy.sqrt(n))
                      if n > 1 else 0.0, iw_samples=iw_samples)
        if per_example:
            result["lk_per_example"] = [float(v) for v in lk]
    return result


def evaluate_run(run_dir, *, iw_samples: int = 5000, split: str = "test", bn: str = "recollect",
                 backend: str = "auto", data_dir=None, batch_size: int = 500,
                 au_samples: int = 10, limit: int | None = None, seed: int = 0,
                 progress: bool = True, per_example: bool = False) -> dict:
    """Evaluate the checkpoint in ``run_dir``; writes the result there too.

    The file is ``eval-<split>-k<k>.json``, or ``eval-<split>-k<k>-first<limit>.json``
    for an evaluation of the first ``limit`` examples (see ``eval_file_name``).
    """
    run_dir = Path(run_dir)
    ckpt = checkpoint.load(run_dir / CHECKPOINT)
    cfg = _config_from_meta(ckpt["meta"])
    be = get_backend(backend, dtype=cfg.dtype, seed=seed)
    ds = D.load_dataset(cfg.dataset, data_dir, validation=cfg.validation, seed=cfg.seed,
                        progress=progress)
    model = Model(cfg.model_config(ds.train.shape[1], ds.likelihood), be)
    params = {k: be.asarray(v) for k, v in ckpt["params"].items()}
    state = {k: be.asarray(v) for k, v in ckpt["state"].items()}
    rng = numpy.random.default_rng(EVAL_BINARIZATION_SEED)
    train = D.binarize(ds.train, rng) if ds.dynamic_binarization else ds.train
    if split == "test":
        x = ds.test
    elif split == "valid":
        if ds.valid is None:
            raise D.DataError(f"the run has no validation split (trained with --validation 0)")
        x = ds.valid
    else:
        x = train
    x = be.asarray(x[:limit] if limit else x)
    t0 = time.perf_counter()
    if bn == "recollect":
        state = recollect_bn_state(model, params, state, be.asarray(train), batch_size, progress)
    result = summarize(model, params, state, x, kl=cfg.kl, iw_samples=iw_samples,
                       au_samples=au_samples, batch_size=batch_size, progress=progress,
                       per_example=per_example)
    result.update(run=str(run_dir), split=split, epoch=ckpt["meta"]["epoch"], bn=bn, limit=limit,
                  model=cfg.model, dataset=cfg.dataset, data=ds.variant, backend=be.name,
                  seconds=time.perf_counter() - t0)
    atomic_write(run_dir / eval_file_name(split, iw_samples, limit),
                 lambda f: f.write((json.dumps(result, indent=2) + "\n").encode()))
    return result


def eval_file_name(split: str, iw_samples: int, limit: int | None = None) -> str:
    """The name of the JSON file ``evaluate_run`` writes into the run folder."""
    return f"eval-{split}-k{iw_samples}" + (f"-first{limit}" if limit else "") + ".json"


def format_result(r: dict) -> str:
    lines = [f"{r['model'].upper()} on {r['dataset']} ({r['split']} split, {r['n']} examples), "
             f"after {r['epoch']} epochs; batch norm: {r['bn']}",
             f"  ELBO                 {r['elbo']:10.3f}"]
    if "lk" in r:
        lines.append(f"  L_{r['iw_samples']:<18} {r['lk']:10.3f}  (+- {r['lk_stderr']:.3f} s.e.)")
    lines.append("  layer   units  KL      active units (A_u)  units with KL > 0.01")
    for i, (d, kl, au, auk) in enumerate(zip(r["units"], r["kl"], r["active_units"],
                                             r["active_units_kl"]), start=1):
        lines.append(f"  z{i:<6} {d:5d}  {kl:6.3f}  {au:<19d} {auk}")
    lines.append(f"  ({r['seconds']:.1f} s on {r['backend']})")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lvae_np.evaluate",
                                description="Evaluate a run's checkpoint: ELBO, L_k, KL and "
                                            "active units per layer.",
                                formatter_class=HelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by lvae_np.train")
    p.add_argument("--iw-samples", type=int, default=5000,
                   help="importance samples for L_k (0: ELBO only)")
    p.add_argument("--split", choices=SPLITS, default="test", help="which examples")
    p.add_argument("--bn", choices=("recollect", "running"), default="recollect",
                   help="batch-norm statistics: re-collected over the training set, or the "
                        "running averages from training")
    p.add_argument("--au-samples", type=int, default=10,
                   help="samples averaged for each posterior mean (active units)")
    p.add_argument("--batch-size", type=int, default=500, help="inputs per pass")
    p.add_argument("--limit", type=int, help="evaluate only the first N examples")
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="cupy runs on the GPU; without CuPy or a GPU it warns and uses NumPy")
    p.add_argument("--data-dir", help=f"folder with the data files (also ${D.ENV_VAR})")
    p.add_argument("--seed", type=int, default=0, help="seed of the importance samples")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--per-example", action="store_true",
                   help="also give each example's L_k (lk_per_example in the JSON), for "
                        "comparing two models on the same examples")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    for name in ("iw_samples", "au_samples", "batch_size", "limit"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "iw_samples" else 1):
            p.error(f"--{name.replace('_', '-')} must be positive, got {value}")
    plain_warnings()
    try:
        result = evaluate_run(args.run_dir, iw_samples=args.iw_samples, split=args.split,
                              bn=args.bn, backend=args.backend, data_dir=args.data_dir,
                              batch_size=args.batch_size, au_samples=args.au_samples,
                              limit=args.limit, seed=args.seed,
                              progress=sys.stderr.isatty() and not args.no_progress,
                              per_example=args.per_example)
    except (CheckpointError, D.DataError) as exc:
        print(f"lvae_np.evaluate: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.json else format_result(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
