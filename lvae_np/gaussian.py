"""Diagonal Gaussians as forward/backward pairs: sampling, the ladder merge, KL, log-density.

Parameterisation: every ``var`` in this module is a VARIANCE, sigma^2 -- not a
log-variance and not a standard deviation. The networks produce it as
``softplus(linear)``, as in the original LVAE code. Passing a log-variance or a
standard deviation where a variance is expected gives no error, just wrong
numbers, so the names say ``var`` everywhere.

The variance floor. A float32 softplus underflows to 0 for inputs below about
-103, and log(0) or 1/0 would turn the loss into inf or NaN. So every variance
is floored before it is used in a square root, a division or a log::

    var_f = maximum(var, VAR_FLOOR)

and everything below is a function of ``var_f``. Where the floor is active
(var < VAR_FLOOR) the output does not depend on ``var``, so the gradient with
respect to ``var`` is zero there; elsewhere it passes through unchanged.

All ops are elementwise: every argument has the same shape, written (N, D)
(batch, latent units), and so does every output, so that callers can sum per
unit, per layer or per example. The op contract is the one of ``layers.py``:
``out, cache = op_forward(*inputs)``, ``grads = op_backward(dout, cache)``;
with two outputs, ``out`` and ``dout`` are both pairs.
"""
from __future__ import annotations

import math
from typing import NamedTuple

from .backend import Array, namespace


# 1e-8: std 1e-4, log -18.4. A softplus variance only falls below it for
# pre-activations under -18.4, so in practice the floor is never active; yet it
# keeps float32 safe: 1/var <= 1e8, the largest gradient factor 1/var^2 <= 1e16
# (a squared mean difference up to ~1e22 still fits in float32's 3.4e38), and
# d sqrt(var)/d var = 1/(2 std) <= 5e3.
VAR_FLOOR = 1e-8
LOG_2PI = math.log(2.0 * math.pi)


def floor_var(var):
    """var_f = maximum(var, VAR_FLOOR), in var's dtype. var: any shape."""
    return namespace(var).maximum(var, VAR_FLOOR)


def through_floor(dvar_f, var):
    """The gradient of var from that of var_f: zero where var < VAR_FLOOR, unchanged elsewhere."""
    return namespace(dvar_f).where(var >= VAR_FLOOR, dvar_f, 0.0)


# ----------------------------------------------------------------------------
# Reparameterisation
# ----------------------------------------------------------------------------
class ReparamCache(NamedTuple):
    var: Array  # (N, D) the variance as given (for the floor's mask)
    std: Array  # (N, D) sqrt(var_f)
    eps: Array  # (N, D) the noise


def reparameterize_forward(mu, var, eps):
    """A sample of N(mu, var) as a differentiable function of the noise: z = mu + sqrt(var_f) * eps.

    Args:
        mu: mean, shape (N, D).
        var: variance (not log-variance, not std), shape (N, D).
        eps: standard normal noise, shape (N, D). A positional input like the
            others, so it gets a gradient too and the model is a deterministic
            function of it.

    Returns:
        z: shape (N, D).
        cache: ReparamCache(var, std, eps).

    ### BEGIN SOLUTION
    The standard deviation is that of the floored variance, std = sqrt(var_f);
    the cache keeps var as given, for the floor's mask in the backward pass.
    ### END SOLUTION
    """
    xp = namespace(mu, var, eps)
    ### BEGIN SOLUTION
    std = xp.sqrt(floor_var(var))
    return mu + std * eps, ReparamCache(var, std, eps)
    ### END SOLUTION


def reparameterize_backward(dout, cache: ReparamCache):
    """Gradients of z = mu + sqrt(var_f) * eps.

    Args:
        dout: G = dL/dz, shape (N, D).
        cache: ReparamCache from ``reparameterize_forward``.

    Returns:
        (dmu, dvar, deps), each of shape (N, D): new arrays (callers may update
        them in place), the variance gradient 0 where var < VAR_FLOOR
        (``through_floor``).

    ### BEGIN SOLUTION
    With G = dL/dz::

        dL/dmu  = G                         (a copy)
        dL/dvar = G * eps / (2 sqrt(var_f))
        dL/deps = G * sqrt(var_f)
    ### END SOLUTION
    """
    xp = namespace(dout)
    var, std, eps = cache
    ### BEGIN SOLUTION
    dvar = through_floor(dout * eps / (2.0 * std), var)
    return xp.asarray(dout, copy=True), dvar, dout * std
    ### END SOLUTION


