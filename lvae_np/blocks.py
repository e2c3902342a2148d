"""Building blocks of the models: MLP block, Gaussian head, row tiling, and the blocks' dicts.

A composite follows the op contract one level up: its parameters come in as a
dict name -> array (its positional input ``p``), and its backward returns the
gradient of each positional input, the parameters' as a dict with the same keys::

    h, cache = mlp_forward(x, p, state=s, settings=BlockSettings())
    dx, dp = mlp_backward(dh, cache)             # dp.keys() == p.keys()

How the blocks run (batch norm on or off, batch or running statistics, its
momentum and epsilon, the leaky ReLU's slope, and the forms of the ops) comes
in one ``BlockSettings`` value, which a model makes once per pass
(``Model.settings``) and hands down to every block and step.

The forms: what this module and ``layers`` define are the textbook forms,
which run by default (``PLAIN``). A model built with ``Model(fast=True)``, as
training builds it, hands the blocks ``fast.FAST`` instead: the fused and
in-place twins of the leaky ReLU's and batch norm's forward passes and of the
Gaussian head (``fast.py``, where a test shows each equal to its twin here).

The MLP block is the paper's deterministic block: two layers of
Dense -> BatchNorm -> leaky ReLU. With batch norm the dense layers have no
bias, since batch norm's beta plays that part (and a bias would get an exactly
zero gradient). Without batch norm each layer is Dense (with bias) -> leaky ReLU.

Keys of an MLP block's parameters, for layer j = 1, 2:
``W{j}`` (in, out); with batch norm ``gamma{j}`` and ``beta{j}`` (out,),
without it ``b{j}`` (out,). Its state (batch norm only): ``mean{j}``, ``var{j}``.

A Gaussian head's keys: ``W_mu``, ``W_var`` (in, M) and the biases ``b_mu``,
``b_var`` (M,); a head with batch norm (Dense -> BatchNorm -> identity or
softplus, as the original code's heads) has no biases but ``gamma_mu``,
``beta_mu``, ``gamma_var``, ``beta_var`` (M,), and its state is
``mean_mu``, ``var_mu``, ``mean_var``, ``var_var`` (M,): the running mean and
variance of the mu half and of the var half. A head is batch-normalised
exactly when its parameters hold ``gamma_mu``.

A model keeps all its blocks' parameters (and its batch-norm state) in one
flat dict whose keys name the block, then the array: ``"down1.W1"``,
``"p1.W_mu"``. The last section cuts it into blocks and puts the gradients
back together (none of its functions changes the dicts it is given)::

    block = subtree(params, "down1")              # {"W1": ..., "gamma1": ..., ...}
    h, cache = mlp_forward(z, block, settings=settings)
    dz, dblock = mlp_backward(dh, cache)
    grads = merge([with_prefix("down1", dblock), ...])   # {"down1.W1": ..., ...}
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

from . import layers
from .backend import namespace


# ----------------------------------------------------------------------------
# Initialisation (NumPy generator in, arrays of namespace xp out)
# ----------------------------------------------------------------------------
INITS = ("glorot-uniform", "original")  # the weight initialisations (``init_mlp``)
RELU_GAIN = math.sqrt(2.0)               # the original code's gain in the MLP blocks
ORIGINAL_VAR_BIAS = 1.0                  # its variance heads' initial bias


def glorot_uniform(rng, fan_in: int, fan_out: int, xp, dtype):
    """W ~ U(-a, a), a = sqrt(6 / (fan_in + fan_out)): Lasagne's default for dense layers."""
    a = math.sqrt(6.0 / (fan_in + fan_out))
    return xp.asarray(rng.uniform(-a, a, size=(fan_in, fan_out)), dtype=dtype)


def glorot_normal(rng, fan_in: int, fan_out: int, xp, dtype, gain: float = 1.0):
    """W ~ N(0, s^2), s = gain * sqrt(2 / (fan_in + fan_out)): Lasagne's GlorotNormal."""
    s = gain * math.sqrt(2.0 / (fan_in + fan_out))
    return xp.asarray(rng.normal(0.0, s, size=(fan_in, fan_out)), dtype=dtype)


