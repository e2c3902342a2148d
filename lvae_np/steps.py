"""One layer of the models as an op pair: the ladder step, the VAE's steps, the output layer.

Each model's pass is a plain loop over these steps (see ``models.py``), and
each step follows the op contract of ``layers.py``::

    out, cache = step_forward(inputs..., block, head, *, settings)
    grads = step_backward(dout, cache)   # one per positional input; a block's as a dict

Layers are numbered as in the paper: z_1 next to the data, z_L at the top.
Shapes: R rows (samples times inputs), D_i the size of z_i. ``block`` and
``head`` are the dicts of one MLP block and one Gaussian head (cut from the
model's flat dict with ``params.subtree``); ``mode`` is the dict of the
blocks' settings (``batch_norm``, ``training``, ``momentum``, ``slope``,
``eps``). ``state`` and ``head_state`` are the block's and the head's
batch-norm running averages (None where they have none; a head has some only
with batch norm, see ``blocks.gaussian_head_forward``).

The KL estimators (``estimator``): ``"analytic"``, the closed form
KL(q || p), or ``"mc"``, the single-sample estimate log q(z) - log p(z) at the
sample (see ``gaussian.kl_sample_forward``). The closed form does not depend
on the sample, so its z-gradient is absent (returned as None by
``kl_term_backward``) rather than a zero array.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from . import gaussian, likelihoods
from . import layers
from . import blocks
from .backend import namespace

KL_ESTIMATORS = ("analytic", "mc")


# ----------------------------------------------------------------------------
# The KL term of one layer
# ----------------------------------------------------------------------------
class KLTermCache(NamedTuple):
    estimator: str     # "analytic" or "mc"
    standard: bool     # p = N(0, I) (the top layer)
    kl: Any            # the cache of the op used (KLCache, KLStdCache or KLSampleCache)


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


def _plus(a, b):
    """a + b, where b may be None (a gradient that does not exist)."""
    return a if b is None else a + b


# ----------------------------------------------------------------------------
# The deterministic bottom-up step: d_i = MLP(d_{i-1}), (mu_hat_i, var_hat_i) = head(d_i)
# ----------------------------------------------------------------------------
class BottomUpStepCache(NamedTuple):
    mlp: blocks.MLPCache             # d_i = MLP(d_{i-1})
    head: blocks.GaussianHeadCache   # (mu_hat_i, var_hat_i) = head(d_i)
    input_grad: bool                   # False where d_{i-1} is the data x


def bottom_up_step_forward(d_below, block, head, *, state=None, head_state=None, mode: dict,
                           input_grad: bool = True):
    """One layer of the deterministic upward pass.

    ``d_i = MLP_i(d_{i-1})`` (d_0 = x) and ``(mu_hat_i, var_hat_i) = head_i(d_i)``:
    the LVAE's bottom-up estimate for layer i; for the VAE, with i = 1, q(z_1 | x).

    Args:
        d_below: d_{i-1}, shape (R, H_{i-1}) (x for i = 1).
        block, head: the parameters of ``up{i}`` and ``q{i}``.
        state, head_state: the block's and the head's running averages (or None).
        mode: the blocks' settings.
        input_grad: False where d_below is the data: its gradient is not computed
            (returned as None), which saves the largest matrix product.

    Returns:
        out: (d_i (R, H_i), mu_hat_i (R, D_i), var_hat_i (R, D_i)).
        cache: BottomUpStepCache.
    """
    d, c_mlp = blocks.mlp_forward(d_below, block, state=state, **mode)
    (mu_hat, var_hat), c_head = blocks.gaussian_head_forward(d, head, state=head_state,
                                                               **blocks.head_settings(mode))
    return (d, mu_hat, var_hat), BottomUpStepCache(c_mlp, c_head, input_grad)


def bottom_up_step_backward(dout, cache: BottomUpStepCache):
    """With dout = (G_d or None, G_mu_hat, G_var_hat): returns (dd_below, dblock, dhead).

    d_i feeds both its head and the next layer's block, so its gradient is
    the head's plus G_d (None at the top layer, where no block reads d_L).
    """
    dd, dmu_hat, dvar_hat = dout
    dd_head, dhead = blocks.gaussian_head_backward((dmu_hat, dvar_hat), cache.head)
    dd_below, dblock = blocks.mlp_backward(_plus(dd_head, dd), cache.mlp,
                                             input_grad=cache.input_grad)
    return dd_below, dblock, dhead


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
                        head_state=None, mode: dict, estimator: str):
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
        mode: the blocks' settings.
        estimator: "analytic" (exact here: q and p condition on the same z_{i+1}) or "mc".

    Returns:
        out: (z_i, KL_i), each of shape (R, D_i).
        cache: LadderStepCache; ``cache.mu_q`` is the posterior mean.
    """
    (mu_p, var_p), c_prior = blocks.gaussian_block_forward(z_above, block, head, state=state,
                                                             head_state=head_state, **mode)
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
    dmu_r, dvar_r, deps = gaussian.reparameterize_backward(_plus(dz, dz_kl), cache.sample)
    dmu_hat, dvar_hat, dmu_p, dvar_p = gaussian.merge_backward(
        (dmu_q + dmu_r, dvar_q + dvar_r), cache.merge)
    dz_above, dblock, dhead = blocks.gaussian_block_backward(
        (dmu_p + dmu_p_kl, dvar_p + dvar_p_kl), cache.prior)
    return dz_above, dmu_hat, dvar_hat, deps, dblock, dhead
    ### END SOLUTION


