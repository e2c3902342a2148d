"""The options of the commands that train, each defined once for lvae_np.train and .experiments.

``OPTIONS`` holds every option of ``python -m lvae_np.train`` that sets a
``TrainConfig`` field (its help and choices; its type and default are the
field's), and the two that are no field (``--preset``, ``--no-progress``).
``add_options`` puts a selection of them on a parser: ``lvae_np.train`` takes
them all, ``lvae_np.experiments`` the ones every run of an experiment shares,
each with a note on what it means there and, where it differs, its own
default. The options it adds remember whether the command line gave them
(``given``), so that ``config_values`` applies the one warm-up rule both
commands follow: ``--warmup-steps`` given without ``--warmup-epochs`` sets
the epochs' warm-up to 0. The values are then checked by
``config.check_options``, the same check with the same messages for both.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, fields

from ..data import ENV_VAR
from .cli import positive_ints
from .config import OPTION_CHOICES, PRESETS, TrainConfig, option_flag


@dataclass(frozen=True)
class Option:
    """One option's definition. Its type and default are its ``TrainConfig`` field's, if any.

    Attributes:
        help: what the option does, in any command that takes it.
        metavar: the value's name in the usage line (None: argparse's).
        about: choice -> what it means, added to ``help`` for the choices a command offers.
    """

    help: str
    metavar: str | None = None
    about: dict | None = None


OPTIONS = {
    "preset": Option(
        "a named protocol; options given explicitly override it",
        about={"paper-mnist": "2000 epochs, warm-up 200, batch norm, test L_5000 at the end",
               "original-code": "the released code's choices (head batch norm, unshared "
                                "top-down path, only mu up, its widths, init and bn eps 1e-10, "
                                "clipping 4 then 0.9, drop last, MC KL, lr 2e-4)"}),
    "backend": Option("cupy runs on the GPU; without CuPy or a GPU it warns and uses NumPy"),
    "noise": Option("with CuPy: draw the training noise and the binarisation on the device "
                    "(device), or on the host with NumPy's generator and copy it over (host: "
                    "NumPy's numbers, for parity checks; slower). No effect on NumPy"),
    "model": Option("lvae: top-down inference; vae: bottom-up inference"),
    "dataset": Option("mnist and omniglot: Bernoulli output; norb: Gaussian output; "
                      "synthetic: tiny, for smoke tests"),
    "data_dir": Option(f"folder with the data files (also ${ENV_VAR}; default: the "
                       "repository's data/, then the cache)", metavar="DIR"),
    "latent": Option("sizes of z_1 .. z_L", metavar="D1,D2,..."),
    "hidden": Option("width of the deterministic block under each z_i", metavar="H1,H2,..."),
    "batch_norm": Option("Dense -> BatchNorm -> leaky ReLU blocks (else Dense -> leaky ReLU)"),
    "warmup_epochs": Option("beta rises linearly from 0 to 1 over this many epochs (0: none)"),
    "warmup_steps": Option("beta rises linearly from 0 to 1 over this many optimizer steps, "
                           "step by step (0: none); given alone it sets --warmup-epochs to 0"),
    "epochs": Option("train until this many epochs are done"),
    "batch_size": Option("examples per training step"),
    "lr": Option("Adam's step size"),
    "max_grad_norm": Option("clip the total gradient norm to this (0: no clipping)"),
    "clip_elementwise": Option("then clip each gradient element to +-this (0: no clipping)"),
    "drop_last": Option("drop the last partial batch of each epoch"),
    "iw_samples": Option("importance samples per example in the training objective (1: the "
                         "warm-up ELBO; >1: the IWAE bound, MC KL)"),
    "kl": Option("KL estimator: analytic where exact (LVAE every layer, VAE top layer), or mc "
                 "(single-sample) everywhere"),
    "head_batch_norm": Option("batch norm on every Gaussian head of q and p (not the x output)"),
    "shared_top_down": Option("LVAE: the top-down inference path shares the generative "
                              "model's blocks (else its own MLP)"),
    "only_mu_up": Option("each bottom-up block reads the previous layer's mu_hat (else the "
                         "previous block's output)"),
    "generative_widths": Option("LVAE generative blocks: mirror (the VAE's) or original (the "
                                "released code's, width hidden[i-1])"),
    "init": Option("glorot-uniform (gain 1, zero biases) or original (the released code's)"),
    "bn_eps": Option("batch norm's epsilon"),
    "bn_stats": Option("the batch-norm statistics lvae_np.evaluate and lvae_np.plots use by "
                       "default: recollect (the mean of the training set's batch statistics) "
                       "or single-pass (the whole training set as one batch, as the released "
                       "code)"),
    "eval_every": Option("evaluate test ELBO and active units every N epochs"),
    "eval_iw_samples": Option("also estimate test L_k with this many samples at evaluations "
                              "(0: no)"),
    "final_iw_samples": Option("estimate test L_k with this many samples when training ends "
                               "(0: no)"),
    "validation": Option("hold out this many training examples as a validation split"),
    "dtype": Option("floating-point precision"),
    "seed": Option("seed of everything random"),
    "no_progress": Option("plain lines, no progress bars"),
}
# The options that are no TrainConfig field: what they hold, and their choices.
OTHER_OPTIONS = {"preset": (str, tuple(sorted(PRESETS))), "no_progress": (bool, None)}
GIVEN = "given_options"   # in the parsed arguments: the options the command line gave itself


def given(args: argparse.Namespace) -> set:
    """The options (their ``dest``) that the command line gave itself, not defaults or a preset.

    An abbreviation (``--warmup-s 100``) or ``--opt=value`` counts as given.
    """
    return set(getattr(args, GIVEN, ()))


def _remember(namespace, dest: str) -> None:
    setattr(namespace, GIVEN, given(namespace) | {dest})


class Store(argparse.Action):
    """argparse's "store", remembering that the option was given (see ``given``)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        _remember(namespace, self.dest)


