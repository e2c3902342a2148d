"""Building a stand-in module's names from the recorded API and NumPy."""
from __future__ import annotations

import importlib

import numpy as _np

from . import _api, _core


def implement(module: str, name: str | None = None):
    """Decorator: ``func`` stands in for the real ``module.name``.

    Calls are bound against the recorded real signature first, so a keyword
    the real one lacks is refused even where ``func`` would take it.
    """
    def decorate(func):
        real_name = name or func.__name__
        entry = _api.names(module).get(real_name)  # None: not published for this version
        sig = _api.signature(entry) if entry is not None else None
        where = f"{module}.{real_name}"

        def function(*args, **kwargs):
            _core.bind(sig, args, kwargs, where)
            return func(*args, **kwargs)

        function = _core.finish(function, module, real_name, sig)
        function.__doc__ = func.__doc__ or function.__doc__
        return function
    return decorate


def _numpy_class(qualname: str):
    """The NumPy class a recorded CuPy name is (``numpy.exceptions.AxisError``...)."""
    module_name, _, attr = qualname.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError):
        return None


def build(module: str, np_module, special: dict | None = None, skip=frozenset()) -> dict:
    """The implemented public names of the stand-in ``module``.

    ``special`` holds hand-written ones; otherwise a real name is implemented
    when NumPy has the same object (re-exported, as CuPy does), a constant
    with a recorded value, a NumPy class (exceptions, dtype, finfo...), a
    dtype, or a ufunc/function that ``np_module`` has under the same name
    (wrapped). Names in ``skip`` and the rest stay unimplemented.
    """
    special = special or {}
    out = {}
    for name, entry in _api.names(module).items():
        if name in special:
            out[name] = special[name]
        elif name in skip or entry["kind"] == "module":
            continue
        else:
            value = _generic(module, name, entry, np_module)
            if value is not _MISSING:
                out[name] = value
    return out


_MISSING = object()


def _generic(module: str, name: str, entry: dict, np_module):
    kind = entry["kind"]
    np_obj = getattr(np_module, name, None) if np_module is not None else None
    if entry.get("numpy_same") and hasattr(np_module, name):
        return np_obj
    if _api.has_constant_value(entry):
        return _api.constant(entry)
    if kind == "class" and entry.get("qualname", "").startswith("numpy."):
        cls = _numpy_class(entry["qualname"])
        return _MISSING if cls is None else cls
    if kind == "dtype" and hasattr(_np, name):
        return getattr(_np, name)
    if kind == "ufunc" and callable(np_obj):
        return _core.ufunc(name, np_obj, entry)
    if kind == "function" and callable(np_obj) and not isinstance(np_obj, type):
        return _core.make_function(module, name, np_obj, entry)
    return _MISSING
