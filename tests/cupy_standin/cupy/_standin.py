"""What the stand-in counts: host<->device traffic, synchronizations, memory.

This module is the stand-in's own (real CuPy has no ``cupy._standin``)::

    import cupy
    from cupy._standin import count_traffic, traffic, memory

    with count_traffic() as t:
        y = cupy.asarray(host_batch)     # h2d_copies += 1, h2d_bytes += nbytes
        loss = float(y.sum())            # syncs += 1, d2h_copies += 1
    assert t.syncs == 1 and t.h2d_copies == 1

Counted (each is what a real GPU would do):

* ``h2d_copies``/``h2d_bytes``: host data made into a device array --
  ``asarray``/``array``/``asanyarray`` of host data (NumPy arrays, lists,
  Python or NumPy scalars), ``ndarray.set``, a NumPy array or list used as an
  index (CuPy copies it to the device implicitly).
* ``d2h_copies``/``d2h_bytes``: device data copied to the host -- ``get``,
  ``asnumpy``, ``tolist``, ``item``, ``tobytes``, ``float``/``int``/``bool``/
  ``complex``, ``repr``/``str``/``format`` of an array.
* ``syncs``: the host waits for the device -- every device->host copy above
  (``get``/``asnumpy`` only when ``blocking=True``, their default),
  ``Device.synchronize``, ``Stream.synchronize``,
  ``cuda.runtime.deviceSynchronize``, and the operations whose output shape
  depends on the data (boolean-mask indexing, ``nonzero``, ``argwhere``,
  ``flatnonzero``, ``unique``, ``extract``, ``compress``, one-argument ``where``).

``reasons`` counts the syncs and copies by what caused them (e.g.
``{"sync:float": 2, "d2h:get": 1}``). ``traffic`` is the running total,
``traffic.reset()`` zeroes it, ``count_traffic()`` gives the difference over a
``with`` block (live inside it, frozen after).

``memory`` follows the bytes of live device arrays (what
``cupy.get_default_memory_pool().used_bytes()`` reports) and their peak:
``memory.used_bytes``, ``memory.peak_bytes``, ``memory.reset_peak()``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import weakref
from collections import Counter

from . import _api

#: Marks this ``cupy`` as the stand-in (the real CuPy has no ``cupy._standin``).
IS_STANDIN = True

#: The selected real CuPy version (13 or 14) and its full version string.
VERSION = _api.VERSION
CUPY_VERSION = _api.CUPY_VERSION
ENV_VAR = _api.ENV_VAR

FIELDS = ("h2d_copies", "h2d_bytes", "d2h_copies", "d2h_bytes", "syncs")


@dataclasses.dataclass
class Traffic:
    """Counts of host<->device copies and synchronizations."""

    h2d_copies: int = 0
    h2d_bytes: int = 0
    d2h_copies: int = 0
    d2h_bytes: int = 0
    syncs: int = 0
    reasons: Counter = dataclasses.field(default_factory=Counter)

    def snapshot(self) -> "Traffic":
        """A frozen copy of the counts now."""
        return Traffic(*(getattr(self, f) for f in FIELDS), reasons=Counter(self.reasons))

    def reset(self) -> None:
        """Zero every count."""
        for f in FIELDS:
            setattr(self, f, 0)
        self.reasons.clear()

    def __sub__(self, other: "Traffic") -> "Traffic":
        reasons = Counter(self.reasons)
        reasons.subtract(other.reasons)
        return Traffic(*(getattr(self, f) - getattr(other, f) for f in FIELDS),
                       reasons=+reasons)

    @property
    def copies(self) -> int:
        """Copies in either direction."""
        return self.h2d_copies + self.d2h_copies


#: The running totals since import (or the last ``traffic.reset()``).
traffic = Traffic()


class TrafficWindow:
    """The traffic since it was opened: live until closed, then frozen."""

    def __init__(self):
        self._start = traffic.snapshot()
        self._frozen: Traffic | None = None

    def close(self) -> None:
        if self._frozen is None:
            self._frozen = traffic.snapshot() - self._start

    @property
    def counts(self) -> Traffic:
        """The counts as a ``Traffic`` (a copy)."""
        return self._frozen.snapshot() if self._frozen is not None else traffic.snapshot() - self._start

    def __getattr__(self, name):
        if name in FIELDS or name in ("reasons", "copies"):
            return getattr(self.counts, name)
        raise AttributeError(name)

    def __repr__(self) -> str:
        c = self.counts
        return ("TrafficWindow(" + ", ".join(f"{f}={getattr(c, f)}" for f in FIELDS)
                + f", reasons={dict(c.reasons)})")


@contextlib.contextmanager
def count_traffic():
    """``with count_traffic() as t:`` -- ``t`` holds the traffic of the block."""
    window = TrafficWindow()
    try:
        yield window
    finally:
        window.close()


def host_to_device(nbytes: int, reason: str) -> None:
    """Count one host->device copy of ``nbytes``."""
    traffic.h2d_copies += 1
    traffic.h2d_bytes += int(nbytes)
    traffic.reasons[f"h2d:{reason}"] += 1


def sync(reason: str) -> None:
    """Count one synchronization (the host waits for the device)."""
    traffic.syncs += 1
    traffic.reasons[f"sync:{reason}"] += 1


def device_to_host(nbytes: int, reason: str, blocking: bool = True) -> None:
    """Count one device->host copy of ``nbytes`` (and its sync when blocking)."""
    traffic.d2h_copies += 1
    traffic.d2h_bytes += int(nbytes)
    traffic.reasons[f"d2h:{reason}"] += 1
    if blocking:
        sync(reason)


class Memory:
    """Bytes held by live device arrays, as a memory pool would report them."""

    def __init__(self):
        self.used_bytes = 0
        self.peak_bytes = 0
        self.cached_bytes = 0  # freed but kept by the pool until free_all_blocks()
        self._live: dict[int, int] = {}

    def track(self, buffer) -> None:
        """Count a NumPy buffer that backs device arrays, until it is collected."""
        key = id(buffer)
        if key in self._live:
            return
        nbytes = int(buffer.nbytes)
        self._live[key] = nbytes
        self.used_bytes += nbytes
        self.cached_bytes = max(0, self.cached_bytes - nbytes)
        self.peak_bytes = max(self.peak_bytes, self.used_bytes)
        weakref.finalize(buffer, self._release, key)

    def _release(self, key: int) -> None:
        nbytes = self._live.pop(key, 0)
        self.used_bytes -= nbytes
        self.cached_bytes += nbytes

    def reset_peak(self) -> None:
        """Start a new peak from the bytes in use now."""
        self.peak_bytes = self.used_bytes


memory = Memory()
