"""Evaluate a trained run: ``python -m lvae_np.evaluate RUN_DIR [options]``.

Prints (or writes as JSON) the ELBO, the importance-weighted estimate L_k of
log p(x) (the paper's test log-likelihood is L_5000), the KL of each layer
and the active units of each layer (Burda et al.'s A_u: units whose posterior
mean varies over the inputs with variance above 0.01).

Batch norm: as in the paper's code, the statistics are first collected over
the whole training set, with the network in training mode, which is more
accurate than the running averages kept during training. By default a run
is evaluated as its config says (``lvae_np.train --bn-stats``): the average
of the statistics of batches of ``--batch-size`` ("recollect", lvae_np's
default), or the whole set as one batch ("single-pass", as the released
code; its memory grows with the training set). ``--bn running`` uses the
running averages instead.

Examples::

    python -m lvae_np.evaluate runs/quick                      # L_5000 on the test set
    python -m lvae_np.evaluate runs/quick --iw-samples 100 --json
    python -m lvae_np.evaluate runs/quick --subset 1000 --subset-seed 0   # a random sample
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy

from .. import data
from ..backend import BACKENDS
from .checkpoint import CheckpointError
from .cli import Parser, UsageError, entry, fail, memory_hint, os_error_message, plain_warnings
from .fileio import atomic_write_text
from .metrics import (ACTIVE_THRESHOLD, BN_STATISTICS, KL_ACTIVE_THRESHOLD, Summary,
                      evaluation_bn_state, summarize)
from .runs import eval_file_name, evaluation_train_set, load_run, subset_indices

PROG = "lvae_np.evaluate"
SPLITS = ("test", "train", "valid")
def evaluate_run(run_dir, *, iw_samples: int = 5000, split: str = "test",
                 bn: str | None = None, backend: str = "auto", data_dir=None,
                 batch_size: int = 500, au_samples: int = 10, limit: int | None = None, seed: int = 0,
                 progress: bool = True, per_example: bool = False, write: bool = True,
                 subset: int | None = None, subset_seed: int = 0,
                 options: dict | None = None) -> dict:
    """Evaluate the checkpoint in ``run_dir``; writes the result there too (``write_result``).

    The file is ``eval-<split>-k<k>.json``, or ``eval-<split>-k<k>-first<limit>.json``
    for an evaluation of the first ``limit`` examples, or
    ``eval-<split>-k<k>-subset<M>-seed<S>.json`` for a seeded random subset (see
    ``runs.eval_file_name``).

    Args:
        run_dir: a folder written by ``lvae_np.train``.
        iw_samples: K of the importance-weighted estimate L_K (0: ELBO only).
        split: "test", "train" (binarised once) or "valid" (the run's held-out examples).
        bn: the batch-norm statistics, one of ``metrics.BN_STATISTICS``
            (``metrics.evaluation_bn_state``); None: the run's ``bn_stats``.
        backend, data_dir, seed: as in ``runs.load_run``.
        batch_size: examples per forward pass.
        au_samples: samples of z averaged for each posterior mean (active units).
        limit: evaluate only the first ``limit`` examples (None: all). For a split
            ordered by class (the OMNIGLOT rebuild) that is not a sample: use ``subset``.
        progress: progress bars on stderr.
        per_example: also give each example's L_K (``lk_per_example``), so that two
            models evaluated on the same examples can be compared pairwise.
        write: write the result file (else the caller does, with ``write_result``).
        subset: evaluate ``subset`` examples drawn by a permutation of the split seeded
            with ``subset_seed`` (``runs.subset_indices``; None: no subset). The same
            seed gives every run the same examples; the result records ``subset``,
            ``subset_seed`` and ``split_size``. Not together with ``limit``.
        subset_seed: the seed of that permutation.
        options: the caller's names of this command's options, for what to do when
            memory runs out (``memory_hints``; e.g. lvae_np.train's final estimate
            passes ``{"--iw-samples": "--final-iw-samples"}``).

    Returns:
        The result: the ``Summary``'s values (``result_dict``) and where they come from.

    Raises:
        CheckpointError, data.DataError: the run or its data cannot be read.
        ValueError: ``limit`` and ``subset`` both given, or ``subset`` larger than the split.
        OSError: the result file cannot be written (the result is lost then:
            the command line prints it before it writes it).
    """
    if limit and subset:
        raise ValueError("give --limit (the first N examples) or --subset (a seeded random "
                         "sample), not both")
    run = load_run(run_dir, data_dir, backend=backend, seed=seed, progress=progress)
    be = run.model.backend
    train = evaluation_train_set(run.dataset)
    train_x = be.asarray(train)   # on the device once: the BN statistics, and the "train" split
    if split == "test":
        x = run.dataset.test
    elif split == "valid":
        if run.dataset.valid is None:
            raise data.DataError("the run has no validation split (trained with --validation 0)")
        x = run.dataset.valid
    else:
        x = train
    split_size = len(x)
    rows = subset_indices(split_size, subset, subset_seed) if subset else None
    if limit:
        rows = (rows if rows is not None else numpy.arange(split_size))[:limit]
    if split != "train":
        x = be.asarray(x if rows is None else x[rows])
    elif rows is None:
        x = train_x
    else:
        x = be.xp.take(train_x, be.asarray(rows, dtype=be.xp.int64), axis=0)
    t0 = time.perf_counter()
    state = run.state
    bn = run.config.bn_stats if bn is None else bn
    hints = memory_hints(bn, options)
    with memory_hint(hints["bn"]):
        state = evaluation_bn_state(run.model, run.params, state, train_x, bn, batch_size,
                                    progress)
    summary = summarize(run.model, run.params, state, x, kl=run.config.kl,
                        iw_samples=iw_samples, au_samples=au_samples, batch_size=batch_size,
                        progress=progress, hints=hints)
    result = result_dict(summary, run.model, run.config.kl, per_example=per_example)
    result.update(run=str(run_dir), split=split, epoch=run.meta["epoch"], bn=bn, limit=limit,
                  subset=subset, subset_seed=subset_seed if subset else None,
                  split_size=split_size,
                  model=run.config.model, dataset=run.config.dataset, data=run.dataset.variant,
                  backend=be.name, seconds=time.perf_counter() - t0)
    if write:
        write_result(result)
    return result


def memory_hints(bn: str, options: dict | None = None) -> dict:
    """What to do when memory runs out in each step of ``evaluate_run``, by the option sizing it.

    The batch-norm statistics ("bn"): ``--batch-size`` rows at a time, or the
    whole training set with single-pass (``--bn``); the forward passes
    ("passes"): ``--au-samples`` x ``--batch-size`` rows; L_K ("lk"): its
    log-weights, ``--iw-samples`` per example.

    Args:
        bn: the batch-norm statistics used.
        options: this command's option names -> the caller's (None: it has none such).

    Returns:
        {"bn": hint, "passes": hint, "lk": hint}, a hint None where no option sizes the step.
    """
    names = {o: o for o in ("--iw-samples", "--au-samples", "--batch-size", "--bn")}
    names.update(options or {})

    def smaller(*opts):
        opts = [o for o in opts if o]
        return f"choose a smaller {' or '.join(opts)}" if opts else None

    single = (f"single-pass batch-norm statistics hold the whole training set as one batch: "
              f"choose {names['--bn']} recollect") if names["--bn"] else None
    return {"bn": {"recollect": smaller(names["--batch-size"]),
                   "single-pass": single}.get(bn),
            "passes": smaller(names["--au-samples"], names["--batch-size"]),
            "lk": smaller(names["--iw-samples"])}


def write_result(result: dict) -> Path:
    """Write an evaluation result to its file in its run folder (atomically); the file's path."""
    path = Path(result["run"]) / eval_file_name(result["split"], result.get("iw_samples", 0),
                                                result["limit"], result.get("subset"),
                                                result.get("subset_seed") or 0)
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    return path


def result_dict(s: Summary, model, kl: str, *, per_example: bool = False) -> dict:
    """A ``Summary`` as the evaluation file's entries (ELBO, KL, active units, L_K).

    Args:
        s: what ``metrics.summarize`` returned.
        model: the ``Model`` summarised (for its layer sizes and KL estimators).
        kl: the KL estimator used.
        per_example: include each example's L_K as ``lk_per_example``.
    """
    result = {"n": s.n, "elbo": s.elbo, "kl": s.kl, "active_units": s.active_units,
              "active_units_kl": s.active_units_kl, "kl_active_threshold": KL_ACTIVE_THRESHOLD,
              "units": list(model.config.latent), "kl_estimator": model.kl_estimators(kl),
              "active_threshold": ACTIVE_THRESHOLD, "au_samples": s.au_samples}
    if s.lk is not None:
        result.update(lk=float(s.lk.mean()),
                      lk_stderr=float(s.lk.std(ddof=1) / numpy.sqrt(s.n)) if s.n > 1 else 0.0,
                      iw_samples=s.iw_samples)
        if per_example:
            result["lk_per_example"] = [float(v) for v in s.lk]
    return result


def format_result(r: dict) -> str:
    """An evaluation result as the lines ``python -m lvae_np.evaluate`` prints."""
    drawn = f" drawn with seed {r['subset_seed']}" if r.get("subset") else ""
    lines = [f"{r['model'].upper()} on {r['dataset']} ({r['split']} split, {r['n']} examples"
             f"{drawn}), "
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


def build_parser() -> Parser:
    """The command line of ``python -m lvae_np.evaluate``."""
    p = Parser(prog="python -m lvae_np.evaluate",
               description="Evaluate a run's checkpoint: ELBO, L_k, KL and active units per "
                           "layer.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by lvae_np.train")
    p.add_argument("--iw-samples", type=int, default=5000,
                   help="importance samples for L_k (0: ELBO only)")
    p.add_argument("--split", choices=SPLITS, default="test", help="which examples")
    p.add_argument("--bn", choices=BN_STATISTICS,
                   help="batch-norm statistics: recollect (the mean of the training set's "
                        "batch statistics), single-pass (the whole training set as one "
                        "batch) or running (the averages kept in training); default: the "
                        "run's --bn-stats")
    p.add_argument("--au-samples", type=int, default=10,
                   help="samples averaged for each posterior mean (active units)")
    p.add_argument("--batch-size", type=int, default=500, help="inputs per pass")
    p.add_argument("--limit", type=int,
                   help="evaluate only the first N examples (not a sample: the OMNIGLOT "
                        "test set is ordered by alphabet; see --subset)")
    p.add_argument("--subset", type=int, metavar="M",
                   help="evaluate M examples drawn by a permutation of the split seeded "
                        "with --subset-seed: the same M for every run with that seed")
    p.add_argument("--subset-seed", type=int, default=0, metavar="S",
                   help="seed of --subset's permutation")
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="cupy runs on the GPU; without CuPy or a GPU it warns and uses NumPy")
    p.add_argument("--data-dir", help=f"folder with the data files (also ${data.ENV_VAR})")
    p.add_argument("--seed", type=int, default=0, help="seed of the importance samples")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--per-example", action="store_true",
                   help="also give each example's L_k (lk_per_example in the JSON), for "
                        "comparing two models on the same examples")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def parse_args(argv=None):
    """Parse and check the command line; raises UsageError with a one-line message."""
    args = build_parser().parse_args(argv)
    for name, low in (("iw_samples", 0), ("au_samples", 1), ("batch_size", 1), ("limit", 1),
                        ("subset", 1), ("subset_seed", 0)):
        value = getattr(args, name)
        if value is not None and value < low:
            raise UsageError(f"--{name.replace('_', '-')} must be >= {low}, got {value}")
    if args.limit and args.subset:
        raise UsageError("give --limit (the first N examples) or --subset (a seeded random "
                         "sample), not both")
    return args


@entry(PROG, errors=(CheckpointError, data.DataError, ValueError),
       memory_hint="the run's model and data do not fit in this machine's memory")
def main(argv=None) -> int:
    """The command line; returns the exit status.

    0 done; 1 the result was printed but its file could not be written (full
    or read-only disk); 2 bad input (one line on stderr); 130 interrupted.
    The result is printed before it is written, so a failed write loses nothing.
    """
    args = parse_args(argv)
    plain_warnings()
    result = evaluate_run(args.run_dir, iw_samples=args.iw_samples, split=args.split,
                          bn=args.bn, backend=args.backend, data_dir=args.data_dir,
                          batch_size=args.batch_size, au_samples=args.au_samples,
                          limit=args.limit, seed=args.seed,
                          progress=sys.stderr.isatty() and not args.no_progress,
                          per_example=args.per_example, write=False,
                          subset=args.subset, subset_seed=args.subset_seed)
    try:
        print(json.dumps(result, indent=2) if args.json else format_result(result), flush=True)
    except BrokenPipeError:  # the reader took what it wanted (| head): still keep the result
        write_result(result)
        raise
    try:
        write_result(result)
    except OSError as exc:
        return fail(PROG, f"the result above was not saved: {os_error_message(exc)}", status=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
