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


def adam_update_(params: dict, grads: dict, state: dict, config: AdamConfig = AdamConfig()):
    """The same step as ``adam_update``, bit for bit, but in place.

    Parameters and moments are updated where they lie, with in-place
    operators (part of the array API) and four temporary arrays per
    parameter instead of eight. For a training loop that owns its arrays;
    returns (params, state) for symmetry.
    """
    t = state["t"] + 1
    state["t"] = t
    step = config.lr * math.sqrt(1.0 - config.beta2 ** t) / (1.0 - config.beta1 ** t)
    for k, w in params.items():
        xp = namespace(w)
        g, m, v = grads[k], state["m"][k], state["v"][k]
        m *= config.beta1                  # m = beta1 m + (1 - beta1) g
        m += g * (1.0 - config.beta1)
        g2 = g * g                         # v = beta2 v + (1 - beta2) g^2
        g2 *= 1.0 - config.beta2
        v *= config.beta2
        v += g2
        denom = xp.sqrt(v)                 # w = w - step m / (sqrt(v) + eps)
        denom += config.eps
        update = m * step
        update /= denom
        w -= update
    return params, state


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
