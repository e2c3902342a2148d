"""Choosing the array library (NumPy or CuPy), the dtype and the random numbers.

Compute code in lvae_np never imports NumPy. It asks the arrays it is given
for their namespace (``namespace(x)``, through ``array_api_compat``) and uses
only functions of the Python array API standard, which NumPy 2, CuPy 13 and
14 (through array-api-compat's wrapper: ``cupy.ndarray`` has no
``__array_namespace__``) and ``array_api_strict`` all provide. This module is
where the choice of library is made, once, for a whole run::

    be = get_backend("cupy", dtype="float32", seed=0)
    x = be.asarray(batch)            # on the GPU if CuPy is usable
    eps = be.normal((256, 64))       # from the run's own seeded generator
    loss = be.to_numpy(loss)         # back to the host

CuPy is chosen only when it runs: it imports, sees a device, and a first
elementwise kernel and matrix product give the right numbers. Otherwise
``"cupy"`` warns once with the reason (kept from the first attempt) and the
command that fixes it, and falls back to NumPy; ``"auto"`` picks CuPy when it
is usable, silently.

Noise. The parameters' initial values always come from NumPy's PCG64 on the
host (``Backend.random``), so a seed starts NumPy and CuPy runs alike. The
training and evaluation noise comes from ``Backend.noise``: on NumPy the same
host generator; on CuPy, by default, a seeded CuPy generator on the device
(``DeviceNoise``), so no noise crosses the bus. ``noise="host"`` draws it on
the host and copies it over: slower, and the same numbers as NumPy, for
parity checks.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import array_api_compat
import array_api_compat.numpy
import numpy

Array = Any  # an array of any array-API library (NumPy, CuPy, array_api_strict)

BACKENDS = ("auto", "numpy", "cupy")
DTYPES = ("float32", "float64")
NOISE = ("device", "host")   # where CuPy runs draw their noise (NumPy: the host either way)
# What fixes a CuPy that imports but cannot run kernels: the CUDA libraries from PyPI.
CUPY_INSTALL = 'pip install "cupy-cuda12x[ctk]"'

_COMPAT_NUMPY = array_api_compat.numpy
_BY_TYPE: dict[type, ModuleType] = {}   # namespace() of NumPy's and CuPy's array types

# Why CuPy cannot be used, or None when it can. Filled in once, lazily.
_cupy_status: dict[str, Any] = {}
_warned = False


class BackendFallbackWarning(UserWarning):
    """CuPy was asked for but cannot be used; NumPy runs instead."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def probe_cupy(cupy) -> None:
    """Run one elementwise kernel and one matrix product on CuPy; raise if either fails.

    The CuPy wheels carry neither NVRTC (which compiles elementwise kernels)
    nor cuBLAS (matrix products): a machine with only the driver sees a device
    and then fails at the first kernel. This finds out before a run starts.

    Raises:
        RuntimeError: naming the step that failed and why.
    """
    try:
        a = cupy.arange(4, dtype=cupy.float32)
        b = a * a + 1.0                                        # 1, 2, 5, 10
    except Exception as exc:
        raise RuntimeError(f"an elementwise kernel failed ({_first_line(exc)})") from exc
    try:
        m = cupy.reshape(b, (2, 2))
        total = float(cupy.sum(m @ m))                         # [[11, 22], [55, 110]]
    except Exception as exc:
        raise RuntimeError(f"a matrix product failed ({_first_line(exc)})") from exc
    if total != 198.0:
        raise RuntimeError(f"a test computation gave {total}, not 198")


def cupy_unavailable_reason() -> str | None:
    """Why CuPy cannot be used here, or None when it can.

    CuPy must import, see a CUDA device, and run ``probe_cupy``. The checks
    run once; their outcome is remembered, so the reason given later is the
    real one from the first attempt.
    """
    if "reason" not in _cupy_status:
        _cupy_status["reason"] = _check_cupy()
    return _cupy_status["reason"]


def _check_cupy() -> str | None:
    try:
        import cupy  # noqa: F401  (optional dependency)
    except Exception as exc:  # ImportError, or a broken CUDA install
        return f"CuPy could not be imported ({_first_line(exc)}); install it with {CUPY_INSTALL}"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDA driver missing or failing
        return (f"CuPy is installed but the CUDA driver failed ({_first_line(exc)}); "
                "check the NVIDIA driver with nvidia-smi")
    if count < 1:
        return "CuPy sees no CUDA device"
    try:
        probe_cupy(cupy)
    except Exception as exc:
        return (f"CuPy sees a device but {exc} (NVRTC or cuBLAS missing?); "
                f"{CUPY_INSTALL} brings the CUDA libraries")
    return None


