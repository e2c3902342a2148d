"""The three configurations' claims table (lvae_np.experiments.configs) from evaluation files."""
import json

import pytest

from lvae_np.experiments import configs


def write_eval(results, experiment, model, suffix, seed, units, kl, lk):
    folder = results / experiment / "runs" / (f"mnist-{model}-L5-bn-wu{suffix}"
                                              + (f"-seed{seed}" if seed else ""))
    folder.mkdir(parents=True)
    (folder / configs.EVAL_FILE).write_text(json.dumps(
        {"active_units_kl": units, "kl": kl, "lk": sum(lk) / len(lk), "lk_per_example": lk}))


def fill(results, experiment, suffix, seeds, lvae_units, vae_units, lvae_lk, vae_lk):
    for seed in seeds:
        write_eval(results, experiment, "lvae", suffix, seed, lvae_units,
                   [10.0, 5.0, 2.0, 1.0, 1.0], lvae_lk)
        write_eval(results, experiment, "vae", suffix, seed, vae_units,
                   [12.0, 3.0, 1.0, 0.5, 0.0], vae_lk)


def test_each_claim_is_judged_per_configuration(tmp_path):
    # paper form: the VAE keeps more units; head BN: the LVAE does; the preset: one seed only
    fill(tmp_path, "mnist-headline", "", (0, 1), [40, 5, 2, 1, 1], [50, 15, 5, 2, 0],
         [-80.0, -81.0, -82.0, -83.0], [-80.0, -81.1, -81.9, -83.0])
    fill(tmp_path, "mnist-headline-headbn", "-headbn", (0, 1), [60, 30, 14, 6, 4],
         [48, 20, 7, 4, 2], [-80.0, -81.0, -82.0, -83.0], [-80.5, -81.6, -82.4, -83.5])
    fill(tmp_path, "mnist-headline-orig", "-mc-orig", (0,), [64, 32, 16, 8, 4],
         [47, 22, 7, 4, 2], [-80.0] * 4, [-80.1] * 4)
    rows = {r["config"]: r for r in configs.table(tmp_path, (0, 1))}
    assert rows["paper form"]["units"] == "does not hold"
    assert rows["paper form"]["lk"] == "cannot tell"          # differences within 2 s.e.
    assert rows["paper form"]["share"] == "holds"             # 47% of the KL above z1 against 27%
    assert rows["head batch norm"]["units"] == "holds"
    assert rows["head batch norm"]["lk"] == "holds"
    assert rows["original-code preset"]["missing"] == [1]
    assert rows["original-code preset"]["units"].startswith("not evaluated in every seed")
    diff, se = rows["head batch norm"]["seeds"][0]["diff"]
    assert diff == pytest.approx(0.5) and se == pytest.approx(0.0408248, rel=1e-5)
    text = configs.markdown(list(rows.values()), (0, 1))
    assert "| head batch norm | 0 | 60/30/14/6/4 (54) | 48/20/7/4/2 (33) |" in text
    assert "| original-code preset | 1 | not evaluated |" in text


def test_evaluations_of_different_examples_do_not_pair(tmp_path):
    write_eval(tmp_path, "mnist-headline", "lvae", "", 0, [1] * 5, [1.0] * 5, [-80.0, -81.0])
    write_eval(tmp_path, "mnist-headline", "vae", "", 0, [1] * 5, [1.0] * 5, [-80.0])
    with pytest.raises(configs.ConfigsError, match="same examples"):
        configs.table(tmp_path, (0,))


def test_the_command_keeps_an_existing_file_and_says_why(tmp_path, capsys):
    out = tmp_path / "table.md"
    out.write_text("mine")
    assert configs.main(["--results-dir", str(tmp_path), "--out", str(out)]) == 2
    assert out.read_text() == "mine" and "exists" in capsys.readouterr().err
    bad = tmp_path / "mnist-headline" / "runs" / "mnist-vae-L5-bn-wu"
    bad.mkdir(parents=True)
    (bad / configs.EVAL_FILE).write_text("{not json")
    assert configs.main(["--results-dir", str(tmp_path), "--seeds", "0"]) == 2
    err = capsys.readouterr().err
    assert "cannot be read" in err and err.count("\n") == 1
