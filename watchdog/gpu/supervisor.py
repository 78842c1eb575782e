"""The GPU side of a cycle: readings, Xids, marks, zero-VRAM views, orphans.

The loop calls `cycle()` once per pass. It never waits on NVML: readings come
from GpuMonitor's thread and Xids from XidWatcher's. When the driver hangs,
every GPU-driven action stops (it would hang too) and container healing goes
on; the marks already in the journal keep holding their containers.

GpuSupervisor owns the threads and keeps the cycle's order; each job is its own
object: `DriverState` (the driver's state, said once), `XidResponder` (Xids and
lost GPUs answered), `MarkBook` (the marks in force, alerts said once),
`OrphanWatch` (orphaned GPU memory), `GpuReset` (the opt-in reset),
`MaintenanceWatch` (counter trends, predictive maintenance), and the pure `status_view`.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from loguru import logger

from watchdog.config import Config
from watchdog.containers.urgency import xid_urgency
from watchdog.gpu.assignment import GpuAssignment, containers_on, gpu_key, resolve
from watchdog.gpu.driver_state import DriverState
from watchdog.gpu.findings import GpuFindings
from watchdog.gpu.health_score import HealthScore, classed_xids, score_gpu
from watchdog.gpu.maintenance_watch import MaintenanceWatch
from watchdog.gpu.mark_book import MarkBook
from watchdog.gpu.marks import GpuMark, held_containers, unusable
from watchdog.gpu.monitor import GpuMonitor
from watchdog.gpu.nvml import GpuProbe
from watchdog.gpu.orphan_watch import OrphanWatch
from watchdog.gpu.pid_map import owners, sees_host_pids
from watchdog.gpu.readings import GpuHealth, GpuReading, GpuSnapshot, NvmlState
from watchdog.gpu.reset import GpuReset
from watchdog.gpu.return_watch import ReturnWatch
from watchdog.gpu.score_journal import ScoreJournal
from watchdog.gpu.status_view import status_view
from watchdog.gpu.vram import VramView, vram_views
from watchdog.gpu.xid_responder import XidResponder
from watchdog.model import ContainerSnapshot, XidEvent
from watchdog.subsystem import CycleView, Services
from watchdog.units import format_bytes

if TYPE_CHECKING:
    import docker

READINGS_MAX = 2048  # earlier readings kept for rates (gpu.health.rate_window trims them first)


class GpuSupervisor:
    """Owns the GPU threads and the GPU state that lives between cycles."""

    def __init__(self, config: Config, services: Services, nvml: Any = None) -> None:
        self._config = config
        self.journal = services.journal
        self.executor = services.executor
        self.own = services.own
        self.clock = services.clock
        self._wake = services.wake
        self._nvml = nvml
        self.monitor: GpuMonitor | None = None
        self.watcher: Any = None
        self.host_pids = config.gpu.pid_mapping and sees_host_pids()
        self.assignments: dict[str, GpuAssignment] = {}  # container ID -> its GPUs, from the latest reading
        self.book = MarkBook(services.journal)
        self.driver = DriverState(services.journal)
        self.gpu_reset = GpuReset(config, services, self.book)
        self.xids = XidResponder(config, services.journal, self.book, self._start_reset)
        self.orphans = OrphanWatch(config, services.journal, services.client)
        self.returns = ReturnWatch(config, services.journal, self.book, clock=services.clock, wake=services.wake)
        self.maintenance = MaintenanceWatch(config, services.journal, self.book)
        self.xid_queue = self.xids.queue  # the event thread and the kernel log feed it; the cycle drains it
        self._judged_reading: GpuReading | None = None
        self._pid_owners: dict[int, str] | None = None
        self._orphan_rows: list[dict[str, Any]] = []
        self._readings: deque[GpuReading] = deque(maxlen=READINGS_MAX)  # earlier readings: the base of rates
        self._scores: dict[str, HealthScore] = {}  # GPU key -> its health score, from the latest reading
        self.score_journal = ScoreJournal(services.journal)  # a score that moved, for the report

    # -- what the others share ------------------------------------------------

    @property
    def config(self) -> Config:
        """Read-only: new settings go through `apply_config`, which hands them to every part."""
        return self._config

    @property
    def client(self) -> docker.DockerClient:
        return self.orphans.client

    @client.setter
    def client(self, client: docker.DockerClient) -> None:
        """One engine client for the orphan check and the reset."""
        self.orphans.client = client
        self.gpu_reset.client = client

    @property
    def marks(self) -> dict[str, GpuMark]:
        return self.book.marks

    @property
    def resetting(self) -> dict[str, tuple[str, ...]]:
        return self.gpu_reset.resetting

    @property
    def nvml_state(self) -> NvmlState | None:
        return self.driver.state

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
            self.xids.scan_kernel_log(gpu.kernel_log)
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

    def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        if self.monitor is not None:
            self.monitor.stop()

    def apply_config(self, config: Config) -> None:
        self._config = config
        self.xids.apply_config(config)
        self.orphans.apply_config(config)
        self.gpu_reset.apply_config(config)
        self.returns.apply_config(config)
        self.maintenance.apply_config(config)
        if self.monitor is not None:
            self.monitor.interval = config.poll_interval
            self.monitor.threshold = config.gpu.zero_vram_threshold
            self.monitor.probe.deadline = config.gpu.deadline

    def reload_marks(self) -> None:
        """`gpu-watchdog gpu release` writes the journal from another process."""
        self.book.reload()

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
        self.gpu_reset.proceed(now)  # a planned reset whose drain ended goes ahead
        result.busy = self.gpu_reset.busy()
        gpus = self._judged_reading.gpus if self._judged_reading is not None else ()
        xids, table = list(self.xids.history), self.xids.table
        result.probation = self.returns.cycle(
            view.containers, view.histories, assignments=self.assignments, gpus=gpus, xids=xids, table=table, now=now
        )
        result.marks = dict(self.marks)
        result.view["probation"] = self.returns.view()
        return result

    def _judge(self, containers: Sequence[ContainerSnapshot], now: float) -> GpuFindings:
        if self.monitor is None:
            return GpuFindings(view={"nvml": "off", "detail": "gpu.enabled is false", "gpus": []})
        reading = self.monitor.latest()
        if reading is None:
            return GpuFindings(view={"nvml": "starting", "detail": "no reading yet", "gpus": []})
        self.driver.observe(reading, now)
        if reading.state != NvmlState.OK:
            # GPU-driven actions stop until the driver answers again.
            return GpuFindings(view=self._status_view(reading, containers, {}, []))
        gpus = reading.gpus
        self.assignments = {c.id: resolve(c.gpus, gpus) for c in containers if c.managed and c.gpus}
        for gpu in gpus:
            if gpu.health == GpuHealth.LOST:
                self.xids.lost(gpu, len(gpus), now)
        if reading is not self._judged_reading:
            # PIDs and orphans change only with a new reading: no /proc or engine reads on other cycles.
            self._judged_reading = reading
            self._pid_owners = self._owners(gpus)
            self._orphan_rows = self.orphans.check(gpus, self._pid_owners, containers, now)
            self._scores = self._score(reading)
            self.maintenance.observe(reading, now)
        pid_owners = self._pid_owners
        self.xids.drain(gpus, pid_owners, self.assignments, now)
        self.xids.prune(containers)
        threshold = self.config.gpu.zero_vram_threshold
        vram = vram_views(containers, gpus, self.assignments, pid_owners, threshold, unusable=unusable(self.marks))
        view = self._status_view(reading, containers, vram, self._orphan_rows)
        assigned = {cid: a.uuids for cid, a in self.assignments.items()}
        return GpuFindings(vram=vram, xids=dict(self.xids.requests), view=view, scores=self._scores, assigned=assigned)

    def _score(self, reading: GpuReading) -> dict[str, HealthScore]:
        """Each GPU's health score at this reading, over the earlier ones; the reading joins the history."""
        health = self.config.gpu.health
        if not health.enabled:
            self._readings.clear()
            return {}
        events = list(self.xids.history)
        scores = {
            gpu_key(gpu): score_gpu(
                gpu,
                reading.at,
                history=self._readings,
                xids=classed_xids(gpu, events, self.xids.table),
                config=health,
            )
            for gpu in reading.gpus
        }
        self.score_journal.see(scores, health.evict_below, reading.at)
        self._readings.append(reading)
        while self._readings and self._readings[0].at < reading.at - health.rate_window:
            self._readings.popleft()
        return scores

    def _owners(self, gpus: Sequence[GpuSnapshot]) -> dict[int, str] | None:
        """GPU process PID -> container ID, HOST or GONE; None when PID mapping is off."""
        if not self.host_pids:
            return None
        return owners(p.pid for g in gpus for p in g.processes)

    def _start_reset(self, uuid: str, now: float, fault: str = "") -> None:
        """The reset the Xid `fault` ("xid-N") asks for: after a drain, unless the Xid is urgent (urgency.py)."""
        assert self.monitor is not None  # Xids are answered only on a reading, so there is a monitor
        xid = int(fault.removeprefix("xid-")) if fault.startswith("xid-") and fault[4:].isdigit() else None
        urgent, why = xid_urgency(xid)
        ids = containers_on(uuid, self.assignments)
        self.gpu_reset.start(uuid, ids, now, monitor=self.monitor, drain=None if urgent else why)

    def _status_view(
        self,
        reading: GpuReading,
        containers: Sequence[ContainerSnapshot],
        vram: dict[str, VramView],
        orphans: list[dict[str, Any]],
    ) -> dict[str, Any]:
        return status_view(
            reading,
            containers,
            assignments=self.assignments,
            marks=self.marks,
            xid_counts=self.xids.counts,
            vram=vram,
            orphans=orphans,
            pid_mapping=bool(self.host_pids),
            scores=self._scores,
            maintenance=self.maintenance.views(),
        )