class UnsharedLadderStepCache(NamedTuple):
    inference: blocks.GaussianBlockCache  # (mu_td,i, var_td,i) from z_{i+1}: tdown{i}, tp{i}
    prior: blocks.GaussianBlockCache      # (mu_p,i, var_p,i) from z_{i+1}: down{i}, p{i}
    merge: gaussian.MergeCache              # (mu_q,i, var_q,i)
    sample: gaussian.ReparamCache           # z_i
    kl: KLTermCache                         # KL_i
    mu_q: Any                               # (R, D_i) the posterior mean, for inspection
    var_q: Any                              # (R, D_i)


def unshared_ladder_step_forward(z_above, mu_hat, var_hat, eps, td_block, td_head, block, head,
                                 *, td_state=None, td_head_state=None, state=None,
                                 head_state=None, mode: dict, estimator: str):
    """A top-down step of the LVAE whose inference path has its own blocks (the original code's
    default, ``ladder_share_params=False``)::

        (mu_td,i, var_td,i) = tp_i(tdown_i(z_{i+1}))               top-down inference
        (mu_p,i, var_p,i)   = p_i(down_i(z_{i+1}))                 p(z_i | z_{i+1})
        var_q,i = 1 / (1/var_hat_i + 1/var_td,i)                   precision-weighted
        mu_q,i  = (mu_hat_i/var_hat_i + mu_td,i/var_td,i) * var_q,i  merge
        z_i = mu_q,i + sqrt(var_q,i) * eps_i
        KL_i = KL(q(z_i | z_{i+1}, x) || p(z_i | z_{i+1}))

    ``ladder_step_forward`` is the case tdown_i = down_i, tp_i = p_i. Both
    Gaussians condition on the same z_{i+1}, so the closed-form KL stays exact.

    Args:
        z_above: the sample z_{i+1}, shape (R, D_{i+1}).
        mu_hat, var_hat: the bottom-up estimate for layer i, shape (R, D_i).
        eps: standard normal noise, shape (R, D_i).
        td_block, td_head: the parameters of ``tdown{i}`` and ``tp{i}``.
        block, head: the parameters of ``down{i}`` and ``p{i}``.
        td_state, td_head_state, state, head_state: their running averages (or None).
        mode: the blocks' settings.
        estimator: "analytic" or "mc".

    Returns:
        out: (z_i, KL_i), each of shape (R, D_i).
        cache: UnsharedLadderStepCache.
    """
    (mu_td, var_td), c_inf = blocks.gaussian_block_forward(
        z_above, td_block, td_head, state=td_state, head_state=td_head_state, **mode)
    (mu_p, var_p), c_prior = blocks.gaussian_block_forward(
        z_above, block, head, state=state, head_state=head_state, **mode)
    (mu_q, var_q), c_merge = gaussian.merge_forward(mu_hat, var_hat, mu_td, var_td)
    z, c_sample = gaussian.reparameterize_forward(mu_q, var_q, eps)
    kl, c_kl = kl_term_forward(z, mu_q, var_q, mu_p, var_p, estimator=estimator)
    return (z, kl), UnsharedLadderStepCache(c_inf, c_prior, c_merge, c_sample, c_kl, mu_q, var_q)


def unshared_ladder_step_backward(dout, cache: UnsharedLadderStepCache):
    """Gradients of the unshared ladder step.

    Args:
        dout: (G_z, G_kl), the gradients of z_i and KL_i, each (R, D_i).
        cache: UnsharedLadderStepCache.

    Returns:
        (dz_above, dmu_hat, dvar_hat, deps, dtd_block, dtd_head, dblock, dhead):
        z_{i+1} feeds both blocks, so dz_above is the sum of their input gradients.
    """
    dz, dkl = dout
    dz_kl, dmu_q, dvar_q, dmu_p, dvar_p = kl_term_backward(dkl, cache.kl)
    dmu_r, dvar_r, deps = gaussian.reparameterize_backward(_plus(dz, dz_kl), cache.sample)
    dmu_hat, dvar_hat, dmu_td, dvar_td = gaussian.merge_backward(
        (dmu_q + dmu_r, dvar_q + dvar_r), cache.merge)
    dz_td, dtd_block, dtd_head = blocks.gaussian_block_backward((dmu_td, dvar_td),
                                                                  cache.inference)
    dz_p, dblock, dhead = blocks.gaussian_block_backward((dmu_p, dvar_p), cache.prior)
    return dz_td + dz_p, dmu_hat, dvar_hat, deps, dtd_block, dtd_head, dblock, dhead


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
    dmu, dvar, deps = gaussian.reparameterize_backward(_plus(dz, dz_kl), cache.sample)
    return dmu_kl + dmu, dvar_kl + dvar, deps


