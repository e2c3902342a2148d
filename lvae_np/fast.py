"""The fast forms: fused and in-place twins of plain forms in layers, blocks and optim.

Everything here computes what a plain function elsewhere computes, and each
docstring names that twin; ``tests/test_fast_forms.py`` holds each one equal
to its twin (float64 to 1e-12 relative, forward and backward, with a random
upstream gradient). What each one saves, and by how much where it was
measured, is in benchmarks/README.md ("Fast forms").

One switch turns them on: ``Model(config, backend, fast=True)``. The model
then hands the blocks ``FAST`` in place of ``blocks.PLAIN`` (the forward
passes of the leaky ReLU and of batch norm, the Gaussian head) and updates
the batch-norm running averages of all its layers at once
(``running_averages``). The default is ``fast=False``: the plain forms, the
ones a reader meets first and a student checks. Training turns it on
(``lvae_np.training.trainer``, and ``training.runs.load_run`` for a trained
run's evaluation), and so do the benchmarks; training also uses
``FlatAdam``, Adam in place on one flat buffer, in place of
``optim.adam_update`` on dicts. The flat buffers themselves are
``flat.py``'s, which this module imports (the trainer also uses them to copy
arrays to and from the device).

The backward passes of the leaky ReLU and of batch norm have no twin here:
they are exercises of the course, and a student copy of the package must not
hold their answers anywhere, so both forms run ``layers``' own.

With the fast forms a model's float32 numbers are the recorded golden
values bit for bit (``tests/test_golden.py``); the plain forms agree with
them to rounding.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

from . import flat, layers, optim
from .backend import is_cupy, maximum_into, namespace, to_numpy
from .blocks import BlockSettings


# ----------------------------------------------------------------------------
# Leaky ReLU and batch norm, forward
# ----------------------------------------------------------------------------
def leaky_relu_forward(x, *, slope: float = layers.LEAKY_RELU_SLOPE):
    """``layers.leaky_relu_forward``, as y = maximum(x, slope * x) for 0 <= slope <= 1.

    For 0 <= slope <= 1, slope * x <= x exactly where x > 0, so the maximum
    picks x there and slope * x elsewhere: the same bits as ``where(x > 0, x,
    slope * x)``. The maximum is written over the array slope * x
    (``backend.maximum_into``). Other slopes take the plain form. The cache
    is the plain one, and ``layers.leaky_relu_backward`` is the backward.
    """
    if 0.0 <= slope <= 1.0:
        return maximum_into(x, slope * x), layers.LeakyReluCache(x, slope)
    return layers.leaky_relu_forward(x, slope=slope)


def batchnorm_forward(x, gamma, beta, *, state: layers.BNState | None = None,
                      training: bool = True, momentum: float | None = layers.BN_MOMENTUM,
                      eps: float = layers.BN_EPS):
    """``layers.batchnorm_forward``, with in-place arithmetic, and ``momentum=None``.

    xhat and the output are computed in place on arrays made here (never on
    x): the same operations in the same order, so the same bits. With
    ``momentum=None`` in training mode, ``cache.new_state`` is this batch's
    BNState(mu, var), with or without ``state``, for a caller that averages
    the running averages of many layers at once (``running_averages``).
    The backward is ``layers.batchnorm_backward``.
    """
    xp = namespace(x)
    if training:
        mu = xp.mean(x, axis=0)
        centred = x - mu
        var = xp.mean(centred * centred, axis=0)
        if momentum is None:
            new_state = layers.BNState(mu, var)
        elif state is not None:
            new_state = layers.BNState((1 - momentum) * state.mean + momentum * mu,
                                       (1 - momentum) * state.var + momentum * var)
        else:
            new_state = None
    else:
        if state is None:
            raise ValueError("batch norm in evaluation mode needs state=BNState(mean, var)")
        centred = x - state.mean
        var = state.var
        new_state = state
    inv_std = 1.0 / xp.sqrt(var + eps)
    xhat = centred
    xhat *= inv_std
    out = xhat * gamma
    out += beta
    return out, layers.BatchNormCache(xhat, inv_std, gamma, training, new_state)


def running_averages(state: dict, batch: dict, momentum: float) -> dict:
    """Every running average of a pass at once: (1 - momentum) * old + momentum * batch.

    The twin of the two lines of ``layers.batchnorm_forward`` that update one
    layer's running mean and variance. The update is elementwise, so on the
    concatenation of all the arrays each element gets the bits it gets layer
    by layer, in three array operations and two concatenations for the whole
    model.

    Args:
        state: the running averages, full keys (``"up1.mean1"``) -> arrays (D_k,).
        batch: full keys -> this batch's statistics (D_k,), as the blocks return
            them with ``momentum=None``; keys not in ``state`` are left out.
        momentum: weight of this batch.

    Returns:
        a dict full key -> new running average (views into one new array
        where there are several of one dtype).
    """
    keys = [key for key in batch if key in state]
    old, new = [state[key] for key in keys], [batch[key] for key in keys]
    if len(old) != 1 and len({a.dtype for a in old}) == 1 and len({a.dtype for a in new}) == 1:
        xp = namespace(new[0])
        both = (1 - momentum) * xp.concat(old) + momentum * xp.concat(new)
        ends = [0]
        for a in old:
            ends.append(ends[-1] + a.shape[0])
        values = [both[start:end] for start, end in zip(ends[:-1], ends[1:])]
    else:
        values = [(1 - momentum) * a + momentum * b for a, b in zip(old, new)]
    return dict(zip(keys, values))


# ----------------------------------------------------------------------------
# The Gaussian head as one product
# ----------------------------------------------------------------------------
class FusedHeadCache(NamedTuple):
    dense: layers.DenseCache        # the one product for both halves, h [W_mu | W_var]
    softplus: layers.SoftplusCache  # the var half's softplus
    m: int                          # M, where the var half starts
    bn: Any = None                  # BatchNormCache of both halves side by side, or None
    new_state: Any = None           # a batch-normalised head's running averages after this call


HEAD_BN_KEYS = (("gamma_mu", "gamma_var"), ("beta_mu", "beta_var"))
HEAD_STATE_KEYS = (("mean_mu", "mean_var"), ("var_mu", "var_var"))


def gaussian_head_forward(h, p, *, state=None, settings: BlockSettings = BlockSettings()):
    """``blocks.gaussian_head_forward`` with its two products as one.

    The two dense layers share h, so they run as one (N, D) @ (D, 2M)
    product with the weights side by side (joined at each call: the
    parameters stay ``W_mu`` and ``W_var``)::

        [a_mu | a_var] = h [W_mu | W_var] + [b_mu | b_var]
        mu = a_mu,  var = softplus(a_var)

    With batch norm, one batch norm runs over the 2M columns side by side:
    it acts on each column alone, so that is the two halves' batch norms.
    Arguments, returns and running averages as the twin's (with
    ``settings.momentum`` None, the batch's statistics, see
    ``batchnorm_forward``); the cache is a FusedHeadCache.
    """
    xp = namespace(h)
    m = p["W_mu"].shape[1]
    W = xp.concat([p["W_mu"], p["W_var"]], axis=1)
    if "gamma_mu" not in p:
        b = xp.concat([p["b_mu"], p["b_var"]], axis=0)
        a, c_dense = layers.dense_forward(h, W, b)
        var, c_sp = layers.softplus_forward(a[:, m:])
        return (a[:, :m], var), FusedHeadCache(c_dense, c_sp, m, None, {})
    a, c_dense = layers.dense_forward(h, W, None)
    gamma, beta = (xp.concat([p[k] for k in keys], axis=0) for keys in HEAD_BN_KEYS)
    training, momentum = settings.training, settings.momentum
    bn_state = None if not state or (training and momentum is None) else layers.BNState(
        *(xp.concat([state[k] for k in keys], axis=0) for keys in HEAD_STATE_KEYS))
    a, c_bn = batchnorm_forward(a, gamma, beta, state=bn_state, training=training,
                                momentum=momentum, eps=settings.eps)
    new_state = {}
    if c_bn.new_state is not None:
        for keys, value in zip(HEAD_STATE_KEYS, c_bn.new_state):
            new_state[keys[0]], new_state[keys[1]] = value[:m], value[m:]
    var, c_sp = layers.softplus_forward(a[:, m:])
    return (a[:, :m], var), FusedHeadCache(c_dense, c_sp, m, c_bn, new_state)


def gaussian_head_backward(dout, cache: FusedHeadCache):
    """``blocks.gaussian_head_backward`` with one product: returns (dh, dp).

    The forward's one dense layer on the joined weights [W_mu | W_var] goes
    back through one ``layers.dense_backward``, on the joined upstream
    gradient [G_mu | G_a] (G_a: the var half's gradient through the
    softplus); its gradients are cut into the two halves'. With batch norm,
    [G_mu | G_a] first goes back through it (giving the gammas' and betas'
    gradients), and the dense layers have no bias. The gradients' keys come
    in the twin's order.
    """
    xp = namespace(dout[0])
    g_mu, g_var = dout
    (da,) = layers.softplus_backward(g_var, cache.softplus)
    m = cache.m
    if cache.bn is None:
        dh, dW, db = layers.dense_backward(xp.concat([g_mu, da], axis=1), cache.dense)
        return dh, {"W_mu": dW[:, :m], "b_mu": db[:m], "W_var": dW[:, m:], "b_var": db[m:]}
    da, dgamma, dbeta = layers.batchnorm_backward(xp.concat([g_mu, da], axis=1), cache.bn)
    dh, dW, _ = layers.dense_backward(da, cache.dense)
    return dh, {"W_mu": dW[:, :m], "gamma_mu": dgamma[:m], "beta_mu": dbeta[:m],
                "W_var": dW[:, m:], "gamma_var": dgamma[m:], "beta_var": dbeta[m:]}


# ----------------------------------------------------------------------------
# The switch: what the blocks run with Model(fast=True)
# ----------------------------------------------------------------------------
class FastForms:
    """The fast twins of ``blocks.PlainForms``' ops, with the same methods.

    ``BlockSettings(forms=FAST)`` runs them (``Model(fast=True)`` makes such
    settings); each method calls its function through this module, when called.
    """

    def leaky_relu_forward(self, x, *, slope):
        """``leaky_relu_forward`` (this module's)."""
        return leaky_relu_forward(x, slope=slope)

    def batchnorm_forward(self, x, gamma, beta, *, state, training, momentum, eps):
        """``batchnorm_forward`` (this module's)."""
        return batchnorm_forward(x, gamma, beta, state=state, training=training,
                                 momentum=momentum, eps=eps)

    def gaussian_head_forward(self, h, p, *, state=None, settings):
        """``gaussian_head_forward`` (this module's): one product."""
        return gaussian_head_forward(h, p, state=state, settings=settings)

    def gaussian_head_backward(self, dout, cache):
        """``gaussian_head_backward`` (this module's)."""
        return gaussian_head_backward(dout, cache)

    def running_averages(self, state, batch, momentum):
        """``running_averages``: the blocks return their batch statistics
        (``momentum=None``), and the model averages them all at once after a pass."""
        return running_averages(state, batch, momentum)

    def __repr__(self):
        return "fast.FAST"


FAST = FastForms()


# ----------------------------------------------------------------------------
# Batch norm folded into the dense layers (evaluation mode only)
# ----------------------------------------------------------------------------
def fold_batch_norm(block, state, *, eps: float = layers.BN_EPS) -> dict:
    """An MLP block's parameters in evaluation mode with batch norm folded into its dense layers.

    The twin of ``blocks.mlp_forward`` in evaluation mode
    (``BlockSettings(training=False)``). There batch norm is a fixed affine
    map of each unit, BN(a) = gamma * (a - mean) / sqrt(var + eps) + beta =
    a * s + c with s = gamma / sqrt(var + eps) and c = beta - mean * s, so
    BN(h W) = h (W s) + c: one dense layer with every column of W scaled by s
    and bias c. ``mlp_forward`` without batch norm
    (``BlockSettings(batch_norm=False)``) on ``fold_batch_norm(p, s)`` gives
    what it gives on ``p`` with state ``s`` in evaluation mode, up to
    rounding, with no normalisation pass; the L_k estimate uses it
    (``Model.fold_batch_norm``).

    Args:
        block: parameters ``W{j}`` (D, M), ``gamma{j}``, ``beta{j}`` (M,).
        state: running averages ``mean{j}``, ``var{j}`` (M,).
        eps: batch norm's epsilon.

    Returns:
        a new dict ``W{j}`` (D, M), ``b{j}`` (M,): a block without batch norm.
    """
    folded = {}
    for j in range(1, sum(1 for k in block if k.startswith("W")) + 1):
        xp = namespace(block[f"gamma{j}"])
        scale = block[f"gamma{j}"] / xp.sqrt(state[f"var{j}"] + eps)
        folded[f"W{j}"] = block[f"W{j}"] * scale
        folded[f"b{j}"] = block[f"beta{j}"] - state[f"mean{j}"] * scale
    return folded


def fold_head_batch_norm(head, state, *, eps: float = layers.BN_EPS) -> dict:
    """A batch-normalised Gaussian head in evaluation mode as a plain head (``W_*``, ``b_*``).

    The twin of ``blocks.gaussian_head_forward`` in evaluation mode. As
    ``fold_batch_norm``, half by half: W_mu s_mu with bias
    beta_mu - mean_mu s_mu, s_mu = gamma_mu / sqrt(var_mu + eps), and the same for var.

    Args:
        head: ``W_mu``, ``W_var`` (D, M), ``gamma_*``, ``beta_*`` (M,).
        state: ``mean_mu``, ``var_mu``, ``mean_var``, ``var_var`` (M,).
        eps: batch norm's epsilon.

    Returns:
        a new dict ``W_mu``, ``b_mu``, ``W_var``, ``b_var``.
    """
    folded = {}
    for half in ("mu", "var"):
        xp = namespace(head[f"gamma_{half}"])
        scale = head[f"gamma_{half}"] / xp.sqrt(state[f"var_{half}"] + eps)
        folded[f"W_{half}"] = head[f"W_{half}"] * scale
        folded[f"b_{half}"] = head[f"beta_{half}"] - state[f"mean_{half}"] * scale
    return folded


# ----------------------------------------------------------------------------
# Adam in place, and on one flat buffer
# ----------------------------------------------------------------------------
def adam_update_(params: dict, grads: dict, state: dict,
                 config: optim.AdamConfig = optim.AdamConfig()):
    """``optim.adam_update``, bit for bit, but in place.

    Parameters and moments are updated where they lie, with in-place
    operators (part of the array API): the same operations in the same
    order. For a training loop that owns its arrays; returns (params, state)
    for symmetry.
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


class FlatAdam:
    """``optim.adam_update`` in place over one flat buffer of all parameters.

    The parameters, and Adam's two moments, live in one contiguous buffer
    each (``flat.py``); ``params`` is the usual dict, of views into the
    buffer, so the model reads it as before and sees every update. On a GPU
    (``whole_buffer``, the default for CuPy arrays) a step packs the
    gradients into one buffer (one concatenation) and runs ``adam_update_``
    once on the whole of it; on a CPU it runs ``adam_update_`` on the views,
    array by array. Either way the bits are those of ``optim.adam_update``
    array by array (tested). With ``whole_buffer``, gradient clipping takes
    the norm of the whole buffer at once, which adds in another order than
    ``optim.global_norm`` over the dict (equal to rounding)::

        opt = FlatAdam(params, config=AdamConfig(lr=0.002))
        loss, grads, stats = model.loss_and_grads(opt.params, state, x)
        opt.step(grads)
        checkpoint.save(..., params=opt.params, opt_state=opt.state_dict())
    """

    def __init__(self, params: dict, state: dict | None = None,
                 config: optim.AdamConfig = optim.AdamConfig(), *,
                 whole_buffer: bool | None = None):
        """Copy ``params`` (and a saved ``optim.adam_init``-style ``state``) into flat buffers.

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
        """One Adam step in place, on gradients clipped first (``optim.clip_gradients``).

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
        adam_update_(params, optim.clip_gradients(grads, max_grad_norm, clip_value), state,
                     self.config)
        self.t = state["t"]

    def state_dict(self) -> dict:
        """Adam's state as ``optim.adam_init`` makes it: step count and per-parameter moments
        (views)."""
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
    def from_host(cls, params: dict, state: dict, asarray,
                  config: optim.AdamConfig = optim.AdamConfig(), *,
                  whole_buffer: bool | None = None) -> "FlatAdam":
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
