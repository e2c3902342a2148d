"""The registered gradient-check cases: every op of lvae_np with well-conditioned inputs.

``python -m lvae_np.gradcheck`` runs them all, and the test suite runs the
same cases on NumPy and on array_api_strict arrays. A case builds its inputs
with NumPy in float64 from a seed and moves them to the namespace asked for.

Well-conditioned means: away from the kinks of piecewise functions (leaky
ReLU at 0) and with batch statistics whose variance is not tiny against eps.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import numpy

from . import layers as L
from .gradcheck import DEFAULT_TOL, GradcheckReport, check_gradients


@dataclass(frozen=True)
class Case:
    """One op to check: its forward (settings bound), its backward and its inputs."""

    name: str
    forward: Callable
    backward: Callable
    make_inputs: Callable  # rng -> list of float64 NumPy arrays
    names: tuple = ()      # argument names shown in reports

    def inputs(self, seed: int = 0, xp=numpy) -> list:
        rng = numpy.random.default_rng(seed)
        return [xp.asarray(a, dtype=xp.float64) for a in self.make_inputs(rng)]

    def check(self, seed: int = 0, tol: float = DEFAULT_TOL, xp=numpy) -> GradcheckReport:
        return check_gradients(self.forward, self.backward, self.inputs(seed, xp),
                               names=self.names or None, op=self.name, tol=tol, seed=seed)


def _away_from_zero(rng, shape, low=0.1, high=2.0):
    return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(low, high, size=shape)


def _bn_state(rng, dim):
    return L.BNState(numpy.asarray(rng.normal(size=dim)), numpy.asarray(rng.uniform(0.5, 2.0, dim)))


def _bn_eval_forward(x, gamma, beta):
    # A fixed, seeded state: evaluation mode normalises with these statistics.
    state = _bn_state(numpy.random.default_rng(1234), x.shape[1])
    xp = x.__array_namespace__()
    state = L.BNState(xp.asarray(state.mean), xp.asarray(state.var))
    return L.batchnorm_forward(x, gamma, beta, state=state, training=False)


CASES = [
    Case("dense", L.dense_forward, L.dense_backward,
         lambda rng: [rng.normal(size=(5, 4)), rng.normal(size=(4, 3)), rng.normal(size=3)]),
    Case("batchnorm (training)", partial(L.batchnorm_forward, training=True),
         L.batchnorm_backward,
         lambda rng: [rng.normal(1.0, 2.0, size=(8, 4)), rng.uniform(0.5, 2.0, 4), rng.normal(size=4)],
         names=("x", "gamma", "beta")),
    Case("batchnorm (evaluation)", _bn_eval_forward, L.batchnorm_backward,
         lambda rng: [rng.normal(size=(6, 4)), rng.uniform(0.5, 2.0, 4), rng.normal(size=4)]),
    Case("leaky_relu", L.leaky_relu_forward, L.leaky_relu_backward,
         lambda rng: [_away_from_zero(rng, (5, 4))]),
    Case("leaky_relu (slope 0.3)", partial(L.leaky_relu_forward, slope=0.3), L.leaky_relu_backward,
         lambda rng: [_away_from_zero(rng, (5, 4))], names=("x",)),
    Case("softplus", L.softplus_forward, L.softplus_backward,
         lambda rng: [rng.normal(0.0, 3.0, size=(5, 4))]),
    Case("sigmoid", L.sigmoid_forward, L.sigmoid_backward,
         lambda rng: [rng.normal(0.0, 3.0, size=(5, 4))]),
    Case("log_sigmoid", L.log_sigmoid_forward, L.log_sigmoid_backward,
         lambda rng: [rng.normal(0.0, 3.0, size=(5, 4))]),
]
