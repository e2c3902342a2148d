"""The paper's models: a hierarchical VAE (bottom-up inference) and the Ladder VAE.

Both share the generative model (L stochastic layers, z_1 nearest the data)::

    p(z_L) = N(0, I)
    p(z_i | z_{i+1}) = N(mu_p,i, var_p,i),   (mu_p,i, var_p,i) = head_p,i(block_down,i(z_{i+1}))
    p(x | z_1) = Bernoulli(sigmoid(logits))  (or a Gaussian), from block_down,0(z_1)

and differ in the inference model q(z | x):

* VAE (bottom-up): q(z_1 | x), then q(z_i | z_{i-1}), each a Gaussian head on
  a block of the sample below.
* LVAE (top-down): a deterministic pass d_i = block_up,i(d_{i-1}), d_0 = x,
  gives (mu_hat_i, var_hat_i). Then q(z_L | x) = N(mu_hat_L, var_hat_L) and,
  for i = L-1 .. 1, the generative model's own (mu_p,i, var_p,i) from the
  sampled z_{i+1} are merged with the bottom-up estimate by precision
  weighting (gaussian.merge_forward). The top-down path *is* the generative
  model: inference corrects the prior layer by layer.

The objective per example (per importance sample when k > 1)::

    f = log p(x | z_1) - beta * sum_i KL_i

with beta the warm-up weight. KL_i is estimated in one of two ways:

* ``kl="mc"``: the single-sample estimate log q(z_i | .) - log p(z_i | z_{i+1})
  at the samples, valid for both models (as the original code did);
* ``kl="analytic"``: the closed-form KL where it is exact. For the LVAE,
  q(z_i | z_{i+1}, x) and p(z_i | z_{i+1}) condition on the same sampled
  z_{i+1}, so the closed form is the exact expectation over z_i, with less
  variance. For the VAE, q(z_i | z_{i-1}) is sampled *before* z_{i+1}, so the
  closed form "given the sampled z_{i+1}" is biased; there ``"analytic"``
  applies the closed form to the top layer only (against N(0, I)) and keeps
  the MC estimate below it. ``stats["kl_estimator"]`` says what was used.

Parameters are one flat dict of arrays; its keys name the block::

    up{i}.*    i = 1..L  the bottom-up MLP block under z_i (input x for i = 1)
    q{i}.*     i = 1..L  the Gaussian head of q(z_i | .) (LVAE: of mu_hat_i, var_hat_i)
    down{i}.*  i = 0..L-1  the top-down MLP block on z_{i+1}
    p{i}.*     i = 1..L-1  the Gaussian head of p(z_i | z_{i+1})
    p0.*       the output layer: W, b (Bernoulli logits) or a Gaussian head

The decoder mirrors the encoder, as in the original code: block down_i has
the width of up_{i+1} (z5 -> 32 -> z4 ... z1 -> 512 -> x with the defaults).
``state`` holds the batch-norm running averages under the same prefixes.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

from . import gaussian as G
from . import layers as L
from . import likelihoods as LL
from . import networks as N
from .backend import Backend, get_backend, namespace

KINDS = ("lvae", "vae")
KL_ESTIMATORS = ("analytic", "mc")
LIKELIHOODS = ("bernoulli", "gaussian")


@dataclass(frozen=True)
class ModelConfig:
    kind: str = "lvae"                       # "lvae" (top-down inference) or "vae" (bottom-up)
    x_dim: int = 784                         # data dimension (28 x 28 MNIST)
    latent: tuple = (64, 32, 16, 8, 4)       # sizes of z_1 .. z_L
    hidden: tuple = (512, 256, 128, 64, 32)  # width of the block under each z_i
    batch_norm: bool = True                  # Dense -> BN -> lrelu (else Dense -> lrelu)
    likelihood: str = "bernoulli"            # p(x | z_1): "bernoulli" or "gaussian"
    slope: float = L.LEAKY_RELU_SLOPE        # leaky ReLU slope for negative inputs

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown model {self.kind!r}: choose one of {', '.join(KINDS)}")
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {self.likelihood!r}: "
                             f"choose one of {', '.join(LIKELIHOODS)}")
        if len(self.latent) != len(self.hidden) or not self.latent:
            raise ValueError(f"latent {tuple(self.latent)} and hidden {tuple(self.hidden)} "
                             "must be non-empty and of the same length (one block per layer)")
        if min(self.latent) < 1 or min(self.hidden) < 1 or self.x_dim < 1:
            raise ValueError("all sizes must be positive")

    @property
    def n_layers(self) -> int:
        return len(self.latent)


def _sub(tree: dict, prefix: str) -> dict:
    """The entries of a flat dict under ``prefix.``, with the prefix removed.

    Plainly ``{k[len(prefix) + 1:]: v for k, v in tree.items() if
    k.startswith(prefix + ".")}``; the key selection is cached, since the same
    few dicts are cut up many times in every step.
    """
    return {short: tree[k] for k, short in _keys_under(tuple(tree), prefix)}


@lru_cache(maxsize=1024)
def _keys_under(keys: tuple, prefix: str) -> tuple:
    cut = len(prefix) + 1
    return tuple((k, k[cut:]) for k in keys if k.startswith(prefix + "."))


def _put(tree: dict, prefix: str, sub: dict) -> None:
    for k, v in sub.items():
        tree[f"{prefix}.{k}"] = v


def _add(grads: dict, prefix: str, sub: dict) -> None:
    """Accumulate a block's parameter gradients (a block used twice gets the sum)."""
    for k, v in sub.items():
        key = f"{prefix}.{k}"
        grads[key] = v if key not in grads else grads[key] + v


