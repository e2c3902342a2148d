"""The registry of gradient-check cases: each op, composite and whole model, by short name.

``python -m lvae_np.gradcheck [NAME...]`` checks them, and the test suite runs
the same cases on NumPy and on array_api_strict arrays (selecting them by
``case.module`` or ``case.kind``). A case builds well-conditioned inputs
with NumPy in float64 from a seed and moves them to the namespace asked for.

Well-conditioned means: away from the kinks of piecewise functions (leaky
ReLU at 0) and with batch statistics whose variance is not tiny against eps.

Names are typed on the command line, so they are one word, lower-case but
for a model's L, with hyphens: the op's name without ``_forward``
(``kl-normal``, ``gaussian-head``), a suffix for a variant
(``batchnorm-eval``, ``leaky-relu-0.3``, ``mlp-nobn``), ``-ll`` for the
log-likelihoods (``bernoulli-ll``). A whole model is
``{vae|lvae}-L{layers}-{bn|nobn}-`` and its objective: the KL estimator and
beta (``lvae-L3-bn-mc-beta0.5``), or ``iw{k}`` for the importance-weighted
bound (``vae-L2-nobn-iw3``). The longer ``title`` says the same in words.
Composites whose parameters come as dicts are built with ``composite_case``.

The cases check the plain forms of the ops, which a model runs by default
and a student checks; the fast forms of ``fast.py`` have cases of their own
(``gaussian-head-fused``, ``gaussian-head-fused-bn``, ``mlp-fast``), and
``model_case(..., fast_forms=True)`` builds a whole model on them (checked by
tests/test_fast_forms.py, not registered: the command line's table stays one screen).

To add a case, build it and register it; the command line and the tests then
check it::

    register(Case("my-op", my_op_forward, my_op_backward,
                  lambda rng: [rng.normal(size=(5, 4))], module="mymodule"))
"""
from __future__ import annotations

import difflib
from functools import partial

import numpy

from .. import blocks, bounds, fast, gaussian, likelihoods
from .. import layers as layer_ops  # "layers" is a count in model_case
from ..backend import get_backend, namespace
from ..blocks import BlockSettings
from ..models import Model, ModelConfig
from .builder import (  # noqa: F401  (KINDS, NAME and Case are part of the registry's interface)
    KINDS,
    MLP_SIZES,
    NAME,
    Case,
    composite_case,
    init_head_params,
    init_mlp_params,
    mlp_state,
    normal_input,
    running_averages,
    variances,
)
from .option_cases import OPTION_COMPOSITE_CASES, OPTION_STEP_CASES
from .step_cases import STEP_CASES

# ----------------------------------------------------------------------------
# The registry
# ----------------------------------------------------------------------------
CASES: list = []  # every registered Case, in the order the command line checks them


class UnknownCaseError(LookupError):
    """No case has the name asked for; the message names the close ones."""


def register(*cases: Case) -> None:
    """Add ``cases`` to the registry, after those already there.

    Raises:
        ValueError: a name is taken or is not one word of letters, digits,
            dots and hyphens, a kind is not one of KINDS, or ``uses`` names a
            case not registered before (so the registry's order is an order
            in which every case comes after those it uses).
    """
    for case in cases:
        unknown = [u for u in case.uses if u not in {c.name for c in CASES}]
        if unknown:
            raise ValueError(f"case {case.name!r} uses {', '.join(unknown)}: register "
                             "those first")
        if not NAME.fullmatch(case.name):
            raise ValueError(f"case name {case.name!r} must be one word of letters, digits, "
                             "'.' and '-'")
        if case.kind not in KINDS:
            raise ValueError(f"case {case.name!r}: kind {case.kind!r} is not one of {KINDS}")
        if any(c.name == case.name for c in CASES):
            raise ValueError(f"a case named {case.name!r} is already registered")
        CASES.append(case)


def find_case(name: str) -> Case:
    """The registered case called ``name`` (underscores read as hyphens: ``kl_normal``).

    Raises:
        UnknownCaseError: none is; its one-line message lists the names that
            contain ``name`` or are spelled like it.
    """
    known = [c.name for c in CASES]
    for wanted in (name, name.replace("_", "-")):
        if wanted in known:
            return CASES[known.index(wanted)]
    close = [k for k in known if name.lower() in k.lower()]
    close += [k for k in difflib.get_close_matches(name, known, n=5, cutoff=0.6)
              if k not in close]
    if close:
        raise UnknownCaseError(f"unknown op {name!r} (close: {', '.join(close[:6])})")
    raise UnknownCaseError(f"unknown op {name!r}: no registered name is close")


