#!/usr/bin/env python
"""Host-device traffic of the GPU path, counted on the CuPy stand-in (no GPU needed).

    python benchmarks/traffic.py            # the paper's 5-layer LVAE on MNIST, batch 256

For each noise mode (``--noise host``: NumPy's generator, copied over;
``device``: drawn on the device), it counts the copies and host syncs of one
training step after setup, of a checkpoint, and of L_5000 on one test image.
The stand-in (tests/cupy_standin) is a NumPy-backed CuPy with the real
CuPy's API that counts every host-to-device and device-to-host copy and sync.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from cupy_standin import activate  # noqa: E402

activate()
from cupy._standin import count_traffic  # noqa: E402

from lvae_np import backend, data  # noqa: E402
from lvae_np.training import metrics  # noqa: E402
from lvae_np.bounds import log_likelihood  # noqa: E402
from lvae_np.training.config import TrainConfig  # noqa: E402
from lvae_np.training.trainer import Position, Trainer  # noqa: E402

backend._cupy_status["reason"] = None   # the stand-in is the CuPy here


def steps(trainer, batches):
    order = trainer.batch_order(0)
    for b in batches:
        x = trainer.batch_data(order[b], 0, b)
        loss, st = trainer.step(x, 1.0)
        metrics.accumulate(trainer.pos.sums, st, loss, x.shape[0])
        trainer.pos.batch = b + 1


def main() -> int:
    ds = data.load_dataset("mnist", progress=False)
    print("counted on the CuPy stand-in; paper's 5-layer LVAE, MNIST, batch 256, float32")
    print(f"{'':8s} {'what':24s} {'h2d copies':>10s} {'h2d bytes':>12s} {'d2h copies':>10s} "
          f"{'d2h bytes':>12s} {'syncs':>6s}")
    for noise in ("host", "device"):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = TrainConfig(epochs=1, backend="cupy", noise=noise)
            be = backend.get_backend("cupy", seed=0, noise=noise)
            trainer = Trainer(cfg, Path(tmp), be, ds, progress=False)
            trainer.fresh()
            trainer.be.noise.start((0,))
            trainer.pos = Position(0)
            steps(trainer, range(2))          # setup done
            results = []
            with count_traffic() as t:
                steps(trainer, [2])
            results.append(("a training step", t))
            with count_traffic() as t:
                trainer.save()
            results.append(("a checkpoint", t))
            with count_traffic() as t:
                log_likelihood(trainer.model, trainer.params, trainer.state,
                               trainer.test_x[:1], 5000)
            results.append(("L_5000, one image", t))
            for what, t in results:
                print(f"{noise:8s} {what:24s} {t.h2d_copies:10d} {t.h2d_bytes:12,d} "
                      f"{t.d2h_copies:10d} {t.d2h_bytes:12,d} {t.syncs:6d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
