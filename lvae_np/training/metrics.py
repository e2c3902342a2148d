"""What a run measures and records: running sums, the test summary, active units, CSV logs.

Files in a run's folder, one row per epoch, rewritten atomically each epoch:

* ``metrics.csv``: epoch, beta, the training objective and its terms (batch
  means over the epoch), the test ELBO and its terms, active units per layer,
  test L_k where estimated, and seconds.
* ``kl_units.csv``: the training KL of every latent unit (the paper's
  Figure 4 plots their log over epochs).

Sums are kept on the backend's device and come to the host once per epoch.
``summarize`` is the one test-set loop: the log's test columns
(``test_metrics``) and ``lvae_np.evaluate``'s results are both views of it.
"""
from __future__ import annotations

import csv
import io
import math
import sys
from pathlib import Path
from typing import NamedTuple

from .. import bounds
from ..backend import namespace, to_numpy
from .cli import memory_hint
from .fileio import atomic_write_many, special_file
from .runs import KL_UNITS, METRICS

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


class Summary(NamedTuple):
    """What a model does on a set of examples, batch norm in evaluation mode (per example)."""

    n: int                 # examples
    elbo: float            # mean ELBO, log p(x | z_1) - sum_i KL_i
    rec: float             # mean log p(x | z_1)
    kl: list               # mean KL_i of each layer z_1 .. z_L
    active_units: list     # A_u of each layer (posterior means vary, ``active_units``)
    active_units_kl: list  # units of each layer whose mean KL > KL_ACTIVE_THRESHOLD
    au_samples: int        # samples of z per example behind the above
    iw_samples: int        # K of ``lk`` (0: not estimated)
    lk: object = None      # (n,) host array: each example's L_K, or None


def summarize(model, params, state, x, *, kl: str, batch_size: int, au_samples: int = 1,
              iw_samples: int = 0, progress: bool = False, hints: dict | None = None) -> Summary:
    """ELBO, its terms, KL and active units per layer, and L_K of the examples ``x``.

    The one test-set loop of the package: the training log's test metrics
    (``test_metrics``) and ``lvae_np.evaluate`` both come from here. Batch norm
    runs in evaluation mode with ``state``'s statistics.

    Args:
        model, params, state: a ``Model`` and its arrays.
        x: (N, x_dim) examples on the model's backend.
        kl: the KL estimator, "analytic" or "mc".
        batch_size: examples per forward pass.
        au_samples: samples of z per example; ELBO, KL and rec are averaged over
            them, and each posterior mean E_q[z_i | x] (for A_u) is their average.
            With one sample, A_u of z_i below the top is a one-sample estimate,
            since the posterior mean of z_i depends on the sampled z_{i+1}.
        iw_samples: K of the importance-weighted estimate L_K of log p(x) (0: none).
        progress: progress bars on stderr.
        hints: what to do when memory runs out (``cli.memory_hint``), by step:
            "passes" (the forward passes: ``au_samples`` x ``batch_size`` rows)
            and "lk" (L_K: its (K, 100) log-weights per 100 examples); the
            caller names its own options.

    Returns:
        A ``Summary``.
    """
    hints = hints or {}
    n_layers, n = model.config.n_layers, x.shape[0]
    elbo = rec = 0.0
    kls, unit_kl = [0.0] * n_layers, [0.0] * n_layers
    means = [[] for _ in range(n_layers)]
    with memory_hint(hints.get("passes")):
        for start in range(0, n, batch_size):
            xb = x[start:min(start + batch_size, n), ...]
            m = xb.shape[0]
            out, _ = model.forward(params, state, xb, model.noise(au_samples * m), beta=1.0,
                                   kl=kl, training=False, k=au_samples)
            xp = namespace(out.f)                              # f: (au_samples * m,)
            elbo += float(xp.sum(out.f)) / au_samples
            rec += float(xp.sum(out.rec)) / au_samples
            for i, (k, mu) in enumerate(zip(out.kl, out.mu_q)):
                kls[i] += float(xp.sum(k)) / au_samples        # k, mu: (au_samples * m, d_i)
                unit_kl[i] = unit_kl[i] + xp.sum(k, axis=0) / au_samples
                means[i].append(xp.mean(xp.reshape(mu, (au_samples, m, mu.shape[1])), axis=0))
    lk = None
    if iw_samples > 0:
        bar = _bar(progress, n, f"L_{iw_samples}")
        with memory_hint(hints.get("lk")):
            lk = to_numpy(bounds.log_likelihood(model, params, state, x, iw_samples,
                                                progress=None if bar is None else bar.update))
        if bar is not None:
            bar.close()
    return Summary(n=n, elbo=elbo / n, rec=rec / n, kl=[v / n for v in kls],
                   active_units=[active_units(namespace(p[0]).concat(p, axis=0)) for p in means],
                   active_units_kl=[kl_active_units(u / n) for u in unit_kl],
                   au_samples=au_samples, iw_samples=iw_samples, lk=lk)