# ----------------------------------------------------------------------------
# Input builders
# ----------------------------------------------------------------------------
def _away_from_zero(rng, shape, low=0.1, high=2.0):
    return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(low, high, size=shape)


def _gaussians(rng, count, shape=(5, 4)):
    # count (mean, variance) pairs, flattened: [mu_1, var_1, mu_2, var_2, ...]
    return [a for _ in range(count) for a in (rng.normal(size=shape), variances(rng, shape))]


def _batchnorm_with_fixed_state(x, gamma, beta):
    # Evaluation mode normalises with these statistics.
    xp = namespace(x)
    ((mean, var),) = running_averages([x.shape[1]])
    state = layer_ops.BNState(xp.asarray(mean, dtype=x.dtype), xp.asarray(var, dtype=x.dtype))
    return layer_ops.batchnorm_forward(x, gamma, beta, state=state, training=False)


# ----------------------------------------------------------------------------
# The ops
# ----------------------------------------------------------------------------
def _binary_x_and_logits(rng):
    return [rng.integers(0, 2, size=(5, 4)).astype(float), rng.normal(0.0, 3.0, (5, 4))]


def _real_x_and_logits(rng):
    return [rng.uniform(0.0, 1.0, (5, 4)), rng.normal(0.0, 3.0, (5, 4))]


register(
    Case("dense", layer_ops.dense_forward, layer_ops.dense_backward,
         lambda rng: [rng.normal(size=(5, 4)), rng.normal(size=(4, 3)), rng.normal(size=3)],
         module="layers", title="dense layer, out = x W + b", points=3),
    Case("batchnorm", partial(layer_ops.batchnorm_forward, training=True),
         layer_ops.batchnorm_backward,
         lambda rng: [rng.normal(1.0, 2.0, size=(8, 4)), rng.uniform(0.5, 2.0, 4),
                      rng.normal(size=4)],
         module="layers", title="batch norm, training mode (batch statistics)",
         names=("x", "gamma", "beta"), points=5),
    Case("batchnorm-eval", _batchnorm_with_fixed_state, layer_ops.batchnorm_backward,
         lambda rng: [rng.normal(size=(6, 4)), rng.uniform(0.5, 2.0, 4), rng.normal(size=4)],
         module="layers", title="batch norm, evaluation mode (running averages)"),
    Case("leaky-relu", layer_ops.leaky_relu_forward, layer_ops.leaky_relu_backward,
         lambda rng: [_away_from_zero(rng, (5, 4))],
         module="layers", title=f"leaky ReLU, slope {layer_ops.LEAKY_RELU_SLOPE:g}"),
    Case("leaky-relu-0.3", partial(layer_ops.leaky_relu_forward, slope=0.3),
         layer_ops.leaky_relu_backward, lambda rng: [_away_from_zero(rng, (5, 4))],
         module="layers", title="leaky ReLU, slope 0.3", names=("x",), points=1),
    Case("softplus", layer_ops.softplus_forward, layer_ops.softplus_backward,
         lambda rng: [rng.normal(0.0, 3.0, size=(5, 4))],
         module="layers", title="softplus, log(1 + e^x)"),
    Case("sigmoid", layer_ops.sigmoid_forward, layer_ops.sigmoid_backward,
         lambda rng: [rng.normal(0.0, 3.0, size=(5, 4))],
         module="layers", title="sigmoid, 1 / (1 + e^-x)"),
    Case("log-sigmoid", layer_ops.log_sigmoid_forward, layer_ops.log_sigmoid_backward,
         lambda rng: [rng.normal(0.0, 3.0, size=(5, 4))],
         module="layers", title="log-sigmoid, -log(1 + e^-x)"),
    Case("reparameterize", gaussian.reparameterize_forward, gaussian.reparameterize_backward,
         lambda rng: [rng.normal(size=(5, 4)), variances(rng), rng.normal(size=(5, 4))],
         module="gaussian", title="z = mu + sqrt(var) eps"),
    Case("merge", gaussian.merge_forward, gaussian.merge_backward,
         lambda rng: _gaussians(rng, 2),
         module="gaussian", title="precision-weighted merge of two Gaussians", points=5),
    Case("kl-normal", gaussian.kl_normal_forward, gaussian.kl_normal_backward,
         lambda rng: _gaussians(rng, 2),
         module="gaussian", title="KL(N(mu_q, var_q) || N(mu_p, var_p)), diagonal", points=4),
    Case("kl-standard-normal", gaussian.kl_standard_normal_forward,
         gaussian.kl_standard_normal_backward, lambda rng: _gaussians(rng, 1),
         module="gaussian", title="KL(N(mu, var) || N(0, I))",
         uses=("kl-normal",)),  # it runs the general KL against N(0, I)
    Case("log-normal", gaussian.log_normal_forward, gaussian.log_normal_backward,
         lambda rng: [rng.normal(size=(5, 4))] + _gaussians(rng, 1),
         module="gaussian", title="log N(z; mu, var)"),
    Case("kl-sample", gaussian.kl_sample_forward, gaussian.kl_sample_backward,
         lambda rng: [rng.normal(size=(5, 4))] + _gaussians(rng, 2),
         module="gaussian", title="single-sample KL estimate, log q(z) - log p(z)",
         uses=("log-normal",)),
    Case("bernoulli-ll", likelihoods.bernoulli_log_likelihood_forward,
         likelihoods.bernoulli_log_likelihood_backward, _binary_x_and_logits,
         module="likelihoods", title="Bernoulli log-likelihood from logits, binary x",
         names=("x", "logits")),
    Case("bernoulli-ll-real", likelihoods.bernoulli_log_likelihood_forward,
         likelihoods.bernoulli_log_likelihood_backward, _real_x_and_logits,
         module="likelihoods", title="Bernoulli log-likelihood from logits, x in [0, 1]",
         names=("x", "logits"), points=1),
    Case("gaussian-ll", likelihoods.gaussian_log_likelihood_forward,
         likelihoods.gaussian_log_likelihood_backward,
         lambda rng: [rng.normal(size=(5, 4))] + _gaussians(rng, 1),
         module="likelihoods", title="Gaussian log-likelihood, log N(x; mu, var)",
         uses=("log-normal",)),
    Case("logmeanexp", bounds.logmeanexp_forward, bounds.logmeanexp_backward,
         lambda rng: [rng.normal(0.0, 2.0, size=(4, 5))],
         module="bounds", title="log-mean-exp over k = 4 samples (the importance-weighted bound)",
         points=3),
)


