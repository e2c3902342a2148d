"""The paper's comparisons as named experiments: ``python -m lvae_np.experiments NAME``.

An experiment is a list of runs (:class:`RunSpec`). Each run lives in its own
folder ``RUNS_DIR/<run id>/``, named by a canonical id built from its settings
(``mnist-lvae-L5-bn-wu``, ``mnist-vae-L2-bn-wu``, ``mnist-lvae-L5-nobn-nowu``,
``omniglot-vae-L5-bn-wu``), so experiments that contain the same run share
its folder, its training and its evaluation.

Experiments (``EXPERIMENTS``):

* ``mnist-depth``: VAE and LVAE with 1 to 5 stochastic layers (latent sizes
  the first L of 64,32,16,8,4, block widths the first L of 512,256,128,64,32),
  batch norm and warm-up on. With one layer the two are the same model (the
  LVAE's top layer has nothing to merge with, so q(z_1 | x) is the VAE's),
  and the same seed gives the same numbers: that depth is one run, the VAE's;
* ``mnist-ablation``: the 5-layer VAE and LVAE without batch norm (BN) and
  warm-up (WU), with either, and with both;
* ``omniglot``: the 5-layer VAE and LVAE on OMNIGLOT, BN and WU on;
* ``mnist-headline``: the 5-layer VAE and LVAE on MNIST, BN and WU on (the
  paper's headline comparison, to be run with ``--seeds``);
* ``all``: the union, each run once.

For each run the runner

1. trains it with ``python -m lvae_np.train`` in a subprocess (output appended
   to ``<run>/train.log``), resuming from ``<run>/checkpoint.npz`` when there is
   one and skipping runs that have reached ``--epochs`` already; a run whose
   saved settings differ from the experiment's in something ``--resume``
   cannot change stops everything with an error naming the run and setting;
2. evaluates the checkpoint with ``python -m lvae_np.evaluate`` (ELBO, L_K
   with each test example's value, KL and active units per layer); the result
   is kept in ``<run>/eval-test-k<K>.json`` (``-first<M>.json`` added with
   ``--eval-limit M``, the first M examples; ``-subset<M>-seed<S>.json`` with
   ``--eval-subset M --eval-subset-seed S``, M examples drawn by a seeded
   permutation, the same for every run), and the evaluation is skipped when
   that file already holds the same epoch, K and examples;

then writes ``results.md``, ``results.csv`` and figures to ``--out``, by
default ``RUNS_DIR/results/NAME`` (ignored by git; ``--publish`` writes to
``results/experiments/NAME``, the committed results); where
an experiment has a VAE and an LVAE with the same settings (the KL estimator
of training included: ``--kl`` sets it for every run), results.md also
gives their difference in L_K on the same test examples, with the standard
error of that paired difference (much smaller than either model's own,
since most of the spread of L_K is between images). Up to
``--jobs`` runs go at once, each child limited to ``cpu_count // jobs``
BLAS/OpenMP threads. A run whose loss becomes NaN or infinite ("diverged",
plausible without batch norm and warm-up; ``lvae_np.train`` says so in the
run's ``status.json``) is recorded as such and the others go on. Ctrl-C (or
SIGTERM) asks the trainings to stop at a batch boundary and write their
checkpoints; the same command continues. While a runner works on
a run, the run folder holds a lock file (``.experiments.lock``), so a second
runner sharing that run stops with an error instead of training it too; the
training itself holds the folder's own lock (``lvae_np.runlock``), and the
children die with the runner (on Linux, however it ends; ``--executor local``
jobs watch it). A training still holding a run's lock when a runner starts
(a SLURM job outlives its runner) is named in one line, with how to end it.
Run records are checked where they are read, and the results folder is
replaced whole, every record checked before anything is written.

``--preset original-code`` gives every run ``lvae_np.config.PRESETS``' settings
of that name and run ids ending in ``-orig``; ``--seeds 0,1,2`` runs every run
once per seed (ids of seeds other than 0 end in ``-seed<S>``), and results.md
and seeds.csv give each model's L_K and the paired LVAE - VAE difference as a
mean over the seeds with its standard deviation and standard error.

Examples::

    python -m lvae_np.experiments --list
    python -m lvae_np.experiments mnist-depth --epochs 10 --warmup-epochs 5 --jobs 2
    python -m lvae_np.experiments all --backend cupy        # the paper's budget: 2000 epochs
    python -m lvae_np.experiments mnist-ablation --no-train --no-eval   # tables of what exists

The modules, each importing only those after it: ``__main__`` (the command
line), ``runner`` (child processes, scheduling, signals, resume and skip),
``executors`` (the steps as SLURM jobs through submitit, ``--executor slurm``),
``locks`` (one runner per run folder), ``report`` (tables, paired
differences, listing), ``figures``, ``seeds`` (summaries across seeds),
``state`` (what a run folder says) and ``specs`` (runs, run ids, the named
experiments).
"""
from .figures import draw_figures, plot_active_units, plot_depth, plot_test_elbo
from .locks import LOCK, lock_runs, unlock_runs
from .report import describe_runs, format_csv, format_markdown, paired_differences, \
    table_rows, write_results
from .runner import THREAD_VARS, Report, child_env, evaluate_command, prepare, \
    run_experiment, train_command
from .seeds import across_seeds, spread
from .specs import DEFAULT_OUT_DIR, DEFAULT_RUNS_DIR, EXECUTORS, EXPERIMENTS, LOG, MODELS, \
    PRESET_SUFFIXES, PROTOCOLS, RESULTS, Experiment, ExperimentError, RunSpec, Settings, \
    default_out
from .state import RunRecord, cached_eval, config_mismatches, eval_path, last_test_elbo, \
    read_eval, saved_meta

__all__ = [
    "DEFAULT_OUT_DIR", "DEFAULT_RUNS_DIR", "EXECUTORS", "EXPERIMENTS", "LOCK", "LOG", "MODELS",
    "PRESET_SUFFIXES", "PROTOCOLS", "RESULTS", "across_seeds", "spread", "THREAD_VARS", "Experiment", "ExperimentError", "Report", "RunRecord", "RunSpec",
    "Settings", "cached_eval", "child_env", "config_mismatches", "default_out", "describe_runs",
    "draw_figures", "eval_path", "evaluate_command", "format_csv", "format_markdown",
    "last_test_elbo", "lock_runs", "paired_differences", "plot_active_units", "plot_depth",
    "plot_test_elbo", "prepare", "read_eval", "run_experiment", "saved_meta", "table_rows",
    "train_command", "unlock_runs", "write_results",
]
