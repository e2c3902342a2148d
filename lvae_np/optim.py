"""Adam and gradient clipping, on dicts of arrays.

One signature for every rule, as in the course solvers, but without mutating
anything: ``params, opt_state = adam_update(params, grads, opt_state, config)``
returns new dicts.

Adam (Kingma and Ba, 2015) in the form of Lasagne's ``adam``, which the
original LVAE code used (the bias corrections are folded into the step size,
so eps sits outside them)::

    t   <- t + 1
    a_t  = lr * sqrt(1 - beta2^t) / (1 - beta1^t)
    m   <- beta1 * m + (1 - beta1) * g
    v   <- beta2 * v + (1 - beta2) * g^2
    w   <- w - a_t * m / (sqrt(v) + eps)

Defaults are the original code's: lr 0.002, betas 0.9 and 0.999, eps 1e-4.

Training runs the same step in place, on one flat buffer of all parameters
(``fast.FlatAdam``, ``fast.adam_update_``), with the same bits.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .backend import namespace


@dataclass(frozen=True)
class AdamConfig:
    lr: float = 0.002      # step size
    beta1: float = 0.9     # decay of the first-moment (mean) estimate
    beta2: float = 0.999   # decay of the second-moment estimate
    eps: float = 1e-4      # added to sqrt(v); large, as in the original code


def adam_init(params: dict) -> dict:
    """Adam's state for ``params``: step count 0 and zero moments."""
    return {"t": 0,
            "m": {k: namespace(v).zeros_like(v) for k, v in params.items()},
            "v": {k: namespace(v).zeros_like(v) for k, v in params.items()}}


def adam_update(params: dict, grads: dict, state: dict, config: AdamConfig = AdamConfig()):
    """One Adam step. Returns (new params, new state); the inputs are left as they were."""
    t = state["t"] + 1
    step = config.lr * math.sqrt(1.0 - config.beta2 ** t) / (1.0 - config.beta1 ** t)
    new_params, m_new, v_new = {}, {}, {}
    for k, w in params.items():
        xp = namespace(w)
        g = grads[k]
        m = config.beta1 * state["m"][k] + (1.0 - config.beta1) * g
        v = config.beta2 * state["v"][k] + (1.0 - config.beta2) * (g * g)
        new_params[k] = w - step * m / (xp.sqrt(v) + config.eps)
        m_new[k], v_new[k] = m, v
    return new_params, {"t": t, "m": m_new, "v": v_new}


def global_norm(grads: dict):
    """sqrt(sum over all arrays of sum g^2), as a 0-d array (no host sync)."""
    squares = [namespace(g).sum(g * g) for g in grads.values()]
    return namespace(squares[0]).sqrt(sum(squares[1:], squares[0]))


def clip_by_global_norm(grads: dict, max_norm: float):
    """Scale all gradients by min(1, max_norm / norm). Returns (clipped grads, norm before).

    Computed on the device, without a host sync: the scale is an array.
    """
    norm = global_norm(grads)
    xp = namespace(norm)
    scale = xp.minimum(max_norm / (norm + 1e-12), 1.0)
    return {k: g * scale for k, g in grads.items()}, norm


def clip_elementwise(grads: dict, value: float) -> dict:
    """Clip every gradient element to [-value, value], as the released LVAE code does after
    its norm clipping (``max(min(g, value), -value)``, element by element). Returns new arrays.
    """
    return {k: namespace(g).clip(g, -value, value) for k, g in grads.items()}


def clip_gradients(grads: dict, max_norm: float = 0.0, elementwise: float = 0.0) -> dict:
    """The released code's clipping, in its order: total norm to ``max_norm``, then each
    element to +-``elementwise`` (each step skipped when its value is 0).
    """
    if max_norm > 0:
        grads, _ = clip_by_global_norm(grads, max_norm)
    if elementwise > 0:
        grads = clip_elementwise(grads, elementwise)
    return grads
