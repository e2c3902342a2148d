"""Golden values of the whole model, through its public API only.

``compute()`` runs, for fixed seeds, the training step (loss, every gradient,
the new batch-norm state, the logged statistics), the importance-weighted
objective, the L_k estimate (batch norm folded, chunked), ancestral samples
and reconstructions, for both models at 1, 2 and 5 layers, in float64 and
float32. ``tests/test_golden.py`` compares a fresh run with the stored file,
so a refactor that changes a number is caught. The values are recorded with
the fast forms of the ops (``Model(fast=True)``, as training runs them);
``compute_case(..., fast=False)`` computes the same values with the plain forms.

Record once, before a refactor (refuses to overwrite unless --force)::

    python tests/golden/model_values.py

Beside the values it records ``arithmetic_probe()``, a fingerprint of the
machine's float arithmetic, so the test knows whether bit-for-bit float32
agreement can be asked for on the machine it runs on.
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys

import numpy

from lvae_np.backend import get_backend, to_numpy
from lvae_np.bounds import iwae_loss_and_grads, log_likelihood
from lvae_np.models import Model, ModelConfig

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN_FILE = os.path.join(HERE, "model_golden.npz")
PROBE_FILE = os.path.join(HERE, "arithmetic_probe.txt")

X_DIM = 12
LATENT = (5, 4, 4, 3, 2)
HIDDEN = (10, 9, 8, 7, 6)
BATCH = 8


def cases():
    """(name, ModelConfig kwargs, dtype, kl) for every recorded case."""
    out = []
    for kind, layers, dtype, kl in itertools.product(("lvae", "vae"), (1, 2, 5),
                                                     ("float64", "float32"), ("analytic", "mc")):
        cfg = dict(kind=kind, x_dim=X_DIM, latent=LATENT[:layers], hidden=HIDDEN[:layers])
        out.append((f"{kind}-L{layers}-{dtype}-{kl}", cfg, dtype, kl))
    for kind, dtype in itertools.product(("lvae", "vae"), ("float64", "float32")):
        cfg = dict(kind=kind, x_dim=X_DIM, latent=LATENT[:2], hidden=HIDDEN[:2], batch_norm=False)
        out.append((f"{kind}-L2-nobn-{dtype}-mc", cfg, dtype, "mc"))
        cfg = dict(kind=kind, x_dim=X_DIM, latent=LATENT[:2], hidden=HIDDEN[:2],
                   likelihood="gaussian")
        out.append((f"{kind}-L2-gaussian-{dtype}-analytic", cfg, dtype, "analytic"))
    return out


def _np(a):
    return numpy.asarray(to_numpy(a))


def compute_case(cfg: dict, dtype: str, kl: str, *, fast: bool = True) -> dict:
    """Every recorded value of one case, as NumPy arrays keyed by name.

    ``fast``: the model's forms of the ops (``Model(fast=...)``); the stored
    values are the fast forms'.
    """
    be = get_backend("numpy", dtype=dtype, seed=7)
    model = Model(ModelConfig(**cfg), be, fast=fast)
    params, state = model.init()
    data = numpy.random.default_rng(11)
    if cfg.get("likelihood") == "gaussian":
        x = be.asarray(data.normal(size=(BATCH, X_DIM)))
    else:
        x = be.asarray((data.random((BATCH, X_DIM)) < 0.4).astype("float64"))
    out = {}
    loss, grads, stats = model.loss_and_grads(params, state, x, beta=0.7, kl=kl)
    out["loss"] = _np(loss)
    for k, v in grads.items():
        out[f"grad/{k}"] = _np(v)
    for k, v in stats["state"].items():
        out[f"state/{k}"] = _np(v)
    for k in ("objective", "rec", "elbo"):
        out[f"stats/{k}"] = _np(stats[k])
    for i, (t, u) in enumerate(zip(stats["kl"], stats["kl_units"]), start=1):
        out[f"stats/kl{i}"] = _np(t)
        out[f"stats/kl_units{i}"] = _np(u)
    new_state = stats["state"]
    # Evaluation mode: the same batch with the running averages.
    loss_e, grads_e, _ = model.loss_and_grads(params, new_state, x, beta=1.0, kl=kl, training=False)
    out["eval/loss"] = _np(loss_e)
    for k, v in grads_e.items():
        out[f"eval/grad/{k}"] = _np(v)
    if kl == "mc":
        iw_loss, iw_grads, iw_stats = iwae_loss_and_grads(model, params, state, x, k=3, beta=0.9)
        out["iw/loss"] = _np(iw_loss)
        out["iw/bound"] = _np(iw_stats["bound"])
        for k, v in iw_grads.items():
            out[f"iw/grad/{k}"] = _np(v)
        out["lk"] = _np(log_likelihood(model, params, new_state, x[:5], k=7, batch_size=2,
                                       max_rows=5))
    mean, zs = model.generate(params, new_state, 3)
    out["generate/mean"] = _np(mean)
    for i, z in enumerate(zs, start=1):
        out[f"generate/z{i}"] = _np(z)
    out["reconstruct"] = _np(model.reconstruct(params, new_state, x[:4]))
    return out


def arithmetic_probe() -> str:
    """A fingerprint of this machine's float arithmetic, independent of lvae_np.

    The sha256 of float32 and float64 matrix products (BLAS kernels differ
    between processors and builds) and of float32 exp, log, log1p and sqrt
    (NumPy picks SIMD loops by processor). Where it equals the recorded one,
    the model's float32 values must repeat bit for bit.
    """
    import hashlib

    rng = numpy.random.default_rng(0)
    digest = hashlib.sha256()
    for dtype in ("float32", "float64"):
        a = rng.normal(size=(64, 300)).astype(dtype)
        b = rng.normal(size=(300, 96)).astype(dtype)
        digest.update((a @ b).tobytes())
        digest.update((a.T @ (a @ b)).tobytes())
    v = rng.normal(size=4096).astype("float32")
    for out in (numpy.exp(v), numpy.log(numpy.abs(v)), numpy.log1p(numpy.exp(v)),
                numpy.sqrt(numpy.abs(v))):
        digest.update(out.tobytes())
    return digest.hexdigest()


def compute() -> dict:
    """All cases' values under one flat key space ``case/name``."""
    values = {}
    for name, cfg, dtype, kl in cases():
        for k, v in compute_case(cfg, dtype, kl).items():
            values[f"{name}/{k}"] = v
    return values


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Record the model's golden values.")
    parser.add_argument("--out", default=GOLDEN_FILE, help="file to write (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing file")
    args = parser.parse_args(argv)
    if os.path.exists(args.out) and not args.force:
        print(f"error: {args.out} exists; pass --force to overwrite it", file=sys.stderr)
        return 2
    values = compute()
    numpy.savez_compressed(args.out, **values)
    with open(PROBE_FILE, "w") as f:
        f.write(arithmetic_probe() + "\n")
    print(f"wrote {len(values)} arrays to {args.out} and the arithmetic probe to {PROBE_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