def metrics_row(s: Summary) -> dict:
    """The test columns of a ``metrics.csv`` row from a ``Summary``.

    Returns:
        test_elbo, test_rec, test_kl_z<i>, au_z<i> and au_kl_z<i> for each layer,
        and test_lk and lk_samples when L_K was estimated.
    """
    row = {"test_elbo": s.elbo, "test_rec": s.rec}
    row.update({f"test_kl_z{i}": v for i, v in enumerate(s.kl, start=1)})
    for i, (au, au_kl) in enumerate(zip(s.active_units, s.active_units_kl), start=1):
        row[f"au_z{i}"] = au
        row[f"au_kl_z{i}"] = au_kl
    if s.lk is not None:
        row["test_lk"] = float(s.lk.mean())
        row["lk_samples"] = s.iw_samples
    return row


TEST_METRICS_HINTS = {"lk": "the test set's L_k is too large for this machine: choose a smaller "
                             "--eval-iw-samples"}


def test_metrics(model, params, state, x, kl: str, batch_size: int = 1000,
                 iw_samples: int = 0) -> dict:
    """The training log's test metrics: ``metrics_row`` of ``summarize`` with one sample.

    Test ELBO, its terms and active units with batch norm's running averages
    (``state``), one sample of z per input, and L_K when ``iw_samples`` > 0.
    See ``summarize`` for the arguments; running out of memory in L_K names
    ``lvae_np.train``'s ``--eval-iw-samples``, the option that sizes it.
    """
    return metrics_row(summarize(model, params, state, x, kl=kl, batch_size=batch_size,
                                 iw_samples=iw_samples, hints=TEST_METRICS_HINTS))


def recollect_bn_state(model, params, state, x, batch_size: int, progress: bool = False) -> dict:
    """Batch-norm statistics averaged over all batches of x, network in training mode.

    Batch t enters with weight 1/t (momentum 1/t), so after T batches every
    layer's statistics are the plain mean of its T batch statistics: the
    paper's re-collection over the training set before evaluation.

    Args:
        model, params, state: a ``Model`` and its arrays (``state``: running averages).
        x: (N, x_dim) examples on the model's backend.
        batch_size: examples per batch.
        progress: a progress bar on stderr.

    Returns:
        The new state (``state`` itself when the model has no batch norm).
    """
    if not state:
        return state
    bar = _bar(progress, x.shape[0], "batch-norm statistics")
    for t, start in enumerate(range(0, x.shape[0], batch_size), start=1):
        xb = x[start:min(start + batch_size, x.shape[0]), ...]
        state = model.forward(params, state, xb, model.noise(xb.shape[0]),
                              training=True, bn_momentum=1.0 / t)[0].state
        if bar is not None:
            bar.update(xb.shape[0])
    if bar is not None:
        bar.close()
    return state


# How an evaluation gets its batch-norm statistics (lvae_np.evaluate --bn, plots' bn=).
BN_STATISTICS = ("recollect", "single-pass", "running")


