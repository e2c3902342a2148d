"""Backend choice, the CuPy fallback and its warning, dtypes and random numbers."""
import sys
import types
import warnings

import numpy as np
import pytest

from lvae_np import backend
from lvae_np.backend import BackendFallbackWarning, get_backend, namespace, to_numpy


@pytest.fixture
def fresh(monkeypatch):
    """Forget what earlier tests learned about CuPy, and whether we warned."""
    monkeypatch.setattr(backend, "_cupy_status", {})
    monkeypatch.setattr(backend, "_warned", False)


@pytest.fixture
def no_cupy(fresh, monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` raise ImportError


@pytest.fixture
def cupy_without_device(fresh, monkeypatch):
    """A stand-in CuPy module whose CUDA runtime reports no device."""
    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 0))
    monkeypatch.setitem(sys.modules, "cupy", fake)


def test_numpy_backend_defaults_to_float32():
    be = get_backend("numpy")
    assert be.name == "numpy" and be.xp is np and be.dtype == np.float32
    assert be.asarray([1, 2]).dtype == np.float32
    assert be.normal((3, 2)).dtype == np.float32


def test_float64_on_request():
    be = get_backend("numpy", dtype="float64")
    assert be.dtype == np.float64 and be.normal((2,)).dtype == np.float64


@pytest.mark.parametrize("name,dtype,match", [("tpu", "float32", "unknown backend 'tpu'"),
                                              ("numpy", "float16", "unknown dtype 'float16'")])
def test_bad_choices_are_clear_errors(name, dtype, match):
    with pytest.raises(ValueError, match=match):
        get_backend(name, dtype=dtype)


def test_cupy_without_cupy_warns_once_with_the_import_error_and_uses_numpy(no_cupy):
    reason = r"CuPy could not be imported \(ModuleNotFoundError: import of cupy halted"
    with pytest.warns(BackendFallbackWarning, match=reason):
        be = get_backend("cupy")
    assert be.name == "numpy" and be.xp is np
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert get_backend("cupy").name == "numpy"  # the second time: no warning


def test_cupy_without_a_device_says_so(cupy_without_device):
    with pytest.warns(BackendFallbackWarning, match="CuPy sees no CUDA device"):
        assert get_backend("cupy").name == "numpy"


def test_a_failing_cuda_runtime_is_reported(fresh, monkeypatch):
    def broken():
        raise RuntimeError("cudaErrorInsufficientDriver")

    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=broken))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    with pytest.warns(BackendFallbackWarning, match="CUDA driver failed.*InsufficientDriver"):
        get_backend("cupy")


def test_auto_falls_back_silently(no_cupy):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert get_backend("auto").name == "numpy"


def test_the_reason_is_kept_from_the_first_attempt(no_cupy, monkeypatch):
    first = backend.cupy_unavailable_reason()
    monkeypatch.delitem(sys.modules, "cupy")  # even if the module changed later
    assert backend.cupy_unavailable_reason() == first


def test_seeded_generators_repeat_and_leave_the_global_state_alone():
    global_state = np.random.get_state()[1].copy()
    a, b = get_backend("numpy", seed=7), get_backend("numpy", seed=7)
    np.testing.assert_array_equal(a.normal((4, 3)), b.normal((4, 3)))
    assert not np.array_equal(a.normal((4, 3)), get_backend("numpy", seed=8).normal((4, 3)))
    np.testing.assert_array_equal(np.random.get_state()[1], global_state)


def test_random_state_round_trips():
    be = get_backend("numpy", seed=1)
    be.normal((2,))
    state = be.random.get_state()
    first = be.uniform((5,))
    be.random.set_state(state)
    np.testing.assert_array_equal(be.uniform((5,)), first)


def test_namespace_and_to_numpy_across_libraries():
    xs = pytest.importorskip("array_api_strict")
    a = xs.asarray([1.0, 2.0])
    assert namespace(a) is xs and namespace(np.ones(2), 3.0) is np
    np.testing.assert_array_equal(to_numpy(a), [1.0, 2.0])
    with pytest.raises(TypeError, match="different libraries"):
        namespace(a, np.ones(2))
    with pytest.raises(TypeError, match="expected an array"):
        namespace([1.0, 2.0])


def test_maximum_into_writes_over_its_second_argument_where_it_can():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 33)).astype(np.float32)
    x[0, :3] = [np.nan, np.inf, -0.0]
    want = np.maximum(x, 0.01 * x)
    b = 0.01 * x
    got = backend.maximum_into(x, b)
    assert got is b                                     # NumPy: no new array
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))  # the same bits
    xs = pytest.importorskip("array_api_strict")        # no out= in the standard: a new array
    a = xs.asarray(x)
    bs = 0.01 * a
    got = backend.maximum_into(a, bs)
    assert got is not bs
    np.testing.assert_array_equal(np.asarray(got).view(np.uint32), want.view(np.uint32))


@pytest.mark.gpu
def test_cupy_backend_round_trip():
    from conftest import cupy_or_skip

    cupy = cupy_or_skip()
    be = get_backend("cupy", seed=0, noise="host")   # NumPy's generator, copied over
    x = be.normal((3, 2))
    assert isinstance(x, cupy.ndarray) and x.dtype == cupy.float32
    np.testing.assert_array_equal(to_numpy(x), get_backend("numpy", seed=0).normal((3, 2)))


@pytest.mark.gpu
def test_cupy_noise_is_drawn_on_the_device_and_resumes():
    from conftest import cupy_or_skip

    cupy = cupy_or_skip()
    be = get_backend("cupy", seed=0)
    assert be.noise_on_device and be.xp is not cupy   # array_api_compat's wrapper of CuPy
    be.noise.start((3,))
    first = [be.normal((4, 2)), be.uniform((5,))]
    assert all(isinstance(a, cupy.ndarray) and a.dtype == cupy.float32 for a in first)
    state = be.noise.get_state()
    after = to_numpy(be.normal((2, 2)))
    again = get_backend("cupy", seed=0)
    again.noise.set_state(state)                        # reseeds and replays the two draws
    np.testing.assert_array_equal(to_numpy(again.normal((2, 2))), after)
    other = get_backend("cupy", seed=0)
    other.noise.start((4,))                             # another epoch: another stream
    assert not np.array_equal(to_numpy(other.normal((4, 2))), to_numpy(first[0]))
    with pytest.raises(ValueError, match="not a device-noise state"):
        again.noise.set_state(get_backend("numpy").random.get_state())


@pytest.mark.gpu
def test_namespace_maps_cupy_arrays_to_the_compat_namespace():
    from conftest import cupy_or_skip

    cupy = cupy_or_skip()
    import array_api_compat.cupy as compat

    a = cupy.ones((2, 3), dtype=cupy.float32)
    assert not hasattr(a, "__array_namespace__")        # as the real CuPy 13 and 14
    xp = namespace(a, 2.0, None)
    assert xp is compat
    assert isinstance(xp.concat([a, a], axis=0), cupy.ndarray)   # CuPy 13 has no concat
    assert xp.astype(a, xp.float64).dtype == cupy.float64        # nor astype
    with pytest.raises(TypeError, match="different libraries"):
        namespace(a, np.ones(2))
    got = backend.maximum_into(a, 0.5 * a)
    np.testing.assert_array_equal(to_numpy(got), np.ones((2, 3)))
    from lvae_np.gradcheck.engine import _nested_arrays
    assert list(_nested_arrays({"x": (a, [a])})) == [a, a]   # the checker finds CuPy arrays


def _probe_module(fail_at):
    """A stand-in CuPy whose elementwise kernels or matrix products fail as without NVRTC/cuBLAS."""
    class Array:
        def __init__(self, v):
            self.v = np.asarray(v, dtype=np.float32)

        def __mul__(self, o):
            if fail_at == "elementwise":
                raise RuntimeError("CUDA_ERROR_FILE_NOT_FOUND: libnvrtc.so.12 not found")
            return Array(self.v * (o.v if isinstance(o, Array) else o))

        def __add__(self, o):
            return Array(self.v + (o.v if isinstance(o, Array) else o))

        def __matmul__(self, o):
            if fail_at == "matmul":
                raise ImportError("libcublas.so.12: cannot open shared object file")
            return Array(self.v @ o.v)

    fake = types.ModuleType("cupy")
    fake.float32 = np.float32
    fake.arange = lambda n, dtype=None: Array(np.arange(n))
    fake.reshape = lambda a, shape: Array(a.v.reshape(shape))
    fake.sum = lambda a: float(a.v.sum())
    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 1))
    return fake


@pytest.mark.parametrize("fail_at,words", [("elementwise", "an elementwise kernel failed"),
                                           ("matmul", "a matrix product failed")])
def test_a_cupy_whose_kernels_fail_falls_back_with_the_reason_and_the_fix(
        fresh, monkeypatch, fail_at, words):
    monkeypatch.setitem(sys.modules, "cupy", _probe_module(fail_at))
    with pytest.warns(BackendFallbackWarning) as caught:
        be = get_backend("cupy")
    assert be.name == "numpy"
    message = str(caught[0].message)
    assert words in message and 'pip install "cupy-cuda12x[ctk]"' in message
    assert "\n" not in message   # one line


def test_a_cupy_that_runs_its_probe_is_chosen(fresh, monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", _probe_module(None))
    assert backend.cupy_unavailable_reason() is None
