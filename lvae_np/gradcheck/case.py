"""What a gradient-check case is, and the builders of its inputs: shared by every case module.

A ``Case`` bundles an op's forward and backward with a seeded maker of
well-conditioned float64 inputs; ``composite_case`` turns an op whose
parameters come as dicts (a block, a head, a model's step) into one. The
registry itself is ``cases.py``.
"""
from __future__ import annotations

import re
from dataclasses import KW_ONLY, dataclass
from typing import Callable

import numpy

from .. import networks
from ..backend import namespace
from .engine import (
    DEFAULT_STEP,
    DEFAULT_TOL,
    GradcheckReport,
    argument_names,
    check_gradients,
    with_positional_params,
)

KINDS = ("op", "composite", "model")
NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9.-]*")  # one word on a command line


@dataclass(frozen=True)
class Case:
    """One forward/backward pair to check, with the inputs to check it at.

    Attributes:
        name: short and unique, typed on the command line (``batchnorm-eval``).
        forward: ``forward(*inputs) -> (out, cache)``, its settings bound.
        backward: ``backward(dout, cache) -> grads``, one per input, same order.
        make_inputs: ``rng -> list`` of float64 NumPy arrays, the inputs.
        module: the lvae_np module the pair comes from (``"layers"``).
        kind: ``"op"``, ``"composite"`` (built from ops, such as the blocks of
            networks.py; parameters as dicts) or ``"model"`` (a whole VAE or LVAE).
        title: what is checked, in words (shown by ``--list -v``).
        names: argument names shown in reports (default: forward's parameter names).
        step: finite-difference step.
    """

    name: str
    forward: Callable
    backward: Callable
    make_inputs: Callable
    _: KW_ONLY
    module: str
    kind: str = "op"
    title: str = ""
    names: tuple = ()
    step: float = DEFAULT_STEP

    def inputs(self, seed: int = 0, xp=numpy) -> list:
        """The inputs for ``seed``, as float64 arrays of namespace ``xp``."""
        rng = numpy.random.default_rng(seed)
        return [xp.asarray(a, dtype=xp.float64) for a in self.make_inputs(rng)]

    def input_names(self) -> list:
        """The name of each input, as the reports show them."""
        return list(self.names) or argument_names(self.forward, len(self.inputs()))

    def check(self, seed: int = 0, tol: float = DEFAULT_TOL, xp=numpy,
              max_elements: int | None = None) -> GradcheckReport:
        """Gradient-check the case at ``self.inputs(seed, xp)``.

        Args:
            seed: seed of the inputs and of the upstream gradient.
            tol: largest acceptable relative error.
            xp: the array namespace to check on (NumPy, CuPy, array_api_strict).
            max_elements: check at most this many elements of each input.

        Returns:
            the GradcheckReport (see ``check_gradients``).
        """
        return check_gradients(self.forward, self.backward, self.inputs(seed, xp),
                               names=self.names or None, op=self.name, tol=tol, seed=seed,
                               h=self.step, max_elements=max_elements)


# ----------------------------------------------------------------------------
# Input builders
# ----------------------------------------------------------------------------
def normal_input(shape):
    """rng -> [x], one standard-normal input of ``shape``."""
    return lambda rng: [rng.normal(size=shape)]


def variances(rng, shape=(5, 4)):
    # Variances well above gaussian.VAR_FLOOR, so the floor is never near.
    return rng.uniform(0.5, 2.0, size=shape)


def running_averages(dims) -> list:
    """A fixed, seeded batch-norm state per layer width: (mean, var) NumPy pairs."""
    rng = numpy.random.default_rng(1234)
    return [(rng.normal(size=d), rng.uniform(0.5, 2.0, d)) for d in dims]


MLP_SIZES = (5, 4, 3)  # the MLP block's widths (in, h1, h2)


def composite_case(name: str, forward: Callable, backward: Callable, make_arrays: Callable,
                   params: dict, *, names: tuple, module: str = "networks",
                   title: str = "") -> Case:
    """An op taking arrays, then dicts of parameters (a block, a head, a step), as a case.

    Args:
        name: as in Case.
        forward: ``forward(*arrays, *dicts) -> (out, cache)``, its settings bound.
        backward: ``backward(dout, cache) -> (*array_grads, *dict_grads)``.
        make_arrays: ``rng -> list`` of the plain arrays (NumPy float64).
        params: for each dict in order, its argument's name -> ``init(rng)``,
            the dict at initialisation (NumPy float64 arrays).
        names: the plain arrays' names.
        module: as in Case.
        title: as in Case.

    Returns:
        a Case whose inputs are the arrays, then each dict's parameters in
        sorted key order, moved off their initial values by N(0, 0.2^2) noise
        (biases and beta start at zero, gamma at one: too special a point to
        check at). A parameter's name in reports is its key, with its dict's
        name in front (``head.W_mu``) when there are several dicts.
    """
    inits = list(params.values())
    groups = [sorted(init(numpy.random.default_rng(0))) for init in inits]
    fwd, bwd = with_positional_params(forward, backward, *groups, arrays=len(names))

    def make_inputs(rng):
        inputs = list(make_arrays(rng))
        for init, keys in zip(inits, groups):
            p = init(rng)
            inputs += [p[k] + 0.2 * rng.normal(size=p[k].shape) for k in keys]
        return inputs

    param_names = [f"{arg}.{k}" if len(groups) > 1 else k
                   for arg, keys in zip(params, groups) for k in keys]
    return Case(name, fwd, bwd, make_inputs, module=module, kind="composite", title=title,
                names=tuple(names) + tuple(param_names))


def mlp_state(like, widths=MLP_SIZES[1:]) -> dict:
    """A fixed, seeded MLP-block state (``mean{j}``, ``var{j}``), in ``like``'s namespace, dtype."""
    xp = namespace(like)
    state = {}
    for j, (mean, var) in enumerate(running_averages(widths), start=1):
        state[f"mean{j}"] = xp.asarray(mean, dtype=like.dtype)
        state[f"var{j}"] = xp.asarray(var, dtype=like.dtype)
    return state


def init_mlp_params(batch_norm: bool):
    return lambda rng: networks.init_mlp(rng, MLP_SIZES, batch_norm=batch_norm, xp=numpy,
                                         dtype=numpy.float64)[0]


def init_head_params(d_in: int, d_out: int):
    return lambda rng: networks.init_gaussian_head(rng, d_in, d_out, xp=numpy,
                                                   dtype=numpy.float64)
