"""Each model's per-sample pass as a plain loop over its steps: the LVAE's top-down, the VAE's.

``models.Model`` runs these after the x-part (``bottom_up_forward``). Both
functions take ``block_of(name) -> (parameters, batch-norm state)`` of a
block or head (e.g. ``"down1"``, ``"p1"``; the state None where it has none),
the x-part tiled to one row per sample, and the noise eps_i (R, D_i), z_1's
first. They return ``(Outputs, cache)``; their backward returns ``(parameter
gradients, XPartGrad)``; ``new_states(cache)`` lists the batch-norm running
averages the pass computed, block by block (with ``mode["momentum"]`` None, as
``Model.forward`` runs it in training mode, each block's batch statistics).

The LVAE's top-down inference shares the generative model's blocks
``down{i}``, ``p{i}`` unless the parameters hold blocks of its own,
``tdown{i}`` and ``tp{i}`` (i = 1..L-1; ``ModelConfig.shared_top_down=False``):
then the ladder step merges with those and the generative blocks give only
p(z_i | z_{i+1}) for the KL (``steps.unshared_ladder_step_forward``).

Layers are numbered as in the paper, i = 1..L. Inside the loops per-layer
values are dicts keyed by i (``z[i]`` is z_i); at the interfaces (the noise,
the x-part, the outputs) they are lists in the same order, z_1 first. The
equation each line computes is written beside it.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from . import blocks, gaussian, steps
from .backend import Array, namespace
from .params import merge, with_prefix


# ----------------------------------------------------------------------------
# What flows between the stages
# ----------------------------------------------------------------------------
class XPart(NamedTuple):
    """What depends on x alone: computed once per input, shared by all its samples.

    Lists are per layer, z_1 first. The LVAE has every layer; the VAE only
    layer 1 (q(z_1 | x)).
    """

    x: Array        # (N, x_dim)
    d: list         # d_i (N, H_i), the deterministic features
    mu_hat: list    # mu_hat_i (N, D_i); for the VAE, mu_q,1
    var_hat: list   # var_hat_i (N, D_i); for the VAE, var_q,1


class XPartGrad(NamedTuple):
    """The gradients that reach the x-part from the per-sample pass (lists as in XPart)."""

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


def tile_part(part: XPart, k: int) -> XPart:
    """The x-part repeated for k samples per input, sample-major (see blocks.tile_rows_forward)."""
    def tile(a):
        return blocks.tile_rows_forward(a, k=k)[0]
    return XPart(tile(part.x), [tile(a) for a in part.d], [tile(a) for a in part.mu_hat],
                 [tile(a) for a in part.var_hat])


def by_layer(values) -> dict:
    """A list per layer (z_1 first) as a dict keyed by the layer number i = 1..L."""
    return dict(enumerate(values, start=1))


# ----------------------------------------------------------------------------
# Stage 2 of the LVAE: the top-down pass
# ----------------------------------------------------------------------------
class LadderPassCache(NamedTuple):
    top: steps.TopStepCache        # layer L
    ladder: dict                   # i -> LadderStepCache (UnsharedLadderStepCache), i = 1..L-1
    output: steps.OutputStepCache  # log p(x | z_1)
    beta: float


def ladder_pass_forward(block_of, part: XPart, noise, *, beta, estimator, likelihood, mode):
    """The LVAE's per-sample pass, from z_L down to x: the paper's top-down inference.

    ::

        z_L ~ q(z_L | x) = N(mu_hat_L, var_hat_L),   KL_L against N(0, I)
        for i = L-1 .. 1:  (z_i, KL_i) = ladder step(z_{i+1}, mu_hat_i, var_hat_i, eps_i)
        f = log p(x | z_1) - beta * sum_i KL_i

    Args:
        block_of: ``block_of(name) -> (parameters, batch-norm state or None)``
            of a block such as ``"down1"``.
        part: the x-part (``XPart``), one row per sample: (R, ...).
        noise: eps_i of shape (R, D_i), z_1's first.
        beta: the KL terms' weight.
        estimator: "analytic" or "mc" (both exact in expectation here).
        likelihood: "bernoulli" or "gaussian".
        mode: the blocks' settings (``Model.mode``).

    Returns:
        outputs: Outputs (``state`` None: the model gathers it).
        cache: LadderPassCache.
    """
    mu_hat, var_hat, eps = by_layer(part.mu_hat), by_layer(part.var_hat), by_layer(noise)
    top = len(eps)
    z, kl, mu_q, ladder = {}, {}, {}, {}
    # z_L ~ q(z_L | x) = N(mu_hat_L, var_hat_L);  KL_L = KL(q(z_L | x) || N(0, I))
    (z[top], kl[top]), top_cache = steps.top_step_forward(mu_hat[top], var_hat[top], eps[top],
                                                          estimator=estimator)
    mu_q[top] = mu_hat[top]
    for i in range(top - 1, 0, -1):
        # p(z_i | z_{i+1}) merged with (mu_hat_i, var_hat_i): z_i ~ q(z_i | z_{i+1}, x), KL_i
        (block, state), (head, head_state) = block_of(f"down{i}"), block_of(f"p{i}")
        (td_block, td_state), (td_head, td_head_state) = block_of(f"tdown{i}"), block_of(f"tp{i}")
        if td_block:  # the top-down path's own blocks merge; p only enters the KL
            (z[i], kl[i]), ladder[i] = steps.unshared_ladder_step_forward(
                z[i + 1], mu_hat[i], var_hat[i], eps[i], td_block, td_head, block, head,
                td_state=td_state, td_head_state=td_head_state, state=state,
                head_state=head_state, mode=mode, estimator=estimator)
        else:
            (z[i], kl[i]), ladder[i] = steps.ladder_step_forward(
                z[i + 1], mu_hat[i], var_hat[i], eps[i], block, head, state=state,
                head_state=head_state, mode=mode, estimator=estimator)  # (R, D_i) each
        mu_q[i] = ladder[i].mu_q
    (block, state), (head, _) = block_of("down0"), block_of("p0")
    rec, out_cache = steps.output_step_forward(z[1], part.x, block, head, state=state, mode=mode,
                                               likelihood=likelihood)   # log p(x | z_1), (R,)
    return _objective(rec, kl, mu_q, z, beta), LadderPassCache(top_cache, ladder, out_cache, beta)


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
        keys) and XPartGrad, those of (mu_hat_i, var_hat_i), (R, D_i) each.
    """
    xp = namespace(df)
    dkl = -cache.beta * xp.expand_dims(df, axis=1)                  # (R, 1): d f / d KL_i
    dz = {}
    dz[1], _, dblock, dhead = steps.output_step_backward(df, cache.output)
    grads = [with_prefix("p0", dhead), with_prefix("down0", dblock)]
    dmu_hat, dvar_hat = {}, {}
    for i in range(1, len(cache.ladder) + 1):                       # z_i's gradient is complete
        douts = (dz[i], xp.broadcast_to(dkl, dz[i].shape))
        if isinstance(cache.ladder[i], steps.UnsharedLadderStepCache):
            (dz[i + 1], dmu_hat[i], dvar_hat[i], _, dtd_block, dtd_head, dblock,
             dhead) = steps.unshared_ladder_step_backward(douts, cache.ladder[i])
            grads += [with_prefix(f"tp{i}", dtd_head), with_prefix(f"tdown{i}", dtd_block)]
        else:
            dz[i + 1], dmu_hat[i], dvar_hat[i], _, dblock, dhead = steps.ladder_step_backward(
                douts, cache.ladder[i])
        grads += [with_prefix(f"p{i}", dhead), with_prefix(f"down{i}", dblock)]
    top = len(cache.ladder) + 1
    dmu_hat[top], dvar_hat[top], _ = steps.top_step_backward(
        (dz[top], xp.broadcast_to(dkl, dz[top].shape)), cache.top)
    return merge(grads), XPartGrad([dmu_hat[i] for i in range(1, top + 1)],
                                   [dvar_hat[i] for i in range(1, top + 1)])


