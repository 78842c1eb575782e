"""GPU conditions (quarantined, drained, resetting) and the response to an Xid.

Pure. A marked GPU is out of service: its containers are not restarted onto
it. Marks are kept in the journal, shown in status and released by an operator
(`gpu-watchdog gpu release UUID`). The watchdog never marks more than
`max_quarantined_fraction` of the GPUs on its own: past that it only alerts,
because a fleet with no GPUs left serves nobody.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from watchdog.gpu.assignment import GpuAssignment, containers_on
from watchdog.gpu.xid import XidAction, XidVerdict


class GpuCondition(StrEnum):
    QUARANTINED = "quarantined"  # lost / alerting Xid: needs a host reboot or a human
    DRAINED = "drained"  # needs a GPU reset; its containers are not restarted onto it
    RESETTING = "resetting"  # the opt-in reset is running


@dataclass(frozen=True)
class GpuMark:
    uuid: str
    index: int | None
    condition: GpuCondition
    reason: str
    since: float
    auto: bool = True


@dataclass(frozen=True)
class XidResponse:
    """What the loop does about one Xid: restart containers, mark the GPU, alert, reset."""

    restart: tuple[str, ...] = ()  # container IDs
    mark: GpuMark | None = None
    alert: str | None = None
    reset: bool = False
    note: str = ""


def cap(gpu_count: int, fraction: float) -> int:
    """How many GPUs may be marked automatically (half of 8 is 4; of 1 is 0)."""
    return math.floor(gpu_count * fraction + 1e-9)


def may_mark(marks: Mapping[str, GpuMark], uuid: str, gpu_count: int, fraction: float) -> bool:
    automatic = sum(1 for m in marks.values() if m.auto and m.uuid != uuid)
    return automatic + 1 <= cap(gpu_count, fraction)


def _cap_text(marks: Mapping[str, GpuMark], gpu_count: int, fraction: float) -> str:
    marked = sum(1 for m in marks.values() if m.auto)
    return (
        f"{marked} of {gpu_count} GPU(s) already marked, cap {cap(gpu_count, fraction)} "
        f"(max_quarantined_fraction {fraction:g}): left in service"
    )


def mark_or_alert(
    uuid: str,
    index: int | None,
    condition: GpuCondition,
    reason: str,
    marks: Mapping[str, GpuMark],
    *,
    gpu_count: int,
    fraction: float,
    now: float,
) -> XidResponse:
    """Mark the GPU if the cap allows, else only alert; an existing mark is kept unless this one is graver."""
    existing = marks.get(uuid)
    if existing is not None and (existing.condition == GpuCondition.QUARANTINED or existing.condition == condition):
        return XidResponse(note=f"GPU {uuid} already {existing.condition.value}")
    if existing is None and not may_mark(marks, uuid, gpu_count, fraction):
        return XidResponse(
            alert=f"{reason}; would mark GPU {uuid} {condition.value}, but {_cap_text(marks, gpu_count, fraction)}"
        )
    mark = GpuMark(uuid, index, condition, reason, now)
    fix = (
        "reboot the host, then `gpu-watchdog gpu release " + uuid + "`"
        if condition == GpuCondition.QUARANTINED
        else f"reset it (nvidia-smi --gpu-reset -i {uuid}), then `gpu-watchdog gpu release {uuid}`"
    )
    return XidResponse(mark=mark, alert=f"GPU {uuid} {condition.value}: {reason}; {fix}")


def respond_to_xid(
    verdict: XidVerdict,
    uuid: str | None,
    index: int | None,
    marks: Mapping[str, GpuMark],
    *,
    gpu_count: int,
    assignments: Mapping[str, GpuAssignment],
    culprit: str | None,
    reset_enabled: bool,
    fraction: float,
    now: float,
) -> XidResponse:
    """The Xid table's action, applied. `culprit`: the container ID its PID maps to, if known."""
    action = verdict.action
    if uuid is None:
        if action == XidAction.LOG:
            return XidResponse(note=verdict.reason + " (GPU unknown)")
        return XidResponse(alert=verdict.reason + "; the GPU could not be identified")
    existing = marks.get(uuid)
    if existing is not None and action != XidAction.QUARANTINE:
        return XidResponse(note=f"{verdict.reason}; GPU already {existing.condition.value}")
    if action == XidAction.LOG:
        return XidResponse(note=verdict.reason)
    if action == XidAction.ALERT:
        return XidResponse(alert=verdict.reason)
    if action == XidAction.RESTART_CONTAINER:
        targets = (culprit,) if culprit is not None else tuple(containers_on(uuid, assignments))
        if not targets:
            return XidResponse(note=verdict.reason + "; no managed container on that GPU")
        return XidResponse(restart=targets, note=verdict.reason)

    def mark(condition: GpuCondition) -> XidResponse:
        return mark_or_alert(
            uuid, index, condition, verdict.reason, marks, gpu_count=gpu_count, fraction=fraction, now=now
        )

    if action == XidAction.RESET_GPU:
        if reset_enabled:
            response = mark(GpuCondition.RESETTING)
            return XidResponse(response.restart, response.mark, response.alert, reset=response.mark is not None)
        return mark(GpuCondition.DRAINED)
    return mark(GpuCondition.QUARANTINED)


def held_containers(assignments: Mapping[str, GpuAssignment], marks: Mapping[str, GpuMark]) -> dict[str, str]:
    """Container ID -> why it must not be restarted now (one of its GPUs is marked)."""
    held: dict[str, str] = {}
    for container_id, assignment in assignments.items():
        reasons = [
            f"GPU {marks[u].index if marks[u].index is not None else u} is {marks[u].condition.value} "
            f"({marks[u].reason})"
            for u in assignment.uuids
            if u in marks
        ]
        if reasons:
            held[container_id] = "; ".join(reasons)
    return held


def unusable(marks: Mapping[str, GpuMark]) -> dict[str, str]:
    return {uuid: mark.condition.value for uuid, mark in marks.items()}
