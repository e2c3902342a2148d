"""The stand-in's ``ndarray`` and ``ufunc``, and the wrapping of NumPy callables.

An ``ndarray`` holds a NumPy array (``_a``) that plays the device memory. It
never converts itself to NumPy implicitly, and the callables here refuse NumPy
arrays (host data), as CuPy does. Every callable is bound against the real
CuPy signature recorded in the API file before NumPy does the work.
"""
from __future__ import annotations

import inspect
import re
import types

import numpy as _np

from . import _api, _standin

IMPLICIT_CONVERSION = ("Implicit conversion to a NumPy array is not allowed. "
                       "Please use `.get()` to construct a NumPy array explicitly.")

#: Scalars that CuPy takes wherever it takes an array operand.
SCALARS = (bool, int, float, complex, _np.generic)

#: Parameter names that CuPy wants as arrays: a list there is refused, as CuPy does.
ARRAY_PARAMS = frozenset({"a", "x", "x1", "x2", "arr", "ary", "condition", "ar", "ar1", "ar2"})

#: Functions whose output shape depends on the values (CuPy synchronizes).
SYNCING = frozenset({"nonzero", "argwhere", "flatnonzero", "unique", "extract", "compress",
                     "unique_values", "unique_counts", "unique_inverse", "unique_all"})

#: Functions for which NumPy returns a Python scalar but CuPy a 0-d array.
ARRAY_RESULT = frozenset({"count_nonzero", "allclose", "array_equal", "array_equiv"})

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


# --- moving between NumPy and stand-in arrays --------------------------------------------

def _wrap(arr: _np.ndarray) -> "ndarray":
    """A stand-in array holding ``arr`` (no copy, no traffic)."""
    obj = object.__new__(ndarray)
    obj._a = arr
    base = arr
    while isinstance(base.base, _np.ndarray):
        base = base.base
    if base.base is None:
        _standin.memory.track(base)
    return obj


def host_array_error(where: str) -> TypeError:
    return TypeError(
        f"{where}: got a numpy.ndarray. CuPy does not move host data to the device "
        f"implicitly: use cupy.asarray(...) (a host->device copy) first.")


def unwrap(obj, where: str, by_id: dict | None = None):
    """``obj`` with stand-in arrays replaced by their NumPy arrays.

    Raises TypeError for NumPy arrays and for foreign array objects (anything
    with ``__array__``, ``__array_interface__``, ``__array_namespace__`` or
    ``__dlpack__``), as CuPy does. ``by_id`` collects the stand-ins seen, so
    a result that is one of their NumPy arrays comes back as that stand-in.
    """
    if isinstance(obj, ndarray):
        if by_id is not None:
            by_id[id(obj._a)] = obj
        return obj._a
    if isinstance(obj, _np.ndarray):
        raise host_array_error(where)
    if obj is None or isinstance(obj, (SCALARS, str, slice, type(Ellipsis), _np.dtype, type)):
        return obj
    if isinstance(obj, (list, tuple)):
        items = [unwrap(o, where, by_id) for o in obj]
        if type(obj) in (list, tuple):
            return type(obj)(items)
        return type(obj)(*items)  # a namedtuple
    if any(hasattr(obj, a) for a in ("__array__", "__array_interface__",
                                      "__array_namespace__", "__dlpack__")):
        raise TypeError(f"{where}: unsupported type {type(obj).__module__}."
                        f"{type(obj).__qualname__} (CuPy takes cupy.ndarray)")
    return obj


def wrap_result(result, by_id: dict | None = None, scalars_as_arrays: bool = False):
    """NumPy results as stand-in arrays (NumPy scalars become 0-d arrays, as in CuPy)."""
    if isinstance(result, _np.ndarray):
        known = None if by_id is None else by_id.get(id(result))
        return known if known is not None else _wrap(result)
    if isinstance(result, _np.generic):
        return _wrap(_np.asarray(result))
    if scalars_as_arrays and isinstance(result, (bool, int, float, complex)):
        return _wrap(_np.asarray(result))
    if isinstance(result, tuple):
        items = [wrap_result(r, by_id, scalars_as_arrays) for r in result]
        return type(result)(*items) if hasattr(result, "_fields") else tuple(items)
    if isinstance(result, list):
        return [wrap_result(r, by_id, scalars_as_arrays) for r in result]
    return result


