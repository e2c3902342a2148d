"""Output log-likelihoods log p(x | z_1) as forward/backward pairs.

* Bernoulli, from logits: binary images (MNIST, OMNIGLOT).
* Gaussian, from a mean and a variance: real-valued images (NORB).

Both are elementwise, shapes (N, D) with D the number of pixels, and not
summed, so callers sum per example. The op contract is the one of
``layers.py``: ``out, cache = op_forward(*inputs)``, ``grads = op_backward(dout, cache)``,
one gradient per positional input -- the data ``x`` included, so every op has
the same uniform signature (the model simply ignores that gradient).
"""
from __future__ import annotations

from typing import NamedTuple

from . import gaussian
from .backend import Array, namespace
from .layers import sigmoid_given_exp


# ----------------------------------------------------------------------------
# Bernoulli
# ----------------------------------------------------------------------------
class BernoulliCache(NamedTuple):
    x: Array            # (N, D) the data
    logits: Array       # (N, D)
    exp_neg_abs: Array  # (N, D) exp(-|logits|), computed by forward, reused by backward


def bernoulli_log_likelihood_forward(x, logits):
    """Elementwise log Bernoulli(x; sigmoid(logits)), from logits, stable for any logits.

    With l the logits::

        log p(x | l) = x log sigmoid(l) + (1 - x) log sigmoid(-l)
                     = x l - softplus(l)
                     = x l - max(l, 0) - log1p(exp(-|l|))

    The last form is the one computed: only exp(-|l|), in (0, 1], is ever
    evaluated, so logits of +-1e4 in float32 neither overflow nor lose the
    small log1p term (for binary x, x l - max(l, 0) is exactly 0 or -|l|).
    It is minus the binary cross-entropy with logits.

    Args:
        x: the data, shape (N, D): binary {0, 1}, or real in [0, 1] (the
            formula is then the negative cross-entropy, not a normalised density).
        logits: shape (N, D).

    Returns:
        logp: shape (N, D), <= 0 for x in [0, 1].
        cache: BernoulliCache(x, logits, exp(-|logits|)).
    """
    xp = namespace(x, logits)
    e = xp.exp(-xp.abs(logits))
    logp = x * logits - xp.maximum(logits, 0.0) - xp.log1p(e)
    return logp, BernoulliCache(x, logits, e)


def bernoulli_log_likelihood_backward(dout, cache: BernoulliCache):
    """Gradients of log p = x l - softplus(l). With G = dL/dlogp (N, D)::

        dL/dx      = G * l
        dL/dlogits = G * (x - sigmoid(l))

    sigmoid(l) from the forward's exp(-|l|) (``layers.sigmoid_given_exp``).
    """
    x, logits, e = cache
    return dout * logits, dout * (x - sigmoid_given_exp(logits, e))


# ----------------------------------------------------------------------------
# Gaussian
# ----------------------------------------------------------------------------
def gaussian_log_likelihood_forward(x, mu, var):
    """Elementwise Gaussian output log-likelihood log N(x; mu, var), for real-valued data.

    The decoder gives a mean and a VARIANCE (softplus output, not a
    log-variance) per pixel::

        log p(x | mu, var) = -0.5 * (log(2 pi) + log var + (x - mu)^2 / var)

    This is the same density as ``gaussian.log_normal_forward``, to which it
    delegates (one implementation, so the two can never disagree), including
    the variance floor ``gaussian.VAR_FLOOR``. It has its own name because it
    plays a different role: the data term of the ELBO, not a latent density.

    Args:
        x: the data, shape (N, D).
        mu, var: decoder mean and variance, shape (N, D).

    Returns:
        logp: shape (N, D).
        cache: gaussian.LogNormalCache.
    """
    return gaussian.log_normal_forward(x, mu, var)


def gaussian_log_likelihood_backward(dout, cache):
    """``gaussian.log_normal_backward``: with G = dL/dlogp (N, D), returns (dx, dmu, dvar)."""
    return gaussian.log_normal_backward(dout, cache)
