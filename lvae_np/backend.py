"""Choosing the array library (NumPy or CuPy), the dtype and the random numbers.

Compute code in lvae_np never imports NumPy. It asks the arrays it is given
for their namespace (``namespace(x)``) and uses only functions of the Python
array API standard, which NumPy 2, CuPy and ``array_api_strict`` all provide.
This module is where the choice of library is made, once, for a whole run::

    be = get_backend("cupy", dtype="float32", seed=0)
    x = be.asarray(batch)            # on the GPU if CuPy is usable
    eps = be.normal((256, 64))       # from the run's own seeded generator
    loss = be.to_numpy(loss)         # back to the host

Asking for ``"cupy"`` where CuPy is not installed, or is installed but sees no
CUDA device, warns once with the reason (kept from the import attempt) and
falls back to NumPy. ``"auto"`` picks CuPy when it is usable, silently.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy

Array = Any  # an array of any array-API library (NumPy, CuPy, array_api_strict)

BACKENDS = ("auto", "numpy", "cupy")
DTYPES = ("float32", "float64")

# Why CuPy cannot be used, or None when it can. Filled in once, lazily.
_cupy_status: dict[str, Any] = {}
_warned = False


class BackendFallbackWarning(UserWarning):
    """CuPy was asked for but cannot be used; NumPy runs instead."""


def cupy_unavailable_reason() -> str | None:
    """Why CuPy cannot be used here, or None when it can.

    The import and the device query run once; their outcome is remembered,
    so the reason given later is the real one from the first attempt.
    """
    if "reason" not in _cupy_status:
        try:
            import cupy  # noqa: F401  (optional dependency)
        except Exception as exc:  # ImportError, or a broken CUDA install
            _cupy_status["reason"] = f"CuPy could not be imported ({type(exc).__name__}: {exc})"
        else:
            try:
                count = cupy.cuda.runtime.getDeviceCount()
            except Exception as exc:  # CUDA driver missing or failing
                _cupy_status["reason"] = (
                    f"CuPy is installed but CUDA failed ({type(exc).__name__}: {exc})"
                )
            else:
                _cupy_status["reason"] = None if count > 0 else "CuPy sees no CUDA device"
    return _cupy_status["reason"]


def namespace(*arrays) -> ModuleType:
    """The array API namespace shared by ``arrays`` (NumPy, CuPy, array_api_strict...).

    Python scalars and None are ignored. Raises TypeError when the arrays come
    from different libraries, since mixing them would silently copy data.
    """
    found = None
    for a in arrays:
        get = getattr(a, "__array_namespace__", None)  # NumPy scalars have it too
        if get is None:
            if a is None or isinstance(a, (int, float, bool)):
                continue
            raise TypeError(f"expected an array, got {type(a).__name__}")
        xp = get()
        if found is None:
            found = xp
        elif xp is not found:
            raise TypeError(f"arrays from different libraries: {found.__name__} and {xp.__name__}")
    if found is None:
        raise TypeError("no array among the arguments")
    return found


def maximum_into(a, b):
    """Elementwise maximum(a, b), written over ``b`` where the array library allows it.

    NumPy and CuPy take ``out=b``, which spares a new array and, on the CPU, runs
    several times faster for arrays of a few MB; other array-API libraries (no
    ``out=`` in the standard) get a new array. The values are those of
    ``maximum(a, b)`` either way, bit for bit.

    Args:
        a: array, or a Python number.
        b: array that the caller made for this and gives up (overwritten), the
            result's shape and dtype.

    Returns:
        maximum(a, b): ``b`` itself on NumPy and CuPy.
    """
    xp = namespace(a, b)
    if getattr(xp, "__name__", "") in ("numpy", "cupy"):
        return xp.maximum(a, b, out=b)
    return xp.maximum(a, b)


def is_cupy(x) -> bool:
    """Whether ``x`` is a CuPy array (lives on a GPU)."""
    return type(x).__module__.split(".")[0] == "cupy"


def to_numpy(x) -> numpy.ndarray:
    """A NumPy copy (or view) of ``x``, from any supported array library."""
    if isinstance(x, numpy.ndarray):
        return x
    if is_cupy(x) and hasattr(x, "get"):
        return x.get()  # device -> host
    return numpy.asarray(x)


class Random:
    """One seeded generator for a whole run; never the global random state.

    Numbers are drawn with NumPy's PCG64 on the host and moved to the
    backend's device, so a seed gives the same numbers on NumPy and CuPy.
    ``Backend.normal`` is the usual entry point.
    """

    def __init__(self, seed: int | None):
        self.generator = numpy.random.Generator(numpy.random.PCG64(seed))

    def normal(self, shape, dtype="float64") -> numpy.ndarray:
        return self.generator.standard_normal(shape, dtype=dtype)

    def uniform(self, shape, dtype="float64") -> numpy.ndarray:
        return self.generator.random(shape, dtype=dtype)

    def get_state(self) -> dict:
        return self.generator.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.generator.bit_generator.state = state


@dataclass
class Backend:
    """The array library, dtype and random generator of one run.

    Attributes:
        name: "numpy" or "cupy" -- the library actually in use.
        xp: the array namespace module.
        dtype: the floating dtype of the run's arrays (an ``xp`` dtype).
        random: the run's seeded generator.
    """

    name: str
    xp: ModuleType
    dtype: Any
    random: Random = field(repr=False)

    def asarray(self, a, dtype=None):
        """``a`` as an array of this backend (on its device), in the run's dtype."""
        return self.xp.asarray(a, dtype=self.dtype if dtype is None else dtype)

    def normal(self, shape):
        """Standard normal noise of the given shape, on this backend, in the run's dtype."""
        return self.asarray(self.random.normal(shape, dtype=numpy.dtype(self.dtype_name)))

    def uniform(self, shape):
        """Uniform [0, 1) noise of the given shape, on this backend, in the run's dtype."""
        return self.asarray(self.random.uniform(shape, dtype=numpy.dtype(self.dtype_name)))

    @property
    def dtype_name(self) -> str:
        return "float64" if self.dtype == self.xp.float64 else "float32"

    to_numpy = staticmethod(to_numpy)


def get_backend(name: str = "auto", dtype: str = "float32", seed: int | None = 0) -> Backend:
    """Build the backend of a run.

    Args:
        name: "auto" (CuPy when usable, else NumPy), "numpy" or "cupy"
            (warns once, with the reason, and uses NumPy when CuPy is not usable).
        dtype: "float32" (training) or "float64" (gradient checks).
        seed: seed of the run's random generator; None draws one from the OS.
    """
    global _warned
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    chosen = "numpy"
    if name in ("auto", "cupy"):
        reason = cupy_unavailable_reason()
        if reason is None:
            chosen = "cupy"
        elif name == "cupy" and not _warned:
            warnings.warn(f"--backend cupy: {reason}; running on NumPy (CPU) instead.",
                          BackendFallbackWarning, stacklevel=2)
            _warned = True
    if chosen == "cupy":
        import cupy as xp
    else:
        xp = numpy
    return Backend(name=chosen, xp=xp, dtype=getattr(xp, dtype), random=Random(seed))
