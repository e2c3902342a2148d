"""What a run measures and records: running sums, test metrics, active units, CSV logs.

Files in a run's folder, one row per epoch, rewritten atomically each epoch:

* ``metrics.csv``: epoch, beta, the training objective and its terms (batch
  means over the epoch), the test ELBO and its terms, active units per layer,
  test L_k where estimated, and seconds.
* ``kl_units.csv``: the training KL of every latent unit (the paper's
  Figure 4 plots their log over epochs).

Sums are kept on the backend's device and come to the host once per epoch.
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from .backend import namespace, to_numpy
from .fileio import atomic_write

ACTIVE_THRESHOLD = 0.01  # Burda et al.: unit u is active if Cov_x(E_q[z_u | x]) > 0.01
KL_ACTIVE_THRESHOLD = 0.01  # the KL-based count: unit u is active if E_x KL_u > 0.01 nats


def columns(n_layers: int) -> list:
    z = range(1, n_layers + 1)
    return (["epoch", "beta", "train_loss", "train_elbo", "train_rec"]
            + [f"train_kl_z{i}" for i in z]
            + ["test_elbo", "test_rec"] + [f"test_kl_z{i}" for i in z]
            + [f"au_z{i}" for i in z] + [f"au_kl_z{i}" for i in z]
            + ["test_lk", "lk_samples", "train_seconds", "eval_seconds"])


def accumulate(sums: dict, stats: dict, loss, n: int) -> None:
    """Add a batch's statistics, weighted by its size, to the epoch's running sums."""
    def add(key, value):
        sums[key] = value * n if key not in sums else sums[key] + value * n

    add("loss", loss)
    add("elbo", stats["elbo"])
    add("rec", stats["rec"])
    for i, (kl, units) in enumerate(zip(stats["kl"], stats["kl_units"]), start=1):
        add(f"kl_z{i}", kl)
        add(f"kl_units_z{i}", units)
    sums["n"] = sums.get("n", 0) + n


def epoch_row(epoch: int, beta: float, sums: dict, seconds: float, n_layers: int) -> dict:
    """The training part of an epoch's metrics row (host floats)."""
    n = float(to_numpy(sums["n"]))
    mean = lambda key: float(to_numpy(sums[key])) / n  # noqa: E731
    row = {"epoch": epoch, "beta": beta, "train_loss": mean("loss"),
           "train_elbo": mean("elbo"), "train_rec": mean("rec"), "train_seconds": seconds}
    for i in range(1, n_layers + 1):
        row[f"train_kl_z{i}"] = mean(f"kl_z{i}")
    return row


def kl_unit_row(epoch: int, sums: dict, n_layers: int) -> list:
    n = float(to_numpy(sums["n"]))
    row = [epoch]
    for i in range(1, n_layers + 1):
        row += [float(v) / n for v in to_numpy(sums[f"kl_units_z{i}"])]
    return row


def active_units(means, threshold: float = ACTIVE_THRESHOLD) -> int:
    """Burda's A_u: units whose posterior mean varies over the inputs (variance > threshold).

    means: (N, d) array of E_q[z | x] per input.
    """
    xp = namespace(means)
    centred = means - xp.mean(means, axis=0)
    return int(xp.sum(xp.astype(xp.mean(centred * centred, axis=0) > threshold, xp.int64)))


def kl_active_units(kl_per_unit, threshold: float = KL_ACTIVE_THRESHOLD) -> int:
    """Units whose KL term, averaged over the inputs, exceeds ``threshold`` nats.

    kl_per_unit: (d,) array. Unlike A_u, this does not count a unit of a lower
    layer whose posterior mean moves only because the layer above it does.
    """
    xp = namespace(kl_per_unit)
    return int(xp.sum(xp.astype(kl_per_unit > threshold, xp.int64)))