# ----------------------------------------------------------------------------
# Precision-weighted merge (the LVAE's top-down correction)
# ----------------------------------------------------------------------------
class MergeCache(NamedTuple):
    var_hat: Array  # (N, D) the variances as given (for the floor's masks)
    var_p: Array    # (N, D)
    w_hat: Array    # (N, D) var_p / (var_hat + var_p), weight of mu_hat
    w_p: Array      # (N, D) var_hat / (var_hat + var_p), weight of mu_p
    diff: Array     # (N, D) mu_hat - mu_p
    s: Array        # (N, D) var_hat + var_p (floored variances)


def merge_forward(mu_hat, var_hat, mu_p, var_p):
    """Precision-weighted merge of two Gaussians (paper eqs. 18-19).

    The bottom-up estimate N(mu_hat, var_hat) and the top-down prior
    N(mu_p, var_p) give q = N(mu_q, var_q) with::

        var_q = 1 / (1/var_hat + 1/var_p)
        mu_q  = (mu_hat / var_hat + mu_p / var_p) * var_q

    Use the floored variances (``floor_var``), and no reciprocal of a small
    number: a variance of 1e-8 or of 1e12 on one side must not overflow.

    Args:
        mu_hat, var_hat: bottom-up mean and variance, shape (N, D).
        mu_p, var_p: top-down (prior) mean and variance, shape (N, D).

    Returns:
        out: (mu_q, var_q), each of shape (N, D).
        cache: MergeCache.

    ### BEGIN SOLUTION
    Computed as a convex combination (so mu_q lies between mu_hat and mu_p)::

        s = var_hat + var_p,   w_hat = var_p / s,   w_p = var_hat / s   (w_hat + w_p = 1)
        mu_q  = w_hat * mu_hat + w_p * mu_p
        var_q = w_hat * w_p * s             (= var_hat var_p / s, without overflow)

    Both formulas are exactly symmetric under swapping (mu_hat, var_hat) with
    (mu_p, var_p); a variance of 1e12 on one side gives the other side back.
    ### END SOLUTION
    """
    vh, vp = floor_var(var_hat), floor_var(var_p)
    ### BEGIN SOLUTION
    s = vh + vp
    w_hat, w_p = vp / s, vh / s
    mu_q = w_hat * mu_hat + w_p * mu_p
    var_q = w_hat * w_p * s
    return (mu_q, var_q), MergeCache(var_hat, var_p, w_hat, w_p, mu_hat - mu_p, s)
    ### END SOLUTION


def merge_backward(dout, cache: MergeCache):
    """Gradients of the merge.

    Args:
        dout: (G_mu, G_var), the gradients of mu_q and var_q, each (N, D).
        cache: MergeCache from ``merge_forward``.

    Returns:
        (dmu_hat, dvar_hat, dmu_p, dvar_p), each of shape (N, D). The variance
        gradients are 0 where the variance is below VAR_FLOOR (``through_floor``).

    ### BEGIN SOLUTION
    With s = var_hat + var_p and the weights of ``merge_forward``::

        dL/dmu_hat  = G_mu * w_hat
        dL/dmu_p    = G_mu * w_p
        dL/dvar_hat = G_var * w_hat^2 - G_mu * w_hat * (mu_hat - mu_p) / s
        dL/dvar_p   = G_var * w_p^2   + G_mu * w_p   * (mu_hat - mu_p) / s

    since d var_q / d var_hat = var_p^2 / s^2 and
    d mu_q / d var_hat = var_p (mu_p - mu_hat) / s^2 (and symmetrically).
    ### END SOLUTION
    """
    g_mu, g_var = dout
    var_hat, var_p, w_hat, w_p, diff, s = cache
    ### BEGIN SOLUTION
    g_diff = g_mu * diff / s
    dvar_hat = through_floor(g_var * w_hat * w_hat - g_diff * w_hat, var_hat)
    dvar_p = through_floor(g_var * w_p * w_p + g_diff * w_p, var_p)
    return g_mu * w_hat, dvar_hat, g_mu * w_p, dvar_p
    ### END SOLUTION


