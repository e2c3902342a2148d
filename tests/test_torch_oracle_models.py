"""An independent oracle for the whole models: PyTorch autograd in float64 against our passes.

The reference below is the VAE and the Ladder VAE written again, directly in
torch, from the paper's equations: MLP blocks (Dense -> BatchNorm -> leaky
ReLU, twice), Gaussian heads (mu linear, variance softplus), the
precision-weighted merge in its textbook form (var_q = 1 / (1/var_hat +
1/var_p), mu_q = (mu_hat/var_hat + mu_p/var_p) var_q), the closed-form KLs,
the Gaussian log-density and the Bernoulli log-likelihood from logits. It
calls no lvae_np function: given the same parameter dict and the same noise,
it computes the same scalar loss, and torch's autograd gives the gradient of
every parameter, which must agree with our hand-written backward passes.

It knows the original code's options too (``ModelConfig``): heads with batch
norm (each half normalised on its own here, where ours normalise the two
side by side), the LVAE's unshared top-down path (``tdown{i}``, ``tp{i}``),
``only_mu_up``, the wider generative blocks (shapes only) and ``bn_eps``.

Skipped, with the reason, where PyTorch is not installed (it is optional:
``pip install torch==2.13.0``). The package itself never imports it.
"""
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch (optional oracle) is not installed")

from lvae_np.bounds import iwae_loss_and_grads  # noqa: E402
from lvae_np.models import Model, ModelConfig  # noqa: E402

RTOL, ATOL = 1e-10, 1e-12

# The constants of the paper's setup (Lasagne's defaults in the original code),
# written out here rather than imported, so the oracle stays independent.
SLOPE = 0.01          # leaky ReLU
BN_EPS = 1e-4         # batch norm epsilon (the default of ModelConfig.bn_eps)
BN_MOMENTUM = 0.1     # weight of the new batch in the running averages
VAR_FLOOR = 1e-8      # lower bound on every variance (never active here)
LOG_2PI = math.log(2.0 * math.pi)

N, X_DIM = 5, 7
LATENT, HIDDEN = (4, 3, 2), (6, 5, 4)
DT = torch.float64


# ----------------------------------------------------------------------------
# The reference models in torch
# ----------------------------------------------------------------------------
def softplus(a):
    return torch.logaddexp(a, torch.zeros_like(a))


def log_normal(z, mu, var):
    """log N(z; mu, var) per unit."""
    return -0.5 * (LOG_2PI + torch.log(var) + (z - mu) ** 2 / var)


def kl_normal(mu_q, var_q, mu_p, var_p):
    """KL(N(mu_q, var_q) || N(mu_p, var_p)) per unit."""
    return 0.5 * (torch.log(var_p) - torch.log(var_q) + (var_q + (mu_q - mu_p) ** 2) / var_p - 1.0)


def kl_standard_normal(mu, var):
    """KL(N(mu, var) || N(0, 1)) per unit."""
    return 0.5 * (var + mu ** 2 - 1.0 - torch.log(var))


