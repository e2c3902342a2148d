"""Objectives and estimates of log p(x): warm-up, the importance-weighted bound, log-mean-exp.

With k samples z^(s) ~ q(z | x) and log-weights
log w_s = log p(x, z^(s)) - log q(z^(s) | x), the importance-weighted bound
(Burda, Grosse and Salakhutdinov, 2016) is::

    L_k(x) = log (1/k) sum_s w_s   <=   log p(x)

L_1 is the ELBO, L_k does not decrease with k, and L_k -> log p(x) as k grows.
The paper reports L_5000 on the test set as its log-likelihood estimate.

The model's ``forward`` with ``kl="mc"`` and beta = 1 gives exactly these
log-weights, one row per sample (sample-major: row s*N + n is sample s of
input n). Its x-only part (the LVAE's whole bottom-up pass) runs once per
input, however many samples follow.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from .backend import is_cupy, namespace
from .steps import tile_part


# Rows (samples x inputs) pushed through the top-down pass at once when
# estimating L_k. Small chunks are faster on a CPU: a chunk's activations
# (1000 x 512 floats, 2 MB) stay in the caches between the many elementwise
# passes over them. For the paper's 5-layer model on 2 cores, L_5000 of one
# image takes about 30% less time in chunks of 1000 rows than in chunks of
# 5000 (benchmarks/bench_step.py --iw-max-rows). On a GPU larger chunks pay:
# each chunk launches some forty kernels, so CuPy arrays get GPU_MAX_ROWS.
MAX_ROWS = 1000
GPU_MAX_ROWS = 32768


def default_max_rows(x) -> int:
    """Rows per chunk of L_k for arrays like ``x``: MAX_ROWS, or GPU_MAX_ROWS for CuPy."""
    return GPU_MAX_ROWS if is_cupy(x) else MAX_ROWS


def warmup_beta(epoch: int, warmup_epochs: int) -> float:
    """Deterministic warm-up: beta rises linearly from 0 to 1 over ``warmup_epochs`` epochs.

    Epochs count from 0, so the first epoch trains with beta = 0 and epoch
    ``warmup_epochs`` onwards with beta = 1. ``warmup_epochs=0`` means no warm-up.
    The same ramp in optimizer steps (``--warmup-steps``): pass the step
    (counted from 0) and the warm-up's length in steps.
    """
    if warmup_epochs <= 0:
        return 1.0
    return min(1.0, epoch / warmup_epochs)


# ----------------------------------------------------------------------------
# log-mean-exp over the samples, as a forward/backward pair
# ----------------------------------------------------------------------------
class LogMeanExpCache(NamedTuple):
    weights: Any  # (k, N) normalised importance weights, softmax over the k samples


def logmeanexp_forward(a):
    """out_n = log (1/k) sum_s exp(a_sn), without overflow or underflow for any a.

    A column whose entries are all -inf gives -inf.

    Args:
        a: array of shape (k, N), log-weights of k samples for each of N inputs.

    Returns:
        out: array of shape (N,).
        cache: LogMeanExpCache with what backward needs.

    ### BEGIN SOLUTION
    Computed stably as m + log mean exp(a - m), m the largest entry of each
    column; the cache holds the normalised weights w_sn = exp(a_sn - out_n) / k.
    ### END SOLUTION
    """
    xp = namespace(a)
    k = a.shape[0]
    ### BEGIN SOLUTION
    m = xp.max(a, axis=0)
    m = xp.where(xp.isfinite(m), m, xp.zeros_like(m))  # a column of -inf stays -inf
    e = xp.exp(a - m)
    total = xp.sum(e, axis=0)
    return m + xp.log(total / k), LogMeanExpCache(e / total)
    ### END SOLUTION


def logmeanexp_backward(dout, cache: LogMeanExpCache):
    """Gradient of log-mean-exp.

    Args:
        dout: G = dL/dout, array of shape (N,).
        cache: LogMeanExpCache from ``logmeanexp_forward``.

    Returns:
        (da,): dL/da, array of shape (k, N).

    ### BEGIN SOLUTION
    dL/da_sn = G_n * w_sn: each sample's gradient weighted by its normalised weight.
    ### END SOLUTION
    """
    ### BEGIN SOLUTION
    return (cache.weights * dout,)
    ### END SOLUTION


# ----------------------------------------------------------------------------
# The importance-weighted objective, for training
# ----------------------------------------------------------------------------
def iwae_loss_and_grads(model, params, state, x, k: int, beta: float = 1.0, noise=None,
                        training: bool = True):
    """Negative importance-weighted bound -mean_n L_k(x_n), its gradients and statistics.

    Args:
        model: a models.Model.
        params, state: the model's parameters and batch-norm state.
        x: data of shape (N, x_dim).
        k: samples per input (k = 1 gives the ELBO with the MC KL estimate).
        beta: warm-up weight on log p(z) - log q(z) inside each log-weight
            (1 gives the bound).
        noise: list of eps_i of shape (k*N, latent_i), sample-major; drawn when None.
        training: batch statistics (True) or running averages in batch norm.

    Returns:
        (loss, grads, stats) as ``Model.loss_and_grads``; stats["bound"] is mean_n L_k.
    """
    n = x.shape[0]
    if noise is None:
        noise = model.noise(k * n)
    outputs, cache = model.forward(params, state, x, noise, beta=beta, kl="mc",
                                   training=training, k=k)
    f = outputs.f
    xp = namespace(f)
    bound, c_lme = logmeanexp_forward(xp.reshape(f, (k, n)))
    loss = -xp.mean(bound)
    (dlw,) = logmeanexp_backward(xp.full((n,), -1.0 / n, dtype=f.dtype), c_lme)
    grads = model.backward(xp.reshape(dlw, (k * n,)), cache)
    stats = model.batch_means(outputs, "mc")
    stats["bound"] = xp.mean(bound)
    return loss, grads, stats


# ----------------------------------------------------------------------------
# Evaluation: L_k per input, in chunks
# ----------------------------------------------------------------------------
def log_weights(model, params, state, x, k: int, *, max_rows: int | None = None):
    """log w for k samples of each input: an array of shape (k, N) in float64.

    Batch norm runs in evaluation mode, folded into the dense layers (see
    ``Model.fold_batch_norm``). The x-only part runs once for all of
    x; the samples go through the top-down pass in chunks of
    max(max_rows, N) rows at most (samples times inputs), which bounds memory
    for k = 5000. The noise is drawn chunk by chunk from the model's
    generator, so the estimates repeat exactly for the same seed, ``max_rows``
    and batch size (other chunkings draw other, equally valid, samples).
    ``max_rows=None`` takes ``default_max_rows(x)``.
    """
    n = x.shape[0]
    max_rows = default_max_rows(x) if max_rows is None else max_rows
    model, params = model.fold_batch_norm(params, state)  # evaluation mode: BN is affine
    part, _ = model.bottom_up_forward(params, state, x, training=False)
    per_chunk = max(1, max_rows // max(n, 1))
    chunks, done = [], 0
    while done < k:
        s = min(per_chunk, k - done)
        tiled = tile_part(part, s)
        outputs, _ = model.per_sample_forward(params, state, tiled, model.noise(s * n), beta=1.0,
                                              kl="mc", training=False)
        f = outputs.f
        xp = namespace(f)
        chunks.append(xp.astype(xp.reshape(f, (s, n)), xp.float64))
        done += s
    return namespace(chunks[0]).concat(chunks, axis=0)


def log_likelihood(model, params, state, x, k: int = 5000, *, batch_size: int = 100,
                   max_rows: int | None = None, progress=None):
    """The importance-weighted estimate L_k of log p(x) for each row of x: (N,) float64.

    Batch norm runs in evaluation mode (the state's statistics), so each
    input's estimate depends on it alone. Inputs are taken ``batch_size`` at
    a time; ``progress``, if given, is called with the number of inputs done.
    """
    xp = namespace(x)
    results = []
    for start in range(0, x.shape[0], batch_size):
        chunk = x[start:min(start + batch_size, x.shape[0]), ...]
        lw = log_weights(model, params, state, chunk, k, max_rows=max_rows)
        results.append(logmeanexp_forward(lw)[0])
        if progress is not None:
            progress(chunk.shape[0])
    return xp.concat(results, axis=0)
