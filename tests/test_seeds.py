"""Seeded evaluation subsets, the original-code preset in experiments, and summaries over seeds.

Each of these bugs makes a test here fail: a subset that takes the first M
examples or changes from run to run, a subset evaluation stored under the
name of a full or limited one, two runs paired on different examples, a
preset that changes only the run id (or changes the paper's run ids), runs of
a second seed trained or sampled with the first seed, and an across-seed
summary that averages the wrong numbers.
"""
import csv
import json
import math
from pathlib import Path

import numpy
import pytest

from lvae_np.training import evaluate
from lvae_np import experiments as E
from lvae_np.training.config import PRESETS
from lvae_np.experiments.__main__ import main
from lvae_np.training.runs import eval_file_name, subset_indices

TINY = dict(warmup_epochs=1, iw_samples=5, batch_size=50, progress=False)


def tiny(model="lvae", layers=2, **kw):
    """A run small enough for the tests: the 8x8 synthetic data, latent 4(,2), hidden 16(,8)."""
    return E.RunSpec("synthetic", model, (4, 2)[:layers], (16, 8)[:layers], **kw)


def csv_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ----------------------------------------------------------------------------
# Seeded subsets
# ----------------------------------------------------------------------------
def test_a_subset_is_a_seeded_sample_not_the_first_examples():
    a = subset_indices(1000, 100, seed=0)
    assert a.shape == (100,) and len(set(a.tolist())) == 100
    assert numpy.all(numpy.diff(a) > 0) and 0 <= a.min() and a.max() < 1000
    assert numpy.array_equal(a, subset_indices(1000, 100, seed=0))     # same seed, same examples
    assert not numpy.array_equal(a, subset_indices(1000, 100, seed=1))
    assert not numpy.array_equal(a, numpy.arange(100))                 # not the first 100
    assert a.max() > 500                                               # spread over the split
    assert numpy.array_equal(subset_indices(7, 7, seed=3), numpy.arange(7))
    for bad in (0, 8):
        with pytest.raises(ValueError, match="--subset"):
            subset_indices(7, bad, seed=0)


def test_file_names_tell_a_subset_from_a_limit():
    assert eval_file_name("test", 5000, subset=1000, subset_seed=0) == \
        "eval-test-k5000-subset1000-seed0.json"
    assert eval_file_name("test", 5000, 1000) == "eval-test-k5000-first1000.json"
    assert eval_file_name("test", 5000) == "eval-test-k5000.json"
    assert E.eval_path(Path("r"), 10, None, 50, 3).name == "eval-test-k10-subset50-seed3.json"


def test_evaluate_subset_reads_the_permuted_examples_and_records_them(tmp_path, monkeypatch):
    spec = tiny("vae", 1)
    E.run_experiment([spec], epochs=1, runs_dir=tmp_path / "runs", evaluate=False, **TINY)
    run_dir = tmp_path / "runs" / spec.run_id()
    seen = []
    real = evaluate.summarize

    def spy(model, params, state, x, **kw):
        seen.append(numpy.asarray(x))
        return real(model, params, state, x, **kw)

    monkeypatch.setattr(evaluate, "summarize", spy)
    assert evaluate.main([str(run_dir), "--iw-samples", "3", "--subset", "20",
                          "--subset-seed", "4", "--per-example", "--no-progress"]) == 0
    from lvae_np.training.runs import load_run
    test = load_run(run_dir).dataset.test
    assert numpy.array_equal(seen[0], test[subset_indices(len(test), 20, 4)])
    stored = json.loads((run_dir / "eval-test-k3-subset20-seed4.json").read_text())
    assert (stored["n"], stored["subset"], stored["subset_seed"], stored["split_size"],
            stored["limit"]) == (20, 20, 4, len(test), None)
    assert len(stored["lk_per_example"]) == 20
    assert not (run_dir / "eval-test-k3.json").exists()