def check_operand(x, where: str):
    """An operand of a ufunc or operator: a stand-in array or a scalar."""
    if isinstance(x, ndarray) or isinstance(x, SCALARS):
        return
    if isinstance(x, _np.ndarray):
        raise host_array_error(where)
    raise TypeError(f"{where}: Unsupported type {type(x)}")


def check_out(out, where: str) -> None:
    """``out=`` must be a stand-in (device) array."""
    outs = out if isinstance(out, tuple) else (out,)
    for o in outs:
        if o is not None and not isinstance(o, ndarray):
            raise TypeError(f"{where}: out must be a cupy.ndarray, got {type(o).__module__}."
                            f"{type(o).__qualname__}")


# --- binding against the real signatures -------------------------------------------------

def bind(sig: inspect.Signature | None, args, kwargs, where: str):
    """Bind a call to the real CuPy signature; TypeError as CuPy would raise it."""
    if sig is None:
        return None
    try:
        return sig.bind(*args, **kwargs)
    except TypeError as exc:
        raise TypeError(f"{where}(): {exc} (CuPy {_api.CUPY_VERSION}: {where}{sig})") from None


def numpy_signature(func) -> inspect.Signature | None:
    try:
        return inspect.signature(func)
    except (TypeError, ValueError):
        return None


def realign(sig, np_sig, bound, args, kwargs):
    """The call's arguments laid out for NumPy's function.

    Positional arguments stay positional where NumPy's parameter at that
    place is the same one (``_same_place``); the others go by the CuPy name as
    keywords, so a NumPy parameter order that differs from CuPy's never swaps
    values. Without both signatures, the call as given.
    """
    if sig is None or np_sig is None or bound is None:
        return args, kwargs
    np_positional = [p for p in np_sig.parameters.values() if p.kind in _POSITIONAL]
    np_has_varargs = any(p.kind == p.VAR_POSITIONAL for p in np_sig.parameters.values())
    out_args, out_kwargs = [], {}
    positional_ok, index = True, 0
    for p in sig.parameters.values():
        if p.name not in bound.arguments:
            positional_ok = positional_ok and p.kind not in _POSITIONAL
            continue
        value = bound.arguments[p.name]
        if p.kind == p.VAR_POSITIONAL:
            out_args.extend(value)
        elif p.kind == p.VAR_KEYWORD:
            out_kwargs.update(value)
        elif p.kind in _POSITIONAL and positional_ok and (
                p.name == "self"
                or (index < len(np_positional) and _same_place(p, np_positional[index], sig, np_sig))
                or (index >= len(np_positional) and np_has_varargs)):
            out_args.append(value)
            index += 1
        else:
            out_kwargs[p.name] = value
            positional_ok = False
    return tuple(out_args), out_kwargs


def _same_place(p, np_p, sig, np_sig) -> bool:
    """Whether NumPy's parameter ``np_p`` takes the place of CuPy's ``p``.

    Yes when the names match, when NumPy's is positional-only, or when the
    names differ but neither appears elsewhere in the other's signature (a
    renamed parameter: ``newshape``/``shape``). No when a name is found at
    another place (the orders differ: CuPy's ``argmax(a, axis, dtype, out)``).
    """
    if np_p.name == p.name or np_p.kind == np_p.POSITIONAL_ONLY:
        return True
    return p.name not in np_sig.parameters and np_p.name not in sig.parameters