class TorchReference:
    """The VAE / LVAE of ``config`` on torch copies of ``params`` (leaves with requires_grad)."""

    def __init__(self, config, params, state, training=True):
        self.c = config
        self.params = {k: torch.tensor(np.asarray(v), dtype=DT, requires_grad=True)
                       for k, v in params.items()}
        self.state = {k: torch.tensor(np.asarray(v), dtype=DT) for k, v in state.items()}
        self.training = training
        self.new_state = dict(self.state)

    # -- blocks ------------------------------------------------------------
    def batch_norm(self, a, name, suffix):
        """gamma * (a - mean) / sqrt(var + eps) + beta, with ``{name}.gamma{suffix}`` etc."""
        P = self.params
        if self.training:
            mean = a.mean(dim=0)
            var = ((a - mean) ** 2).mean(dim=0)      # biased batch variance
            for stat, value in (("mean", mean), ("var", var)):
                key = f"{name}.{stat}{suffix}"
                self.new_state[key] = ((1.0 - BN_MOMENTUM) * self.state[key]
                                       + BN_MOMENTUM * value.detach())
        else:
            mean, var = self.state[f"{name}.mean{suffix}"], self.state[f"{name}.var{suffix}"]
        return (P[f"{name}.gamma{suffix}"] * (a - mean) / torch.sqrt(var + self.c.bn_eps)
                + P[f"{name}.beta{suffix}"])

    def mlp(self, h, name):
        """Two layers: h <- lrelu(BN(h W)) with batch norm, h <- lrelu(h W + b) without."""
        P = self.params
        for j in (1, 2):
            a = h @ P[f"{name}.W{j}"]
            if self.c.batch_norm:
                a = self.batch_norm(a, name, j)
            else:
                a = a + P[f"{name}.b{j}"]
            h = torch.where(a > 0, a, SLOPE * a)
        return h

    def head(self, h, name):
        """A diagonal Gaussian: mu = h W_mu + b_mu, var = softplus(h W_var + b_var).

        With head_batch_norm (not the output layer p0): mu = BN(h W_mu),
        var = softplus(BN(h W_var)), each half with its own batch norm.
        """
        P = self.params
        if self.c.head_batch_norm and name != "p0":
            mu = self.batch_norm(h @ P[f"{name}.W_mu"], name, "_mu")
            a_var = self.batch_norm(h @ P[f"{name}.W_var"], name, "_var")
        else:
            mu = h @ P[f"{name}.W_mu"] + P[f"{name}.b_mu"]
            a_var = h @ P[f"{name}.W_var"] + P[f"{name}.b_var"]
        return mu, softplus(a_var).clamp_min(VAR_FLOOR)

    # -- the x-only part ---------------------------------------------------
    def bottom_up(self, x):
        """LVAE: (mu_hat_i, var_hat_i) for i = 1..L. VAE: q(z_1 | x) only."""
        n_up = self.c.n_layers if self.c.kind == "lvae" else 1
        h, mus, var_hats = x, [], []
        for i in range(1, n_up + 1):
            below = mus[-1] if self.c.only_mu_up and i > 1 else h   # only_mu_up: mu_hat_{i-1}
            h = self.mlp(below, f"up{i}")
            mu, var = self.head(h, f"q{i}")
            mus.append(mu)
            var_hats.append(var)
        return mus, var_hats

    # -- sampling, KL and likelihood ----------------------------------------
    def top_down(self, x, mus, var_hats, eps, beta, kl):
        """f = log p(x | z_1) - beta * sum KL per row; also the rec term and the KLs (z_1 first)."""
        Lz, analytic = self.c.n_layers, kl == "analytic"
        kls = {}
        if self.c.kind == "lvae":
            mu_q, var_q = mus[Lz - 1], var_hats[Lz - 1]
            z = mu_q + torch.sqrt(var_q) * eps[Lz - 1]
            kls[Lz] = (kl_standard_normal(mu_q, var_q) if analytic else
                       log_normal(z, mu_q, var_q) - log_normal(z, torch.zeros_like(z),
                                                               torch.ones_like(z)))
            for i in range(Lz - 1, 0, -1):
                mu_p, var_p = self.head(self.mlp(z, f"down{i}"), f"p{i}")
                if self.c.shared_top_down:
                    mu_td, var_td = mu_p, var_p
                else:  # the top-down inference path's own block and head
                    mu_td, var_td = self.head(self.mlp(z, f"tdown{i}"), f"tp{i}")
                mu_hat, var_hat = mus[i - 1], var_hats[i - 1]
                var_q = 1.0 / (1.0 / var_hat + 1.0 / var_td)         # paper eq. (19)
                mu_q = (mu_hat / var_hat + mu_td / var_td) * var_q   # paper eq. (18)
                z = mu_q + torch.sqrt(var_q) * eps[i - 1]
                kls[i] = (kl_normal(mu_q, var_q, mu_p, var_p) if analytic else
                          log_normal(z, mu_q, var_q) - log_normal(z, mu_p, var_p))
            z1 = z
        else:
            z, mu_q, var_q = {}, {1: mus[0]}, {1: var_hats[0]}
            z[1] = mu_q[1] + torch.sqrt(var_q[1]) * eps[0]
            for i in range(2, Lz + 1):
                mu_q[i], var_q[i] = self.head(self.mlp(z[i - 1], f"up{i}"), f"q{i}")
                z[i] = mu_q[i] + torch.sqrt(var_q[i]) * eps[i - 1]
            zL = z[Lz]
            kls[Lz] = (kl_standard_normal(mu_q[Lz], var_q[Lz]) if analytic else
                       log_normal(zL, mu_q[Lz], var_q[Lz])
                       - log_normal(zL, torch.zeros_like(zL), torch.ones_like(zL)))
            for i in range(Lz - 1, 0, -1):
                mu_p, var_p = self.head(self.mlp(z[i + 1], f"down{i}"), f"p{i}")
                # The single-sample estimate below the top, whatever `kl` says.
                kls[i] = log_normal(z[i], mu_q[i], var_q[i]) - log_normal(z[i], mu_p, var_p)
            z1 = z[1]
        rec = self.log_likelihood(z1, x)
        f = rec - beta * sum(kls[i].sum(dim=1) for i in range(1, Lz + 1))
        return f, rec, [kls[i] for i in range(1, Lz + 1)]

    def log_likelihood(self, z1, x):
        """log p(x | z_1) summed over the data dimensions."""
        h = self.mlp(z1, "down0")
        if self.c.likelihood == "bernoulli":
            logits = h @ self.params["p0.W"] + self.params["p0.b"]
            ll = x * logits - softplus(logits)
        else:
            mu, var = self.head(h, "p0")
            ll = log_normal(x, mu, var)
        return ll.sum(dim=1)

    # -- objectives ----------------------------------------------------------
    def elbo_loss(self, x, noise, beta, kl):
        x = torch.tensor(x, dtype=DT)
        eps = [torch.tensor(e, dtype=DT) for e in noise]
        mus, var_hats = self.bottom_up(x)
        f, rec, kls = self.top_down(x, mus, var_hats, eps, beta, kl)
        loss = -f.mean()
        loss.backward()
        return loss, f, rec, kls

    def iwae_loss(self, x, noise, k, beta):
        """-mean_n log (1/k) sum_s w_sn; the x-only part on the N inputs, the rest on k*N rows."""
        x = torch.tensor(x, dtype=DT)
        n = x.shape[0]
        eps = [torch.tensor(e, dtype=DT) for e in noise]
        mus, var_hats = self.bottom_up(x)

        def tile(a):  # sample-major: row s*N + n is a[n]
            return torch.cat([a] * k, dim=0)

        f, _, _ = self.top_down(tile(x), [tile(m) for m in mus], [tile(v) for v in var_hats],
                                eps, beta, "mc")
        log_w = f.reshape(k, n)
        loss = -(torch.logsumexp(log_w, dim=0) - math.log(k)).mean()
        loss.backward()
        return loss

    def grads(self):
        return {key: (t.grad.numpy() if t.grad is not None else np.zeros(tuple(t.shape)))
                for key, t in self.params.items()}