def test_evaluate_refuses_a_limit_with_a_subset_in_one_line(tmp_path, capsys):
    assert evaluate.main([str(tmp_path), "--limit", "5", "--subset", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--limit" in err and "--subset" in err and "\n" not in err


def test_pairs_on_other_subsets_are_refused_in_one_line():
    def rec(model, subset_seed):
        r = E.RunRecord(tiny(model), f"id-{model}", Path("."), 1)
        r.eval = {"lk": -1.5, "lk_per_example": [-1.0, -2.0], "epoch": 1, "limit": None,
                  "subset": 2, "subset_seed": subset_seed, "split_size": 200}
        return r

    assert len(E.paired_differences([rec("vae", 0), rec("lvae", 0)])) == 1
    with pytest.raises(E.ExperimentError) as err:
        E.paired_differences([rec("vae", 0), rec("lvae", 1)])
    msg = str(err.value)
    assert "id-vae" in msg and "id-lvae" in msg and "subset_seed 0 and 1" in msg
    assert "\n" not in msg


# ----------------------------------------------------------------------------
# The original-code preset
# ----------------------------------------------------------------------------
def test_the_preset_gives_every_run_its_settings_and_a_run_id_suffix():
    paper = E.RunSpec.paper("mnist", "lvae", 5)
    orig = E.RunSpec.paper("mnist", "lvae", 5, kl="mc")
    orig = E.RunSpec(**{**orig.__dict__, "preset": "original-code"})
    assert paper.run_id() == "mnist-lvae-L5-bn-wu"                 # the paper's: unchanged
    assert orig.run_id() == "mnist-lvae-L5-bn-wu-mc-orig"
    assert orig.run_id(2) == "mnist-lvae-L5-bn-wu-mc-orig-seed2"
    cfg = E.Settings(epochs=7, warmup_epochs=3, batch_size=64).config(orig, seed=2)
    for name, value in PRESETS["original-code"].items():
        assert getattr(cfg, name) == value, name
    assert (cfg.epochs, cfg.warmup_epochs, cfg.batch_size, cfg.seed) == (7, 3, 64, 2)
    plain = E.Settings().config(paper)
    assert (plain.lr, plain.head_batch_norm, plain.drop_last) == (0.002, False, False)
    with pytest.raises(ValueError, match="preset"):
        E.RunSpec(preset="nonsense")


def test_cli_preset_lists_the_suffixed_runs_and_keeps_kl_overridable(tmp_path, capsys):
    common = ["mnist-headline", "--list", "--runs-dir", str(tmp_path)]
    assert main(common + ["--preset", "original-code"]) == 0
    out = capsys.readouterr().out
    assert "mnist-vae-L5-bn-wu-mc-orig " in out and "mnist-lvae-L5-bn-wu-mc-orig " in out
    assert main(common + ["--preset", "original-code", "--kl", "analytic"]) == 0
    assert "mnist-lvae-L5-bn-wu-orig " in capsys.readouterr().out
    assert main(common + ["--seeds", "0,2"]) == 0
    out = capsys.readouterr().out
    assert "mnist-lvae-L5-bn-wu " in out and "mnist-lvae-L5-bn-wu-seed2 " in out
    assert main(common + ["--seeds", "0,x"]) == 2
    assert main(common + ["--seeds", "1", "--seed", "2"]) == 2
    assert main(["mnist-headline", "--eval-limit", "5", "--eval-subset", "5", "--list"]) == 2


def test_a_preset_experiment_trains_with_the_preset_and_says_so(tmp_path):
    spec = E.RunSpec(**{**tiny("vae", 1).__dict__, "kl": "mc", "preset": "original-code"})
    report = E.run_experiment([spec], epochs=1, runs_dir=tmp_path / "runs",
                              out=tmp_path / "out", name="tiny", **TINY)
    assert report.exit_status == 0
    run_dir = tmp_path / "runs" / "synthetic-vae-L1-bn-wu-z4-h16-mc-orig"
    saved = json.loads((run_dir / "config.json").read_text())
    for name, value in PRESETS["original-code"].items():
        assert saved[name] == value, name
    md = (tmp_path / "out" / "results.md").read_text()
    assert "Protocol: the released code's (--preset original-code" in md
    assert md.startswith("Produced by `python -m lvae_np.experiments tiny")
    assert " --preset original-code --kl mc " in md.splitlines()[0]


# ----------------------------------------------------------------------------
# Several seeds
# ----------------------------------------------------------------------------
def test_spread_over_seeds():
    mean, sd, se = E.seeds.spread([1.0, 2.0, 4.0])
    assert mean == pytest.approx(7 / 3)
    assert sd == pytest.approx(math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2
                                          + (4 - 7 / 3) ** 2) / 2))
    assert se == pytest.approx(sd / math.sqrt(3))
    assert E.seeds.spread([5.0]) == (5.0, None, None)


