"""The figures of a run: what each plot shows, the PNG files, the command line's errors."""
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from lvae_np.training import plots, runs, train

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny LVAE (latent 4,2) trained 3 epochs on the 8x8 synthetic data, warm-up 2."""
    out = tmp_path_factory.mktemp("plots") / "run"
    assert train.main(["--dataset", "synthetic", "--epochs", "3", "--warmup-epochs", "2",
                       "--latent", "4,2", "--hidden", "16,8", "--batch-size", "50",
                       "--no-progress", "--out", str(out)]) == 0
    return out


def copy_run(run_dir, tmp_path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(run_dir, dst)
    return dst


def data_axes(fig):
    """The figure's axes other than colour bars."""
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def assert_labelled(ax):
    assert ax.get_xlabel().strip() and ax.get_ylabel().strip() and ax.get_title().strip()


# ----------------------------------------------------------------------------
# Each figure
# ----------------------------------------------------------------------------
def test_bounds_plots_train_and_test_elbo_and_marks_the_end_of_warm_up(run_dir):
    fig = plots.plot_bounds(run_dir)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    assert_labelled(ax)
    assert "nats" in ax.get_ylabel()
    labels = ax.get_legend_handles_labels()[1]
    assert "training ELBO" in labels and "test ELBO" in labels
    # beta is 0, 0.5, 1: it reaches 1 in epoch 3, the line sits between epochs 2 and 3
    warmup = [line for line, label in zip(*ax.get_legend_handles_labels())
              if label.startswith("end of warm-up")]
    assert len(warmup) == 1 and warmup[0].get_xdata()[0] == pytest.approx(2.5)
    elbo = [line for line, label in zip(*ax.get_legend_handles_labels())
            if label == "training ELBO"][0]
    assert list(elbo.get_xdata()) == [1, 2, 3]


