"""Active-unit counts, the test-set summary, batch-norm re-collection and the run log."""
import numpy as np
import pytest

from lvae_np.training import metrics as M
from lvae_np.backend import get_backend
from lvae_np.models import Model, ModelConfig


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


# ----------------------------------------------------------------------------
# The one test-set summary (training log and lvae_np.evaluate)
# ----------------------------------------------------------------------------
def _tiny(kind="lvae", seed=0):
    """A small float64 model with trained-looking (random, non-zero) parameters and inputs."""
    model = Model(ModelConfig(kind=kind, x_dim=12, latent=(3, 2), hidden=(8, 6)),
                  get_backend("numpy", dtype="float64", seed=seed))
    params, state = model.init()
    rng = np.random.default_rng(seed)
    params = {k: v + 0.3 * rng.standard_normal(v.shape) for k, v in params.items()}
    x = (rng.random((37, 12)) < 0.4).astype(np.float64)
    return model, params, state, x


@pytest.mark.parametrize("kind", ["vae", "lvae"])
def test_summary_terms_add_up_and_counts_are_in_range(kind):
    model, params, state, x = _tiny(kind)
    s = M.summarize(model, params, state, x, kl="analytic", batch_size=10, au_samples=3,
                    iw_samples=20)
    assert s.n == 37 and len(s.kl) == 2 and (s.au_samples, s.iw_samples) == (3, 20)
    # ELBO = E[log p(x|z_1)] - sum_i KL_i, each averaged over examples and samples
    assert s.elbo == pytest.approx(s.rec - sum(s.kl), rel=1e-12)
    assert all(k > 0 for k in s.kl)
    assert [0 <= a <= d for a, d in zip(s.active_units + s.active_units_kl, [3, 2, 3, 2])] \
        == [True] * 4
    assert s.lk.shape == (37,) and np.isfinite(s.lk).all()
    assert s.lk.mean() > s.elbo  # L_20 is a tighter bound than the ELBO (by far, untrained)


def test_summary_batches_see_every_example_once():
    """Batch size changes only which noise goes with which example, not the examples.

    The top layer's posterior mean does not depend on the noise (it comes from x
    alone), so its active units are the same for every batching and sample count.
    """
    model, params, state, x = _tiny("lvae")
    counts = set()
    for batch_size, au in ((37, 1), (5, 1), (8, 4)):
        s = M.summarize(model, params, state, x, kl="analytic", batch_size=batch_size,
                        au_samples=au)
        means = model.forward(params, state, x, model.noise(37), training=False)[0].mu_q[1]
        counts.add((s.active_units[1], M.active_units(means)))
        assert s.n == 37 and s.lk is None
    assert len(counts) == 1 and len({c for pair in counts for c in pair}) == 1


def test_metrics_row_names_columns_of_metrics_csv():
    model, params, state, x = _tiny("vae")
    row = M.test_metrics(model, params, state, x, "mc", batch_size=16)
    assert set(row) == {"test_elbo", "test_rec", "test_kl_z1", "test_kl_z2", "au_z1", "au_z2",
                        "au_kl_z1", "au_kl_z2"}
    assert set(row) < set(M.columns(2))
    with_lk = M.test_metrics(model, params, state, x, "mc", iw_samples=5)
    assert set(with_lk) - set(row) == {"test_lk", "lk_samples"} and with_lk["lk_samples"] == 5
    assert set(with_lk) < set(M.columns(2))


def test_recollected_batch_norm_statistics_are_the_mean_of_the_batch_statistics():
    model, params, state, x = _tiny("lvae")
    rng_state = model.backend.random.get_state()  # the same noise for both computations
    got = M.recollect_bn_state(model, params, state, x, batch_size=10)
    model.backend.random.set_state(rng_state)
    batches = [x[i:i + 10] for i in range(0, 37, 10)]
    per_batch = [model.forward(params, state, b, model.noise(len(b)), training=True,
                               bn_momentum=1.0)[0].state for b in batches]
    assert set(got) == set(state)
    for name in state:
        np.testing.assert_allclose(got[name], np.mean([s[name] for s in per_batch], axis=0),
                                   rtol=1e-12, err_msg=name)
    no_bn = Model(ModelConfig(kind="vae", x_dim=12, latent=(3,), hidden=(8,), batch_norm=False))
    assert M.recollect_bn_state(no_bn, no_bn.init()[0], {}, x, 10) == {}


def _log_text(run_dir, name):
    return (run_dir / name).read_text()


def test_run_log_sync_follows_the_checkpoint(tmp_path):
    log = M.RunLog(tmp_path, (2, 1))
    for epoch in (1, 2, 3):
        log.append({"epoch": epoch, "beta": 0.5, "train_elbo": -float(epoch)},
                   [epoch, 0.1, 0.2, 0.3])
    full = _log_text(tmp_path, "metrics.csv")
    lines = full.splitlines(keepends=True)
    # rows past the checkpoint go; an epoch logged twice is kept once (its last row)
    (tmp_path / "metrics.csv").write_text(full + lines[1].replace("-1.0", "-7.0"))
    again = M.RunLog(tmp_path, (2, 1))
    assert again.sync(2) == ["metrics.csv", "kl_units.csv"]
    assert [(r["epoch"], r["train_elbo"]) for r in again.rows] == [("1", "-7.0"), ("2", "-2.0")]
    # the checkpoint's own epoch comes back from its record when the file lost it
    record = {"metrics": dict(again.rows[1]), "kl_units": dict(again.unit_rows[1])}
    (tmp_path / "metrics.csv").write_text("".join(lines[:2]))
    again = M.RunLog(tmp_path, (2, 1))
    assert again.sync(2, record) == ["metrics.csv", "kl_units.csv"]
    assert again.rows[1] == record["metrics"]
    # nothing done: empty logs, whatever was there
    fresh = M.RunLog(tmp_path, (2, 1))
    assert fresh.sync(0) == ["metrics.csv", "kl_units.csv"] and fresh.rows == []


HEAD = "epoch,beta,train_kl_z1,train_kl_z2\n"


@pytest.mark.parametrize("text,match", [
    (HEAD + "1,0.5,1,1\nx,0.5,1,1\n", "line 3: epoch 'x' is not an epoch number"),
    (HEAD + "1,abc,1,1\n", "line 2: beta is 'abc', not a number"),
    (HEAD + "1,0.5,1,1,9\n", "line 2: more cells than columns"),
    ("epoch,train_kl_z1\n1,0.5\n", "not the log of this run's model"),     # one layer, not 2
    ("epoch,beta,train_kl_z1,train_kl_z2,train_kl_z3\n", "not the log of this run's model"),
])
def test_run_log_sync_refuses_logs_that_are_not_the_runs(tmp_path, text, match):
    (tmp_path / "metrics.csv").write_text(text)
    log = M.RunLog(tmp_path, (2, 1))
    with pytest.raises(M.LogError, match=match) as err:
        log.sync(1)
    assert "\n" not in str(err.value) and "metrics.csv" in str(err.value)
    assert (tmp_path / "metrics.csv").read_text() == text
    assert M.RunLog(tmp_path, (2, 1)).sync(0) == ["metrics.csv"]   # a fresh start replaces it