class Switch(argparse.BooleanOptionalAction):
    """``--name`` / ``--no-name``, remembering that the option was given (see ``given``)."""

    def __call__(self, parser, namespace, values, option_string=None):
        super().__call__(parser, namespace, values, option_string)
        _remember(namespace, self.dest)


def option_kind(name: str) -> tuple:
    """(the type of ``name``'s value, its choices or None), from its ``TrainConfig`` field."""
    if name in OTHER_OPTIONS:
        return OTHER_OPTIONS[name]
    default = {f.name: f.default for f in fields(TrainConfig)}[name]
    return (str if default is None else type(default)), OPTION_CHOICES.get(name)


def option_help(name: str, choices=None, note: str = "") -> str:
    """The help of option ``name``: its one definition, the meaning of each of ``choices``
    (None: all of them) where it has one, then ``note`` (what it means in this command)."""
    option = OPTIONS[name]
    text = option.help
    if option.about:
        offered = option_kind(name)[1] if choices is None else choices
        text += ". " + ". ".join(f"{c}: {about}" for c, about in option.about.items()
                                 if c in offered)
    return f"{text}; {note}" if note else text


def add_options(parser, names, *, defaults=None, notes=None, choices=None) -> None:
    """Add the options ``names`` (keys of ``OPTIONS``) to ``parser`` (or an argument group).

    Args:
        parser: an ``argparse`` parser or argument group.
        names: the options, in the order the help lists them.
        defaults: name -> this command's default, where it is not the
            ``TrainConfig`` field's (``preset``: None, ``no_progress``: False).
        notes: name -> what the option means in this command, after its help.
        choices: name -> the choices this command offers, where it offers fewer.
    """
    defaults, notes, choices = defaults or {}, notes or {}, choices or {}
    for name in names:
        kind, offered = option_kind(name)
        offered = tuple(choices.get(name, offered) or ()) or None
        text = option_help(name, offered, notes.get(name, ""))
        if name == "no_progress":   # a plain flag, no field: nothing to remember
            parser.add_argument(option_flag(name), action="store_true", help=text)
            continue
        default = defaults.get(name, getattr(TrainConfig, name, None))
        if kind is bool:
            parser.add_argument(option_flag(name), action=Switch, default=default, help=text)
        else:
            parser.add_argument(option_flag(name), action=Store, default=default,
                                type=positive_ints if kind is tuple else kind,
                                choices=offered, metavar=OPTIONS[name].metavar, help=text)


def config_values(args: argparse.Namespace, names) -> dict:
    """The values of the options ``names`` in ``args``, as ``TrainConfig`` fields.

    The warm-up is given in epochs or in steps: ``--warmup-steps`` given on
    the command line without ``--warmup-epochs`` sets ``warmup_epochs`` to 0
    (whatever the default or a preset says), so that it replaces the epochs'
    warm-up instead of being refused beside it.
    """
    values = {name: getattr(args, name) for name in names}
    if "warmup_steps" in given(args) and "warmup_epochs" not in given(args) \
            and "warmup_epochs" in values:
        values["warmup_epochs"] = 0   # the warm-up is given in steps instead
    return values
