"""GPU process PID -> container, through /proc/<pid>/cgroup.

NVML reports host PIDs. They mean something only when this process sees the
host's PID namespace (a host install, or `pid: host` in compose); otherwise
mapping is off and zero-VRAM falls back to the GPU's used memory.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from watchdog.gpu_map import GONE, HOST

_ID_RE = re.compile(r"(?<![0-9a-f])([0-9a-f]{64})(?![0-9a-f])")


def sees_host_pids(status: Path = Path("/proc/self/status")) -> bool:
    """True in the host's PID namespace: NSpid lists one PID there, one per nested namespace otherwise."""
    try:
        for line in status.read_text().splitlines():
            if line.startswith("NSpid:"):
                return len(line.split()[1:]) == 1
    except OSError:
        return False
    return False  # kernels before 4.1 have no NSpid: do not guess


def container_of_cgroup(text: str) -> str | None:
    """The 64-hex container ID in a cgroup file (cgroupfs `/docker/ID`, systemd `docker-ID.scope`)."""
    for line in text.splitlines():
        if "docker" in line or "containerd" in line or "libpod" in line or "kubepods" in line:
            match = _ID_RE.search(line)
            if match:
                return match.group(1)
    return None


def owner_of(pid: int, proc: Path = Path("/proc")) -> str:
    """A container ID, HOST (a live process in no container), or GONE (no such process)."""
    try:
        text = (proc / str(pid) / "cgroup").read_text()
    except FileNotFoundError:
        return GONE
    except OSError:
        return HOST  # exists but unreadable: not ours to judge
    return container_of_cgroup(text) or HOST


def owners(pids: Iterable[int], proc: Path = Path("/proc")) -> dict[int, str]:
    return {pid: owner_of(pid, proc) for pid in set(pids)}
