"""Flat buffers: views that share memory with the buffer, and Adam on one buffer bit for bit."""
import numpy as np
import pytest

from lvae_np import flat
from lvae_np.backend import get_backend
from lvae_np.fast import FlatAdam, adam_update_
from lvae_np.models import Model, ModelConfig
from lvae_np.optim import adam_init, adam_update


def _tree(rng, dtype="float32"):
    return {"a.W": rng.normal(size=(3, 4)).astype(dtype),
            "a.b": rng.normal(size=4).astype(dtype),
            "s": np.asarray(rng.normal(), dtype=dtype).reshape(()),
            "c": rng.normal(size=(2, 1, 2)).astype(dtype)}


def test_pack_unpack_round_trip_and_views_share_memory():
    tree = _tree(np.random.default_rng(0))
    lay = flat.layout(tree)
    assert lay.size == 12 + 4 + 1 + 4 and lay.keys == tuple(tree)
    buffer = flat.pack(tree, lay)
    views = flat.unpack(buffer, lay)
    for k in tree:
        assert views[k].shape == tree[k].shape and np.array_equal(views[k], tree[k])
    buffer *= 2.0                                   # a whole-buffer update ...
    assert np.array_equal(views["a.W"], 2 * tree["a.W"])  # ... is seen through the views
    views["a.b"][...] = 0.0                         # and a view's write lands in the buffer
    assert np.all(buffer[12:16] == 0) and np.all(buffer[16:] != 0)


def test_pack_checks_shapes_and_dtypes():
    tree = _tree(np.random.default_rng(1))
    lay = flat.layout(tree)
    with pytest.raises(ValueError, match="'a.b' has shape"):
        flat.pack({**tree, "a.b": np.zeros(5, dtype="float32")}, lay)
    with pytest.raises(ValueError, match="one dtype"):
        flat.layout({"x": np.zeros(2, dtype="float32"), "y": np.zeros(2)})


def test_pack_works_on_array_api_strict():
    xs = pytest.importorskip("array_api_strict")
    tree = {k: xs.asarray(v) for k, v in _tree(np.random.default_rng(2)).items()}
    lay = flat.layout(tree)
    views = flat.unpack(flat.pack(tree, lay), lay)
    assert all(np.array_equal(np.asarray(views[k]), np.asarray(tree[k])) for k in tree)


def test_adam_on_one_buffer_equals_adam_array_by_array_bit_for_bit():
    model = Model(ModelConfig(kind="lvae", x_dim=12, latent=(4, 3), hidden=(8, 6)),
                  get_backend("numpy", dtype="float32", seed=3))
    params, state = model.init()
    x = (np.random.default_rng(4).random((8, 12)) < 0.4).astype("float32")
    lay = flat.layout(params)
    buffer = flat.pack(params, lay)
    flat_params = flat.unpack(buffer, lay)
    flat_opt = adam_init({"all": buffer})
    ref_params, ref_opt = dict(params), adam_init(params)
    for step in range(3):
        noise = model.noise(8)
        _, grads, _ = model.loss_and_grads(ref_params, state, x, noise=noise)
        _, flat_grads, _ = model.loss_and_grads(flat_params, state, x, noise=noise)
        ref_params, ref_opt = adam_update(ref_params, grads, ref_opt)   # the plain reference
        adam_update_({"all": buffer}, {"all": flat.pack(flat_grads, lay)}, flat_opt)
        for k in params:
            assert np.array_equal(flat_params[k], ref_params[k]), (step, k)
    m = flat.unpack(flat_opt["m"]["all"], lay)
    assert all(np.array_equal(m[k], ref_opt["m"][k]) for k in params)


@pytest.mark.parametrize("whole_buffer", [True, False])
def test_flat_adam_equals_adam_array_by_array_and_saves_the_same_state(whole_buffer):
    model = Model(ModelConfig(kind="vae", x_dim=12, latent=(4, 3), hidden=(8, 6)),
                  get_backend("numpy", dtype="float32", seed=5))
    params, state = model.init()
    x = (np.random.default_rng(6).random((8, 12)) < 0.4).astype("float32")
    opt = FlatAdam(params, whole_buffer=whole_buffer)
    ref_params, ref_opt = dict(params), adam_init(params)
    for step in range(3):
        noise = model.noise(8)
        _, grads, _ = model.loss_and_grads(ref_params, state, x, noise=noise)
        _, flat_grads, _ = model.loss_and_grads(opt.params, state, x, noise=noise)
        ref_params, ref_opt = adam_update(ref_params, grads, ref_opt)
        opt.step(flat_grads)
    saved = opt.state_dict()
    assert saved["t"] == ref_opt["t"] == 3
    for k in params:
        assert np.array_equal(opt.params[k], ref_params[k]), k
        assert np.array_equal(saved["m"][k], ref_opt["m"][k]) and \
            np.array_equal(saved["v"][k], ref_opt["v"][k]), k
    # A restored optimizer continues exactly.
    again = FlatAdam({k: v.copy() for k, v in opt.params.items()},
                     {"t": saved["t"], "m": {k: v.copy() for k, v in saved["m"].items()},
                      "v": {k: v.copy() for k, v in saved["v"].items()}},
                     whole_buffer=not whole_buffer)
    noise = model.noise(8)
    _, g1, _ = model.loss_and_grads(opt.params, state, x, noise=noise)
    _, g2, _ = model.loss_and_grads(again.params, state, x, noise=noise)
    opt.step(g1)
    again.step(g2)
    assert all(np.array_equal(opt.params[k], again.params[k]) for k in params)


def test_flat_adam_clips_the_whole_buffer_to_rounding():
    from lvae_np.optim import clip_by_global_norm, global_norm

    rng = np.random.default_rng(7)
    params = {"a": rng.normal(size=(30, 20)), "b": rng.normal(size=20)}
    grads = {k: 50.0 * rng.normal(size=v.shape) for k, v in params.items()}
    whole, per_array = FlatAdam(params, whole_buffer=True), FlatAdam(params, whole_buffer=False)
    whole.step(grads, max_grad_norm=4.0)
    per_array.step(grads, max_grad_norm=4.0)
    assert float(global_norm(grads)) > 4.0                   # clipping is active
    clipped, _ = clip_by_global_norm(grads, 4.0)
    assert float(global_norm(clipped)) == pytest.approx(4.0, rel=1e-12)
    for k in params:
        np.testing.assert_allclose(whole.params[k], per_array.params[k], rtol=1e-13, atol=1e-15)
