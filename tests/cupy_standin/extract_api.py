"""Record the public API of an installed (real) CuPy into ``api/cupy-<major>.json``.

The CuPy stand-in (``tests/cupy_standin/cupy``) exposes only names and
signatures found in these files, so it is never more permissive than the real
library. CuPy's wheels install and import without a GPU: introspection works,
only kernels fail. Run this script with a Python that has the real CuPy, e.g.::

    python3 -m venv /tmp/cupy13
    /tmp/cupy13/bin/pip install cupy-cuda12x==13.6.0
    /tmp/cupy13/bin/python tests/cupy_standin/extract_api.py      # -> api/cupy-13.json

    python3 -m venv /tmp/cupy14
    /tmp/cupy14/bin/pip install cupy-cuda12x==14.2.0
    /tmp/cupy14/bin/python tests/cupy_standin/extract_api.py      # -> api/cupy-14.json

(``--out PATH`` writes elsewhere.) The venvs live outside the repository and
can be deleted afterwards.

What is recorded, for the modules ``cupy``, ``cupy.random``, ``cupy.cuda``,
``cupy.cuda.runtime``, ``cupy.cuda.device``, ``cupy.linalg`` and ``cupy.fft``:
every public name (not starting with ``_``; also the ones a module
``__getattr__`` gives lazily, marked ``lazy``) with its kind -- ``function``,
``ufunc`` (with nin/nout), ``class``, ``module``, ``dtype`` (NumPy scalar
types), ``constant`` (with its value when JSON can hold it) or ``object`` --
whether it is the very object NumPy has under the same name (``numpy_same``),
and, for callables, the signatures: ``signature``/``params`` where
``inspect.signature`` gives one, and ``doc_signature``/``doc_params`` from the
first line of the docstring where it has one (Cython methods and ufuncs, which
inspect cannot read; Cython's parameter types are dropped). ``params`` lists
each parameter's name, kind and default repr. For the classes
``cupy.ndarray``, ``cupy.ufunc``, ``cupy.random.Generator``,
``cupy.cuda.Device``, ``cupy.cuda.Stream`` and ``cupy.cuda.MemoryPool``: their
public members (methods with signatures, attributes) and every special
(dunder) name the class has, own or inherited.
"""
from __future__ import annotations

import argparse
import ast
import inspect
import json
import math
import pathlib
import re
import sys
import types
import warnings

import numpy

MODULES = ("cupy", "cupy.random", "cupy.cuda", "cupy.cuda.runtime", "cupy.cuda.device",
           "cupy.linalg", "cupy.fft")
CLASSES = ("cupy.ndarray", "cupy.ufunc", "cupy.random.Generator", "cupy.cuda.Device",
           "cupy.cuda.Stream", "cupy.cuda.MemoryPool")


def json_value(value):
    """``value`` if JSON can hold it exactly (floats inf/nan as strings), else None."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    return None


def params_of(sig: inspect.Signature) -> list[dict]:
    """The parameters of ``sig`` as JSON: name, kind, and the default's repr."""
    out = []
    for p in sig.parameters.values():
        entry = {"name": p.name, "kind": p.kind.name}
        if p.default is not inspect.Parameter.empty:
            entry["default"] = repr(p.default)
        out.append(entry)
    return out


def doc_signature(obj) -> str | None:
    """The ``(...)`` signature on the first line of ``obj``'s docstring, if any."""
    doc = getattr(obj, "__doc__", None)
    if not isinstance(doc, str) or not doc.strip():
        return None
    first = doc.strip().splitlines()[0].replace("\\*", "*")
    match = re.match(r"^[\w.]+(\(.*\))(\s*->.*)?$", first)
    return match.group(1) if match else None


def split_top_level(text: str) -> list[str]:
    """``text`` split at the commas that are not inside brackets or quotes."""
    parts, depth, quote, current = [], 0, None, ""
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        current += ch
    if current.strip():
        parts.append(current)
    return parts


