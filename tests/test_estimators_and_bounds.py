"""Statistical and exact checks of the KL estimators and of the importance-weighted bound.

* The two KL estimators of the models (``kl="mc"`` and ``kl="analytic"``) have
  the same expectation where the closed form is exact (LVAE), and the z-test
  used for that does reject the closed form "given the sampled z_{i+1}" where
  it is biased (VAE, lower layer).
* The VAE's MC KL estimate is unbiased against a reference computed by
  quadrature, with closed forms written out here.
* The importance-weighted bound: k = 1 is the ELBO with the MC KL; E[L_k] does
  not decrease with k; L_5000 matches log p(x) computed by numerical
  integration on a grid; log-mean-exp is stable and its gradient right;
  the warm-up schedule; chunking of the evaluation.

Everything is float64 NumPy with fixed seeds, so every test is deterministic.
Each statistical test states its false-alarm rate: the probability, under the
hypothesis it checks, that the test fails for a random seed. A family of m
comparisons gets a Bonferroni split of the family's rate.
"""
import math
from statistics import NormalDist

import numpy as np
import pytest
from numpy.polynomial.hermite_e import hermegauss

from lvae_np import bounds
from lvae_np import gaussian as G
from lvae_np import layers as L
from lvae_np import likelihoods as LL
from lvae_np import blocks as N
from lvae_np.backend import get_backend
from lvae_np.bounds import logmeanexp_backward, logmeanexp_forward
from lvae_np.gradcheck import assert_gradients
from lvae_np.models import Model, ModelConfig
from lvae_np.blocks import subtree

FAMILY_ALPHA = 1e-6  # false-alarm rate of each statistical test (all its comparisons together)


# ----------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------
def z_critical(m: int, alpha: float = FAMILY_ALPHA, two_sided: bool = True) -> float:
    """The |z| (or z) threshold for m comparisons with a family false-alarm rate alpha (Bonferroni)."""
    per = alpha / m
    return NormalDist().inv_cdf(1.0 - (per / 2 if two_sided else per))


def paired_z(d):
    """z-statistics of mean(d) = 0 along axis 0: mean / standard error (d: (draws, ...))."""
    n = d.shape[0]
    return d.mean(axis=0) / (d.std(axis=0, ddof=1) / math.sqrt(n))


def make_model(kind, latent, hidden, *, x_dim=8, seed=0, scale=0.3, batch_norm=False,
               likelihood="bernoulli"):
    """A small float64 model with its init perturbed by N(0, scale^2) noise on every parameter.

    The perturbation breaks the init's symmetries (zero biases, variance heads
    all at softplus(0)), so that the test does not rely on them.
    """
    config = ModelConfig(kind=kind, x_dim=x_dim, latent=tuple(latent), hidden=tuple(hidden),
                         batch_norm=batch_norm, likelihood=likelihood)
    model = Model(config, get_backend("numpy", dtype="float64", seed=seed))
    params, state = model.init()
    rng = np.random.default_rng([seed, 12345])
    params = {k: v + scale * rng.standard_normal(v.shape) for k, v in params.items()}
    return model, params, state


def binary_inputs(n, x_dim, seed):
    rng = np.random.default_rng([seed, 777])
    return (rng.random((n, x_dim)) < 0.5).astype(np.float64)


def logsumexp(a, axis):
    """Plain NumPy log-sum-exp (written out here, independent of lvae_np.bounds)."""
    m = np.max(a, axis=axis, keepdims=True)
    return np.squeeze(m, axis=axis) + np.log(np.sum(np.exp(a - m), axis=axis))


def log_normal(z, mu, var):
    """Elementwise log N(z; mu, var), written out here (independent of lvae_np.gaussian)."""
    return -0.5 * (np.log(2.0 * np.pi * var) + (z - mu) ** 2 / var)


def softplus_inverse(v):
    return math.log(math.expm1(v))


# The model's networks, rebuilt from the public ops of lvae_np.blocks and the
# parameter names documented in lvae_np.models (no batch norm: evaluation of a
# model built with batch_norm=False). Tests that use them also check that they
# reproduce the model's own forward pass.
def gaussian_block(model, params, block, head, h):
    """(mu, var) of the Gaussian head ``head`` on the MLP block ``block`` at the rows h."""
    assert not model.config.batch_norm
    g, _ = N.mlp_forward(h, subtree(params, block), settings=N.BlockSettings(
        batch_norm=False, training=False, slope=model.config.slope))
    (mu, var), _ = N.gaussian_head_forward(g, subtree(params, head))
    return mu, var