# ----------------------------------------------------------------------------
# KL divergences
# ----------------------------------------------------------------------------
class KLCache(NamedTuple):
    var_q: Array  # (N, D) the variances as given (for the floor's masks)
    var_p: Array  # (N, D)
    inv_q: Array  # (N, D) 1 / var_q_f
    inv_p: Array  # (N, D) 1 / var_p_f
    diff: Array   # (N, D) mu_q - mu_p
    r: Array      # (N, D) (var_q_f + diff^2) / var_p_f


def kl_normal_forward(mu_q, var_q, mu_p, var_p):
    """Elementwise KL(N(mu_q, var_q) || N(mu_p, var_p)) of diagonal Gaussians, in closed form.

    One value per unit, exactly 0 for equal Gaussians; not summed (callers sum
    per unit or layer). Use the floored variances (``floor_var``).

    Args:
        mu_q, var_q: mean and variance of q, shape (N, D).
        mu_p, var_p: mean and variance of p, shape (N, D).

    Returns:
        kl: shape (N, D), >= 0.
        cache: KLCache.

    ### BEGIN SOLUTION
    ::

        KL = 0.5 * (log var_p - log var_q + (var_q + (mu_q - mu_p)^2) / var_p - 1)

    computed as 0.5 * (t - 1 - log t + (mu_q - mu_p)^2 / var_p), t = var_q / var_p.
    ### END SOLUTION
    """
    xp = namespace(mu_q, var_q, mu_p, var_p)
    vq, vp = floor_var(var_q), floor_var(var_p)
    ### BEGIN SOLUTION
    inv_p = 1.0 / vp
    diff = mu_q - mu_p
    diff2 = diff * diff
    t = vq * inv_p
    kl = 0.5 * (t - 1.0 - xp.log(t) + diff2 * inv_p)
    return kl, KLCache(var_q, var_p, 1.0 / vq, inv_p, diff, (vq + diff2) * inv_p)
    ### END SOLUTION


def kl_normal_backward(dout, cache: KLCache):
    """Gradients of the elementwise KL.

    Args:
        dout: G = dL/dKL, shape (N, D).
        cache: KLCache from ``kl_normal_forward``.

    Returns:
        (dmu_q, dvar_q, dmu_p, dvar_p), each of shape (N, D). The variance
        gradients are 0 where the variance is below VAR_FLOOR (``through_floor``).

    ### BEGIN SOLUTION
    With d = mu_q - mu_p::

        dL/dmu_q  =  G * d / var_p
        dL/dmu_p  = -G * d / var_p
        dL/dvar_q =  G * 0.5 * (1/var_p - 1/var_q)
        dL/dvar_p =  G * 0.5 * (1 - (var_q + d^2) / var_p) / var_p
    ### END SOLUTION
    """
    var_q, var_p, inv_q, inv_p, diff, r = cache
    ### BEGIN SOLUTION
    dmu_q = dout * diff * inv_p
    half = 0.5 * dout
    dvar_q = through_floor(half * (inv_p - inv_q), var_q)
    dvar_p = through_floor(half * (1.0 - r) * inv_p, var_p)
    return dmu_q, dvar_q, -dmu_q, dvar_p
    ### END SOLUTION


def kl_standard_normal_forward(mu, var):
    """Elementwise KL(N(mu, var) || N(0, 1)): ``kl_normal_forward`` against mu_p = 0, var_p = 1.

    The KL of the top layer, q(z_L | x) against the prior p(z_L) = N(0, I).
    It runs the general KL (with zeros and ones as p's mean and variance), so
    there is one closed form to write and to check, and its numbers are that
    op's, bit for bit.

    Args:
        mu, var: mean and variance of q, shape (N, D).

    Returns:
        kl: shape (N, D), >= 0.
        cache: the cache of ``kl_normal_forward`` (a KLCache).
    """
    xp = namespace(mu, var)
    return kl_normal_forward(mu, var, xp.zeros_like(mu), xp.ones_like(var))