# ----------------------------------------------------------------------------
# The composites of blocks.py
# ----------------------------------------------------------------------------
def _mlp_forward(batch_norm: bool, training: bool, forms=blocks.PLAIN):
    """mlp_forward with its settings bound and, with batch norm, a fixed state."""
    def forward(x, p):
        state = mlp_state(x) if batch_norm else None
        return blocks.mlp_forward(x, p, state=state,
                                  settings=BlockSettings(batch_norm=batch_norm, training=training,
                                                         forms=forms))

    return forward


def _gaussian_block_forward(h, block, head):
    return blocks.gaussian_block_forward(h, block, head, state=mlp_state(h),
                                         settings=BlockSettings(batch_norm=True, training=True))


register(
    composite_case("mlp", _mlp_forward(True, True), blocks.mlp_backward, normal_input((6, 5)),
                   {"p": init_mlp_params(True)}, names=("x",),
                   title="MLP block, Dense -> BatchNorm -> leaky ReLU twice, training mode",
                   uses=("dense", "batchnorm", "leaky-relu"), points=3),
    composite_case("mlp-eval", _mlp_forward(True, False), blocks.mlp_backward, normal_input((6, 5)),
                   {"p": init_mlp_params(True)}, names=("x",),
                   title="MLP block with batch norm, evaluation mode (running averages)",
                   uses=("dense", "batchnorm-eval", "leaky-relu")),
    composite_case("mlp-nobn", _mlp_forward(False, True), blocks.mlp_backward, normal_input((6, 5)),
                   {"p": init_mlp_params(False)}, names=("x",),
                   title="MLP block without batch norm, Dense (with bias) -> leaky ReLU twice",
                   uses=("dense", "leaky-relu")),
    composite_case("gaussian-head", blocks.gaussian_head_forward,
                   blocks.gaussian_head_backward, normal_input((7, 5)), {"p": init_head_params(5, 3)},
                   names=("h",),
                   title="Gaussian head, two dense layers: mu = h W_mu + b_mu, "
                         "var = softplus(h W_var + b_var)",
                   uses=("dense", "softplus")),
    composite_case("gaussian-head-fused", fast.gaussian_head_forward,
                   fast.gaussian_head_backward, normal_input((7, 5)),
                   {"p": init_head_params(5, 3)}, names=("h",), module="fast",
                   title="the Gaussian head's fast form, one product h [W_mu | W_var]",
                   uses=("dense", "softplus")),
    composite_case("gaussian-block", _gaussian_block_forward, blocks.gaussian_block_backward,
                   normal_input((6, 5)), {"block": init_mlp_params(True), "head": init_head_params(MLP_SIZES[-1], 2)},
                   names=("h",), title="Gaussian block, an MLP block then a Gaussian head",
                   uses=("mlp", "gaussian-head")),
    composite_case("mlp-fast", _mlp_forward(True, True, fast.FAST), blocks.mlp_backward,
                   normal_input((6, 5)), {"p": init_mlp_params(True)}, names=("x",),
                   module="fast", uses=("dense", "batchnorm", "leaky-relu"), course=False,
                   title="MLP block with the fast forms of the leaky ReLU's and batch norm's "
                         "forward passes, training mode"),
    Case("tile-rows", partial(blocks.tile_rows_forward, k=3), blocks.tile_rows_backward,
         normal_input((4, 3)), module="blocks", kind="composite",
         title="row tiling, k = 3 copies of each row", points=1),
    Case("tile-rows-k1", partial(blocks.tile_rows_forward, k=1), blocks.tile_rows_backward,
         normal_input((4, 3)), module="blocks", kind="composite",
         title="row tiling, k = 1 (the input itself)", points=1),
)


