"""Which GPUs a container uses, and which container a GPU process belongs to.

Pure. A container names its GPUs by index, UUID, `all`, or a count (label
`gpu-watchdog.gpu`, compose's device reservation, or NVIDIA_VISIBLE_DEVICES);
NVML names them by UUID. Everything GPU-side is keyed by UUID.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from watchdog.gpu.readings import GpuSnapshot

HOST = "host"  # a live process outside any container
GONE = "gone"  # NVML lists the PID, but no such process exists (memory held by a dead context)


@dataclass(frozen=True)
class GpuAssignment:
    """A container's GPUs as UUIDs; `unresolved` says why some could not be resolved."""

    uuids: tuple[str, ...] = ()
    unresolved: tuple[str, ...] = ()


def gpu_key(gpu: GpuSnapshot) -> str:
    """UUID, else the index (a lost GPU may not tell its UUID)."""
    return gpu.uuid or f"index:{gpu.index}"


def resolve(refs: Sequence[str], gpus: Sequence[GpuSnapshot]) -> GpuAssignment:
    """Map index / UUID / `all` references to UUIDs of the GPUs NVML shows."""
    by_index = {str(g.index): g for g in gpus}
    by_uuid = {g.uuid.lower(): g for g in gpus if g.uuid}
    found: list[str] = []
    unresolved: list[str] = []
    for ref in refs:
        text = ref.strip()
        lowered = text.lower()
        if lowered == "all":
            found.extend(gpu_key(g) for g in gpus)
        elif text in by_index:
            found.append(gpu_key(by_index[text]))
        elif lowered in by_uuid:
            found.append(gpu_key(by_uuid[lowered]))
        elif lowered.startswith("gpu-") and len(lowered) >= 8:
            matches = [g for u, g in by_uuid.items() if u.startswith(lowered)]
            if len(matches) == 1:
                found.append(gpu_key(matches[0]))
            else:
                unresolved.append(f"{text}: {'ambiguous' if matches else 'no such GPU'}")
        elif lowered.startswith("count="):
            unresolved.append(f"{text}: the engine picks the GPU; name it with the gpu label")
        elif lowered.startswith("mig-"):
            unresolved.append(f"{text}: MIG instances are not mapped")
        else:
            unresolved.append(f"{text}: no such GPU")
    return GpuAssignment(tuple(dict.fromkeys(found)), tuple(unresolved))


def containers_on(uuid: str, assignments: Mapping[str, GpuAssignment]) -> list[str]:
    """Container IDs assigned to one GPU."""
    return [cid for cid, a in assignments.items() if uuid in a.uuids]


def process_owners(gpus: Sequence[GpuSnapshot], owners: Mapping[int, str]) -> dict[str, dict[str, int | None]]:
    """Per container ID: GPU key -> memory its processes hold there (None when the driver does not say)."""
    held: dict[str, dict[str, int | None]] = {}
    for gpu in gpus:
        for process in gpu.processes:
            owner = owners.get(process.pid)
            if owner is None or owner in (HOST, GONE):
                continue
            per_gpu = held.setdefault(owner, {})
            key = gpu_key(gpu)
            previous = per_gpu.get(key, 0)
            per_gpu[key] = None if previous is None or process.used_memory is None else previous + process.used_memory
    return held
