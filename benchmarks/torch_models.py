"""The paper's VAE and Ladder VAE as ordinary PyTorch eager modules: the benchmark's baseline.

The same architecture and equations as lvae_np (and as the torch oracle in
``tests/test_torch_oracle_models.py``), written the way one would write them
in PyTorch, with ``nn.Linear``, ``nn.BatchNorm1d`` and autograd:

* an MLP block is 2x (Linear -> BatchNorm1d(eps=1e-4, momentum=0.1) ->
  LeakyReLU(0.01)); the Linear has no bias with batch norm (its beta plays
  that part), a bias and no batch norm otherwise;
* a Gaussian head is mu = Linear(h), var = softplus(Linear(h)), floored at
  1e-8 as lvae_np does (``var`` is always a variance);
* the LVAE merges the bottom-up estimate (mu_hat, var_hat) with the
  top-down prior (mu_p, var_p) by precision weighting (paper eqs. 18-19);
* the decoder mirrors the encoder (block ``down{i}`` has the width of
  ``up{i+1}``) and ends in Bernoulli logits (or a Gaussian head);
* f = log p(x | z_1) - beta * sum_i KL_i per example; KL analytic for the
  LVAE, for the VAE analytic at the top (against N(0, I)) and the
  single-sample estimate log q - log p below it (``kl="analytic"``), or the
  single-sample estimate everywhere (``kl="mc"``, used for importance weights).

Submodules carry lvae_np's parameter prefixes (``up1``, ``q1``, ``down0``,
``p1``, ``p0``...), so ``load_lvae_np`` can copy an lvae_np parameter dict
(and batch-norm state) in, and ``lvae_np_grads`` can give the gradients back
under lvae_np's keys. One difference that does not touch the loss: torch's
BatchNorm1d keeps the *unbiased* batch variance in its running average,
lvae_np (like Lasagne) the biased one.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

SLOPE = 0.01        # leaky ReLU slope (Lasagne's leaky_rectify)
BN_EPS = 1e-4       # Lasagne's BatchNormLayer epsilon
BN_MOMENTUM = 0.1   # weight of the new batch in the running averages
VAR_FLOOR = 1e-8    # lower bound on every variance, as in lvae_np.gaussian
LOG_2PI = math.log(2.0 * math.pi)


# ----------------------------------------------------------------------------
# Densities and KL divergences of diagonal Gaussians (per unit)
# ----------------------------------------------------------------------------
def log_normal(z, mu, var):
    """log N(z; mu, var)."""
    return -0.5 * (LOG_2PI + torch.log(var) + (z - mu) ** 2 / var)


def log_standard_normal(z):
    """log N(z; 0, 1)."""
    return -0.5 * (LOG_2PI + z * z)


def kl_normal(mu_q, var_q, mu_p, var_p):
    """KL(N(mu_q, var_q) || N(mu_p, var_p))."""
    return 0.5 * (torch.log(var_p) - torch.log(var_q) + (var_q + (mu_q - mu_p) ** 2) / var_p - 1.0)


def kl_standard_normal(mu, var):
    """KL(N(mu, var) || N(0, 1))."""
    return 0.5 * (var + mu * mu - 1.0 - torch.log(var))


def sample(mu, var, eps=None):
    """z = mu + sqrt(var) * eps, eps ~ N(0, I) unless given."""
    if eps is None:
        eps = torch.randn_like(mu)
    return mu + torch.sqrt(var) * eps


# ----------------------------------------------------------------------------
# Blocks
# ----------------------------------------------------------------------------
class MLPBlock(nn.Module):
    """Two layers of Linear -> BatchNorm1d -> LeakyReLU (Linear with bias -> LeakyReLU without BN)."""

    def __init__(self, d_in: int, d_hidden: int, batch_norm: bool = True):
        super().__init__()
        self.linears = nn.ModuleList([nn.Linear(d_in, d_hidden, bias=not batch_norm),
                                      nn.Linear(d_hidden, d_hidden, bias=not batch_norm)])
        self.norms = (nn.ModuleList([nn.BatchNorm1d(d_hidden, eps=BN_EPS, momentum=BN_MOMENTUM)
                                     for _ in range(2)]) if batch_norm else None)

    def forward(self, h):
        for j, linear in enumerate(self.linears):
            h = linear(h)
            if self.norms is not None:
                h = self.norms[j](h)
            h = F.leaky_relu(h, SLOPE)
        return h


class GaussianHead(nn.Module):
    """A diagonal Gaussian from features: mu = Linear(h), var = softplus(Linear(h)) (a variance)."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.mu = nn.Linear(d_in, d_out)
        self.var = nn.Linear(d_in, d_out)

    def forward(self, h):
        return self.mu(h), F.softplus(self.var(h)).clamp_min(VAR_FLOOR)


