"""The released code's variants, each beside the paper's form it replaces.

The authors' released code (casperkaae/LVAE, ``run_models.py``) differs from
the paper in a few choices. ``models.ModelConfig`` offers each as an option
(its defaults are the paper's form), and ``models.Model`` picks, once, when
it is built, the paper's step from ``steps.py`` or the variant here that
replaces it; the passes run what they are given and never ask which:

* ``shared_top_down=False`` (LVAE): the top-down inference path has its own
  blocks ``tdown{i}``, ``tp{i}``, whose Gaussian is merged with
  (mu_hat_i, var_hat_i); ``down{i}``, ``p{i}`` then give p(z_i | z_{i+1})
  for the KL term only. ``unshared_ladder_step_forward`` / ``_backward``
  replace ``steps.ladder_step_forward`` / ``_backward``, and
  ``UnsharedLadderLayer`` replaces ``steps.LadderLayer`` in the pass. The
  backward holds the answer to an assignment (the ladder step's chain rule),
  so a student copy of the package has it as a stub.
* ``only_mu_up`` (LVAE): block up_{i+1} of the bottom-up pass reads
  mu_hat_i, not d_i. ``MuUpInput`` replaces ``steps.UpInput``.

The other options are not steps: ``head_batch_norm`` is how a head is
parameterised (a head whose parameters hold ``gamma_mu``, see
``blocks.gaussian_head_forward``), ``generative_widths`` and ``init`` are the
parameters' shapes and first values (``architecture.py``), and ``bn_eps`` is
a setting (``blocks.BlockSettings``).

Each function follows the op contract of the one it replaces (see
``steps.py`` for the shapes and the names of the arguments).
"""
from __future__ import annotations

from typing import Any, NamedTuple

from . import blocks, gaussian, steps
from .blocks import BlockSettings, with_prefix


# ----------------------------------------------------------------------------
# The ladder step with its own top-down blocks (shared_top_down=False)
# ----------------------------------------------------------------------------
class UnsharedLadderStepCache(NamedTuple):
    inference: blocks.GaussianBlockCache  # (mu_td,i, var_td,i) from z_{i+1}: tdown{i}, tp{i}
    merge: gaussian.MergeCache            # (mu_q,i, var_q,i)
    sample: gaussian.ReparamCache         # z_i
    kl: steps.VAEKLStepCache              # (mu_p,i, var_p,i) from z_{i+1}: down{i}, p{i}; KL_i
    mu_q: Any                             # (R, D_i) the posterior mean, for inspection
    var_q: Any                            # (R, D_i)


def unshared_ladder_step_forward(z_above, mu_hat, var_hat, eps, td_block, td_head, block, head,
                                 *, td_state=None, td_head_state=None, state=None,
                                 head_state=None, settings: BlockSettings, estimator: str):
    """Replaces ``steps.ladder_step_forward``: a top-down step whose inference has its own blocks.

    The released code's default (``ladder_share_params=False``)::

        (mu_td,i, var_td,i) = tp_i(tdown_i(z_{i+1}))               top-down inference
        var_q,i = 1 / (1/var_hat_i + 1/var_td,i)                   precision-weighted
        mu_q,i  = (mu_hat_i/var_hat_i + mu_td,i/var_td,i) * var_q,i  merge
        z_i = mu_q,i + sqrt(var_q,i) * eps_i
        (mu_p,i, var_p,i)   = p_i(down_i(z_{i+1}))                 p(z_i | z_{i+1})
        KL_i = KL(q(z_i | z_{i+1}, x) || p(z_i | z_{i+1}))

    The paper's ladder step is the case tdown_i = down_i, tp_i = p_i. Here
    p(z_i | z_{i+1}) enters the KL term only, as in the VAE, so the last two
    lines are the VAE's KL step (``steps.vae_kl_step_forward``) with the
    estimator asked for: q and p of z_i condition on the same z_{i+1}, so the
    closed form stays exact.

    Args:
        z_above: the sample z_{i+1}, shape (R, D_{i+1}).
        mu_hat, var_hat: the bottom-up estimate for layer i, shape (R, D_i).
        eps: standard normal noise, shape (R, D_i).
        td_block, td_head: the parameters of ``tdown{i}`` and ``tp{i}``.
        block, head: the parameters of ``down{i}`` and ``p{i}``.
        td_state, td_head_state, state, head_state: their running averages (or None).
        settings: the blocks' settings.
        estimator: "analytic" or "mc".

    Returns:
        out: (z_i, KL_i), each of shape (R, D_i).
        cache: UnsharedLadderStepCache.
    """
    (mu_td, var_td), c_inf = blocks.gaussian_block_forward(
        z_above, td_block, td_head, state=td_state, head_state=td_head_state, settings=settings)
    (mu_q, var_q), c_merge = gaussian.merge_forward(mu_hat, var_hat, mu_td, var_td)
    z, c_sample = gaussian.reparameterize_forward(mu_q, var_q, eps)
    kl, c_kl = steps.vae_kl_step_forward(z, mu_q, var_q, z_above, block, head, state=state,
                                         head_state=head_state, settings=settings,
                                         estimator=estimator)
    return (z, kl), UnsharedLadderStepCache(c_inf, c_merge, c_sample, c_kl, mu_q, var_q)


