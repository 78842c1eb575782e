"""The loop: observe -> diagnose -> plan -> act -> record, every poll or event.

`Watchdog` orchestrates one cycle and drives the subsystems (GPU supervision, router sync,
memory limits) through `apply_config` and `cycle(view, now)`. The state that lives between
cycles has a room each: remembered events (`event_intake`), restarts in flight (`restarts`),
the faults in force and what was said of them (`fault_record`), the engine's health
(`engine_health`) and the status file (`status_writer`). Nothing in a cycle may crash the
daemon: every failure is logged, counted and retried on the next cycle.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import docker
from loguru import logger

from watchdog.config import Config
from watchdog.containers.diagnose import diagnose
from watchdog.containers.engine import DockerProbe, EngineUnavailable
from watchdog.containers.events import EventWatcher
from watchdog.containers.host import mem_available
from watchdog.containers.http_probe import Prober
from watchdog.containers.in_flight import InFlight
from watchdog.containers.own_actions import OwnActionWindows
from watchdog.containers.plan import plan
from watchdog.containers.reconcile import reconcile_unfinished
from watchdog.daemon.engine_health import EngineHealth
from watchdog.daemon.event_intake import EventIntake
from watchdog.daemon.fault_record import FaultRecorder
from watchdog.daemon.restarts import RestartTracker
from watchdog.daemon.status_writer import StatusWriter
from watchdog.gpu.findings import GpuFindings
from watchdog.gpu.supervisor import GpuSupervisor
from watchdog.journal import Journal
from watchdog.model import (
    ContainerHistory,
    ContainerSnapshot,
    ContainerState,
    Decision,
    Diagnosis,
    ProbeResult,
    ProbeStatus,
    ProbeTarget,
    Verdict,
)
from watchdog.ops.metrics import Metrics
from watchdog.router.limit_watch import MemoryLimitWatch
from watchdog.router.sync import PROXY_HEALTH_PATH, PROXY_TARGET, RouterSync
from watchdog.serving.watch import ServingWatch
from watchdog.subsystem import CycleView, Services, Subsystem

__all__ = ["CycleResult", "InFlight", "Watchdog"]


@dataclass
class CycleResult:
    """What one cycle saw and did (for `run --once`, tests and benchmarks)."""

    containers: list[ContainerSnapshot] = field(default_factory=list)
    diagnosis: Diagnosis = field(default_factory=Diagnosis)
    decisions: list[Decision] = field(default_factory=list)
    engine_up: bool = True
    duration: float = 0.0


RESTART_ONLY = ("label_prefix", "events", "state_dir")  # settings a SIGHUP cannot change


class Watchdog:
    """One instance per engine; the CLI creates it and calls run_forever or run_once."""

    def __init__(
        self,
        config: Config,
        journal: Journal,
        client_factory: Callable[[], docker.DockerClient],
        *,
        clock: Callable[[], float] = time.time,
        read_mem_available: Callable[[], int | None] = mem_available,
        nvml: object = None,
    ) -> None:
        self.config = config
        self.journal = journal
        self._client_factory = client_factory
        self.clock = clock
        self._mem_available = read_mem_available
        self.client = client_factory()
        self.docker = DockerProbe(self.client, config.label_prefix)
        self.wake = threading.Event()
        self.prober = Prober(config.probe_timeout, config.probe_interval, self._on_probe_result)
        self.executor = ThreadPoolExecutor(max_workers=max(2, config.max_concurrent_restarts), thread_name_prefix="act")
        self.own = OwnActionWindows()
        self.cycle_errors = 0
        self.cycles = 0
        self.recheck_at: float | None = None
        self._data_version = -1
        self.last_cycle_at: float | None = None
        self.state_dir: Path = journal.path.parent
        self.metrics = Metrics()
        self.services = Services(journal, self.client, self.executor, self.own, clock, self.wake.set)
        self.events = EventIntake(config, self.services)
        self.restarts = RestartTracker(config, self.services, self.metrics)
        self.faults = FaultRecorder(journal, self.metrics)
        self.engine = EngineHealth(journal, self.metrics, clock, self.docker.invalidate)
        self.status = StatusWriter(journal, self.metrics, self.state_dir)
        self.gpu = GpuSupervisor(config, self.services, nvml)
        self.memory_limits = MemoryLimitWatch(config, self.services)
        self.router = RouterSync(config, self.services)
        self.serving = ServingWatch(config, self.services, self.prober, self.router.feedback.suspects)
        self.events.load()

    # -- the state the rooms keep, by the names the CLI, tests and benchmarks use --

    @property
    def memory(self) -> dict[str, ContainerHistory]:
        """Container ID -> its remembered event history (see `event_intake`)."""
        return self.events.histories

    @property
    def in_flight(self) -> dict[str, InFlight]:
        """Container name -> its restart in flight (see `restarts`)."""
        return self.restarts.in_flight

    @property
    def watcher(self) -> EventWatcher | None:
        return self.events.watcher

    @property
    def engine_up(self) -> bool:
        return self.engine.up

    # -- start-up ------------------------------------------------------------

    def reconcile(self) -> None:
        """Actions left in flight by a killed watchdog: settle them from what the engine shows."""
        reconcile_unfinished(self.journal, self.docker, self.own, self.clock)

    def start_events(self) -> None:
        self.events.start(self._client_factory)

    def start_gpu(self) -> None:
        """NVML readings and Xid events on their own threads; the loop never waits on them."""
        self.gpu.start()

    def replay_events(self) -> None:
        """For one-shot runs: read the engine's buffered events since the last one seen."""
        self.events.replay(self.client)

    def apply_config(self, config: Config) -> None:
        """SIGHUP: new settings take effect next cycle (label_prefix, events, state_dir need a restart)."""
        kept = {key: getattr(self.config, key) for key in RESTART_ONLY}
        changed = [k for k, v in kept.items() if getattr(config, k) != v]
        if changed:
            logger.warning(
                "SIGHUP: {} change(s) need a restart of the watchdog; keeping the old value(s)", ", ".join(changed)
            )
        self.config = replace(config, **kept)
        self.prober.timeout = config.probe_timeout
        self.prober.min_interval = config.probe_interval
        self.serving.apply_config(self.config)
        self.events.apply_config(self.config)
        self.restarts.apply_config(self.config)
        for subsystem in self._subsystems():
            subsystem.apply_config(self.config)

    def _subsystems(self) -> tuple[Subsystem, ...]:
        """Every subsystem the loop drives, in cycle order."""
        return (self.gpu, self.router, self.memory_limits)

    def _on_probe_result(self, target: ProbeTarget, result: ProbeResult, previous: ProbeResult | None) -> None:
        if result.status != ProbeStatus.OK or (previous is not None and previous.status != ProbeStatus.OK):
            self.wake.set()

    # -- the cycle -----------------------------------------------------------

    def _reload_external_changes(self, containers: list[ContainerSnapshot]) -> None:
        """`gpu-watchdog reset` writes the journal from another process: pick it up."""
        version = self.journal.data_version()
        if version == self._data_version:
            return
        self._data_version = version
        self.gpu.reload_marks()
        self.events.reload(containers)

    def _probe_targets(self, containers: list[ContainerSnapshot]) -> list[ProbeTarget]:
        targets = [
            ProbeTarget(c.id, c.started_at, c.endpoint)
            for c in containers
            if c.managed and c.endpoint and c.state == ContainerState.RUNNING
        ]
        settings = self.config.litellm
        if settings.enabled and settings.proxy_url:
            targets.append(ProbeTarget(PROXY_TARGET, None, settings.proxy_url + PROXY_HEALTH_PATH))
        return targets

    def cycle(self) -> CycleResult:
        """One pass. Never raises for a failing probe or adapter."""
        started = time.monotonic()
        result = CycleResult()
        self.docker.invalidate(self.events.queued_ids())
        try:
            containers = self.docker.snapshot()
        except EngineUnavailable as exc:
            self.engine.down(str(exc))
            result.engine_up = False
            result.duration = time.monotonic() - started
            return result
        self.engine.answered()
        now = self.clock()
        by_id = {c.id: c for c in containers}
        touched = self.events.drain({c.id: c.name for c in containers})
        if touched:
            self.docker.invalidate(touched)
        self._reload_external_changes(containers)
        self.prober.set_targets(self._probe_targets(containers))
        histories = self.prober.histories()
        observed = CycleView(tuple(containers), histories)
        gpu = self.gpu.cycle(observed, now)
        serving = self.serving.cycle(observed, now)
        restarting = self.restarts.restarting | gpu.busy
        diagnosis = diagnose(
            containers, histories, self.memory, self.config, now,
            restarting=restarting, vram=gpu.vram, xids=gpu.xids, wedged=serving.wedged,
        )  # fmt: skip
        self.faults.observe(diagnosis, by_id, now)
        self.restarts.settle(by_id, diagnosis.ready, now)
        decisions = self._plan(diagnosis, by_id, gpu, now)
        self._act(decisions, by_id, now)
        view = CycleView(tuple(containers), histories, diagnosis, tuple(decisions), gpu, serving)
        self.router.cycle(view, now)
        self.memory_limits.cycle(view, now)
        self.serving.steer_probes(view, restarting)
        later = [diagnosis.recheck_at, *(d.retry_at for d in decisions), self.services.drains.recheck_at(now)]
        self.recheck_at = min((t for t in later if t is not None), default=None)
        self.status.write(
            view,
            now,
            restarting=set(self.in_flight),
            router=self.router.view(),
            dry_run=self.config.dry_run,
            engine_up=self.engine_up,
            heartbeat_every=self.config.poll_interval,
        )
        self.cycles += 1
        self.last_cycle_at = now
        result.containers, result.diagnosis, result.decisions = containers, diagnosis, decisions
        result.duration = time.monotonic() - started
        self.metrics.cycle_done(result.duration, now, self.cycle_errors)
        return result

    def _plan(
        self, diagnosis: Diagnosis, by_id: dict[str, ContainerSnapshot], gpu: GpuFindings, now: float
    ) -> list[Decision]:
        """The planner's decisions, with the restart budget the restarts in flight leave and the breakers' history."""
        # Read only when there is something to plan: no /proc read on a healthy fleet's cycles.
        budget = self.restarts.budget(
            self._mem_available() if self.config.ram_preflight.enabled and diagnosis.faults else None
        )
        breakers = {
            f.container: self.journal.breaker_history(
                f.container, since=now - self.config.breaker.window - self.config.breaker.cooldown
            )
            for f in diagnosis.faults
        }
        drains = self.services.drains
        return plan(
            diagnosis.faults, by_id, breakers, set(self.in_flight), budget, config=self.config, now=now, held=gpu.held,
            ready=diagnosis.ready, drained=drains.finished() if self.config.drain.enabled else None,
            draining=set(drains.drains),
        )  # fmt: skip

    def _act(self, decisions: list[Decision], by_id: dict[str, ContainerSnapshot], now: float) -> None:
        """Carry out the restarts (or announce them in a dry run); journal the other verdicts once."""
        for decision in decisions:
            if decision.verdict != Verdict.RESTART:
                self.faults.verdict(decision, now)
            elif self.config.dry_run:
                self.faults.would_restart(decision, now)
            else:
                self.faults.restart_issued(decision)
                self.restarts.issue(decision, by_id.get(decision.fault.container_id), now)

    # -- running -------------------------------------------------------------

    def next_wait(self) -> float:
        if not self.engine.up:
            return self.engine.backoff
        wait = self.config.poll_interval
        if self.recheck_at is not None:
            wait = min(wait, max(0.05, self.recheck_at - self.clock()))
        return wait

    def run_forever(self, stopping: threading.Event, on_cycle: Callable[[CycleResult], None] | None = None) -> None:
        """Cycle until `stopping` is set; then finish or record the restarts in flight."""
        while not stopping.is_set():
            try:
                result = self.cycle()
                if on_cycle is not None:
                    on_cycle(result)
            except Exception as exc:  # the loop must survive anything a cycle throws
                self.cycle_errors += 1
                logger.exception("cycle failed ({} so far): {}", self.cycle_errors, exc)
            self.wake.wait(self.next_wait())
            self.wake.clear()

    def shutdown(self, grace: float = 30.0) -> None:
        """Stop the event thread and prober; let restart calls in flight finish and be journaled."""
        self.events.stop()
        self.restarts.wait_for_calls(grace)
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.memory_limits.stop()
        self.serving.stop()
        self.router.stop()
        self.prober.close()
        self.gpu.stop()