def typed_array_params(entry: dict) -> frozenset:
    """Parameters that Cython types as ``_ndarray_base`` in the real docstring."""
    return frozenset(re.findall(r"_ndarray_base\s+(\w+)", entry.get("doc_signature", "")))


def check_params(bound, where: str, typed: frozenset = frozenset()) -> None:
    """Refuse host ``out=``, lists where CuPy wants arrays, non-arrays for typed params."""
    if bound is None:
        return
    for name, value in bound.arguments.items():
        if name == "out":
            check_out(value, where)
        elif name in ARRAY_PARAMS and isinstance(value, (list, tuple, range)):
            raise TypeError(f"{where}: {name} must be a cupy.ndarray, not {type(value).__name__} "
                            f"(CuPy does not convert it; use cupy.asarray)")
        elif name in typed and not (value is None or isinstance(value, ndarray)):
            raise TypeError(f"Argument '{name}' has incorrect type (expected cupy._core.core."
                            f"_ndarray_base, got {type(value).__name__})")


def make_function(module: str, name: str, np_func, entry: dict, *, defaults=None):
    """A stand-in for the real ``module.name``, computed by ``np_func``.

    ``defaults`` are CuPy defaults that differ from NumPy's, passed when the
    caller leaves them out.
    """
    sig = _api.signature(entry)
    np_sig = numpy_signature(np_func)
    where = f"{module}.{name}"
    typed = typed_array_params(entry)

    def function(*args, **kwargs):
        bound = bind(sig, args, kwargs, where)
        check_params(bound, where, typed)
        call_args, call_kwargs = realign(sig, np_sig, bound, args, kwargs)
        for key, value in (defaults or {}).items():
            if bound is None or key not in bound.arguments:
                call_kwargs[key] = value
        by_id: dict = {}
        call_args = unwrap(call_args, where, by_id)
        call_kwargs = {k: unwrap(v, where, by_id) for k, v in call_kwargs.items()}
        result = np_func(*call_args, **call_kwargs)
        if name in SYNCING or (name == "where" and len(args) + len(kwargs) == 1):
            _standin.sync(name)
        return wrap_result(result, by_id, scalars_as_arrays=name in ARRAY_RESULT)

    return finish(function, module, name, sig, np_func)


def finish(function, module: str, name: str, sig, np_func=None):
    """Name, signature and doc of a stand-in callable."""
    function.__name__ = name
    function.__qualname__ = name
    function.__module__ = module
    if sig is not None:
        function.__signature__ = sig
    origin = f"numpy's {getattr(np_func, '__name__', name)}" if np_func is not None else "NumPy"
    function.__doc__ = (f"Stand-in for {module}.{name} (CuPy {_api.CUPY_VERSION}), "
                        f"computed by {origin} on the host.")
    return function


# --- ufunc ------------------------------------------------------------------------------

class ufunc:
    """A CuPy universal function, computed by NumPy's namesake."""

    def __init__(self, name: str, np_func, entry: dict):
        self.name = f"cupy_{name}"
        self.nin = entry.get("nin", getattr(np_func, "nin", 1))
        self.nout = entry.get("nout", getattr(np_func, "nout", 1))
        self.nargs = entry.get("nargs", self.nin + self.nout)
        self.__name__ = name
        self.__doc__ = f"Stand-in for cupy.{name} (CuPy {_api.CUPY_VERSION}), computed by NumPy."
        self._np = np_func
        self._sig = _api.signature(entry)
        self.__signature__ = self._sig

    def __repr__(self) -> str:
        return f"<ufunc '{self.name}'>"

    def __call__(self, *args, **kwargs):
        where = f"cupy.{self.__name__}"
        bind(self._sig, args, kwargs, where)
        inputs, outs = args[:self.nin], args[self.nin:]
        if "out" in kwargs:
            outs = kwargs.pop("out")
            outs = outs if isinstance(outs, tuple) else (outs,)
        if all(o is None for o in outs):
            outs = ()
        for x in inputs:
            check_operand(x, where)
        check_out(tuple(outs), where)
        by_id: dict = {}
        np_in = [unwrap(x, where) for x in inputs]
        np_out = tuple(unwrap(o, where, by_id) for o in outs)
        if outs and not isinstance(self._np, _np.ufunc):
            result = self._np(*np_in, **kwargs)
            for o, r in zip(np_out, result if self.nout > 1 else (result,)):
                _np.copyto(o, r, casting=kwargs.get("casting", "same_kind"))
            result = np_out if self.nout > 1 else np_out[0]
        elif outs:
            result = self._np(*np_in, out=np_out if self.nout > 1 else np_out[0], **kwargs)
        else:
            result = self._np(*np_in, **kwargs)
        return wrap_result(result, by_id)


