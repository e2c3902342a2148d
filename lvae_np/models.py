"""The paper's two models, the hierarchical VAE and the Ladder VAE, as plain loops over their steps.

Both share the generative model (L stochastic layers, z_1 nearest the data)::

    p(z_L) = N(0, I)
    p(z_i | z_{i+1}) = N(mu_p,i, var_p,i),   (mu_p,i, var_p,i) = head_p,i(block_down,i(z_{i+1}))
    p(x | z_1) = Bernoulli(sigmoid(logits))  (or a Gaussian), from block_down,0(z_1)

and differ in the inference model q(z | x) (their passes: ``steps.py``):

* VAE (bottom-up): q(z_1 | x), then q(z_i | z_{i-1}), each a Gaussian head on
  a block of the sample below (``steps.vae_step_forward``).
* LVAE (top-down): a deterministic pass d_i = block_up,i(d_{i-1}), d_0 = x,
  gives (mu_hat_i, var_hat_i). Then q(z_L | x) = N(mu_hat_L, var_hat_L) and,
  for i = L-1 .. 1, the generative model's own (mu_p,i, var_p,i) from the
  sampled z_{i+1} are merged with the bottom-up estimate by precision
  weighting (``steps.ladder_step_forward``). The top-down path *is* the
  generative model: inference corrects the prior layer by layer.

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

A forward pass runs in two stages: ``bottom_up_forward``, the bottom-up values
that depend on x alone (computed once per input, however many samples follow),
and ``per_sample_forward``, the sampling, KL terms and likelihood for every
row. ``forward`` runs both, tiling the first stage's output for k samples.

Layers are numbered as in the paper, i = 1..L. Inside the model's loops
per-layer values are dicts keyed by i (``z[i]`` is z_i); at the interfaces
(the noise, the outputs) they are lists in the same order, z_1 first.

Parameters are one flat dict of arrays whose keys name the block: ``up{i}``,
``q{i}`` (inference), ``down{i}``, ``p{i}`` (generative; ``p0`` the output
layer); ``state`` holds the batch-norm running averages under the same
prefixes. ``architecture.py`` lists the names and the widths.

The original code's choices, as options of ``ModelConfig`` (the defaults
are the paper's form); where one replaces a step, ``Model`` picks the step
once, when it is built (``variants.py``):

* ``head_batch_norm``: every q and p Gaussian head (not the output layer)
  is Dense -> BatchNorm -> (identity for mu, softplus for var), its dense
  layers without bias; the heads' running averages are state too
  (``q1.mean_mu``, ``q1.var_mu``, ``q1.mean_var``, ``q1.var_var``).
* ``shared_top_down=False`` (LVAE): the top-down inference path has its own
  blocks and heads ``tdown{i}``, ``tp{i}``, whose Gaussian is merged with
  (mu_hat_i, var_hat_i); ``down{i}``, ``p{i}`` then give p(z_i | z_{i+1})
  only, for the KL and for generation.
* ``only_mu_up`` (LVAE): the bottom-up block up_{i+1} reads mu_hat_i, not d_i.
* ``generative_widths="original"`` (LVAE): block down_i (and tdown_i) has
  width H_i instead of H_{i+1}, one size wider.
* ``init="original"``: Glorot-normal weights with the ReLU gain sqrt(2) in
  the MLP blocks (gain 1 in the heads and the output layer), variance-head
  bias (or beta) 1.
* ``bn_eps``: batch norm's epsilon (1e-4, Lasagne's; the original code used 1e-10).

The LVAE-only options leave the VAE as it is.

The forms of the ops: by default a model runs the plain, textbook forms of
``layers`` and ``blocks``. ``Model(config, backend, fast=True)`` runs their
fused and in-place twins instead (``fast.py``): the same numbers to rounding,
faster. Training builds its model so (``lvae_np.training.trainer``).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, NamedTuple

from . import architecture, blocks, fast as fast_forms, gaussian, layers, steps, variants
from .backend import Backend, get_backend, namespace
from .blocks import INITS, BlockSettings, block_names, merge, subtree, with_prefix
from .steps import (KL_ESTIMATORS, BottomUp, BottomUpGrad, Outputs, by_layer, new_states,
                    tile_part)

KINDS = ("lvae", "vae")
GENERATIVE_WIDTHS = ("mirror", "original")
LIKELIHOODS = ("bernoulli", "gaussian")
PAPER_LATENT = (64, 32, 16, 8, 4)       # the paper's MNIST model: sizes of z_1 .. z_5
PAPER_HIDDEN = (512, 256, 128, 64, 32)  # width of the deterministic block under each z_i

__all__ = ["KINDS", "GENERATIVE_WIDTHS", "INITS", "KL_ESTIMATORS", "LIKELIHOODS",
           "PAPER_LATENT", "PAPER_HIDDEN",
           "ModelConfig", "Model", "BottomUp", "BottomUpGrad", "Outputs", "tile_part"]


@dataclass(frozen=True)
class ModelConfig:
    kind: str = "lvae"                       # "lvae" (top-down inference) or "vae" (bottom-up)
    x_dim: int = 784                         # data dimension (28 x 28 MNIST)
    latent: tuple = PAPER_LATENT             # sizes of z_1 .. z_L
    hidden: tuple = PAPER_HIDDEN             # width of the block under each z_i
    batch_norm: bool = True                  # Dense -> BN -> lrelu (else Dense -> lrelu)
    likelihood: str = "bernoulli"            # p(x | z_1): "bernoulli" or "gaussian"
    slope: float = layers.LEAKY_RELU_SLOPE   # leaky ReLU slope for negative inputs
    # The original code's choices (see the module docstring); the defaults are the paper's form.
    head_batch_norm: bool = False            # q and p heads: Dense -> BN -> (identity | softplus)
    shared_top_down: bool = True             # LVAE: top-down inference on the generative blocks
    only_mu_up: bool = False                 # LVAE: block up_{i+1} reads mu_hat_i, not d_i
    generative_widths: str = "mirror"        # LVAE: "original" widens p(z_i | z_{i+1}) blocks
    init: str = "glorot-uniform"             # "original": Glorot-normal, ReLU gain, var bias 1
    bn_eps: float = layers.BN_EPS            # batch norm's epsilon (the original code: 1e-10)

    def __post_init__(self):
        for name in ("batch_norm", "head_batch_norm", "shared_top_down", "only_mu_up"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, not {getattr(self, name)!r}")
        if self.generative_widths not in GENERATIVE_WIDTHS:
            raise ValueError(f"unknown generative_widths {self.generative_widths!r}: "
                             f"choose one of {', '.join(GENERATIVE_WIDTHS)}")
        if self.init not in INITS:
            raise ValueError(f"unknown init {self.init!r}: choose one of {', '.join(INITS)}")
        if (isinstance(self.bn_eps, bool) or not isinstance(self.bn_eps, (int, float))
                or not 0 < self.bn_eps < math.inf):
            raise ValueError(f"bn_eps must be a positive number, not {self.bn_eps!r}")
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

    @classmethod
    def paper(cls, layers: int = 5, **changes) -> "ModelConfig":
        """The paper's MNIST model with its first ``layers`` stochastic layers (1 to 5).

        ``ModelConfig.paper(3, kind="vae")``: latent 64,32,16, hidden 512,256,128.
        """
        if not 1 <= layers <= len(PAPER_LATENT):
            raise ValueError(f"the paper's models have 1 to {len(PAPER_LATENT)} layers, "
                             f"not {layers}")
        return cls(latent=PAPER_LATENT[:layers], hidden=PAPER_HIDDEN[:layers], **changes)

    @property
    def n_layers(self) -> int:
        return len(self.latent)


# ----------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------
class BottomUpCache(NamedTuple):
    steps: tuple                   # one BottomUpStepCache per layer computed from x


class ForwardCache(NamedTuple):
    k: int                         # samples per input (the bottom-up values were tiled k times)
    bottom_up: BottomUpCache
    per_sample: Any                # LadderPassCache or VAEPassCache


class Model:
    """A VAE or LVAE with hand-written forward and backward passes.

    The contract (as in the usual course solvers)::

        params, state = model.init()
        loss, grads, stats = model.loss_and_grads(params, state, x, beta)
        state = stats["state"]       # updated batch-norm running averages

    ``grads`` has the keys of ``params``. Pass ``noise`` (a list of arrays
    eps_i of shape (N, latent_i), z_1's first) to make the model a
    deterministic function, as the gradient checks do; otherwise it is drawn
    from the backend's generator. One level down, the whole model follows the
    op contract::

        outputs, cache = model.forward(params, state, x, noise)
        grads = model.backward(dout, cache)   # dout: the gradient of outputs.f

    ``fast=True`` runs the fast forms of the ops (``fast.FAST``: the leaky
    ReLU's and batch norm's forward passes, the Gaussian head as one product,
    all running averages updated at once) in place of the plain ones
    (``blocks.PLAIN``, the default); the numbers agree to rounding.
    """

    def __init__(self, config: ModelConfig = ModelConfig(), backend: Backend | None = None, *,
                 fast: bool = False):
        self.config = config
        self.backend = backend if backend is not None else get_backend("numpy", dtype="float64")
        # The steps the passes run, picked once: the paper's (steps.py) or a variant (variants.py).
        self.ladder_layer = (steps.LadderLayer() if config.shared_top_down
                             else variants.UnsharedLadderLayer())
        self.up_input = variants.MuUpInput() if config.only_mu_up else steps.UpInput()
        # The forms of the ops the blocks run, picked once: plain (blocks.py) or fast (fast.py).
        self.fast = fast
        self.forms = fast_forms.FAST if fast else blocks.PLAIN

    # ------------------------------------------------------------------
    def init(self):
        """Fresh parameters and state (``architecture.init_params``): Glorot-uniform
        weights, zero biases, BN gamma 1 (or the original code's initialisation)."""
        be = self.backend
        return architecture.init_params(self.config, be.random.generator, xp=be.xp,
                                        dtype=be.dtype)

    def noise(self, n_rows: int) -> list:
        """Standard normal eps_i of shape (n_rows, latent_i), for i = 1..L."""
        return [self.backend.normal((n_rows, d)) for d in self.config.latent]

    def settings(self, training: bool = True,
                 momentum: float | None = layers.BN_MOMENTUM) -> BlockSettings:
        """The blocks' settings: batch norm on or off, batch or running statistics, slope, eps,
        and the forms of the ops."""
        return BlockSettings(batch_norm=self.config.batch_norm, training=training,
                             momentum=momentum, slope=self.config.slope, eps=self.config.bn_eps,
                             forms=self.forms)

    def fold_batch_norm(self, params, state):
        """The same network in evaluation mode, with batch norm folded into the dense layers.

        Returns (model, params) of a model without batch norm that computes
        what this one computes with its running averages (up to rounding),
        skipping every normalisation (``fast.fold_batch_norm`` block by
        block, ``fast.fold_head_batch_norm`` head by head), with this
        model's forms. The L_k estimate (``bounds.log_likelihood``) uses it.
        """
        c = self.config
        if not (c.batch_norm or c.head_batch_norm):
            return self, params
        folded = {}
        for name in block_names(params):
            block = subtree(params, name)
            if "gamma1" in block:
                block = fast_forms.fold_batch_norm(block, subtree(state, name), eps=c.bn_eps)
            elif "gamma_mu" in block:
                block = fast_forms.fold_head_batch_norm(block, subtree(state, name),
                                                        eps=c.bn_eps)
            folded.update(with_prefix(name, block))
        plain = dataclasses.replace(c, batch_norm=False, head_batch_norm=False)
        return Model(plain, self.backend, fast=self.fast), folded

    # ------------------------------------------------------------------
    # Stage 1: the part that depends on x alone
    # ------------------------------------------------------------------
    def bottom_up_forward(self, params, state, x, *, training=True,
                          bn_momentum=layers.BN_MOMENTUM):
        """LVAE: d_i and (mu_hat_i, var_hat_i) for i = 1..L. VAE: q(z_1 | x) only.

        Args:
            params, state: the model's parameters and batch-norm state.
            x: data of shape (N, x_dim).
            training: batch statistics (True) or running averages in batch norm.
            bn_momentum: weight of this batch in the new running averages
                (None, with the fast forms only: the caches hold each block's
                batch statistics instead).

        Returns:
            part: BottomUp, lists per layer.
            cache: BottomUpCache.
        """
        settings = self.settings(training, bn_momentum)
        n_layers = self.config.n_layers if self.config.kind == "lvae" else 1
        below, ds, mus, var_hats, caches = x, [], [], [], []
        for i in range(1, n_layers + 1):
            # d_i = MLP_i(below), below = x for i = 1;  (mu_hat_i, var_hat_i) = head_i(d_i)
            (d, mu_hat, var_hat), c = steps.bottom_up_step_forward(
                below, subtree(params, f"up{i}"), subtree(params, f"q{i}"),
                state=subtree(state, f"up{i}") or None,
                head_state=subtree(state, f"q{i}") or None, settings=settings,
                input_grad=i > 1)
            below = self.up_input.forward(d, mu_hat)    # what block up_{i+1} reads: d_i
            ds.append(d)
            mus.append(mu_hat)
            var_hats.append(var_hat)
            caches.append(c)
        return BottomUp(x, ds, mus, var_hats), BottomUpCache(tuple(caches))

    def bottom_up_backward(self, dpart: BottomUpGrad, cache: BottomUpCache) -> dict:
        """The bottom-up values' parameter gradients; the data x gets none.

        The gradient of block up_{i+1}'s input joins d_i's (or, with
        ``only_mu_up``, mu_hat_i's, whose d_i then feeds its head alone).
        """
        grads, dd, dmu_above = [], None, None
        for i in range(len(cache.steps), 0, -1):
            dmu_hat = steps.add_if_present(dpart.mu_hat[i - 1], dmu_above)
            dbelow, dblock, dhead = steps.bottom_up_step_backward(
                (dd, dmu_hat, dpart.var_hat[i - 1]), cache.steps[i - 1])
            grads += [with_prefix(f"q{i}", dhead), with_prefix(f"up{i}", dblock)]
            dd, dmu_above = self.up_input.backward(dbelow)  # to d_{i-1} (or mu_hat_{i-1})
        return merge(grads)

    # ------------------------------------------------------------------
    # Stage 2: sampling, KL terms and the likelihood, per sample
    # ------------------------------------------------------------------
    def per_sample_forward(self, params, state, part: BottomUp, noise, *, beta, kl,
                           training=True, bn_momentum=layers.BN_MOMENTUM):
        """The per-sample objective f = log p(x | z_1) - beta * sum_i KL_i.

        ``part`` holds one row per sample (``tile_part`` it for several samples
        per input). Returns (Outputs, cache); ``outputs.state`` is None here
        (``forward`` gathers the new running averages).
        """
        if kl not in KL_ESTIMATORS:
            raise ValueError(f"unknown KL estimator {kl!r}: choose one of {', '.join(KL_ESTIMATORS)}")

        def params_of(name):
            return subtree(params, name), subtree(state, name) or None

        settings = self.settings(training, bn_momentum)
        if self.config.kind == "lvae":
            return steps.ladder_pass_forward(params_of, part, noise, layer=self.ladder_layer,
                                             beta=beta, estimator=kl,
                                             likelihood=self.config.likelihood,
                                             settings=settings)
        return steps.vae_pass_forward(params_of, part, noise, beta=beta, estimator=kl,
                                      likelihood=self.config.likelihood, settings=settings)

    def per_sample_backward(self, df, cache):
        """Gradients of sum_rows df * f: (parameter gradients, BottomUpGrad)."""
        if self.config.kind == "lvae":
            return steps.ladder_pass_backward(df, cache)
        return steps.vae_pass_backward(df, cache)

    # ------------------------------------------------------------------
    # The whole model
    # ------------------------------------------------------------------
    def forward(self, params, state, x, noise, *, beta=1.0, kl="analytic", training=True, k=1,
                bn_momentum=layers.BN_MOMENTUM):
        """The objective f for k samples of each input, and what the pass computed on the way.

        Args:
            params, state: the model's parameters and batch-norm state.
            x: data of shape (N, x_dim).
            noise: list of eps_i of shape (k*N, latent_i), sample-major (row
                s*N + n is sample s of input n).
            beta: warm-up weight of the KL terms.
            kl: "analytic" or "mc" (see the module docstring).
            training: batch statistics (True) or running averages in batch norm.
            k: samples per input; the bottom-up values are computed once and tiled k times.
            bn_momentum: weight of this batch in the new running averages.

        Returns:
            outputs: Outputs, rows sample-major; ``outputs.state`` is the new
                batch-norm state.
            cache: ForwardCache.
        """
        # Each batch norm updates its own running averages (layers.batchnorm_forward)
        # and returns them in its cache. The fast forms return the batch's statistics
        # instead (momentum None), and update every running average at once, after the pass.
        average_all = self.forms.running_averages        # None with the plain forms
        momentum = bn_momentum if average_all is None else None
        part, c_up = self.bottom_up_forward(params, state, x, training=training,
                                            bn_momentum=momentum)
        outputs, c_sample = self.per_sample_forward(params, state, tile_part(part, k), noise,
                                                    beta=beta, kl=kl, training=training,
                                                    bn_momentum=momentum)
        new_state = dict(state) if state else {}
        if training:
            found = _new_states(c_up, c_sample)
            new_state.update(found if average_all is None
                             else average_all(new_state, found, bn_momentum))
        return outputs._replace(state=new_state), ForwardCache(k, c_up, c_sample)

    def backward(self, dout, cache: ForwardCache) -> dict:
        """Gradients of sum_rows dout * f with respect to every parameter (a dict like params).

        Args:
            dout: array of shape (k*N,), the gradient of ``outputs.f``.
            cache: from ``forward``.
        """
        grads, dpart = self.per_sample_backward(dout, cache.per_sample)
        tiles = blocks.TileCache(cache.k)

        def untile(d):  # sums the k copies
            return blocks.tile_rows_backward(d, tiles)[0]
        dpart = BottomUpGrad([untile(d) for d in dpart.mu_hat],
                             [untile(d) for d in dpart.var_hat])
        return merge([grads, self.bottom_up_backward(dpart, cache.bottom_up)])

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
        outputs, cache = self.forward(params, state, x, noise, beta=beta, kl=kl,
                                      training=training)
        xp = namespace(outputs.f)
        stats = self.batch_means(outputs, kl)
        loss = -stats["objective"]  # the batch mean of f, computed once
        grads = self.backward(xp.full(outputs.f.shape, -1.0 / n, dtype=outputs.f.dtype), cache)
        return loss, grads, stats

    def batch_means(self, outputs: Outputs, kl: str) -> dict:
        """Batch means of the objective's terms, for logging (see ``loss_and_grads``)."""
        xp = namespace(outputs.f)
        kl_units = [xp.mean(t, axis=0) for t in outputs.kl]
        kl_layers = [xp.sum(u) for u in kl_units]
        rec = xp.mean(outputs.rec)
        return {"objective": xp.mean(outputs.f), "rec": rec, "elbo": rec - sum(kl_layers),
                "kl": kl_layers, "kl_units": kl_units,
                "kl_estimator": self.kl_estimators(kl), "state": outputs.state}

    def kl_estimators(self, kl: str) -> list:
        """The estimator used for each layer z_1 .. z_L under ``kl``."""
        n_layers = self.config.n_layers
        if kl == "mc" or self.config.kind == "lvae":
            return [kl] * n_layers
        return ["mc"] * (n_layers - 1) + ["analytic"]  # VAE: the closed form only where exact

    # ------------------------------------------------------------------
    # The generative model on its own (no gradients; batch norm in evaluation mode)
    # ------------------------------------------------------------------
    def data_mean(self, params, state, z1):
        """E[x | z_1]: sigmoid(logits) for Bernoulli data, mu for Gaussian. (rows, x_dim)."""
        h, _ = blocks.mlp_forward(z1, subtree(params, "down0"),
                                  state=subtree(state, "down0") or None,
                                  settings=self.settings(training=False))
        head = subtree(params, "p0")  # the output layer, never batch-normalised
        if self.config.likelihood == "bernoulli":
            return layers.sigmoid(layers.dense_forward(h, head["W"], head["b"])[0])
        (mu, _), _ = self.forms.gaussian_head_forward(h, head,
                                                      settings=self.settings(training=False))
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
        eps = by_layer(self.noise(n) if noise is None else noise)
        top = len(eps)
        z = {top: eps[top]}                                              # z_L ~ N(0, I)
        for i in range(top - 1, 0, -1):
            (mu_p, var_p), _ = blocks.gaussian_block_forward(
                z[i + 1], subtree(params, f"down{i}"), subtree(params, f"p{i}"),
                state=subtree(state, f"down{i}") or None,
                head_state=subtree(state, f"p{i}") or None,
                settings=self.settings(training=False))
            z[i], _ = gaussian.reparameterize_forward(mu_p, var_p, eps[i])  # z_i ~ p
        return self.data_mean(params, state, z[1]), [z[i] for i in range(1, top + 1)]

    def reconstruct(self, params, state, x, noise=None):
        """E[x | z_1] with z_1 drawn from q(z | x) (batch norm in evaluation mode)."""
        noise = self.noise(x.shape[0]) if noise is None else noise
        outputs, _ = self.forward(params, state, x, noise, training=False)
        return self.data_mean(params, state, outputs.z[0])


def _new_states(bottom_up: BottomUpCache, per_sample) -> dict:
    """What every block and head of a forward pass returned as its new running averages.

    Each batch norm's ``cache.new_state``: its updated running averages (with
    the fast forms, its batch's statistics), under full keys (``"up1.mean1"``).
    """
    found = {}
    for i, c in enumerate(bottom_up.steps, start=1):
        found.update(with_prefix(f"up{i}", c.mlp.new_state))
        found.update(with_prefix(f"q{i}", c.head.new_state))
    for name, averages in new_states(per_sample):
        found.update(with_prefix(name, averages))
    return found
