"""Orphaned GPU memory: which GPU processes belong to no running container.

Pure. Given one NVML reading's processes, who owns each PID (`pid_map`, host PIDs
only) and which containers run, it names the orphans; reporting them once and the
opt-in kill are `orphan_watch`'s. A PID with no owner known (mapping off, or not
mapped) or one of the host's own processes is never an orphan: the watchdog
judges only what it can attribute.

Two steps, because the second needs the engine: `suspects` holds processes whose
container is not running in this cycle's snapshot, or whose process is gone;
`confirm` keeps a container's process only when the engine's list of running
containers (read just now) lacks it too. No list (the engine did not answer):
only the gone processes are confirmed.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from watchdog.gpu.assignment import GONE, HOST, gpu_key
from watchdog.gpu.readings import GpuSnapshot


@dataclass(frozen=True)
class Orphan:
    """One GPU process that nothing running owns."""

    gpu: str  # GPU key (UUID, else index:N)
    index: int
    pid: int
    memory: int | None  # bytes it holds; None when the driver does not say
    owner: str  # the container ID it belonged to, or GONE (no such process)

    @property
    def process_gone(self) -> bool:
        """Memory held by a dead context: nothing to kill, only a GPU reset frees it."""
        return self.owner == GONE

    @property
    def why(self) -> str:
        if self.process_gone:
            return "its process is gone (memory held by a dead context: reset the GPU)"
        return f"its container {self.owner[:12]} is not running"

    def row(self) -> dict[str, Any]:
        """The orphan as `gpu-watchdog status` shows it."""
        return {"gpu": self.gpu, "index": self.index, "pid": self.pid, "memory": self.memory, "why": self.why}


def suspects(gpus: Sequence[GpuSnapshot], owners: Mapping[int, str] | None, running: Collection[str]) -> list[Orphan]:
    """Processes of a container not running in this snapshot, or of no process at all. `owners` None: mapping off."""
    if owners is None:
        return []
    found: list[Orphan] = []
    for gpu in gpus:
        for process in gpu.processes:
            owner = owners.get(process.pid)
            if owner is None or owner == HOST or owner in running:
                continue
            found.append(Orphan(gpu_key(gpu), gpu.index, process.pid, process.used_memory, owner))
    return found


def needs_engine(candidates: Sequence[Orphan]) -> bool:
    """Whether `confirm` needs the engine's running containers (a suspect belongs to a container)."""
    return any(not orphan.process_gone for orphan in candidates)


def confirm(candidates: Sequence[Orphan], live: Collection[str] | None) -> list[Orphan]:
    """Suspects the engine agrees are orphans. `live` None: the engine did not say, so only gone processes."""
    return [o for o in candidates if o.process_gone or (live is not None and o.owner not in live)]


def find_orphans(
    gpus: Sequence[GpuSnapshot],
    owners: Mapping[int, str] | None,
    running: Collection[str],
    live: Collection[str] | None,
) -> list[Orphan]:
    """Both steps at once, for a caller that already holds the engine's list."""
    return confirm(suspects(gpus, owners, running), live)
