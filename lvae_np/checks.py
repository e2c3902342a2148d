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

from . import gaussian as G
from . import layers as L
from . import likelihoods as LL
from .backend import get_backend, namespace
from .bounds import logmeanexp_backward, logmeanexp_forward
from .gradcheck import DEFAULT_STEP, DEFAULT_TOL, GradcheckReport, check_gradients
from .models import Model, ModelConfig


@dataclass(frozen=True)
class Case:
    """One op to check: its forward (settings bound), its backward and its inputs."""

    name: str
    forward: Callable
    backward: Callable
    make_inputs: Callable  # rng -> list of float64 NumPy arrays
    names: tuple = ()      # argument names shown in reports
    step: float = DEFAULT_STEP  # finite-difference step

    def inputs(self, seed: int = 0, xp=numpy) -> list:
        rng = numpy.random.default_rng(seed)
        return [xp.asarray(a, dtype=xp.float64) for a in self.make_inputs(rng)]

    def check(self, seed: int = 0, tol: float = DEFAULT_TOL, xp=numpy,
              max_elements: int | None = None) -> GradcheckReport:
        return check_gradients(self.forward, self.backward, self.inputs(seed, xp),
                               names=self.names or None, op=self.name, tol=tol, seed=seed,
                               h=self.step, max_elements=max_elements)


def _away_from_zero(rng, shape, low=0.1, high=2.0):
    return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(low, high, size=shape)


def _bn_state(rng, dim):
    return L.BNState(numpy.asarray(rng.normal(size=dim)), numpy.asarray(rng.uniform(0.5, 2.0, dim)))


def _batchnorm_with_fixed_state(x, gamma, beta):
    # A fixed, seeded state: evaluation mode normalises with these statistics.
    state = _bn_state(numpy.random.default_rng(1234), x.shape[1])
    xp = x.__array_namespace__()
    state = L.BNState(xp.asarray(state.mean, dtype=x.dtype), xp.asarray(state.var, dtype=x.dtype))
    return L.batchnorm_forward(x, gamma, beta, state=state, training=False)


def _var(rng, shape=(5, 4)):
    # Variances well above gaussian.VAR_FLOOR, so the floor is never near.
    return rng.uniform(0.5, 2.0, size=shape)


def _gaussians(rng, count, shape=(5, 4)):
    # count (mean, variance) pairs, flattened: [mu_1, var_1, mu_2, var_2, ...]
    return [a for _ in range(count) for a in (rng.normal(size=shape), _var(rng, shape))]


CASES = [
    Case("dense", L.dense_forward, L.dense_backward,
         lambda rng: [rng.normal(size=(5, 4)), rng.normal(size=(4, 3)), rng.normal(size=3)]),
    Case("batchnorm (training)", partial(L.batchnorm_forward, training=True),
         L.batchnorm_backward,
         lambda rng: [rng.normal(1.0, 2.0, size=(8, 4)), rng.uniform(0.5, 2.0, 4), rng.normal(size=4)],
         names=("x", "gamma", "beta")),
    Case("batchnorm (evaluation)", _batchnorm_with_fixed_state, L.batchnorm_backward,
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
    Case("reparameterize", G.reparameterize_forward, G.reparameterize_backward,
         lambda rng: [rng.normal(size=(5, 4)), _var(rng), rng.normal(size=(5, 4))]),
    Case("merge", G.merge_forward, G.merge_backward, lambda rng: _gaussians(rng, 2)),
    Case("kl_normal", G.kl_normal_forward, G.kl_normal_backward, lambda rng: _gaussians(rng, 2)),
    Case("kl_standard_normal", G.kl_standard_normal_forward, G.kl_standard_normal_backward,
         lambda rng: _gaussians(rng, 1)),
    Case("log_normal", G.log_normal_forward, G.log_normal_backward,
         lambda rng: [rng.normal(size=(5, 4))] + _gaussians(rng, 1)),
    Case("bernoulli (binary x)", LL.bernoulli_log_likelihood_forward,
         LL.bernoulli_log_likelihood_backward,
         lambda rng: [rng.integers(0, 2, size=(5, 4)).astype(float), rng.normal(0.0, 3.0, (5, 4))],
         names=("x", "logits")),
    Case("bernoulli (real x)", LL.bernoulli_log_likelihood_forward,
         LL.bernoulli_log_likelihood_backward,
         lambda rng: [rng.uniform(0.0, 1.0, (5, 4)), rng.normal(0.0, 3.0, (5, 4))],
         names=("x", "logits")),
    Case("gaussian_log_likelihood", LL.gaussian_log_likelihood_forward,
         LL.gaussian_log_likelihood_backward,
         lambda rng: [rng.normal(size=(5, 4))] + _gaussians(rng, 1)),
]


# ----------------------------------------------------------------------------
# Whole models, end to end
# ----------------------------------------------------------------------------
def model_case(kind: str, layers: int, batch_norm: bool, kl: str, beta: float,
               iw: int = 1) -> Case:
    """A whole VAE or LVAE as one op: parameters in, per-example objective out.

    The inputs are the parameter arrays (sorted by key), perturbed off the
    initialisation; x, the state and the noise are fixed. With ``iw`` > 1 the
    output is the importance-weighted bound L_iw per example (MC KL, the
    log-mean-exp of iw samples each). The step is 1e-5: with a batch of four,
    batch norm's higher derivatives are large enough that h = 1e-4 shows the
    h^4 truncation error.
    """
    cfg = ModelConfig(kind=kind, x_dim=6, latent=(3, 2, 2)[:layers],
                      hidden=(5, 4, 3)[:layers], batch_norm=batch_norm)
    model = Model(cfg, get_backend("numpy", dtype="float64", seed=layers))
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
        f, _, _, cache = model.forward(p, {k: xp.asarray(v) for k, v in state.items()},
                                       xp.asarray(x), [xp.asarray(e) for e in noise],
                                       beta=beta, kl=kl, k=iw)
        if iw == 1:
            return f, (cache, None)
        bound, c_lme = logmeanexp_forward(xp.reshape(f, (iw, n)))
        return bound, (cache, c_lme)

    def backward(dout, caches):
        cache, c_lme = caches
        if c_lme is not None:
            xp = namespace(dout)
            (dlw,) = logmeanexp_backward(dout, c_lme)
            dout = xp.reshape(dlw, (iw * n,))
        grads = model.backward(dout, cache)
        return tuple(grads[k] for k in keys)

    name = (f"{kind} L={layers} {'BN' if batch_norm else 'no BN'} "
            + (f"IWAE k={iw}" if iw > 1 else f"kl={kl} beta={beta:g}"))
    return Case(name, forward, backward, lambda rng: [a.copy() for a in start],
                names=tuple(keys), step=1e-5)


CASES += [model_case(kind, 3, True, kl, 0.5) for kind in ("vae", "lvae") for kl in ("mc", "analytic")]
CASES += [model_case(kind, 2, bn, "mc", 1.0, iw=3) for kind in ("vae", "lvae") for bn in (True, False)]