def namespace(*arrays) -> ModuleType:
    """The array API namespace shared by ``arrays`` (NumPy, CuPy, array_api_strict...).

    ``array_api_compat.array_namespace`` finds it: NumPy arrays get ``numpy``
    itself (NumPy 2 follows the standard in everything lvae_np uses), CuPy
    arrays get ``array_api_compat.cupy`` (CuPy plus the standard's names that
    CuPy lacks, such as ``concat`` and ``astype`` in CuPy 13), others their
    own ``__array_namespace__`` method. Python scalars and None are ignored.

    Raises:
        TypeError: an argument is not an array, the arrays come from different
            libraries (mixing them would silently copy data), or there is no array.
    """
    found = None
    for a in arrays:
        if a is None or type(a) in (int, float, bool):   # NumPy scalars count as arrays
            continue
        xp = _BY_TYPE.get(type(a))
        if xp is None:
            try:
                xp = array_api_compat.array_namespace(a)
            except TypeError:
                raise TypeError(f"expected an array, got {type(a).__name__}") from None
            if xp is _COMPAT_NUMPY:
                xp = _BY_TYPE[type(a)] = numpy
            elif is_cupy(a):
                _BY_TYPE[type(a)] = xp   # other libraries' arrays may each name their own
        if found is None:
            found = xp
        elif xp is not found:
            raise TypeError(f"arrays from different libraries: {found.__name__} and "
                            f"{xp.__name__}")
    if found is None:
        raise TypeError("no array among the arguments")
    return found


def is_array(x) -> bool:
    """Whether ``x`` is an array of a library ``namespace`` knows (CuPy's included)."""
    return array_api_compat.is_array_api_obj(x) and type(x) not in (int, float, bool)


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
    if isinstance(b, numpy.ndarray) or is_cupy(b):
        return xp.maximum(a, b, out=b)
    return xp.maximum(a, b)


def is_cupy(x) -> bool:
    """Whether ``x`` is a CuPy array (lives on a GPU)."""
    return array_api_compat.is_cupy_array(x)


def to_numpy(x) -> numpy.ndarray:
    """A NumPy copy (or view) of ``x``, from any supported array library.

    A CuPy array is copied to the host with ``.get()`` (one copy; CuPy refuses
    implicit conversion).
    """
    if isinstance(x, numpy.ndarray):
        return x
    if is_cupy(x):
        return x.get()  # device -> host
    return numpy.asarray(x)


class Random:
    """One seeded generator on the host, for a whole run; never the global random state.

    NumPy's PCG64: the parameters' initial values, and the noise of NumPy
    runs (and of CuPy runs with ``noise="host"``, moved to the device after).
    """

    kind = "host"

    def __init__(self, seed):
        self.reseed(seed)

    def reseed(self, seed) -> None:
        """Start a new stream from ``seed`` (an int, a list of ints, or None: the OS's)."""
        self.generator = numpy.random.Generator(numpy.random.PCG64(seed))

    def normal(self, shape, dtype="float64") -> numpy.ndarray:
        return self.generator.standard_normal(shape, dtype=dtype)

    def uniform(self, shape, dtype="float64") -> numpy.ndarray:
        return self.generator.random(shape, dtype=dtype)

    def start(self, key) -> None:
        """A new stretch of the run (an epoch): the host stream simply goes on."""

    def get_state(self) -> dict:
        return self.generator.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.generator.bit_generator.state = state


