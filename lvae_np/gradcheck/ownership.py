"""Whose code is it: the autograder refuses a function that the student did not write.

Autograding runs with the full package installed, so an answer cell holding
only ``from lvae_np.layers import batchnorm_backward`` would otherwise hand
the package's own backward to ``grade(..., using={...})`` and score its
points. ``refusal(key, function, original)`` says in one line why
``function``, given for ``key`` (``"layers.batchnorm_backward"``), is not the
student's own, or returns None. It is not the student's when it

1. is not a function written in Python (a builtin, a NumPy ufunc);
2. is lvae_np's own: its module is lvae_np's, its code lies in the installed
   package's folder, or its code object is a package function's
   (``types.FunctionType(layers.batchnorm_backward.__code__, ...)``); also
   through ``functools.partial``, ``functools.wraps`` and bound methods;
3. is a copy of the package's function for ``key``: the same bytecode, names
   and constants, docstring included (its source, exec'd). In a student's
   copy of the package the docstring is the package's, less its solution
   regions: there, the same code is a copy when the docstring still holds
   the answer (the package's file, copied), not when the student's body
   happens to be the package's under a docstring the release left whole;
4. calls the package's function for ``key`` that it stands in for, held as
   a global, a default or a closure variable, itself or through helpers of
   its own, defined beside it (``ref = layers.batchnorm_backward`` before a
   wrapper);
5. is defined outside the notebook, when ``grade`` runs in one (an IPython
   kernel: ``nbgrader autograde``, ``pytest --nbmake``, JupyterLab): in a
   module or a file other than a cell; or, when a student's copy of the
   package is graded (``grade(..., submission=DIR)``), outside that copy's
   folder ``DIR``: there, a function of the copy's own files is the student's
   (rules 1 to 4 still hold: a copy of the package's own code is refused).

A function written in a notebook cell has ``__module__ == "__main__"`` and a
code "file" that names the cell: ipykernel (6 and later, under IPython 8 and
9) compiles a cell as ``<tmp>/ipykernel_<pid>/<hash>.py``, a file that does
not exist; the terminal IPython as ``<ipython-input-<n>-<hash>>``. Source
a notebook exec's itself has a pseudo-file such as ``<string>`` and no
module: also the student's.

The package's own tests grade package functions with ``allow_package=True``
(no refusal at all), or without ``using`` (the package as installed).
"""
from __future__ import annotations

import functools
import os
import re
import sys
import types