def log_px_given_z1(model, params, z1, x):
    """log p(x | z_1) summed over the data dimensions (Bernoulli output), shape (rows,)."""
    assert not model.config.batch_norm and model.config.likelihood == "bernoulli"
    h, _ = N.mlp_forward(z1, subtree(params, "down0"), settings=N.BlockSettings(
        batch_norm=False, training=False, slope=model.config.slope))
    logits, _ = L.dense_forward(h, params["p0.W"], params["p0.b"])
    ll, _ = LL.bernoulli_log_likelihood_forward(x, logits)
    return ll.sum(axis=1)


def replay(model, params, state, x, noise, k):
    """The samples and Gaussians of the model's per-sample pass, op by op, for x tiled k times.

    Returns (z, q, p): dicts by layer i of z_i, of (mu, var) of q(z_i | .), and
    of (mu, var) of p(z_i | z_{i+1}) (the top layer's prior is N(0, I), omitted).
    """
    n_layers = model.config.n_layers
    xt = np.concatenate([x] * k, axis=0)
    part, _ = model.bottom_up_forward(params, state, xt, training=False)
    z, q, p = {}, {}, {}
    if model.config.kind == "lvae":
        q[n_layers] = (part.mu_hat[-1], part.var_hat[-1])
        z[n_layers], _ = G.reparameterize_forward(*q[n_layers], noise[-1])
        for i in range(n_layers - 1, 0, -1):
            p[i] = gaussian_block(model, params, f"down{i}", f"p{i}", z[i + 1])
            q[i], _ = G.merge_forward(part.mu_hat[i - 1], part.var_hat[i - 1], *p[i])
            z[i], _ = G.reparameterize_forward(*q[i], noise[i - 1])
    else:
        q[1] = (part.mu_hat[0], part.var_hat[0])
        z[1], _ = G.reparameterize_forward(*q[1], noise[0])
        for i in range(2, n_layers + 1):
            q[i] = gaussian_block(model, params, f"up{i}", f"q{i}", z[i - 1])
            z[i], _ = G.reparameterize_forward(*q[i], noise[i - 1])
        for i in range(n_layers - 1, 0, -1):
            p[i] = gaussian_block(model, params, f"down{i}", f"p{i}", z[i + 1])
    return z, q, p


def assert_replay_matches(model, params, state, x, noise, k, terms):
    """replay and log_px_given_z1 reproduce the model's terms (kl="mc") to 1e-12."""
    z, q, p = replay(model, params, state, x, noise, k)
    xt = np.concatenate([x] * k, axis=0)
    np.testing.assert_allclose(log_px_given_z1(model, params, z[1], xt), terms.rec,
                               rtol=1e-12, atol=1e-12)
    n_layers = model.config.n_layers
    for i in range(1, n_layers + 1):
        lq = log_normal(z[i], *q[i])
        lp = log_normal(z[i], *p[i]) if i < n_layers else log_normal(z[i], 0.0, 1.0)
        np.testing.assert_allclose(lq - lp, terms.kl[i - 1], rtol=1e-10, atol=1e-10)
    return z, q, p


# ----------------------------------------------------------------------------
# 1. Analytic and MC KL estimators
# ----------------------------------------------------------------------------
def test_lvae_analytic_and_mc_kl_agree_in_expectation():
    """LVAE: for each layer, E[mc KL] = E[analytic KL] over the noise, for fixed x.

    Both forward passes get the same noise, hence the same samples z_i (the
    estimator does not change how z is drawn). Given z_{i+1}, the analytic term
    is E over z_i of the MC term, so the paired difference (mc - analytic)
    per draw has mean exactly 0; it is tested per input and per layer.
    """
    model, params, state = make_model("lvae", (3, 2), (6, 5), seed=1, scale=0.3)
    x = binary_inputs(2, 8, seed=1)
    k = 10000
    noise = model.noise(k * x.shape[0])
    mc, _ = model.forward(params, state, x, noise, kl="mc", training=False, k=k)
    an, _ = model.forward(params, state, x, noise, kl="analytic", training=False, k=k)
    np.testing.assert_array_equal(mc.rec, an.rec)  # same samples z_1

    n_layers, n = len(mc.kl), x.shape[0]
    # Two-sided, 2 layers x 2 inputs = 4 comparisons, family false-alarm rate
    # 1e-6 (Bonferroni: 2.5e-7 each, |z| < 5.16).
    crit = z_critical(n_layers * n)
    for i in range(n_layers):
        m_draws = mc.kl[i].sum(axis=1).reshape(k, n)
        a_draws = an.kl[i].sum(axis=1).reshape(k, n)
        z = paired_z(m_draws - a_draws)
        assert np.all(np.abs(z) < crit), (i + 1, z, crit)
        # The closed form is a conditional expectation of the MC term, so it has
        # less variance (Rao-Blackwell); the top layer's is constant per input.
        assert np.all(a_draws.var(axis=0) < 0.5 * m_draws.var(axis=0)), i + 1
    top = an.kl[-1].sum(axis=1).reshape(k, n)
    np.testing.assert_allclose(top, np.broadcast_to(top[0], top.shape), rtol=0, atol=1e-12)