class XPart(NamedTuple):
    """What depends on x alone: computed once per input, shared by all its samples."""

    x: Any        # (N, x_dim)
    mu_hat: list  # LVAE: (mu_hat_i) for i = 1..L; VAE: [mu_q,1] only
    var_hat: list


class KLTermCache(NamedTuple):
    analytic: bool
    caches: tuple   # (kl cache,) or (log q cache, log p cache)


class ForwardCache(NamedTuple):
    k: int             # samples per input (the x-part was tiled k times)
    bottom_up: tuple   # (mlp cache, head cache) per bottom-up layer computed from x
    top_down: Any      # _TopDownCache


class _TopDownCache(NamedTuple):
    layers: dict       # per layer i: dict of caches
    out: tuple         # (mlp cache, head cache, likelihood cache)
    beta: float


def tile_part(part: XPart, k: int) -> XPart:
    """The x-part repeated for k samples per input, sample-major (see networks.tile_rows_forward)."""
    tile = lambda a: N.tile_rows_forward(a, k=k)[0]  # noqa: E731
    return XPart(tile(part.x), [tile(a) for a in part.mu_hat], [tile(a) for a in part.var_hat])


class Model:
    """A VAE or LVAE with hand-written forward and backward passes.

    The contract (as in the usual course solvers)::

        params, state = model.init()
        loss, grads, stats = model.loss_and_grads(params, state, x, beta)
        state = stats["state"]       # updated batch-norm running averages

    ``grads`` has the keys of ``params``. Pass ``noise`` (a list of arrays
    eps_i of shape (N, latent_i)) to make the model a deterministic function,
    as the gradient checks do; otherwise it is drawn from the backend's
    generator.
    """

    def __init__(self, config: ModelConfig = ModelConfig(), backend: Backend | None = None):
        self.config = config
        self.backend = backend if backend is not None else get_backend("numpy", dtype="float64")

    # ------------------------------------------------------------------
    def init(self):
        """Fresh parameters (Glorot-uniform weights, zero biases, BN gamma 1) and state."""
        c, be = self.config, self.backend
        rng, xp, dt = be.random.generator, be.xp, be.dtype
        params, state = {}, {}
        d_in = c.x_dim
        for i in range(1, c.n_layers + 1):  # bottom-up blocks and q heads
            p, s = N.init_mlp(rng, (d_in, c.hidden[i - 1], c.hidden[i - 1]),
                              batch_norm=c.batch_norm, xp=xp, dtype=dt)
            _put(params, f"up{i}", p)
            _put(state, f"up{i}", s)
            _put(params, f"q{i}", N.init_gaussian_head(rng, c.hidden[i - 1], c.latent[i - 1],
                                                       xp=xp, dtype=dt))
            d_in = c.hidden[i - 1] if c.kind == "lvae" else c.latent[i - 1]
        for i in range(c.n_layers - 1, -1, -1):  # top-down blocks and p heads
            p, s = N.init_mlp(rng, (c.latent[i], c.hidden[i], c.hidden[i]),
                              batch_norm=c.batch_norm, xp=xp, dtype=dt)
            _put(params, f"down{i}", p)
            _put(state, f"down{i}", s)
            if i > 0:
                head = N.init_gaussian_head(rng, c.hidden[i], c.latent[i - 1], xp=xp, dtype=dt)
            elif c.likelihood == "gaussian":
                head = N.init_gaussian_head(rng, c.hidden[0], c.x_dim, xp=xp, dtype=dt)
            else:
                head = {"W": N.glorot_uniform(rng, c.hidden[0], c.x_dim, xp, dt),
                        "b": xp.zeros((c.x_dim,), dtype=dt)}
            _put(params, f"p{i}", head)
        return params, state

    def fold_batch_norm(self, params, state):
        """The same network in evaluation mode, with batch norm folded into the dense layers.

        At test time batch norm is an affine map of each unit,
        BN(a) = gamma * (a - mean) / sqrt(var + eps) + beta = a * s + c, so
        BN(h W) = h (W s) + c: a dense layer with weights W * s (each column
        scaled) and bias c. Returns (model, params) of an identical model
        without batch norm, whose forward pass skips every normalisation;
        evaluation (``bounds.log_likelihood``) uses it.
        """
        if not self.config.batch_norm:
            return self, params
        folded = {k: v for k, v in params.items() if ".gamma" not in k and ".beta" not in k}
        for key in params:
            if ".gamma" not in key:
                continue
            block, name = key.rsplit(".", 1)             # e.g. "up1", "gamma2"
            j = name[len("gamma"):]
            xp = namespace(params[key])
            scale = params[key] / xp.sqrt(state[f"{block}.var{j}"] + L.BN_EPS)
            folded[f"{block}.W{j}"] = params[f"{block}.W{j}"] * scale
            folded[f"{block}.b{j}"] = params[f"{block}.beta{j}"] - state[f"{block}.mean{j}"] * scale
        config = dataclasses.replace(self.config, batch_norm=False)
        return Model(config, self.backend), folded

    def noise(self, n_rows: int) -> list:
        """Standard normal eps_i of shape (n_rows, latent_i), for i = 1..L."""
        return [self.backend.normal((n_rows, d)) for d in self.config.latent]

    # ------------------------------------------------------------------
    # The generative model on its own (no gradients; batch norm in evaluation mode)
    # ------------------------------------------------------------------
    def data_mean(self, params, state, z1):
        """E[x | z_1]: sigmoid(logits) for Bernoulli data, mu for Gaussian. (rows, x_dim)."""
        bn = {"training": False, "momentum": L.BN_MOMENTUM}
        h, _ = self._mlp(z1, params, state, "down0", bn)
        p = _sub(params, "p0")
        if self.config.likelihood == "bernoulli":
            return L.sigmoid(L.dense_forward(h, p["W"], p["b"])[0])
        (mu, _), _ = N.gaussian_head_forward(h, p)
        return mu

    def generate(self, params, state, n: int, noise=None):
        """Ancestral samples: z_L ~ N(0, I), then z_i ~ p(z_i | z_{i+1}) down to z_1.

        Args:
            n: number of samples.
            noise: list of eps_i (n, latent_i), i = 1..L; drawn when None. Fixing
                some of them (e.g. the top layer's) shows what each layer encodes.

        Returns:
            (E[x | z_1] of shape (n, x_dim), [z_1, ..., z_L]).
        """
        noise = self.noise(n) if noise is None else noise
        bn = {"training": False, "momentum": L.BN_MOMENTUM}
        Lz = self.config.n_layers
        zs = [None] * Lz
        zs[Lz - 1] = noise[Lz - 1]
        for i in range(Lz - 1, 0, -1):
            mu, var, _ = self._block_and_head(zs[i], params, state, f"down{i}", f"p{i}", bn)
            zs[i - 1] = G.reparameterize_forward(mu, var, noise[i - 1])[0]
        return self.data_mean(params, state, zs[0]), zs

    def reconstruct(self, params, state, x, noise=None):
        """E[x | z_1] with z_1 drawn from q(z | x) (batch norm in evaluation mode)."""
        noise = self.noise(x.shape[0]) if noise is None else noise
        _, terms, _, _ = self.forward(params, state, x, noise, training=False)
        return self.data_mean(params, state, terms["z"][0])

    # ------------------------------------------------------------------
    # Blocks
    # ------------------------------------------------------------------
    def _mlp(self, h, params, state, name, bn: dict):
        """An MLP block; ``bn`` holds batch norm's ``training`` and ``momentum``."""
        return N.mlp_forward(h, _sub(params, name), state=_sub(state, name) or None,
                             batch_norm=self.config.batch_norm, slope=self.config.slope, **bn)

    def _block_and_head(self, h, params, state, block, head, bn):
        """(mu, var) of a Gaussian head on an MLP block; caches of both."""
        g, c_mlp = self._mlp(h, params, state, block, bn)
        (mu, var), c_head = N.gaussian_head_forward(g, _sub(params, head))
        return mu, var, (c_mlp, c_head)

    @staticmethod
    def _block_and_head_backward(dmu, dvar, caches, grads, block, head):
        c_mlp, c_head = caches
        dg, dp_head = N.gaussian_head_backward((dmu, dvar), c_head)
        _add(grads, head, dp_head)
        dh, dp_mlp = N.mlp_backward(dg, c_mlp)
        _add(grads, block, dp_mlp)
        return dh

    # ------------------------------------------------------------------
    # Stage 1: the part that depends on x alone
    # ------------------------------------------------------------------
    def bottom_up(self, params, state, x, training=True, bn_momentum=L.BN_MOMENTUM):
        """LVAE: d_i and (mu_hat_i, var_hat_i) for every layer. VAE: q(z_1 | x) only.

        Returns (XPart, caches). Computed once per input, however many samples follow.
        """
        bn = {"training": training, "momentum": bn_momentum}
        layers = self.config.n_layers if self.config.kind == "lvae" else 1
        h, mus, vars_, caches = x, [], [], []
        for i in range(1, layers + 1):
            h, c_mlp = self._mlp(h, params, state, f"up{i}", bn)
            (mu, var), c_head = N.gaussian_head_forward(h, _sub(params, f"q{i}"))
            mus.append(mu)
            vars_.append(var)
            caches.append((c_mlp, c_head))
        return XPart(x, mus, vars_), tuple(caches)

    def bottom_up_backward(self, dx_part: XPart, caches, grads):
        """Add the gradients of the x-only part's parameters to ``grads``."""
        dh = None
        for i in range(len(caches), 0, -1):
            c_mlp, c_head = caches[i - 1]
            dg, dp_head = N.gaussian_head_backward((dx_part.mu_hat[i - 1], dx_part.var_hat[i - 1]),
                                                   c_head)
            _add(grads, f"q{i}", dp_head)
            if dh is not None:
                dg = dg + dh
            # The first block's input is x: its gradient is never needed.
            dh, dp_mlp = N.mlp_backward(dg, c_mlp, input_grad=i > 1)
            _add(grads, f"up{i}", dp_mlp)

    # ------------------------------------------------------------------
    # Stage 2: sampling, KL terms and the likelihood, per sample
    # ------------------------------------------------------------------
    def top_down(self, params, state, xp_: XPart, noise, *, beta, kl, training=True,
                 bn_momentum=L.BN_MOMENTUM):
        """The per-sample objective f = log p(x|z_1) - beta * sum_i KL_i, shape (rows,).

        ``xp_`` holds one row per sample (tile it for several samples per input).
        Returns (f, terms, cache); ``terms`` has "rec" (rows,), and per layer "kl"
        (rows, d_i), "mu_q", the mean of q(z_i | .) at this sample, and "z", the
        sample itself (rows, d_i).
        """
        c = self.config
        Lz = c.n_layers
        analytic = kl == "analytic"
        bn = {"training": training, "momentum": bn_momentum}
        lay, kls, z = {}, {}, {}
        if c.kind == "lvae":
            mu_q, var_q = xp_.mu_hat[Lz - 1], xp_.var_hat[Lz - 1]
            means = {Lz: mu_q}
            z[Lz], c_rep = G.reparameterize_forward(mu_q, var_q, noise[Lz - 1])
            kls[Lz], c_kl = _kl_top(z[Lz], mu_q, var_q, analytic)
            lay[Lz] = {"rep": c_rep, "kl": c_kl}
            for i in range(Lz - 1, 0, -1):
                mu_p, var_p, c_bh = self._block_and_head(z[i + 1], params, state, f"down{i}",
                                                         f"p{i}", bn)
                (mu_q, var_q), c_merge = G.merge_forward(xp_.mu_hat[i - 1], xp_.var_hat[i - 1],
                                                         mu_p, var_p)
                means[i] = mu_q
                z[i], c_rep = G.reparameterize_forward(mu_q, var_q, noise[i - 1])
                kls[i], c_kl = _kl_between(z[i], mu_q, var_q, mu_p, var_p, analytic)
                lay[i] = {"p": c_bh, "merge": c_merge, "rep": c_rep, "kl": c_kl}
        else:
            mu_q, var_q = {1: xp_.mu_hat[0]}, {1: xp_.var_hat[0]}
            means = mu_q
            z[1], c_rep = G.reparameterize_forward(mu_q[1], var_q[1], noise[0])
            lay[1] = {"rep": c_rep}
            for i in range(2, Lz + 1):
                mu_q[i], var_q[i], c_bh = self._block_and_head(z[i - 1], params, state, f"up{i}",
                                                               f"q{i}", bn)
                z[i], c_rep = G.reparameterize_forward(mu_q[i], var_q[i], noise[i - 1])
                lay[i] = {"q": c_bh, "rep": c_rep}
            kls[Lz], lay[Lz]["kl"] = _kl_top(z[Lz], mu_q[Lz], var_q[Lz], analytic)
            for i in range(Lz - 1, 0, -1):
                mu_p, var_p, c_bh = self._block_and_head(z[i + 1], params, state, f"down{i}",
                                                         f"p{i}", bn)
                # Never the closed form here: it would be biased (see the module docstring).
                kls[i], lay[i]["kl"] = _kl_between(z[i], mu_q[i], var_q[i], mu_p, var_p, False)
                lay[i]["p"] = c_bh
        rec, c_out = self._likelihood(z[1], xp_.x, params, state, bn)
        xp = namespace(rec)
        f = rec - beta * sum(xp.sum(kls[i], axis=1) for i in range(1, Lz + 1))
        terms = {"rec": rec, "kl": [kls[i] for i in range(1, Lz + 1)],
                 "mu_q": [means[i] for i in range(1, Lz + 1)],
                 "z": [z[i] for i in range(1, Lz + 1)]}
        return f, terms, _TopDownCache(lay, c_out, beta)

    def top_down_backward(self, df, cache: _TopDownCache, grads) -> XPart:
        """Add the top-down parameters' gradients to ``grads``; return the x-part's gradients."""
        c = self.config
        Lz = c.n_layers
        xp = namespace(df)
        lay = cache.layers
        g = xp.expand_dims(df, axis=1)                 # (rows, 1): d f / d rec per row
        dkl = -cache.beta * g                          # d f / d KL_i per unit, broadcast
        dz = {1: self._likelihood_backward(g, cache.out, grads)}
        dmu_hat, dvar_hat = [None] * Lz, [None] * Lz
        if c.kind == "lvae":
            for i in range(1, Lz):                     # bottom to top: z_i's gradient is complete
                ci = lay[i]
                dz_kl, dmu_q, dvar_q, dmu_p, dvar_p = _kl_backward(dkl, ci["kl"])
                dzi = dz[i] if dz_kl is None else dz[i] + dz_kl
                dmu_r, dvar_r, _ = G.reparameterize_backward(dzi, ci["rep"])
                dmh, dvh, dmp, dvp = G.merge_backward((dmu_q + dmu_r, dvar_q + dvar_r),
                                                      ci["merge"])
                dmu_hat[i - 1], dvar_hat[i - 1] = dmh, dvh
                dz[i + 1] = self._block_and_head_backward(dmp + dmu_p, dvp + dvar_p, ci["p"],
                                                          grads, f"down{i}", f"p{i}")
            dz_kl, dmu_q, dvar_q = _kl_top_backward(dkl, lay[Lz]["kl"])
            dzL = dz[Lz] if dz_kl is None else dz[Lz] + dz_kl
            dmu_r, dvar_r, _ = G.reparameterize_backward(dzL, lay[Lz]["rep"])
            dmu_hat[Lz - 1], dvar_hat[Lz - 1] = dmu_q + dmu_r, dvar_q + dvar_r
            return XPart(None, dmu_hat, dvar_hat)
        # VAE: first the generative pass (p heads, on z_{i+1}), then q from the top down.
        dmu_q, dvar_q = {}, {}
        for i in range(1, Lz):
            dz_kl, dmq, dvq, dmp, dvp = _kl_backward(dkl, lay[i]["kl"])
            dz[i] = dz[i] + dz_kl
            dmu_q[i], dvar_q[i] = dmq, dvq
            dz[i + 1] = self._block_and_head_backward(dmp, dvp, lay[i]["p"], grads,
                                                      f"down{i}", f"p{i}")
        dz_kl, dmu_q[Lz], dvar_q[Lz] = _kl_top_backward(dkl, lay[Lz]["kl"])
        if dz_kl is not None:
            dz[Lz] = dz[Lz] + dz_kl
        for i in range(Lz, 0, -1):                     # z_i = mu_q,i + std * eps, mu_q,i from z_{i-1}
            dmu_r, dvar_r, _ = G.reparameterize_backward(dz[i], lay[i]["rep"])
            dmq, dvq = dmu_q[i] + dmu_r, dvar_q[i] + dvar_r
            if i == 1:
                return XPart(None, [dmq], [dvq])
            dz[i - 1] = dz[i - 1] + self._block_and_head_backward(dmq, dvq, lay[i]["q"], grads,
                                                                  f"up{i}", f"q{i}")

    # ------------------------------------------------------------------
    # The output layer
    # ------------------------------------------------------------------
    def _likelihood(self, z1, x, params, state, bn):
        """log p(x | z_1) summed over the data dimensions: (rows,)."""
        h, c_mlp = self._mlp(z1, params, state, "down0", bn)
        p = _sub(params, "p0")
        xp = namespace(h)
        if self.config.likelihood == "bernoulli":
            out, c_head = L.dense_forward(h, p["W"], p["b"])
            ll, c_ll = LL.bernoulli_log_likelihood_forward(x, out)
        else:
            (mu, var), c_head = N.gaussian_head_forward(h, p)
            ll, c_ll = LL.gaussian_log_likelihood_forward(x, mu, var)
        return xp.sum(ll, axis=1), (c_mlp, c_head, c_ll)

    def _likelihood_backward(self, g, cache, grads):
        """g: (rows, 1) gradient of each row's log p(x | z_1). Returns dz_1."""
        c_mlp, c_head, c_ll = cache
        xp = namespace(g)
        if self.config.likelihood == "bernoulli":
            dll = xp.broadcast_to(g, c_ll.logits.shape)
            _, dout = LL.bernoulli_log_likelihood_backward(dll, c_ll)
            dh, dW, db = L.dense_backward(dout, c_head)
            _add(grads, "p0", {"W": dW, "b": db})
        else:
            dll = xp.broadcast_to(g, c_ll.inv.shape)
            _, dmu, dvar = LL.gaussian_log_likelihood_backward(dll, c_ll)
            dh, dp = N.gaussian_head_backward((dmu, dvar), c_head)
            _add(grads, "p0", dp)
        dz1, dp_mlp = N.mlp_backward(dh, c_mlp)
        _add(grads, "down0", dp_mlp)
        return dz1

    # ------------------------------------------------------------------
    # The whole model
    # ------------------------------------------------------------------
    def forward(self, params, state, x, noise, *, beta=1.0, kl="analytic", training=True, k=1,
                bn_momentum=L.BN_MOMENTUM):
        """f per sample, shape (k*N,), sample-major (row s*N + n is sample s of input n).

        Returns (f, terms, new_state, cache). ``noise`` is a list of (k*N, latent_i)
        arrays. ``bn_momentum`` is the weight of this batch in the new running averages.
        """
        if kl not in KL_ESTIMATORS:
            raise ValueError(f"unknown KL estimator {kl!r}: choose one of {', '.join(KL_ESTIMATORS)}")
        part, c_bu = self.bottom_up(params, state, x, training, bn_momentum)
        f, terms, c_td = self.top_down(params, state, tile_part(part, k), noise, beta=beta,
                                       kl=kl, training=training, bn_momentum=bn_momentum)
        new_state = dict(state) if state else {}
        for name, mlp_cache in _mlp_caches(c_bu, c_td):
            _put(new_state, name, mlp_cache.new_state)
        return f, terms, new_state, ForwardCache(k, c_bu, c_td)

    def backward(self, df, cache: ForwardCache) -> dict:
        """Gradients of sum_rows df * f with respect to every parameter (a dict like params)."""
        grads = {}
        dpart = self.top_down_backward(df, cache.top_down, grads)
        tiles = N.TileCache(cache.k)
        untile = lambda d: N.tile_rows_backward(d, tiles)[0]  # noqa: E731  sums the k copies
        self.bottom_up_backward(XPart(None, [untile(d) for d in dpart.mu_hat],
                                      [untile(d) for d in dpart.var_hat]), cache.bottom_up, grads)
        return grads

    def loss_and_grads(self, params, state, x, beta=1.0, noise=None, kl="analytic",
                       training=True):
        """The negative warm-up ELBO averaged over the batch, its gradients and statistics.

        Args:
            params, state: from ``init`` (or a checkpoint).
            x: data of shape (N, x_dim).
            beta: warm-up weight of the KL terms (1 gives the ELBO).
            noise: list of eps_i (N, latent_i); drawn from the backend when None.
            kl: "analytic" (closed form where exact) or "mc" (see the module docstring).
            training: batch statistics in batch norm (True) or running averages.

        Returns:
            loss: a 0-d array, -mean_n f_n.
            grads: dict with the keys of params.
            stats: "objective", "elbo", "rec" (0-d arrays), "kl" (list of 0-d per layer),
                "kl_units" (list of (latent_i,) means over the batch), "kl_estimator"
                (per layer), "state" (the new batch-norm running averages).
        """
        n = x.shape[0]
        if noise is None:
            noise = self.noise(n)
        f, terms, new_state, cache = self.forward(params, state, x, noise, beta=beta, kl=kl,
                                                  training=training)
        xp = namespace(f)
        loss = -xp.mean(f)
        grads = self.backward(xp.full(f.shape, -1.0 / n, dtype=f.dtype), cache)
        return loss, grads, self.summarize(terms, f, kl, new_state)

    def summarize(self, terms, f, kl, new_state) -> dict:
        """Batch means of the objective's terms, for logging."""
        xp = namespace(f)
        kl_units = [xp.mean(t, axis=0) for t in terms["kl"]]
        kl_layers = [xp.sum(u) for u in kl_units]
        rec = xp.mean(terms["rec"])
        return {"objective": xp.mean(f), "rec": rec, "elbo": rec - sum(kl_layers),
                "kl": kl_layers, "kl_units": kl_units,
                "kl_estimator": self.kl_estimators(kl), "state": new_state}

    def kl_estimators(self, kl: str) -> list:
        """The estimator used for each layer z_1 .. z_L under ``kl``."""
        Lz = self.config.n_layers
        if kl == "mc" or self.config.kind == "lvae":
            return [kl] * Lz
        return ["mc"] * (Lz - 1) + ["analytic"]  # VAE: the closed form only where exact


