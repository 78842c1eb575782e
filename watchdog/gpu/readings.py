"""What NVML showed of the GPUs: plain readings, apart from the code that reads them. Pure.

The NVML probe (`nvml`) builds these under a deadline; the judging code (`vram`, `orphans`,
`assignment`, `status_view`, the supervisor) only reads them, so it needs no NVML binding.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum


class NvmlState(StrEnum):
    OK = "ok"
    NO_DRIVER = "no-driver"  # no libnvidia-ml, or the driver is not loaded: GPU checks off
    HUNG = "driver-hung"  # a call did not return within the deadline
    ERROR = "error"  # NVML answered with an unexpected error


class GpuHealth(StrEnum):
    OK = "ok"
    LOST = "lost"  # fallen off the bus / Xid 79: needs a host reboot
    ERROR = "error"


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    used_memory: int | None  # None: the driver does not say (e.g. under some virtualisation)


@dataclass(frozen=True)
class GpuSnapshot:
    """One GPU as NVML showed it; None fields were unsupported or unreadable."""

    index: int
    health: GpuHealth = GpuHealth.OK
    uuid: str | None = None
    bus_id: str | None = None
    name: str | None = None
    memory_total: int | None = None
    memory_used: int | None = None
    temperature: int | None = None
    temperature_slowdown: int | None = None  # the GPU's own thresholds (nvmlDeviceGetTemperatureThreshold), C
    temperature_shutdown: int | None = None
    clock_event_reasons: int | None = None
    ecc_uncorrected: int | None = None  # volatile: since the last driver reload
    ecc_corrected: int | None = None  # volatile
    ecc_uncorrected_aggregate: int | None = None  # over the GPU's life
    ecc_corrected_aggregate: int | None = None  # over the GPU's life
    retired_pages: int | None = None  # retired for double-bit errors
    retired_pages_single_bit: int | None = None  # retired for repeated single-bit errors
    retired_pages_pending: bool | None = None  # a retirement waits for the next driver reload
    remapped_rows_pending: bool | None = None
    remapped_rows_correctable: int | None = None
    remapped_rows_uncorrectable: int | None = None
    remapped_rows_failed: bool | None = None  # a remap failed: no spare rows left
    pcie_replays: int | None = None  # the PCIe replay counter (cumulative)
    processes: tuple[GpuProcess, ...] = ()
    unsupported: tuple[str, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class GpuReading:
    state: NvmlState
    at: float
    duration: float
    gpus: tuple[GpuSnapshot, ...] = ()
    detail: str = ""
    driver_version: str | None = None
    errors: tuple[str, ...] = field(default_factory=tuple)


# nvmlClocksEventReason* bits (nvml.h); the names operators see in nvidia-smi -q.
CLOCK_EVENT_REASONS = {
    0x1: "gpu-idle",
    0x2: "applications-clocks-setting",
    0x4: "sw-power-cap",
    0x8: "hw-slowdown",
    0x10: "sync-boost",
    0x20: "sw-thermal-slowdown",
    0x40: "hw-thermal-slowdown",
    0x80: "hw-power-brake-slowdown",
    0x100: "display-clock-setting",
}


def clock_reason_names(mask: int | None) -> list[str] | None:
    """Decode the throttle bitmask; None when unsupported. Idle is not throttling but is shown."""
    if mask is None:
        return None
    names = [name for bit, name in CLOCK_EVENT_REASONS.items() if mask & bit]
    unknown = mask & ~sum(CLOCK_EVENT_REASONS)
    if unknown:
        names.append(f"0x{unknown:x}")
    return names


_BUS = re.compile(
    r"^(?:PCI:)?(?:(?P<domain>[0-9a-fA-F]{1,8}):)?(?P<bus>[0-9a-fA-F]{1,2}):(?P<dev>[0-9a-fA-F]{1,2})(?:\.[0-7])?$"
)


def normalise_bus_id(bus: str) -> str:
    """One spelling for a PCI address, so kernel-log and NVML events can be matched.

    "0000:3b:00", "00000000:3B:00.0" (NVML's busId), "3b:00.0", "PCI:0000:3b:00"
    all give "0000:3b:00" (4-hex domain, lower case, bus:device, no function).
    Anything else comes back stripped and lower-cased rather than raising.
    """
    text = bus.strip()
    match = _BUS.match(text)
    if not match:
        return text.lower()
    domain = int(match.group("domain") or "0", 16)
    return f"{domain:04x}:{int(match.group('bus'), 16):02x}:{int(match.group('dev'), 16):02x}"
