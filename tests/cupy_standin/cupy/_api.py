"""The recorded API of the real CuPy that the stand-in imitates.

The version is chosen by the environment variable ``LVAE_NP_CUPY_STANDIN``
("13" or "14", default "14"), read once when the stand-in is imported; the
names and signatures come from ``tests/cupy_standin/api/cupy-<version>.json``
(written by ``tests/cupy_standin/extract_api.py`` from the real wheels).

``publish`` is how every stand-in module exports its names: only names the
real module has are accepted, ``__all__`` lists exactly those implemented,
and asking for a real name the stand-in lacks raises an AttributeError that
says so.
"""
from __future__ import annotations

import ast
import inspect
import json
import os
import pathlib

ENV_VAR = "LVAE_NP_CUPY_STANDIN"
DEFAULT_VERSION = "14"
API_DIR = pathlib.Path(__file__).resolve().parent.parent / "api"


def _selected_version() -> int:
    value = os.environ.get(ENV_VAR, DEFAULT_VERSION).strip() or DEFAULT_VERSION
    path = API_DIR / f"cupy-{value}.json"
    if not value.isdigit() or not path.exists():
        known = sorted(p.stem.split("-")[1] for p in API_DIR.glob("cupy-*.json"))
        raise ImportError(f"{ENV_VAR}={value!r}: no recorded CuPy API for it "
                          f"(recorded: {', '.join(known)})")
    return int(value)


VERSION: int = _selected_version()
RECORD: dict = json.loads((API_DIR / f"cupy-{VERSION}.json").read_text())
CUPY_VERSION: str = RECORD["cupy_version"]


def names(module: str) -> dict[str, dict]:
    """The recorded public names of the real ``module`` ("cupy", "cupy.cuda"...)."""
    return RECORD["modules"][module]["names"]


def members(cls: str) -> dict[str, dict]:
    """The recorded public members of the real class ``cls`` ("cupy.ndarray"...)."""
    return RECORD["classes"][cls]["members"]


def special_names(cls: str) -> set[str]:
    """The special (dunder) names the real class ``cls`` has."""
    return set(RECORD["classes"][cls]["special"])


class RecordedDefault:
    """A default value of a real signature, known by its repr only."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _signature_from(params: list[dict]) -> inspect.Signature:
    out = []
    for p in params:
        kind = getattr(inspect.Parameter, p["kind"])
        default = RecordedDefault(p["default"]) if "default" in p else inspect.Parameter.empty
        out.append(inspect.Parameter(p["name"], kind, default=default))
    return inspect.Signature(out)


def _only_varargs(params: list[dict]) -> bool:
    return all(p["kind"] in ("VAR_POSITIONAL", "VAR_KEYWORD") for p in params)


def signature(entry: dict) -> inspect.Signature | None:
    """The real signature of a recorded callable, or None when unknown.

    ``inspect.signature``'s is preferred; the docstring's is used when inspect
    had none, or only ``(*args, **kwargs)`` (CuPy's ``matmul`` in 13).
    """
    params = entry.get("params")
    doc = entry.get("doc_params")
    if params is not None and not (doc is not None and _only_varargs(params)):
        return _signature_from(params)
    if doc is not None:
        return _signature_from(doc)
    return None


def literal_default(default) -> object:
    """A recorded default as a Python value, or ``inspect.Parameter.empty``."""
    if isinstance(default, RecordedDefault):
        try:
            return ast.literal_eval(default.text)
        except (ValueError, SyntaxError):
            return inspect.Parameter.empty
    return default


def constant(entry: dict) -> object:
    """The value of a recorded constant ('inf'/'nan' stored as text)."""
    value = entry.get("value")
    if isinstance(value, str) and entry.get("type") == "builtins.float":
        return float(value)
    return value


def has_constant_value(entry: dict) -> bool:
    return entry["kind"] == "constant" and (
        entry.get("value") is not None or entry.get("type") == "builtins.NoneType")


class NotInRealCupy(AttributeError):
    """A name that the real CuPy of the selected version does not have."""


def publish(module_globals: dict, module: str, implemented: dict[str, object]) -> None:
    """Export ``implemented`` as the public names of the stand-in ``module``.

    Every key must be a public name of the real module (a stand-in bug
    otherwise). Public names already in ``module_globals`` that the real
    module lacks are removed, so helpers never leak. A module ``__getattr__``
    explains the real names that the stand-in does not implement.
    """
    real = names(module)
    extra = sorted(set(implemented) - set(real))
    if extra:
        raise RuntimeError(f"stand-in bug: {module} would expose {extra}, "
                           f"which CuPy {CUPY_VERSION} lacks")
    for name in [n for n in module_globals if not n.startswith("_") and n not in real]:
        del module_globals[name]
    module_globals.update(implemented)
    # Names the real module gives lazily (its __getattr__) are not in its dir() nor `import *`.
    public = sorted(n for n in module_globals
                    if not n.startswith("_") and not real[n].get("lazy"))
    module_globals["__all__"] = public

    def __getattr__(name: str):
        if name in real:
            raise AttributeError(
                f"module {module!r} (NumPy stand-in for CuPy {CUPY_VERSION}) does not "
                f"implement {name!r}, which the real CuPy has")
        raise NotInRealCupy(f"module {module!r} has no attribute {name!r} "
                            f"(CuPy {CUPY_VERSION} has none either)")

    def __dir__():
        return list(public)

    module_globals["__getattr__"] = __getattr__
    module_globals["__dir__"] = __dir__


def check_class(cls: type, recorded: str) -> None:
    """Refuse (at import) a stand-in class with public members the real one lacks."""
    real = set(members(recorded))
    extra = sorted(n for n in dir(cls) if not n.startswith("_") and n not in real)
    if extra:
        raise RuntimeError(f"stand-in bug: {recorded} would expose {extra}, "
                           f"which CuPy {CUPY_VERSION} lacks")
