"""The run folder's contract: the config record, the status file, saved meta, loading a run."""
import json
import os

import numpy as np
import pytest

from lvae_np.training import checkpoint, config, runs, train
from lvae_np.training.checkpoint import CheckpointError
from lvae_np.training.config import TrainConfig
from lvae_np.models import PAPER_HIDDEN, PAPER_LATENT


# ----------------------------------------------------------------------------
# The config record
# ----------------------------------------------------------------------------
def test_defaults_and_the_paper_preset_are_the_papers_sizes():
    assert (TrainConfig().latent, TrainConfig().hidden) == (PAPER_LATENT, PAPER_HIDDEN)
    preset = config.PRESETS["paper-mnist"]
    assert (preset["latent"], preset["hidden"]) == ((64, 32, 16, 8, 4), (512, 256, 128, 64, 32))


def test_config_round_trips_through_json():
    cfg = TrainConfig(model="vae", latent=(4, 2), hidden=(16, 8), lr=1e-3, kl="mc",
                      data_variant="synthetic")
    record = json.loads(json.dumps(config.config_as_dict(cfg)))
    assert record["latent"] == [4, 2]                       # as config.json stores it
    assert config.config_from_meta({"config": record}) == cfg


def test_config_from_meta_ignores_unknown_keys_and_fills_missing_ones():
    got = config.config_from_meta({"config": {"model": "vae", "latent": [3], "hidden": [5],
                                              "a_setting_from_elsewhere": 1}})
    assert got == TrainConfig(model="vae", latent=(3,), hidden=(5,))


@pytest.mark.parametrize("meta", [{}, {"config": None}, {"config": [1]}, None,
                                  {"config": {"latent": 4}}])
def test_config_from_meta_rejects_a_missing_or_malformed_config(meta):
    with pytest.raises(ValueError) as err:
        config.config_from_meta(meta)
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------
# The status file
# ----------------------------------------------------------------------------
def test_status_round_trip(tmp_path):
    assert runs.read_status(tmp_path) is None
    runs.write_status(tmp_path, "training", 0)
    assert runs.read_status(tmp_path) == {"state": "training", "epoch": 0}
    runs.write_status(tmp_path, "interrupted", 3, batch=7)
    assert json.loads((tmp_path / runs.STATUS).read_text()) == \
        {"state": "interrupted", "epoch": 3, "batch": 7}
    assert runs.read_status(tmp_path) == {"state": "interrupted", "epoch": 3, "batch": 7}
    assert [p.name for p in tmp_path.iterdir()] == [runs.STATUS]  # no temporary file left


def test_an_unknown_state_is_refused(tmp_path):
    with pytest.raises(ValueError, match="state must be one of training, done"):
        runs.write_status(tmp_path, "finished", 2)
    assert not (tmp_path / runs.STATUS).exists()


@pytest.mark.parametrize("text", ["", "{", "[]", '{"state": "done"}', '{"epoch": 2}',
                                  '{"state": "finished", "epoch": 2}',
                                  '{"state": "done", "epoch": "2"}',
                                  '{"state": "done", "epoch": true}'])
def test_an_unreadable_status_is_none(tmp_path, text):
    (tmp_path / runs.STATUS).write_text(text)
    assert runs.read_status(tmp_path) is None


# ----------------------------------------------------------------------------
# Saved meta and loading a run
# ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny VAE without batch norm, one epoch on the synthetic data, 100 held out."""
    out = tmp_path_factory.mktemp("runs") / "run"
    assert train.main(["--dataset", "synthetic", "--model", "vae", "--no-batch-norm",
                       "--epochs", "1", "--latent", "4,2", "--hidden", "16,8",
                       "--validation", "100", "--batch-size", "50", "--no-progress",
                       "--out", str(out)]) == 0
    return out


def test_saved_meta(run_dir, tmp_path):
    meta = runs.saved_meta(run_dir)
    assert meta["epoch"] == 1 and meta["config"]["model"] == "vae"
    assert runs.saved_meta(tmp_path) is None                     # no checkpoint
    (tmp_path / runs.CHECKPOINT).write_bytes(b"not an archive")
    assert runs.saved_meta(tmp_path) is None                     # unreadable


def test_load_run_builds_the_trained_model(run_dir):
    run = runs.load_run(run_dir, backend="numpy")
    saved = checkpoint.load(run_dir / runs.CHECKPOINT)
    assert run.config == config.config_from_meta(saved["meta"]) and run.meta == saved["meta"]
    assert run.epoch == 1 and run.bn == "running" and run.state == {}
    assert (run.model.config.kind, run.model.config.latent, run.model.config.batch_norm) == \
        ("vae", (4, 2), False)
    assert run.model.backend.name == "numpy" and run.model.backend.dtype == np.float32
    assert set(run.params) == set(saved["params"])
    for k, v in saved["params"].items():
        np.testing.assert_array_equal(run.params[k], v)
    assert run.dataset.valid.shape[0] == 100 and run.dataset.train.shape[0] == 900