def kl_standard_normal_backward(dout, cache):
    """Gradients of KL(N(mu, var) || N(0, 1)): ``kl_normal_backward``'s, for q's mean and variance.

    Args:
        dout: G = dL/dKL, shape (N, D).
        cache: from ``kl_standard_normal_forward``.

    Returns:
        (dmu, dvar), each of shape (N, D) (p's are fixed, so they have none).
    """
    dmu, dvar, _, _ = kl_normal_backward(dout, cache)
    return dmu, dvar


# ----------------------------------------------------------------------------
# Log-density
# ----------------------------------------------------------------------------
class LogNormalCache(NamedTuple):
    var: Array    # (N, D) the variance as given (for the floor's mask)
    inv: Array    # (N, D) 1 / var_f
    scaled: Array  # (N, D) (z - mu) / var_f


def log_normal_forward(z, mu, var):
    """Elementwise log N(z; mu, var) = -0.5 * (log(2 pi) + log var + (z - mu)^2 / var).

    Used for the single-sample KL estimate log q(z) - log p(z) and for
    importance weights.

    Args:
        z: the points, shape (N, D).
        mu, var: mean and variance, shape (N, D).

    Returns:
        logp: shape (N, D).
        cache: LogNormalCache.
    """
    xp = namespace(z, mu, var)
    v = floor_var(var)
    inv = 1.0 / v
    diff = z - mu
    scaled = diff * inv
    return -0.5 * (LOG_2PI + xp.log(v) + diff * scaled), LogNormalCache(var, inv, scaled)


def log_normal_backward(dout, cache: LogNormalCache):
    """Gradients of the elementwise log-density log N(z; mu, var).

    Args:
        dout: G = dL/dlogp, shape (N, D).
        cache: LogNormalCache from ``log_normal_forward``.

    Returns:
        (dz, dmu, dvar), each of shape (N, D); dvar is 0 where var < VAR_FLOOR.

    ### BEGIN SOLUTION
    With G = dL/dlogp::

        dL/dz   = -G * (z - mu) / var
        dL/dmu  =  G * (z - mu) / var
        dL/dvar =  G * 0.5 * ((z - mu)^2 / var^2 - 1 / var)
    ### END SOLUTION
    """
    var, inv, scaled = cache
    dmu = dout * scaled
    dvar = through_floor(0.5 * dout * (scaled * scaled - inv), var)
    return -dmu, dmu, dvar


# ----------------------------------------------------------------------------
# The single-sample KL estimate
# ----------------------------------------------------------------------------
class KLSampleCache(NamedTuple):
    log_q: LogNormalCache  # of log N(z; mu_q, var_q)
    log_p: LogNormalCache  # of log N(z; mu_p, var_p)


def kl_sample_forward(z, mu_q, var_q, mu_p, var_p):
    """The single-sample estimate of KL(q || p) per unit, at a sample z ~ q.

    ``kl = log N(z; mu_q, var_q) - log N(z; mu_p, var_p)``. Its expectation
    over z ~ q is the KL divergence (``kl_normal_forward``); unlike the
    closed form it stays unbiased when p depends on a sample drawn after z
    (the bottom-up VAE), and it is what an importance weight needs.

    Args:
        z: the sample, shape (N, D).
        mu_q, var_q: q's mean and variance, shape (N, D).
        mu_p, var_p: p's mean and variance, shape (N, D).

    Returns:
        kl: shape (N, D) (any sign: one sample of a non-negative mean).
        cache: KLSampleCache.
    """
    log_q, c_q = log_normal_forward(z, mu_q, var_q)
    log_p, c_p = log_normal_forward(z, mu_p, var_p)
    return log_q - log_p, KLSampleCache(c_q, c_p)


def kl_sample_backward(dout, cache: KLSampleCache):
    """With G = dL/dkl (N, D): the log-densities' gradients, p's with the sign flipped.

    Returns (dz, dmu_q, dvar_q, dmu_p, dvar_p); z reaches the loss through
    both densities, so dz = dz_q + dz_p.
    """
    dz_q, dmu_q, dvar_q = log_normal_backward(dout, cache.log_q)
    dz_p, dmu_p, dvar_p = log_normal_backward(-dout, cache.log_p)
    return dz_q + dz_p, dmu_q, dvar_q, dmu_p, dvar_p