def evaluation_bn_state(model, params, state, x, how: str, batch_size: int,
                        progress: bool = False) -> dict:
    """The batch-norm statistics an evaluation normalises with.

    Args:
        model, params, state: a ``Model`` and its arrays (``state``: running averages).
        x: (N, x_dim) training examples on the model's backend.
        how: "recollect": the mean of the statistics of x's batches of
            ``batch_size`` (``recollect_bn_state``; lvae_np's default);
            "single-pass": the mean and variance of all of x as one batch, each
            layer normalised with the whole set's statistics of the layers below
            (the released code's collection; memory grows with N);
            "running": ``state``, the averages kept during training.
        batch_size: examples per batch of "recollect".
        progress: a progress bar on stderr ("recollect").

    Returns:
        The state to evaluate with.
    """
    if how == "running":
        return state
    if how == "single-pass":
        return recollect_bn_state(model, params, state, x, max(1, x.shape[0]))
    if how == "recollect":
        return recollect_bn_state(model, params, state, x, batch_size, progress)
    raise ValueError(f"batch-norm statistics must be one of {', '.join(BN_STATISTICS)}, "
                     f"got {how!r}")


def _bar(progress: bool, total: int, desc: str):
    """A tqdm bar on stderr counting examples, or None without ``progress``."""
    if not progress:
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="x", file=sys.stderr, dynamic_ncols=True,
                leave=False)


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


class LogError(ValueError):
    """A run's CSV log that cannot be its run's: garbage, or another model's (one line)."""