def test_metrics(model, params, state, x, kl: str, batch_size: int = 1000) -> dict:
    """Test ELBO, its terms and active units, with batch norm's running averages.

    One sample per input: the ELBO is an unbiased estimate; the posterior mean
    of z_i below the top depends on the sampled z_{i+1}, so active units here
    are a one-sample estimate (``evaluate`` averages more samples).
    """
    n_layers = model.config.n_layers
    total = {"elbo": 0.0, "rec": 0.0, **{f"kl_z{i}": 0.0 for i in range(1, n_layers + 1)}}
    means, unit_kl = [[] for _ in range(n_layers)], [0.0] * n_layers
    for start in range(0, x.shape[0], batch_size):
        xb = x[start:min(start + batch_size, x.shape[0]), ...]
        f, terms, _, _ = model.forward(params, state, xb, model.noise(xb.shape[0]), beta=1.0,
                                       kl=kl, training=False)
        xp = namespace(f)
        total["elbo"] += float(xp.sum(f))
        total["rec"] += float(xp.sum(terms["rec"]))
        for i, (k, mu) in enumerate(zip(terms["kl"], terms["mu_q"]), start=1):
            total[f"kl_z{i}"] += float(xp.sum(k))
            unit_kl[i - 1] = unit_kl[i - 1] + xp.sum(k, axis=0)
            means[i - 1].append(mu)
    n = x.shape[0]
    row = {"test_" + k: v / n for k, v in total.items()}
    for i, parts in enumerate(means, start=1):
        row[f"au_z{i}"] = active_units(namespace(parts[0]).concat(parts, axis=0))
        row[f"au_kl_z{i}"] = kl_active_units(unit_kl[i - 1] / n)
    return row


def describe(row: dict) -> str:
    """One log line for an epoch."""
    parts = [f"epoch {row['epoch']}", f"beta {row['beta']:.3f}",
             f"train ELBO {row['train_elbo']:.3f}"]
    if "test_elbo" in row:
        au = "/".join(str(v) for k, v in row.items() if k.startswith("au_z"))
        au_kl = "/".join(str(v) for k, v in row.items() if k.startswith("au_kl_z"))
        parts += [f"test ELBO {row['test_elbo']:.3f}", f"active units {au} (KL > 0.01: {au_kl})"]
    if "test_lk" in row:
        parts.append(f"test L_{row['lk_samples']} {row['test_lk']:.3f}")
    parts.append(f"{row['train_seconds']:.1f}s")
    return " | ".join(parts)


class RunLog:
    """metrics.csv and kl_units.csv of a run, kept in memory and rewritten atomically."""

    def __init__(self, run_dir: Path, latent: tuple):
        self.run_dir = Path(run_dir)
        self.columns = columns(len(latent))
        self.unit_columns = ["epoch"] + [f"z{i}_{u}" for i, d in enumerate(latent, start=1)
                                         for u in range(d)]
        self.rows = self._read("metrics.csv")
        self.unit_rows = self._read("kl_units.csv")

    def _read(self, name) -> list:
        path = self.run_dir / name
        if not path.exists():
            return []
        with open(path, newline="") as f:
            return [r for r in csv.DictReader(f)]

    def truncate(self, epochs_done: int) -> None:
        """Forget rows past the checkpoint (written just before an interruption)."""
        self.rows = [r for r in self.rows if int(r["epoch"]) <= epochs_done]
        self.unit_rows = [r for r in self.unit_rows if int(r["epoch"]) <= epochs_done]

    def append(self, row: dict, unit_row: list) -> None:
        self.rows.append({k: _fmt(row.get(k)) for k in self.columns})
        self.unit_rows.append(dict(zip(self.unit_columns, (_fmt(v) for v in unit_row))))
        self._write("metrics.csv", self.columns, self.rows)
        self._write("kl_units.csv", self.unit_columns, self.unit_rows)

    def _write(self, name, cols, rows) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(self.run_dir / name, lambda f: f.write(buf.getvalue().encode()))


def _fmt(value) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    return str(value)
