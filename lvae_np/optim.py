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

from . import flat
from .backend import is_cupy, namespace, to_numpy


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


class FlatAdam:
    """In-place Adam over one flat buffer of all parameters: a handful of passes per step.

    The parameters, and Adam's two moments, live in one contiguous buffer
    each (``flat.py``); ``params`` is the usual dict, of views into the
    buffer, so the model reads it as before and sees every update. On a GPU
    (``whole_buffer``, the default for CuPy arrays) a step packs the
    gradients into one buffer (one concatenation) and runs ``adam_update_``
    once on the whole of it: 13 array operations, each a kernel launch,
    instead of 12 per parameter array. On a CPU the per-array update is
    faster, since each array stays in the cache through its twelve passes
    while twelve passes over the whole 7.6 MB buffer go to memory each time;
    there it runs ``adam_update_`` on the views. Either way the bits are
    those of Adam array by array (tested). With ``whole_buffer``, gradient
    clipping takes the norm of the whole buffer at once, which adds in
    another order than ``global_norm`` over the dict (equal to rounding).

        opt = FlatAdam(params, config=AdamConfig(lr=0.002))
        loss, grads, stats = model.loss_and_grads(opt.params, state, x)
        opt.step(grads)
        checkpoint.save(..., params=opt.params, opt_state=opt.state_dict())
    """

    def __init__(self, params: dict, state: dict | None = None,
                 config: AdamConfig = AdamConfig(), *, whole_buffer: bool | None = None):
        """Copy ``params`` (and a saved ``adam_init``-style ``state``) into flat buffers.

        ``whole_buffer``: update the whole buffer at once (True) or array by
        array through the views (False); None: at once for CuPy arrays only.
        """
        self.config = config
        self.layout = flat.layout(params)
        buffer = flat.pack(params, self.layout)
        xp = namespace(buffer)
        if state is None:
            m, v, t = xp.zeros_like(buffer), xp.zeros_like(buffer), 0
        else:
            m, v, t = (flat.pack(state["m"], self.layout), flat.pack(state["v"], self.layout),
                       state["t"])
        self._adopt(buffer, m, v, t, whole_buffer)

    def _adopt(self, buffer, m, v, t: int, whole_buffer: bool | None) -> None:
        """Take the three flat buffers (laid out as ``self.layout``) and the step count."""
        self.buffer, self.t = buffer, t
        self.params = flat.unpack(buffer, self.layout)
        self.moments = {"m": m, "v": v}  # the flat buffers; their per-parameter views below
        self.moment_views = {k: flat.unpack(b, self.layout) for k, b in self.moments.items()}
        self.whole_buffer = is_cupy(buffer) if whole_buffer is None else whole_buffer

    def step(self, grads: dict, max_grad_norm: float = 0.0, clip_value: float = 0.0) -> None:
        """One Adam step in place, on gradients clipped first (``clip_gradients``).

        Args:
            grads: one array per parameter, of its shape.
            max_grad_norm: clip the total norm to this first (0: no).
            clip_value: then clip each element to +-this (0: no).
        """
        if self.whole_buffer:
            params = {"all": self.buffer}
            grads = {"all": flat.pack(grads, self.layout)}
            state = {"t": self.t, "m": {"all": self.moments["m"]}, "v": {"all": self.moments["v"]}}
        else:
            params, state = self.params, {"t": self.t, **self.moment_views}
        adam_update_(params, clip_gradients(grads, max_grad_norm, clip_value), state, self.config)
        self.t = state["t"]

    def state_dict(self) -> dict:
        """Adam's state as ``adam_init`` makes it: step count and per-parameter moments (views)."""
        return {"t": self.t, **self.moment_views}

    def to_host(self) -> tuple:
        """(params, Adam state) as NumPy arrays, with one device-to-host copy per buffer.

        The same values as ``params`` and ``state_dict()``, for a checkpoint:
        the three flat buffers come over whole and are cut into per-parameter
        views on the host, instead of one copy per parameter array.
        """
        params, m, v = (flat.unpack(to_numpy(b), self.layout)
                        for b in (self.buffer, self.moments["m"], self.moments["v"]))
        return params, {"t": self.t, "m": m, "v": v}

    @classmethod
    def from_host(cls, params: dict, state: dict, asarray, config: AdamConfig = AdamConfig(),
                  *, whole_buffer: bool | None = None) -> "FlatAdam":
        """A FlatAdam from host arrays (a checkpoint's), with one host-to-device copy per buffer.

        Args:
            params, state: NumPy arrays as ``to_host`` gives them.
            asarray: moves one NumPy array to the device (``Backend.asarray``).
        """
        opt = cls.__new__(cls)
        opt.config, opt.layout = config, flat.layout(params)
        buffers = [asarray(flat.pack(tree, opt.layout)) for tree in (params, state["m"], state["v"])]
        opt._adopt(*buffers, state["t"], whole_buffer)
        return opt