_api.check_class(ufunc, "cupy.ufunc")


# --- ndarray ----------------------------------------------------------------------------

_BINARY = {"add": "add", "sub": "subtract", "mul": "multiply", "truediv": "true_divide",
           "floordiv": "floor_divide", "mod": "remainder", "pow": "power",
           "and": "bitwise_and", "or": "bitwise_or", "xor": "bitwise_xor",
           "lshift": "left_shift", "rshift": "right_shift", "matmul": "matmul",
           "divmod": "divmod"}
_COMPARE = {"lt": "less", "le": "less_equal", "gt": "greater", "ge": "greater_equal",
            "eq": "equal", "ne": "not_equal"}
_UNARY = {"neg": "negative", "pos": "positive", "abs": "absolute", "invert": "invert"}


def _operand(other, op: str):
    """``other`` unwrapped for an operator, or NotImplemented for foreign types."""
    if isinstance(other, ndarray):
        return other._a
    if isinstance(other, _np.ndarray):
        raise host_array_error(f"cupy.ndarray.__{op}__")
    if isinstance(other, SCALARS):
        return other
    return NotImplemented


def _binary(op: str, np_name: str):
    np_func = getattr(_np, np_name)

    def forward(self, other):
        o = _operand(other, op)
        return NotImplemented if o is NotImplemented else wrap_result(np_func(self._a, o))

    def reflected(self, other):
        o = _operand(other, "r" + op)
        return NotImplemented if o is NotImplemented else wrap_result(np_func(o, self._a))

    def inplace(self, other):
        o = _operand(other, "i" + op)
        if o is NotImplemented:
            return NotImplemented
        np_func(self._a, o, out=self._a)
        return self

    return {f"__{op}__": forward, f"__r{op}__": reflected, f"__i{op}__": inplace}


def _compare(op: str, np_name: str):
    np_func = getattr(_np, np_name)

    def compare(self, other):
        o = _operand(other, op)
        return NotImplemented if o is NotImplemented else wrap_result(np_func(self._a, o))

    return {f"__{op}__": compare}


def _unary(op: str, np_name: str):
    np_func = getattr(_np, np_name)
    return {f"__{op}__": lambda self: wrap_result(np_func(self._a))}


def _to_host_scalar(convert, reason: str):
    def method(self):
        _standin.device_to_host(self._a.itemsize, reason)
        return convert(self._a)
    return method


def _index(key, where: str):
    """An index for the NumPy array: stand-ins unwrapped, host arrays copied (counted)."""
    parts = key if isinstance(key, tuple) else (key,)
    out = []
    for k in parts:
        if isinstance(k, ndarray):
            if k._a.dtype == _np.bool_:
                _standin.sync("boolean mask")
            out.append(k._a)
        elif isinstance(k, (_np.ndarray, list)) and not isinstance(k, _np.generic):
            host = _np.asarray(unwrap(k, where) if isinstance(k, list) else k)
            _standin.host_to_device(host.nbytes, "index")
            if host.dtype == _np.bool_:
                _standin.sync("boolean mask")
            out.append(host)
        else:
            out.append(unwrap(k, where))
    if not any(p is Ellipsis for p in out):
        out.append(Ellipsis)  # integer indices give a 0-d view, as in CuPy
    return tuple(out)


