"""The GPU side of a cycle: readings, Xids, marks, zero-VRAM views, orphans.

The loop calls `cycle()` once per pass. It never waits on NVML: readings come
from GpuMonitor's thread and Xids from XidWatcher's. When the driver hangs,
every GPU-driven action stops (it would hang too) and container healing goes
on; the marks already in the journal keep holding their containers.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from loguru import logger

from watchdog.config import Config
from watchdog.containers.engine import ENGINE_ERRORS
from watchdog.entries import ALERT_DRIVER_HUNG, ALERT_GPU_RESET, EntryKind, gpu_mark
from watchdog.gpu.assignment import GONE, HOST, GpuAssignment, gpu_key, resolve
from watchdog.gpu.findings import GpuFindings
from watchdog.gpu.kernel_log import normalise_bus_id, scan_kernel_log
from watchdog.gpu.marks import (
    GpuCondition,
    GpuMark,
    XidResponse,
    held_containers,
    mark_or_alert,
    respond_to_xid,
    unusable,
)
from watchdog.gpu.monitor import GpuMonitor
from watchdog.gpu.nvml import GpuHealth, GpuProbe, GpuReading, GpuSnapshot, NvmlState, clock_reason_names
from watchdog.gpu.pid_map import owner_of, sees_host_pids
from watchdog.gpu.reset import ResetFailed, run_reset
from watchdog.gpu.vram import VramView, vram_views
from watchdog.gpu.xid import XidTable, classify, default_table, with_overrides
from watchdog.model import ContainerSnapshot, ContainerState, XidEvent
from watchdog.subsystem import CycleView, Services
from watchdog.units import format_bytes

XID_HISTORY = 24 * 3600.0  # long enough for the widest escalation window of the shipped table
XID_HISTORY_MAX = 10_000


class GpuSupervisor:
    """Owns the GPU threads and the GPU state that lives between cycles."""

    def __init__(self, config: Config, services: Services, nvml: Any = None) -> None:
        self.config = config
        self.journal = services.journal
        self.client = services.client
        self.executor = services.executor
        self.own = services.own
        self._wake = services.wake
        self.clock = services.clock
        self._nvml = nvml
        journal = services.journal
        self.table: XidTable = with_overrides(default_table(), config.gpu.xid_overrides, "gpu.xid_overrides")
        self.monitor: GpuMonitor | None = None
        self.watcher: Any = None
        self.xid_queue: queue.Queue[XidEvent] = queue.Queue()
        self.xid_history: deque[XidEvent] = deque(maxlen=XID_HISTORY_MAX)
        self.xid_requests: dict[str, tuple[float, str]] = {}
        self.marks: dict[str, GpuMark] = journal.gpu_marks()
        self.assignments: dict[str, GpuAssignment] = {}
        self.host_pids = config.gpu.pid_mapping and sees_host_pids()
        self.nvml_state: NvmlState | None = None
        self.resetting: dict[str, tuple[str, ...]] = {}  # GPU UUID -> containers its reset stopped
        self._reset_lock = threading.Lock()
        self._alerted: set[tuple[str, str]] = set()
        self._orphans_seen: set[tuple[str, int]] = set()
        self.xid_counts: dict[str, int] = {}
        self._judged_reading: GpuReading | None = None
        self._pid_owners: dict[int, str] | None = None
        self._orphan_rows: list[dict[str, Any]] = []

    # -- start-up ------------------------------------------------------------

    def start(self) -> None:
        gpu = self.config.gpu
        if not gpu.enabled:
            logger.info("GPU checks off (gpu.enabled: false)")
            return
        probe = GpuProbe(gpu.deadline, self._nvml, self.clock)
        self.monitor = GpuMonitor(probe, self.config.poll_interval, self._wake, gpu.zero_vram_threshold, self.clock)
        self.monitor.start()
        if gpu.xid_events:
            from watchdog.gpu.xid_events import XidWatcher

            self.watcher = XidWatcher(self._on_xid, self._on_watcher_state, nvml=self._nvml, clock=self.clock)
            self.watcher.start()
        if gpu.kernel_log:
            self._scan_kernel_log(gpu.kernel_log)
        logger.info(
            "GPU checks on: NVML deadline {} s, zero-VRAM threshold {}, PID mapping {}",
            gpu.deadline,
            format_bytes(gpu.zero_vram_threshold),
            "on (host PIDs visible)" if self.host_pids else "off (GPU used memory is judged instead)",
        )

    def wait_first_reading(self, timeout: float) -> None:
        """For one-shot runs: let the monitor read once (bounded by the deadline)."""
        if self.monitor is not None:
            self.monitor.first_read.wait(timeout)

    def drain_pending_xids(self, timeout: float = 0.2) -> None:
        """For one-shot runs: give the event thread a moment to deliver what is already queued."""
        if self.watcher is not None:
            time.sleep(timeout)

    def _scan_kernel_log(self, path: str) -> None:
        last = self.journal.get_meta("kernel_log_until")
        scan = scan_kernel_log(Path(path), since=float(last) if last else None)
        if scan.error:
            logger.info("kernel log not scanned for earlier Xids: {}", scan.error)
        for event in scan.events:
            self.xid_queue.put(event)
        if scan.events:
            logger.warning("kernel log: {} Xid line(s) since the last scan", len(scan.events))
            self.journal.set_meta("kernel_log_until", repr(max(e.at for e in scan.events)))

    def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        if self.monitor is not None:
            self.monitor.stop()

    def apply_config(self, config: Config) -> None:
        self.config = config
        self.table = with_overrides(default_table(), config.gpu.xid_overrides, "gpu.xid_overrides")
        if self.monitor is not None:
            self.monitor.interval = config.poll_interval
            self.monitor.threshold = config.gpu.zero_vram_threshold
            self.monitor.probe.deadline = config.gpu.deadline

    def reload_marks(self) -> None:
        """`gpu-watchdog gpu release` writes the journal from another process."""
        fresh = self.journal.gpu_marks()
        for uuid in set(self.marks) - set(fresh):
            logger.bind(gpu=uuid).info("GPU {} released: back in service", uuid)
            self._alerted = {said for said in self._alerted if said[0] != uuid}
        self.marks = fresh

    # -- callbacks from the GPU threads -------------------------------------

    def _on_xid(self, event: XidEvent) -> None:
        self.xid_queue.put(event)
        self._wake()

    def _on_watcher_state(self, state: str, detail: str) -> None:
        if state in ("error", "unsupported"):
            logger.warning("NVML Xid events: {} ({})", state, detail)

    # -- the cycle -----------------------------------------------------------

    def cycle(self, view: CycleView, now: float) -> GpuFindings:
        result = self._judge(view.containers, now)
        # Marks hold their containers on every path, also while the driver hangs.
        result.held = held_containers(self.assignments, self.marks)
        result.busy = self._busy()
        result.marks = dict(self.marks)
        return result

    def _judge(self, containers: Sequence[ContainerSnapshot], now: float) -> GpuFindings:
        if self.monitor is None:
            return GpuFindings(view={"nvml": "off", "detail": "gpu.enabled is false", "gpus": []})
        reading = self.monitor.latest()
        if reading is None:
            return GpuFindings(view={"nvml": "starting", "detail": "no reading yet", "gpus": []})
        self._say_state(reading, now)
        if reading.state != NvmlState.OK:
            # GPU-driven actions stop until the driver answers again.
            return GpuFindings(view=self._status_view(reading, containers, {}, []))
        gpus = reading.gpus
        self.assignments = {c.id: resolve(c.gpus, gpus) for c in containers if c.managed and c.gpus}
        for gpu in gpus:
            if gpu.health == GpuHealth.LOST:
                self._lost(gpu, len(gpus), now)
        if reading is not self._judged_reading:
            # PIDs and orphans change only with a new reading: no /proc or engine reads on other cycles.
            self._judged_reading = reading
            self._pid_owners = self._owners(gpus)
            self._orphan_rows = self._orphans(gpus, self._pid_owners, containers, now)
        owners = self._pid_owners
        self._drain_xids(gpus, owners, now)
        self._prune_xid_requests(containers)
        vram = vram_views(
            containers, gpus, self.assignments, owners, self.config.gpu.zero_vram_threshold, unusable(self.marks)
        )
        view = self._status_view(reading, containers, vram, self._orphan_rows)
        return GpuFindings(vram=vram, xids=dict(self.xid_requests), view=view)

    def _busy(self) -> set[str]:
        with self._reset_lock:
            return {cid for ids in self.resetting.values() for cid in ids}

    def _say_state(self, reading: GpuReading, now: float) -> None:
        state = reading.state
        if state == self.nvml_state:
            return
        previous, self.nvml_state = self.nvml_state, state
        if state == NvmlState.HUNG:
            text = f"NVIDIA driver hung: {reading.detail}; GPU actions paused, container healing goes on"
            logger.critical(text)
            self.journal.record(EntryKind.ALERT, text, ts=now, fault=ALERT_DRIVER_HUNG)
        elif state == NvmlState.NO_DRIVER:
            logger.info("no NVIDIA driver ({}): GPU checks off", reading.detail)
        elif state == NvmlState.ERROR:
            logger.error("NVML error: {}; GPU actions paused until it reads again", reading.detail)
            self.journal.record(EntryKind.GPU_ERROR, f"NVML error: {reading.detail}", ts=now)
        elif previous == NvmlState.HUNG:
            logger.warning("NVIDIA driver answers again: GPU checks resume")
            self.journal.record(EntryKind.DRIVER_RECOVERED, "NVML answers again: GPU checks resume", ts=now)
        elif previous in (None, NvmlState.NO_DRIVER):
            logger.info("NVML: driver {}, {} GPU(s)", reading.driver_version or "?", len(reading.gpus))

    def _owners(self, gpus: Sequence[GpuSnapshot]) -> dict[int, str] | None:
        if not self.host_pids:
            return None
        return {p.pid: owner_of(p.pid) for g in gpus for p in g.processes}

    def _lost(self, gpu: GpuSnapshot, count: int, now: float) -> None:
        key = gpu_key(gpu)
        reason = f"GPU {gpu.index} is lost (NVML: GPU is lost; fallen off the bus): it needs a host reboot"
        response = mark_or_alert(
            key,
            gpu.index,
            GpuCondition.QUARANTINED,
            reason,
            self.marks,
            count,
            self.config.gpu.max_quarantined_fraction,
            now,
        )
        self._apply(response, key, now, fault="gpu-lost", topic="quarantine")

    def _identify(self, event: XidEvent, gpus: Sequence[GpuSnapshot]) -> XidEvent:
        for gpu in gpus:
            same_bus = (
                event.bus_id is not None and gpu.bus_id is not None and normalise_bus_id(gpu.bus_id) == event.bus_id
            )
            if (event.gpu_uuid and gpu.uuid == event.gpu_uuid) or same_bus or event.gpu_index == gpu.index:
                return replace(event, gpu_uuid=gpu_key(gpu), gpu_index=gpu.index)
        return event

    def _drain_xids(self, gpus: Sequence[GpuSnapshot], owners: Mapping[int, str] | None, now: float) -> None:
        while True:
            try:
                event = self.xid_queue.get_nowait()
            except queue.Empty:
                break
            event = self._identify(event, gpus)
            self.xid_history.append(event)
            while self.xid_history and self.xid_history[0].at < now - XID_HISTORY:
                self.xid_history.popleft()
            verdict = classify(event, self.table, self.xid_history)
            key = event.gpu_uuid or "unknown"
            self.xid_counts[key] = self.xid_counts.get(key, 0) + 1
            culprit = None
            if event.pid is not None:
                owner = owners.get(event.pid) if owners is not None else owner_of(event.pid)
                culprit = owner if owner not in (None, HOST, GONE) and owner in self.assignments else None
            response = respond_to_xid(
                verdict,
                event.gpu_uuid,
                event.gpu_index,
                self.marks,
                len(gpus),
                self.assignments,
                culprit,
                self.config.gpu.reset,
                self.config.gpu.max_quarantined_fraction,
                now,
            )
            self.journal.record(
                EntryKind.XID,
                verdict.reason,
                ts=event.at,
                gpus=(event.gpu_uuid,) if event.gpu_uuid else (),
                fault=f"xid-{event.xid}",
                detail={"xid": event.xid, "action": verdict.action.value, "source": event.source, "pid": event.pid},
            )
            log = logger.bind(gpu=event.gpu_uuid or "?", xid=event.xid, action=verdict.action.value)
            (log.info if verdict.action.value == "log" else log.warning)("Xid: {}", verdict.reason)
            for container_id in response.restart:
                if container_id not in self.xid_requests:
                    self.xid_requests[container_id] = (event.at, verdict.reason)
            self._apply(response, key, now, fault=f"xid-{event.xid}", topic=verdict.action.value)

    def _apply(self, response: XidResponse, key: str, now: float, fault: str, topic: str) -> None:
        """Carry out marks and alerts; an alert is said once per GPU and action (`topic`) until released."""
        if response.mark is not None:
            self.marks[key] = response.mark
            self.journal.mark_gpu(response.mark)
            self.journal.record(
                gpu_mark(response.mark.condition.value), response.mark.reason, ts=now, gpus=(key,), fault=fault
            )
        said = (key, topic)
        if response.alert is not None and (response.mark is not None or said not in self._alerted):
            self._alerted.add(said)
            logger.bind(gpu=key).critical("ALERT: {}", response.alert)
            # `marked`: the alert that goes with a mark (notifications say the mark once, not twice)
            marked = {"marked": response.mark.condition.value} if response.mark is not None else None
            self.journal.record(EntryKind.ALERT, response.alert, ts=now, gpus=(key,), fault=fault, detail=marked)
        if response.reset and response.mark is not None:
            self._start_reset(key, now)

    def _prune_xid_requests(self, containers: Sequence[ContainerSnapshot]) -> None:
        by_id = {c.id: c for c in containers}
        for container_id, (at, _) in list(self.xid_requests.items()):
            container = by_id.get(container_id)
            if container is None or (container.started_at is not None and container.started_at > at):
                del self.xid_requests[container_id]

    def _orphans(
        self,
        gpus: Sequence[GpuSnapshot],
        owners: Mapping[int, str] | None,
        containers: Sequence[ContainerSnapshot],
        now: float,
    ) -> list[dict[str, Any]]:
        """GPU processes of no live container and no live host process (host PIDs only)."""
        if owners is None:
            return []
        running = {c.id for c in containers if c.state == ContainerState.RUNNING}
        candidates = [(g, p) for g in gpus for p in g.processes if owners.get(p.pid) not in (HOST, None)]
        candidates = [(g, p) for g, p in candidates if owners[p.pid] not in running]
        if not candidates:
            return []
        container_owned = any(owners[p.pid] != GONE for _, p in candidates)
        live = self._running_container_ids() if container_owned else set()
        found: list[dict[str, Any]] = []
        for gpu, process in candidates:
            owner = owners[process.pid]
            if owner != GONE and (live is None or owner in live):
                continue
            memory = format_bytes(process.used_memory) if process.used_memory is not None else "unknown memory"
            why = (
                "its process is gone (memory held by a dead context: reset the GPU)"
                if owner == GONE
                else f"its container {owner[:12]} is not running"
            )
            orphan = {"gpu": gpu_key(gpu), "index": gpu.index, "pid": process.pid, "memory": process.used_memory}
            orphan["why"] = why
            found.append(orphan)
            seen = (gpu_key(gpu), process.pid)
            if seen in self._orphans_seen:
                continue
            self._orphans_seen.add(seen)
            text = f"orphaned GPU memory on GPU {gpu.index}: PID {process.pid} holds {memory}; {why}"
            killed = ""
            if owner != GONE and self.config.gpu.kill_orphans and not self.config.dry_run:
                try:
                    os.kill(process.pid, signal.SIGKILL)
                    killed = " (killed: gpu.kill_orphans)"
                except OSError as exc:
                    killed = f" (kill failed: {exc.strerror})"
            logger.bind(gpu=gpu_key(gpu), pid=process.pid).warning(text + killed)
            self.journal.record(
                EntryKind.ORPHAN, text + killed, ts=now, gpus=(gpu_key(gpu),), detail={"pid": process.pid}
            )
        return found

    def _running_container_ids(self) -> set[str] | None:
        try:
            return {c["Id"] for c in self.client.api.containers(quiet=True)}
        except ENGINE_ERRORS:
            return None

    # -- the opt-in reset -----------------------------------------------------

    def _start_reset(self, uuid: str, now: float) -> None:
        ids = tuple(cid for cid, a in self.assignments.items() if uuid in a.uuids)
        with self._reset_lock:
            self.resetting[uuid] = ids
        for container_id in ids:
            self.own.open(container_id, now)
        self.journal.record(
            EntryKind.GPU_RESET, f"resetting GPU {uuid}: stopping {len(ids)} container(s)", ts=now, gpus=(uuid,)
        )
        self.executor.submit(self._run_reset, uuid, ids, now)

    def _verify(self, uuid: str) -> str | None:
        assert self.monitor is not None
        reading = self.monitor.read_now()
        if reading.state != NvmlState.OK:
            return f"NVML {reading.state.value}: {reading.detail}"
        for gpu in reading.gpus:
            if gpu_key(gpu) == uuid:
                return None if gpu.health == GpuHealth.OK else f"health {gpu.health.value}"
        return "GPU not visible"

    def _run_reset(self, uuid: str, ids: tuple[str, ...], started: float) -> None:
        gpu = self.config.gpu
        try:
            run_reset(self.client, uuid, ids, gpu.reset_command, gpu.reset_timeout, 30.0, lambda: self._verify(uuid))
            outcome, ok = f"GPU {uuid} reset and verified; {len(ids)} container(s) started", True
        except ResetFailed as exc:
            outcome, ok = f"GPU reset failed: {exc}", False
        except Exception as exc:  # a bug here must not leave the GPU marked "resetting" forever
            outcome, ok = f"GPU reset failed: {type(exc).__name__}: {exc}", False
        end = self.clock()
        for container_id in ids:
            self.own.close(container_id, started, end)
        if ok:
            self.journal.release_gpu(uuid)
            self.marks.pop(uuid, None)
            logger.bind(gpu=uuid).warning(outcome)
            self.journal.record(EntryKind.GPU_RESET_OK, outcome, ts=end, gpus=(uuid,))
        else:
            mark = GpuMark(uuid, None, GpuCondition.QUARANTINED, outcome, end)
            self.marks[uuid] = mark
            self.journal.mark_gpu(mark)
            logger.bind(gpu=uuid).critical("ALERT: {}; GPU quarantined", outcome)
            self.journal.record(
                EntryKind.ALERT, outcome + "; GPU quarantined", ts=end, gpus=(uuid,), fault=ALERT_GPU_RESET
            )
        with self._reset_lock:
            self.resetting.pop(uuid, None)
        self._wake()

    # -- status --------------------------------------------------------------

    def _status_view(
        self,
        reading: GpuReading,
        containers: Sequence[ContainerSnapshot],
        vram: Mapping[str, VramView],
        orphans: list[dict[str, Any]],
    ) -> dict[str, Any]:
        names = {c.id: c.name for c in containers}
        rows = []
        for gpu in reading.gpus:
            key = gpu_key(gpu)
            mark = self.marks.get(key)
            on_it = sorted(names.get(cid, cid[:12]) for cid, a in self.assignments.items() if key in a.uuids)
            rows.append(
                {
                    "uuid": gpu.uuid,
                    "index": gpu.index,
                    "bus_id": gpu.bus_id,
                    "name": gpu.name,
                    "memory_used": gpu.memory_used,
                    "memory_total": gpu.memory_total,
                    "temperature": gpu.temperature,
                    "throttle": clock_reason_names(gpu.clock_event_reasons),
                    "ecc_uncorrected": gpu.ecc_uncorrected,
                    "retired_pages": gpu.retired_pages,
                    "remapped_rows_pending": gpu.remapped_rows_pending,
                    "unmonitored": list(gpu.unsupported),
                    "health": gpu.health.value,
                    "error": gpu.error,
                    "mark": (
                        {"condition": mark.condition.value, "reason": mark.reason, "since": mark.since}
                        if mark
                        else None
                    ),
                    "containers": on_it,
                    "xids": self.xid_counts.get(key, 0),
                }
            )
        unresolved = {
            names.get(cid, cid[:12]): list(a.unresolved) for cid, a in self.assignments.items() if a.unresolved
        }
        return {
            "nvml": reading.state.value,
            "detail": reading.detail,
            "driver": reading.driver_version,
            "read_at": reading.at,
            "pid_mapping": bool(self.host_pids),
            "gpus": rows,
            "orphans": orphans,
            "unresolved": unresolved,
            "zero_vram": {names.get(cid, cid[:12]): v.detail for cid, v in vram.items()},
        }