def init_weights(rng, fan_in: int, fan_out: int, xp, dtype, *, init: str = "glorot-uniform",
                 gain: float = 1.0):
    """A dense layer's weights (fan_in, fan_out): Glorot-uniform, or under ``init="original"``
    Glorot-normal with ``gain`` (the ReLU gain sqrt(2) in the MLP blocks, 1 elsewhere)."""
    if init == "original":
        return glorot_normal(rng, fan_in, fan_out, xp, dtype, gain)
    return glorot_uniform(rng, fan_in, fan_out, xp, dtype)


def init_mlp(rng, sizes, *, batch_norm: bool, xp, dtype, init: str = "glorot-uniform"):
    """Parameters and state of an MLP block with layer widths ``sizes`` = (in, h1, h2).

    ``init``: ``"glorot-uniform"`` (gain 1) or ``"original"`` (Glorot-normal
    with the ReLU gain sqrt(2), as the original code); biases and beta 0, gamma 1.
    """
    params, state = {}, {}
    for j, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        params[f"W{j}"] = init_weights(rng, d_in, d_out, xp, dtype, init=init, gain=RELU_GAIN)
        if batch_norm:
            params[f"gamma{j}"] = xp.ones((d_out,), dtype=dtype)
            params[f"beta{j}"] = xp.zeros((d_out,), dtype=dtype)
            state[f"mean{j}"] = xp.zeros((d_out,), dtype=dtype)
            state[f"var{j}"] = xp.ones((d_out,), dtype=dtype)
        else:
            params[f"b{j}"] = xp.zeros((d_out,), dtype=dtype)
    return params, state


def init_gaussian_head(rng, d_in: int, d_out: int, *, xp, dtype, batch_norm: bool = False,
                       init: str = "glorot-uniform", output: bool = False):
    """Parameters of a Gaussian head: ``W_mu``, ``b_mu``, ``W_var``, ``b_var``.

    With ``batch_norm`` the biases give way to ``gamma_mu``, ``beta_mu``,
    ``gamma_var``, ``beta_var`` (its state: ``init_head_state``). Under
    ``init="original"``, as the released code: the weights of a latent head
    are Glorot-uniform (gain 1) and those of the output layer (``output``)
    Glorot-normal (gain 1); the variance half starts at bias 1, so var =
    softplus(1) at first, except with ``batch_norm``, which removes that
    bias: beta starts at 0.
    """
    kind = "original" if init == "original" and output else "glorot-uniform"
    W_mu = init_weights(rng, d_in, d_out, xp, dtype, init=kind)
    W_var = init_weights(rng, d_in, d_out, xp, dtype, init=kind)
    if batch_norm:
        return {"W_mu": W_mu, "gamma_mu": xp.ones((d_out,), dtype=dtype),
                "beta_mu": xp.zeros((d_out,), dtype=dtype),
                "W_var": W_var, "gamma_var": xp.ones((d_out,), dtype=dtype),
                "beta_var": xp.zeros((d_out,), dtype=dtype)}
    var_bias = ORIGINAL_VAR_BIAS if init == "original" else 0.0
    return {"W_mu": W_mu, "b_mu": xp.zeros((d_out,), dtype=dtype), "W_var": W_var,
            "b_var": xp.full((d_out,), var_bias, dtype=dtype)}


def init_head_state(d_out: int, *, xp, dtype) -> dict:
    """A batch-normalised head's running averages before any batch: means 0, variances 1."""
    return {"mean_mu": xp.zeros((d_out,), dtype=dtype), "var_mu": xp.ones((d_out,), dtype=dtype),
            "mean_var": xp.zeros((d_out,), dtype=dtype),
            "var_var": xp.ones((d_out,), dtype=dtype)}