PACKAGE_DIR = os.path.realpath(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The pseudo-file of a notebook cell: ipykernel's, then the terminal IPython's.
CELL_FILE = re.compile(r"(?:[\\/]ipykernel_\d+[\\/]\w+\.py|^<ipython-input-\d+-\w+>)$")


def layers_of(function) -> list:
    """``function`` and what it wraps: partials' functions, ``__wrapped__``, bound methods' functions."""
    found, seen = [], set()
    while function is not None and id(function) not in seen:
        seen.add(id(function))
        found.append(function)
        if isinstance(function, functools.partial):
            function = function.func
        elif isinstance(function, types.MethodType):
            function = function.__func__
        else:
            function = getattr(function, "__dict__", {}).get("__wrapped__")
    return found


def python_function(function):
    """The Python function that runs when ``function`` is called, or None (a builtin, a ufunc)."""
    inner = layers_of(function)[-1]
    if isinstance(inner, types.FunctionType):
        return inner
    call = getattr(type(inner), "__call__", None)  # an instance of a class of the notebook's
    return call if isinstance(call, types.FunctionType) else None


def _in_package(filename: str) -> bool:
    if not filename or filename.startswith("<"):
        return False
    path = os.path.realpath(os.path.abspath(filename))
    return path == PACKAGE_DIR or path.startswith(PACKAGE_DIR + os.sep)


def package_name(function) -> str | None:
    """``"lvae_np.layers.batchnorm_backward"`` when ``function`` is lvae_np's own code, else None."""
    module = getattr(function, "__module__", None) or ""
    name = getattr(function, "__qualname__", None) or getattr(function, "__name__", "?")
    if module == "lvae_np" or module.startswith("lvae_np."):
        return f"{module}.{name}"
    code = getattr(function, "__code__", None)
    if not isinstance(code, types.CodeType):
        return None
    if _in_package(code.co_filename):  # the package's code, in a function made anew
        where = os.path.relpath(os.path.realpath(code.co_filename), os.path.dirname(PACKAGE_DIR))
        return f"{name} (made from the code of {where})"
    return None


def same_code(a: types.CodeType, b: types.CodeType) -> bool:
    """Whether two code objects were compiled from the same source (wherever it was compiled)."""
    if (a.co_code, a.co_names, a.co_varnames, a.co_freevars, a.co_cellvars) != (
            b.co_code, b.co_names, b.co_varnames, b.co_freevars, b.co_cellvars):
        return False
    if len(a.co_consts) != len(b.co_consts):
        return False
    for x, y in zip(a.co_consts, b.co_consts):
        if isinstance(x, types.CodeType) and isinstance(y, types.CodeType):
            if not same_code(x, y):
                return False
        elif type(x) is not type(y) or x != y:
            return False
    return True


ANSWER_MARK = "### " + "BEGIN SOLUTION"  # what a docstring of the instructor's package holds


def answer_in_docstring(function) -> bool:
    """Whether ``function``'s docstring holds a solution region (only the instructor's package has
    them: a release cuts them)."""
    return ANSWER_MARK in (getattr(function, "__doc__", None) or "")


def _is(value, package: str) -> bool:
    """Whether calling ``value`` runs the package's function ``package``
    (``"lvae_np.layers.batchnorm_backward"``): itself, or a partial or wrapper of it."""
    qualname = package.rpartition(".")[2]
    for layer in layers_of(value):
        code = getattr(layer, "__code__", None)
        if package_name(layer) == package or (
                isinstance(code, types.CodeType) and _in_package(code.co_filename)
                and code.co_qualname == qualname):
            return True
    return False


def _names(code: types.CodeType) -> set:
    """Every global or attribute name ``code`` and the functions nested in it use."""
    found = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            found |= _names(const)
    return found


def _reaches(function: types.FunctionType, package: str, seen: set) -> str | None:
    """The name by which ``function`` (or a helper of its own it calls) holds the package's
    function ``package`` (``"lvae_np.layers.batchnorm_backward"``)."""
    if id(function) in seen:
        return None
    seen.add(id(function))
    held = [(name, function.__globals__[name]) for name in sorted(_names(function.__code__))
            if name in function.__globals__]
    held += [(name, cell.cell_contents)
             for name, cell in zip(function.__code__.co_freevars, function.__closure__ or ())
             if _filled(cell)]
    held += [("a default argument", v) for v in function.__defaults__ or ()]
    held += [(f"the default of {k}", v) for k, v in (function.__kwdefaults__ or {}).items()]
    for name, value in held:
        if _is(value, package):
            return name
    for _, value in held:  # helpers of its own: of the same notebook or file, not libraries'
        helper = python_function(value) if callable(value) else None
        if helper is not None and package_name(helper) is None and (
                helper.__globals__ is function.__globals__
                or helper.__module__ in ("__main__", None)):
            found = _reaches(helper, package, seen)
            if found:
                return found
    return None


def _filled(cell) -> bool:
    try:
        cell.cell_contents
    except ValueError:  # an empty cell: the variable is not bound yet
        return False
    return True


def in_notebook() -> bool:
    """Whether this runs inside an IPython shell or kernel (a notebook, nbgrader, nbmake)."""
    ipython = sys.modules.get("IPython")
    get = getattr(ipython, "get_ipython", None)
    return get is not None and get() is not None


def _outside_notebook(function: types.FunctionType) -> str | None:
    """Where ``function`` was defined, when that is not this notebook; else None."""
    module = function.__module__
    filename = function.__code__.co_filename
    if module not in ("__main__", None):
        return f"module {module}"
    if not CELL_FILE.search(filename) and os.path.isfile(filename):
        return filename
    return None


def _outside_folder(function: types.FunctionType, folder) -> str | None:
    """Where ``function`` was defined, when that is not a file inside ``folder``; else None."""
    filename = function.__code__.co_filename
    if filename and not filename.startswith("<"):
        path = os.path.realpath(os.path.abspath(filename))
        if path.startswith(os.path.realpath(os.path.abspath(folder)) + os.sep):
            return None
        return path
    return filename or "an unknown file"


def refusal(key: str, function, original=None, *, notebook: bool | None = None,
            submission=None) -> str | None:
    """One line saying why ``function``, given for ``key``, is not the student's own; None if it is.

    Args:
        key: what it stands in for, ``"layers.batchnorm_backward"``.
        function: the function given.
        original: what the package's module holds for ``key`` now, to spot
            copies of it when it is the package's own.
        notebook: whether to require that it comes from the notebook (default:
            whether this runs in an IPython kernel, ``in_notebook()``).
            Not asked with ``submission``.
        submission: the folder of a student's copy of the package that the
            function comes from (``grade(..., submission=DIR)``): it must be
            defined in a file inside it.
    """
    for layer in layers_of(function):
        found = package_name(layer)
        if found:
            what = (found if layer is function
                    else f"a {type(function).__name__} around {found}")
            return (f"{key}: {what} is lvae_np's own code, not yours: write the function "
                    + ("in your copy of the package" if submission is not None
                       else "in the notebook"))
    inner = python_function(function)
    if inner is None:
        return f"{key}: a {type(function).__name__} is not a function you wrote in Python"
    original_code = getattr(original, "__code__", None)
    # A copy: the same code as the package's function for key, where that is the instructor's
    # (its docstring holds the answer's region; in a student's copy, installed, the package's
    # function is the student's own). From a submission, only its file copied counts: its
    # docstring kept the region.
    if (package_name(original) and isinstance(original_code, types.CodeType)
            and answer_in_docstring(original)
            and same_code(inner.__code__, original_code)
            and (submission is None or answer_in_docstring(inner))):
        return f"{key}: {inner.__name__} is a copy of lvae_np's own {key}, not one you wrote"
    name = _reaches(inner, f"lvae_np.{key.removeprefix('lvae_np.')}", set())
    if name:
        return (f"{key}: {inner.__name__} calls lvae_np's own {key} ({name}), "
                "so its result is not yours")
    if submission is not None:
        where = _outside_folder(inner, submission)
        if where:
            return (f"{key}: {inner.__name__} is defined in {where}, not in the submission "
                    f"{submission}")
    elif notebook if notebook is not None else in_notebook():
        where = _outside_notebook(inner)
        if where:
            return (f"{key}: {inner.__name__} is defined in {where}, not in this notebook: "
                    "write it in its answer cell")
    return None
