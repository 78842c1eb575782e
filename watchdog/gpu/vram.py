"""Zero-VRAM: is a running container's model still in GPU memory?

Pure. With PID mapping (the watchdog sees host PIDs), a container's own GPU
processes must hold at least the threshold; without it, its GPUs' used memory
must. A GPU that is lost, quarantined or unreadable gives no verdict: that is
a GPU fault, not a lost model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from watchdog.gpu.assignment import GpuAssignment, gpu_key, process_owners
from watchdog.gpu.readings import GpuHealth, GpuSnapshot
from watchdog.model import ContainerSnapshot, ContainerState
from watchdog.units import format_bytes


class VramMode(StrEnum):
    PROCESSES = "processes"  # its own processes' memory (host PIDs visible)
    GPU_TOTAL = "gpu-used"  # its GPUs' used memory
    UNKNOWN = "unknown"  # no verdict


@dataclass(frozen=True)
class VramView:
    """What one container holds in GPU memory, and whether that means its model is gone."""

    mode: VramMode
    held: int | None
    empty: bool
    detail: str


def vram_views(
    containers: Sequence[ContainerSnapshot],
    gpus: Sequence[GpuSnapshot],
    assignments: Mapping[str, GpuAssignment],
    owners: Mapping[int, str] | None,
    threshold: int,
    *,
    unusable: Mapping[str, str] | None = None,
) -> dict[str, VramView]:
    """One view per running managed container with GPUs. `owners` None: PID mapping off.

    `unusable`: GPU key -> why (quarantined, draining): no verdict on those.
    """
    by_key = {gpu_key(g): g for g in gpus}
    held_by = process_owners(gpus, owners) if owners is not None else {}
    unusable = unusable or {}
    views: dict[str, VramView] = {}
    for container in containers:
        if not container.managed or container.state != ContainerState.RUNNING:
            continue
        assignment = assignments.get(container.id)
        if assignment is None or not assignment.uuids:
            if owners is not None and container.gpus and container.id in held_by:
                # Unresolved (e.g. count=1) but its processes show where it runs.
                held_anywhere = held_by[container.id]
                views[container.id] = _from_processes(held_anywhere, threshold, "its GPU(s)")
            continue
        mine = [by_key.get(key) for key in assignment.uuids]
        blocked = [
            f"{key}: {unusable[key]}" if key in unusable else f"{key}: {g.health.value if g else 'not visible'}"
            for key, g in zip(assignment.uuids, mine, strict=True)
            if key in unusable or g is None or g.health != GpuHealth.OK
        ]
        if blocked:
            views[container.id] = VramView(VramMode.UNKNOWN, None, False, "GPU not usable: " + "; ".join(blocked))
            continue
        names = ",".join(str(g.index) for g in mine if g is not None)
        if owners is not None:
            own = {k: v for k, v in held_by.get(container.id, {}).items() if k in assignment.uuids}
            views[container.id] = _from_processes(own, threshold, f"GPU {names}")
            continue
        used = [g.memory_used for g in mine if g is not None]
        if any(u is None for u in used):
            views[container.id] = VramView(VramMode.UNKNOWN, None, False, "GPU memory not readable")
            continue
        total = sum(u for u in used if u is not None)
        views[container.id] = VramView(
            VramMode.GPU_TOTAL,
            total,
            total < threshold,
            f"GPU {names} uses {format_bytes(total)} (zero-VRAM threshold {format_bytes(threshold)}; PID mapping off)",
        )
    return views


def _from_processes(held: Mapping[str, int | None], threshold: int, where: str) -> VramView:
    if not held:
        return VramView(VramMode.PROCESSES, 0, True, f"no process of it holds memory on {where}")
    if any(v is None for v in held.values()):
        return VramView(VramMode.PROCESSES, None, False, f"its processes are on {where} (memory not reported)")
    total = sum(v for v in held.values() if v is not None)
    return VramView(
        VramMode.PROCESSES,
        total,
        total < threshold,
        f"its processes hold {format_bytes(total)} on {where} (zero-VRAM threshold {format_bytes(threshold)})",
    )