def _copy_channel(params, block, head, d, width, var, slope):
    """Make block+head compute the Gaussian N(input, var) exactly, for a d-dim input.

    Leaky ReLU gives lrelu(a) - lrelu(-a) = (1 + slope) a, so a block of two
    layers with units (a, -a) passes a through linearly, scaled by (1 + slope)^2.
    Needs width >= 2 d; the remaining units are zero.
    """
    W1 = np.zeros((d, width))
    W2 = np.zeros((width, width))
    W_mu = np.zeros((width, d))
    for j in range(d):
        W1[j, 2 * j], W1[j, 2 * j + 1] = 1.0, -1.0
        W2[2 * j, 2 * j], W2[2 * j + 1, 2 * j] = 1.0, -1.0
        W2[2 * j, 2 * j + 1], W2[2 * j + 1, 2 * j + 1] = -1.0, 1.0
        W_mu[2 * j, j], W_mu[2 * j + 1, j] = 1.0, -1.0
    params[f"{block}.W1"], params[f"{block}.b1"] = W1, np.zeros(width)
    params[f"{block}.W2"], params[f"{block}.b2"] = W2, np.zeros(width)
    params[f"{head}.W_mu"], params[f"{head}.b_mu"] = W_mu / (1.0 + slope) ** 2, np.zeros(d)
    params[f"{head}.W_var"] = np.zeros((width, d))
    params[f"{head}.b_var"] = np.full(d, softplus_inverse(var))


def test_vae_closed_form_given_sampled_upper_layer_is_biased_and_the_test_rejects_it():
    """The z-test above has power: it rejects the VAE's lower-layer closed form.

    For the VAE, z_1 ~ q(z_1|x) is drawn first and z_2 ~ q(z_2|z_1) from it, so
    KL(q(z_1|x) || p(z_1|z_2)) at the sampled z_2 has expectation
    E_{q(z_2|x)} KL(q(z_1|x) || p(z_1|z_2)), which differs from the MC term's
    E_{q(z_1, z_2|x)}[log q(z_1|x) - log p(z_1|z_2)]: the closed form treats z_1
    as independent of z_2. The model refuses to use it; it is computed here
    from the same ops, in the order of models.py.

    Params making the bias clear: q(z_2|z_1) = N(z_1, 0.01) and
    p(z_1|z_2) = N(z_2, 0.1) (copy channels, see _copy_channel). The MC term
    sees z_1 - z_2 ~ N(0, 0.01); the closed form sees all of q(z_1|x)'s spread.
    """
    latent, hidden = (2, 2), (6, 5)
    model, params, state = make_model("vae", latent, hidden, seed=2, scale=0.3)
    slope = model.config.slope
    _copy_channel(params, "up2", "q2", latent[0], hidden[1], 0.01, slope)
    _copy_channel(params, "down1", "p1", latent[1], hidden[1], 0.1, slope)
    x = binary_inputs(2, 8, seed=2)
    n, k = x.shape[0], 10000
    noise = model.noise(k * n)
    mc, _ = model.forward(params, state, x, noise, kl="mc", training=False, k=k)

    # The forward pass again, op by op as in the model's per-sample pass (VAE branch); it
    # reproduces the model's MC terms, so the same samples and Gaussians are used.
    z, q, p = assert_replay_matches(model, params, state, x, noise, k, mc)
    (mu1, var1), (mu_p, var_p) = q[1], p[1]
    np.testing.assert_allclose(q[2][0], z[1], rtol=1e-12, atol=1e-12)   # the copy channels
    np.testing.assert_allclose(mu_p, z[2], rtol=1e-12, atol=1e-12)
    biased, _ = G.kl_normal_forward(mu1, var1, mu_p, var_p)
    d = (mc.kl[0].sum(axis=1) - biased.sum(axis=1)).reshape(k, n)
    z = paired_z(d)
    # The same test as for the LVAE (2 comparisons here, family rate 1e-6): it must reject.
    crit = z_critical(n)
    assert np.all(np.abs(z) > crit), (z, crit)
    assert np.all(d.mean(axis=0) < -1.0), d.mean(axis=0)  # a bias of nats, not a fluke