def drop_cython_types(text: str) -> str:
    """``(self, int axis=-1, _ndarray_base b)`` -> ``(self, axis=-1, b)``."""
    params = []
    for part in split_top_level(text.strip()[1:-1]):
        match = re.match(r"^\s*(?:[A-Za-z_][\w.]*\s+)+(\**[A-Za-z_]\w*\s*(?:=.*)?)$", part, re.S)
        params.append(match.group(1) if match else part.strip())
    return "(" + ", ".join(params) + ")"


def parse_signature_text(text: str) -> inspect.Signature | None:
    """An ``inspect.Signature`` from a ``(a, b=1, *, c=None)`` text, or None.

    Cython's typed parameters (``int axis=-1``) lose their type.
    """
    try:
        tree = ast.parse(f"def _f{drop_cython_types(text)}: pass")
    except SyntaxError:
        return None
    args = tree.body[0].args
    params = []
    positional = args.posonlyargs + args.args
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    for i, (a, d) in enumerate(zip(positional, defaults)):
        kind = (inspect.Parameter.POSITIONAL_ONLY if i < len(args.posonlyargs)
                else inspect.Parameter.POSITIONAL_OR_KEYWORD)
        params.append(_param(a.arg, kind, d))
    if args.vararg:
        params.append(_param(args.vararg.arg, inspect.Parameter.VAR_POSITIONAL, None))
    for a, d in zip(args.kwonlyargs, args.kw_defaults):
        params.append(_param(a.arg, inspect.Parameter.KEYWORD_ONLY, d))
    if args.kwarg:
        params.append(_param(args.kwarg.arg, inspect.Parameter.VAR_KEYWORD, None))
    try:
        return inspect.Signature(params)
    except ValueError:
        return None


def _param(name, kind, default_node):
    if default_node is None:
        return inspect.Parameter(name, kind)
    return inspect.Parameter(name, kind, default=_DocDefault(ast.unparse(default_node)))


class _DocDefault:
    """A default value known only as source text (from a docstring)."""

    def __init__(self, text):
        self.text = text

    def __repr__(self):
        return self.text


def describe_callable(obj) -> dict:
    """Signature fields of a callable: from inspect, else from its docstring."""
    entry = {}
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        sig = None
    if sig is not None:
        entry["signature"] = str(sig)
        entry["params"] = params_of(sig)
    doc = doc_signature(obj)
    if doc is not None:
        entry["doc_signature"] = doc
        parsed = parse_signature_text(doc)
        if parsed is not None:
            entry["doc_params"] = params_of(parsed)
    return entry


def describe(name: str, obj, numpy_namespace) -> dict:
    """The JSON entry of one public name."""
    entry: dict = {}
    same = numpy_namespace is not None and getattr(numpy_namespace, name, None) is obj
    if same:
        entry["numpy_same"] = True
    type_name = f"{type(obj).__module__}.{type(obj).__qualname__}"
    if isinstance(obj, types.ModuleType):
        entry["kind"] = "module"
        entry["module"] = obj.__name__
    elif isinstance(obj, type) and issubclass(obj, numpy.generic):
        entry["kind"] = "dtype"
    elif isinstance(obj, type):
        entry["kind"] = "class"
        entry["qualname"] = f"{obj.__module__}.{obj.__qualname__}"
        entry["is_exception"] = issubclass(obj, BaseException)
        entry.update(describe_callable(obj))
    elif type(obj).__name__ == "ufunc" or isinstance(obj, numpy.ufunc):
        entry["kind"] = "ufunc"
        entry["type"] = type_name
        for attr in ("nin", "nout", "nargs"):
            value = getattr(obj, attr, None)
            if isinstance(value, int):
                entry[attr] = value
        entry.update(describe_callable(obj))
    elif callable(obj):
        entry["kind"] = "function"
        entry["type"] = type_name
        entry.update(describe_callable(obj))
    elif isinstance(obj, (bool, int, float, complex, str, type(None), numpy.generic)):
        entry["kind"] = "constant"
        entry["type"] = type_name
        entry["value"] = json_value(obj.item() if isinstance(obj, numpy.generic) else obj)
    else:
        entry["kind"] = "object"
        entry["type"] = type_name
    return entry


def public_names(obj) -> list[str]:
    return sorted(n for n in dir(obj) if not n.startswith("_"))


