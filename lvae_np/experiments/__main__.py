"""The command line of the experiments: ``python -m lvae_np.experiments [NAME] [options]``.

Bad input gives one line on stderr and exit status 2, a full or read-only
disk one line and status 1 (``cli.entry``); otherwise the exit status is
``run_experiment``'s: 0 (all done, or diverged), 1 (a run failed) or 130
(interrupted).
"""
from __future__ import annotations

import shlex
import sys
import textwrap
from dataclasses import asdict, replace
from pathlib import Path

from ..training.cli import Parser, RawHelpFormatter, UsageError, entry, folder_path
from ..training.config import PRESETS
from ..training.options import add_options, config_values
from .report import describe_runs
from .runner import THREAD_VARS, run_experiment
from .specs import (DEFAULT_OUT_DIR, EXECUTORS, EXPERIMENTS, PRESET_SUFFIXES, RESULTS,
                    TRAINING_SETTINGS, ExperimentError, Settings, default_out)

PROG = "lvae_np.experiments"
DESCRIPTION = """\
Run the paper's comparisons. Each run of the experiment NAME is trained with
lvae_np.train (resuming what exists, up to --epochs), evaluated with
lvae_np.evaluate (test ELBO, L_k, KL and active units per layer), and the
results go to OUT/results.md, OUT/results.csv and figures (test_elbo.png,
depth.png, active_units.png); OUT is RUNS_DIR/results/NAME unless --out or
--publish (results/experiments/NAME) says otherwise, so committed results
are never overwritten by default. Runs live in RUNS_DIR/<run id>/, e.g.
mnist-lvae-L5-bn-wu, shared by the experiments that contain them; each keeps
the output of its trainings and evaluations in train.log. A run that diverges
(non-finite loss) is reported and the others go on. Ctrl-C stops the
trainings at a batch boundary with their checkpoints written; the same
command continues."""


# lvae_np.train's options (lvae_np.training.options) that every run takes alike, with what
# each means here; the ones that are Settings take its defaults.
RUN_OPTIONS = {
    "epochs": "runs that exist resume up to it (the paper's: 2000)",
    "warmup_epochs": "for the runs with warm-up, the others get 0 (the paper's: 200); cannot "
                     "change for an existing run",
    "warmup_steps": "for the runs with warm-up; never scaled with --epochs",
    "kl": "every run's, the VAE's and the LVAE's alike (default: analytic, or the preset's; mc "
          "adds -mc to the run ids)",
    "preset": "every run gets its settings and a suffix to its run ids ("
              + ", ".join(f"-{v}" for v in PRESET_SUFFIXES.values())
              + "); default: the paper's protocol",
    "batch_size": "cannot change for an existing run",
    "seed": "the same for every run, and part of the run ids when other than 0",
    "backend": "passed to lvae_np.train and lvae_np.evaluate",
    "data_dir": "passed to lvae_np.train and lvae_np.evaluate",
}


