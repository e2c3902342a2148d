"""Tests of the NumPy-backed CuPy stand-in (tests/cupy_standin) itself.

The stand-in must have the real CuPy's API (names and signatures recorded
from the real wheels in tests/cupy_standin/api/) and refuse what CuPy
refuses. In-process tests use the stand-in that is already active (the
conftest may activate it when no GPU is present) or activate it for this
module and remove it afterwards; they are skipped where the real CuPy is
imported. Version-specific checks run in subprocesses, one per version.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import os
import pathlib
import subprocess
import sys

import numpy
import pytest

HERE = pathlib.Path(__file__).resolve().parent
STANDIN_DIR = HERE / "cupy_standin"
API = {v: json.loads((STANDIN_DIR / "api" / f"cupy-{v}.json").read_text()) for v in (13, 14)}

try:
    import cupy_standin
except ImportError:  # tests/ not on sys.path (a run from elsewhere)
    sys.path.insert(0, str(HERE))
    import cupy_standin


def names(version: int, module: str = "cupy") -> dict:
    return API[version]["modules"][module]["names"]


def _remove_standin() -> None:
    """Undo ``activate``: the stand-in and what was built on it leave ``sys.modules``."""
    for name in list(sys.modules):
        if name == "cupy" or name.startswith("cupy.") or name.startswith("array_api_compat.cupy"):
            del sys.modules[name]
    while str(STANDIN_DIR) in sys.path:
        sys.path.remove(str(STANDIN_DIR))


@pytest.fixture(scope="module")
def cupy():
    """The stand-in in this process: the active one, else activated for this module only."""
    loaded = sys.modules.get("cupy")
    if loaded is not None:
        if not cupy_standin.is_standin(loaded):
            pytest.skip("the real CuPy is imported in this process")
        yield loaded
        return
    saved_env = os.environ.get(cupy_standin.ENV_VAR)
    module = cupy_standin.activate(int(saved_env or 14))
    try:
        yield module
    finally:
        _remove_standin()
        if saved_env is None:
            os.environ.pop(cupy_standin.ENV_VAR, None)
        else:
            os.environ[cupy_standin.ENV_VAR] = saved_env


@pytest.fixture
def x(cupy):
    return cupy.arange(6, dtype=cupy.float32).reshape(2, 3)


def run_standin(version: int, code: str) -> dict:
    """Run ``code`` in a subprocess where ``import cupy`` is the stand-in of ``version``;
    return the JSON it prints last."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(STANDIN_DIR), env.get("PYTHONPATH", "")])
    env[cupy_standin.ENV_VAR] = str(version)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300, cwd=HERE.parent)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the recorded API ---------------------------------------------------------------------

@pytest.mark.parametrize("version", [13, 14])
def test_api_files_come_from_the_real_wheels(version):
    record = API[version]
    assert record["cupy_version"].split(".")[0] == str(version)
    assert set(record["modules"]) >= {"cupy", "cupy.random", "cupy.cuda", "cupy.cuda.runtime",
                                      "cupy.linalg", "cupy.fft"}
    cupy_names = names(version)
    assert cupy_names["add"]["kind"] == "ufunc" and cupy_names["add"]["nin"] == 2
    assert cupy_names["ndarray"]["kind"] == "class"
    assert "signature" in cupy_names["asarray"]
    assert "standard_normal" in record["classes"]["cupy.random.Generator"]["members"]
    assert "__array_namespace__" not in record["classes"]["cupy.ndarray"]["special"]


def test_extract_api_reads_cython_docstring_signatures():
    spec = importlib.util.spec_from_file_location("extract_api", STANDIN_DIR / "extract_api.py")
    extract = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(extract)
    sig = extract.parse_signature_text("(self, _ndarray_base b, int axis=-1, *, order=u'K')")
    assert list(sig.parameters) == ["self", "b", "axis", "order"]
    assert sig.parameters["order"].kind is inspect.Parameter.KEYWORD_ONLY

    class Doc:
        """add(x1, x2, /, out=None, \\*, casting='same_kind', dtype=None)

        Adds."""
    assert extract.doc_signature(Doc) == "(x1, x2, /, out=None, *, casting='same_kind', dtype=None)"


