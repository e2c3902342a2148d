"""Shared test settings: array namespaces to run on, the GPU marker, a poisoned data set.

Tests marked ``gpu`` run on the real CuPy where a GPU is usable, and
everywhere else on the CuPy stand-in (``tests/cupy_standin``: the real
CuPy's names and signatures, its refusals, and traffic counters), with the
API of CuPy 14, or of the version in ``$LVAE_NP_CUPY_STANDIN`` (13 or 14).
"""
import pathlib
import sys

import numpy
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci")

try:
    import submitit  # noqa: F401
    HAVE_SUBMITIT = True
except ImportError:
    HAVE_SUBMITIT = False
needs_submitit = pytest.mark.skipif(
    not HAVE_SUBMITIT, reason="submitit is not installed (the optional [cluster] extra)")

try:
    import nbgrader  # noqa: F401
    HAVE_NBGRADER = True
except ImportError:
    HAVE_NBGRADER = False
needs_nbgrader = pytest.mark.skipif(not HAVE_NBGRADER,
                                    reason="nbgrader is not installed (pip install -e .[course])")

TESTS = pathlib.Path(__file__).resolve().parent
STANDIN = TESTS / "cupy_standin"
_real = {}


def real_cupy_reason():
    """Why the real CuPy cannot run here (None: it can), found before any stand-in is active."""
    if "reason" not in _real:
        from lvae_np import backend

        loaded = sys.modules.get("cupy")
        if loaded is not None and getattr(getattr(loaded, "_standin", None), "IS_STANDIN", False):
            _real["reason"] = "the CuPy stand-in was imported first"
        else:
            backend._cupy_status.clear()
            _real["reason"] = backend.cupy_unavailable_reason()   # and cached there: the
            # stand-in, once imported, is CuPy only where a test says so (gpu, standin)
    return _real["reason"]


def pytest_configure(config):
    real_cupy_reason()   # before a test can import the stand-in


def activate_standin():
    """The CuPy stand-in, imported as ``cupy`` (see tests/cupy_standin)."""
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    from cupy_standin import activate

    return activate()


def cupy_or_skip():
    """The cupy module: the real one where a GPU is usable, else the stand-in.

    Skips only where neither can be had (the real CuPy is imported but cannot run).
    """
    if real_cupy_reason() is None:
        import cupy

        return cupy
    try:
        return activate_standin()
    except RuntimeError as exc:
        pytest.skip(f"{real_cupy_reason()}; no stand-in either: {exc}")


@pytest.fixture(autouse=True)
def _gpu_tests_on_the_standin(request, monkeypatch):
    """For a test marked gpu without a usable GPU: lvae_np sees the stand-in as a usable CuPy."""
    if request.node.get_closest_marker("gpu") is not None and real_cupy_reason() is not None:
        cupy_or_skip()
        from lvae_np import backend

        monkeypatch.setattr(backend, "_cupy_status", {"reason": None})
        monkeypatch.setattr(backend, "_warned", False)
    yield


@pytest.fixture
def standin(monkeypatch):
    """The CuPy stand-in, with lvae_np told it is a usable CuPy (for traffic tests)."""
    if real_cupy_reason() is None:
        pytest.skip("a real GPU is usable: the traffic counters are the stand-in's")
    cupy = cupy_or_skip()
    from lvae_np import backend

    monkeypatch.setattr(backend, "_cupy_status", {"reason": None})
    monkeypatch.setattr(backend, "_warned", False)
    return cupy


def _strict():
    return pytest.importorskip("array_api_strict", reason="array_api_strict is not installed")


@pytest.fixture(params=["numpy", "array_api_strict",
                        pytest.param("cupy", marks=pytest.mark.gpu)])
def xp(request):
    """Each array namespace the compute code must run on."""
    if request.param == "numpy":
        return numpy
    if request.param == "array_api_strict":
        return _strict()
    return cupy_or_skip()


@pytest.fixture
def nan_in_synthetic(monkeypatch):
    """Call with "train" or "test": the synthetic data set then has a NaN in that split."""
    from lvae_np import data as D

    real = D.LOADERS["synthetic"]

    def poison(split: str):
        def poisoned(*args):
            train_x, test_x, variant = real(*args)
            arrays = {"train": train_x.copy(), "test": test_x.copy()}
            arrays[split][0, 0] = numpy.nan
            return arrays["train"], arrays["test"], variant

        monkeypatch.setitem(D.LOADERS, "synthetic", poisoned)

    return poison
