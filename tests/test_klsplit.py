"""The KL split in the generative order (lvae_np.experiments.klsplit): densities, bounds, runs."""
from __future__ import annotations

import json
import math

import numpy
import pytest

from lvae_np.training import train
from lvae_np.backend import get_backend, to_numpy
from lvae_np.experiments import klsplit
from lvae_np.models import Model, ModelConfig
from lvae_np.blocks import gaussian_block_forward
from lvae_np.blocks import subtree


def test_log_density_matrix_is_each_point_under_each_gaussian():
    rng = numpy.random.default_rng(0)
    z, mu = rng.normal(size=(3, 5, 4)), rng.normal(size=(3, 5, 4))
    var = rng.uniform(0.1, 2.0, size=(3, 5, 4))
    got = klsplit.log_density_matrix(z, mu, var)
    for n in range(3):
        for a in range(5):
            for b in range(5):
                want = sum(-0.5 * math.log(2 * math.pi * var[n, b, d])
                           - (z[n, a, d] - mu[n, b, d]) ** 2 / (2 * var[n, b, d])
                           for d in range(4))
                assert got[n, a, b] == pytest.approx(want, rel=1e-12, abs=1e-12)


def linear_gaussian(rng, n, k, a, shift, var_z, var_out):
    """z ~ N(0, diag(var_z)), z' | z ~ N(a z + shift, diag(var_out)): (log q(z'_a | z_b), exact I)."""
    d = len(var_z)
    z = rng.normal(size=(n, k, d)) * numpy.sqrt(var_z)
    mu = z @ a.T + shift
    var = numpy.broadcast_to(var_out, mu.shape)
    z_out = mu + rng.normal(size=mu.shape) * numpy.sqrt(var_out)
    cov = a @ numpy.diag(var_z) @ a.T + numpy.diag(var_out)
    exact = 0.5 * (numpy.linalg.slogdet(cov)[1] - numpy.sum(numpy.log(var_out)))
    return klsplit.log_density_matrix(z_out, mu, var), exact


def test_information_bounds_bracket_the_exact_information_of_a_linear_gaussian():
    rng = numpy.random.default_rng(1)
    a = rng.normal(size=(3, 3))
    log_q, exact = linear_gaussian(rng, 40, 1000, a, numpy.array([0.5, -1.0, 0.0]),
                                   numpy.array([0.3, 0.5, 0.2]), numpy.array([0.4, 0.6, 0.3]))
    assert 0.5 < exact < 3.0    # well below log K: both bounds are tight here
    lower, upper = klsplit.information_bounds(log_q)
    se = max(numpy.std(lower), numpy.std(upper)) / math.sqrt(len(lower))
    assert numpy.mean(lower) <= exact + 3 * se
    assert numpy.mean(upper) >= exact - 3 * se
    assert abs(numpy.mean(lower) - exact) < 0.05 and abs(numpy.mean(upper) - exact) < 0.05


def test_the_lower_bound_saturates_at_log_k_and_the_upper_one_does_not():
    rng = numpy.random.default_rng(2)
    log_q, exact = linear_gaussian(rng, 10, 50, 10.0 * numpy.eye(4), numpy.zeros(4),
                                   numpy.ones(4), numpy.full(4, 1e-3))
    assert exact > 15.0    # far above log 50
    lower, upper = klsplit.information_bounds(log_q)
    assert numpy.all(lower <= math.log(50) + 1e-12)
    assert numpy.mean(upper) > math.log(50) + 5.0


def test_information_bounds_need_two_chains():
    with pytest.raises(ValueError, match="K >= 2"):
        klsplit.information_bounds(numpy.zeros((2, 1, 1)))


def test_top_down_split_moves_each_layers_information_to_the_layer_below():
    lower, upper = klsplit.top_down_split([5.0, 3.0, 1.0], [1.0, 0.5], [1.2, 0.6])
    assert lower == pytest.approx([6.0, 3.0 + 0.5 - 1.2, 1.0 - 0.6])
    assert upper == pytest.approx([6.2, 3.0 + 0.6 - 1.0, 1.0 - 0.5])