# ----------------------------------------------------------------------------
# The forms of the ops: plain (here and in layers) or fast (fast.py)
# ----------------------------------------------------------------------------
class PlainForms:
    """The ops whose form a model chooses, in their plain forms: the textbook ones.

    The blocks call these ops through ``settings.forms``, an object with
    these methods: ``PLAIN`` (the default), or ``fast.FAST``, whose methods
    run the fused and in-place twins. A model picks one, once, when it is
    built (``Model(fast=...)``). The backward passes of the leaky ReLU and of
    batch norm are ``layers``' for both; the heads' differ, so a composite
    that runs a head keeps the forms in its cache for its backward.

    Each method calls its function through its module, when called
    (``layers.leaky_relu_forward``, this module's ``gaussian_head_forward``),
    so that a function put in its place there (a course's
    ``gradcheck.grade(using=...)``) reaches every block.
    """

    # The batch-norm running averages: None here, as each batch norm updates its
    # own (``layers.batchnorm_forward``); the fast forms name the function that
    # updates them all at once after a pass (``fast.running_averages``).
    running_averages = None

    def leaky_relu_forward(self, x, *, slope):
        """``layers.leaky_relu_forward``."""
        return layers.leaky_relu_forward(x, slope=slope)

    def batchnorm_forward(self, x, gamma, beta, *, state, training, momentum, eps):
        """``layers.batchnorm_forward``."""
        return layers.batchnorm_forward(x, gamma, beta, state=state, training=training,
                                        momentum=momentum, eps=eps)

    def gaussian_head_forward(self, h, p, *, state=None, settings):
        """``gaussian_head_forward``: two dense layers."""
        return gaussian_head_forward(h, p, state=state, settings=settings)

    def gaussian_head_backward(self, dout, cache):
        """``gaussian_head_backward``."""
        return gaussian_head_backward(dout, cache)

    def __repr__(self):
        return "blocks.PLAIN"


PLAIN = PlainForms()


# ----------------------------------------------------------------------------
# How the blocks run
# ----------------------------------------------------------------------------
@dataclass(frozen=True)
class BlockSettings:
    """The settings every block of a pass runs with (``Model.settings`` makes them).

    An MLP block uses them all; a Gaussian head takes batch norm's
    ``training``, ``momentum`` and ``eps`` (whether a head has batch norm is
    said by its parameters, see the module docstring).
    """

    batch_norm: bool = True                      # MLP blocks: Dense -> BN -> lrelu (or no BN)
    training: bool = True                        # batch statistics (True) or the running averages
    momentum: float | None = layers.BN_MOMENTUM  # this batch's weight in the new running averages;
                                                 # None (fast forms only): the caches hold the
                                                 # batch's statistics instead
    slope: float = layers.LEAKY_RELU_SLOPE       # the leaky ReLU's slope for negative inputs
    eps: float = layers.BN_EPS                   # batch norm's epsilon
    forms: Any = PLAIN                           # the ops' forms: PLAIN, or fast.FAST


# ----------------------------------------------------------------------------
# MLP block
# ----------------------------------------------------------------------------
class MLPLayerCache(NamedTuple):
    dense: layers.DenseCache
    bn: Any                   # BatchNormCache, or None without batch norm
    act: layers.LeakyReluCache


class MLPCache(NamedTuple):
    layers: tuple             # one MLPLayerCache per layer
    new_state: dict           # running averages after this call (empty without batch norm;
                              # momentum None, fast forms only: the batch's statistics)


def _layer_count(p) -> int:
    return sum(1 for k in p if k.startswith("W"))


def mlp_forward(x, p, *, state=None, settings: BlockSettings):
    """The deterministic block: for each layer j, h <- lrelu(BN(h W_j)) (or lrelu(h W_j + b_j)).

    Args:
        x: array of shape (N, D_in).
        p: parameters (see the module docstring).
        state: running averages ``mean{j}``, ``var{j}``; needed in evaluation mode.
        settings: ``settings.batch_norm`` says whether the block has batch norm;
            ``training`` picks batch statistics (True) or the running averages;
            ``momentum`` is this batch's weight in the new running averages
            (see ``layers.batchnorm_forward``); ``slope`` is the leaky ReLU's
            and ``eps`` batch norm's; ``forms`` runs batch norm's and the
            leaky ReLU's forward passes (``PLAIN``: ``layers``').

    Returns:
        h: array of shape (N, D_out).
        cache: MLPCache; ``cache.new_state`` holds the updated running averages.
    """
    h, caches, new_state = x, [], {}
    for j in range(1, _layer_count(p) + 1):
        if settings.batch_norm:
            a, c_dense = layers.dense_forward(h, p[f"W{j}"], None)
            bn_state = None if state is None else layers.BNState(state[f"mean{j}"], state[f"var{j}"])
            a, c_bn = settings.forms.batchnorm_forward(a, p[f"gamma{j}"], p[f"beta{j}"],
                                                       state=bn_state, training=settings.training,
                                                       momentum=settings.momentum,
                                                       eps=settings.eps)
            if c_bn.new_state is not None:
                new_state[f"mean{j}"], new_state[f"var{j}"] = c_bn.new_state
        else:
            a, c_dense = layers.dense_forward(h, p[f"W{j}"], p[f"b{j}"])
            c_bn = None
        h, c_act = settings.forms.leaky_relu_forward(a, slope=settings.slope)
        caches.append(MLPLayerCache(c_dense, c_bn, c_act))
    return h, MLPCache(tuple(caches), new_state)


