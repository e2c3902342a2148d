"""Stand-ins for ``cupy.cuda.Stream`` and ``cupy.cuda.MemoryPool``."""
from __future__ import annotations

from .. import _api, _standin


class Stream:
    """A CUDA stream of the stand-in: work is done at once, ``synchronize`` is counted."""

    __module__ = "cupy.cuda.stream"

    def __init__(self, null=False, non_blocking=False, ptds=False, priority=None):
        self._kind = "null" if null else "ptds" if ptds else "new"

    def __repr__(self) -> str:
        return f"<Stream {self._kind} (device 0)>"

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def use(self) -> "Stream":
        return self

    def synchronize(self) -> None:
        """Wait for the stream: counted as a sync."""
        _standin.sync("Stream.synchronize")

    @property
    def done(self) -> bool:
        return True


Stream.null = Stream(null=True)
Stream.ptds = Stream(ptds=True)
_api.check_class(Stream, "cupy.cuda.Stream")


class MemoryPool:
    """A device memory pool: ``used_bytes()`` follows the live stand-in arrays.

    Freed arrays stay counted in ``total_bytes()`` (cached by the pool) until
    ``free_all_blocks()``, as in CuPy. Every pool reports the same memory.
    """

    __module__ = "cupy.cuda.memory"

    def __init__(self, allocator=None):
        self._limit = 0

    def used_bytes(self) -> int:
        return _standin.memory.used_bytes

    def free_bytes(self) -> int:
        return _standin.memory.cached_bytes

    def total_bytes(self) -> int:
        return self.used_bytes() + self.free_bytes()

    def n_free_blocks(self) -> int:
        return 1 if _standin.memory.cached_bytes else 0

    def free_all_blocks(self, stream=None) -> None:
        _standin.memory.cached_bytes = 0

    def free_all_free(self) -> None:
        self.free_all_blocks()

    def set_limit(self, size=None, fraction=None) -> None:
        self._limit = int(size or 0)

    def get_limit(self) -> int:
        return self._limit


_api.check_class(MemoryPool, "cupy.cuda.MemoryPool")
_default_pool = MemoryPool()