class DeviceNoise:
    """Noise drawn on the device by a seeded generator of the array library (CuPy's).

    CuPy's generators cannot hand their state to the host, so the stream is
    made resumable another way: ``start(key)`` (the trainer calls it at each
    epoch's start with the epoch) reseeds it from (run seed, key), and the
    draws since are recorded by shape. ``get_state`` gives (seed, key, draws),
    and ``set_state`` reseeds and draws the same shapes again, discarding them,
    so a run resumed mid-epoch continues the very same stream.
    """

    kind = "device"

    def __init__(self, xp, seed: int | None):
        self.xp = xp
        self.seed = int(numpy.random.SeedSequence(seed).entropy) if seed is None else int(seed)
        self.start(())

    def start(self, key) -> None:
        """Reseed the stream from (seed, key) and forget the draws."""
        self.key = [int(k) for k in numpy.atleast_1d(numpy.asarray(key, dtype=numpy.int64))]
        words = numpy.random.SeedSequence([self.seed, 0x6E6F697365, *self.key]).generate_state(2)
        self.generator = self.xp.random.default_rng(int(words[0]) << 32 | int(words[1]))
        self.draws = []

    def _draw(self, kind: str, shape, dtype: str):
        shape = tuple(int(d) for d in shape)
        self.draws.append([kind, list(shape), dtype])
        dt = getattr(self.xp, dtype)
        if kind == "normal":
            return self.generator.standard_normal(shape, dtype=dt)
        return self.generator.random(shape, dtype=dt)

    def normal(self, shape, dtype="float32"):
        return self._draw("normal", shape, dtype)

    def uniform(self, shape, dtype="float32"):
        return self._draw("uniform", shape, dtype)

    def get_state(self) -> dict:
        return {"kind": self.kind, "seed": self.seed, "key": list(self.key),
                "draws": [list(d) for d in self.draws]}

    def set_state(self, state: dict) -> None:
        """Continue the stream ``get_state`` described: reseed, then redraw its draws."""
        if not isinstance(state, dict) or state.get("kind") != self.kind:
            raise ValueError("not a device-noise state")
        draws = state["draws"]
        if not all(isinstance(d, list) and len(d) == 3 and d[0] in ("normal", "uniform")
                   and d[2] in DTYPES for d in draws):
            raise ValueError("malformed list of draws")
        self.seed = int(state["seed"])
        self.start(state["key"])
        for kind, shape, dtype in draws:
            self._draw(kind, shape, dtype)


@dataclass
class Backend:
    """The array library, dtype and random generators of one run.

    Attributes:
        name: "numpy" or "cupy" -- the library actually in use.
        xp: the array namespace module (``array_api_compat.cupy`` for CuPy).
        dtype: the floating dtype of the run's arrays (an ``xp`` dtype).
        random: the run's seeded host generator (initial values; NumPy's noise).
        noise: where ``normal`` and ``uniform`` draw: ``random`` itself, or
            a ``DeviceNoise`` on CuPy.
    """

    name: str
    xp: ModuleType
    dtype: Any
    random: Random = field(repr=False)
    noise: Any = field(default=None, repr=False)

    def __post_init__(self):
        if self.noise is None:
            self.noise = self.random

    def asarray(self, a, dtype=None):
        """``a`` as an array of this backend (on its device), in the run's dtype."""
        return self.xp.asarray(a, dtype=self.dtype if dtype is None else dtype)

    def normal(self, shape):
        """Standard normal noise of the given shape, on this backend, in the run's dtype."""
        if self.noise is self.random:
            return self.asarray(self.random.normal(shape, dtype=numpy.dtype(self.dtype_name)))
        return self.noise.normal(shape, self.dtype_name)

    def uniform(self, shape):
        """Uniform [0, 1) noise of the given shape, on this backend, in the run's dtype."""
        if self.noise is self.random:
            return self.asarray(self.random.uniform(shape, dtype=numpy.dtype(self.dtype_name)))
        return self.noise.uniform(shape, self.dtype_name)

    @property
    def noise_on_device(self) -> bool:
        """Whether noise is drawn on the device (CuPy, ``noise="device"``)."""
        return self.noise is not self.random

    @property
    def dtype_name(self) -> str:
        return "float64" if self.dtype == self.xp.float64 else "float32"

    to_numpy = staticmethod(to_numpy)


def get_backend(name: str = "auto", dtype: str = "float32", seed: int | None = 0,
                noise: str = "device") -> Backend:
    """Build the backend of a run.

    Args:
        name: "auto" (CuPy when usable, else NumPy), "numpy" or "cupy"
            (warns once, with the reason, and uses NumPy when CuPy is not usable).
        dtype: "float32" (training) or "float64" (gradient checks).
        seed: seed of the run's random generators; None draws one from the OS.
        noise: on CuPy, "device" (draw noise there) or "host" (NumPy's
            generator, copied over: NumPy's numbers). No effect on NumPy.
    """
    global _warned
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    if noise not in NOISE:
        raise ValueError(f"unknown noise {noise!r}: choose one of {', '.join(NOISE)}")
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
        import cupy

        xp = array_api_compat.array_namespace(cupy.empty(0))
    else:
        xp = numpy
    random = Random(seed)
    device = DeviceNoise(xp, seed) if chosen == "cupy" and noise == "device" else None
    return Backend(name=chosen, xp=xp, dtype=getattr(xp, dtype), random=random, noise=device)