# ----------------------------------------------------------------------------
# Stage 2 of the VAE: sampling upwards, then the KL terms from the top
# ----------------------------------------------------------------------------
class VAEPassCache(NamedTuple):
    first: Any                     # ReparamCache of z_1 ~ q(z_1 | x)
    up: dict                       # i -> VAEStepCache, i = 2..L
    kl_top: steps.KLTermCache      # KL_L against N(0, I)
    kl: dict                       # i -> VAEKLStepCache, i = 1..L-1
    output: steps.OutputStepCache  # log p(x | z_1)
    beta: float


def vae_pass_forward(block_of, part: XPart, noise, *, beta, estimator, likelihood, mode):
    """The VAE's per-sample pass: z_1 .. z_L upwards, then KL_L .. KL_1 and log p(x | z_1).

    ::

        z_1 ~ q(z_1 | x),  z_i ~ q(z_i | z_{i-1}) for i = 2 .. L      (VAE steps)
        KL_L = KL(q(z_L | z_{L-1}) || N(0, I))                        (closed form or MC)
        KL_i = log q(z_i | z_{i-1}) - log p(z_i | z_{i+1}), i < L     (always MC)
        f = log p(x | z_1) - beta * sum_i KL_i

    Args and Returns as ``ladder_pass_forward``; ``part`` holds q(z_1 | x)
    only, and the cache is a VAEPassCache.
    """
    eps = by_layer(noise)
    top = len(eps)
    z, mu_q, var_q, kl, up, kl_caches = {}, {}, {}, {}, {}, {}
    # z_1 ~ q(z_1 | x), whose (mu, var) come from the x-part
    mu_q[1], var_q[1] = part.mu_hat[0], part.var_hat[0]
    z[1], first = gaussian.reparameterize_forward(mu_q[1], var_q[1], eps[1])
    for i in range(2, top + 1):
        # z_i ~ q(z_i | z_{i-1})
        (block, state), (head, head_state) = block_of(f"up{i}"), block_of(f"q{i}")
        (z[i], mu_q[i], var_q[i]), up[i] = steps.vae_step_forward(
            z[i - 1], eps[i], block, head, state=state, head_state=head_state,
            mode=mode)                                                  # (R, D_i) each
    # KL_L = KL(q(z_L | z_{L-1}) || N(0, I))
    kl[top], kl_top = steps.kl_term_forward(z[top], mu_q[top], var_q[top], estimator=estimator)
    for i in range(top - 1, 0, -1):
        # KL_i = log q(z_i | z_{i-1}) - log p(z_i | z_{i+1}), at the samples
        (block, state), (head, head_state) = block_of(f"down{i}"), block_of(f"p{i}")
        kl[i], kl_caches[i] = steps.vae_kl_step_forward(z[i], mu_q[i], var_q[i], z[i + 1],
                                                        block, head, state=state,
                                                        head_state=head_state, mode=mode)
    (block, state), (head, _) = block_of("down0"), block_of("p0")
    rec, out_cache = steps.output_step_forward(z[1], part.x, block, head, state=state, mode=mode,
                                               likelihood=likelihood)   # log p(x | z_1), (R,)
    cache = VAEPassCache(first, up, kl_top, kl_caches, out_cache, beta)
    return _objective(rec, kl, mu_q, z, beta), cache


