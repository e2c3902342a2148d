"""A NumPy-backed stand-in for CuPy, no more permissive than the real one.

Import it as ``cupy`` with ``tests/cupy_standin`` first on ``sys.path`` (see
``tests/cupy_standin/__init__.py``: ``activate(version)``). The environment
variable ``LVAE_NP_CUPY_STANDIN`` ("13" or "14", default "14") selects which
real CuPy's API it has: its public names and signatures are read from
``tests/cupy_standin/api/cupy-<version>.json``, recorded from the real wheels.

* A name the real CuPy lacks raises AttributeError; a real name the stand-in
  does not implement raises AttributeError saying so. ``__all__`` lists the
  implemented real names.
* Calls are bound against the real signatures (a keyword the real function
  lacks is a TypeError), then NumPy computes.
* Arrays (``cupy.ndarray``) hold NumPy arrays as their "device memory", have no
  ``__array_namespace__`` (nor has CuPy), refuse implicit conversion to NumPy
  (``numpy.asarray(x)`` raises TypeError), and refuse NumPy arrays as
  operands, arguments and ``out=``, as CuPy does.
* ``cupy._standin`` counts host<->device copies and syncs (``count_traffic()``,
  ``traffic``) and device memory (``memory``).
"""
from __future__ import annotations

if __name__ != "cupy":
    raise ImportError("import the CuPy stand-in as `cupy` (tests/cupy_standin first on sys.path, "
                      "or cupy_standin.activate(version)), not as " + repr(__name__))

import numpy as _np

from . import _api, _standin  # noqa: F401
from . import _core, _creation  # noqa: F401  (cupy._core: the ndarray and ufunc)
from ._namespace import build as _build
from . import cuda, fft, linalg, random  # noqa: F401

__version__ = _api.CUPY_VERSION

_submodules = {"cuda": cuda, "fft": fft, "linalg": linalg, "random": random}
_api.publish(globals(), "cupy", {**_build("cupy", _np, {**_creation.special(), **_submodules})})