register(*OPTION_COMPOSITE_CASES)  # the batch-normalised head (option_cases.py)
register(*STEP_CASES)  # the models' steps (steps.py), before the whole models
register(*OPTION_STEP_CASES)  # the unshared ladder step of variants.py (option_cases.py)


# ----------------------------------------------------------------------------
# Whole models, end to end
# ----------------------------------------------------------------------------
OPTION_TAGS = {  # ModelConfig option -> (its value in the case, the tag in the case's name)
    "head_batch_norm": (True, "headbn"),
    "shared_top_down": (False, "unshared"),
    "only_mu_up": (True, "muup"),
    "generative_widths": ("original", "widths"),
}


def model_case(kind: str, layers: int, batch_norm: bool, kl: str, beta: float,
               iw: int = 1, *, fast_forms: bool = False, **options) -> Case:
    """A whole VAE or LVAE as one op: parameters in, per-example objective out.

    The inputs are the parameter arrays (sorted by key), perturbed off the
    initialisation; x, the state and the noise are fixed. With ``iw`` > 1 the
    output is the importance-weighted bound L_iw per example (MC KL, the
    log-mean-exp of iw samples each). The step is 1e-5: with a batch of four,
    batch norm's higher derivatives are large enough that h = 1e-4 shows the
    h^4 truncation error.

    Args:
        kind: ``"vae"`` or ``"lvae"``.
        layers: number of stochastic layers, 1 to 3.
        batch_norm: whether the blocks have batch norm.
        kl: the KL estimator, ``"mc"`` or ``"analytic"`` (with ``iw`` = 1).
        beta: the KL's weight (with ``iw`` = 1).
        iw: importance samples per example.
        fast_forms: the model runs the fast forms of the ops (``Model(fast=True)``;
            ``-fast`` in the name; not part of the course's grading).
        options: ModelConfig fields of the original code's options, each
            tagged in the name: ``head_batch_norm=True`` (``-headbn``),
            ``shared_top_down=False`` (``-unshared``), ``only_mu_up=True``
            (``-muup``), ``generative_widths="original"`` (``-widths``),
            ``bn_eps`` (``-eps1e-10``).

    Returns:
        a Case named like ``lvae-L3-bn-mc-beta0.5`` or ``vae-L2-nobn-iw3``,
        or with options ``lvae-L3-bn-analytic-beta0.5-unshared``.
    """
    cfg = ModelConfig(kind=kind, x_dim=6, latent=(3, 2, 2)[:layers],
                      hidden=(5, 4, 3)[:layers], batch_norm=batch_norm, **options)
    model = Model(cfg, get_backend("numpy", dtype="float64", seed=layers), fast=fast_forms)
    params, state = model.init()
    keys = sorted(params)
    rng = numpy.random.default_rng(100 + layers)
    n = 4
    x = rng.uniform(size=(n, cfg.x_dim))
    noise = [rng.normal(size=(iw * n, d)) for d in cfg.latent]
    start = [params[k] + 0.1 * rng.normal(size=params[k].shape) for k in keys]

    def forward(*arrays):
        xp = namespace(arrays[0])
        p = dict(zip(keys, arrays))
        outputs, cache = model.forward(p, {k: xp.asarray(v) for k, v in state.items()},
                                       xp.asarray(x), [xp.asarray(e) for e in noise],
                                       beta=beta, kl=kl, k=iw)
        f = outputs.f
        if iw == 1:
            return f, (cache, None)
        bound, c_lme = bounds.logmeanexp_forward(xp.reshape(f, (iw, n)))
        return bound, (cache, c_lme)

    def backward(dout, caches):
        cache, c_lme = caches
        if c_lme is not None:
            xp = namespace(dout)
            (dlw,) = bounds.logmeanexp_backward(dout, c_lme)
            dout = xp.reshape(dlw, (iw * n,))
        grads = model.backward(dout, cache)
        return tuple(grads[k] for k in keys)

    bn = "bn" if batch_norm else "nobn"
    objective = f"iw{iw}" if iw > 1 else f"{kl}-beta{beta:g}"
    title = (f"{kind.upper()}, {layers} stochastic layer{'s' if layers > 1 else ''}, "
             f"{'batch norm' if batch_norm else 'no batch norm'}, "
             + (f"IWAE bound k = {iw}" if iw > 1 else f"KL {kl}, beta = {beta:g}"))
    tags = [OPTION_TAGS[k][1] for k in OPTION_TAGS if k in options]
    tags += [f"eps{options['bn_eps']:g}"] if "bn_eps" in options else []
    tags += ["fast"] if fast_forms else []
    title += "".join(f", {k} = {v}" for k, v in options.items())
    title += ", the fast forms of the ops" if fast_forms else ""
    uses = model_uses(kind, batch_norm, kl if iw == 1 else "mc", iw)
    if options.get("head_batch_norm"):
        uses += ("gaussian-head-bn",)
    if kind == "lvae" and options.get("shared_top_down") is False:
        uses += ("unshared-ladder-step" if kl == "analytic" and iw == 1 else
                 "unshared-ladder-step-mc",)
    if fast_forms:
        uses += (("mlp-fast",) if batch_norm else ()) + ("gaussian-head-fused",)
        uses += ("gaussian-head-fused-bn",) if options.get("head_batch_norm") else ()
    return Case("-".join([f"{kind}-L{layers}-{bn}-{objective}"] + tags), forward, backward,
                lambda rng: [a.copy() for a in start], module="models", kind="model",
                title=title, names=tuple(keys), step=1e-5, uses=uses,
                course=not options and not fast_forms)


