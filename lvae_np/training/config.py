"""What defines a training run: its config, the named presets, reading it back from a checkpoint.

A run is fully described by one ``TrainConfig``. ``lvae_np.train`` builds it
from the command line, saves it (as a plain JSON dict, ``config_as_dict``) in
the run's ``config.json`` and in every checkpoint's meta record, and
``config_from_meta`` turns that record back into a ``TrainConfig`` for
``--resume``, ``lvae_np.evaluate``, ``lvae_np.plots`` and the experiment
runner. ``check_options`` says, in one line naming the option, what makes a
value one that ``lvae_np.train`` refuses: both commands that take the
config's options (``lvae_np.train``, ``lvae_np.experiments``) and every
checkpoint read back (``check_config``) go through it.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, fields

from ..backend import BACKENDS, DTYPES, NOISE
from ..data import DATASETS
from ..models import (GENERATIVE_WIDTHS, INITS, KL_ESTIMATORS, PAPER_HIDDEN, PAPER_LATENT,
                     ModelConfig)

MODELS = ("lvae", "vae")
# The batch-norm statistics a run is evaluated with (lvae_np.evaluate's default --bn):
# the mean of the training set's batch statistics, or the whole set's in one pass.
BN_STATS = ("recollect", "single-pass")
# TrainConfig fields passed on to ModelConfig under the same name: the model's options.
MODEL_OPTIONS = ("head_batch_norm", "shared_top_down", "only_mu_up", "generative_widths",
                 "init", "bn_eps")


@dataclass
class TrainConfig:
    """Everything that defines a run (saved in its checkpoint and config.json)."""

    model: str = "lvae"                        # "lvae" or "vae"
    dataset: str = "mnist"                     # one of data.DATASETS
    latent: tuple = PAPER_LATENT               # z_1 .. z_L
    hidden: tuple = PAPER_HIDDEN               # block width under each z_i
    batch_norm: bool = True
    warmup_epochs: int = 200                   # beta rises 0 -> 1 over these (0: none)
    epochs: int = 2000                         # train until this many epochs are done
    batch_size: int = 256
    lr: float = 0.002
    max_grad_norm: float = 0.0                 # clip the total gradient norm (0: no clipping)
    iw_samples: int = 1                        # > 1 trains on the importance-weighted bound
    kl: str = "analytic"                       # "analytic" (where exact) or "mc"
    eval_every: int = 1                        # test ELBO and active units every N epochs
    eval_iw_samples: int = 0                   # also test L_k at evaluations (0: no)
    final_iw_samples: int = 0                  # L_k on the test set when training ends
    validation: int = 0                        # hold out this many training examples
    dtype: str = "float32"
    seed: int = 0
    # the released code's choices (see the preset "original-code"); the paper's form by default
    head_batch_norm: bool = False              # batch norm on every Gaussian head
    shared_top_down: bool = True               # LVAE: top-down inference path shared with p
    only_mu_up: bool = False                   # bottom-up blocks read the previous mu_hat
    generative_widths: str = "mirror"          # one of GENERATIVE_WIDTHS
    init: str = "glorot-uniform"               # one of INITS
    bn_eps: float = 1e-4                       # batch norm's epsilon
    bn_stats: str = "recollect"                # evaluation's batch-norm statistics: BN_STATS
    clip_elementwise: float = 0.0              # then clip each element to +-this (0: no)
    drop_last: bool = False                    # drop each epoch's last partial batch
    warmup_steps: int = 0                      # beta rises over this many steps (0: none)
    data_variant: str = ""                     # filled in: which data was actually used
    backend: str = "auto"                      # as asked: "auto", "numpy" or "cupy"
    noise: str = "device"                      # CuPy: noise drawn on the device, or "host"
    data_dir: str | None = None                # --data-dir (None: the usual places)

    def model_config(self, x_dim: int, likelihood: str) -> ModelConfig:
        """The model this run trains, for data of ``x_dim`` features and that likelihood.

        The model's options (``MODEL_OPTIONS``) are passed on under their names.
        """
        return ModelConfig(kind=self.model, x_dim=x_dim, latent=tuple(self.latent),
                           hidden=tuple(self.hidden), batch_norm=self.batch_norm,
                           likelihood=likelihood,
                           **{name: getattr(self, name) for name in MODEL_OPTIONS})


PRESETS = {
    "paper-mnist": dict(model="lvae", dataset="mnist", latent=PAPER_LATENT,
                        hidden=PAPER_HIDDEN, batch_norm=True, warmup_epochs=200,
                        epochs=2000, batch_size=256, lr=0.002, kl="analytic", iw_samples=1,
                        eval_every=10, final_iw_samples=5000),
    # The released code (casperkaae/LVAE, run_models.py): batch norm on the heads, its own
    # top-down inference MLP, bottom-up blocks reading mu_hat, its widths, initialisation
    # and batch-norm eps, norm then elementwise clipping, whole batches only, Monte Carlo
    # KL for both models, the learning rate of its README's commands, and batch-norm
    # statistics collected over the whole training set in one pass for evaluation.
    "original-code": dict(head_batch_norm=True, shared_top_down=False, only_mu_up=True,
                          generative_widths="original", init="original", bn_eps=1e-10,
                          bn_stats="single-pass",
                          max_grad_norm=4.0, clip_elementwise=0.9, drop_last=True, kl="mc",
                          lr=2e-4),
}
# Options --resume may change; everything else comes from the run's checkpoint.
RESUMABLE = ("epochs", "eval_every", "eval_iw_samples", "final_iw_samples", "bn_stats",
             "backend", "data_dir")
# Fields that do not change the run's numbers: where and on what it runs, what it found.
CIRCUMSTANCES = ("backend", "data_dir", "data_variant")


def config_as_dict(cfg: TrainConfig) -> dict:
    """``cfg`` as a JSON-ready dict (tuples as lists), as config.json and checkpoints hold it."""
    return json.loads(json.dumps(asdict(cfg),
                                 default=lambda o: list(o) if isinstance(o, tuple) else str(o)))


def config_from_meta(meta: dict) -> TrainConfig:
    """The ``TrainConfig`` saved in a checkpoint's meta record (its ``"config"`` entry).

    Keys this version does not know are ignored, and missing ones take their
    defaults, so checkpoints of older and newer versions still load.

    Raises:
        ValueError: the record has no usable config (one-line message).
    """
    saved = meta.get("config") if isinstance(meta, dict) else None
    if not isinstance(saved, dict):
        raise ValueError("the checkpoint's meta record has no run config")
    saved = dict(saved)
    try:
        for key in ("latent", "hidden"):
            if key in saved:
                saved[key] = tuple(saved[key])
    except TypeError:
        raise ValueError("the checkpoint's run config has malformed layer sizes") from None
    known = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in saved.items() if k in known})


def option_flag(name: str) -> str:
    """The option of a ``TrainConfig`` field: ``warmup_steps`` -> ``--warmup-steps``."""
    return "--" + name.replace("_", "-")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# The rules of check_options, field by field, in the order they are checked.
OPTION_CHOICES = {"model": MODELS, "dataset": DATASETS, "kl": KL_ESTIMATORS, "dtype": DTYPES,
                  "backend": BACKENDS, "generative_widths": GENERATIVE_WIDTHS, "init": INITS,
                  "bn_stats": BN_STATS, "noise": NOISE}
SIZES = ("latent", "hidden")
SWITCHES = ("batch_norm", "head_batch_norm", "shared_top_down", "only_mu_up", "drop_last")
INTEGER_FLOORS = {"epochs": 0, "warmup_epochs": 0, "warmup_steps": 0, "validation": 0,
                  "eval_iw_samples": 0, "final_iw_samples": 0, "seed": 0,
                  "batch_size": 1, "iw_samples": 1, "eval_every": 1}
REAL_RULES = {"lr": ("> 0 (a finite number)", lambda v: v > 0),
              "max_grad_norm": (">= 0 (a finite number; 0: no clipping)", lambda v: v >= 0),
              "clip_elementwise": (">= 0 (a finite number; 0: no clipping)", lambda v: v >= 0),
              "bn_eps": ("> 0 (a finite number)", lambda v: v > 0)}


def check_config(cfg: TrainConfig) -> None:
    """Refuse a config that ``lvae_np.train`` cannot run, in one line naming the option.

    Args:
        cfg: from the command line, or read back from a checkpoint.

    Raises:
        ValueError: the first problem found, e.g. "--batch-size must be >= 1, got 0".
    """
    check_options({f.name: getattr(cfg, f.name) for f in fields(TrainConfig)})


def check_options(values: dict, *, trains: bool = False) -> None:
    """Refuse the first value out of range, in one line naming its option.

    The one check of every command that takes ``TrainConfig``'s options
    (``lvae_np.train``, ``lvae_np.experiments``): the same value gives the
    same message whichever command it came from.

    Args:
        values: ``TrainConfig`` field name -> value, for any of the fields (a
            rule between two fields, such as one width per layer or the
            warm-up in steps or in epochs, applies when both are there).
        trains: the values start a training: ``epochs`` must be 1 or more.

    Raises:
        ValueError: the first problem found, e.g. "--batch-size must be >= 1, got 0".
    """
    for name, choices in OPTION_CHOICES.items():
        if name in values and values[name] not in choices:
            raise ValueError(f"{option_flag(name)} must be one of {', '.join(choices)}, "
                             f"got {values[name]!r}")
    for name in SIZES:
        if name not in values:
            continue
        sizes = values[name]
        if not isinstance(sizes, tuple) or not sizes \
                or not all(_is_int(v) and v >= 1 for v in sizes):
            raise ValueError(f"{option_flag(name)} must be positive integers, got {sizes!r}")
    if all(name in values for name in SIZES) and len(values["latent"]) != len(values["hidden"]):
        raise ValueError(f"--latent has {len(values['latent'])} layers but --hidden has "
                         f"{len(values['hidden'])}: give one width per stochastic layer")
    for name in SWITCHES:
        if name in values and not isinstance(values[name], bool):
            raise ValueError(f"{option_flag(name)} must be true or false, got {values[name]!r}")
    for name, low in INTEGER_FLOORS.items():
        if name not in values:
            continue
        if not _is_int(values[name]):
            raise ValueError(f"{option_flag(name)} must be an integer, got {values[name]!r}")
        if values[name] < low:
            raise ValueError(f"{option_flag(name)} must be >= {low}, got {values[name]}")
    for name, (words, ok) in REAL_RULES.items():
        if name not in values:
            continue
        value = values[name]
        if not (isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(value) and ok(value)):
            raise ValueError(f"{option_flag(name)} must be {words}, got {value!r}")
    if values.get("warmup_steps") and values.get("warmup_epochs"):
        raise ValueError(f"--warmup-steps {values['warmup_steps']} and --warmup-epochs "
                         f"{values['warmup_epochs']}: give the warm-up in steps or in epochs, "
                         "not both (the other 0)")
    if values.get("data_dir") is not None \
            and not isinstance(values["data_dir"], (str, os.PathLike)):
        raise ValueError(f"--data-dir must be a folder name, got {values['data_dir']!r}")
    if trains and values.get("epochs") == 0:
        raise ValueError("--epochs 0 trains nothing: give 1 or more (lvae_np.evaluate and "
                         "lvae_np.plots need a run with at least one epoch)")
