"""Figures of a run: ``python -m lvae_np.plots RUN_DIR [--out DIR]``.

Reads a run folder written by ``lvae_np.train`` and draws

* ``bounds.png``: training and test ELBO per epoch (and test L_k where estimated);
* ``kl_heatmap.png``: log10 of the KL of every latent unit over the epochs
  (the paper's Figure 4);
* ``kl_per_layer.png``: the KL of each layer at the last epoch and over the
  epochs (the paper's Figure 5);
* ``samples.png``: E[x | z_1] of ancestral samples from the checkpoint;
* ``reconstructions.png``: test images and E[x | z_1] with z drawn from q(z | x).

Figures are ``matplotlib.figure.Figure`` objects drawn on the Agg canvas:
nothing here imports ``matplotlib.pyplot`` or switches the global backend, so
the module works headless and leaves a notebook's backend alone. Layer z_i is
drawn in the same colour in every figure (``layer_colour``).

Samples and reconstructions use, by default, the batch-norm statistics that
``lvae_np.evaluate`` reports L_k with: collected over the whole training set
as the run's config says (``bn_stats``: in batches of ``RECOLLECT_BATCH``, or
in one pass). ``bn="running"`` uses the running averages stored in the
checkpoint instead (what the training loop's test metrics use).
"""
from __future__ import annotations

import csv
import io
import itertools
import math
import sys
from pathlib import Path

import numpy
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from .. import data
from ..backend import to_numpy
from .checkpoint import CheckpointError
from .cli import Parser, entry, folder_path, memory_hint
from .fileio import atomic_write_many
from .metrics import BN_STATISTICS, evaluation_bn_state
from .runs import KL_UNITS, METRICS, LoadedRun, evaluation_train_set, load_run

PROG = "lvae_np.plots"
DPI = 120
KL_FLOOR = 1e-4            # KL clipped here before its log in the heatmap
RECOLLECT_BATCH = 500      # batch of the re-collection, lvae_np.evaluate's default --batch-size
FIGURES = ("bounds", "kl_heatmap", "kl_per_layer", "samples", "reconstructions")


class PlotError(Exception):
    """A run folder lacks what a figure needs (one-line message)."""


def layer_colour(i: int):
    """The colour of layer z_i (1-based), the same in every figure."""
    return colormaps["tab10"]((i - 1) % 10)


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