# ----------------------------------------------------------------------------
# KL estimates (elementwise, (rows, d)) as forward/backward pairs
# ----------------------------------------------------------------------------
def _kl_between(z, mu_q, var_q, mu_p, var_p, analytic):
    """KL(q || p) per unit: closed form, or log q(z) - log p(z) at the sample z."""
    if analytic:
        kl, c = G.kl_normal_forward(mu_q, var_q, mu_p, var_p)
        return kl, KLTermCache(True, (c,))
    lq, cq = G.log_normal_forward(z, mu_q, var_q)
    lp, cp = G.log_normal_forward(z, mu_p, var_p)
    return lq - lp, KLTermCache(False, (cq, cp))


def _kl_backward(dkl, cache: KLTermCache):
    """Returns (dz or None, dmu_q, dvar_q, dmu_p, dvar_p)."""
    if cache.analytic:
        dmu_q, dvar_q, dmu_p, dvar_p = G.kl_normal_backward(_full(dkl, cache.caches[0].diff),
                                                            cache.caches[0])
        return None, dmu_q, dvar_q, dmu_p, dvar_p
    cq, cp = cache.caches
    g = _full(dkl, cq.inv)
    dz_q, dmu_q, dvar_q = G.log_normal_backward(g, cq)
    dz_p, dmu_p, dvar_p = G.log_normal_backward(-g, cp)
    return dz_q + dz_p, dmu_q, dvar_q, dmu_p, dvar_p


