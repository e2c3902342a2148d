"""Stand-in for ``cupy.cuda.device``: a single device, number 0."""
from __future__ import annotations

from .. import _api, _standin
from .._namespace import implement

_DEVICE_COUNT = 1
_COMPUTE_CAPABILITY = "90"
_TOTAL_MEMORY = 64 * 2**30


def _check_id(device_id: int) -> None:
    if not 0 <= device_id < _DEVICE_COUNT:
        from .runtime import CUDARuntimeError
        raise CUDARuntimeError(101)  # cudaErrorInvalidDevice


class Device:
    """A CUDA device of the stand-in (only device 0 exists)."""

    __module__ = "cupy.cuda.device"

    def __init__(self, device=None):
        self.id = 0 if device is None else int(device)

    def __int__(self) -> int:
        return self.id

    def __repr__(self) -> str:
        return f"<CUDA Device {self.id}>"

    def __eq__(self, other) -> bool:
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self) -> int:
        return hash(("cupy.cuda.Device", self.id))

    def __enter__(self) -> "Device":
        _check_id(self.id)
        return self

    def __exit__(self, *exc) -> None:
        return None

    def use(self) -> None:
        _check_id(self.id)

    def synchronize(self) -> None:
        """Wait for the device: counted as a sync."""
        _check_id(self.id)
        _standin.sync("Device.synchronize")

    @property
    def compute_capability(self) -> str:
        return _COMPUTE_CAPABILITY

    @property
    def mem_info(self) -> tuple[int, int]:
        return _TOTAL_MEMORY - _standin.memory.used_bytes, _TOTAL_MEMORY

    @property
    def attributes(self) -> dict:
        return {}

    @property
    def pci_bus_id(self) -> str:
        return "0000:00:00.0"


_api.check_class(Device, "cupy.cuda.Device")


@implement("cupy.cuda.device")
def get_device_id():
    return 0


@implement("cupy.cuda.device")
def get_compute_capability():
    return _COMPUTE_CAPABILITY


_api.publish(globals(), "cupy.cuda.device", {
    "Device": Device, "get_device_id": get_device_id,
    "get_compute_capability": get_compute_capability})
