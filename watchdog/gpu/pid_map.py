"""GPU process PID -> container, through /proc/<pid>/cgroup.

NVML reports host PIDs. They mean something only when this process sees the
host's PID namespace (a host install, or `pid: host` in compose); otherwise
mapping is off and zero-VRAM falls back to the GPU's used memory.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from watchdog.gpu.assignment import GONE, HOST

_ID_RE = re.compile(r"(?<![0-9a-f])([0-9a-f]{64})(?![0-9a-f])")


CONTAINER_INITS = ("docker-init", "tini", "dumb-init", "catatonit")


def sees_host_pids(proc: Path = Path("/proc"), my_pid: int | None = None) -> bool:
    """True in the host's PID namespace, where NVML's PIDs mean something.

    NSpid alone cannot tell: /proc mounted inside a container lists one PID too. So
    also: PID 1 must not be this process, a container init, or a process in a
    container's cgroup (a container without `pid: host` sees its own PID 1).
    """
    my_pid = os.getpid() if my_pid is None else my_pid
    try:
        nspid = [line for line in (proc / "self" / "status").read_text().splitlines() if line.startswith("NSpid:")]
        if not nspid or len(nspid[0].split()[1:]) != 1:
            return False  # nested namespace, or a kernel before 4.1 without NSpid: do not guess
        if my_pid == 1:
            return False
        if (proc / "1" / "comm").read_text().strip() in CONTAINER_INITS:
            return False
        return container_of_cgroup((proc / "1" / "cgroup").read_text()) is None
    except OSError:
        return False


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