def _kl_top(z, mu_q, var_q, analytic):
    """KL(q(z_L) || N(0, I)) per unit."""
    if analytic:
        kl, c = G.kl_standard_normal_forward(mu_q, var_q)
        return kl, KLTermCache(True, (c,))
    xp = namespace(z)
    return _kl_between(z, mu_q, var_q, xp.zeros_like(z), xp.ones_like(z), False)


def _kl_top_backward(dkl, cache: KLTermCache):
    """Returns (dz or None, dmu_q, dvar_q)."""
    if cache.analytic:
        dmu, dvar = G.kl_standard_normal_backward(_full(dkl, cache.caches[0].mu), cache.caches[0])
        return None, dmu, dvar
    dz, dmu_q, dvar_q, _, _ = _kl_backward(dkl, cache)
    return dz, dmu_q, dvar_q


def _full(g, like):
    """Broadcast a (rows, 1) gradient to the shape of ``like``."""
    return namespace(g).broadcast_to(g, like.shape)


def _mlp_caches(bottom_up, top_down: _TopDownCache):
    """(state prefix, MLPCache) for every MLP block run in a forward pass."""
    found = [(f"up{i}", c[0]) for i, c in enumerate(bottom_up, start=1)]
    for i, layer in top_down.layers.items():
        if "q" in layer:  # VAE: q(z_i | z_{i-1})
            found.append((f"up{i}", layer["q"][0]))
        if "p" in layer:
            found.append((f"down{i}", layer["p"][0]))
    found.append(("down0", top_down.out[0]))
    return found