# ----------------------------------------------------------------------------
# Reading the run's CSV logs
# ----------------------------------------------------------------------------
def read_csv(path) -> dict:
    """A run's CSV log as {column: float array} (blank cells are NaN).

    Raises PlotError when the file is missing, malformed or has no epochs yet.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise PlotError(f"no run folder at {path.parent}")
    if not path.is_file():
        raise PlotError(f"{path} is missing: is {path.parent} a folder written by lvae_np.train?")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except UnicodeDecodeError as exc:
        raise PlotError(f"{path} is malformed: not UTF-8 text ({exc.reason} at byte "
                        f"{exc.start})") from None
    except csv.Error as exc:
        raise PlotError(f"{path} is malformed ({exc})") from None
    if rows and "epoch" not in rows[0]:
        raise PlotError(f"{path} is malformed: its header has no epoch column")
    if len(rows) < 2:
        raise PlotError(f"{path} has no epochs yet: train the run for at least one epoch")
    try:
        values = numpy.array([[float(v) if v != "" else math.nan for v in r] for r in rows[1:]])
    except ValueError as exc:
        raise PlotError(f"{path} is malformed ({exc})") from None
    if values.ndim != 2 or values.shape[1] != len(rows[0]):
        raise PlotError(f"{path} is malformed: rows and header differ in length")
    return dict(zip(rows[0], values.T))


def read_metrics(run_dir) -> tuple[dict, int]:
    """``metrics.csv`` of a run (see ``read_csv``) and its number of latent layers."""
    path = Path(run_dir) / METRICS
    m = read_csv(path)
    n = 0
    while f"train_kl_z{n + 1}" in m:
        n += 1
    if n == 0 or "train_elbo" not in m:
        raise PlotError(f"{path} lacks the train_elbo and train_kl_z<i> columns")
    return m, n


def _warmup_end(m: dict):
    """The first epoch trained with beta = 1, when warm-up ended inside the logged epochs."""
    beta = m.get("beta")
    if beta is None or not (beta < 1).any():
        return None
    done = numpy.flatnonzero(beta >= 1)
    return float(m["epoch"][done[0]]) if len(done) else None


def _mark_warmup(ax, m: dict, colour="0.3") -> None:
    """A dotted line between the last warm-up epoch and the first with beta = 1."""
    end = _warmup_end(m)
    if end is not None:
        ax.axvline(end - 0.5, color=colour, linestyle=":", linewidth=1.2,
                   label=f"end of warm-up (\N{GREEK SMALL LETTER BETA} = 1 from epoch {end:g})")


# ----------------------------------------------------------------------------
# Figures from the logs
# ----------------------------------------------------------------------------
def plot_bounds(run_dir) -> Figure:
    """Training and test ELBO per epoch (nats), test L_k where estimated, end of warm-up.

    When the first epochs lie far below the rest, the y axis is fitted to the
    epochs from beta >= 0.5 on and a note gives the lowest value off the axis.
    """
    m, _ = read_metrics(run_dir)
    ep = m["epoch"]
    fig = _figure(7.5, 4.5)
    ax = fig.add_subplot()
    series = [m["train_elbo"]]
    ax.plot(ep, m["train_elbo"], color="0.45", linestyle="--", marker=".", label="training ELBO")
    test = m.get("test_elbo", numpy.full_like(ep, math.nan))
    if numpy.isfinite(test).any():
        ok = numpy.isfinite(test)
        ax.plot(ep[ok], test[ok], color="black", marker=".", label="test ELBO")
        series.append(test)
    lk = m.get("test_lk", numpy.full_like(ep, math.nan))
    if numpy.isfinite(lk).any():
        ok = numpy.isfinite(lk)
        k = m["lk_samples"][ok][-1]
        ax.plot(ep[ok], lk[ok], linestyle="none", marker="D", color="tab:purple",
                label=f"test L_{k:g} (importance-weighted)" if math.isfinite(k) else "test L_k")
        series.append(lk)
    _mark_warmup(ax, m)
    _focus(ax, ep, numpy.array(series), m.get("beta"))
    ax.set(xlabel="epoch", ylabel="bound on log p(x) (nats)",
           title=f"Bounds per epoch: {Path(run_dir).name}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return fig


def _focus(ax, ep, series, beta) -> None:
    """Fit the y axis to the later epochs when early ones would squash them."""
    start = 0 if beta is None or not (beta >= 0.5).any() else int(numpy.argmax(beta >= 0.5))
    start = max(start, 1) if len(ep) > 3 else 0
    late, every = series[:, start:], series
    if start == 0 or not numpy.isfinite(late).any():
        return
    lo, hi = numpy.nanmin(late), numpy.nanmax(late)
    span = max(hi - lo, 1e-3)
    if numpy.nanmin(every) >= lo - 2 * span:
        return
    bottom = lo - 0.15 * span
    ax.set_ylim(bottom, hi + 0.15 * span)
    off = ep[(numpy.nan_to_num(every, nan=0.0) < bottom).any(axis=0)]
    ax.text(0.01, 0.02, f"off the axis: epoch{'s' if len(off) > 1 else ''} "
            f"{', '.join(f'{e:g}' for e in off)} (lowest {numpy.nanmin(every):.1f} nats)",
            transform=ax.transAxes, fontsize=8, color="0.3",
            bbox=dict(facecolor="white", edgecolor="none", alpha=0.8))


def kl_unit_matrix(run_dir):
    """KL per unit as (units, epochs) in display order, and the layer layout.

    Row 0 is the bottom of the heatmap. Rows run from z_1 up to z_L; inside a
    layer, units are sorted by their KL in the last epoch, smallest first, so
    the most active unit is at the top of its band. Returns
    (matrix, epochs, [(layer, units), ...]).
    """
    k = read_csv(Path(run_dir) / KL_UNITS)
    layers, blocks = [], []
    for i in itertools.count(1):
        prefix = f"z{i}_"
        cols = sorted((c for c in k if c.startswith(prefix)), key=lambda c: int(c[len(prefix):]))
        if not cols:
            break
        block = numpy.array([k[c] for c in cols])
        final = numpy.nan_to_num(block[:, -1], nan=-1.0)
        blocks.append(block[numpy.argsort(final, kind="stable")])
        layers.append((i, len(cols)))
    if not blocks:
        raise PlotError(f"{Path(run_dir) / KL_UNITS} has no z<i>_<u> columns")
    return numpy.concatenate(blocks), k["epoch"], layers


def plot_kl_heatmap(run_dir) -> Figure:
    """log10 KL of every latent unit over the epochs (the paper's Figure 4).

    Units are stacked by layer, z_1 at the bottom and z_L at the top, with white
    lines between layers; inside a layer the unit with the largest KL in the last
    epoch is at the top of its band (``kl_unit_matrix``). KL is clipped at
    ``KL_FLOOR`` before the log.
    """
    kl, ep, layers = kl_unit_matrix(run_dir)
    logkl = numpy.log10(numpy.clip(kl, KL_FLOOR, None))
    fig = _figure(8, 6)
    ax = fig.add_subplot()
    image = ax.imshow(logkl, aspect="auto", origin="lower", interpolation="nearest",
                      cmap="viridis", vmin=math.log10(KL_FLOOR),
                      extent=(ep[0] - 0.5, ep[-1] + 0.5, -0.5, len(kl) - 0.5))
    centres, start = [], 0
    for i, d in layers:
        centres.append(start + (d - 1) / 2)
        start += d
        if start < len(kl):
            ax.axhline(start - 0.5, color="white", linewidth=1.5)
    ax.set_yticks(centres, [f"z{i} ({d})" for i, d in layers])
    for label, (i, _) in zip(ax.get_yticklabels(), layers):
        label.set_color(layer_colour(i))
        label.set_fontweight("bold")
    xlabel = "epoch"
    metrics = Path(run_dir) / METRICS
    m = read_csv(metrics) if metrics.is_file() else {}
    if _warmup_end(m) is not None:
        _mark_warmup(ax, m, colour="white")
        xlabel += (f" (dotted line: end of warm-up, \N{GREEK SMALL LETTER BETA} = 1 "
                   f"from epoch {_warmup_end(m):g})")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel=xlabel, title="KL per latent unit over training",
           ylabel="latent units by layer (number of units);\n"
                  "in a layer, sorted by final KL, largest on top")
    fig.colorbar(image, ax=ax, label="log10 KL (nats)",
                 extend="min" if (kl < KL_FLOOR).any() else "neither")
    return fig


def plot_kl_per_layer(run_dir) -> Figure:
    """KL per layer: bars at the last epoch (test and training), lines over the epochs."""
    m, n = read_metrics(run_dir)
    ep = m["epoch"]
    fig = _figure(11, 4.5)
    bars, lines = fig.subplots(1, 2, width_ratios=[2, 3])
    x = numpy.arange(1, n + 1)
    colours = [layer_colour(i) for i in x]
    train = numpy.array([m[f"train_kl_z{i}"][-1] for i in x])
    test = numpy.array([m.get(f"test_kl_z{i}", [math.nan])[-1] for i in x])
    groups = [("training", train, dict(alpha=0.45, hatch="//"))]
    if numpy.isfinite(test).all():
        groups.append(("test", test, {}))
    width = 0.8 / len(groups)
    for g, (name, values, style) in enumerate(groups):
        pos = x + (g - (len(groups) - 1) / 2) * width
        b = bars.bar(pos, values, width, color=colours, edgecolor="black", linewidth=0.6,
                     **style)
        bars.bar_label(b, fmt="%.2f", fontsize=7, padding=1)
    bars.set_xticks(x, [f"z{i}" for i in x])
    bars.set(xlabel="latent layer", ylabel="KL (nats per example)",
             title=f"KL per layer at epoch {ep[-1]:g}")
    bars.margins(y=0.12)
    bars.legend(handles=[Patch(facecolor="0.75", edgecolor="black", hatch=g[2].get("hatch"),
                               label=f"{g[0]} set") for g in groups])
    for i in x:
        lines.plot(ep, m[f"train_kl_z{i}"], color=layer_colour(i), marker=".", label=f"z{i}")
    _mark_warmup(lines, m)
    lines.set_yscale("log")
    lines.xaxis.set_major_locator(MaxNLocator(integer=True))
    lines.set(xlabel="epoch", ylabel="training KL (nats per example, log scale)",
              title="KL per layer over training")
    lines.grid(alpha=0.3, which="both")
    lines.legend(fontsize=8, ncols=2 if n > 5 else 1)
    return fig


# ----------------------------------------------------------------------------
# Figures from the checkpoint
# ----------------------------------------------------------------------------
def _loaded(run, data_dir, bn) -> LoadedRun:
    return run if isinstance(run, LoadedRun) else load_model(run, data_dir, bn=bn)


def _noise(run: LoadedRun, n: int, seed: int) -> list:
    """eps_i for n rows from ``seed`` alone, so a seed gives the same z whatever ``bn`` is."""
    rng = numpy.random.default_rng([seed, 1])  # apart from the stream that picks test images
    return [run.model.backend.asarray(rng.standard_normal((n, d)))
            for d in run.model.config.latent]


def load_model(run_dir, data_dir=None, *, bn: str | None = None) -> LoadedRun:
    """A run's checkpoint as a model on the NumPy backend, with the run's data.

    Args:
        run_dir: a folder written by ``lvae_np.train``.
        data_dir: folder with the data files (None: the run's own, or the usual places).
        bn: the batch-norm statistics (``metrics.evaluation_bn_state``, over the
            training set binarised once): "recollect", "single-pass" or "running"
            (the averages saved in the checkpoint); None: the run's ``bn_stats``,
            as ``lvae_np.evaluate`` does by default.

    Returns:
        ``runs.load_run``'s ``LoadedRun``, its ``state`` and ``bn`` as asked.
    """
    if bn is not None and bn not in BN_STATISTICS:
        raise ValueError(f"bn must be one of {', '.join(BN_STATISTICS)}, got {bn!r}")
    if not Path(run_dir).is_dir():
        raise PlotError(f"no run folder at {run_dir}")
    run = load_run(run_dir, data_dir, backend="numpy", seed=0)
    bn = run.config.bn_stats if bn is None else bn
    if bn != "running":
        x = run.model.backend.asarray(evaluation_train_set(run.dataset))
        hint = ("single-pass batch-norm statistics hold the whole training set as one batch: "
                "choose --bn recollect") if bn == "single-pass" else None
        with memory_hint(hint):
            state = evaluation_bn_state(run.model, run.params, run.state, x, bn,
                                        RECOLLECT_BATCH)
        run = run._replace(state=state, bn=bn)
    return run


def _mosaic(images, shape, cols: int, gap: int = 1) -> numpy.ndarray:
    """Tile (n, h*w) images into one grey image, ``cols`` per row, separated by ``gap`` pixels."""
    h, w = shape
    n, rows = len(images), math.ceil(len(images) / cols)
    out = numpy.full((rows * (h + gap) - gap, cols * (w + gap) - gap), 0.5)
    for j, img in enumerate(numpy.clip(images, 0, 1).reshape(n, h, w)):
        r, c = divmod(j, cols)
        out[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = img
    return out


def _show(ax, image, title: str) -> None:
    ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=10)


def plot_samples(run_dir, n: int = 100, seed: int = 0, data_dir=None, *,
                 bn: str | None = None) -> Figure:
    """A grid of E[x | z_1] for ``n`` ancestral samples z_L ~ N(0, I), ..., z_1 (seeded).

    ``run_dir`` may also be what ``load_model`` returned (then ``data_dir`` and
    ``bn`` are its own). Batch norm: see ``load_model`` (default: re-collected,
    as lvae_np.evaluate does).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    run = _loaded(run_dir, data_dir, bn)
    mean, _ = run.model.generate(run.params, run.state, n, noise=_noise(run, n, seed))
    cols = math.ceil(math.sqrt(n))
    fig = _figure(6, 6 * math.ceil(n / cols) / cols + 0.45)
    _show(fig.add_subplot(), _mosaic(to_numpy(mean), run.dataset.image_shape, cols),
          f"{n} samples of E[x | z1], z drawn from p(z) top-down\n"
          f"{run.model.config.kind.upper()} after {run.epoch} epochs; {_bn_words(run.bn)}")
    return fig


def _bn_words(bn: str) -> str:
    return {"running": "batch norm: running averages",
            "single-pass": "batch norm: the training set's, in one pass"}.get(
        bn, "batch norm: re-collected over the training set")


def plot_reconstructions(run_dir, n: int = 10, seed: int = 0, data_dir=None, *,
                         bn: str | None = None) -> Figure:
    """``n`` test images (chosen with ``seed``) above their reconstructions.

    A reconstruction is E[x | z_1] with z_1 drawn from q(z | x). ``run_dir``
    and ``bn`` as in ``plot_samples``.
    """
    run = _loaded(run_dir, data_dir, bn)
    test = run.dataset.test
    if not 1 <= n <= len(test):
        raise ValueError(f"n must be between 1 and {len(test)} (the test set), got {n}")
    x = test[numpy.sort(numpy.random.default_rng(seed).choice(len(test), n, replace=False))]
    recon = to_numpy(run.model.reconstruct(run.params, run.state, run.model.backend.asarray(x),
                                           noise=_noise(run, n, seed)))
    cols = min(n, 10)
    fig = _figure(cols + 0.4, 2 * math.ceil(n / cols) + 0.9)
    top, bottom = fig.subplots(2, 1)
    _show(top, _mosaic(x, run.dataset.image_shape, cols), "test images (as the model sees them)")
    _show(bottom, _mosaic(recon, run.dataset.image_shape, cols),
          f"reconstructions E[x | z1], z ~ q(z | x); {run.model.config.kind.upper()} after "
          f"{run.epoch} epochs, {_bn_words(run.bn)}")
    return fig


# ----------------------------------------------------------------------------
# Writing them all, and the command line
# ----------------------------------------------------------------------------
def write_all(run_dir, out_dir=None, *, data_dir=None, samples: int = 100,
              bn: str | None = None) -> list[Path]:
    """Draw every figure, then write them as PNGs (atomically) to ``out_dir``.

    ``out_dir`` defaults to ``RUN_DIR/figures``. The checkpoint is loaded once
    for samples and reconstructions. All figures are drawn before any is
    written, so a failure to draw writes nothing, and they are written
    together (``fileio.atomic_write_many``), so a failure to write (a full
    disk) leaves the PNGs that were there as they were. Returns the written paths.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PlotError(f"no run folder at {run_dir}")
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "figures"
    for folder in (out_dir, *out_dir.parents):
        if folder.exists() and not folder.is_dir():
            raise PlotError(f"--out {out_dir}: {folder} is a file, not a folder; choose "
                            "another --out")
    figures = {"bounds": plot_bounds(run_dir), "kl_heatmap": plot_kl_heatmap(run_dir),
               "kl_per_layer": plot_kl_per_layer(run_dir)}
    run = load_model(run_dir, data_dir, bn=bn)
    with memory_hint("choose a smaller --samples"):
        figures.update(samples=plot_samples(run, samples))
    figures.update(reconstructions=plot_reconstructions(run))
    pngs = {}
    for name in FIGURES:
        buf = io.BytesIO()
        figures[name].savefig(buf, format="png", dpi=DPI)
        pngs[out_dir / f"{name}.png"] = buf.getvalue()
    atomic_write_many([(path, lambda f, png=png: f.write(png)) for path, png in pngs.items()])
    return list(pngs)


@entry(PROG, errors=(PlotError, CheckpointError, data.DataError, ValueError))
def main(argv=None) -> int:
    """The command line; returns the exit status (2 with a one-line error, 1 a failed write)."""
    p = Parser(prog="python -m lvae_np.plots",
               description="Draw a run's figures: bounds per epoch, KL per unit (heatmap) "
                           "and per layer, samples and reconstructions from its checkpoint. "
                           "Writes bounds.png, kl_heatmap.png, kl_per_layer.png, samples.png "
                           "and reconstructions.png to RUN_DIR/figures (or --out) and prints "
                           "their paths.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by lvae_np.train")
    p.add_argument("--out", metavar="DIR", type=folder_path,
                   help="where the PNGs go (default: RUN_DIR/figures)")
    p.add_argument("--data-dir", metavar="DIR",
                   help=f"folder with the data files (also ${data.ENV_VAR})")
    p.add_argument("--samples", type=int, default=100, metavar="N",
                   help="number of samples in samples.png")
    p.add_argument("--bn", choices=BN_STATISTICS,
                   help="batch-norm statistics for samples and reconstructions: collected "
                        "over the training set in batches (recollect) or in one pass "
                        "(single-pass), or the running averages in the checkpoint (running); "
                        "default: the run's --bn-stats, as lvae_np.evaluate, whose L_k they "
                        "then go with")
    args = p.parse_args(argv)
    if args.samples < 1:
        raise PlotError(f"--samples must be >= 1, got {args.samples}")
    paths = write_all(args.run_dir, args.out, data_dir=args.data_dir, samples=args.samples,
                      bn=args.bn)
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
