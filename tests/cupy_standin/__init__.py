"""The CuPy stand-in for tests: ``activate(version)`` makes ``import cupy`` get it.

``tests/cupy_standin/cupy`` is a NumPy-backed package named ``cupy`` whose
public API is that of a real CuPy version (13 or 14), recorded in
``tests/cupy_standin/api/cupy-<version>.json`` by ``extract_api.py``.

In a test process::

    from cupy_standin import activate
    cupy = activate(14)          # sys.path[0] = this folder, LVAE_NP_CUPY_STANDIN=14

In a subprocess::

    PYTHONPATH=tests/cupy_standin LVAE_NP_CUPY_STANDIN=13 python -m lvae_np.train --backend cupy

The counters of host<->device traffic are in ``cupy._standin`` (see its docstring).
"""
from __future__ import annotations

import importlib
import os
import pathlib
import sys
from types import ModuleType

FOLDER = pathlib.Path(__file__).resolve().parent
ENV_VAR = "LVAE_NP_CUPY_STANDIN"
VERSIONS = tuple(sorted(int(p.stem.split("-")[1]) for p in (FOLDER / "api").glob("cupy-*.json")))


def is_standin(module) -> bool:
    """Whether ``module`` is this stand-in (not the real CuPy)."""
    return getattr(getattr(module, "_standin", None), "IS_STANDIN", False) is True


def activate(version: int | None = None) -> ModuleType:
    """Import the stand-in as ``cupy`` with the API of CuPy ``version``; return it.

    ``version`` None: ``$LVAE_NP_CUPY_STANDIN``, else 14. Puts this folder
    first on ``sys.path`` and sets ``$LVAE_NP_CUPY_STANDIN`` (so subprocesses
    that put the folder on ``PYTHONPATH`` get the same version). Idempotent for
    the same version. Raises RuntimeError when this process already imported
    the real CuPy, or the stand-in of another version (a process holds one
    ``cupy``).
    """
    version = int(version if version is not None else os.environ.get(ENV_VAR) or 14)
    if version not in VERSIONS:
        raise ValueError(f"no recorded CuPy API for version {version} (have {VERSIONS})")
    loaded = sys.modules.get("cupy")
    if loaded is not None:
        if not is_standin(loaded):
            raise RuntimeError(f"the real CuPy ({loaded.__file__}) is already imported in this "
                               "process; the stand-in cannot replace it")
        if loaded._standin.VERSION != version:
            raise RuntimeError(f"the CuPy stand-in is already active with the API of CuPy "
                               f"{loaded._standin.VERSION}; cannot switch to {version} in the "
                               "same process (use a subprocess with "
                               f"{ENV_VAR}={version})")
        return loaded
    if str(FOLDER) not in sys.path:
        sys.path.insert(0, str(FOLDER))
    os.environ[ENV_VAR] = str(version)
    module = importlib.import_module("cupy")
    if not is_standin(module):
        raise RuntimeError(f"`import cupy` found {module.__file__}, not the stand-in")
    return module
