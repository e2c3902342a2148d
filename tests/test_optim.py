"""Adam against a hand-computed sequence, and gradient clipping.

Adam in place and on one flat buffer (``fast.py``) are held to this Adam in
tests/test_fast_forms.py and tests/test_flat.py.
"""
import numpy as np
import pytest

from lvae_np.optim import AdamConfig, adam_init, adam_update, clip_by_global_norm, global_norm


def test_defaults_are_the_original_codes():
    assert AdamConfig() == AdamConfig(lr=0.002, beta1=0.9, beta2=0.999, eps=1e-4)


def test_adam_matches_a_hand_computed_sequence():
    # Worked by hand for w0 = 1 and gradients 0.5, -1, 2 (lr 0.002, betas 0.9/0.999, eps 1e-4):
    # step 1: m = 0.1 * 0.5 = 0.05, v = 0.001 * 0.25 = 2.5e-4,
    #         a = 0.002 * sqrt(1 - 0.999) / (1 - 0.9) = 6.3245553e-4,
    #         w = 1 - a * 0.05 / (sqrt(2.5e-4) + 1e-4) = 1 - 1.9874304e-3 = 0.99801257.
    # steps 2 and 3 the same way: m = -0.055, v = 1.24975e-3, w = 0.99874271;
    #                             m = 0.1505, v = 5.2485e-3,  w = 0.99790456.
    params = {"w": np.array([1.0])}
    opt = adam_init(params)
    expected = [(0.05, 2.5e-4, 0.99801257), (-0.055, 1.24975e-3, 0.99874271),
                (0.1505, 5.2485003e-3, 0.99790456)]
    for g, (m, v, w) in zip([0.5, -1.0, 2.0], expected):
        params, opt = adam_update(params, {"w": np.array([g])}, opt)
        assert opt["m"]["w"][0] == pytest.approx(m, rel=1e-7)
        assert opt["v"]["w"][0] == pytest.approx(v, rel=1e-7)
        assert params["w"][0] == pytest.approx(w, rel=1e-8)
    assert opt["t"] == 3


def test_adam_leaves_its_inputs_alone_and_keeps_dtype():
    params = {"a": np.ones(3, dtype=np.float32), "b": np.zeros((2, 2), dtype=np.float32)}
    grads = {k: np.full_like(v, 0.5) for k, v in params.items()}
    opt = adam_init(params)
    new, new_opt = adam_update(params, grads, opt)
    assert np.all(params["a"] == 1) and opt["t"] == 0 and np.all(opt["m"]["a"] == 0)
    assert all(v.dtype == np.float32 for v in new.values())
    assert all(v.dtype == np.float32 for v in new_opt["v"].values())


def test_adam_step_is_about_lr_for_a_steady_gradient():
    # With a constant gradient, m/sqrt(v) -> sign(g) after bias correction: each step ~ lr.
    params, opt = {"w": np.array([0.0])}, adam_init({"w": np.array([0.0])})
    cfg = AdamConfig(lr=0.01, eps=1e-12)
    for _ in range(5):
        before = params["w"][0]
        params, opt = adam_update(params, {"w": np.array([3.0])}, opt, cfg)
        assert before - params["w"][0] == pytest.approx(0.01, rel=1e-6)


def test_adam_minimises_a_quadratic():
    params = {"w": np.array([3.0, -2.0])}
    opt = adam_init(params)
    for _ in range(3000):
        params, opt = adam_update(params, {"w": 2 * params["w"]}, opt, AdamConfig(lr=0.01))
    assert np.all(np.abs(params["w"]) < 0.05)


def test_clipping_by_global_norm():
    grads = {"a": np.array([3.0]), "b": np.array([[4.0]])}
    assert float(global_norm(grads)) == pytest.approx(5.0)
    clipped, norm = clip_by_global_norm(grads, 1.0)
    assert float(norm) == pytest.approx(5.0)
    assert float(global_norm(clipped)) == pytest.approx(1.0)
    np.testing.assert_allclose(clipped["a"], [0.6])
    same, _ = clip_by_global_norm(grads, 10.0)
    np.testing.assert_array_equal(same["b"], grads["b"])