class _Flags:
    """The flags of a stand-in array (those CuPy's ``flags`` has)."""

    def __init__(self, arr: _np.ndarray):
        self.c_contiguous = arr.flags.c_contiguous
        self.f_contiguous = arr.flags.f_contiguous
        self.owndata = arr.base is None

    def __getitem__(self, name: str) -> bool:
        return {"C_CONTIGUOUS": self.c_contiguous, "F_CONTIGUOUS": self.f_contiguous,
                "OWNDATA": self.owndata}[name]

    def __repr__(self) -> str:
        return (f"  C_CONTIGUOUS : {self.c_contiguous}\n  F_CONTIGUOUS : {self.f_contiguous}\n"
                f"  OWNDATA : {self.owndata}")


def _reconstruct(host: _np.ndarray) -> "ndarray":
    """Unpickling: the host copy back on the device."""
    _standin.host_to_device(host.nbytes, "unpickle")
    return _wrap(_np.array(host))


class _Impl:
    """Hand-written members of the stand-in ``ndarray``; only those the real
    ``cupy.ndarray`` of the selected version has are kept."""

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        if memptr is not None or strides is not None:
            raise NotImplementedError("the CuPy stand-in does not take memptr or strides")
        self._a = _np.empty(shape, dtype=dtype, order=order)
        _standin.memory.track(self._a)

    # conversions: never implicit, and a copy to the host when explicit
    def __array__(self, dtype=None, copy=None):
        raise TypeError(IMPLICIT_CONVERSION)

    def __array_ufunc__(self, ufunc_, method, *inputs, **kwargs):
        """A NumPy ufunc on stand-in arrays runs the stand-in's namesake, as in CuPy."""
        import cupy
        if method != "__call__":
            return NotImplemented
        mine = getattr(cupy, ufunc_.__name__, None) if ufunc_.__name__ in cupy.__all__ else None
        if mine is None:
            return NotImplemented
        return mine(*inputs, **kwargs)

    def __array_function__(self, func, types_, args, kwargs):
        """A NumPy function on stand-in arrays runs the stand-in's namesake, as in CuPy."""
        import cupy
        target = cupy
        for part in func.__module__.split(".")[1:]:
            if part.startswith("_"):
                continue
            target = getattr(target, part, None)
        name = func.__name__
        if target is None or name not in getattr(target, "__all__", ()):
            return NotImplemented
        return getattr(target, name)(*args, **kwargs)

    __array_priority__ = 100
    __hash__ = None

    def get(self, stream=None, order="C", out=None, blocking=True):
        return self._get(order, out, blocking, "get")

    def _get(self, order, out, blocking, reason):
        _standin.device_to_host(self._a.nbytes, reason, blocking)
        if out is not None:
            if not isinstance(out, _np.ndarray):
                raise TypeError("Only numpy.ndarray can be obtained from cupy.ndarray")
            if out.shape != self._a.shape or out.dtype != self._a.dtype:
                raise ValueError("Shape or dtype mismatch")
            _np.copyto(out, self._a)
            return out
        return _np.array(self._a, order=order, copy=True)

    def set(self, arr, stream=None):
        if not isinstance(arr, _np.ndarray):
            raise TypeError("Only numpy.ndarray can be set to cupy.ndarray")
        if self._a.dtype != arr.dtype:
            raise TypeError(f"{arr.dtype} array cannot be set to {self._a.dtype} array")
        if self._a.shape != arr.shape:
            raise ValueError(f"Shape mismatch. Old shape: {self._a.shape}, new shape: {arr.shape}")
        _standin.host_to_device(arr.nbytes, "set")
        _np.copyto(self._a, arr)

    def item(self):
        _standin.device_to_host(self._a.itemsize, "item")
        return self._a.item()

    def tolist(self):
        _standin.device_to_host(self._a.nbytes, "tolist")
        return self._a.tolist()

    def tobytes(self, order="C"):
        _standin.device_to_host(self._a.nbytes, "tobytes")
        return self._a.tobytes(order=order)

    def __bytes__(self):
        return self.tobytes()

    def tofile(self, fid, sep="", format="%s"):
        self.get().tofile(fid, sep=sep, format=format)

    def dumps(self):
        import pickle
        return pickle.dumps(self)

    def dump(self, file):
        import pickle
        if isinstance(file, str):
            with open(file, "wb") as f:
                pickle.dump(self, f)
        else:
            pickle.dump(self, file)

    __float__ = _to_host_scalar(float, "float")
    __int__ = _to_host_scalar(int, "int")
    __complex__ = _to_host_scalar(complex, "complex")
    __bool__ = _to_host_scalar(bool, "bool")

    def __repr__(self):
        _standin.device_to_host(self._a.nbytes, "repr")
        return repr(self._a)

    def __str__(self):
        _standin.device_to_host(self._a.nbytes, "str")
        return str(self._a)

    def __format__(self, spec):
        _standin.device_to_host(self._a.nbytes, "format")
        return format(self._a, spec)

    def __reduce__(self):
        return _reconstruct, (self.get(),)

    # shape and views
    shape = property(lambda self: self._a.shape,
                     lambda self, value: setattr(self._a, "shape", value))
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: _Flags(self._a))
    T = property(lambda self: _wrap(self._a.T))
    mT = property(lambda self: _wrap(self._a.mT))

    def _set_real(self, value):
        self._a.real = unwrap(value, "cupy.ndarray.real")

    def _set_imag(self, value):
        self._a.imag = unwrap(value, "cupy.ndarray.imag")

    real = property(lambda self: wrap_result(self._a.real), _set_real)
    imag = property(lambda self: wrap_result(self._a.imag), _set_imag)

    @property
    def device(self):
        from .cuda import Device
        return Device(0)

    def __len__(self):
        if self._a.ndim == 0:
            raise TypeError("len() of unsized object")
        return self._a.shape[0]

    def __iter__(self):
        if self._a.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(self._a.shape[0]))

    def __getitem__(self, key):
        return wrap_result(self._a[_index(key, "cupy.ndarray.__getitem__")])

    def __setitem__(self, key, value):
        where = "cupy.ndarray.__setitem__"
        if isinstance(value, _np.ndarray):
            if value.ndim > 0:
                raise host_array_error(where)
        elif isinstance(value, (list, tuple)):
            raise TypeError(f"{where}: Unsupported type {type(value)}")
        else:
            value = unwrap(value, where)
        self._a[_index(key, where)] = value

    def __delitem__(self, key):
        raise ValueError("cannot delete array elements")

    def __copy__(self):
        return _wrap(self._a.copy())

    def __deepcopy__(self, memo):
        return _wrap(self._a.copy())

    @classmethod
    def __class_getitem__(cls, params):
        return types.GenericAlias(cls, params)

    # methods whose CuPy behaviour differs from NumPy's
    def astype(self, dtype, order="K", casting=None, subok=None, copy=True):
        kwargs = {"order": order, "copy": copy}
        if casting is not None:
            kwargs["casting"] = casting
        result = self._a.astype(dtype, **kwargs)
        return self if result is self._a else _wrap(result)

    def reshape(self, *shape, **kwargs):
        return _wrap(self._a.reshape(*shape, **kwargs))

    def view(self, dtype=None, type=None):
        if type is not None:
            raise NotImplementedError("the CuPy stand-in does not take view(type=...)")
        return _wrap(self._a.view() if dtype is None else self._a.view(dtype))

    def copy(self, order="C"):
        return _wrap(self._a.copy(order=order))

    def fill(self, value):
        if isinstance(value, _np.ndarray) and value.ndim > 0:
            raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
        if isinstance(value, ndarray):
            if value.ndim > 0:
                raise ValueError("non-scalar cupy.ndarray cannot be used for fill")
            value = value._a
        self._a.fill(value)

    def dot(self, b, out=None):
        if not isinstance(b, ndarray):
            raise TypeError(f"Argument 'b' has incorrect type (expected cupy._core.core."
                            f"_ndarray_base, got {type(b).__name__})")
        check_out(out, "cupy.ndarray.dot")
        by_id = {} if out is None else {id(out._a): out}
        return wrap_result(self._a.dot(b._a, out=None if out is None else out._a), by_id)

    def nonzero(self):
        _standin.sync("nonzero")
        return wrap_result(self._a.nonzero())

    def reduced_view(self, dtype=None):
        return _wrap(self._a.view())

    def _scatter(self, np_ufunc, slices, value):
        where = "cupy.ndarray.scatter"
        np_ufunc.at(self._a, _index(slices, where), unwrap(value, where))

    def scatter_add(self, slices, value):
        self._scatter(_np.add, slices, value)

    def scatter_max(self, slices, value):
        self._scatter(_np.maximum, slices, value)

    def scatter_min(self, slices, value):
        self._scatter(_np.minimum, slices, value)