# ----------------------------------------------------------------------------
# 2. The VAE's MC KL against a quadrature reference
# ----------------------------------------------------------------------------
def _vae_kl_reference(model, params, state, x, n_outer, n_inner, lim=8.0):
    """E_q[log q(z1|x) + log q(z2|z1) - log p(z1|z2) - log p(z2)] by quadrature, for one x.

    Split as A + B + C with
      A = E[log q(z1|x)]                    = -sum_j 0.5 log(2 pi e var_q1,j)  (exact entropy)
      B = E_{z1}[KL(q(z2|z1) || N(0, I))]   closed-form KL inside, written out here
      C = -E_{z1, z2}[log p(z1|z2)]
    over z1 = mu_q1 + sd_q1 eps1 and z2 = mu_q2(z1) + sd_q2(z1) eps2. The
    expectation over eps1 (2-D) is a Gauss-Hermite product rule (n_outer nodes
    per dimension); the one over eps2 (1-D) a midpoint rule with n_inner points
    on [-lim, lim] and standard normal weights: log p(z1|z2) is kinked in z2
    (leaky ReLU), where Gauss-Hermite converges slowly and the midpoint rule
    as h^2. No sample is drawn, and no lvae_np KL or log-density is used:
    only the model's networks (the q and p heads).
    """
    nodes, weights = hermegauss(n_outer)
    weights = weights / weights.sum()
    h = 2.0 * lim / n_inner
    eps2 = -lim + h * (np.arange(n_inner) + 0.5)
    w2 = np.exp(-0.5 * eps2 ** 2) / math.sqrt(2.0 * np.pi) * h
    part, _ = model.bottom_up_forward(params, state, x[None, :], training=False)
    mu1, var1 = part.mu_hat[0][0], part.var_hat[0][0]
    d1 = mu1.shape[0]
    grids = np.meshgrid(*([nodes] * d1), indexing="ij")
    eps1 = np.stack([g.ravel() for g in grids], axis=1)              # (n^d1, d1)
    w1 = np.prod(np.meshgrid(*([weights] * d1), indexing="ij"), axis=0).ravel()
    z1 = mu1 + np.sqrt(var1) * eps1
    mu2, var2 = gaussian_block(model, params, "up2", "q2", z1)
    assert mu2.shape[1] == 1, "the quadrature over z2 below is one-dimensional"
    a = -0.5 * np.sum(np.log(2.0 * np.pi * np.e * var1))
    b = np.sum(w1 * np.sum(0.5 * (var2 + mu2 ** 2 - 1.0 - np.log(var2)), axis=1))
    z2 = (mu2 + np.sqrt(var2) * eps2[None, :]).reshape(-1, 1)       # (n^d1 * n_inner, 1)
    mu_p, var_p = gaussian_block(model, params, "down1", "p1", z2)
    lp = log_normal(np.repeat(z1, n_inner, axis=0), mu_p, var_p).sum(axis=1)
    c = -np.sum((w1[:, None] * w2[None, :]).ravel() * lp)
    return a + b + c


def test_vae_mc_kl_is_unbiased_against_a_quadrature_reference():
    """VAE: the mean of the model's total MC KL over many draws matches the quadrature value.

    Also kl="analytic" (closed form at the top, MC below) is unbiased.
    """
    model, params, state = make_model("vae", (2, 1), (6, 5), seed=3, scale=0.2)
    x = binary_inputs(1, 8, seed=3)
    ref = _vae_kl_reference(model, params, state, x[0], 40, 800)
    # The quadrature error, estimated by the change from a coarser rule; it is
    # added to the Monte Carlo standard error below (and is far smaller).
    quad_err = abs(ref - _vae_kl_reference(model, params, state, x[0], 30, 400))
    assert quad_err < 2e-4

    k = 100000
    noise = model.noise(k)
    zs = {}
    for kl in ("mc", "analytic"):
        terms, _ = model.forward(params, state, x, noise, kl=kl, training=False, k=k)
        total = sum(t.sum(axis=1) for t in terms.kl)
        se = total.std(ddof=1) / math.sqrt(k)
        zs[kl] = (total.mean() - ref) / math.hypot(se, quad_err)
    # Two-sided, 2 comparisons, family false-alarm rate 1e-6 (|z| < 5.03);
    # quad_err is added to the standard error, which only lowers the rate.
    assert all(abs(z) < z_critical(2) for z in zs.values()), zs


