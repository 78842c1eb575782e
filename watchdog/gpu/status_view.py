"""The GPU part of `gpu-watchdog status`: each GPU with its mark, containers and Xids. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from watchdog.gpu.assignment import GpuAssignment, gpu_key
from watchdog.gpu.health_score import HealthScore
from watchdog.gpu.marks import GpuMark
from watchdog.gpu.readings import GpuReading, GpuSnapshot, clock_reason_names
from watchdog.gpu.vram import VramView
from watchdog.model import ContainerSnapshot


def _gpu_row(
    gpu: GpuSnapshot,
    mark: GpuMark | None,
    containers: list[str],
    xids: int,
    score: HealthScore | None,
    *,
    maintenance: Mapping[str, object] | None = None,
) -> dict[str, Any]:
    return {
        "uuid": gpu.uuid,
        "index": gpu.index,
        "bus_id": gpu.bus_id,
        "name": gpu.name,
        "memory_used": gpu.memory_used,
        "memory_total": gpu.memory_total,
        "temperature": gpu.temperature,
        "throttle": clock_reason_names(gpu.clock_event_reasons),
        "temperature_slowdown": gpu.temperature_slowdown,
        "temperature_shutdown": gpu.temperature_shutdown,
        "ecc_uncorrected": gpu.ecc_uncorrected,
        "ecc_corrected": gpu.ecc_corrected,
        "ecc_uncorrected_aggregate": gpu.ecc_uncorrected_aggregate,
        "ecc_corrected_aggregate": gpu.ecc_corrected_aggregate,
        "retired_pages": gpu.retired_pages,
        "retired_pages_single_bit": gpu.retired_pages_single_bit,
        "retired_pages_pending": gpu.retired_pages_pending,
        "remapped_rows_pending": gpu.remapped_rows_pending,
        "remapped_rows_uncorrectable": gpu.remapped_rows_uncorrectable,
        "remapped_rows_failed": gpu.remapped_rows_failed,
        "pcie_replays": gpu.pcie_replays,
        "unmonitored": list(gpu.unsupported),
        "health": gpu.health.value,
        "error": gpu.error,
        "mark": ({"condition": mark.condition.value, "reason": mark.reason, "since": mark.since} if mark else None),
        "containers": containers,
        "xids": xids,
        "health_score": score.view() if score is not None else None,
        "maintenance": dict(maintenance) if maintenance else None,  # signal -> trend (gpu.predict)
    }


def status_view(
    reading: GpuReading,
    containers: Sequence[ContainerSnapshot],
    *,
    assignments: Mapping[str, GpuAssignment],
    marks: Mapping[str, GpuMark],
    xid_counts: Mapping[str, int],
    vram: Mapping[str, VramView],
    orphans: list[dict[str, Any]],
    pid_mapping: bool,
    scores: Mapping[str, HealthScore] | None = None,
    maintenance: Mapping[str, Mapping[str, object]] | None = None,
) -> dict[str, Any]:
    """One reading's GPUs, named for an operator (container names, not IDs)."""
    names = {c.id: c.name for c in containers}
    rows = []
    for gpu in reading.gpus:
        key = gpu_key(gpu)
        on_it = sorted(names.get(cid, cid[:12]) for cid, a in assignments.items() if key in a.uuids)
        score = (scores or {}).get(key)
        trends = (maintenance or {}).get(key)
        rows.append(_gpu_row(gpu, marks.get(key), on_it, xid_counts.get(key, 0), score, maintenance=trends))
    unresolved = {names.get(cid, cid[:12]): list(a.unresolved) for cid, a in assignments.items() if a.unresolved}
    return {
        "nvml": reading.state.value,
        "detail": reading.detail,
        "driver": reading.driver_version,
        "read_at": reading.at,
        "pid_mapping": pid_mapping,
        "gpus": rows,
        "orphans": orphans,
        "unresolved": unresolved,
        "zero_vram": {names.get(cid, cid[:12]): v.detail for cid, v in vram.items()},
    }
