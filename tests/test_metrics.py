"""Active-unit counts and the run log."""
import numpy as np

from lvae_np import metrics as M


def test_active_units_counts_units_whose_mean_varies_over_inputs():
    rng = np.random.default_rng(0)
    means = np.zeros((1000, 4))
    means[:, 0] = rng.normal(0, 1.0, 1000)    # variance 1: active
    means[:, 1] = rng.normal(5, 0.05, 1000)   # variance 0.0025: inactive, whatever its mean
    means[:, 2] = rng.normal(0, 0.2, 1000)    # variance 0.04: active
    assert M.active_units(means) == 2


def test_kl_active_units_uses_the_threshold():
    assert M.kl_active_units(np.array([0.0, 0.009, 0.011, 3.0])) == 2


def test_run_log_round_trip_and_truncate(tmp_path):
    log = M.RunLog(tmp_path, (2, 1))
    for epoch in (1, 2, 3):
        log.append({"epoch": epoch, "beta": 0.5, "train_elbo": -float(epoch)},
                   [epoch, 0.1, 0.2, 0.3])
    again = M.RunLog(tmp_path, (2, 1))
    assert [r["epoch"] for r in again.rows] == ["1", "2", "3"]
    assert again.rows[0]["test_lk"] == ""  # not estimated that epoch
    again.truncate(2)
    again.append({"epoch": 3, "beta": 1.0}, [3, 0.0, 0.0, 0.0])
    final = M.RunLog(tmp_path, (2, 1))
    assert [r["beta"] for r in final.rows] == ["0.5", "0.5", "1.0"]
    assert list(final.unit_rows[0]) == ["epoch", "z1_0", "z1_1", "z2_0"]