# ----------------------------------------------------------------------------
# 3a. k = 1: the importance-weighted objective is the ELBO with the MC KL
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("kind", ["lvae", "vae"])
def test_iwae_with_one_sample_is_the_mc_elbo(kind, batch_norm):
    model, params, state = make_model(kind, (3, 2), (6, 5), seed=4, scale=0.3,
                                      batch_norm=batch_norm)
    x = binary_inputs(5, 8, seed=4)
    noise = model.noise(x.shape[0])
    loss_iw, grads_iw, stats_iw = bounds.iwae_loss_and_grads(model, params, state, x, 1,
                                                             noise=noise)
    loss, grads, stats = model.loss_and_grads(params, state, x, 1.0, noise=noise, kl="mc")
    np.testing.assert_allclose(loss_iw, loss, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(stats_iw["bound"], -loss, rtol=1e-12, atol=1e-12)
    assert grads_iw.keys() == grads.keys() == params.keys()
    for key in grads:
        np.testing.assert_allclose(grads_iw[key], grads[key], rtol=1e-12, atol=1e-12,
                                   err_msg=key)
    for key in stats["state"]:
        np.testing.assert_allclose(stats_iw["state"][key], stats["state"][key], rtol=1e-12,
                                   err_msg=key)


# ----------------------------------------------------------------------------
# 3b. E[L_k] does not decrease with k
# ----------------------------------------------------------------------------
def test_iw_bound_does_not_decrease_with_k():
    """Estimate E[L_k] per input from disjoint groups of k log-weights, for k = 1 .. 100.

    Each k gets its own block of the (K, N) log-weight matrix, so the means for
    different k are independent and a two-sample z-test applies. Monotonicity
    holds for any i.i.d. log-weights, so this mostly checks that the rows of
    log_weights are independent draws with the right mean at k = 1 (the anchor
    below); their values are checked by the exact-likelihood test.
    """
    model, params, state = make_model("lvae", (3, 2), (6, 5), seed=5, scale=0.3)
    x = binary_inputs(4, 8, seed=5)
    ks, groups = (1, 2, 5, 20, 100), 400
    lw = bounds.log_weights(model, params, state, x, groups * sum(ks))
    assert lw.shape == (groups * sum(ks), x.shape[0]) and lw.dtype == np.float64
    means, ses, start = {}, {}, 0
    for k in ks:
        block = lw[start:start + groups * k].reshape(groups, k, -1)
        start += groups * k
        lk = logsumexp(block, axis=1) - math.log(k)                  # (groups, N)
        means[k], ses[k] = lk.mean(axis=0), lk.std(axis=0, ddof=1) / math.sqrt(groups)
    # One-sided: E[L_k] >= E[L_k'] for k > k'; 4 steps x 4 inputs = 16 comparisons,
    # family false-alarm rate 1e-6 (z > -5.29 each). The means are independent, so
    # the two-sample standard error is exact.
    crit = z_critical(16, two_sided=False)
    for prev, k in zip(ks, ks[1:]):
        z = (means[k] - means[prev]) / np.hypot(ses[k], ses[prev])
        assert np.all(z > -crit), (prev, k, z)
    gain = means[100] - means[1]
    z = gain / np.hypot(ses[100], ses[1])
    assert np.all(z > crit) and np.all(gain > 0.2), (gain, z)

    # Anchor: E[L_1] is the ELBO, here estimated independently with the model's
    # lower-variance kl="analytic" on fresh noise. Two-sided, 4 inputs, family
    # false-alarm rate 1e-6 (|z| < 5.03).
    reps = 20000
    f = model.forward(params, state, x, model.noise(reps * x.shape[0]), beta=1.0,
                      kl="analytic", training=False, k=reps)[0].f
    f = f.reshape(reps, -1)
    z = (means[1] - f.mean(axis=0)) / np.hypot(ses[1], f.std(axis=0, ddof=1) / math.sqrt(reps))
    assert np.all(np.abs(z) < z_critical(x.shape[0])), z


# ----------------------------------------------------------------------------
# 3c. L_5000 against the exact log-likelihood of a tiny model
# ----------------------------------------------------------------------------
def _exact_log_likelihood(model, params, state, x, n, lim=8.0):
    """log p(x) for each row of x, by the midpoint rule on an n x n grid over [-lim, lim]^2.

    One layer of 2 dims: p(x) = int p(x|z) N(z; 0, I) dz.
    Two layers of 1 dim: p(x) = int int p(x|z1) p(z1|z2) N(z2; 0, 1) dz1 dz2, with
    z1 = mu_p(z2) + sd_p(z2) u (so p(z1|z2) dz1 = N(u; 0, 1) du): the grid is
    over (u, z2), and both variables have standard normal weights. The model's
    generative path gives p(x|z1) (down0, p0) and p(z1|z2) (down1, p1), rebuilt
    from lvae_np.blocks (the test checks them against the model's forward pass).
    """
    h = 2.0 * lim / n
    g = -lim + h * (np.arange(n) + 0.5)
    a, b = (t.ravel() for t in np.meshgrid(g, g, indexing="ij"))
    log_w = log_normal(a, 0.0, 1.0) + log_normal(b, 0.0, 1.0) + 2.0 * math.log(h)
    if model.config.latent == (2,):
        z1 = np.stack([a, b], axis=1)
    else:
        assert model.config.latent == (1, 1)
        mu_p, var_p = gaussian_block(model, params, "down1", "p1", b[:, None])
        z1 = mu_p + np.sqrt(var_p) * a[:, None]
    out = []
    for row in x:
        ll = log_px_given_z1(model, params, z1, np.broadcast_to(row, (z1.shape[0], row.size)))
        out.append(logsumexp(ll + log_w, axis=0))
    return np.array(out)


def _fit_encoder(model, params, state, x, *, steps=600, k=5, lr=0.03):
    """Adam on the importance-weighted bound, for the inference parameters only (up*, q*).

    The generative parameters, hence log p(x), stay as they are. A random
    encoder is a poor proposal (before this fit, L_5000 was up to 0.46 nats
    off for these models, and 6 nats with larger random weights); this gives
    one close enough for a 0.05-nat comparison.
    """
    params = dict(params)
    keys = [key for key in params if key.startswith(("up", "q"))]
    m1 = {key: np.zeros_like(params[key]) for key in keys}
    m2 = {key: np.zeros_like(params[key]) for key in keys}
    for t in range(1, steps + 1):
        _, grads, _ = bounds.iwae_loss_and_grads(model, params, state, x, k, training=False)
        for key in keys:
            m1[key] = 0.9 * m1[key] + 0.1 * grads[key]
            m2[key] = 0.999 * m2[key] + 0.001 * grads[key] ** 2
            step = (m1[key] / (1 - 0.9 ** t)) / (np.sqrt(m2[key] / (1 - 0.999 ** t)) + 1e-8)
            params[key] = params[key] - lr * step
    return params


EXACT_CASES = [("lvae", (2,), (7,), 21), ("vae", (2,), (7,), 22),
               ("lvae", (1, 1), (7, 5), 23), ("vae", (1, 1), (7, 5), 24)]


@pytest.mark.parametrize("kind, latent, hidden, seed", EXACT_CASES,
                         ids=[f"{c[0]}-{'x'.join(map(str, c[1]))}" for c in EXACT_CASES])
def test_log_likelihood_matches_the_exact_value_of_a_tiny_model(kind, latent, hidden, seed):
    model, params, state = make_model(kind, latent, hidden, x_dim=6, seed=seed, scale=0.3)
    x = binary_inputs(3, 6, seed=seed)
    noise = model.noise(7 * 3)
    terms, _ = model.forward(params, state, x, noise, kl="mc", training=False, k=7)
    assert_replay_matches(model, params, state, x, noise, 7, terms)
    exact = _exact_log_likelihood(model, params, state, x, 600)
    coarse = _exact_log_likelihood(model, params, state, x, 400)
    np.testing.assert_allclose(exact, coarse, rtol=0, atol=1e-4)    # the grid has converged
    fitted = _fit_encoder(model, params, state, x)
    for key in params:  # the generative model, hence log p(x), is unchanged
        if not key.startswith(("up", "q")):
            assert fitted[key] is params[key], key
    estimate = bounds.log_likelihood(model, fitted, state, x, k=5000)
    assert estimate.shape == (3,) and estimate.dtype == np.float64
    np.testing.assert_allclose(estimate, exact, rtol=0, atol=0.05)


# ----------------------------------------------------------------------------
# 3d. log-mean-exp
# ----------------------------------------------------------------------------
def _fsum_logmeanexp(column):
    return math.log(math.fsum(math.exp(float(v)) for v in column) / len(column))


def test_logmeanexp_matches_fsum_on_moderate_values():
    a = np.random.default_rng(30).uniform(-20.0, 20.0, size=(7, 5))
    out, cache = logmeanexp_forward(a)
    expected = [_fsum_logmeanexp(a[:, n]) for n in range(a.shape[1])]
    np.testing.assert_allclose(out, expected, rtol=1e-14, atol=1e-13)
    np.testing.assert_allclose(cache.weights.sum(axis=0), 1.0, rtol=0, atol=1e-15)


@pytest.mark.parametrize("offset", [-1e4, 1e4, -1e5])
def test_logmeanexp_is_stable_for_huge_log_weights(offset):
    small = np.random.default_rng(31).uniform(-5.0, 5.0, size=(6, 4))
    a = offset + small
    out, cache = logmeanexp_forward(a)
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(cache.weights))
    # log mean exp(offset + s) = offset + log mean exp(s); a - offset is exact here up to
    # rounding of a, so compare with fsum on (a - offset).
    expected = [offset + _fsum_logmeanexp(a[:, n] - offset) for n in range(a.shape[1])]
    np.testing.assert_allclose(out, expected, rtol=1e-15, atol=1e-11)


