"""What an experiment runs: run settings, run ids, the named experiments, one invocation's options.

A :class:`RunSpec` is one run's model and training switches; its
:meth:`RunSpec.run_id` names the run's folder, so experiments that contain the
same run share it. :data:`EXPERIMENTS` holds the paper's comparisons by name,
and :class:`Settings` the options of one invocation, shared by all its runs.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from ..training.config import PRESETS, TrainConfig, check_options
from ..data import DATASETS
from ..models import KL_ESTIMATORS, PAPER_HIDDEN, PAPER_LATENT

MODELS = ("vae", "lvae")
LOG = "train.log"     # in a run folder: the output of its trainings and evaluations
DEFAULT_RUNS_DIR = Path("runs") / "experiments"
DEFAULT_OUT_DIR = Path("results") / "experiments"   # where --publish writes NAME's results
EXECUTORS = ("pool", "slurm", "local")   # pool: subprocesses here; the others: submitit
RESULTS = "results"   # RUNS_DIR/results/NAME/: an experiment's tables and figures by default
# --preset NAME: the lvae_np.config preset every run gets, and the suffix of its run ids
PRESET_SUFFIXES = {"original-code": "orig"}
# The released code's choices one at a time (experiment mnist-choices): the TrainConfig
# settings of each and the suffix it adds to run ids. The LVAE-only ones change nothing in
# the VAE, whose counterpart is then the paper-form run.
CHOICES = {
    "headbn": dict(head_batch_norm=True),          # batch norm on every Gaussian head
    "lr2e-4": dict(lr=2e-4),                      # the released code's learning rate
    "unshared": dict(shared_top_down=False),      # LVAE: the top-down path's own MLP
    "muup": dict(only_mu_up=True),                # LVAE: bottom-up blocks read mu_hat
    "clip": dict(max_grad_norm=4.0, clip_elementwise=0.9),  # norm, then elementwise clipping
}
LVAE_ONLY_CHOICES = ("unshared", "muup")
# Settings that are every run's TrainConfig field of the same name: lvae_np.train's options
# (lvae_np.training.options), checked as lvae_np.train checks them (config.check_options).
TRAINING_SETTINGS = ("epochs", "warmup_epochs", "warmup_steps", "batch_size", "seed", "backend",
                     "data_dir")
PROTOCOLS = {None: "the paper's (lvae_np's defaults)",
             "original-code": "the released code's (--preset original-code: "
                              "lvae_np.config.PRESETS['original-code'])"}


def default_out(runs_dir, name: str, publish: bool = False) -> Path:
    """Where experiment ``name``'s tables and figures go without ``--out``.

    Under the runs folder (``RUNS_DIR/results/NAME``, ignored by git), so a run
    never overwrites the committed results; with ``publish``,
    ``results/experiments/NAME``.
    """
    return DEFAULT_OUT_DIR / name if publish else Path(runs_dir) / RESULTS / name


class ExperimentError(Exception):
    """Bad input or a run folder that disagrees with the experiment (one-line message)."""


@dataclass(frozen=True)
class RunSpec:
    """The settings that make one run of an experiment.

    Attributes:
        dataset: one of ``lvae_np.data.DATASETS``.
        model: "vae" (bottom-up inference) or "lvae" (top-down).
        latent: sizes of z_1 .. z_L.
        hidden: widths of the deterministic blocks under z_1 .. z_L.
        batch_norm: Dense -> BatchNorm -> leaky ReLU blocks.
        warmup: beta rises over the experiment's warm-up, ``warmup_epochs`` or
            ``warmup_steps`` (else none).
        kl: the KL estimator of the training objective, "analytic" or "mc"; the
            VAE and LVAE compared with each other always share it.
        preset: None (the paper's protocol, lvae_np's defaults) or a key of
            ``PRESET_SUFFIXES``: the settings of ``lvae_np.config.PRESETS[preset]``
            other than its KL estimator (``kl`` says that one).
        choices: keys of ``CHOICES``, the released code's choices this run makes
            on top of the preset (or of the paper's form).
    """

    dataset: str = "mnist"
    model: str = "lvae"
    latent: tuple = PAPER_LATENT
    hidden: tuple = PAPER_HIDDEN
    batch_norm: bool = True
    warmup: bool = True
    kl: str = "analytic"
    preset: str | None = None
    choices: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "choices", tuple(self.choices))
        for choice in self.choices:
            if choice not in CHOICES:
                raise ValueError(f"unknown choice {choice!r}: choose among {', '.join(CHOICES)}")
        object.__setattr__(self, "latent", tuple(int(v) for v in self.latent))
        object.__setattr__(self, "hidden", tuple(int(v) for v in self.hidden))
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}: choose one of "
                             f"{', '.join(DATASETS)}")
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}: choose vae or lvae")
        if self.kl not in KL_ESTIMATORS:
            raise ValueError(f"unknown KL estimator {self.kl!r}: choose one of "
                             f"{', '.join(KL_ESTIMATORS)}")
        if self.preset is not None and self.preset not in PRESET_SUFFIXES:
            raise ValueError(f"unknown preset {self.preset!r}: choose one of "
                             f"{', '.join(PRESET_SUFFIXES)}")
        if not self.latent or len(self.latent) != len(self.hidden):
            raise ValueError(f"latent {self.latent} and hidden {self.hidden} must give one "
                             "size per stochastic layer, at least one layer")
        if min(self.latent + self.hidden) < 1:
            raise ValueError(f"sizes must be positive: latent {self.latent}, "
                             f"hidden {self.hidden}")

    @classmethod
    def paper(cls, dataset: str, model: str, layers: int, *, batch_norm: bool = True,
              warmup: bool = True, kl: str = "analytic") -> "RunSpec":
        """The paper's model with ``layers`` stochastic layers (the first L paper sizes)."""
        if not 1 <= layers <= len(PAPER_LATENT):
            raise ValueError(f"layers must be between 1 and {len(PAPER_LATENT)}, got {layers}")
        return cls(dataset, model, PAPER_LATENT[:layers], PAPER_HIDDEN[:layers],
                   batch_norm, warmup, kl)

    def _with(self, choice: str | None) -> "RunSpec":
        return self if choice is None else replace(self, choices=self.choices + (choice,))

    @property
    def layers(self) -> int:
        """The number of stochastic layers, L."""
        return len(self.latent)

    def run_id(self, seed: int = 0) -> str:
        """The canonical folder name, e.g. ``mnist-lvae-L5-bn-wu``.

        Sizes other than the paper's (the first L of ``PAPER_LATENT`` and
        ``PAPER_HIDDEN``) are spelled out (``-z4.2-h16.8``); the Monte Carlo KL
        adds ``-mc``; a preset its suffix (``-orig`` for ``original-code``); a seed
        other than 0 is appended (``-seed1``), so repeats with other seeds get
        their own folders.
        """
        parts = [self.dataset, self.model, f"L{self.layers}",
                 "bn" if self.batch_norm else "nobn", "wu" if self.warmup else "nowu"]
        if (self.latent, self.hidden) != (PAPER_LATENT[:self.layers],
                                          PAPER_HIDDEN[:self.layers]):
            parts += ["z" + ".".join(map(str, self.latent)),
                      "h" + ".".join(map(str, self.hidden))]
        if self.kl != "analytic":
            parts.append(self.kl)
        if self.preset is not None:
            parts.append(PRESET_SUFFIXES[self.preset])
        parts += self.choices
        if seed:
            parts.append(f"seed{seed}")
        return "-".join(parts)

    def train_config(self, *, epochs: int, warmup_epochs: int, batch_size: int,
                     seed: int, warmup_steps: int = 0) -> TrainConfig:
        """The TrainConfig this run is trained with (lvae_np.train's defaults elsewhere).

        With warm-up on, ``warmup_steps`` (if > 0) gives it in steps instead of
        ``warmup_epochs``; either is used as given, never scaled. A preset's
        settings come first, and this run's own (model, sizes, switches, KL
        estimator, budget) override them.
        """
        steps = warmup_steps if self.warmup else 0
        epochs_wu = warmup_epochs if self.warmup and not steps else 0
        preset = dict(PRESETS[self.preset]) if self.preset is not None else {}
        for choice in self.choices:
            preset.update(CHOICES[choice])
        return TrainConfig(**{**preset, **dict(
            model=self.model, dataset=self.dataset, latent=self.latent, hidden=self.hidden,
            batch_norm=self.batch_norm, warmup_epochs=epochs_wu, warmup_steps=steps,
            epochs=epochs, batch_size=batch_size, kl=self.kl, seed=seed)})


@dataclass(frozen=True)
class Experiment:
    """A named list of runs and what it compares."""

    name: str
    description: str
    specs: tuple


def _build_experiments() -> dict:
    # one layer: the VAE and the LVAE are the same model (the LVAE's top layer has
    # nothing to merge with), and the same seed gives the same numbers: one run, the VAE's
    depth = (RunSpec.paper("mnist", "vae", 1),) + tuple(
        RunSpec.paper("mnist", m, n) for n in range(2, 6) for m in MODELS)
    ablation = tuple(RunSpec.paper("mnist", m, 5, batch_norm=bn, warmup=wu)
                     for bn, wu in ((False, False), (True, False), (False, True), (True, True))
                     for m in MODELS)
    omniglot = tuple(RunSpec.paper("omniglot", m, 5) for m in MODELS)
    headline = tuple(RunSpec.paper("mnist", m, 5) for m in MODELS)
    choices = tuple(RunSpec.paper("mnist", m, 5, kl=kl)._with(choice)
                    for choice, kl in (("headbn", "analytic"), ("lr2e-4", "analytic"),
                                       ("unshared", "analytic"), ("muup", "analytic"),
                                       (None, "mc"), ("clip", "analytic"))
                    for m in MODELS if m == "lvae" or choice not in LVAE_ONLY_CHOICES) + tuple(
        replace(RunSpec.paper("mnist", m, 5, kl="mc"), preset="original-code") for m in MODELS)
    headline_headbn = tuple(spec._with("headbn") for spec in headline)
    headline_orig = tuple(replace(RunSpec.paper("mnist", m, 5, kl="mc"), preset="original-code")
                          for m in MODELS)
    union = tuple(dict.fromkeys(depth + ablation + omniglot))
    return {e.name: e for e in (
        Experiment("mnist-depth", "VAE and LVAE on MNIST with 1 to 5 stochastic layers, "
                                  "batch norm and warm-up on", depth),
        Experiment("mnist-ablation", "the 5-layer VAE and LVAE on MNIST without and with "
                                     "batch norm (BN) and warm-up (WU)", ablation),
        Experiment("omniglot", "the 5-layer VAE and LVAE on OMNIGLOT, BN and WU on", omniglot),
        Experiment("mnist-headline", "the 5-layer VAE and LVAE on MNIST, BN and WU on (the "
                                     "paper's headline comparison; run it with --seeds)",
                   headline),
        Experiment("mnist-choices", "the released code's choices one at a time on the "
                                    "5-layer paper-form headline (BN and WU): head batch "
                                    "norm, lr 2e-4, unshared top-down path, only mu up, "
                                    "Monte Carlo KL, clipping; then all of them, the "
                                    "original-code preset (run it with --seeds, "
                                    "--epochs 30 --warmup-epochs 100)", choices),
        Experiment("mnist-headline-headbn", "mnist-headline with batch norm on every Gaussian "
                                            "head, the choice that decides the unit claim "
                                            "in mnist-choices (run it as mnist-headline)",
                   headline_headbn),
        Experiment("mnist-headline-orig", "mnist-headline under the released code's "
                                          "settings: --preset original-code, Monte Carlo "
                                          "KL (run it as mnist-headline)", headline_orig),
        Experiment("all", "every run above, each once", union),
    )}


EXPERIMENTS = _build_experiments()


@dataclass
class Settings:
    """The options of one invocation, shared by all its runs."""

    epochs: int = 2000
    warmup_epochs: int = 200
    warmup_steps: int = 0          # > 0: the warm-up in steps (then warmup_epochs is 0)
    jobs: int = 1
    runs_dir: Path = DEFAULT_RUNS_DIR
    iw_samples: int = 5000
    eval_limit: int | None = None  # the first M test examples (not a sample for OMNIGLOT)
    eval_subset: int | None = None  # M test examples drawn by a permutation seeded with:
    eval_subset_seed: int = 0
    train: bool = True
    evaluate: bool = True
    batch_size: int = 256
    seed: int = 0
    seeds: tuple = ()              # several seeds, each run once per seed (empty: seed's)
    backend: str = "auto"
    data_dir: str | None = None
    progress: bool = True
    executor: str = "pool"         # or submit each step through submitit: "slurm", "local"
    executor_options: tuple = ()   # KEY=VALUE parameters of the submitit executor

    @property
    def run_seeds(self) -> tuple:
        """The seeds every run is trained with: ``seeds``, else ``(seed,)``."""
        return tuple(self.seeds) or (self.seed,)

    def check(self) -> None:
        """Raise ExperimentError for a value out of range.

        The settings of every run's training (``TRAINING_SETTINGS``: epochs, warm-up,
        batch size, seed, backend, data folder) get lvae_np.train's own check
        (``check_options``), with its messages.
        """
        try:
            check_options({name: getattr(self, name) for name in TRAINING_SETTINGS},
                          trains=True)
        except ValueError as exc:
            raise ExperimentError(str(exc)) from None
        for name, low in (("jobs", 1), ("iw_samples", 0), ("eval_subset_seed", 0)):
            if getattr(self, name) < low:
                raise ExperimentError(f"--{name.replace('_', '-')} must be >= {low}, "
                                      f"got {getattr(self, name)}")
        if self.executor not in EXECUTORS:
            raise ExperimentError(f"--executor must be one of {', '.join(EXECUTORS)}, got "
                                  f"{self.executor!r}")
        if self.eval_limit is not None and self.eval_limit < 1:
            raise ExperimentError(f"--limit/--eval-limit must be >= 1, got {self.eval_limit}")
        if self.eval_subset is not None and self.eval_subset < 1:
            raise ExperimentError(f"--eval-subset must be >= 1, got {self.eval_subset}")
        if self.eval_subset is not None and self.eval_limit is not None:
            raise ExperimentError("give --eval-limit (the first M test examples) or "
                                  "--eval-subset (a seeded random sample), not both")
        if self.seeds and (min(self.seeds) < 0 or len(set(self.seeds)) != len(self.seeds)):
            raise ExperimentError("--seeds must be distinct integers >= 0, got "
                                  + ",".join(map(str, self.seeds)))
        if self.seeds and self.seed:
            raise ExperimentError("--seed and --seeds both say which seeds: give one")
        for folder in (Path(self.runs_dir), *Path(self.runs_dir).parents):
            if folder.exists() and not folder.is_dir():
                raise ExperimentError(f"--runs-dir {self.runs_dir}: {folder} is a file, not a "
                                      "folder; choose another --runs-dir")

    def config(self, spec: RunSpec, seed: int | None = None) -> TrainConfig:
        """The TrainConfig of ``spec`` under these options, with ``seed`` (None: ``seed``)."""
        return spec.train_config(epochs=self.epochs, warmup_epochs=self.warmup_epochs,
                                 warmup_steps=self.warmup_steps, batch_size=self.batch_size,
                                 seed=self.seed if seed is None else seed)

    def for_seed(self, seed: int) -> "Settings":
        """These options for the runs of one seed: ``seed`` set, ``seeds`` empty."""
        return replace(self, seed=seed, seeds=())

    def eval_name(self) -> tuple:
        """(limit, subset, subset seed): what names a run's stored test-set evaluation."""
        return self.eval_limit, self.eval_subset, self.eval_subset_seed
