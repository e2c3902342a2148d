"""Gradient-check cases for the models' steps (``lvae_np/steps.py``): one layer of each pass.

Each step takes arrays, then the dicts of one MLP block and one head; the
block is the one of ``case.MLP_SIZES`` (5 -> 4 -> 3) with batch norm in
training mode, so its input has 5 columns and its features 3. Latent layers
have 2 units; every array has 6 rows. ``cases.py`` registers ``STEP_CASES``.
"""
from __future__ import annotations

from functools import partial

import numpy

from .. import steps
from ..blocks import BlockSettings
from .builder import (
    MLP_SIZES,
    Case,
    composite_case,
    init_head_params,
    init_mlp_params,
    mlp_state,
    normal_input,
    variances,
)

ROWS, D_ABOVE, D = 6, MLP_SIZES[0], 2  # rows; the block's input width; a layer's units
FEATURES = MLP_SIZES[-1]                # the block's output width, the head's input
SETTINGS = BlockSettings(batch_norm=True, training=True, momentum=0.1, slope=0.01)


def _bottom_up_step(d_below, block, head):
    return steps.bottom_up_step_forward(d_below, block, head, state=mlp_state(d_below), settings=SETTINGS)


def _ladder_step(estimator):
    def forward(z_above, mu_hat, var_hat, eps, block, head):
        return steps.ladder_step_forward(z_above, mu_hat, var_hat, eps, block, head,
                                         state=mlp_state(z_above), settings=SETTINGS,
                                         estimator=estimator)
    return forward


def _vae_step(z_below, eps, block, head):
    return steps.vae_step_forward(z_below, eps, block, head, state=mlp_state(z_below), settings=SETTINGS)


def _vae_kl_step(z, mu_q, var_q, z_above, block, head):
    return steps.vae_kl_step_forward(z, mu_q, var_q, z_above, block, head,
                                     state=mlp_state(z_above), settings=SETTINGS)


def _output_step(likelihood):
    def forward(z1, x, block, head):
        return steps.output_step_forward(z1, x, block, head, state=mlp_state(z1), settings=SETTINGS,
                                         likelihood=likelihood)
    return forward


def _dense_head(rng):
    return {"W": rng.normal(size=(FEATURES, 4)) * 0.5, "b": numpy.zeros(4)}


def _rows(width):
    return (ROWS, width)


def _ladder_inputs(rng):
    # z_{i+1}, then layer i's mu_hat, var_hat and eps
    return [rng.normal(size=_rows(D_ABOVE)), rng.normal(size=_rows(D)),
            variances(rng, _rows(D)), rng.normal(size=_rows(D))]


def _vae_kl_inputs(rng):
    # z_i, q's mu and var, z_{i+1}
    return [rng.normal(size=_rows(D)), rng.normal(size=_rows(D)), variances(rng, _rows(D)),
            rng.normal(size=_rows(D_ABOVE))]


def _binary_x(rng):
    return [rng.normal(size=_rows(D_ABOVE)), (rng.random(_rows(4)) < 0.5).astype(float)]


def _real_x(rng):
    return [rng.normal(size=_rows(D_ABOVE)), rng.normal(size=_rows(4))]


# The ladder step: the prior's Gaussian block, the merge and the sample, then a KL.
LADDER_USES = ("gaussian-block", "merge", "reparameterize")
BLOCK_AND_HEAD = {"block": init_mlp_params(True), "head": init_head_params(FEATURES, D)}

STEP_CASES = [
    composite_case("bottom-up-step", _bottom_up_step, steps.bottom_up_step_backward,
                   normal_input(_rows(D_ABOVE)), BLOCK_AND_HEAD, names=("d_below",),
                   module="steps", uses=("mlp", "gaussian-head"), points=3,
                   title="bottom-up step: d_i = MLP(d_{i-1}), (mu_hat_i, var_hat_i) = head(d_i)"),
    composite_case("ladder-step", _ladder_step("analytic"), steps.ladder_step_backward,
                   _ladder_inputs, BLOCK_AND_HEAD, names=("z_above", "mu_hat", "var_hat", "eps"),
                   module="steps", uses=LADDER_USES + ("kl-normal",), points=5,
                   title="LVAE ladder step: prior from z_{i+1}, merge, sample z_i, closed-form KL"),
    composite_case("ladder-step-mc", _ladder_step("mc"), steps.ladder_step_backward,
                   _ladder_inputs, BLOCK_AND_HEAD, names=("z_above", "mu_hat", "var_hat", "eps"),
                   module="steps", uses=LADDER_USES + ("kl-sample",), points=3,
                   title="LVAE ladder step with the single-sample KL"),
    Case("top-step", partial(steps.top_step_forward, estimator="analytic"),
         steps.top_step_backward,
         lambda rng: [rng.normal(size=_rows(D)), variances(rng, _rows(D)),
                      rng.normal(size=_rows(D))],
         module="steps", kind="composite", names=("mu_q", "var_q", "eps"),
         uses=("reparameterize", "kl-standard-normal"),
         title="top layer: z_L ~ q(z_L | x), closed-form KL against N(0, I)"),
    Case("top-step-mc", partial(steps.top_step_forward, estimator="mc"), steps.top_step_backward,
         lambda rng: [rng.normal(size=_rows(D)), variances(rng, _rows(D)),
                      rng.normal(size=_rows(D))],
         module="steps", kind="composite", names=("mu_q", "var_q", "eps"),
         uses=("reparameterize", "kl-sample"),
         title="top layer with the single-sample KL against N(0, I)"),
    composite_case("vae-step", _vae_step, steps.vae_step_backward,
                   lambda rng: [rng.normal(size=_rows(D_ABOVE)), rng.normal(size=_rows(D))],
                   BLOCK_AND_HEAD, names=("z_below", "eps"), module="steps",
                   uses=("gaussian-block", "reparameterize"), points=3,
                   title="VAE step: q(z_i | z_{i-1}) and its sample z_i"),
    composite_case("vae-kl-step", _vae_kl_step, steps.vae_kl_step_backward, _vae_kl_inputs,
                   BLOCK_AND_HEAD, names=("z", "mu_q", "var_q", "z_above"), module="steps",
                   uses=("gaussian-block", "kl-sample"), points=3,
                   title="VAE KL step: log q(z_i | z_{i-1}) - log p(z_i | z_{i+1})"),
    composite_case("output-step", _output_step("bernoulli"), steps.output_step_backward,
                   _binary_x, {"block": init_mlp_params(True), "head": _dense_head},
                   names=("z1", "x"), module="steps", uses=("mlp", "dense", "bernoulli-ll"),
                   points=3, title="output layer: log p(x | z_1), Bernoulli from logits"),
    composite_case("output-step-gaussian", _output_step("gaussian"), steps.output_step_backward,
                   _real_x, {"block": init_mlp_params(True), "head": init_head_params(FEATURES, 4)},
                   names=("z1", "x"), module="steps",
                   uses=("mlp", "gaussian-head", "gaussian-ll"),
                   title="output layer: log p(x | z_1), Gaussian"),
]