def test_logmeanexp_with_log_weights_far_apart():
    a = np.array([[-1e4, 1e4, 0.0], [1e4, 1e4, -800.0], [0.0, -1e4, -800.0]])
    out, cache = logmeanexp_forward(a)
    np.testing.assert_allclose(out, [1e4 - math.log(3), 1e4 + math.log(2 / 3), -math.log(3)],
                               rtol=1e-15)
    np.testing.assert_allclose(cache.weights[:, 0], [0.0, 1.0, 0.0])
    np.testing.assert_allclose(cache.weights[:, 1], [0.5, 0.5, 0.0])
    assert np.all(np.isfinite(cache.weights))


def test_logmeanexp_gradients():
    """logmeanexp_forward / logmeanexp_backward against central differences."""
    rng = np.random.default_rng(32)
    for a in (rng.normal(size=(5, 3)), rng.normal(scale=10.0, size=(8, 2)),
              rng.normal(size=(1, 4))):
        assert_gradients(logmeanexp_forward, logmeanexp_backward, [a])


# ----------------------------------------------------------------------------
# 3e. warm-up
# ----------------------------------------------------------------------------
def test_warmup_beta():
    assert bounds.warmup_beta(0, 10) == 0.0
    for epoch in range(11):
        assert bounds.warmup_beta(epoch, 10) == pytest.approx(epoch / 10, abs=1e-15)
    steps = np.diff([bounds.warmup_beta(e, 7) for e in range(8)])
    np.testing.assert_allclose(steps, 1 / 7, rtol=1e-12)                 # linear
    for epoch in (10, 11, 50, 10**6):
        assert bounds.warmup_beta(epoch, 10) == 1.0
    for epoch in (0, 1, 5, 1000):
        assert bounds.warmup_beta(epoch, 0) == 1.0
    assert bounds.warmup_beta(1, 1) == 1.0


