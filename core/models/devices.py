"""Which compute devices this machine has, with names and free memory, for people to choose from."""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import StudioError


@dataclass(frozen=True)
class Device:
    id: str  # "cpu", "cuda:0", "mps"
    name: str
    free_bytes: int | None
    total_bytes: int | None


def ram_available() -> tuple[int, int]:
    """(available, total) bytes of system memory; cheap and torch-free, so the app can poll it."""
    import psutil

    memory = psutil.virtual_memory()
    return memory.available, memory.total


def available_devices() -> list[Device]:
    """The CPU, every CUDA GPU, and Apple's MPS where present."""
    import psutil
    import torch

    memory = psutil.virtual_memory()
    devices = [Device("cpu", f"CPU ({psutil.cpu_count(logical=True)} threads)", memory.available, memory.total)]
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(index)
            devices.append(Device(f"cuda:{index}", torch.cuda.get_device_name(index), free, total))
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append(Device("mps", "Apple GPU (MPS)", None, None))
    return devices


def resolve_device(requested: str = "auto") -> str:
    """``auto`` picks the first GPU, else the CPU; an unavailable device is a clear error."""
    known = [d.id for d in available_devices()]
    if requested == "auto":
        return next((d for d in known if d != "cpu"), "cpu")
    if requested == "cuda":
        requested = "cuda:0"
    if requested not in known:
        raise StudioError(f"device {requested!r} is not available here; choose one of {', '.join(known)}")
    return requested