# ----------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------
def make_problem(kind, n_layers, batch_norm, likelihood="bernoulli", *, seed, k=1, **options):
    """A model at slightly perturbed parameters, data and noise (k*N rows of noise).

    ``options``: more ModelConfig fields (the original code's options).
    """
    config = ModelConfig(kind=kind, x_dim=X_DIM, latent=LATENT[:n_layers],
                         hidden=HIDDEN[:n_layers], batch_norm=batch_norm,
                         likelihood=likelihood, **options)
    model = Model(config)
    params, state = model.init()
    rng = np.random.default_rng(seed)
    # Away from the symmetric init: every weight, bias, gamma and beta moves.
    params = {key: v + 0.2 * rng.normal(size=v.shape) for key, v in params.items()}
    if likelihood == "bernoulli":
        x = rng.uniform(0.0, 1.0, size=(N, X_DIM))
    else:
        x = rng.normal(size=(N, X_DIM))
    noise = [rng.normal(size=(k * N, d)) for d in config.latent]
    return model, params, state, x, noise, rng


def assert_close(ours, theirs, what):
    np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=RTOL, atol=ATOL,
                               err_msg=what)


def assert_grads_match(grads, ref, params):
    assert set(grads) == set(params), (
        f"gradient keys differ from the parameter keys: "
        f"missing {sorted(set(params) - set(grads))}, extra {sorted(set(grads) - set(params))}")
    theirs = ref.grads()
    for key in sorted(params):
        assert grads[key].shape == params[key].shape, f"shape of the gradient of {key}"
        assert_close(grads[key], theirs[key], f"gradient of {key}")


def assert_state_matches(new_state, ref, state):
    assert set(new_state) == set(state), "the new state has other keys than the state"
    for key in sorted(state):
        assert_close(new_state[key], ref.new_state[key], f"running average {key}")


def check_elbo(kind, n_layers, batch_norm, kl, *, likelihood="bernoulli", beta=0.7,
               training=True, seed=0, **options):
    model, params, state, x, noise, rng = make_problem(kind, n_layers, batch_norm, likelihood,
                                                       seed=seed, **options)
    if not training:  # running averages away from their initial 0 and 1
        state = {key: (v + 0.3 * rng.normal(size=v.shape) if key.split(".")[1].startswith("mean")
                       else v * rng.uniform(0.5, 2.0, size=v.shape))
                 for key, v in state.items()}
    loss, grads, stats = model.loss_and_grads(params, state, x, beta, noise=noise, kl=kl,
                                              training=training)
    ref = TorchReference(model.config, params, state, training=training)
    t_loss, t_f, t_rec, t_kls = ref.elbo_loss(x, noise, beta, kl)

    assert_close(loss, t_loss.item(), "loss")
    assert_close(stats["objective"], t_f.mean().item(), "stats['objective']")
    assert_close(stats["rec"], t_rec.mean().item(), "stats['rec']")
    for i, (ours, theirs) in enumerate(zip(stats["kl_units"], t_kls), start=1):
        assert_close(ours, theirs.mean(dim=0).detach().numpy(), f"stats['kl_units'] of z_{i}")
    assert_grads_match(grads, ref, params)
    if batch_norm or options.get("head_batch_norm"):
        assert_state_matches(stats["state"], ref, state)
    else:
        assert stats["state"] == {}


