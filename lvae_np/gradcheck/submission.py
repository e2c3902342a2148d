"""A student's copy of the package, loaded beside lvae_np for grading (``grade(..., submission=DIR)``).

A release (``lvae_np.course``) gives each student a copy of lvae_np whose
assigned functions are stubs; a student may fill them in there. The
instructor grades that copy from the full package's environment:
``Submission(DIR)`` loads ``DIR/lvae_np`` under a private package name (its
relative imports stay inside it), takes every assigned function from it, and
while grading (``grading.submitted``) makes the copy's own calls to assigned
functions reach lvae_np's binding, the reference or the one being graded.
"""
from __future__ import annotations

import importlib
import importlib.util
import itertools
import sys
from pathlib import Path

from . import ownership, points


class SubmissionError(ValueError):
    """A submission folder that cannot be graded; the message is one line."""


_LOADED = itertools.count()  # numbers the private names of loaded copies


def assigned_functions() -> list:
    """Every function an assignment asks for under the package's name (``"layers.dense_backward"``),
    in the point table's order."""
    found = []
    for assignment in points.ASSIGNMENTS:
        found += [f for f in assignment.functions if "." in f and f not in found]
    return found


def _one_line(exc: BaseException) -> str:
    message = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


class Submission:
    """A student's copy of lvae_np, loaded as a package of its own (``_lvae_np_submission_<n>``).

    Its modules import each other with relative imports, so they stay inside
    the copy; nothing is written into its folder (no bytecode).

    Attributes:
        folder: the submission's folder (the one holding ``lvae_np/``), resolved.
        name: the private package name it is loaded under.
        functions: ``"layers.dense_backward"`` -> the copy's function, for every
            assigned function (``assigned_functions``).
    """

    def __init__(self, folder):
        self.folder = Path(folder).expanduser().resolve()
        root = self.folder / "lvae_np"
        if not (root / "__init__.py").is_file():
            raise SubmissionError(f"{folder} holds no lvae_np/ package (no "
                                  f"{root / '__init__.py'}): give the folder a release wrote")
        if root.resolve() == Path(ownership.PACKAGE_DIR):
            raise SubmissionError(f"{root} is the lvae_np running this grader (run from inside "
                                  f"{folder}?): grade it from the instructor's environment, "
                                  "outside the submission's folder")
        self.name = f"_lvae_np_submission_{next(_LOADED)}"
        keys = assigned_functions()
        spec = importlib.util.spec_from_file_location(
            self.name, root / "__init__.py", submodule_search_locations=[str(root)])
        package = importlib.util.module_from_spec(spec)
        writes, sys.dont_write_bytecode = sys.dont_write_bytecode, True
        sys.modules[self.name] = package
        try:
            spec.loader.exec_module(package)
            modules = {key.rpartition(".")[0] for key in keys}
            self.modules = {m: importlib.import_module(f"{self.name}.{m}") for m in sorted(modules)}
        except Exception as exc:  # noqa: BLE001 (a student's file, in one line)
            self.unload()
            raise SubmissionError(f"{root} does not import: {_one_line(exc)}") from None
        finally:
            sys.dont_write_bytecode = writes
        self.functions = {}
        for key in keys:
            module_name, _, name = key.rpartition(".")
            function = getattr(self.modules[module_name], name, None)
            if not callable(function):
                self.unload()
                raise SubmissionError(f"{root / (module_name.replace('.', '/') + '.py')} has no "
                                      f"function {name}: the assignments ask for it")
            self.functions[key] = function

    def forwarders(self) -> list:
        """``(module, name, forwarder)`` for every assigned function of the copy: what to put in
        place while grading (``grading.submitted``), so that the copy's modules call lvae_np's
        binding of each, as it is when called (the reference, or a student's function put in
        place)."""
        targets = []
        for key in self.functions:
            module_name, _, name = key.rpartition(".")
            targets.append((self.modules[module_name], name, _forwarder(module_name, name)))
        return targets

    def unload(self) -> None:
        """Forget the copy's modules (``sys.modules``); the functions taken from it still work."""
        for name in [n for n in sys.modules if n == self.name or n.startswith(self.name + ".")]:
            del sys.modules[name]


def _forwarder(module_name: str, name: str):
    """A function calling ``lvae_np.<module_name>.<name>`` as it is bound when called."""
    def forward(*args, **kwargs):
        return getattr(importlib.import_module(f"lvae_np.{module_name}"), name)(*args, **kwargs)

    forward.__name__ = forward.__qualname__ = name
    return forward