def test_seeds_run_each_run_per_seed_and_summarise_across_them(tmp_path):
    specs = [tiny("vae", 2), tiny("lvae", 2)]
    report = E.run_experiment(specs, epochs=1, runs_dir=tmp_path / "runs", seeds=(0, 1),
                              eval_subset=40, eval_subset_seed=5, out=tmp_path / "out",
                              name="tiny", jobs=2, **TINY)
    assert report.exit_status == 0
    ids = sorted(r.run_id for r in report.records)
    assert ids == ["synthetic-lvae-L2-bn-wu-z4.2-h16.8", "synthetic-lvae-L2-bn-wu-z4.2-h16.8-seed1",
                   "synthetic-vae-L2-bn-wu-z4.2-h16.8", "synthetic-vae-L2-bn-wu-z4.2-h16.8-seed1"]
    ev = {}
    for rec in report.records:
        assert json.loads((rec.run_dir / "config.json").read_text())["seed"] == rec.seed
        log = (rec.run_dir / E.LOG).read_text()
        assert f"--seed {rec.seed} --per-example" in log       # L_K sampled with the run's seed
        ev[rec.spec.model, rec.seed] = json.loads(
            (rec.run_dir / "eval-test-k5-subset40-seed5.json").read_text())
    assert ev["vae", 0]["lk"] != ev["vae", 1]["lk"]             # the seeds made other runs

    rows = {r["quantity"]: r for r in csv_rows(tmp_path / "out" / "seeds.csv")}
    assert set(rows) == {"VAE", "LVAE", "LVAE - VAE"}
    for model in ("vae", "lvae"):
        a, b = ev[model, 0]["lk"], ev[model, 1]["lk"]
        row = rows[model.upper()]
        assert (row["n_seeds"], row["seeds"]) == ("2", "0 1")
        assert float(row["mean"]) == pytest.approx((a + b) / 2, abs=1e-12)
        assert float(row["sd"]) == pytest.approx(abs(a - b) / math.sqrt(2), abs=1e-12)
        assert float(row["stderr"]) == pytest.approx(abs(a - b) / 2, abs=1e-12)
    diffs = [sum(lv - v for lv, v in zip(ev["lvae", s]["lk_per_example"],
                                          ev["vae", s]["lk_per_example"])) / 40 for s in (0, 1)]
    row = rows["LVAE - VAE"]
    assert float(row["mean"]) == pytest.approx(sum(diffs) / 2, abs=1e-9)
    assert float(row["sd"]) == pytest.approx(abs(diffs[0] - diffs[1]) / math.sqrt(2), abs=1e-9)

    md = (tmp_path / "out" / "results.md").read_text()
    assert "seeds 0, 1 (each run once per seed)" in md
    assert "40 test examples drawn at random (a permutation seeded with 5" in md
    assert "Across seeds:" in md and "| LVAE - VAE | 2 (0 1) |" in md
    assert "Protocol: the paper's" in md
    assert "--seeds 0,1" in md.splitlines()[0] and "--eval-subset 40" in md.splitlines()[0]

    # results.csv says each run's seed and preset (none: the paper's protocol)
    table = {r["run_id"]: r for r in csv_rows(tmp_path / "out" / "results.csv")}
    assert {(r["seed"], r["preset"]) for r in table.values()} == {("0", ""), ("1", "")}
    assert table["synthetic-vae-L2-bn-wu-z4.2-h16.8-seed1"]["seed"] == "1"

    # each run's records beside the tables, with no folder of this machine in them
    for rec in report.records:
        copy = tmp_path / "out" / "runs" / rec.run_id
        assert sorted(p.name for p in copy.iterdir()) == [
            "config.json", "eval-test-k5-subset40-seed5.json", "kl_units.csv", "metrics.csv",
            "status.json"]
        for name in ("metrics.csv", "kl_units.csv"):
            assert (copy / name).read_text() == (rec.run_dir / name).read_text()
        stored = json.loads((rec.run_dir / "eval-test-k5-subset40-seed5.json").read_text())
        published = json.loads((copy / "eval-test-k5-subset40-seed5.json").read_text())
        assert published["lk_per_example"] == stored["lk_per_example"]
        assert published["run"] == f"<runs-dir>/{rec.run_id}"
        assert str(tmp_path) not in (copy / "eval-test-k5-subset40-seed5.json").read_text()
        config = json.loads((copy / "config.json").read_text())
        assert config["seed"] == rec.seed and config["epochs"] == 1
        assert str(tmp_path) not in json.dumps(config)


def test_published_records_name_no_folder_of_this_machine(tmp_path):
    from lvae_np.experiments.records import copy_text
    src = tmp_path / "eval.json"
    src.write_text(json.dumps({
        "data": "MNIST (LeCun, Cortes and Burges), files from /home/me/data/mnist",
        "run": "/home/me/runs/experiments/mnist-vae-L5-bn-wu", "other": "runs/experimentsX",
        "nested": [{"data_variant": "OMNIGLOT, files from /d/omniglot"}], "lk": -81.5}))
    copy_text(src, tmp_path / "out.json", ("/home/me/runs/experiments", "runs/experiments"))
    assert json.loads((tmp_path / "out.json").read_text()) == {
        "data": "MNIST (LeCun, Cortes and Burges), files from <data-dir>/mnist",
        "run": "<runs-dir>/mnist-vae-L5-bn-wu", "other": "runs/experimentsX",
        "nested": [{"data_variant": "OMNIGLOT, files from <data-dir>/omniglot"}], "lk": -81.5}