# --- names and signatures of the active version -----------------------------------------

MODULES = ("cupy", "cupy.random", "cupy.cuda", "cupy.cuda.runtime", "cupy.linalg", "cupy.fft")


def test_public_names_are_real_names(cupy):
    version = cupy._standin.VERSION
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        real = names(version, module_name)
        exposed = {n for n in dir(module) if not n.startswith("_")} | set(module.__all__)
        assert exposed <= set(real), (module_name, sorted(exposed - set(real)))
        assert not any(real[n].get("lazy") for n in module.__all__)


def test_names_real_cupy_lacks_raise_attribute_error(cupy):
    real = names(cupy._standin.VERSION)
    absent = [n for n in dir(numpy) if not n.startswith("_") and n not in real]
    assert len(absent) > 20
    for name in absent:
        with pytest.raises(AttributeError):
            getattr(cupy, name)


def test_ndarray_members_are_real_members(cupy):
    record = API[cupy._standin.VERSION]["classes"]["cupy.ndarray"]
    public = {n for n in dir(cupy.ndarray) if not n.startswith("_")}
    assert public <= set(record["members"]), sorted(public - set(record["members"]))
    special = {n for n in dir(cupy.ndarray) if n.startswith("__")}
    assert special - set(record["special"]) <= {"__getattr__", "__weakref__"}
    for name in ("shape", "dtype", "ndim", "size", "T", "astype", "reshape", "sum", "mean", "max",
                 "min", "ravel", "copy", "fill", "get", "item", "tolist", "view", "set"):
        assert hasattr(cupy.ndarray, name), name
    assert hasattr(cupy.ndarray, "mT") == ("mT" in record["members"])


def params_of(func) -> list:
    return [{"name": p.name, "kind": p.kind.name,
             **({} if p.default is p.empty else {"default": repr(p.default)})}
            for p in inspect.signature(func).parameters.values()]


def test_signatures_are_the_recorded_ones(cupy):
    real = names(cupy._standin.VERSION)
    for name in ("asarray", "sum", "concatenate", "where", "zeros", "clip", "zeros_like"):
        assert params_of(getattr(cupy, name)) == real[name]["params"], name
    with pytest.raises(TypeError, match="unexpected keyword"):
        cupy.sum(cupy.zeros(3), initial=1.0)  # NumPy takes it, CuPy does not
    with pytest.raises(TypeError, match="unexpected keyword"):
        cupy.zeros(3).astype(cupy.float32, device=None)
    with pytest.raises(TypeError):
        cupy.add(cupy.zeros(3), 1.0, where=True)  # NumPy's ufuncs take where=, CuPy's do not


SUBPROCESS_REPORT = """
import inspect, json
import array_api_compat, cupy

def raises(f, exc):
    try:
        f()
    except exc:
        return True
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    return False

G = cupy.random.Generator
print(json.dumps({
    "version": cupy._standin.VERSION,
    "cupy_version": cupy.__version__,
    "has": {n: hasattr(cupy, n) for n in ("concat", "astype", "asarray", "unstack", "permute_dims")},
    "concat_raises": raises(lambda: cupy.concat, AttributeError),
    "asarray_copy_raises": raises(lambda: cupy.asarray(1.0, copy=True), TypeError),
    "mT": hasattr(cupy.ndarray, "mT"),
    "signatures": {
        "asarray": str(inspect.signature(cupy.asarray)),
        "default_rng": str(inspect.signature(cupy.random.default_rng)),
        "standard_normal": str(inspect.signature(G.standard_normal)),
        "random": str(inspect.signature(G.random)),
    },
    "generator_permutation": hasattr(G, "permutation"),
    "compat": array_api_compat.array_namespace(cupy.asarray([1.0])).__name__,
}))
"""