def test_load_run_errors_name_the_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        runs.load_run(tmp_path)
    checkpoint.save(tmp_path / runs.CHECKPOINT, params={"w": np.ones(2)}, state={},
                    opt_state={"t": 0, "m": {"w": np.ones(2)}, "v": {"w": np.ones(2)}},
                    meta={"epoch": 0})
    with pytest.raises(CheckpointError, match="has no run config") as err:
        runs.load_run(tmp_path)
    assert str(tmp_path / runs.CHECKPOINT) in str(err.value)


def test_the_evaluation_training_set_is_binarised_once_and_reproducibly(run_dir):
    ds = runs.load_run(run_dir, backend="numpy").dataset
    assert ds.dynamic_binarization
    full, first = runs.evaluation_train_set(ds), runs.evaluation_train_set(ds, 10)
    assert set(np.unique(full)) <= {0.0, 1.0} and full.shape == ds.train.shape
    np.testing.assert_array_equal(first, full[:10])
    np.testing.assert_array_equal(full, runs.evaluation_train_set(ds))
    # each pixel is on with probability its grey level
    grey = ds.train
    assert abs(full.mean() - grey.mean()) < 0.01


def test_eval_file_names():
    assert runs.eval_file_name("test", 5000) == "eval-test-k5000.json"
    assert runs.eval_file_name("valid", 0, 7) == "eval-valid-k0-first7.json"


# ----------------------------------------------------------------------------
# Checking a config, a checkpoint's run, the lock
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("change,match", [
    (dict(model="iwae"), "--model must be one of lvae, vae, got 'iwae'"),
    (dict(latent=("4", ",", "2")), "--latent must be positive integers"),
    (dict(latent=(4, 0), hidden=(8, 8)), "--latent must be positive integers"),
    (dict(latent=(4, 2)), "--latent has 2 layers but --hidden has 5"),
    (dict(batch_size=0), "--batch-size must be >= 1, got 0"),
    (dict(epochs=2.5), "--epochs must be an integer, got 2.5"),
    (dict(seed=-1), "--seed must be >= 0, got -1"),
    (dict(lr=float("nan")), "--lr must be > 0"),
    (dict(max_grad_norm=float("inf")), "--max-grad-norm must be >= 0 (a finite number"),
    (dict(batch_norm=1), "--batch-norm must be true or false"),
    (dict(backend="gpu"), "--backend must be one of"),
])
def test_check_config_names_the_option(change, match):
    config.check_config(TrainConfig())
    with pytest.raises(ValueError, match=match.replace("(", r"\(")):
        config.check_config(TrainConfig(**change))


def test_a_checkpoint_of_another_run_than_config_json_is_refused(run_dir):
    ckpt, cfg = runs.read_checkpoint(run_dir)
    runs.check_same_run(run_dir, cfg)
    runs.check_same_run(run_dir, TrainConfig(**{**cfg.__dict__, "epochs": 9,
                                                "backend": "numpy", "data_dir": "/x"}))
    with pytest.raises(CheckpointError, match="its seed is 1, .*config.json says 0"):
        runs.check_same_run(run_dir, TrainConfig(**{**cfg.__dict__, "seed": 1}))


def test_the_data_dir_of_a_run(tmp_path):
    assert runs.data_dir_of(TrainConfig(data_dir=str(tmp_path))) == str(tmp_path)
    assert runs.data_dir_of(TrainConfig(data_dir=str(tmp_path / "gone"))) is None
    assert runs.data_dir_of(TrainConfig(data_dir=str(tmp_path)), "given") == "given"


def test_the_run_lock(tmp_path):
    from lvae_np.training.runlock import RunInUse, RunLock

    with RunLock(tmp_path) as lock:
        assert (tmp_path / runs.LOCK).read_text().split()[0] == str(os.getpid())
        with pytest.raises(RunInUse, match=f"in use by another lvae_np.train \\(process "
                                           f"{os.getpid()} on "):
            RunLock(tmp_path).acquire()
        assert lock.fd is not None
    assert not (tmp_path / runs.LOCK).exists()
    (tmp_path / runs.LOCK).write_text("12345 elsewhere\n")  # left by a killed process
    with RunLock(tmp_path):
        assert (tmp_path / runs.LOCK).read_text().split()[0] == str(os.getpid())
