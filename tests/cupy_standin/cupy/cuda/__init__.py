"""Stand-in for ``cupy.cuda``: one device, the null stream, the memory pool."""
from __future__ import annotations

from .. import _api
from .._namespace import implement
from . import device, runtime
from ._objects import MemoryPool, Stream, _default_pool  # noqa: F401
from .device import Device


@implement("cupy.cuda")
def get_current_stream(*args, **kwargs):
    return Stream.null


@implement("cupy.cuda")
def get_device_id():
    return 0


@implement("cupy.cuda")
def is_available():
    return True


_api.publish(globals(), "cupy.cuda", {
    "Device": Device, "Stream": Stream, "MemoryPool": MemoryPool, "device": device,
    "runtime": runtime, "get_current_stream": get_current_stream,
    "get_device_id": get_device_id, "is_available": is_available})
