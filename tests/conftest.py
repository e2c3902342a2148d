"""Shared test settings: array namespaces to run on, the GPU marker, a poisoned data set."""
import numpy
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci")


def cupy_or_skip():
    """The cupy module when a CUDA device is usable, else skip the test with the reason."""
    from lvae_np.backend import cupy_unavailable_reason

    reason = cupy_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    import cupy

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
