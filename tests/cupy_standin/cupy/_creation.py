"""Hand-written top-level functions: moving data between host and device, and the like."""
from __future__ import annotations

import numpy as _np

from . import _api, _core, _standin
from ._core import ndarray, wrap_result
from ._namespace import implement


def _holds_standin(obj) -> bool:
    if isinstance(obj, ndarray):
        return True
    return isinstance(obj, (list, tuple)) and any(_holds_standin(o) for o in obj)


def _unwrap_nested(obj):
    """Nested lists of stand-ins (and scalars) as nested lists of NumPy arrays."""
    if isinstance(obj, ndarray):
        return obj._a
    if isinstance(obj, (list, tuple)):
        return [_unwrap_nested(o) for o in obj]
    if isinstance(obj, _np.ndarray):
        raise _core.host_array_error("cupy.array")
    return obj


def to_device(obj, dtype=None, order="K", copy=True, ndmin=0, where="cupy.array"):
    """A stand-in array of ``obj``: a device copy/view of a stand-in, else a host->device copy."""
    if isinstance(obj, ndarray):
        result = _np.array(obj._a, dtype=dtype, order=order, copy=copy, ndmin=ndmin)
        return obj if result is obj._a else _core._wrap(result)
    if _holds_standin(obj):  # a list of device arrays: stacked on the device
        return _core._wrap(_np.array(_unwrap_nested(obj), dtype=dtype, order=order, ndmin=ndmin))
    if copy is False and _api.VERSION >= 14:
        raise ValueError("Unable to avoid copy while creating an array as requested.")
    host = _np.array(obj, dtype=dtype, order=order, ndmin=ndmin, copy=True)
    if host.dtype == object:
        raise ValueError("Unsupported dtype object")
    _standin.host_to_device(host.nbytes, where.rsplit(".", 1)[-1])
    return _core._wrap(host)


@implement("cupy")
def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, *, blocking=False):
    """An array on the device (a host->device copy for host data)."""
    return to_device(obj, dtype, order or "K", copy, ndmin, "cupy.array")


def _asarray(a, dtype=None, order=None, *, copy=None, blocking=False):
    return to_device(a, dtype, order or "K", copy, 0, "cupy.asarray")


asarray = implement("cupy", "asarray")(_asarray)
asanyarray = implement("cupy", "asanyarray")(_asarray)


def _require_standin(a, where):
    if not isinstance(a, ndarray):
        raise TypeError(f"Argument 'a' has incorrect type (expected cupy._core.core._ndarray_base, "
                        f"got {type(a).__name__}) [{where}]")


@implement("cupy")
def ascontiguousarray(a, dtype=None):
    """``a`` C-contiguous on the device (``a`` itself when it already is)."""
    _require_standin(a, "cupy.ascontiguousarray")
    return wrap_result(_np.ascontiguousarray(a._a, dtype=dtype), {id(a._a): a})


@implement("cupy")
def asfortranarray(a, dtype=None):
    """``a`` Fortran-contiguous on the device (``a`` itself when it already is)."""
    _require_standin(a, "cupy.asfortranarray")
    return wrap_result(_np.asfortranarray(a._a, dtype=dtype), {id(a._a): a})


@implement("cupy")
def asnumpy(a, stream=None, order="C", out=None, *, blocking=True):
    """A host (NumPy) copy: a device->host copy for a stand-in array."""
    if isinstance(a, ndarray):
        return a._get(order, out, blocking, "asnumpy")
    result = _np.asarray(a, order=order)
    if out is not None:
        out[...] = result
        return out
    return result


@implement("cupy")
def get_array_module(*args):
    """The stand-in ``cupy`` module if any argument is one of its arrays, else NumPy."""
    import cupy
    return cupy if any(isinstance(a, ndarray) for a in args) else _np


@implement("cupy")
def is_available():
    """The stand-in plays one available device."""
    return True


@implement("cupy")
def get_default_memory_pool():
    """The pool whose ``used_bytes()`` follows the live stand-in arrays."""
    from .cuda import _default_pool
    return _default_pool


def _fuse(*args, **kwargs):
    """``@cupy.fuse`` / ``@cupy.fuse(...)``: the function unchanged (NumPy runs it)."""
    if len(args) == 1 and callable(args[0]) and not kwargs:
        return args[0]
    return lambda f: f


def _host_to_device_function(name: str):
    """A loader (``load``, ``fromfile``...): NumPy reads on the host, then one h2d copy."""
    np_func = getattr(_np, name)

    @implement("cupy", name)
    def function(*args, **kwargs):
        result = np_func(*args, **kwargs)
        if not isinstance(result, _np.ndarray):
            raise NotImplementedError(f"the CuPy stand-in's {name} returns arrays only")
        _standin.host_to_device(result.nbytes, name)
        return _core._wrap(result)

    return function


def _device_to_host_function(name: str):
    """A writer (``save``, ``savez``...): one d2h copy per array, then NumPy writes."""
    np_func = getattr(_np, name)

    @implement("cupy", name)
    def function(*args, **kwargs):
        def host(x):
            return x.get() if isinstance(x, ndarray) else x
        return np_func(*[host(a) for a in args], **{k: host(v) for k, v in kwargs.items()})

    return function


_LOADERS = ("load", "loadtxt", "genfromtxt", "fromfile", "frombuffer", "fromstring",
            "fromiter", "fromfunction")
_WRITERS = ("save", "savez", "savez_compressed", "savetxt")


def special() -> dict:
    """The hand-written names of the top-level ``cupy`` that the real version has."""
    real = _api.names("cupy")
    out = {"array": array, "asarray": asarray, "asanyarray": asanyarray,
           "ascontiguousarray": ascontiguousarray, "asfortranarray": asfortranarray,
           "asnumpy": asnumpy, "get_array_module": get_array_module,
           "is_available": is_available, "get_default_memory_pool": get_default_memory_pool,
           "ndarray": ndarray, "ufunc": _core.ufunc}
    if "fuse" in real:
        out["fuse"] = implement("cupy", "fuse")(_fuse)
    out.update({n: _host_to_device_function(n) for n in _LOADERS if n in real and hasattr(_np, n)})
    out.update({n: _device_to_host_function(n) for n in _WRITERS if n in real and hasattr(_np, n)})
    return {k: v for k, v in out.items() if k in real}
