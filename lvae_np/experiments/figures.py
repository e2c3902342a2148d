"""The experiment's figures: test ELBO per epoch, L_K by depth, active units per layer.

``draw_figures`` writes ``test_elbo.png``, ``depth.png`` and
``active_units.png`` to the results folder where the runs give something to
draw; each ``plot_*`` returns a Matplotlib figure (drawn off screen, Agg) or
None. Matplotlib is imported only when a figure is drawn.
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy

from ..training.fileio import atomic_write
from .specs import MODELS, RunSpec

DPI = 120
MODEL_STYLE = {"vae": dict(linestyle="--", colour="tab:orange", label="VAE"),
               "lvae": dict(linestyle="-", colour="tab:blue", label="LVAE")}


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _layers(n: int) -> str:
    return f"{n} layer{'s' if n != 1 else ''}"


def _setting(spec: RunSpec) -> str:
    return f"{'BN' if spec.batch_norm else 'no BN'}, {'WU' if spec.warmup else 'no WU'}"


def plot_test_elbo(records: list):
    """Test ELBO per epoch from each run's metrics.csv: VAE dashed, LVAE solid.

    One panel per dataset; a VAE and an LVAE with the same layers and settings
    share a colour. Returns None when no run has a logged test ELBO.
    """
    from matplotlib import colormaps

    from ..training.plots import PlotError, read_csv

    curves = []
    for rec in records:
        try:
            m = read_csv(rec.run_dir / "metrics.csv")
        except (PlotError, OSError, UnicodeDecodeError, csv.Error):
            continue   # no curve (publishing has checked the logs of runs with a checkpoint)
        ep, y = m.get("epoch"), m.get("test_elbo")
        if ep is None or y is None or not numpy.isfinite(y).any():
            continue
        ok = numpy.isfinite(y)
        curves.append((rec.spec, ep[ok], y[ok]))
    if not curves:
        return None
    datasets = list(dict.fromkeys(spec.dataset for spec, _, _ in curves))
    groups = list(dict.fromkeys((s.layers, s.latent, s.batch_norm, s.warmup)
                                for s, _, _ in curves))
    fig = _figure(6.5 * len(datasets) + 2.5, 4.8)
    axes = fig.subplots(1, len(datasets), squeeze=False)[0]
    for ax, dataset in zip(axes, datasets):
        lows, highs = [], []
        for spec, ep, y in curves:
            if spec.dataset != dataset:
                continue
            style = MODEL_STYLE[spec.model]
            colour = colormaps["tab10"](groups.index((spec.layers, spec.latent,
                                                      spec.batch_norm, spec.warmup)) % 10)
            ax.plot(ep, y, linestyle=style["linestyle"], color=colour,
                    marker="." if len(ep) < 30 else None,
                    label=f"{style['label']}, {_layers(spec.layers)}, {_setting(spec)}")
            # the first epochs (about a tenth) lie far below; fit the axis to the rest
            later = y[max(len(y) // 10, 1):] if len(y) > 3 else y
            lows.append(later.min())
            highs.append(y.max())
        if len(curves) > 1 and lows:
            lo, hi = min(lows), max(highs)
            span = max(hi - lo, 1e-3)
            ax.set_ylim(lo - 0.1 * span, hi + 0.1 * span)
        ax.set(xlabel="epoch", ylabel="test ELBO (nats, batch-norm running averages)",
               title=f"Test ELBO per epoch: {dataset}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def plot_depth(records: list):
    """Test L_K against the number of stochastic layers, VAE vs LVAE, with standard errors.

    Drawn for each (dataset, BN, WU) setting with at least two depths among
    the runs; returns None when none has two evaluated depths.
    """
    panels = {}
    for rec in records:
        key = (rec.spec.dataset, rec.spec.batch_norm, rec.spec.warmup)
        panels.setdefault(key, []).append(rec)
    panels = {k: v for k, v in panels.items()
              if len({r.spec.layers for r in v if r.eval and "lk" in r.eval}) >= 2}
    if not panels:
        return None
    fig = _figure(5.5 * len(panels), 4.5)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, ((dataset, bn, wu), recs) in zip(axes, panels.items()):
        k = next(r.eval["iw_samples"] for r in recs if r.eval and "lk" in r.eval)
        for model in MODELS:
            # with one layer the two models are one (mnist-depth runs it once, as the VAE)
            pts = sorted((r.spec.layers, r.eval["lk"], r.eval.get("lk_stderr", 0.0))
                         for r in recs if r.eval and "lk" in r.eval and (
                             r.spec.model == model or (r.spec.layers == 1 and not any(
                                 o.spec.layers == 1 and o.spec.model == model for o in recs))))
            if not pts:
                continue
            x, y, e = map(numpy.array, zip(*pts))
            style = MODEL_STYLE[model]
            ax.errorbar(x, y, yerr=e, linestyle=style["linestyle"], color=style["colour"],
                        marker="o", capsize=4, label=style["label"])
        ax.set_xticks(sorted({r.spec.layers for r in recs}))
        ax.set(xlabel="stochastic layers", ylabel=f"test L_{k} (nats; bars: 1 s.e.)",
               title=f"Log-likelihood by depth: {dataset}, "
                     f"{'BN' if bn else 'no BN'}, {'WU' if wu else 'no WU'}")
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


def plot_active_units(records: list):
    """Active units per layer of the deepest VAE and LVAE runs, as grouped bars.

    One panel per (dataset, settings) among the runs with the most layers of
    their dataset; per layer, for each model, the units with KL > 0.01 (solid)
    and A_u (hatched). Returns None when none of those runs was evaluated.
    """
    from matplotlib.patches import Patch

    deepest = {}
    for rec in records:
        deepest[rec.spec.dataset] = max(deepest.get(rec.spec.dataset, 0), rec.spec.layers)
    panels = {}
    for rec in records:
        s = rec.spec
        if s.layers == deepest[s.dataset] and rec.eval and rec.eval.get("active_units"):
            panels.setdefault((s.dataset, s.latent, s.batch_norm, s.warmup), {})[s.model] = rec
    if not panels:
        return None
    cols = min(len(panels), 3)
    rows = math.ceil(len(panels) / cols)
    fig = _figure(5.2 * cols, 4.2 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    width = 0.2
    for ax, ((dataset, latent, bn, wu), by_model) in zip(axes, panels.items()):
        x = numpy.arange(1, len(latent) + 1)
        slot = 0
        for model in MODELS:
            rec = by_model.get(model)
            for key, hatch, alpha in (("active_units_kl", None, 1.0),
                                      ("active_units", "//", 0.45)):
                pos = x + (slot - 1.5) * width
                slot += 1
                if rec is None or not rec.eval.get(key):
                    continue
                bars = ax.bar(pos, rec.eval[key], width, color=MODEL_STYLE[model]["colour"],
                              alpha=alpha, hatch=hatch, edgecolor="black", linewidth=0.5)
                ax.bar_label(bars, fontsize=6, padding=1)
        ax.set_xticks(x, [f"z{i}\n({d} units)" for i, d in zip(x, latent)])
        ax.set(xlabel="latent layer", ylabel="active units",
               title=f"{dataset}, {_layers(len(latent))}, "
                     f"{'BN' if bn else 'no BN'}, {'WU' if wu else 'no WU'}")
        ax.margins(y=0.15)
        ax.legend(handles=[Patch(facecolor=MODEL_STYLE[m]["colour"], edgecolor="black",
                                 alpha=a, hatch=h, label=f"{MODEL_STYLE[m]['label']}: {what}")
                           for m in MODELS for what, h, a in
                           (("KL > 0.01 nats", None, 1.0), ("A_u", "//", 0.45))], fontsize=7)
    return fig


def draw_figures(records: list, out: Path) -> tuple[list, list]:
    """Write test_elbo.png, depth.png and active_units.png where there is something to draw.

    Args:
        records: the runs (``RunRecord``: spec, run folder and evaluation are used).
        out: the results folder.

    Returns:
        (paths written, notes on the figures skipped and why).
    """
    has_depth = len({(r.spec.dataset, r.spec.layers) for r in records}) > \
        len({r.spec.dataset for r in records})
    has_models = {r.spec.model for r in records} == set(MODELS)
    wanted = [("test_elbo", plot_test_elbo, "no run has a logged test ELBO yet"),
              ("depth", plot_depth if has_depth else None,
               "no setting has L_K results for two or more depths"),
              ("active_units", plot_active_units if has_models else None,
               "none of the deepest runs has an evaluation")]
    paths, notes = [], []
    for stem, draw, why in wanted:
        if draw is None:
            continue
        fig = draw(records)
        if fig is None:
            notes.append(f"{stem}.png skipped: {why}")
            continue
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI)
        path = out / f"{stem}.png"
        atomic_write(path, lambda f: f.write(buf.getvalue()))
        paths.append(path)
    return paths, notes
