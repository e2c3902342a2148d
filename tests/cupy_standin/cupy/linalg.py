"""Stand-in for ``cupy.linalg``: NumPy's ``numpy.linalg`` behind CuPy's names and signatures."""
from __future__ import annotations

import numpy as _np

from . import _api
from ._namespace import build as _build

_api.publish(globals(), "cupy.linalg", _build("cupy.linalg", _np.linalg))