# ----------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("kl", ["analytic", "mc"])
@pytest.mark.parametrize("batch_norm", [True, False], ids=["bn", "no_bn"])
@pytest.mark.parametrize("n_layers", [1, 2, 3])
@pytest.mark.parametrize("kind", ["lvae", "vae"])
def test_elbo_loss_gradients_and_running_averages(kind, n_layers, batch_norm, kl):
    seed = 100 * n_layers + 10 * batch_norm + (kl == "mc") + 1000 * (kind == "vae")
    check_elbo(kind, n_layers, batch_norm, kl, seed=seed)


@pytest.mark.parametrize("kind,n_layers,batch_norm,kl", [
    ("lvae", 3, True, "analytic"),
    ("vae", 2, False, "mc"),
])
def test_elbo_with_gaussian_likelihood(kind, n_layers, batch_norm, kl):
    check_elbo(kind, n_layers, batch_norm, kl, likelihood="gaussian", seed=7)


@pytest.mark.parametrize("kind", ["lvae", "vae"])
def test_elbo_in_evaluation_mode_uses_running_averages(kind):
    check_elbo(kind, 3, True, "analytic", training=False, seed=11)


@pytest.mark.parametrize("kind,batch_norm,beta", [
    ("lvae", True, 1.0),
    ("lvae", False, 1.0),
    ("vae", True, 1.0),
    ("vae", False, 1.0),
    ("lvae", True, 0.7),
])
def test_iwae_bound_and_gradients(kind, batch_norm, beta):
    k = 4
    model, params, state, x, noise, _ = make_problem(kind, 2, batch_norm, seed=23, k=k)
    loss, grads, stats = iwae_loss_and_grads(model, params, state, x, k=k, beta=beta,
                                             noise=noise)
    ref = TorchReference(model.config, params, state)
    t_loss = ref.iwae_loss(x, noise, k, beta)
    assert_close(loss, t_loss.item(), "IWAE loss")
    assert_close(stats["bound"], -t_loss.item(), "stats['bound']")
    assert_grads_match(grads, ref, params)
    if batch_norm:  # x-only blocks over N rows, the others over k*N rows
        assert_state_matches(stats["state"], ref, state)


# ----------------------------------------------------------------------------
# The original code's options
# ----------------------------------------------------------------------------
OPTIONS = {
    "head_bn": {"head_batch_norm": True},
    "unshared": {"shared_top_down": False},
    "only_mu_up": {"only_mu_up": True},
    "widths": {"generative_widths": "original"},
    "eps": {"bn_eps": 1e-10},
    "init": {"init": "original"},
    "all": {"head_batch_norm": True, "shared_top_down": False, "only_mu_up": True,
            "generative_widths": "original", "init": "original", "bn_eps": 1e-10},
}


@pytest.mark.parametrize("kl", ["analytic", "mc"])
@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_lvae_options_elbo_gradients_and_running_averages(option, kl):
    check_elbo("lvae", 3, True, kl, seed=31 + sorted(OPTIONS).index(option), **OPTIONS[option])


@pytest.mark.parametrize("option", ["head_bn", "eps", "all"])
def test_vae_options_elbo_gradients_and_running_averages(option):
    check_elbo("vae", 3, True, "mc", seed=41, **OPTIONS[option])


@pytest.mark.parametrize("kind", ["lvae", "vae"])
def test_batch_normalised_heads_without_batch_norm_in_the_blocks(kind):
    check_elbo(kind, 2, False, "analytic", seed=43, head_batch_norm=True)


@pytest.mark.parametrize("kind", ["lvae", "vae"])
def test_batch_normalised_heads_in_evaluation_mode(kind):
    check_elbo(kind, 3, True, "analytic", training=False, seed=47, **OPTIONS["all"])


def test_gaussian_data_keeps_its_output_head_without_batch_norm():
    check_elbo("lvae", 2, True, "mc", likelihood="gaussian", seed=53, **OPTIONS["all"])


def test_iwae_bound_with_every_option():
    k = 3
    model, params, state, x, noise, _ = make_problem("lvae", 3, True, seed=59, k=k,
                                                     **OPTIONS["all"])
    loss, grads, stats = iwae_loss_and_grads(model, params, state, x, k=k, beta=1.0,
                                             noise=noise)
    ref = TorchReference(model.config, params, state)
    t_loss = ref.iwae_loss(x, noise, k, 1.0)
    assert_close(loss, t_loss.item(), "IWAE loss")
    assert_grads_match(grads, ref, params)
    assert_state_matches(stats["state"], ref, state)