class RunLog:
    """metrics.csv and kl_units.csv of a run, kept in memory and rewritten atomically.

    The run's checkpoint says where the run stands; ``sync`` brings the logs
    in step with it when training starts (rows past it dropped, repeated
    epochs kept once, the checkpoint's own epoch restored from its record),
    and refuses logs that cannot belong to the run. ``add`` and ``writers``
    let the trainer write the logs together with the checkpoint
    (``fileio.atomic_write_many``); ``append`` adds a row and writes at once.
    """

    def __init__(self, run_dir: Path, latent: tuple):
        self.run_dir = Path(run_dir)
        self.latent = tuple(latent)
        self.columns = columns(len(latent))
        self.unit_columns = ["epoch"] + [f"z{i}_{u}" for i, d in enumerate(latent, start=1)
                                         for u in range(d)]
        self._files = {name: self._read(name) for name in (METRICS, KL_UNITS)}
        self.rows = self._files[METRICS][1]
        self.unit_rows = self._files[KL_UNITS][1]

    def _read(self, name) -> tuple:
        """(header or None, rows as dicts, why it is unreadable or None) of a log file."""
        path = self.run_dir / name
        if not path.exists():
            return None, [], None
        kind = special_file(path)
        if kind:  # never opened: a FIFO would block
            return None, [], f"it is {kind}, not a regular file"
        try:
            with open(path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                rows = list(reader)
                return reader.fieldnames, rows, None
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            return None, [], str(exc)

    def truncate(self, epochs_done: int) -> None:
        """Forget rows past the checkpoint (written just before an interruption)."""
        self.rows = [r for r in self.rows if int(r["epoch"]) <= epochs_done]
        self.unit_rows = [r for r in self.unit_rows if int(r["epoch"]) <= epochs_done]

    def sync(self, epochs_done: int, last: dict | None = None) -> list:
        """Bring the logs in step with a checkpoint of ``epochs_done`` epochs.

        Rows of later epochs are dropped, an epoch logged twice keeps its last
        row, and the checkpoint's own epoch, when missing, is taken from
        ``last`` (the rows the checkpoint recorded). With no epoch done the
        logs are emptied, whatever they held.

        Args:
            epochs_done: the checkpoint's epochs (0: none, or no checkpoint).
            last: the checkpoint's ``{"metrics": row, "kl_units": row}`` record, or None.

        Returns:
            The names of the log files whose content now differs from the disk's.

        Raises:
            LogError: a log has rows that are not numbers, or another model's columns.
        """
        last = last if isinstance(last, dict) else {}
        self.rows, self.unit_rows = ([], []) if epochs_done == 0 else (
            self._kept(METRICS, self.columns, epochs_done, last.get("metrics")),
            self._kept(KL_UNITS, self.unit_columns, epochs_done, last.get("kl_units")))
        return [name for name, text in self._texts().items()
                if text != self._on_disk(name, bool(self._rows(name)))]

    def _rows(self, name) -> list:
        return self.rows if name == METRICS else self.unit_rows

    def _kept(self, name, cols, epochs_done: int, last_row) -> list:
        """The rows of log ``name`` up to ``epochs_done``, checked, one per epoch."""
        path = self.run_dir / name
        header, rows, unreadable = self._files[name]
        if unreadable:
            raise LogError(f"{path} cannot be read ({unreadable}); repair it or move it away "
                           "(the log then starts again after the checkpoint's epoch)")
        layers = {f"train_kl_z{i}" for i in range(1, len(self.latent) + 1)}
        if header is not None and (not set(header) <= set(cols) or "epoch" not in header or (
                header != cols if name == KL_UNITS else not layers <= set(header))):
            raise LogError(f"{path} is not the log of this run's model (latent "
                           f"{','.join(map(str, self.latent))}): put the run's own files back, "
                           f"or move {name} away")
        advice = "repair it or move the file away (the log then starts again after the " \
                 "checkpoint's epoch)"
        by_epoch = {}
        for line, r in enumerate(rows, start=2):
            if None in r:
                raise LogError(f"{path}, line {line}: more cells than columns; {advice}")
            try:
                epoch = int(r["epoch"])
            except (TypeError, ValueError):
                epoch = 0
            if epoch < 1:
                raise LogError(f"{path}, line {line}: epoch {r['epoch']!r} is not an epoch "
                               f"number; {advice}")
            for c, v in r.items():
                if v is not None and not _is_number(v):
                    raise LogError(f"{path}, line {line}: {c} is {v!r}, not a number; {advice}")
            if epoch <= epochs_done:
                by_epoch[epoch] = {c: r.get(c) or "" for c in cols}  # the last row wins
        if epochs_done not in by_epoch and isinstance(last_row, dict) \
                and list(last_row) == cols and last_row["epoch"] == str(epochs_done):
            by_epoch[epochs_done] = dict(last_row)
        return [by_epoch[e] for e in sorted(by_epoch)]

    def add(self, row: dict, unit_row: list) -> dict:
        """Add an epoch's rows in memory; returns them as logged, for the checkpoint's record."""
        logged = {"metrics": {k: _fmt(row.get(k)) for k in self.columns},
                  "kl_units": dict(zip(self.unit_columns, (_fmt(v) for v in unit_row)))}
        self.rows.append(logged["metrics"])
        self.unit_rows.append(logged["kl_units"])
        return logged

    def writers(self, names=(METRICS, KL_UNITS)) -> list:
        """(path, write) of the log files ``names`` as held in memory, for ``atomic_write_many``."""
        texts = self._texts()
        return [(self.run_dir / name, lambda f, data=texts[name].encode(): f.write(data))
                for name in names]

    def append(self, row: dict, unit_row: list) -> None:
        """Add an epoch's rows and rewrite both files."""
        self.add(row, unit_row)
        atomic_write_many(self.writers())

    def _texts(self) -> dict:
        out = {}
        for name, cols, rows in ((METRICS, self.columns, self.rows),
                                 (KL_UNITS, self.unit_columns, self.unit_rows)):
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
            out[name] = buf.getvalue()
        return out

    def _on_disk(self, name, has_rows: bool):
        """The file's text; a missing file reads as the header alone when no rows are due."""
        path = self.run_dir / name
        try:
            return path.read_bytes().decode("utf-8")
        except FileNotFoundError:
            return None if has_rows else self._texts()[name]
        except (OSError, UnicodeDecodeError):
            return None


def _is_number(text: str) -> bool:
    if text == "":
        return True
    try:
        float(text)
    except ValueError:
        return False
    return True


def _fmt(value) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    return str(value)