def unshared_ladder_step_backward(dout, cache: UnsharedLadderStepCache):
    """Replaces ``steps.ladder_step_backward``: gradients of the unshared ladder step.

    Its chain rule is the paper's ladder step's (``steps.ladder_step_backward``,
    which a course assigns) with the two blocks apart, so in a student copy
    of the package it is a stub too: write it once that one passes (its
    gradient checks: ``python -m lvae_np.gradcheck unshared-ladder-step``).

    Args:
        dout: (G_z, G_kl), the gradients of z_i and KL_i, each (R, D_i).
        cache: UnsharedLadderStepCache.

    Returns:
        (dz_above, dmu_hat, dvar_hat, deps, dtd_block, dtd_head, dblock, dhead):
        z_{i+1} feeds both blocks, so dz_above is the sum of their input gradients.

    ### BEGIN SOLUTION
    In reverse: the VAE's KL step (``steps.vae_kl_step_backward``: the KL
    term, then p's block), the sample, the merge and the top-down block.
    ### END SOLUTION
    """
    dz, dkl = dout
    ### BEGIN SOLUTION
    dz_kl, dmu_q, dvar_q, dz_p, dblock, dhead = steps.vae_kl_step_backward(dkl, cache.kl)
    dmu_r, dvar_r, deps = gaussian.reparameterize_backward(steps.add_if_present(dz, dz_kl),
                                                           cache.sample)
    dmu_hat, dvar_hat, dmu_td, dvar_td = gaussian.merge_backward(
        (dmu_q + dmu_r, dvar_q + dvar_r), cache.merge)
    dz_td, dtd_block, dtd_head = blocks.gaussian_block_backward((dmu_td, dvar_td),
                                                                cache.inference)
    return dz_td + dz_p, dmu_hat, dvar_hat, deps, dtd_block, dtd_head, dblock, dhead
    ### END SOLUTION


class UnsharedLadderLayer:
    """Replaces ``steps.LadderLayer``: the unshared ladder step of layer i in the LVAE's pass.

    It merges with ``tdown{i}``, ``tp{i}`` and takes p(z_i | z_{i+1}) for the
    KL term from ``down{i}``, ``p{i}``; the methods are those of
    ``steps.LadderLayer``.
    """

    def forward(self, params_of, i, z_above, mu_hat, var_hat, eps, *, settings, estimator):
        """``unshared_ladder_step_forward`` on the blocks of layer i."""
        (td_block, td_state), (td_head, td_head_state) = params_of(f"tdown{i}"), params_of(f"tp{i}")
        (block, state), (head, head_state) = params_of(f"down{i}"), params_of(f"p{i}")
        return unshared_ladder_step_forward(
            z_above, mu_hat, var_hat, eps, td_block, td_head, block, head, td_state=td_state,
            td_head_state=td_head_state, state=state, head_state=head_state, settings=settings,
            estimator=estimator)

    def backward(self, dout, cache, i):
        """(dz_above, dmu_hat, dvar_hat, the gradients of tp{i}, tdown{i}, p{i}, down{i})."""
        (dz_above, dmu_hat, dvar_hat, _, dtd_block, dtd_head, dblock,
         dhead) = unshared_ladder_step_backward(dout, cache)
        return dz_above, dmu_hat, dvar_hat, [
            with_prefix(f"tp{i}", dtd_head), with_prefix(f"tdown{i}", dtd_block),
            with_prefix(f"p{i}", dhead), with_prefix(f"down{i}", dblock)]

    def new_states(self, cache, i) -> list:
        """The running averages its four blocks computed: [(name, dict), ...]."""
        return (steps.block_states(f"tdown{i}", f"tp{i}", cache.inference)
                + steps.block_states(f"down{i}", f"p{i}", cache.kl.prior))


# ----------------------------------------------------------------------------
# The bottom-up pass on the means (only_mu_up)
# ----------------------------------------------------------------------------
class MuUpInput:
    """Replaces ``steps.UpInput``: block up_{i+1} reads mu_hat_i, as the released code's LVAE.

    d_i then feeds its own head alone, and the gradient that reaches block
    up_{i+1}'s input joins mu_hat_i's.
    """

    def forward(self, d, mu_hat):
        return mu_hat                              # d_{i+1} = MLP_{i+1}(mu_hat_i)

    def backward(self, dout):
        return None, dout