def mlp_backward(dout, cache: MLPCache, *, input_grad: bool = True):
    """Gradients of the block, layer by layer in reverse: returns (dx, dp).

    ``input_grad=False`` skips dx (returned as None) where the block's input is
    the data, saving the first layer's largest matrix product.
    """
    dp, dh = {}, dout
    for j in range(len(cache.layers), 0, -1):
        c = cache.layers[j - 1]
        (da,) = layers.leaky_relu_backward(dh, c.act)
        need = input_grad or j > 1
        if c.bn is not None:
            da, dp[f"gamma{j}"], dp[f"beta{j}"] = layers.batchnorm_backward(da, c.bn)
            dh, dp[f"W{j}"], _ = layers.dense_backward(da, c.dense, input_grad=need)
        else:
            dh, dp[f"W{j}"], dp[f"b{j}"] = layers.dense_backward(da, c.dense, input_grad=need)
    return dh, dp


# ----------------------------------------------------------------------------
# Gaussian head
# ----------------------------------------------------------------------------
class GaussianHeadCache(NamedTuple):
    mu: layers.DenseCache            # a_mu = h W_mu + b_mu (no bias with batch norm)
    var: layers.DenseCache           # a_var = h W_var + b_var (no bias with batch norm)
    softplus: layers.SoftplusCache   # var = softplus(a_var)
    bn_mu: Any = None                # BatchNormCache of a_mu, or None without batch norm
    bn_var: Any = None               # BatchNormCache of a_var, or None
    new_state: Any = None            # a batch-normalised head's running averages after this call


def gaussian_head_forward(h, p, *, state=None, settings: BlockSettings = BlockSettings()):
    """mu = h W_mu + b_mu, var = softplus(h W_var + b_var): a diagonal Gaussian from features.

    Two dense layers on the same features, the second through a softplus so
    that the variance is positive. A head with batch norm (its parameters
    hold ``gamma_mu``; see the module docstring) is the original code's
    Dense -> BatchNorm -> (identity or softplus), the dense layers without bias::

        mu = BN(h W_mu; gamma_mu, beta_mu),  var = softplus(BN(h W_var; gamma_var, beta_var))

    Args:
        h: array of shape (N, D).
        p: ``W_mu``, ``W_var`` (D, M) and ``b_mu``, ``b_var`` (M,), or with
            batch norm ``gamma_mu``, ``beta_mu``, ``gamma_var``, ``beta_var`` (M,).
        state: a batch-normalised head's running averages (``mean_mu``,
            ``var_mu``, ``mean_var``, ``var_var``, (M,) each); needed in
            evaluation mode; unused without batch norm.
        settings: a batch-normalised head takes batch norm's ``training``,
            ``momentum`` and ``eps`` from them (as ``mlp_forward``); the
            default is training mode with the default momentum and epsilon.

    Returns:
        out: (mu, var), each of shape (N, M); var is a variance (see gaussian.py).
        cache: GaussianHeadCache; ``cache.new_state`` holds a batch-normalised
            head's new running averages ({} without batch norm or state).
    """
    if "gamma_mu" not in p:
        mu, c_mu = layers.dense_forward(h, p["W_mu"], p["b_mu"])
        a, c_var = layers.dense_forward(h, p["W_var"], p["b_var"])
        var, c_sp = layers.softplus_forward(a)
        return (mu, var), GaussianHeadCache(c_mu, c_var, c_sp, None, None, {})
    a_mu, c_mu = layers.dense_forward(h, p["W_mu"], None)     # no biases: the betas play
    a_var, c_var = layers.dense_forward(h, p["W_var"], None)  # their part
    mu, c_bn_mu = _head_batchnorm(a_mu, p, state, "mu", settings)
    a, c_bn_var = _head_batchnorm(a_var, p, state, "var", settings)
    var, c_sp = layers.softplus_forward(a)
    new_state = {}
    for half, c_bn in (("mu", c_bn_mu), ("var", c_bn_var)):
        if c_bn.new_state is not None:
            new_state[f"mean_{half}"], new_state[f"var_{half}"] = c_bn.new_state
    return (mu, var), GaussianHeadCache(c_mu, c_var, c_sp, c_bn_mu, c_bn_var, new_state)