# ----------------------------------------------------------------------------
# The models
# ----------------------------------------------------------------------------
class HierarchicalVAE(nn.Module):
    """The VAE (``kind="vae"``, bottom-up inference) or the Ladder VAE (``kind="lvae"``).

    Module names follow lvae_np's parameter prefixes: ``up{i}``/``q{i}`` the
    bottom-up block and head of z_i (i = 1..L), ``down{i}`` the top-down block
    on z_{i+1} (i = 0..L-1), ``p{i}`` the head of p(z_i | z_{i+1}) (i = 1..L-1)
    and ``p0`` the output layer.
    """

    def __init__(self, kind: str = "lvae", x_dim: int = 784, latent=(64, 32, 16, 8, 4),
                 hidden=(512, 256, 128, 64, 32), batch_norm: bool = True,
                 likelihood: str = "bernoulli"):
        super().__init__()
        if kind not in ("lvae", "vae"):
            raise ValueError(f"unknown model {kind!r}")
        self.kind, self.likelihood, self.n_layers = kind, likelihood, len(latent)
        self.blocks, self.heads = nn.ModuleDict(), nn.ModuleDict()
        d_in = x_dim
        for i in range(1, self.n_layers + 1):
            self.blocks[f"up{i}"] = MLPBlock(d_in, hidden[i - 1], batch_norm)
            self.heads[f"q{i}"] = GaussianHead(hidden[i - 1], latent[i - 1])
            d_in = hidden[i - 1] if kind == "lvae" else latent[i - 1]
        for i in range(self.n_layers - 1, -1, -1):
            self.blocks[f"down{i}"] = MLPBlock(latent[i], hidden[i], batch_norm)
            if i > 0:
                self.heads[f"p{i}"] = GaussianHead(hidden[i], latent[i - 1])
        self.p0 = (nn.Linear(hidden[0], x_dim) if likelihood == "bernoulli"
                   else GaussianHead(hidden[0], x_dim))

    # -- the part that depends on x alone -----------------------------------
    def bottom_up(self, x):
        """LVAE: (mu_hat_i, var_hat_i) for i = 1..L. VAE: q(z_1 | x) only."""
        n_up = self.n_layers if self.kind == "lvae" else 1
        h, mus, var_hats = x, [], []
        for i in range(1, n_up + 1):
            h = self.blocks[f"up{i}"](h)
            mu, var = self.heads[f"q{i}"](h)
            mus.append(mu)
            var_hats.append(var)
        return mus, var_hats

    # -- sampling, KL terms and the likelihood ------------------------------
    def top_down(self, x, mus, var_hats, *, beta=1.0, kl="analytic", noise=None):
        """f = log p(x | z_1) - beta * sum_i KL_i, one value per row.

        ``mus``/``var_hats`` come from ``bottom_up`` (one row per row of x; they
        may be broadcast views). ``noise``: list of eps_i (rows, latent_i),
        i = 1..L, drawn when None.
        """
        Lz, analytic = self.n_layers, kl == "analytic"
        eps = noise if noise is not None else [None] * Lz
        kl_sum = 0.0
        if self.kind == "lvae":
            mu_q, var_q = mus[Lz - 1], var_hats[Lz - 1]
            z = sample(mu_q, var_q, eps[Lz - 1])
            top = (kl_standard_normal(mu_q, var_q) if analytic
                   else log_normal(z, mu_q, var_q) - log_standard_normal(z))
            kl_sum = top.sum(dim=1)
            for i in range(Lz - 1, 0, -1):
                mu_p, var_p = self.heads[f"p{i}"](self.blocks[f"down{i}"](z))
                mu_hat, var_hat = mus[i - 1], var_hats[i - 1]
                var_q = 1.0 / (1.0 / var_hat + 1.0 / var_p)          # paper eq. (19)
                mu_q = (mu_hat / var_hat + mu_p / var_p) * var_q     # paper eq. (18)
                z = sample(mu_q, var_q, eps[i - 1])
                layer = (kl_normal(mu_q, var_q, mu_p, var_p) if analytic
                         else log_normal(z, mu_q, var_q) - log_normal(z, mu_p, var_p))
                kl_sum = kl_sum + layer.sum(dim=1)
            z1 = z
        else:
            z, mu_q, var_q = {}, {1: mus[0]}, {1: var_hats[0]}
            z[1] = sample(mu_q[1], var_q[1], eps[0])
            for i in range(2, Lz + 1):
                mu_q[i], var_q[i] = self.heads[f"q{i}"](self.blocks[f"up{i}"](z[i - 1]))
                z[i] = sample(mu_q[i], var_q[i], eps[i - 1])
            top = (kl_standard_normal(mu_q[Lz], var_q[Lz]) if analytic
                   else log_normal(z[Lz], mu_q[Lz], var_q[Lz]) - log_standard_normal(z[Lz]))
            kl_sum = top.sum(dim=1)
            for i in range(Lz - 1, 0, -1):
                mu_p, var_p = self.heads[f"p{i}"](self.blocks[f"down{i}"](z[i + 1]))
                # The single-sample estimate below the top: the closed form would be biased.
                layer = log_normal(z[i], mu_q[i], var_q[i]) - log_normal(z[i], mu_p, var_p)
                kl_sum = kl_sum + layer.sum(dim=1)
            z1 = z[1]
        return self.log_likelihood(z1, x) - beta * kl_sum

    def log_likelihood(self, z1, x):
        """log p(x | z_1), summed over the data dimensions."""
        h = self.blocks["down0"](z1)
        if self.likelihood == "bernoulli":
            logits = self.p0(h)
            return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(dim=1)
        mu, var = self.p0(h)
        return log_normal(x, mu, var).sum(dim=1)

    # -- objectives ----------------------------------------------------------
    def loss(self, x, beta=1.0, kl="analytic", noise=None):
        """The negative warm-up ELBO averaged over the batch."""
        mus, var_hats = self.bottom_up(x)
        return -self.top_down(x, mus, var_hats, beta=beta, kl=kl, noise=noise).mean()

    @torch.no_grad()
    def log_weights(self, x1, k: int, chunk: int = 5000, noise=None):
        """log w_s = log p(x, z_s) - log q(z_s | x) for k samples of ONE input x1 (1, x_dim).

        The x-only part runs once; the samples go through the top-down pass
        ``chunk`` at a time, with the x-only results broadcast (not copied).
        Call in evaluation mode (``model.eval()``) for batch norm's running averages.
        """
        mus, var_hats = self.bottom_up(x1)
        out, done = [], 0
        while done < k:
            s = min(chunk, k - done)
            eps = None if noise is None else [e[done:done + s] for e in noise]
            out.append(self.top_down(x1.expand(s, -1), [m.expand(s, -1) for m in mus],
                                     [v.expand(s, -1) for v in var_hats], beta=1.0, kl="mc",
                                     noise=eps))
            done += s
        return torch.cat(out)

    def log_likelihood_estimate(self, x1, k: int = 5000, chunk: int = 5000):
        """The importance-weighted bound L_k of log p(x1) for one input (a 0-d tensor)."""
        return torch.logsumexp(self.log_weights(x1, k, chunk), dim=0) - math.log(k)