def test_a_vaes_chain_information_agrees_with_a_brute_force_marginal():
    """I_1 = E[log q(z_2|z_1) - log q(z_2|x)], q(z_2|x) averaged over 20000 fresh z_1."""
    be = get_backend("numpy", dtype="float64", seed=3)
    model = Model(ModelConfig(kind="vae", x_dim=6, latent=(3, 2), hidden=(8, 6),
                              batch_norm=False), be)
    params, state = model.init()
    x = be.asarray(numpy.random.default_rng(4).random((4, 6)) < 0.5, dtype=be.dtype)
    got = klsplit.vae_chain_information(model, params, state, x, k=400)
    assert len(got["kl"]) == 2 and len(got["info_lower"]) == 1
    part, _ = model.bottom_up_forward(params, state, x, training=False)
    mu1, var1 = to_numpy(part.mu_hat[0]), to_numpy(part.var_hat[0])
    rng = numpy.random.default_rng(5)
    settings = model.settings(training=False)

    def q2(z1):   # (mu, var) of q(z_2 | z_1) for rows z1
        (mu, var), _ = gaussian_block_forward(z1, subtree(params, "up2"), subtree(params, "q2"),
                                              settings=settings)
        return mu, var

    def log_n(z, mu, var):
        return numpy.sum(-0.5 * numpy.log(2 * numpy.pi * var) - (z - mu) ** 2 / (2 * var), -1)

    info = []
    for n in range(4):
        z1 = mu1[n] + numpy.sqrt(var1[n]) * rng.normal(size=(300, 3))
        mu, var = q2(z1)
        z2 = mu + numpy.sqrt(var) * rng.normal(size=mu.shape)
        fresh_mu, fresh_var = q2(mu1[n] + numpy.sqrt(var1[n]) * rng.normal(size=(20000, 3)))
        marginal = [numpy.log(numpy.mean(numpy.exp(log_n(z, fresh_mu, fresh_var)))) for z in z2]
        info.append(numpy.mean(log_n(z2, mu, var) - numpy.array(marginal)))
    brute = float(numpy.mean(info))
    assert got["info_lower"][0] - 0.05 <= brute <= got["info_upper"][0] + 0.05
    assert got["info_upper"][0] - got["info_lower"][0] < 0.1


def test_the_cli_splits_both_models_runs_and_keeps_an_existing_file(tmp_path, capsys):
    small = ["--dataset", "synthetic", "--latent", "4,2", "--hidden", "16,8", "--epochs", "1",
             "--batch-size", "50", "--no-progress"]
    for model in ("vae", "lvae"):
        assert train.main(small + ["--model", model, "--out", str(tmp_path / model)]) == 0
    out = tmp_path / "split.json"
    argv = [str(tmp_path / "vae"), str(tmp_path / "lvae"), "--out", str(out), "--k", "50",
            "--eval-subset", "40"]
    assert klsplit.main(argv) == 0
    vae, lvae = json.loads(out.read_text())
    assert lvae["top_down_lower"] == lvae["kl"] == lvae["top_down_upper"]
    assert all(lo <= up for lo, up in zip(vae["top_down_lower"], vae["top_down_upper"]))
    assert vae["kl"][0] + vae["info_lower"][0] == pytest.approx(vae["top_down_lower"][0])
    assert sum(vae["kl"]) == pytest.approx(vae["total_kl"])
    assert "| vae | VAE | 1 |" in capsys.readouterr().out
    table = out.with_suffix(".md").read_text()
    assert table.startswith("Produced by `python -m lvae_np.experiments.klsplit ")
    assert "| vae | VAE | 1 |" in table
    before = out.read_text()
    assert klsplit.main(argv) == 2
    assert "exists" in capsys.readouterr().err and out.read_text() == before
    out.unlink()
    assert klsplit.main(argv) == 2        # the table beside it is kept too
    assert out.with_suffix(".md").read_text() == table and not out.exists()
