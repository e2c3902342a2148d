"""Stand-in for ``cupy.fft``: NumPy's ``numpy.fft`` behind CuPy's names and signatures."""
from __future__ import annotations

import numpy as _np

from . import _api
from ._namespace import build as _build

_api.publish(globals(), "cupy.fft", _build("cupy.fft", _np.fft))