# ----------------------------------------------------------------------------
# Exchanging parameters with lvae_np
# ----------------------------------------------------------------------------
def lvae_np_parameters(model: HierarchicalVAE) -> dict:
    """lvae_np parameter key -> (torch parameter, transposed); weights are transposed (torch stores W^T)."""
    found = {}
    for name, block in model.blocks.items():
        for j, linear in enumerate(block.linears, start=1):
            found[f"{name}.W{j}"] = (linear.weight, True)
            if linear.bias is not None:
                found[f"{name}.b{j}"] = (linear.bias, False)
            if block.norms is not None:
                found[f"{name}.gamma{j}"] = (block.norms[j - 1].weight, False)
                found[f"{name}.beta{j}"] = (block.norms[j - 1].bias, False)
    heads = dict(model.heads.items())
    if isinstance(model.p0, GaussianHead):
        heads["p0"] = model.p0
    else:
        found["p0.W"], found["p0.b"] = (model.p0.weight, True), (model.p0.bias, False)
    for name, head in heads.items():
        found[f"{name}.W_mu"], found[f"{name}.b_mu"] = (head.mu.weight, True), (head.mu.bias, False)
        found[f"{name}.W_var"] = (head.var.weight, True)
        found[f"{name}.b_var"] = (head.var.bias, False)
    return found


def lvae_np_state(model: HierarchicalVAE) -> dict:
    """lvae_np state key -> batch norm's running-average buffer."""
    found = {}
    for name, block in model.blocks.items():
        for j, bn in enumerate(block.norms or (), start=1):
            found[f"{name}.mean{j}"], found[f"{name}.var{j}"] = bn.running_mean, bn.running_var
    return found


@torch.no_grad()
def load_lvae_np(model: HierarchicalVAE, params: dict, state: dict | None = None) -> None:
    """Copy lvae_np's parameters (and batch-norm state, if given) into ``model``; NumPy arrays in."""
    targets = lvae_np_parameters(model)
    buffers = lvae_np_state(model) if state is not None else {}
    for want, given, what in ((targets, params, "parameter"), (buffers, state or {}, "state")):
        if set(want) != set(given):
            raise KeyError(f"{what} keys differ: missing {sorted(set(want) - set(given))}, "
                           f"extra {sorted(set(given) - set(want))}")
    for key, value in params.items():
        tensor, transposed = targets[key]
        src = torch.as_tensor(value, dtype=tensor.dtype)
        tensor.copy_(src.T if transposed else src)
    for key, value in (state or {}).items():
        buffers[key].copy_(torch.as_tensor(value, dtype=buffers[key].dtype))


def lvae_np_grads(model: HierarchicalVAE) -> dict:
    """The gradients after ``loss.backward()``, under lvae_np's keys and shapes (NumPy)."""
    out = {}
    for key, (tensor, transposed) in lvae_np_parameters(model).items():
        g = tensor.grad if tensor.grad is not None else torch.zeros_like(tensor)
        out[key] = (g.T if transposed else g).detach().cpu().numpy()
    return out
