"""Stand-in for ``cupy.cuda.runtime``: one device, and the recorded constants."""
from __future__ import annotations

from .. import _api, _standin
from .._namespace import implement
from . import device as _device

_VERSION = 12080  # CUDA 12.8, as cupy-cuda12x would report it
_ERRORS = {101: ("cudaErrorInvalidDevice", "invalid device ordinal")}


class CUDARuntimeError(RuntimeError):
    """A CUDA runtime error, with its status code."""

    __module__ = "cupy_backends.cuda.api.runtime"

    def __init__(self, status):
        self.status = status
        name, text = _ERRORS.get(status, ("cudaErrorUnknown", "unknown error"))
        super().__init__(f"{name}: {text}")

    def __reduce__(self):
        return type(self), (self.status,)


@implement("cupy.cuda.runtime")
def getDeviceCount():
    return _device._DEVICE_COUNT


@implement("cupy.cuda.runtime")
def getDevice():
    return 0


@implement("cupy.cuda.runtime")
def setDevice(device):
    _device._check_id(int(device))


@implement("cupy.cuda.runtime")
def deviceSynchronize():
    """Wait for the device: counted as a sync."""
    _standin.sync("deviceSynchronize")


@implement("cupy.cuda.runtime")
def runtimeGetVersion():
    return _VERSION


@implement("cupy.cuda.runtime")
def driverGetVersion():
    return _VERSION


@implement("cupy.cuda.runtime")
def memGetInfo():
    return _device.Device(0).mem_info


@implement("cupy.cuda.runtime")
def getDeviceProperties(device):
    _device._check_id(int(device))
    major, minor = _device._COMPUTE_CAPABILITY
    return {"name": b"NumPy stand-in for CuPy (no GPU)", "totalGlobalMem": _device._TOTAL_MEMORY,
            "major": int(major), "minor": int(minor), "multiProcessorCount": 1,
            "warpSize": 32, "pciBusID": 0, "pciDeviceID": 0, "pciDomainID": 0}


def _implemented() -> dict:
    out = {name: _api.constant(entry) for name, entry in _api.names("cupy.cuda.runtime").items()
           if _api.has_constant_value(entry)}
    out.update(CUDARuntimeError=CUDARuntimeError, getDeviceCount=getDeviceCount,
               getDevice=getDevice, setDevice=setDevice, deviceSynchronize=deviceSynchronize,
               runtimeGetVersion=runtimeGetVersion, driverGetVersion=driverGetVersion,
               memGetInfo=memGetInfo, getDeviceProperties=getDeviceProperties)
    return out


_api.publish(globals(), "cupy.cuda.runtime", _implemented())