# ----------------------------------------------------------------------------
# 3f. chunked evaluation
# ----------------------------------------------------------------------------
def _seeded(model, seed):
    """A model with the same config and a fresh backend seeded with ``seed``."""
    return Model(model.config, get_backend("numpy", dtype="float64", seed=seed))


def test_log_likelihood_chunks_draw_the_same_noise_with_one_layer():
    """One stochastic layer: every max_rows gives the same estimates from the same stream.

    Each chunk draws normal((s*n, d)) in sample-major order and the chunks
    take consecutive samples, so with a single noise array per chunk the
    stream is cut at different places but each (sample, input) gets the same
    numbers. (With two or more layers each chunk draws one array per layer,
    so the assignment depends on the chunking; see the next test. Changing
    batch_size also changes it, since each batch draws for its own inputs.)
    """
    model, params, state = make_model("lvae", (2,), (6,), seed=40, scale=0.3)
    x = binary_inputs(5, 8, seed=40)
    k = 60
    ref = bounds.log_likelihood(_seeded(model, 7), params, state, x, k=k, max_rows=10**6)
    for max_rows in (5, 7, 12, 50, 299, 300):
        got = bounds.log_likelihood(_seeded(model, 7), params, state, x, k=k,
                                    max_rows=max_rows)
        np.testing.assert_allclose(got, ref, rtol=1e-13, atol=0, err_msg=str(max_rows))
    # log_weights too: row s is sample s, whatever the chunking.
    lw_ref = bounds.log_weights(_seeded(model, 8), params, state, x, k)
    lw = bounds.log_weights(_seeded(model, 8), params, state, x, k, max_rows=15)
    np.testing.assert_allclose(lw, lw_ref, rtol=1e-13)