def model_uses(kind: str, batch_norm: bool, kl: str, iw: int = 1) -> tuple:
    """The cases a whole model is built on: its steps, or (without batch norm) their ops.

    The steps are registered with batch norm; a model without it is built on
    the ops its steps call without batch norm (so a wrong batch norm blocks
    only the models that have it).
    """
    top = "top-step" if kl == "analytic" else "top-step-mc"
    if batch_norm:
        uses = ["bottom-up-step", "output-step"]
        uses += ([top, "ladder-step" if kl == "analytic" else "ladder-step-mc"]
                 if kind == "lvae" else
                 ["vae-step", "vae-kl-step", "reparameterize",
                  "kl-standard-normal" if kl == "analytic" else "kl-sample"])
    else:
        uses = ["mlp-nobn", "gaussian-head", "dense", "bernoulli-ll", "reparameterize",
                "kl-normal" if kl == "analytic" else "kl-sample"]
        uses += [top, "merge"] if kind == "lvae" else []
    return tuple(uses) + (("tile-rows", "logmeanexp") if iw > 1 else ())


register(*[model_case(kind, 3, True, kl, 0.5) for kind in ("vae", "lvae")
            for kl in ("mc", "analytic")])
register(*[model_case(kind, 2, bn, "mc", 1.0, iw=3) for kind in ("vae", "lvae")
            for bn in (True, False)])
register(  # the original code's options, each alone, then all at once
    model_case("lvae", 3, True, "mc", 0.5, head_batch_norm=True),
    model_case("vae", 2, True, "mc", 0.5, head_batch_norm=True),
    model_case("lvae", 3, True, "analytic", 0.5, shared_top_down=False),
    model_case("lvae", 3, True, "mc", 0.5, only_mu_up=True),
    model_case("lvae", 3, True, "analytic", 0.5, generative_widths="original"),
    model_case("lvae", 2, True, "mc", 0.5, bn_eps=1e-10),
    model_case("lvae", 3, False, "mc", 0.5, head_batch_norm=True, shared_top_down=False,
               only_mu_up=True, generative_widths="original"),
)