def lazy_names(module) -> list[str]:
    """Public names that the module's ``__getattr__`` gives but ``dir()`` does not list.

    Candidates are the string literals its source compares the name with
    (``key == 'Generator'``) and the names in a ``_deprecated_apis`` list.
    """
    getattr_func = vars(module).get("__getattr__")
    if getattr_func is None:
        return []
    try:
        source = inspect.getsource(getattr_func)
    except (OSError, TypeError):
        source = ""
    candidates = set(re.findall(r"==\s*['\"]([A-Za-z]\w*)['\"]", source))
    candidates |= set(getattr(module, "_deprecated_apis", ()))
    return sorted(n for n in candidates if n not in dir(module))


def describe_module(module, numpy_namespace) -> dict:
    names = {}
    lazy = set(lazy_names(module))
    for name in public_names(module) + sorted(lazy):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                obj = getattr(module, name)
        except AttributeError:
            if name in lazy:  # a string in __getattr__ that is no name after all
                continue
            raise
        except Exception as exc:  # a lazy attribute that fails without a GPU
            names[name] = {"kind": "unavailable", "error": f"{type(exc).__name__}: {exc}"}
        else:
            names[name] = describe(name, obj, numpy_namespace)
        if name in lazy:
            names[name]["lazy"] = True  # given by __getattr__, not in dir() nor `import *`
    out = {"names": names}
    if hasattr(module, "__all__"):
        out["__all__"] = sorted(module.__all__)
    return out


def describe_class(cls) -> dict:
    members = {}
    for name in public_names(cls):
        raw = inspect.getattr_static(cls, name)
        obj = getattr(cls, name)
        kind_of_raw = type(raw).__name__
        if kind_of_raw in ("getset_descriptor", "member_descriptor", "property"):
            entry = {"kind": "attribute"}
        elif isinstance(raw, (staticmethod, classmethod)) or callable(obj) and not isinstance(obj, type):
            entry = {"kind": "method", "type": kind_of_raw}
            entry.update(describe_callable(obj))
        else:
            entry = {"kind": "class attribute", "type": f"{type(obj).__module__}.{type(obj).__qualname__}"}
        members[name] = entry
    dunders = sorted(n for n in dir(cls) if n.startswith("__") and n.endswith("__"))
    special = {}
    for name in dunders:
        entry = {}
        obj = getattr(cls, name, None)
        if callable(obj) and not isinstance(obj, type):
            entry.update(describe_callable(obj))
        special[name] = entry
    return {"qualname": f"{cls.__module__}.{cls.__qualname__}", "members": members,
            "special": special, **describe_callable(cls)}


def resolve(dotted: str):
    import importlib
    module_name, _, attr = dotted.rpartition(".")
    return getattr(importlib.import_module(module_name), attr)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="output file (default: api/cupy-<major>.json beside this script)")
    args = parser.parse_args(argv)

    import importlib

    # This script's folder holds the stand-in package `cupy`: keep it off the path.
    here = pathlib.Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if pathlib.Path(p or ".").resolve() != here]
    import cupy
    if hasattr(cupy, "_standin"):
        raise SystemExit(f"`import cupy` found the stand-in ({cupy.__file__}), not the real CuPy")

    numpy_of = {"cupy": numpy, "cupy.linalg": numpy.linalg, "cupy.fft": numpy.fft,
                "cupy.random": numpy.random}
    record = {
        "cupy_version": cupy.__version__,
        "numpy_version": numpy.__version__,
        "python_version": sys.version.split()[0],
        "modules": {},
        "classes": {},
    }
    for name in MODULES:
        module = importlib.import_module(name)
        record["modules"][name] = describe_module(module, numpy_of.get(name))
    for name in CLASSES:
        record["classes"][name] = describe_class(resolve(name))

    major = cupy.__version__.split(".")[0]
    out = pathlib.Path(args.out) if args.out else (
        pathlib.Path(__file__).resolve().parent / "api" / f"cupy-{major}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    print(f"wrote {out}: CuPy {cupy.__version__}, "
          f"{len(record['modules']['cupy']['names'])} names in cupy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