@pytest.mark.parametrize("version", [13, 14])
def test_selected_version_has_that_versions_api(version):
    report = run_standin(version, SUBPROCESS_REPORT)
    real = names(version)
    assert report["version"] == version
    assert report["cupy_version"] == API[version]["cupy_version"]
    for name, present in report["has"].items():
        if name not in real:
            assert not present, f"CuPy {version} has no {name}"
    assert report["concat_raises"] is ("concat" not in real)
    if "concat" in real:
        assert report["has"]["concat"]
    asarray_params = [p["name"] for p in real["asarray"]["params"]]
    assert report["asarray_copy_raises"] is ("copy" not in asarray_params)
    assert report["mT"] == ("mT" in API[version]["classes"]["cupy.ndarray"]["members"])
    assert report["signatures"]["asarray"] == real["asarray"]["signature"]
    assert report["signatures"]["default_rng"] == names(version, "cupy.random")["default_rng"]["signature"]
    gen = API[version]["classes"]["cupy.random.Generator"]["members"]
    assert report["signatures"]["standard_normal"] == gen["standard_normal"]["signature"]
    assert report["signatures"]["random"] == gen["random"]["signature"]
    assert report["generator_permutation"] == ("permutation" in gen)
    assert report["compat"] == "array_api_compat.cupy"


def test_cupy_13_lacks_concat_and_astype():
    """The case the stand-in exists for: CuPy 13 has neither (array_api_compat adds them)."""
    assert "concat" not in names(13) and "astype" not in names(13)
    report = run_standin(13, SUBPROCESS_REPORT)
    assert report["has"]["concat"] is False and report["has"]["astype"] is False
    assert report["concat_raises"] is True