def build_parser() -> Parser:
    """The parser of ``python -m lvae_np.experiments``; its errors raise UsageError.

    The options of every run's training (``RUN_OPTIONS``) and ``--no-progress`` are
    lvae_np.train's, defined once in ``lvae_np.training.options``; the rest are this
    command's own.
    """
    d = Settings()
    width = max(map(len, EXPERIMENTS)) + 4
    epilog = "experiments:\n" + "\n".join(
        textwrap.fill(f"{e.description} ({len(e.specs)} runs)", 78,
                      initial_indent=f"  {e.name:<{width - 2}}", subsequent_indent=" " * width)
        for e in EXPERIMENTS.values())
    p = Parser(prog="python -m lvae_np.experiments", description=DESCRIPTION,
               epilog=epilog, formatter_class=RawHelpFormatter)
    p.add_argument("name", nargs="?", choices=list(EXPERIMENTS), metavar="NAME",
                   help="the experiment: " + ", ".join(EXPERIMENTS))
    p.add_argument("--list", action="store_true",
                   help="list the experiments (or NAME's) with their run ids and states "
                        "(epochs done / target, evaluated or not); runs nothing")
    add_options(p.add_argument_group("every run's training (lvae_np.train's options)"),
                RUN_OPTIONS, notes=RUN_OPTIONS, choices={"preset": tuple(PRESET_SUFFIXES)},
                defaults={**{name: getattr(d, name) for name in TRAINING_SETTINGS},
                          "kl": None})
    p.add_argument("--jobs", type=int, default=d.jobs,
                   help="trainings at once; each gets cpu_count // JOBS BLAS threads "
                        f"({', '.join(THREAD_VARS)}) unless set already")
    p.add_argument("--runs-dir", default=str(d.runs_dir), metavar="DIR", type=folder_path,
                   help="folder of the run folders, shared by all experiments")
    p.add_argument("--out", metavar="DIR", type=folder_path,
                   help=f"where results and figures go (default: RUNS_DIR/{RESULTS}/NAME, "
                        "ignored by git)")
    p.add_argument("--publish", action="store_true",
                   help=f"write results and figures to {DEFAULT_OUT_DIR}/NAME, the committed "
                        "results")
    p.add_argument("--iw-samples", type=int, default=d.iw_samples, metavar="K",
                   help="importance samples of the test L_k (0: ELBO only)")
    p.add_argument("--limit", "--eval-limit", dest="eval_limit", type=int, metavar="M",
                   help="evaluate on the first M test examples (default: all), as "
                        "lvae_np.evaluate --limit does; not a sample where the test set is "
                        "ordered (OMNIGLOT's is, by alphabet): prefer --eval-subset")
    p.add_argument("--eval-subset", type=int, metavar="M",
                   help="evaluate on M test examples drawn by a permutation seeded with "
                        "--eval-subset-seed, the same M for every run and seed "
                        "(lvae_np.evaluate --subset); the LVAE - VAE differences pair on them")
    p.add_argument("--eval-subset-seed", type=int, default=d.eval_subset_seed, metavar="S",
                   help="seed of --eval-subset's permutation")
    p.add_argument("--no-eval", action="store_true",
                   help="skip evaluations (stored ones of the same epoch still show)")
    p.add_argument("--no-train", action="store_true",
                   help="train nothing: evaluate and tabulate the runs as they are")
    p.add_argument("--seeds", type=seed_list, metavar="S,S,...",
                   help="run every run once per seed (0 keeps its run id, others add "
                        "-seed<S>); results.md gives each model's mean, s.d. and s.e. of L_k "
                        "across the seeds, and of the paired LVAE - VAE difference")
    p.add_argument("--executor", choices=EXECUTORS, default=d.executor,
                   help="pool: up to --jobs subprocesses on this machine; slurm: each "
                        "training and evaluation a SLURM job through submitit (pip install "
                        "'lvae_np[cluster]'), up to --jobs at once; local: submitit's local "
                        "executor, jobs on this machine")
    p.add_argument("--executor-option", dest="executor_options", action="append", default=[],
                   metavar="KEY=VALUE",
                   help="a submitit parameter of every job, e.g. slurm_partition=gpu, "
                        "gpus_per_node=1, cpus_per_task=8, timeout_min=600 (repeatable)")
    add_options(p, ["no_progress"], notes={"no_progress": "the line per finished run still "
                                                          "shows"})
    return p


def seed_list(text: str) -> tuple:
    """``--seeds``' value: comma-separated distinct integers >= 0, e.g. "0,1,2"."""
    try:
        seeds = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"--seeds takes comma-separated integers, e.g. 0,1,2; got {text!r}") \
            from None
    if min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds must be distinct integers >= 0, got {text!r}")
    return seeds


def parse_args(argv=None) -> tuple:
    """Parse and check the command line: (the parsed options, the invocation's ``Settings``).

    The warm-up rule and the checks of the options every run's training takes
    are lvae_np.train's (``options.config_values``, ``config.check_options``),
    with the same one-line messages.
    """
    args = build_parser().parse_args(argv)
    settings = Settings(**config_values(args, TRAINING_SETTINGS), jobs=args.jobs,
                        runs_dir=Path(args.runs_dir),
                        iw_samples=args.iw_samples, eval_limit=args.eval_limit,
                        eval_subset=args.eval_subset, eval_subset_seed=args.eval_subset_seed,
                        train=not args.no_train, evaluate=not args.no_eval,
                        seeds=args.seeds or (), progress=not args.no_progress,
                        executor=args.executor, executor_options=tuple(args.executor_options))
    try:
        settings.check()
    except ExperimentError as exc:   # an option out of range: a usage error, as lvae_np.train's
        raise UsageError(str(exc)) from None
    return args, settings


@entry(PROG, errors=(ExperimentError,))
def main(argv=None) -> int:
    """The command line; returns the exit status (2 with a one-line error)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args, settings = parse_args(argv)
    # --kl and --preset override what the experiment's runs say; without them each keeps its own
    kl_given = args.kl or (PRESETS[args.preset]["kl"] if args.preset else None)
    if args.list:
        print(describe_runs([args.name] if args.name else list(EXPERIMENTS), settings,
                            kl=kl_given, preset=args.preset))
        return 0
    if args.name is None:
        raise ExperimentError("name an experiment (" + ", ".join(EXPERIMENTS)
                              + "), or use --list (see --help)")
    if args.out and args.publish:
        raise ExperimentError("--out and --publish both say where results go: give one")
    out = Path(args.out) if args.out else default_out(settings.runs_dir, args.name,
                                                      publish=args.publish)
    if out.exists() and not out.is_dir():
        raise ExperimentError(f"--out {out} is a file, not a folder: choose another --out")
    specs = [replace(spec, kl=kl_given or spec.kl, preset=args.preset or spec.preset)
             for spec in EXPERIMENTS[args.name].specs]
    report = run_experiment(
        specs, **asdict(settings),
        out=out, name=args.name,
        command=shlex.join(["python", "-m", "lvae_np.experiments"] + argv))
    return report.exit_status


if __name__ == "__main__":
    sys.exit(main())