def vae_pass_backward(df, cache: VAEPassCache):
    """Gradients of sum_rows df * f: (parameter gradients, XPartGrad).

    First the generative side (the KL terms, from z_1 up), then q from z_L
    down, since q(z_i | z_{i-1}) feeds every layer above it.
    """
    xp = namespace(df)
    dkl = -cache.beta * xp.expand_dims(df, axis=1)                  # (R, 1): d f / d KL_i
    dz, dmu_q, dvar_q = {}, {}, {}
    dz[1], _, dblock, dhead = steps.output_step_backward(df, cache.output)
    grads = [with_prefix("p0", dhead), with_prefix("down0", dblock)]
    top = len(cache.up) + 1
    for i in range(1, top):
        dz_kl, dmu_q[i], dvar_q[i], dz[i + 1], dblock, dhead = steps.vae_kl_step_backward(
            xp.broadcast_to(dkl, dz[i].shape), cache.kl[i])
        dz[i] = dz[i] + dz_kl
        grads += [with_prefix(f"p{i}", dhead), with_prefix(f"down{i}", dblock)]
    dz_kl, dmu_q[top], dvar_q[top], _, _ = steps.kl_term_backward(
        xp.broadcast_to(dkl, dz[top].shape), cache.kl_top)
    if dz_kl is not None:
        dz[top] = dz[top] + dz_kl
    for i in range(top, 1, -1):
        dz_below, _, dblock, dhead = steps.vae_step_backward((dz[i], dmu_q[i], dvar_q[i]),
                                                             cache.up[i])
        dz[i - 1] = dz[i - 1] + dz_below
        grads += [with_prefix(f"q{i}", dhead), with_prefix(f"up{i}", dblock)]
    dmu_r, dvar_r, _ = gaussian.reparameterize_backward(dz[1], cache.first)
    return merge(grads), XPartGrad([dmu_q[1] + dmu_r], [dvar_q[1] + dvar_r])


def _objective(rec, kl: dict, mu_q: dict, z: dict, beta) -> Outputs:
    """f = log p(x | z_1) - beta * sum_i KL_i per row, and the per-layer terms as lists."""
    xp = namespace(rec)
    layers_ = range(1, len(kl) + 1)
    f = rec - beta * sum(xp.sum(kl[i], axis=1) for i in layers_)
    return Outputs(f, rec, [kl[i] for i in layers_], [mu_q[i] for i in layers_],
                   [z[i] for i in layers_], None)


def new_states(cache) -> list:
    """(prefix, new running averages) of every block and head a per-sample pass ran.

    With momentum None in the pass's mode these are the blocks' batch
    statistics, which ``Model.forward`` averages in itself.

    Args:
        cache: a LadderPassCache or VAEPassCache.

    Returns:
        a list of (name, dict), e.g. ``("down1", {"mean1": ..., ...})``; a
        head's dict is empty unless it has batch norm.
    """
    found = []

    def block(name, c: blocks.GaussianBlockCache, head_name):
        found.extend([(name, c.mlp.new_state), (head_name, c.head.new_state)])

    if isinstance(cache, VAEPassCache):
        for i, c in cache.up.items():
            block(f"up{i}", c.posterior, f"q{i}")
        for i, c in cache.kl.items():
            block(f"down{i}", c.prior, f"p{i}")
    else:
        for i, c in cache.ladder.items():
            if isinstance(c, steps.UnsharedLadderStepCache):
                block(f"tdown{i}", c.inference, f"tp{i}")
            block(f"down{i}", c.prior, f"p{i}")
    found.append(("down0", cache.output.mlp.new_state))
    return found


PASSES = {"lvae": (ladder_pass_forward, ladder_pass_backward),
          "vae": (vae_pass_forward, vae_pass_backward)}