# ----------------------------------------------------------------------------
# The VAE's steps: q(z_i | z_{i-1}) upwards, then KL_i against p(z_i | z_{i+1})
# ----------------------------------------------------------------------------
class VAEStepCache(NamedTuple):
    posterior: blocks.GaussianBlockCache  # (mu_q,i, var_q,i) from z_{i-1}
    sample: gaussian.ReparamCache           # z_i


def vae_step_forward(z_below, eps, block, head, *, state=None, head_state=None, mode: dict):
    """One bottom-up step of the VAE's inference, i = 2 .. L::

        (mu_q,i, var_q,i) = head_i(MLP_i(z_{i-1}))      q(z_i | z_{i-1})
        z_i = mu_q,i + sqrt(var_q,i) * eps_i

    Args:
        z_below: the sample z_{i-1}, shape (R, D_{i-1}).
        eps: standard normal noise, shape (R, D_i).
        block, head: the parameters of ``up{i}`` and ``q{i}``.
        state, head_state: the block's and the head's running averages (or None).
        mode: the blocks' settings.

    Returns:
        out: (z_i, mu_q,i, var_q,i), each of shape (R, D_i); the KL term of
            layer i needs q's mean and variance (``vae_kl_step_forward``).
        cache: VAEStepCache.
    """
    (mu_q, var_q), c_q = blocks.gaussian_block_forward(z_below, block, head, state=state,
                                                         head_state=head_state, **mode)
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
    kl: KLTermCache                     # always the single-sample estimate


def vae_kl_step_forward(z, mu_q, var_q, z_above, block, head, *, state=None, head_state=None,
                        mode: dict):
    """The VAE's KL term of layer i < L, once z_{i+1} is drawn::

        (mu_p,i, var_p,i) = head_i(MLP_i(z_{i+1}))          p(z_i | z_{i+1})
        KL_i = log q(z_i | z_{i-1}) - log p(z_i | z_{i+1})    at the samples

    Always the single-sample estimate: z_{i+1} was drawn *after* z_i, from
    q(z_{i+1} | z_i), so the closed form "given the sampled z_{i+1}" would be
    biased.

    Args:
        z: the sample z_i, shape (R, D_i).
        mu_q, var_q: q(z_i | z_{i-1})'s mean and variance, shape (R, D_i).
        z_above: the sample z_{i+1}, shape (R, D_{i+1}).
        block, head: the parameters of ``down{i}`` and ``p{i}``.
        state, head_state: the block's and the head's running averages (or None).
        mode: the blocks' settings.

    Returns:
        kl: shape (R, D_i).
        cache: VAEKLStepCache.
    """
    (mu_p, var_p), c_prior = blocks.gaussian_block_forward(z_above, block, head, state=state,
                                                             head_state=head_state, **mode)
    kl, c_kl = kl_term_forward(z, mu_q, var_q, mu_p, var_p, estimator="mc")
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
    head: Any                # DenseCache (Bernoulli logits) or GaussianHeadCache
    log_lik: Any             # BernoulliCache or LogNormalCache
    likelihood: str          # "bernoulli" or "gaussian"


def output_step_forward(z1, x, block, head, *, state=None, mode: dict, likelihood: str):
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
        mode: the blocks' settings.
        likelihood: "bernoulli" or "gaussian".

    Returns:
        rec: shape (R,).
        cache: OutputStepCache.
    """
    h, c_mlp = blocks.mlp_forward(z1, block, state=state, **mode)
    xp = namespace(h)
    if likelihood == "bernoulli":
        logits, c_head = layers.dense_forward(h, head["W"], head["b"])
        ll, c_ll = likelihoods.bernoulli_log_likelihood_forward(x, logits)
    else:
        (mu, var), c_head = blocks.gaussian_head_forward(h, head)
        ll, c_ll = likelihoods.gaussian_log_likelihood_forward(x, mu, var)
    return xp.sum(ll, axis=1), OutputStepCache(c_mlp, c_head, c_ll, likelihood)


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
        dh, dhead = blocks.gaussian_head_backward((dmu, dvar), cache.head)
    dz1, dblock = blocks.mlp_backward(dh, cache.mlp)
    return dz1, dx, dblock, dhead