def _head_batchnorm(a, p, state, half: str, settings: BlockSettings):
    """Batch norm of one half of a head (``half``: "mu" or "var"), its own parameters and state."""
    bn_state = layers.BNState(state[f"mean_{half}"], state[f"var_{half}"]) if state else None
    return layers.batchnorm_forward(a, p[f"gamma_{half}"], p[f"beta_{half}"], state=bn_state,
                                    training=settings.training, momentum=settings.momentum,
                                    eps=settings.eps)


def gaussian_head_backward(dout, cache: GaussianHeadCache):
    """With dout = (G_mu, G_var): returns (dh, dp).

    G_a = G_var * softplus'(a_var) is the gradient reaching a_var (with batch
    norm, G_mu and G_a first go back through it, giving the gammas' and
    betas' gradients). h feeds both dense layers, so dh is the sum of the two
    layers' input gradients.
    """
    g_mu, g_var = dout
    (g_a,) = layers.softplus_backward(g_var, cache.softplus)
    if cache.bn_mu is None:
        dh_mu, dW_mu, db_mu = layers.dense_backward(g_mu, cache.mu)
        dh_var, dW_var, db_var = layers.dense_backward(g_a, cache.var)
        return dh_mu + dh_var, {"W_mu": dW_mu, "b_mu": db_mu, "W_var": dW_var, "b_var": db_var}
    g_mu, dgamma_mu, dbeta_mu = layers.batchnorm_backward(g_mu, cache.bn_mu)
    g_a, dgamma_var, dbeta_var = layers.batchnorm_backward(g_a, cache.bn_var)
    dh_mu, dW_mu, _ = layers.dense_backward(g_mu, cache.mu)
    dh_var, dW_var, _ = layers.dense_backward(g_a, cache.var)
    return dh_mu + dh_var, {"W_mu": dW_mu, "gamma_mu": dgamma_mu, "beta_mu": dbeta_mu,
                            "W_var": dW_var, "gamma_var": dgamma_var, "beta_var": dbeta_var}


# ----------------------------------------------------------------------------
# Gaussian block: an MLP block, then a Gaussian head (every q and p in the models)
# ----------------------------------------------------------------------------
class GaussianBlockCache(NamedTuple):
    mlp: MLPCache               # the block; ``mlp.new_state`` holds its new running averages
    head: Any                   # the head's cache (GaussianHeadCache with the plain forms)
    forms: Any                  # the forms it ran (settings.forms), whose head backward to run


def gaussian_block_forward(h, block, head, *, state=None, head_state=None,
                           settings: BlockSettings):
    """A diagonal Gaussian from an MLP block and a head: (mu, var) = head(block(h)).

    Every conditional Gaussian of the models is one: p(z_i | z_{i+1}) from
    z_{i+1}, and the VAE's q(z_i | z_{i-1}) from z_{i-1}.

    Args:
        h: array of shape (N, D_in).
        block: the MLP block's parameters (see the module docstring).
        head: the Gaussian head's parameters (see ``gaussian_head_forward``).
        state, settings: as for ``mlp_forward``; the head is ``settings.forms``'
            (``gaussian_head_forward`` with the plain forms) and takes what it needs.
        head_state: a batch-normalised head's running averages (or None).

    Returns:
        out: (mu, var), each of shape (N, M).
        cache: GaussianBlockCache.
    """
    g, c_mlp = mlp_forward(h, block, state=state, settings=settings)
    out, c_head = settings.forms.gaussian_head_forward(g, head, state=head_state,
                                                       settings=settings)
    return out, GaussianBlockCache(c_mlp, c_head, settings.forms)


