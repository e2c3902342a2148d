"""One layer of the models as an op pair, and below them each model's pass as a loop over them.

The steps: the bottom-up step, the LVAE's ladder and top steps, the VAE's
step and KL step, the output layer. Each follows the op contract of
``layers.py``::

    out, cache = step_forward(inputs..., block, head, *, settings)
    grads = step_backward(dout, cache)   # one per positional input; a block's as a dict

The passes (the last section): the LVAE's top-down pass and the VAE's pass,
each a plain loop over its steps with the paper's equations beside the
lines. ``models.Model`` runs them after the bottom-up values
(``Model.bottom_up_forward``).

Layers are numbered as in the paper: z_1 next to the data, z_L at the top.
Shapes: R rows (samples times inputs), D_i the size of z_i. ``block`` and
``head`` are the dicts of one MLP block and one Gaussian head (cut from the
model's flat dict with ``blocks.subtree``); ``settings`` is the blocks'
``blocks.BlockSettings`` (batch norm, training or evaluation, momentum,
slope, eps, and the forms of the ops: the plain ones, or the fast ones of
``fast.py``, which a step runs through ``settings.forms`` and keeps in its
cache for its backward). ``state`` and ``head_state`` are the block's and
the head's batch-norm running averages (None where they have none; a head
has some only with batch norm, see ``blocks.gaussian_head_forward``).

This module holds the paper's form only. The released code's variants
(``variants.py``) replace a step or a piece of wiring, and the model picks
them once, when it is built: the LVAE's pass runs the ladder step it is
given (``LadderLayer`` here, or ``variants.UnsharedLadderLayer``), and the
bottom-up pass the wiring it is given (``UpInput`` here, or
``variants.MuUpInput``).

The KL estimators (``estimator``): ``"analytic"``, the closed form
KL(q || p), or ``"mc"``, the single-sample estimate log q(z) - log p(z) at the
sample (see ``gaussian.kl_sample_forward``). The closed form does not depend
on the sample, so its z-gradient is absent (returned as None by
``kl_term_backward``) rather than a zero array.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from . import blocks, gaussian, layers, likelihoods
from .backend import Array, namespace
from .blocks import BlockSettings, merge, with_prefix

KL_ESTIMATORS = ("analytic", "mc")


# ----------------------------------------------------------------------------
# The KL term of one layer
# ----------------------------------------------------------------------------
class KLTermCache(NamedTuple):
    estimator: str     # "analytic" or "mc"
    standard: bool     # p = N(0, I) (the top layer)
    kl: Any            # the cache of the op used (KLCache or KLSampleCache)


def kl_term_forward(z, mu_q, var_q, mu_p=None, var_p=None, *, estimator: str):
    """KL_i per unit: KL(q(z_i | .) || p(z_i | .)), closed form or at the sample z.

    Args:
        z: the sample z_i ~ q, shape (R, D_i) (unused by the closed form).
        mu_q, var_q: q's mean and variance, shape (R, D_i).
        mu_p, var_p: p's, shape (R, D_i); None for p = N(0, I) (the top layer).
        estimator: "analytic" or "mc".

    Returns:
        kl: shape (R, D_i).
        cache: KLTermCache.
    """
    standard = mu_p is None
    if estimator == "analytic":
        if standard:
            kl, c = gaussian.kl_standard_normal_forward(mu_q, var_q)
        else:
            kl, c = gaussian.kl_normal_forward(mu_q, var_q, mu_p, var_p)
    else:
        if standard:
            xp = namespace(z)
            mu_p, var_p = xp.zeros_like(z), xp.ones_like(z)
        kl, c = gaussian.kl_sample_forward(z, mu_q, var_q, mu_p, var_p)
    return kl, KLTermCache(estimator, standard, c)


def kl_term_backward(dout, cache: KLTermCache):
    """Returns (dz, dmu_q, dvar_q, dmu_p, dvar_p); dz is None for the closed form,
    dmu_p and dvar_p are None for p = N(0, I)."""
    if cache.estimator == "analytic":
        if cache.standard:
            dmu_q, dvar_q = gaussian.kl_standard_normal_backward(dout, cache.kl)
            return None, dmu_q, dvar_q, None, None
        return (None,) + gaussian.kl_normal_backward(dout, cache.kl)
    dz, dmu_q, dvar_q, dmu_p, dvar_p = gaussian.kl_sample_backward(dout, cache.kl)
    if cache.standard:
        return dz, dmu_q, dvar_q, None, None
    return dz, dmu_q, dvar_q, dmu_p, dvar_p


def add_if_present(a, b):
    """a + b, where b may be None (a gradient that does not exist)."""
    return a if b is None else a + b


# ----------------------------------------------------------------------------
# The deterministic bottom-up step: d_i = MLP(d_{i-1}), (mu_hat_i, var_hat_i) = head(d_i)
# ----------------------------------------------------------------------------
class BottomUpStepCache(NamedTuple):
    mlp: blocks.MLPCache             # d_i = MLP(d_{i-1})
    head: Any                        # (mu_hat_i, var_hat_i) = head(d_i): its cache
    input_grad: bool                 # False where d_{i-1} is the data x
    forms: Any                       # settings.forms, whose head backward to run


def bottom_up_step_forward(d_below, block, head, *, state=None, head_state=None,
                           settings: BlockSettings, input_grad: bool = True):
    """One layer of the deterministic upward pass.

    ``d_i = MLP_i(d_{i-1})`` (d_0 = x) and ``(mu_hat_i, var_hat_i) = head_i(d_i)``:
    the LVAE's bottom-up estimate for layer i; for the VAE, with i = 1, q(z_1 | x).

    Args:
        d_below: d_{i-1}, shape (R, H_{i-1}) (x for i = 1).
        block, head: the parameters of ``up{i}`` and ``q{i}``.
        state, head_state: the block's and the head's running averages (or None).
        settings: the blocks' settings.
        input_grad: False where d_below is the data: its gradient is not computed
            (returned as None), which saves the largest matrix product.

    Returns:
        out: (d_i (R, H_i), mu_hat_i (R, D_i), var_hat_i (R, D_i)).
        cache: BottomUpStepCache.
    """
    d, c_mlp = blocks.mlp_forward(d_below, block, state=state, settings=settings)
    (mu_hat, var_hat), c_head = settings.forms.gaussian_head_forward(d, head, state=head_state,
                                                                     settings=settings)
    return (d, mu_hat, var_hat), BottomUpStepCache(c_mlp, c_head, input_grad, settings.forms)


def bottom_up_step_backward(dout, cache: BottomUpStepCache):
    """With dout = (G_d or None, G_mu_hat, G_var_hat): returns (dd_below, dblock, dhead).

    d_i feeds both its head and the next layer's block, so its gradient is
    the head's plus G_d (None at the top layer, where no block reads d_L).
    """
    dd, dmu_hat, dvar_hat = dout
    dd_head, dhead = cache.forms.gaussian_head_backward((dmu_hat, dvar_hat), cache.head)
    dd_below, dblock = blocks.mlp_backward(add_if_present(dd_head, dd), cache.mlp,
                                           input_grad=cache.input_grad)
    return dd_below, dblock, dhead


class UpInput:
    """What block up_{i+1} of the bottom-up pass reads of layer i: d_i, the paper's wiring.

    The bottom-up pass (``Model.bottom_up_forward``) runs the wiring it is
    given; ``variants.MuUpInput`` replaces this one. ``forward`` picks the
    input from layer i's outputs; ``backward`` returns the gradients of the
    two, (G_d_i, G_mu_hat_i), None for the one not picked.
    """

    def forward(self, d, mu_hat):
        return d                                   # d_{i+1} = MLP_{i+1}(d_i)

    def backward(self, dout):
        return dout, None


# ----------------------------------------------------------------------------
# The LVAE's ladder step (top-down, i = L-1 .. 1)
# ----------------------------------------------------------------------------
class LadderStepCache(NamedTuple):
    prior: blocks.GaussianBlockCache  # (mu_p,i, var_p,i) from z_{i+1}
    merge: gaussian.MergeCache          # (mu_q,i, var_q,i)
    sample: gaussian.ReparamCache       # z_i
    kl: KLTermCache                     # KL_i
    mu_q: Any                           # (R, D_i) the posterior mean, for inspection
    var_q: Any                          # (R, D_i)


def ladder_step_forward(z_above, mu_hat, var_hat, eps, block, head, *, state=None,
                        head_state=None, settings: BlockSettings, estimator: str):
    """One top-down step of the LVAE's inference: the generative model, corrected by the data.

    The paper's equations, for layer i < L::

        (mu_p,i, var_p,i) = head_i(MLP_i(z_{i+1}))                 p(z_i | z_{i+1})
        var_q,i = 1 / (1/var_hat_i + 1/var_p,i)                    precision-weighted
        mu_q,i  = (mu_hat_i/var_hat_i + mu_p,i/var_p,i) * var_q,i    merge
        z_i = mu_q,i + sqrt(var_q,i) * eps_i                       z_i ~ q(z_i | z_{i+1}, x)
        KL_i = KL(q(z_i | z_{i+1}, x) || p(z_i | z_{i+1}))         per unit

    The block and head are the generative model's own ``down{i}`` and
    ``p{i}``: inference and generation share them.

    Args:
        z_above: the sample z_{i+1}, shape (R, D_{i+1}).
        mu_hat, var_hat: the bottom-up estimate for layer i, shape (R, D_i).
        eps: standard normal noise, shape (R, D_i).
        block, head: the parameters of ``down{i}`` and ``p{i}``.
        state, head_state: the block's and the head's running averages (or None).
        settings: the blocks' settings.
        estimator: "analytic" (exact here: q and p condition on the same z_{i+1}) or "mc".

    Returns:
        out: (z_i, KL_i), each of shape (R, D_i).
        cache: LadderStepCache; ``cache.mu_q`` is the posterior mean.
    """
    (mu_p, var_p), c_prior = blocks.gaussian_block_forward(z_above, block, head, state=state,
                                                           head_state=head_state,
                                                           settings=settings)
    (mu_q, var_q), c_merge = gaussian.merge_forward(mu_hat, var_hat, mu_p, var_p)
    z, c_sample = gaussian.reparameterize_forward(mu_q, var_q, eps)
    kl, c_kl = kl_term_forward(z, mu_q, var_q, mu_p, var_p, estimator=estimator)
    return (z, kl), LadderStepCache(c_prior, c_merge, c_sample, c_kl, mu_q, var_q)


def ladder_step_backward(dout, cache: LadderStepCache):
    """Gradients of the ladder step, through the ops its forward called.

    Args:
        dout: (G_z, G_kl), the gradients of z_i and KL_i, each (R, D_i).
        cache: LadderStepCache from ``ladder_step_forward``.

    Returns:
        (dz_above, dmu_hat, dvar_hat, deps, dblock, dhead): arrays shaped like
        z_above, mu_hat, var_hat and eps, then dicts keyed like block and head.

    ### BEGIN SOLUTION
    In reverse: the KL term (its z-gradient joins G_z), the sample, the merge,
    and the prior's block; mu_p and var_p get gradients from both the merge
    and the KL term.
    ### END SOLUTION
    """
    dz, dkl = dout
    ### BEGIN SOLUTION
    dz_kl, dmu_q, dvar_q, dmu_p_kl, dvar_p_kl = kl_term_backward(dkl, cache.kl)
    dmu_r, dvar_r, deps = gaussian.reparameterize_backward(add_if_present(dz, dz_kl), cache.sample)
    dmu_hat, dvar_hat, dmu_p, dvar_p = gaussian.merge_backward(
        (dmu_q + dmu_r, dvar_q + dvar_r), cache.merge)
    dz_above, dblock, dhead = blocks.gaussian_block_backward(
        (dmu_p + dmu_p_kl, dvar_p + dvar_p_kl), cache.prior)
    return dz_above, dmu_hat, dvar_hat, deps, dblock, dhead
    ### END SOLUTION


def block_states(name: str, head_name: str, cache: blocks.GaussianBlockCache) -> list:
    """[(name, its new running averages), (head_name, the head's)] from a Gaussian block's cache."""
    return [(name, cache.mlp.new_state), (head_name, cache.head.new_state)]


class LadderLayer:
    """The ladder step of layer i as the LVAE's pass runs it: on ``down{i}`` and ``p{i}``.

    The pass runs the ladder step it is given through such an object, so
    that a variant with other blocks (``variants.UnsharedLadderLayer``)
    replaces the paper's step without a branch in the pass. ``params_of(name)``
    gives a block's (parameters, running averages or None).
    """

    def forward(self, params_of, i, z_above, mu_hat, var_hat, eps, *, settings, estimator):
        """``ladder_step_forward`` on ``down{i}``, ``p{i}``: ((z_i, KL_i), LadderStepCache)."""
        (block, state), (head, head_state) = params_of(f"down{i}"), params_of(f"p{i}")
        return ladder_step_forward(z_above, mu_hat, var_hat, eps, block, head, state=state,
                                   head_state=head_state, settings=settings,
                                   estimator=estimator)

    def backward(self, dout, cache, i):
        """``ladder_step_backward``: (dz_above, dmu_hat, dvar_hat, the blocks' gradients).

        The blocks' gradients are a list of dicts with full keys, ``p{i}``'s first.
        """
        dz_above, dmu_hat, dvar_hat, _, dblock, dhead = ladder_step_backward(dout, cache)
        return dz_above, dmu_hat, dvar_hat, [with_prefix(f"p{i}", dhead),
                                              with_prefix(f"down{i}", dblock)]

    def new_states(self, cache, i) -> list:
        """The running averages its blocks computed: [(name, dict), ...] (``block_states``)."""
        return block_states(f"down{i}", f"p{i}", cache.prior)


class TopStepCache(NamedTuple):
    sample: gaussian.ReparamCache   # z_L
    kl: KLTermCache                 # KL_L against N(0, I)


def top_step_forward(mu_q, var_q, eps, *, estimator: str):
    """The LVAE's top layer: z_L ~ q(z_L | x) = N(mu_hat_L, var_hat_L), and KL_L against N(0, I).

    Args:
        mu_q, var_q: q(z_L | x)'s mean and variance, shape (R, D_L).
        eps: standard normal noise, shape (R, D_L).
        estimator: "analytic" or "mc".

    Returns:
        out: (z_L, KL_L), each of shape (R, D_L).
        cache: TopStepCache.
    """
    z, c_sample = gaussian.reparameterize_forward(mu_q, var_q, eps)
    kl, c_kl = kl_term_forward(z, mu_q, var_q, estimator=estimator)
    return (z, kl), TopStepCache(c_sample, c_kl)


def top_step_backward(dout, cache: TopStepCache):
    """With dout = (G_z, G_kl): returns (dmu_q, dvar_q, deps)."""
    dz, dkl = dout
    dz_kl, dmu_kl, dvar_kl, _, _ = kl_term_backward(dkl, cache.kl)
    dmu, dvar, deps = gaussian.reparameterize_backward(add_if_present(dz, dz_kl), cache.sample)
    return dmu_kl + dmu, dvar_kl + dvar, deps


# ----------------------------------------------------------------------------
# The VAE's steps: q(z_i | z_{i-1}) upwards, then KL_i against p(z_i | z_{i+1})
# ----------------------------------------------------------------------------
class VAEStepCache(NamedTuple):
    posterior: blocks.GaussianBlockCache  # (mu_q,i, var_q,i) from z_{i-1}
    sample: gaussian.ReparamCache           # z_i


def vae_step_forward(z_below, eps, block, head, *, state=None, head_state=None,
                     settings: BlockSettings):
    """One bottom-up step of the VAE's inference, i = 2 .. L::

        (mu_q,i, var_q,i) = head_i(MLP_i(z_{i-1}))      q(z_i | z_{i-1})
        z_i = mu_q,i + sqrt(var_q,i) * eps_i

    Args:
        z_below: the sample z_{i-1}, shape (R, D_{i-1}).
        eps: standard normal noise, shape (R, D_i).
        block, head: the parameters of ``up{i}`` and ``q{i}``.
        state, head_state: the block's and the head's running averages (or None).
        settings: the blocks' settings.

    Returns:
        out: (z_i, mu_q,i, var_q,i), each of shape (R, D_i); the KL term of
            layer i needs q's mean and variance (``vae_kl_step_forward``).
        cache: VAEStepCache.
    """
    (mu_q, var_q), c_q = blocks.gaussian_block_forward(z_below, block, head, state=state,
                                                       head_state=head_state, settings=settings)
    z, c_sample = gaussian.reparameterize_forward(mu_q, var_q, eps)
    return (z, mu_q, var_q), VAEStepCache(c_q, c_sample)


def vae_step_backward(dout, cache: VAEStepCache):
    """With dout = (G_z, G_mu_q, G_var_q): returns (dz_below, deps, dblock, dhead)."""
    dz, dmu_q, dvar_q = dout
    dmu_r, dvar_r, deps = gaussian.reparameterize_backward(dz, cache.sample)
    dz_below, dblock, dhead = blocks.gaussian_block_backward(
        (dmu_q + dmu_r, dvar_q + dvar_r), cache.posterior)
    return dz_below, deps, dblock, dhead


class VAEKLStepCache(NamedTuple):
    prior: blocks.GaussianBlockCache  # (mu_p,i, var_p,i) from z_{i+1}
    kl: KLTermCache                     # the single-sample estimate in the VAE


def vae_kl_step_forward(z, mu_q, var_q, z_above, block, head, *, state=None, head_state=None,
                        settings: BlockSettings, estimator: str = "mc"):
    """The VAE's KL term of layer i < L, once z_{i+1} is drawn::

        (mu_p,i, var_p,i) = head_i(MLP_i(z_{i+1}))          p(z_i | z_{i+1})
        KL_i = log q(z_i | z_{i-1}) - log p(z_i | z_{i+1})    at the samples

    The VAE always takes the single-sample estimate (the default): z_{i+1}
    was drawn *after* z_i, from q(z_{i+1} | z_i), so the closed form "given
    the sampled z_{i+1}" would be biased. The closed form is exact where q
    and p of z_i condition on the same z_{i+1}, as in the LVAE's ladder step
    with its own top-down blocks, which reuses this step
    (``variants.unshared_ladder_step_forward``).

    Args:
        z: the sample z_i, shape (R, D_i).
        mu_q, var_q: q(z_i | z_{i-1})'s mean and variance, shape (R, D_i).
        z_above: the sample z_{i+1}, shape (R, D_{i+1}).
        block, head: the parameters of ``down{i}`` and ``p{i}``.
        state, head_state: the block's and the head's running averages (or None).
        settings: the blocks' settings.
        estimator: "mc" (the VAE's), or "analytic" where it is exact (see above).

    Returns:
        kl: shape (R, D_i).
        cache: VAEKLStepCache.
    """
    (mu_p, var_p), c_prior = blocks.gaussian_block_forward(z_above, block, head, state=state,
                                                           head_state=head_state,
                                                           settings=settings)
    kl, c_kl = kl_term_forward(z, mu_q, var_q, mu_p, var_p, estimator=estimator)
    return kl, VAEKLStepCache(c_prior, c_kl)


def vae_kl_step_backward(dout, cache: VAEKLStepCache):
    """With dout = G_kl (R, D_i): returns (dz, dmu_q, dvar_q, dz_above, dblock, dhead)."""
    dz, dmu_q, dvar_q, dmu_p, dvar_p = kl_term_backward(dout, cache.kl)
    dz_above, dblock, dhead = blocks.gaussian_block_backward((dmu_p, dvar_p), cache.prior)
    return dz, dmu_q, dvar_q, dz_above, dblock, dhead


# ----------------------------------------------------------------------------
# The output layer: log p(x | z_1)
# ----------------------------------------------------------------------------
class OutputStepCache(NamedTuple):
    mlp: blocks.MLPCache   # h = MLP_0(z_1)
    head: Any              # DenseCache (Bernoulli logits) or the Gaussian head's cache
    log_lik: Any           # BernoulliCache or LogNormalCache
    likelihood: str        # "bernoulli" or "gaussian"
    forms: Any             # settings.forms, whose head backward to run


def output_step_forward(z1, x, block, head, *, state=None, settings: BlockSettings,
                        likelihood: str):
    """The data term log p(x | z_1), summed over the data's dimensions::

        h = MLP_0(z_1)
        Bernoulli: log p(x | z_1) = sum_j x_j l_j - softplus(l_j),  l = h W + b
        Gaussian:  log p(x | z_1) = sum_j log N(x_j; mu_j, var_j),  (mu, var) = head(h)

    Args:
        z1: the sample z_1, shape (R, D_1).
        x: the data, shape (R, X).
        block, head: the parameters of ``down0`` and ``p0`` (``W``, ``b`` for
            Bernoulli; a Gaussian head for Gaussian data).
        state: the block's running averages (or None).
        settings: the blocks' settings.
        likelihood: "bernoulli" or "gaussian".

    Returns:
        rec: shape (R,).
        cache: OutputStepCache.
    """
    h, c_mlp = blocks.mlp_forward(z1, block, state=state, settings=settings)
    xp = namespace(h)
    if likelihood == "bernoulli":
        logits, c_head = layers.dense_forward(h, head["W"], head["b"])
        ll, c_ll = likelihoods.bernoulli_log_likelihood_forward(x, logits)
    else:
        (mu, var), c_head = settings.forms.gaussian_head_forward(h, head, settings=settings)
        ll, c_ll = likelihoods.gaussian_log_likelihood_forward(x, mu, var)
    return xp.sum(ll, axis=1), OutputStepCache(c_mlp, c_head, c_ll, likelihood, settings.forms)


def output_step_backward(dout, cache: OutputStepCache):
    """With dout = G_rec (R,): returns (dz1, dx, dblock, dhead).

    The sum over dimensions passes G_rec to every dimension of its row.
    """
    xp = namespace(dout)
    g = xp.expand_dims(dout, axis=1)                                  # (R, 1)
    if cache.likelihood == "bernoulli":
        dll = xp.broadcast_to(g, cache.log_lik.logits.shape)          # (R, X)
        dx, dlogits = likelihoods.bernoulli_log_likelihood_backward(dll, cache.log_lik)
        dh, dW, db = layers.dense_backward(dlogits, cache.head)
        dhead = {"W": dW, "b": db}
    else:
        dll = xp.broadcast_to(g, cache.log_lik.inv.shape)             # (R, X)
        dx, dmu, dvar = likelihoods.gaussian_log_likelihood_backward(dll, cache.log_lik)
        dh, dhead = cache.forms.gaussian_head_backward((dmu, dvar), cache.head)
    dz1, dblock = blocks.mlp_backward(dh, cache.mlp)
    return dz1, dx, dblock, dhead


# ============================================================================
# The passes: each model's per sample pass, a plain loop over its steps
# ============================================================================
# ``Model.forward`` runs in two stages: the bottom-up values (``BottomUp``,
# what depends on x alone, once per input), then one of the passes below on
# them, tiled to one row per sample. A pass takes ``params_of(name) ->
# (parameters, batch-norm state)`` of a block or head (``"down1"``, ``"p1"``;
# the state None where it has none), the bottom-up values and the noise eps_i
# (R, D_i), z_1's first. It returns ``(Outputs, cache)``; its backward returns
# ``(parameter gradients, BottomUpGrad)``; ``new_states(cache)`` lists the
# batch-norm running averages it computed, block by block (with
# ``settings.momentum`` None, as ``Model.forward`` runs it in training mode,
# each block's batch statistics). Inside the loops per-layer values are dicts
# keyed by i (``z[i]`` is z_i); at the interfaces (the noise, the bottom-up
# values, the outputs) they are lists in the same order, z_1 first.
class BottomUp(NamedTuple):
    """The bottom-up values: what depends on x alone, computed once per input, shared by all
    its samples.

    Lists are per layer, z_1 first. The LVAE has every layer; the VAE only
    layer 1 (q(z_1 | x)).
    """

    x: Array        # (N, x_dim)
    d: list         # d_i (N, H_i), the deterministic features
    mu_hat: list    # mu_hat_i (N, D_i); for the VAE, mu_q,1
    var_hat: list   # var_hat_i (N, D_i); for the VAE, var_q,1


class BottomUpGrad(NamedTuple):
    """The gradients that reach the bottom-up values from the per-sample pass (lists as in
    BottomUp)."""

    mu_hat: list
    var_hat: list


class Outputs(NamedTuple):
    """A forward pass's results, one row per sample (lists per layer, z_1 first).

    Only ``f`` carries a gradient back; the rest is for logging and inspection.
    """

    f: Array        # (R,) the objective log p(x | z_1) - beta * sum_i KL_i
    rec: Array      # (R,) log p(x | z_1)
    kl: list        # KL_i per unit (R, D_i)
    mu_q: list      # the posterior means mu_q,i (R, D_i) at this sample
    z: list         # the samples z_i (R, D_i)
    state: Any      # the batch-norm running averages after this pass (dict)


def tile_part(part: BottomUp, k: int) -> BottomUp:
    """The bottom-up values repeated for k samples per input, sample-major (see
    blocks.tile_rows_forward)."""
    def tile(a):
        return blocks.tile_rows_forward(a, k=k)[0]
    return BottomUp(tile(part.x), [tile(a) for a in part.d], [tile(a) for a in part.mu_hat],
                    [tile(a) for a in part.var_hat])


def by_layer(values) -> dict:
    """A list per layer (z_1 first) as a dict keyed by the layer number i = 1..L."""
    return dict(enumerate(values, start=1))


# ----------------------------------------------------------------------------
# The LVAE's top-down pass
# ----------------------------------------------------------------------------
class LadderPassCache(NamedTuple):
    top: TopStepCache        # layer L
    ladder: dict             # i -> the ladder step's cache, i = 1..L-1
    output: OutputStepCache  # log p(x | z_1)
    beta: float
    layer: Any               # the ladder step it ran (LadderLayer, or a variant's)


def ladder_pass_forward(params_of, part: BottomUp, noise, *, layer, beta, estimator, likelihood,
                        settings):
    """The LVAE's per-sample pass, from z_L down to x: the paper's top-down inference.

    ::

        z_L ~ q(z_L | x) = N(mu_hat_L, var_hat_L),   KL_L against N(0, I)
        for i = L-1 .. 1:  (z_i, KL_i) = ladder step(z_{i+1}, mu_hat_i, var_hat_i, eps_i)
        f = log p(x | z_1) - beta * sum_i KL_i

    Args:
        params_of: ``params_of(name) -> (parameters, batch-norm state or None)``
            of a block such as ``"down1"``.
        part: the bottom-up values (``BottomUp``), one row per sample: (R, ...).
        noise: eps_i of shape (R, D_i), z_1's first.
        layer: the ladder step to run at each layer: ``LadderLayer()`` (the
            paper's, on the generative blocks) or a variant's (``Model``
            picks it from its config).
        beta: the KL terms' weight.
        estimator: "analytic" or "mc" (both exact in expectation here).
        likelihood: "bernoulli" or "gaussian".
        settings: the blocks' settings (``Model.settings``).

    Returns:
        outputs: Outputs (``state`` None: the model gathers it).
        cache: LadderPassCache.
    """
    mu_hat, var_hat, eps = by_layer(part.mu_hat), by_layer(part.var_hat), by_layer(noise)
    top = len(eps)
    z, kl, mu_q, ladder = {}, {}, {}, {}
    # z_L ~ q(z_L | x) = N(mu_hat_L, var_hat_L);  KL_L = KL(q(z_L | x) || N(0, I))
    (z[top], kl[top]), top_cache = top_step_forward(mu_hat[top], var_hat[top], eps[top],
                                                    estimator=estimator)
    mu_q[top] = mu_hat[top]
    for i in range(top - 1, 0, -1):
        # p(z_i | z_{i+1}) merged with (mu_hat_i, var_hat_i): z_i ~ q(z_i | z_{i+1}, x), KL_i
        (z[i], kl[i]), ladder[i] = layer.forward(params_of, i, z[i + 1], mu_hat[i], var_hat[i],
                                                 eps[i], settings=settings,
                                                 estimator=estimator)   # (R, D_i) each
        mu_q[i] = ladder[i].mu_q
    (block, state), (head, _) = params_of("down0"), params_of("p0")
    rec, out_cache = output_step_forward(z[1], part.x, block, head, state=state,
                                         settings=settings,
                                         likelihood=likelihood)        # log p(x | z_1), (R,)
    cache = LadderPassCache(top_cache, ladder, out_cache, beta, layer)
    return _objective(rec, kl, mu_q, z, beta), cache


def ladder_pass_backward(df, cache: LadderPassCache):
    """Gradients of sum_rows df * f, from z_1 up to z_L.

    f = rec - beta * sum_i sum_units KL_i, so rec gets df and every unit of
    KL_i gets -beta * df. Going up, z_i's gradient is complete once the layer
    below has returned its dz_above, so each ladder step's backward runs in turn.

    Args:
        df: array of shape (R,), the gradient of ``outputs.f``.
        cache: from ``ladder_pass_forward``.

    Returns:
        (grads, dpart): the gradients of the blocks used (a dict with full
        keys) and BottomUpGrad, those of (mu_hat_i, var_hat_i), (R, D_i) each.
    """
    xp = namespace(df)
    dkl = -cache.beta * xp.expand_dims(df, axis=1)                  # (R, 1): d f / d KL_i
    dz = {}
    dz[1], _, dblock, dhead = output_step_backward(df, cache.output)
    grads = [with_prefix("p0", dhead), with_prefix("down0", dblock)]
    dmu_hat, dvar_hat = {}, {}
    for i in range(1, len(cache.ladder) + 1):                       # z_i's gradient is complete
        douts = (dz[i], xp.broadcast_to(dkl, dz[i].shape))
        dz[i + 1], dmu_hat[i], dvar_hat[i], dblocks = cache.layer.backward(douts,
                                                                           cache.ladder[i], i)
        grads += dblocks
    top = len(cache.ladder) + 1
    dmu_hat[top], dvar_hat[top], _ = top_step_backward(
        (dz[top], xp.broadcast_to(dkl, dz[top].shape)), cache.top)
    return merge(grads), BottomUpGrad([dmu_hat[i] for i in range(1, top + 1)],
                                      [dvar_hat[i] for i in range(1, top + 1)])


# ----------------------------------------------------------------------------
# The VAE's pass: sampling upwards, then the KL terms from the top
# ----------------------------------------------------------------------------
class VAEPassCache(NamedTuple):
    first: Any               # ReparamCache of z_1 ~ q(z_1 | x)
    up: dict                 # i -> VAEStepCache, i = 2..L
    kl_top: KLTermCache      # KL_L against N(0, I)
    kl: dict                 # i -> VAEKLStepCache, i = 1..L-1
    output: OutputStepCache  # log p(x | z_1)
    beta: float


def vae_pass_forward(params_of, part: BottomUp, noise, *, beta, estimator, likelihood, settings):
    """The VAE's per-sample pass: z_1 .. z_L upwards, then KL_L .. KL_1 and log p(x | z_1).

    ::

        z_1 ~ q(z_1 | x),  z_i ~ q(z_i | z_{i-1}) for i = 2 .. L      (VAE steps)
        KL_L = KL(q(z_L | z_{L-1}) || N(0, I))                        (closed form or MC)
        KL_i = log q(z_i | z_{i-1}) - log p(z_i | z_{i+1}), i < L     (always MC)
        f = log p(x | z_1) - beta * sum_i KL_i

    Args and Returns as ``ladder_pass_forward`` (without ``layer``); ``part``
    holds q(z_1 | x) only, and the cache is a VAEPassCache.
    """
    eps = by_layer(noise)
    top = len(eps)
    z, mu_q, var_q, kl, up, kl_caches = {}, {}, {}, {}, {}, {}
    # z_1 ~ q(z_1 | x), whose (mu, var) come from the bottom-up values
    mu_q[1], var_q[1] = part.mu_hat[0], part.var_hat[0]
    z[1], first = gaussian.reparameterize_forward(mu_q[1], var_q[1], eps[1])
    for i in range(2, top + 1):
        # z_i ~ q(z_i | z_{i-1})
        (block, state), (head, head_state) = params_of(f"up{i}"), params_of(f"q{i}")
        (z[i], mu_q[i], var_q[i]), up[i] = vae_step_forward(
            z[i - 1], eps[i], block, head, state=state, head_state=head_state,
            settings=settings)                                          # (R, D_i) each
    # KL_L = KL(q(z_L | z_{L-1}) || N(0, I))
    kl[top], kl_top = kl_term_forward(z[top], mu_q[top], var_q[top], estimator=estimator)
    for i in range(top - 1, 0, -1):
        # KL_i = log q(z_i | z_{i-1}) - log p(z_i | z_{i+1}), at the samples
        (block, state), (head, head_state) = params_of(f"down{i}"), params_of(f"p{i}")
        kl[i], kl_caches[i] = vae_kl_step_forward(z[i], mu_q[i], var_q[i], z[i + 1], block, head,
                                                  state=state, head_state=head_state,
                                                  settings=settings)
    (block, state), (head, _) = params_of("down0"), params_of("p0")
    rec, out_cache = output_step_forward(z[1], part.x, block, head, state=state,
                                         settings=settings,
                                         likelihood=likelihood)        # log p(x | z_1), (R,)
    cache = VAEPassCache(first, up, kl_top, kl_caches, out_cache, beta)
    return _objective(rec, kl, mu_q, z, beta), cache


def vae_pass_backward(df, cache: VAEPassCache):
    """Gradients of sum_rows df * f: (parameter gradients, BottomUpGrad).

    First the generative side (the KL terms, from z_1 up), then q from z_L
    down, since q(z_i | z_{i-1}) feeds every layer above it.
    """
    xp = namespace(df)
    dkl = -cache.beta * xp.expand_dims(df, axis=1)                  # (R, 1): d f / d KL_i
    dz, dmu_q, dvar_q = {}, {}, {}
    dz[1], _, dblock, dhead = output_step_backward(df, cache.output)
    grads = [with_prefix("p0", dhead), with_prefix("down0", dblock)]
    top = len(cache.up) + 1
    for i in range(1, top):
        dz_kl, dmu_q[i], dvar_q[i], dz[i + 1], dblock, dhead = vae_kl_step_backward(
            xp.broadcast_to(dkl, dz[i].shape), cache.kl[i])
        dz[i] = dz[i] + dz_kl
        grads += [with_prefix(f"p{i}", dhead), with_prefix(f"down{i}", dblock)]
    dz_kl, dmu_q[top], dvar_q[top], _, _ = kl_term_backward(
        xp.broadcast_to(dkl, dz[top].shape), cache.kl_top)
    if dz_kl is not None:
        dz[top] = dz[top] + dz_kl
    for i in range(top, 1, -1):
        dz_below, _, dblock, dhead = vae_step_backward((dz[i], dmu_q[i], dvar_q[i]), cache.up[i])
        dz[i - 1] = dz[i - 1] + dz_below
        grads += [with_prefix(f"q{i}", dhead), with_prefix(f"up{i}", dblock)]
    dmu_r, dvar_r, _ = gaussian.reparameterize_backward(dz[1], cache.first)
    return merge(grads), BottomUpGrad([dmu_q[1] + dmu_r], [dvar_q[1] + dvar_r])


def _objective(rec, kl: dict, mu_q: dict, z: dict, beta) -> Outputs:
    """f = log p(x | z_1) - beta * sum_i KL_i per row, and the per-layer terms as lists."""
    xp = namespace(rec)
    n_layers = len(kl)
    each = range(1, n_layers + 1)                                   # i = 1..L
    f = rec - beta * sum(xp.sum(kl[i], axis=1) for i in each)
    return Outputs(f, rec, [kl[i] for i in each], [mu_q[i] for i in each],
                   [z[i] for i in each], None)


def new_states(cache) -> list:
    """(name, new running averages) of every block and head a per-sample pass ran.

    With momentum None in the pass's settings these are the blocks' batch
    statistics, which ``Model.forward`` averages in itself.

    Args:
        cache: a LadderPassCache or VAEPassCache.

    Returns:
        a list of (name, dict), e.g. ``("down1", {"mean1": ..., ...})``; a
        head's dict is empty unless it has batch norm.
    """
    found = []
    if isinstance(cache, VAEPassCache):
        for i, c in cache.up.items():
            found += block_states(f"up{i}", f"q{i}", c.posterior)
        for i, c in cache.kl.items():
            found += block_states(f"down{i}", f"p{i}", c.prior)
    else:
        for i, c in cache.ladder.items():
            found += cache.layer.new_states(c, i)
    found.append(("down0", cache.output.mlp.new_state))
    return found
