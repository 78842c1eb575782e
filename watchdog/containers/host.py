"""Observe the host: MemAvailable for the RAM preflight (seed 004), MemTotal for the capacity planner."""

from __future__ import annotations

from pathlib import Path

MEMINFO = Path("/proc/meminfo")


def _meminfo(field: str, meminfo: Path) -> int | None:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def mem_available(meminfo: Path = MEMINFO) -> int | None:
    """Bytes the kernel says can be allocated without swapping; None if unknown."""
    return _meminfo("MemAvailable", meminfo)


def mem_total(meminfo: Path = MEMINFO) -> int | None:
    """The host's RAM, for the capacity planner's memory check; None if unknown."""
    return _meminfo("MemTotal", meminfo)
