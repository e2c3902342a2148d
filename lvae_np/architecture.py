"""The models' parameters: each block's name, its shapes under a config, its initial values.

Parameters are one flat dict of arrays; its keys name the block::

    up{i}.*    i = 1..L  the bottom-up MLP block under z_i (input x for i = 1)
    q{i}.*     i = 1..L  the Gaussian head of q(z_i | .) (LVAE: of mu_hat_i, var_hat_i)
    down{i}.*  i = 0..L-1  the top-down MLP block on z_{i+1}
    p{i}.*     i = 1..L-1  the Gaussian head of p(z_i | z_{i+1})
    p0.*       the output layer: W, b (Bernoulli logits) or a Gaussian head
    tdown{i}.*, tp{i}.*  i = 1..L-1  LVAE with ``shared_top_down=False`` only:
               the top-down inference path's own block and head

``state`` holds the batch-norm running averages under the same prefixes
(a head's only with ``head_batch_norm``: ``q1.mean_mu``, ``q1.var_mu``,
``q1.mean_var``, ``q1.var_var``; see ``blocks``).

Widths (config ``latent`` D_i, ``hidden`` H_i, i = 1..L):

* up_i: input x (i = 1), d_{i-1} of width H_{i-1} (LVAE), mu_hat_{i-1} of
  width D_{i-1} (LVAE with ``only_mu_up``) or z_{i-1} (VAE); width H_i.
* down_i: input z_{i+1}; width H_{i+1} (``generative_widths="mirror"``: the
  decoder mirrors the encoder, z5 -> 32 -> z4 ... z1 -> 512 -> x) or, for the
  LVAE with ``"original"``, H_i (one size wider, as the original code's
  LVAE: 512/256/128/64 above z1..z4). down_0 has width H_1 either way.
  The blocks tdown_i (unshared top-down path) have the mirror width H_{i+1}
  either way, as in the released code (only its generative blocks are wider).
"""
from __future__ import annotations

from . import blocks
from .blocks import with_prefix


def down_width(config, i: int) -> int:
    """The width of block down{i}, i = 0..L-1."""
    if i > 0 and config.kind == "lvae" and config.generative_widths == "original":
        return config.hidden[i - 1]
    return config.hidden[i]


def up_input_width(config, i: int) -> int:
    """The input width of block up{i}, i = 1..L."""
    if i == 1:
        return config.x_dim
    if config.kind == "vae" or config.only_mu_up:
        return config.latent[i - 2]
    return config.hidden[i - 2]


def init_params(config, rng, *, xp, dtype):
    """Fresh parameters and state of the model of ``config``.

    Weights Glorot-uniform (or, with ``init="original"``, Glorot-normal with
    the ReLU gain in the MLP blocks, and variance-head bias 1 where the head
    has no batch norm; see ``blocks.init_gaussian_head``), zero biases,
    batch norm's gamma 1 and beta 0, running means 0 and variances 1. The
    draws come in a fixed order: the bottom-up blocks and q heads from z_1
    up, the generative blocks and p heads from the top down, then (unshared
    top-down path only) tdown/tp from the top down; so the options that add
    blocks leave the other blocks' initial values as they are.

    Args:
        config: a ModelConfig.
        rng: a NumPy Generator.
        xp, dtype: the arrays' namespace and dtype.

    Returns:
        (params, state): flat dicts name -> array (see the module docstring).
    """
    c = config
    params, state = {}, {}

    def add_block(name, sizes):
        p, s = blocks.init_mlp(rng, sizes, batch_norm=c.batch_norm, xp=xp, dtype=dt,
                                 init=c.init)
        params.update(with_prefix(name, p))
        state.update(with_prefix(name, s))

    def add_head(name, d_in, d_out):
        params.update(with_prefix(name, blocks.init_gaussian_head(
            rng, d_in, d_out, xp=xp, dtype=dt, batch_norm=c.head_batch_norm, init=c.init)))
        if c.head_batch_norm:
            state.update(with_prefix(name, blocks.init_head_state(d_out, xp=xp, dtype=dt)))

    dt = dtype
    for i in range(1, c.n_layers + 1):  # bottom-up blocks and q heads
        add_block(f"up{i}", (up_input_width(c, i), c.hidden[i - 1], c.hidden[i - 1]))
        add_head(f"q{i}", c.hidden[i - 1], c.latent[i - 1])
    for i in range(c.n_layers - 1, -1, -1):  # top-down blocks and p heads
        width = down_width(c, i)
        add_block(f"down{i}", (c.latent[i], width, width))
        if i > 0:
            add_head(f"p{i}", width, c.latent[i - 1])
        elif c.likelihood == "gaussian":  # the output layer: never batch-normalised
            params.update(with_prefix("p0", blocks.init_gaussian_head(
                rng, width, c.x_dim, xp=xp, dtype=dt, init=c.init, output=True)))
        else:
            params.update(with_prefix("p0", {
                "W": blocks.init_weights(rng, width, c.x_dim, xp, dt, init=c.init),
                "b": xp.zeros((c.x_dim,), dtype=dt)}))
    if c.kind == "lvae" and not c.shared_top_down:
        for i in range(c.n_layers - 1, 0, -1):  # the top-down inference path's own blocks
            width = c.hidden[i]   # the mirror width, whatever generative_widths says
            add_block(f"tdown{i}", (c.latent[i], width, width))
            add_head(f"tp{i}", width, c.latent[i - 1])
    return params, state