def gaussian_block_backward(dout, cache: GaussianBlockCache, *, input_grad: bool = True):
    """With dout = (G_mu, G_var): returns (dh, dblock, dhead), through the head, then the block."""
    dg, dhead = cache.forms.gaussian_head_backward(dout, cache.head)
    dh, dblock = mlp_backward(dg, cache.mlp, input_grad=input_grad)
    return dh, dblock, dhead


# ----------------------------------------------------------------------------
# Repeating rows: k importance samples per input share the input's computations
# ----------------------------------------------------------------------------
class TileCache(NamedTuple):
    k: int


def tile_rows_forward(a, *, k: int):
    """Stack k copies of a along the batch axis, sample-major: row s*N + n is a[n].

    Args:
        a: array of shape (N, D).
        k: number of copies.

    Returns:
        out: array of shape (k*N, D).
        cache: TileCache(k).
    """
    xp = namespace(a)
    if k == 1:
        return a, TileCache(k)
    # (k, N, D) as a broadcast view of a, then one copy as (k*N, D).
    tiled = xp.broadcast_to(xp.expand_dims(a, axis=0), (k,) + tuple(a.shape))
    return xp.reshape(tiled, (k * a.shape[0],) + tuple(a.shape[1:])), TileCache(k)


def tile_rows_backward(dout, cache: TileCache):
    """dL/da = sum over the k copies: dout reshaped to (k, N, D), summed over axis 0."""
    xp = namespace(dout)
    k = cache.k
    if k == 1:
        return (dout,)
    return (xp.sum(xp.reshape(dout, (k, dout.shape[0] // k) + tuple(dout.shape[1:])), axis=0),)


# ----------------------------------------------------------------------------
# Parameter trees: a model's flat dict cut into its blocks, and put back together
# ----------------------------------------------------------------------------
SEP = "."


def subtree(tree: dict, prefix: str) -> dict:
    """The entries of ``tree`` under ``prefix.``, with the prefix removed.

    That is ``{k[len(prefix) + 1:]: v for k, v in tree.items() if
    k.startswith(prefix + ".")}``, with the keys picked once per set of keys
    and prefix (``_keys_under``).

    Args:
        tree: a flat dict name -> array.
        prefix: a block's name, e.g. ``"up1"``.

    Returns:
        a new dict short name -> array (empty when no key is under ``prefix``).
    """
    return {short: tree[k] for k, short in _keys_under(tuple(tree), prefix)}


@lru_cache(maxsize=1024)
def _keys_under(keys: tuple, prefix: str) -> tuple:
    cut = len(prefix) + len(SEP)
    return tuple((k, k[cut:]) for k in keys if k.startswith(prefix + SEP))


def with_prefix(prefix: str, sub: dict) -> dict:
    """A block's dict with full keys: ``{"W1": a}`` -> ``{"up1.W1": a}``."""
    return {f"{prefix}{SEP}{k}": v for k, v in sub.items()}


def merge(trees) -> dict:
    """One flat dict from several; where a key appears more than once, the values are summed.

    A block used twice in one forward pass (which the paper's models never
    do, but a variant may) gets the sum of its two gradients, in the order
    given.

    Args:
        trees: an iterable of flat dicts.

    Returns:
        a new dict.
    """
    out: dict = {}
    for tree in trees:
        for k, v in tree.items():
            out[k] = v if k not in out else out[k] + v
    return out


def block_names(tree: dict) -> list:
    """The block names of a flat dict, in the order they first appear: ``["up1", "q1", ...]``."""
    seen: dict = {}
    for k in tree:
        seen.setdefault(k.split(SEP, 1)[0], None)
    return list(seen)