def test_unknown_version_is_refused():
    env = dict(os.environ, PYTHONPATH=str(STANDIN_DIR), **{cupy_standin.ENV_VAR: "12"})
    done = subprocess.run([sys.executable, "-c", "import cupy"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode != 0 and "no recorded CuPy API" in done.stderr


def test_activate_is_idempotent_and_refuses_another_version(cupy):
    version = cupy._standin.VERSION
    assert cupy_standin.activate(version) is cupy
    other = 13 if version == 14 else 14
    with pytest.raises(RuntimeError, match="already active"):
        cupy_standin.activate(other)


# --- what it refuses -------------------------------------------------------------------

def test_no_array_namespace(cupy, x):
    assert not hasattr(x, "__array_namespace__")
    assert not hasattr(cupy.ndarray, "__array_namespace__")


def test_no_implicit_conversion_to_numpy(cupy, x):
    for convert in (numpy.asarray, numpy.array, lambda a: numpy.asarray([a]), lambda a: a.__array__()):
        with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
            convert(x)
    assert not hasattr(x, "__array_interface__") and not hasattr(x, "__array_struct__")
    with pytest.raises(TypeError):
        memoryview(x)


def test_numpy_arrays_are_refused_as_operands_and_arguments(cupy, x):
    host = numpy.ones((2, 3), dtype=numpy.float32)
    attempts = {
        "x + host": lambda: x + host,
        "host + x": lambda: host + x,
        "x * host": lambda: x * host,
        "x == host": lambda: x == host,
        "x @ host.T": lambda: x @ host.T,
        "x += host": lambda: x.__iadd__(host),
        "cupy.add": lambda: cupy.add(x, host),
        "cupy.concatenate": lambda: cupy.concatenate([x, host]),
        "cupy.sum": lambda: cupy.sum(host),
        "cupy.where": lambda: cupy.where(x > 0, x, host),
        "cupy.zeros_like": lambda: cupy.zeros_like(host),
        "cupy.ascontiguousarray": lambda: cupy.ascontiguousarray(host),
        "x.dot": lambda: x.dot(host.T),
        "x[...] = host": lambda: x.__setitem__(Ellipsis, host),
        "numpy.add": lambda: numpy.add(x, host),
    }
    for label, attempt in attempts.items():
        with pytest.raises(TypeError):
            attempt()
            pytest.fail(label)


def test_python_lists_are_refused_where_cupy_wants_arrays(cupy):
    with pytest.raises(TypeError):
        cupy.exp([1.0, 2.0])
    with pytest.raises(TypeError):
        cupy.sum([1.0, 2.0])


def test_out_must_be_a_device_array(cupy, x):
    with pytest.raises(TypeError, match="out must be a cupy.ndarray"):
        cupy.add(x, x, out=numpy.empty((2, 3), numpy.float32))
    with pytest.raises(TypeError, match="out must be a cupy.ndarray"):
        cupy.sum(x, out=numpy.empty((), numpy.float32))
    with pytest.raises(TypeError, match="out must be a cupy.ndarray"):
        x.sum(out=numpy.empty((), numpy.float32))
    with pytest.raises(TypeError, match="out must be a cupy.ndarray"):
        cupy.random.default_rng(0).standard_normal(3, out=numpy.empty(3))
    out = cupy.empty((2, 3), dtype=cupy.float32)
    assert cupy.add(x, x, out=out) is out


def test_reductions_give_0d_device_arrays(cupy, x):
    results = [cupy.sum(x), cupy.mean(x), cupy.max(x), cupy.min(x), cupy.prod(x), cupy.std(x),
               cupy.var(x), cupy.all(x), cupy.any(x), cupy.argmax(x), cupy.count_nonzero(x),
               x.sum(), x.mean(), x.max(), x.min(), x.prod(), x.all(), x.argmin(), x[0, 0],
               cupy.linalg.norm(x)]
    for r in results:
        assert type(r) is cupy.ndarray and r.shape == (), r


def test_indexing_gives_views_and_counts_host_indices(cupy, x):
    from cupy._standin import count_traffic
    element = x[1, 2]
    element[...] = 42.0
    assert float(x[1, 2]) == 42.0
    with count_traffic() as t:
        rows = x[numpy.array([1, 0])]
    assert rows.shape == (2, 3) and t.h2d_copies == 1  # CuPy copies a host index over
    with count_traffic() as t:
        picked = x[x > 3]
    assert picked.shape == (2,) and t.syncs == 1  # a boolean mask's size needs the device
    with pytest.raises(TypeError):
        len(cupy.asarray(1.0))
    with pytest.raises(TypeError):
        iter(cupy.asarray(1.0))
    assert [r.shape for r in x] == [(3,), (3,)]


# --- traffic counters --------------------------------------------------------------------

def test_traffic_counts_host_to_device(cupy):
    from cupy._standin import count_traffic
    host = numpy.ones((4, 5), dtype=numpy.float32)
    with count_traffic() as t:
        y = cupy.asarray(host)
        cupy.array(host)
        cupy.asarray(3.0)  # a Python scalar is host data too
        y.set(numpy.zeros((4, 5), numpy.float32))
    assert t.h2d_copies == 4
    assert t.h2d_bytes == 3 * host.nbytes + 8
    assert t.d2h_copies == 0 and t.syncs == 0


def test_traffic_counts_device_to_host_and_syncs(cupy):
    from cupy._standin import count_traffic
    y = cupy.ones((4, 5), dtype=cupy.float32)
    with count_traffic() as t:
        y.get()
        cupy.asnumpy(y)
        y.tolist()
    assert t.d2h_copies == 3 and t.d2h_bytes == 3 * y.nbytes and t.syncs == 3
    with count_traffic() as t:
        float(y.sum())
        int(y[0, 0])
        bool(y[0, 0] > 0)
        y[0, 1].item()
    assert t.syncs == 4 and t.d2h_copies == 4 and t.d2h_bytes == 4 + 4 + 1 + 4  # one item each
    with count_traffic() as t:
        cupy.cuda.Device(0).synchronize()
        cupy.cuda.Stream.null.synchronize()
        cupy.cuda.runtime.deviceSynchronize()
    assert t.syncs == 3 and t.copies == 0
    assert t.reasons["sync:Stream.synchronize"] == 1


def test_device_work_moves_nothing(cupy):
    from cupy._standin import count_traffic
    with count_traffic() as t:
        a = cupy.ones((8, 8), dtype=cupy.float32)
        b = (a @ a + 1.0) * 2
        b = cupy.exp(-b).sum(axis=0) / b.max()
        cupy.random.default_rng(0).standard_normal((8,), dtype=cupy.float32)
    assert (t.h2d_copies, t.d2h_copies, t.syncs) == (0, 0, 0)
    assert type(b) is cupy.ndarray


def test_traffic_window_freezes_and_totals_reset(cupy):
    from cupy._standin import count_traffic, traffic
    with count_traffic() as t:
        float(cupy.zeros(()))
    float(cupy.zeros(()))
    assert t.syncs == 1
    traffic.reset()
    assert traffic.syncs == 0 and not traffic.reasons
    cupy.zeros(3).get()
    assert (traffic.d2h_copies, traffic.d2h_bytes, traffic.syncs) == (1, 24, 1)


def test_memory_pool_follows_live_arrays(cupy):
    import gc
    from cupy._standin import memory
    pool = cupy.get_default_memory_pool()
    gc.collect()
    before = pool.used_bytes()
    memory.reset_peak()
    a = cupy.zeros((1000,), dtype=cupy.float64)
    assert pool.used_bytes() == before + 8000
    view = a[10:]
    assert pool.used_bytes() == before + 8000  # a view allocates nothing
    del a, view
    gc.collect()
    assert pool.used_bytes() == before
    assert memory.peak_bytes >= before + 8000
    assert pool.total_bytes() >= pool.used_bytes() + 8000  # cached until freed
    pool.free_all_blocks()
    assert pool.total_bytes() == pool.used_bytes()


# --- array_api_compat on top of it -----------------------------------------------------

def test_array_api_compat_maps_it_to_its_cupy_namespace(cupy, x):
    array_api_compat = pytest.importorskip("array_api_compat")
    import array_api_compat.cupy as compat_cupy
    xp = array_api_compat.array_namespace(x)
    assert xp is compat_cupy
    assert array_api_compat.is_cupy_array(x)
    joined = xp.concat([x, x], axis=0)
    cast = xp.astype(x, xp.float64)
    product = xp.matmul(x, xp.matrix_transpose(x))
    total = xp.sum(x)
    for result in (joined, cast, product, total):
        assert type(result) is cupy.ndarray
    assert joined.shape == (4, 3) and cast.dtype == numpy.float64
    assert product.shape == (2, 2) and float(product[1, 1]) == 9 + 16 + 25
    assert total.shape == () and float(total) == 15.0
    assert array_api_compat.device(x) == cupy.cuda.Device(0)
    assert xp.__array_namespace_info__().devices() == (cupy.cuda.Device(0),)


# --- random, cuda ------------------------------------------------------------------------

def test_default_rng_draws_numpy_pcg64_numbers(cupy):
    rng = cupy.random.default_rng(7)
    normal = rng.standard_normal((3, 2), dtype=cupy.float32)
    uniform = rng.random(4)
    integers = rng.integers(0, 10, size=5)
    assert type(normal) is cupy.ndarray and normal.dtype == numpy.float32 and normal.shape == (3, 2)
    assert uniform.dtype == numpy.float64 and integers.dtype == numpy.int64
    reference = numpy.random.Generator(numpy.random.PCG64(7))
    numpy.testing.assert_array_equal(normal.get(), reference.standard_normal((3, 2), dtype=numpy.float32))
    numpy.testing.assert_array_equal(uniform.get(), reference.random(4))
    out = cupy.empty((5,), dtype=cupy.float32)
    assert rng.random(5, dtype=cupy.float32, out=out) is out
    with pytest.raises(TypeError, match="unexpected keyword"):
        rng.standard_normal(3, loc=1.0)


def test_cuda_has_one_device(cupy):
    runtime = cupy.cuda.runtime
    assert runtime.getDeviceCount() == 1
    assert issubclass(runtime.CUDARuntimeError, RuntimeError)
    with pytest.raises(runtime.CUDARuntimeError):
        cupy.cuda.Device(1).use()
    with cupy.cuda.Device(0) as device:
        assert device.id == 0 and int(device) == 0
    assert cupy.cuda.get_current_stream() is cupy.cuda.Stream.null
