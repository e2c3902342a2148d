"""The off-switch probe (lvae_np.experiments.offswitch): what it measures, and its command line."""
import json

import numpy as np
import pytest

from lvae_np import data
from lvae_np.backend import get_backend
from lvae_np.experiments import offswitch
from lvae_np.models import Model, ModelConfig
from lvae_np.training.config import TrainConfig

SMALL = ModelConfig(kind="lvae", x_dim=16, latent=(4, 3, 2), hidden=(8, 8, 8))


def small_inputs(seed=0, n=64):
    rng = np.random.default_rng(seed)
    model = Model(SMALL, get_backend("numpy", dtype="float64", seed=seed))
    params, state = model.init()
    x = (rng.random((n, SMALL.x_dim)) < 0.4).astype(float)
    noise = [rng.standard_normal((n, d)) for d in SMALL.latent]
    return model, params, state, x, noise


def test_probe_reads_the_units_kl_and_variances_the_model_computes():
    model, params, state, x, noise = small_inputs()
    found = offswitch.probe(model, params, state, x, noise, layer=2)
    # the unit KLs as training logs them (another path: loss_and_grads' batch means)
    _, _, stats = model.loss_and_grads(params, state, x, 1.0, noise=noise)
    np.testing.assert_allclose(found["kl"], np.asarray(stats["kl_units"][1]), rtol=1e-12)
    # var_hat: the bottom-up pass's own output for z2
    part, _ = model.bottom_up_forward(params, state, x, training=True)
    np.testing.assert_allclose(found["log_var_hat"], np.log(part.var_hat[1]).mean(axis=0),
                               rtol=1e-12)
    assert len(found["log_var_p"]) == SMALL.latent[1]


def test_a_unit_whose_var_hat_dwarfs_var_p_carries_no_kl():
    """The off-switch itself: var_hat >> var_p makes q follow p, and the unit's KL vanishes."""
    model, params, state, x, noise = small_inputs(seed=1)
    before = offswitch.probe(model, params, state, x, noise, layer=2)
    params = dict(params)
    params["q2.b_var"] = params["q2.b_var"].copy()
    params["q2.b_var"][0] += 60.0            # softplus(.) ~ 60: var_hat of unit 0 huge
    after = offswitch.probe(model, params, state, x, noise, layer=2)
    assert after["log_var_hat"][0] > before["log_var_hat"][0] + 3
    assert before["kl"][0] > 0.01
    assert after["kl"][0] < 0.01 * before["kl"][0]
    np.testing.assert_allclose(after["kl"][1:], before["kl"][1:], rtol=1e-12)


def test_watch_probes_every_few_steps_and_at_each_epochs_end():
    ds = data.load_dataset("synthetic", seed=0, progress=False)
    cfg = TrainConfig(dataset="synthetic", latent=(4, 3, 2), hidden=(8, 8, 8), epochs=2,
                      warmup_epochs=100, batch_size=256, seed=3, backend="numpy")
    record = offswitch.watch(cfg, ds, every=3, n_probe=50, layer=2, progress=False)
    batches = -(-ds.train.shape[0] // cfg.batch_size)
    steps = sorted({0, *range(3, 2 * batches + 1, 3), batches, 2 * batches})
    assert record["step"] == steps
    assert record["epoch"][-1] == 2.0 and record["beta"][0] == 0.0
    assert all(len(k) == 3 for k in record["kl"])
    again = offswitch.watch(cfg, ds, every=3, n_probe=50, layer=2, progress=False)
    assert again == record                     # seeded: the same numbers again


def test_summary_counts_active_units_per_whole_epoch():
    rec = {"epoch": [0.0, 0.5, 1.0, 1.5, 2.0],
           "kl": [[1, 1, 1], [1, 1, 0], [1, 0.005, 0], [1, 0, 0], [0.02, 0, 0]]}
    result = {"layer": 2, "epochs": 2, "probe": 10, "runs": {"paper form": {"0": rec}}}
    lines = offswitch.summary(result)
    assert "| paper form | 0 | 3 | 1 | 1 |" in lines


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "a,b"], "--seeds must be integers"),
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--layer", "1"], "--layer must be 2 to 4"),
    (["--layer", "5"], "--layer must be 2 to 4"),
])
def test_bad_options_are_one_line_errors(argv, message, tmp_path, capsys):
    status = offswitch.main([*argv, "--out", str(tmp_path / "o.json")])
    err = capsys.readouterr().err
    assert status == 2 and message in err and len(err.strip().splitlines()) == 1


def test_an_existing_out_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / "o.json"
    out.write_text(json.dumps({"mine": 1}))
    assert offswitch.main(["--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert json.loads(out.read_text()) == {"mine": 1}