def _generic_method(name: str, entry: dict, defaults=None):
    """A method computed by NumPy's ndarray method (or function) of the same name."""
    np_method = getattr(_np.ndarray, name, None)
    np_func = np_method if np_method is not None else getattr(_np, name, None)
    if not callable(np_func):
        return None
    function = make_function("cupy.ndarray", name, np_func, entry, defaults=defaults)

    def method(self, *args, **kwargs):
        return function(self, *args, **kwargs)

    return finish(method, "cupy", name, getattr(function, "__signature__", None), np_func)


def _bound_method(name: str, entry: dict, func):
    """A hand-written method, called only with arguments the real signature takes."""
    sig = _api.signature(entry)
    where = f"cupy.ndarray.{name}"
    typed = typed_array_params(entry)

    def method(self, *args, **kwargs):
        check_params(bind(sig, (self,) + args, kwargs, where), where, typed)
        return func(self, *args, **kwargs)

    return finish(method, "cupy", name, sig)


def _not_implemented_member(self, name):
    if name in _api.members("cupy.ndarray"):
        raise AttributeError(f"'cupy.ndarray' (NumPy stand-in for CuPy {_api.CUPY_VERSION}) does "
                             f"not implement {name!r}, which the real CuPy has")
    raise AttributeError(f"'cupy.ndarray' object has no attribute {name!r}")