def test_bounds_fit_the_axis_to_later_epochs_when_the_first_are_far_below(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    elbo = [-500, -150, -110, -105, -102, -100]
    (run / "metrics.csv").write_text("epoch,beta,train_elbo,train_kl_z1,test_elbo\n" + "".join(
        f"{e},{min(1, (e - 1) / 4)},{v},1.0,{'' if e == 2 else v + 1}\n"   # no test in epoch 2
        for e, v in enumerate(elbo, start=1)))
    ax = plots.plot_bounds(run).axes[0]
    bottom, top = ax.get_ylim()
    assert -115 < bottom < -110 and top > -99
    assert "epochs 1, 2" in ax.texts[0].get_text() and "-500.0" in ax.texts[0].get_text()
    test = [line for line in ax.get_lines() if line.get_label() == "test ELBO"][0]
    assert list(test.get_xdata()) == [1, 3, 4, 5, 6]


def test_kl_heatmap_has_one_row_per_unit_and_one_column_per_epoch(run_dir):
    fig = plots.plot_kl_heatmap(run_dir)
    assert len(fig.axes) == 2                       # the heatmap and its colour bar
    ax, = data_axes(fig)
    assert_labelled(ax)
    image = ax.images[0].get_array()
    assert image.shape == (6, 3)                    # 4 + 2 units, 3 epochs
    colourbar = [a for a in fig.axes if a is not ax][0]
    assert colourbar.get_ylabel() == "log10 KL (nats)"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["z1 (4)", "z2 (2)"]


def test_kl_unit_matrix_groups_units_by_layer_sorted_by_final_kl(run_dir):
    kl, epochs, layers = plots.kl_unit_matrix(run_dir)
    assert layers == [(1, 4), (2, 2)] and list(epochs) == [1, 2, 3]
    rows = plots.read_csv(run_dir / "kl_units.csv")
    for (start, stop), layer in (((0, 4), 1), ((4, 6), 2)):
        final = kl[start:stop, -1]
        assert np.all(np.diff(final) >= 0)         # bottom to top: largest KL on top
        expected = sorted(rows[f"z{layer}_{u}"][-1] for u in range(stop - start))
        np.testing.assert_array_equal(final, expected)
    # the clipped log is what is drawn
    image = plots.plot_kl_heatmap(run_dir).axes[0].images[0].get_array()
    np.testing.assert_allclose(image, np.log10(np.clip(kl, plots.KL_FLOOR, None)))


def test_kl_per_layer_has_bars_at_the_last_epoch_and_lines_over_epochs(run_dir):
    fig = plots.plot_kl_per_layer(run_dir)
    assert len(fig.axes) == 2
    bars, lines = fig.axes
    for ax in (bars, lines):
        assert_labelled(ax)
    assert len(bars.patches) == 2 * 2               # training and test bars for z1, z2
    heights = sorted(p.get_height() for p in bars.patches)
    m = plots.read_csv(run_dir / "metrics.csv")
    expected = sorted(m[f"{split}_kl_z{i}"][-1] for split in ("train", "test") for i in (1, 2))
    np.testing.assert_allclose(heights, expected)
    layer_lines = [line for line in lines.get_lines() if line.get_label() in ("z1", "z2")]
    assert len(layer_lines) == 2
    # layer colours are the same in every figure
    assert layer_lines[0].get_color() == plots.layer_colour(1)
    tick = plots.plot_kl_heatmap(run_dir).axes[0].get_yticklabels()[0]
    assert tick.get_color() == plots.layer_colour(1)


def test_samples_are_a_grid_of_images_without_ticks(run_dir):
    fig = plots.plot_samples(run_dir, n=9, seed=0)
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    assert ax.get_xticks().size == 0 and ax.get_yticks().size == 0 and ax.get_title()
    image = ax.images[0].get_array()
    assert image.shape == (3 * 8 + 2, 3 * 8 + 2)    # 3 x 3 images of 8 x 8, 1-pixel gaps
    assert 0 <= image.min() and image.max() <= 1
    again = plots.plot_samples(run_dir, n=9, seed=0).axes[0].images[0].get_array()
    np.testing.assert_array_equal(image, again)     # seeded


def test_reconstructions_show_test_images_above_their_reconstructions(run_dir):
    fig = plots.plot_reconstructions(run_dir, n=5, seed=1)
    assert len(fig.axes) == 2
    top, bottom = fig.axes
    assert "test images" in top.get_title() and "reconstructions" in bottom.get_title()
    assert top.images[0].get_array().shape == bottom.images[0].get_array().shape == (8, 5 * 9 - 1)
    assert np.isin(top.images[0].get_array(), [0.0, 0.5, 1.0]).all()  # binarised test images


def test_recollected_batch_norm_statistics_and_a_loaded_run_also_work(run_dir):
    run = plots.load_model(run_dir, bn="recollect")
    assert run.epoch == 3 and run.bn == "recollect"
    assert any(not np.array_equal(run.state[k], v)
               for k, v in plots.load_model(run_dir, bn="running").state.items())
    fig = plots.plot_samples(run, n=4)
    assert "re-collected" in fig.axes[0].get_title()
    with pytest.raises(ValueError, match="bn must be"):
        plots.load_model(run_dir, bn="typo")
    with pytest.raises(ValueError, match="n must be"):
        plots.plot_reconstructions(run, n=0)


def test_importing_and_plotting_leave_pyplot_and_the_backend_alone(run_dir):
    # matplotlib.get_backend() would import pyplot itself: read the raw setting
    code = ("import sys, matplotlib; raw = lambda: dict.__getitem__(matplotlib.rcParams, "
            "'backend'); before = raw(); import lvae_np.plots as P; "
            f"P.plot_kl_heatmap({str(run_dir)!r}).savefig(__import__('io').BytesIO()); "
            "assert 'matplotlib.pyplot' not in sys.modules; assert raw() == before")
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------
# Writing files, and the command line
# ----------------------------------------------------------------------------
def test_write_all_writes_five_pngs_to_the_run_folder(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path)
    paths = plots.write_all(run, samples=16)
    assert [p.name for p in paths] == [f"{name}.png" for name in plots.FIGURES]
    for path in paths:
        assert path.parent == run / "figures"
        content = path.read_bytes()
        assert content.startswith(PNG_SIGNATURE) and len(content) > 5000
    assert sorted(p.name for p in (run / "figures").iterdir()) == sorted(p.name for p in paths)


def test_cli_writes_the_figures_and_prints_their_paths(run_dir, tmp_path, capsys):
    out = tmp_path / "figs"
    assert plots.main([str(run_dir), "--out", str(out), "--samples", "4"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(out / f"{name}.png") for name in plots.FIGURES]
    assert all(Path(p).read_bytes().startswith(PNG_SIGNATURE) for p in printed)


def test_cli_help_describes_the_options():
    result = subprocess.run([sys.executable, "-m", "lvae_np.plots", "--help"],
                            capture_output=True, text=True)
    assert result.returncode == 0
    for option in ("RUN_DIR", "--out", "--data-dir", "--samples"):
        assert option in result.stdout


def one_line_error(capsys, argv) -> str:
    assert plots.main([str(a) for a in argv]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lvae_np.plots: error: "), captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    return lines[0]


def test_cli_errors_are_one_line_with_status_2(run_dir, tmp_path, capsys):
    assert "no run folder" in one_line_error(capsys, [tmp_path / "nowhere"])
    run = copy_run(run_dir, tmp_path)
    out = tmp_path / "figs"
    assert "--samples" in one_line_error(capsys, [run, "--samples", "0", "--out", out])
    assert "unrecognized" in one_line_error(capsys, [run, "--bogus"])

    (run / runs.CHECKPOINT).write_bytes(b"not a zip file")
    assert "checkpoint" in one_line_error(capsys, [run, "--out", out])
    (run / runs.CHECKPOINT).unlink()
    assert "no checkpoint" in one_line_error(capsys, [run, "--out", out])
    assert not out.exists()                         # nothing is written when a figure fails

    shutil.copy(run_dir / runs.CHECKPOINT, run / runs.CHECKPOINT)
    header = (run / "kl_units.csv").read_text().splitlines()[0]
    (run / "kl_units.csv").write_text(header + "\n")
    assert "no epochs yet" in one_line_error(capsys, [run, "--out", out])
    (run / "kl_units.csv").write_text("")
    assert "no epochs yet" in one_line_error(capsys, [run, "--out", out])

    (run / "metrics.csv").unlink()
    assert "metrics.csv is missing" in one_line_error(capsys, [run, "--out", out])


def test_cli_reports_data_errors_in_one_line(run_dir, tmp_path, capsys, nan_in_synthetic):
    nan_in_synthetic("test")
    assert "NaN" in one_line_error(capsys, [run_dir, "--out", tmp_path / "figs"])
