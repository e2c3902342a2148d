"""The options lvae_np.train and lvae_np.experiments share: one definition, one check, one rule.

Each shared option (--epochs, --warmup-epochs, --warmup-steps, --kl, --preset,
--batch-size, --seed, --backend, --data-dir, --no-progress) is built from its
one entry in ``lvae_np.training.options.OPTIONS``: a changed entry shows in
both commands' help. Its values go through one check
(``config.check_options``), so a bad value gives the same one-line error from
both commands, and the warm-up rule (steps or epochs, not both; steps alone
set the epochs' warm-up to 0) is applied once, whatever way the option is
spelt on the command line.
"""
import argparse
import functools
from dataclasses import fields
from pathlib import Path

import pytest

from lvae_np.experiments import __main__ as experiments_cli
from lvae_np.experiments.specs import TRAINING_SETTINGS, Settings
from lvae_np.training import options, train
from lvae_np.training.config import PRESETS, TrainConfig, option_flag
from lvae_np.training.runs import saved_meta

SHARED = ("epochs", "warmup_epochs", "warmup_steps", "kl", "preset", "batch_size", "seed",
          "backend", "data_dir", "no_progress")
SMALL = ["--dataset", "synthetic", "--latent", "4,2", "--hidden", "16,8", "--batch-size", "50",
         "--warmup-epochs", "1", "--no-progress"]


def actions(parser) -> dict:
    """dest -> the parser's action, for its options."""
    return {a.dest: a for a in parser._actions if a.option_strings}


def parsers() -> tuple:
    return train.build_parser(), experiments_cli.build_parser()


def stderr_message(capsys, prog: str) -> str:
    """The one stderr line of a failed command, without ``prog: error:``."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
    return lines[0][len(f"{prog}: error: "):]


def test_the_shared_options_are_the_ones_both_commands_have():
    train_options, experiment_options = (set(actions(p)) for p in parsers())
    # --out and --iw-samples share a name only: a run folder and the training objective's
    # samples in lvae_np.train, the results folder and the test L_k's samples here
    assert train_options & experiment_options == set(SHARED) | {"out", "iw_samples", "help"}
    assert set(experiments_cli.RUN_OPTIONS) | {"no_progress"} == set(SHARED)


def test_every_config_field_has_one_option_definition():
    assert set(options.OPTIONS) == ({f.name for f in fields(TrainConfig)} - {"data_variant"}
                                    | {"preset", "no_progress"})
    assert set(actions(train.build_parser())) >= set(options.OPTIONS)


def test_both_commands_build_each_shared_option_from_its_one_definition(monkeypatch):
    for name in SHARED:
        monkeypatch.setitem(options.OPTIONS, name, options.Option(f"<the one help of {name}>"))
    for parser in parsers():
        found = actions(parser)
        for name in SHARED:
            assert found[name].help.startswith(f"<the one help of {name}>"), (name, parser.prog)
        assert "<the one help of warmup_steps>" in parser.format_help()


def test_shared_options_have_the_same_spelling_type_and_choices_in_both_commands():
    train_actions, experiment_actions = (actions(p) for p in parsers())
    for name in SHARED:
        a, b = train_actions[name], experiment_actions[name]
        assert a.option_strings == b.option_strings == [option_flag(name)], name
        assert (a.type, a.nargs, a.metavar, type(a)) == (b.type, b.nargs, b.metavar, type(b)), name
        assert a.help.split(";")[0] == b.help.split(";")[0], name   # then each command's note
        if name == "preset":   # the experiments offer the presets that have a run-id suffix
            assert set(b.choices) < set(a.choices) == set(PRESETS)
            assert "paper-mnist" not in b.help and "paper-mnist:" in a.help
        else:
            assert a.choices == b.choices, name


def test_each_command_shows_its_own_defaults(monkeypatch):
    train_actions, experiment_actions = (actions(p) for p in parsers())
    for name in TRAINING_SETTINGS:
        assert train_actions[name].default == getattr(TrainConfig(), name), name
        assert experiment_actions[name].default == getattr(Settings(), name), name
    assert experiment_actions["kl"].default is None   # each run keeps its own estimator
    # a default of the experiments' own, shown in their help only
    monkeypatch.setattr(experiments_cli, "Settings", functools.partial(Settings, epochs=77))
    assert "(default: 77)" in experiments_cli.build_parser().format_help()
    assert "(default: 77)" not in train.build_parser().format_help()


@pytest.mark.parametrize("argv, words", [
    (["--warmup-steps", "10", "--warmup-epochs", "3"],
     "--warmup-steps 10 and --warmup-epochs 3: give the warm-up in steps or in epochs, not both"),
    (["--warmup-steps", "-1"], "--warmup-steps must be >= 0, got -1"),
    (["--warmup-epochs", "-2"], "--warmup-epochs must be >= 0, got -2"),
    (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    (["--seed", "-1"], "--seed must be >= 0, got -1"),
    (["--epochs", "0"], "--epochs 0 trains nothing"),
    (["--epochs", "2.5"], "argument --epochs: invalid int value: '2.5'"),
    (["--backend", "tpu"], "argument --backend: invalid choice: 'tpu'"),
])
def test_a_bad_shared_value_gives_the_same_one_line_error_from_both_commands(
        argv, words, tmp_path, capsys):
    assert train.main(SMALL + ["--out", str(tmp_path / "run")] + argv) == 2
    from_train = stderr_message(capsys, "lvae_np.train")
    assert experiments_cli.main(["--list", "--runs-dir", str(tmp_path / "runs")] + argv) == 2
    from_experiments = stderr_message(capsys, "lvae_np.experiments")
    assert words in from_train
    assert from_train == from_experiments
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("spelling", [["--warmup-steps", "10"], ["--warmup-steps=10"],
                                      ["--warmup-s", "10"]])
def test_warmup_steps_alone_replace_the_epochs_warmup_in_both_commands(spelling):
    cfg, _ = train.parse_args(spelling)
    assert (cfg.warmup_steps, cfg.warmup_epochs) == (10, 0)
    cfg, _ = train.parse_args(["--preset", "paper-mnist"] + spelling)
    assert (cfg.warmup_steps, cfg.warmup_epochs) == (10, 0)
    _, settings = experiments_cli.parse_args(spelling)
    assert (settings.warmup_steps, settings.warmup_epochs) == (10, 0)
    # given both, the rule refuses them (above); given neither, the defaults stand
    assert (train.parse_args([])[0].warmup_epochs,
            experiments_cli.parse_args([])[1].warmup_epochs) == (200, 200)


def test_the_options_a_command_line_gives_are_known_however_spelt():
    _, args = train.parse_args(["--out", "x", "--resume", "--epoch", "5", "--no-batch-norm",
                                "--lr=0.01"])
    assert options.given(args) == {"epochs", "batch_norm", "lr"}
    _, args = train.parse_args(["--preset", "original-code"])   # a preset's values are not given
    assert options.given(args) == {"preset"} and args.lr == PRESETS["original-code"]["lr"]
    assert options.given(argparse.Namespace()) == set()


def test_resume_takes_an_abbreviated_epochs(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert train.main(SMALL + ["--epochs", "1", "--out", str(run_dir)]) == 0
    assert train.main(["--out", str(run_dir), "--resume", "--epoch", "2", "--no-progress"]) == 0
    assert saved_meta(Path(run_dir))["epoch"] == 2
    assert "note: --resume keeps" not in capsys.readouterr().out
