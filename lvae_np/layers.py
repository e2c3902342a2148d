"""Layers as forward/backward pairs: dense, batch norm and the activations.

The op contract, followed by every differentiable piece of lvae_np::

    out, cache = op_forward(inputs...)       # positional inputs are differentiable
    grads = op_backward(dout, cache)         # one gradient per positional input, same order

* Nothing is mutated: not the inputs, not ``dout``, not the cache.
* ``cache`` is a NamedTuple whose fields are what backward needs.
* Keyword-only arguments (a slope, ``training``, batch-norm state) are
  settings, not inputs: they get no gradient.
* Arrays may come from NumPy, CuPy or array_api_strict; the namespace is
  taken from the arrays themselves.

Shapes use N for the batch, D for input features and M for output features.

These are the textbook forms, which a model runs by default. The fused and
in-place forms that training runs instead (``Model(fast=True)``) are in
``fast.py``, each naming its twin here; the backward passes here serve both.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from .backend import Array, namespace


LEAKY_RELU_SLOPE = 0.01  # Lasagne's leaky_rectify, used by the original LVAE code
BN_EPS = 1e-4            # Lasagne's BatchNormLayer epsilon
BN_MOMENTUM = 0.1        # weight of the new batch in the running averages


# ----------------------------------------------------------------------------
# Dense (affine) layer
# ----------------------------------------------------------------------------
class DenseCache(NamedTuple):
    x: Array         # (N, D) input
    W: Array         # (D, M) weights
    has_bias: bool   # whether b was given


def dense_forward(x, W, b):
    """Affine layer, y = x W + b.

    Args:
        x: array of shape (N, D).
        W: array of shape (D, M).
        b: array of shape (M,), or None for no bias (before batch norm,
            whose beta plays its part).

    Returns:
        out: array of shape (N, M).
        cache: DenseCache(x, W, has_bias).
    """
    out = x @ W if b is None else x @ W + b
    return out, DenseCache(x, W, b is not None)


def dense_backward(dout, cache: DenseCache, *, input_grad: bool = True):
    """Gradients of the affine layer y = x W + b.

    Args:
        dout: G = dL/dy, array of shape (N, M).
        cache: DenseCache from ``dense_forward``.
        input_grad: False skips dL/dx, a whole matrix product, where x is the
            data and nothing needs its gradient (the first layer of a network).

    Returns:
        (dx, dW, db): dL/dx (N, D), or None with ``input_grad=False``; dL/dW
        (D, M); dL/db (M,), or None when there is no bias.

    ### BEGIN SOLUTION
    With G = dL/dy::

        dL/dx = G W^T        (N, D)
        dL/dW = x^T G        (D, M)
        dL/db = sum_n G_n    (M,)
    ### END SOLUTION
    """
    xp = namespace(dout)
    x, W, has_bias = cache
    ### BEGIN SOLUTION
    dx = dout @ W.T if input_grad else None
    return dx, x.T @ dout, (xp.sum(dout, axis=0) if has_bias else None)
    ### END SOLUTION


# ----------------------------------------------------------------------------
# Batch normalisation
# ----------------------------------------------------------------------------
class BNState(NamedTuple):
    """Running averages of a batch-norm layer (not trained by gradients)."""

    mean: Array  # (D,)
    var: Array   # (D,)


class BatchNormCache(NamedTuple):
    xhat: Array        # (N, D) normalised input
    inv_std: Array     # (D,) 1 / sqrt(var + eps), var from the batch or the state
    gamma: Array       # (D,) scale
    training: bool     # batch statistics (True) or given statistics (False)
    new_state: Any     # BNState after this call (None without state); not for backward


def init_bn_state(xp, dim: int, dtype=None) -> BNState:
    """Running averages before any batch: mean 0, variance 1."""
    dtype = xp.float64 if dtype is None else dtype
    return BNState(xp.zeros((dim,), dtype=dtype), xp.ones((dim,), dtype=dtype))


def batchnorm_forward(x, gamma, beta, *, state: BNState | None = None, training: bool = True,
                      momentum: float = BN_MOMENTUM, eps: float = BN_EPS):
    """Batch normalisation over the batch axis, y = gamma * xhat + beta.

    Training mode normalises with the batch's own statistics::

        mu = mean_n x_n,   var = mean_n (x_n - mu)^2   (biased, as used to normalise)
        xhat = (x - mu) / sqrt(var + eps)

    and, given ``state``, returns updated running averages as
    ``cache.new_state`` (``state`` itself is not touched; with ``state=None``
    no running averages are kept)::

        new.mean = (1 - momentum) * state.mean + momentum * mu
        new.var  = (1 - momentum) * state.var  + momentum * var

    Evaluation mode (``training=False``) normalises with ``state.mean`` and
    ``state.var`` instead, so each example's output depends on it alone.

    Args:
        x: array of shape (N, D).
        gamma: array of shape (D,), the scale.
        beta: array of shape (D,), the shift.
        state: BNState of arrays of shape (D,); required when not training.
        training: use batch statistics (True) or ``state`` (False).
        momentum: weight of this batch in the running averages.
        eps: added to the variance before the square root.

    Returns:
        out: array of shape (N, D).
        cache: BatchNormCache; ``cache.new_state`` holds the running averages.
    """
    xp = namespace(x)
    if training:
        mu = xp.mean(x, axis=0)
        centred = x - mu
        var = xp.mean(centred * centred, axis=0)
        new_state = None
        if state is not None:  # the running averages, for evaluation mode
            new_state = BNState((1 - momentum) * state.mean + momentum * mu,
                                (1 - momentum) * state.var + momentum * var)
    else:
        if state is None:
            raise ValueError("batch norm in evaluation mode needs state=BNState(mean, var)")
        centred = x - state.mean
        var = state.var
        new_state = state
    inv_std = 1.0 / xp.sqrt(var + eps)
    xhat = centred * inv_std
    out = xhat * gamma + beta
    return out, BatchNormCache(xhat, inv_std, gamma, training, new_state)


def batchnorm_backward(dout, cache: BatchNormCache):
    """Gradients of batch normalisation, in closed form, in both modes.

    In training mode x reaches y through xhat, and through the batch's mean
    and variance too; in evaluation mode the statistics are constants.

    Args:
        dout: G = dL/dy, array of shape (N, D).
        cache: BatchNormCache from ``batchnorm_forward`` (``cache.training``
            says the mode).

    Returns:
        (dx, dgamma, dbeta): arrays of shapes (N, D), (D,) and (D,).

    ### BEGIN SOLUTION
    With g = G * gamma (the gradient reaching xhat)::

        dL/dgamma = sum_n G_n * xhat_n
        dL/dbeta  = sum_n G_n
        training:   dL/dx = inv_std / N * (N g - sum_n g_n - xhat * sum_n g_n xhat_n)
        evaluation: dL/dx = g * inv_std

    The training form follows from differentiating through mu and var too; the
    two subtracted sums remove the components of g along 1 and along xhat.
    Both sums are already at hand: sum_n g_n = gamma * dL/dbeta and
    sum_n g_n xhat_n = gamma * dL/dgamma, so::

        dL/dx = inv_std * (G gamma - xhat * gamma dL/dgamma / N - gamma dL/dbeta / N)
    ### END SOLUTION
    """
    xp = namespace(dout)
    xhat, inv_std, gamma, training, _ = cache
    n = dout.shape[0]
    ### BEGIN SOLUTION
    dgamma = xp.sum(dout * xhat, axis=0)
    dbeta = xp.sum(dout, axis=0)
    if not training:
        return dout * (gamma * inv_std), dgamma, dbeta
    dx = inv_std * (dout * gamma - xhat * (gamma * dgamma / n) - gamma * dbeta / n)
    return dx, dgamma, dbeta
    ### END SOLUTION


# ----------------------------------------------------------------------------
# Activations
# ----------------------------------------------------------------------------
class LeakyReluCache(NamedTuple):
    x: Array       # input, any shape
    slope: float   # gradient for x <= 0

    def kink_side(self):
        """x > 0: which side of the kink each input lies on (used by gradient checks)."""
        return self.x > 0


def leaky_relu_forward(x, *, slope: float = LEAKY_RELU_SLOPE):
    """Leaky ReLU, y = x for x > 0 and y = slope * x otherwise. x: any shape."""
    xp = namespace(x)
    return xp.where(x > 0, x, slope * x), LeakyReluCache(x, slope)


def leaky_relu_backward(dout, cache: LeakyReluCache):
    """Gradient of the leaky ReLU.

    Args:
        dout: G = dL/dy, any shape (x's).
        cache: LeakyReluCache from ``leaky_relu_forward``.

    Returns:
        (dx,): dL/dx, shaped like x; a one-element tuple, as every backward's.

    ### BEGIN SOLUTION
    dL/dx = G where x > 0, slope * G elsewhere: G times the derivative
    slope + (1 - slope) [x > 0], with the indicator [x > 0] as 1 or 0.
    ### END SOLUTION
    """
    xp = namespace(dout)
    ### BEGIN SOLUTION
    positive = xp.astype(cache.x > 0, dout.dtype)              # [x > 0]
    return (dout * (cache.slope + (1.0 - cache.slope) * positive),)
    ### END SOLUTION


def sigmoid(x):
    """Logistic function 1 / (1 + exp(-x)), without overflow for any x.

    Only exponentials of non-positive numbers are computed::

        sigmoid(x) = exp(min(x, 0)) / (1 + exp(-|x|))

    (for x >= 0 this is 1 / (1 + exp(-x)); for x < 0 it is exp(x) / (1 + exp(x))).
    """
    xp = namespace(x)
    return sigmoid_given_exp(x, xp.exp(-xp.abs(x)))


def sigmoid_given_exp(x, exp_neg_abs):
    """sigmoid(x) = exp(min(x, 0)) / (1 + exp(-|x|)), with exp(-|x|) already at hand.

    Softplus and the Bernoulli log-likelihood compute exp(-|x|) in their
    forward pass and keep it, so their backward passes do not compute it
    again; the bits are those of ``sigmoid(x)``.

    Args:
        x: any shape.
        exp_neg_abs: exp(-|x|), x's shape (not changed).

    Returns:
        sigmoid(x), x's shape.
    """
    xp = namespace(x)
    denom = exp_neg_abs + 1.0
    out = xp.exp(xp.minimum(x, 0.0))
    out /= denom
    return out


class SigmoidCache(NamedTuple):
    out: Array  # sigmoid(x), any shape


def sigmoid_forward(x):
    """y = sigmoid(x), stable for any x. x: any shape."""
    out = sigmoid(x)
    return out, SigmoidCache(out)


def sigmoid_backward(dout, cache: SigmoidCache):
    """dL/dx = G * y * (1 - y)."""
    y = cache.out
    return (dout * y * (1.0 - y),)


class SoftplusCache(NamedTuple):
    x: Array            # the input, any shape
    exp_neg_abs: Array  # exp(-|x|), x's shape: computed by forward, reused by backward


def softplus_forward(x):
    """y = log(1 + exp(x)), computed as max(x, 0) + log1p(exp(-|x|)) so it never overflows.

    x: any shape. lvae_np uses softplus to turn a linear output into a variance.
    """
    xp = namespace(x)
    e = xp.exp(-xp.abs(x))
    return xp.maximum(x, 0.0) + xp.log1p(e), SoftplusCache(x, e)


def softplus_backward(dout, cache: SoftplusCache):
    """dL/dx = G * sigmoid(x), with the forward's exp(-|x|) (``sigmoid_given_exp``)."""
    return (dout * sigmoid_given_exp(cache.x, cache.exp_neg_abs),)


def log_sigmoid_forward(x):
    """y = log sigmoid(x) = -softplus(-x) = min(x, 0) - log1p(exp(-|x|)). x: any shape."""
    xp = namespace(x)
    e = xp.exp(-xp.abs(x))
    return xp.minimum(x, 0.0) - xp.log1p(e), SoftplusCache(x, e)


def log_sigmoid_backward(dout, cache: SoftplusCache):
    """dL/dx = G * (1 - sigmoid(x)) = G * sigmoid(-x), with exp(-|-x|) = exp(-|x|) from forward."""
    return (dout * sigmoid_given_exp(-cache.x, cache.exp_neg_abs),)
