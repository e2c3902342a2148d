"""Gradient-check cases of the original code's options: batch-normalised head, unshared step.

The unshared ladder step is ``variants.py``'s; the head's batch norm is an
option of ``blocks.gaussian_head_forward`` (and of its fast twin,
``fast.gaussian_head_forward``).

``cases.py`` registers ``OPTION_COMPOSITE_CASES`` after the other
composites and ``OPTION_STEP_CASES`` after the other steps, so the
registry's order stays ops, composites, steps, models; the whole models
with the options are registered there too (``model_case``'s ``options``).
Sizes as in ``step_cases``: a block 5 -> 4 -> 3, latent layers of 2 units,
6 rows.
"""
from __future__ import annotations

import numpy

from .. import blocks, fast, variants
from ..backend import namespace
from ..blocks import BlockSettings
from .builder import (
    composite_case,
    init_head_params,
    init_mlp_params,
    mlp_state,
    normal_input,
    variances,
)
from .step_cases import D, D_ABOVE, FEATURES, ROWS, SETTINGS

HEAD_IN, HEAD_OUT = 5, 3  # the batch-normalised head's input and output widths


def init_bn_head_params(d_in: int, d_out: int):
    return lambda rng: blocks.init_gaussian_head(rng, d_in, d_out, xp=numpy,
                                                   dtype=numpy.float64, batch_norm=True)


def head_state(like, width: int) -> dict:
    """A fixed, seeded running state of a batch-normalised head of ``width`` units."""
    xp = namespace(like)
    rng = numpy.random.default_rng(4321)
    values = {"mean_mu": rng.normal(size=width), "var_mu": rng.uniform(0.5, 2.0, width),
              "mean_var": rng.normal(size=width), "var_var": rng.uniform(0.5, 2.0, width)}
    return {k: xp.asarray(v, dtype=like.dtype) for k, v in values.items()}


def ladder_inputs(rng):
    """z_{i+1} (ROWS, D_ABOVE), then layer i's mu_hat, var_hat and eps (ROWS, D)."""
    return [rng.normal(size=(ROWS, D_ABOVE)), rng.normal(size=(ROWS, D)),
            variances(rng, (ROWS, D)), rng.normal(size=(ROWS, D))]


def _head_bn(training: bool, module=blocks):
    """``module.gaussian_head_forward`` (blocks' or fast's) on a fixed state, looked up when called."""
    def forward(h, p):
        return module.gaussian_head_forward(h, p, state=head_state(h, HEAD_OUT),
                                            settings=BlockSettings(training=training,
                                                                   momentum=0.1))
    return forward


def _unshared_ladder_step(estimator):
    def forward(z_above, mu_hat, var_hat, eps, td_block, td_head, block, head):
        return variants.unshared_ladder_step_forward(
            z_above, mu_hat, var_hat, eps, td_block, td_head, block, head,
            td_state=mlp_state(z_above), state=mlp_state(z_above), settings=SETTINGS,
            estimator=estimator)
    return forward


HEAD_BN = {"p": init_bn_head_params(HEAD_IN, HEAD_OUT)}
TWO_BLOCKS = {"td_block": init_mlp_params(True), "td_head": init_head_params(FEATURES, D),
              "block": init_mlp_params(True), "head": init_head_params(FEATURES, D)}
LADDER_NAMES = ("z_above", "mu_hat", "var_hat", "eps")
# The unshared step: its top-down Gaussian block, the merge and the sample, then the VAE's KL step.
UNSHARED_USES = ("gaussian-block", "merge", "reparameterize", "vae-kl-step")

OPTION_COMPOSITE_CASES = [
    composite_case("gaussian-head-bn", _head_bn(True), blocks.gaussian_head_backward,
                   normal_input((ROWS, HEAD_IN)), HEAD_BN, names=("h",),
                   uses=("dense", "batchnorm", "softplus"),
                   title="Gaussian head with batch norm: Dense -> BN -> (identity, softplus)",
                   course=False),
    composite_case("gaussian-head-bn-eval", _head_bn(False), blocks.gaussian_head_backward,
                   normal_input((ROWS, HEAD_IN)), HEAD_BN, names=("h",),
                   uses=("dense", "batchnorm-eval", "softplus"), points=1,
                   title="Gaussian head with batch norm, evaluation mode (running averages)",
                   course=False),
    composite_case("gaussian-head-fused-bn", _head_bn(True, fast),
                   fast.gaussian_head_backward, normal_input((ROWS, HEAD_IN)), HEAD_BN,
                   names=("h",), module="fast", uses=("dense", "batchnorm", "softplus"),
                   title="the fast Gaussian head with batch norm: one product, one batch norm "
                         "over both halves", course=False),
]

OPTION_STEP_CASES = [
    composite_case("unshared-ladder-step", _unshared_ladder_step("analytic"),
                   variants.unshared_ladder_step_backward, ladder_inputs, TWO_BLOCKS,
                   names=LADDER_NAMES, module="variants", uses=UNSHARED_USES + ("kl-normal",),
                   points=3, title="LVAE ladder step with its own top-down block: merge with "
                                   "tp(tdown(z_{i+1})), KL against p(z_i | z_{i+1})",
                   course=False),
    composite_case("unshared-ladder-step-mc", _unshared_ladder_step("mc"),
                   variants.unshared_ladder_step_backward, ladder_inputs, TWO_BLOCKS,
                   names=LADDER_NAMES, module="variants", uses=UNSHARED_USES + ("kl-sample",),
                   title="unshared LVAE ladder step with the single-sample KL", course=False),
]