class _TableNoise:
    """A stand-in for Model.noise that serves fixed noise per (sample, input).

    ``table`` holds one (k, N, d_i) array per layer. log_likelihood takes the
    inputs batch_size at a time and, within a batch, consecutive samples in
    chunks; each call model.noise(s * nb) gets the next s samples of the
    current batch's nb inputs, in sample-major order.
    """

    def __init__(self, table, batch_size):
        self.table, self.batch_size = table, batch_size
        self.k, self.n = table[0].shape[:2]
        self.first, self.done, self.calls = 0, 0, 0

    def __call__(self, rows):
        nb = min(self.batch_size, self.n - self.first)
        assert rows % nb == 0
        s = rows // nb
        assert self.done + s <= self.k
        out = [t[self.done:self.done + s, self.first:self.first + nb].reshape(s * nb, -1)
               for t in self.table]
        self.done += s
        self.calls += 1
        if self.done == self.k:
            self.first, self.done = self.first + nb, 0
        return out

    @property
    def used_up(self):
        return self.first == self.n and self.done == 0


@pytest.mark.parametrize("kind", ["lvae", "vae"])
def test_log_likelihood_chunking_is_exact_given_the_same_noise_per_sample(kind):
    """Two layers: given the same eps per (sample, input), chunking changes nothing.

    The reference is the log-mean-exp of the model's own forward pass (kl="mc",
    beta=1, evaluation mode) on all k*N rows at once.
    """
    model, params, state = make_model(kind, (3, 2), (6, 5), seed=41, scale=0.3)
    x = binary_inputs(5, 8, seed=41)
    k, n = 24, x.shape[0]
    rng = np.random.default_rng(41)
    table = [rng.standard_normal((k, n, d)) for d in model.config.latent]
    f = model.forward(params, state, x, [t.reshape(k * n, -1) for t in table],
                      beta=1.0, kl="mc", training=False, k=k)[0].f
    ref = logsumexp(f.reshape(k, n), axis=0) - math.log(k)
    for batch_size, max_rows in [(5, 10**6), (100, 10**6), (5, 10), (5, 3), (2, 10**6),
                                 (2, 7), (3, 9), (1, 1), (1, 5), (4, 17)]:
        m = _seeded(model, 0)
        m.noise = _TableNoise(table, batch_size)
        got = bounds.log_likelihood(m, params, state, x, k=k, batch_size=batch_size,
                                    max_rows=max_rows)
        assert m.noise.used_up
        # One call per chunk: ceil(k / samples per chunk) chunks for each batch of inputs.
        sizes = [min(batch_size, n - start) for start in range(0, n, batch_size)]
        assert m.noise.calls == sum(math.ceil(k / max(1, max_rows // nb)) for nb in sizes)
        np.testing.assert_allclose(got, ref, rtol=1e-13, atol=0,
                                   err_msg=f"batch_size={batch_size}, max_rows={max_rows}")


def test_default_chunk_size_is_small_on_the_cpu():
    assert bounds.default_max_rows(np.zeros(3)) == bounds.MAX_ROWS == 1000


@pytest.mark.gpu
def test_default_chunk_size_is_large_on_a_gpu():
    from conftest import cupy_or_skip

    cupy = cupy_or_skip()
    assert bounds.default_max_rows(cupy.zeros(3)) == bounds.GPU_MAX_ROWS > bounds.MAX_ROWS