def _build_ndarray() -> type:
    """The stand-in ``ndarray`` with exactly the real members it implements."""
    real = set(_api.members("cupy.ndarray")) | _api.special_names("cupy.ndarray")
    namespace = {"__slots__": ("_a", "__weakref__"), "__module__": "cupy",
                 "__doc__": "cupy.ndarray stand-in: a NumPy array playing device memory.",
                 "__getattr__": _not_implemented_member}
    for name, value in vars(_Impl).items():
        if name in ("__dict__", "__weakref__", "__module__", "__qualname__", "__doc__"):
            continue
        if (name.startswith("_") and not name.endswith("__")) or name in real:
            namespace[name] = value
    for table, maker in ((_BINARY, _binary), (_COMPARE, _compare), (_UNARY, _unary)):
        for op, np_name in table.items():
            for dunder, func in maker(op, np_name).items():
                if dunder in real:
                    namespace[dunder] = func
    defaults = {"put": {"mode": "wrap"}}
    for name, entry in _api.members("cupy.ndarray").items():
        if name in namespace and entry["kind"] == "method":
            namespace[name] = _bound_method(name, entry, namespace[name])
        elif name not in namespace and entry["kind"] == "method":
            method = _generic_method(name, entry, defaults.get(name))
            if method is not None:
                namespace[name] = method
    return type("ndarray", (), namespace)


ndarray = _build_ndarray()
