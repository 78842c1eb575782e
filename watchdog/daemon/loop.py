"""The loop: observe -> diagnose -> plan -> act -> record, every poll or event.

This module holds the state that lives between cycles (remembered events,
restarts in flight, active faults) and wires the pure core to the adapters.
Nothing in a cycle may crash the daemon: every failure is logged, counted and
retried on the next cycle.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import docker
from loguru import logger

from watchdog.config import Config
from watchdog.containers.diagnose import (
    ProbeHistory,
    Recovery,
    diagnose,
    recovery_of,
    recovery_timeout_of,
    remember_event,
)
from watchdog.containers.engine import ENGINE_ERRORS, DockerProbe, EngineUnavailable
from watchdog.containers.events import WATCHED_ACTIONS, EventWatcher, parse_event
from watchdog.containers.host import mem_available
from watchdog.containers.http_probe import Prober
from watchdog.containers.own_actions import OwnActionWindows
from watchdog.containers.plan import Capacity, plan
from watchdog.containers.reconcile import reconcile_unfinished
from watchdog.containers.restart import ActionFailed, EngineUnreachable, restart_container
from watchdog.entries import ActionKind, EntryKind, restart_outcome
from watchdog.entries import verdict as verdict_entry
from watchdog.gpu.findings import GpuFindings
from watchdog.gpu.supervisor import GpuSupervisor
from watchdog.journal import Journal
from watchdog.model import (
    NOT_SENT,
    ContainerMemory,
    ContainerSnapshot,
    ContainerState,
    Decision,
    Diagnosis,
    EngineEvent,
    Fault,
    NoteKind,
    ProbeResult,
    ProbeStatus,
    ProbeTarget,
    Verdict,
)
from watchdog.ops.metrics import Metrics
from watchdog.ops.status import STATUS_FILE, daemon_view
from watchdog.router.limit_watch import MemoryLimitWatch
from watchdog.router.sync import PROXY_HEALTH_PATH, PROXY_TARGET, RouterSync
from watchdog.subsystem import CycleView, Services, Subsystem

EVENT_REPLAY_DEFAULT = 600.0  # seconds of engine events replayed on a first start


@dataclass
class InFlight:
    """A restart the watchdog issued: it holds a slot until the container is back or times out."""

    action_id: int | None
    container: str
    container_id: str
    fault: Fault
    issued_at: float
    ram: int
    timeout: float
    future: Future[str] | None = None
    outcome: str | None = None


@dataclass
class CycleResult:
    """What one cycle saw and did (for `run --once`, tests and benchmarks)."""

    containers: list[ContainerSnapshot] = field(default_factory=list)
    diagnosis: Diagnosis = field(default_factory=Diagnosis)
    decisions: list[Decision] = field(default_factory=list)
    engine_up: bool = True
    duration: float = 0.0


class Watchdog:
    """One instance per engine; the CLI creates it and calls run_forever or run_once."""

    def __init__(
        self,
        config: Config,
        journal: Journal,
        client_factory: Callable[[], docker.DockerClient],
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
        self._events: queue.Queue[EngineEvent] = queue.Queue()
        self.prober = Prober(config.probe_timeout, config.poll_interval, self._on_probe_result)
        self.executor = ThreadPoolExecutor(max_workers=max(2, config.max_concurrent_restarts), thread_name_prefix="act")
        self.watcher: EventWatcher | None = None
        self.memory: dict[str, ContainerMemory] = {}
        self.in_flight: dict[str, InFlight] = {}
        self.own = OwnActionWindows()
        self.active_faults: dict[str, Fault] = {}
        self.last_decision: dict[str, tuple[Verdict, str]] = {}
        self.dry_run_announced: set[tuple[str, str]] = set()
        self.engine_up = True
        self.engine_down_since: float | None = None
        self.engine_backoff = 1.0
        self.cycle_errors = 0
        self.cycles = 0
        self.recheck_at: float | None = None
        self._data_version = -1
        self._heartbeat_written = 0.0
        self.last_cycle_at: float | None = None
        self.state_dir: Path = journal.path.parent
        self.metrics = Metrics()
        self.services = Services(journal, self.client, self.executor, self.own, clock, self.wake.set)
        self.gpu = GpuSupervisor(config, self.services, nvml)
        self.memory_limits = MemoryLimitWatch(config, self.services)
        self.router = RouterSync(config, self.services)
        self._load_memory()

    # -- start-up ------------------------------------------------------------

    def _load_memory(self) -> None:
        """Deliberate stops and own action windows survive restarts of the watchdog."""
        for container_id, stopped_at in self.journal.stop_marks().items():
            self.memory[container_id] = ContainerMemory(manual_stop_at=stopped_at)
        horizon = self.clock() - EVENT_REPLAY_DEFAULT
        for action in self.journal.actions(since=horizon):
            if not action.dry_run:
                self.own.open(action.container_id, action.started_at, action.finished_at)

    def reconcile(self) -> None:
        """Actions left in flight by a killed watchdog: settle them from what the engine shows."""
        reconcile_unfinished(self.journal, self.docker, self.own, self.clock)

    def start_events(self) -> None:
        if not self.config.events:
            return
        replay_from = self.journal.get_meta("last_event_at")
        since = float(replay_from) if replay_from else self.clock() - EVENT_REPLAY_DEFAULT
        self.watcher = EventWatcher(
            self._client_factory, f"{self.config.label_prefix}.enable", self._on_event, self._on_events_connection
        )
        self.watcher.start(since)

    def start_gpu(self) -> None:
        """NVML readings and Xid events on their own threads; the loop never waits on them."""
        self.gpu.start()

    def replay_events(self) -> None:
        """For one-shot runs: read the engine's buffered events since the last one seen."""
        replay_from = self.journal.get_meta("last_event_at")
        since = float(replay_from) if replay_from else self.clock() - EVENT_REPLAY_DEFAULT
        filters = {"type": "container", "event": WATCHED_ACTIONS, "label": [f"{self.config.label_prefix}.enable"]}
        try:
            # The engine takes fractional seconds; the SDK's stubs say int.
            stream = self.client.events(decode=True, since=since, until=self.clock(), filters=filters)  # type: ignore[call-overload]
            for raw in stream:
                event = parse_event(raw)
                if event is not None:
                    self._events.put(event)
        except ENGINE_ERRORS as exc:
            logger.warning("could not replay engine events ({}): deliberate stops are judged by exit code", exc)

    def apply_config(self, config: Config) -> None:
        """SIGHUP: new settings take effect next cycle (label_prefix, events, state_dir need a restart)."""
        kept = {
            "label_prefix": self.config.label_prefix,
            "events": self.config.events,
            "state_dir": self.config.state_dir,
        }
        changed = [k for k, v in kept.items() if getattr(config, k) != v]
        if changed:
            logger.warning(
                "SIGHUP: {} change(s) need a restart of the watchdog; keeping the old value(s)", ", ".join(changed)
            )
        self.config = replace(
            config, label_prefix=self.config.label_prefix, events=self.config.events, state_dir=self.config.state_dir
        )
        self.prober.timeout = config.probe_timeout
        self.prober.min_interval = config.poll_interval
        for subsystem in self._subsystems():
            subsystem.apply_config(self.config)

    def _subsystems(self) -> tuple[Subsystem, ...]:
        """Every subsystem the loop drives, in cycle order."""
        return (self.gpu, self.router, self.memory_limits)

    # -- callbacks from other threads ---------------------------------------

    def _on_event(self, event: EngineEvent) -> None:
        self._events.put(event)
        self.wake.set()

    def _on_events_connection(self, connected: bool, why: str) -> None:
        if connected:
            logger.info("engine event stream connected")
        else:
            logger.warning(
                "engine event stream lost ({}); polling every {} s until it is back", why, self.config.poll_interval
            )
        self.wake.set()

    def _on_probe_result(self, target: ProbeTarget, result: ProbeResult, previous: ProbeResult | None) -> None:
        if result.status != ProbeStatus.OK or (previous is not None and previous.status != ProbeStatus.OK):
            self.wake.set()

    # -- events --------------------------------------------------------------

    def _drain_events(self, names: dict[str, str]) -> None:
        touched: set[str] = set()
        last_at: float | None = None
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
            touched.add(event.container_id)
            last_at = max(last_at or 0.0, event.at)
            if self.own.covers(event.container_id, event.at):
                if event.action == "start":
                    self.own.saw_start(event.container_id, event.at)
                continue
            before = self.memory.get(event.container_id, ContainerMemory())
            after = remember_event(before, event)
            self.memory[event.container_id] = after
            name = event.name or names.get(event.container_id, event.container_id[:12])
            log = logger.bind(container=name, event=event.action)
            if event.action == "stop":
                self.journal.mark_stop(event.container_id, name, ts=event.at)
                self.journal.record(
                    EntryKind.MANUAL_STOP,
                    "stopped by an operator (engine stop event): left stopped until someone starts it",
                    ts=event.at,
                    container=name,
                    container_id=event.container_id,
                )
                log.info("{} was stopped on purpose; it stays stopped until someone starts it", name)
            elif event.action == "start" and before.manual_stop_at is not None:
                self.journal.clear_stop(event.container_id)
                log.info("{} was started by someone: it is healed again if it fails", name)
            elif event.action == "destroy":
                self.memory.pop(event.container_id, None)
                self.journal.clear_stop(event.container_id)
        self.own.prune(self.clock() - EVENT_REPLAY_DEFAULT)
        if touched:
            self.docker.invalidate(touched)
        if last_at is not None:
            self.journal.set_meta("last_event_at", repr(last_at))

    # -- the cycle -----------------------------------------------------------

    def _reload_external_changes(self, containers: list[ContainerSnapshot]) -> None:
        """`gpu-watchdog reset` writes the journal from another process: pick it up."""
        version = self.journal.data_version()
        if version == self._data_version:
            return
        self._data_version = version
        self.gpu.reload_marks()
        marks = self.journal.stop_marks()
        for container_id, memory in list(self.memory.items()):
            if memory.manual_stop_at is not None and container_id not in marks:
                self.memory[container_id] = replace(memory, manual_stop_at=None)
        for container in containers:
            history = self.journal.breaker_history(container.name, since=self.clock() - self.config.breaker.window)
            if history.reset_at is not None:
                memory = self.memory.get(container.id, ContainerMemory())
                if memory.heal_requested_at != history.reset_at:
                    self.memory[container.id] = replace(memory, heal_requested_at=history.reset_at)

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
        try:
            containers = self.docker.snapshot()
        except EngineUnavailable as exc:
            self._engine_down(str(exc))
            result.engine_up = False
            result.duration = time.monotonic() - started
            return result
        self._engine_back()
        now = self.clock()
        by_id = {c.id: c for c in containers}
        self._drain_events({c.id: c.name for c in containers})
        self._reload_external_changes(containers)
        self.prober.set_targets(self._probe_targets(containers))
        histories = self.prober.histories()
        gpu = self.gpu.cycle(CycleView(tuple(containers), histories), now)
        restarting = {job.container_id for job in self.in_flight.values() if job.outcome is None} | gpu.busy
        diagnosis = diagnose(containers, histories, self.memory, self.config, now, restarting, gpu.vram, gpu.xids)
        self._record_detections(diagnosis, by_id, now)
        self._settle_in_flight(by_id, diagnosis, now)
        capacity = Capacity(
            restarts_in_flight=len(self.in_flight),
            ram_committed=sum(job.ram for job in self.in_flight.values()),
            # Read only when there is something to plan: no /proc read on a healthy fleet's cycles.
            mem_available=self._mem_available() if self.config.ram_preflight.enabled and diagnosis.faults else None,
        )
        breakers = {
            f.container: self.journal.breaker_history(
                f.container, since=now - self.config.breaker.window - self.config.breaker.cooldown
            )
            for f in diagnosis.faults
        }
        decisions = plan(diagnosis.faults, by_id, breakers, set(self.in_flight), capacity, self.config, now, gpu.held)
        self._act(decisions, by_id, now)
        view = CycleView(tuple(containers), histories, diagnosis, tuple(decisions), gpu)
        self.router.cycle(view, now)
        self.memory_limits.cycle(view, now)
        if self.config.litellm.enabled:
            # A backend out of rotation is probed faster: back in rotation the moment it answers.
            out = {c.id for c in containers if c.managed and c.spec and c.spec.model and c.id not in diagnosis.ready}
            self.prober.set_fast(out, self.config.litellm.recovery_probe_interval)
        self.recheck_at = min(
            (t for t in [diagnosis.recheck_at, *(d.retry_at for d in decisions)] if t is not None), default=None
        )
        self._write_status(containers, diagnosis, decisions, histories, gpu, now)
        self.cycles += 1
        self.last_cycle_at = now
        result.containers, result.diagnosis, result.decisions = containers, diagnosis, decisions
        result.duration = time.monotonic() - started
        self.metrics.cycle_done(result.duration, now, self.cycle_errors)
        return result

    def _engine_down(self, why: str) -> None:
        now = self.clock()
        self.metrics.engine_up.set(0)
        if self.engine_up:
            self.engine_up = False
            self.engine_down_since = now
            logger.error("Docker engine unreachable ({}); retrying with backoff, no action until it is back", why)
            self.journal.record(EntryKind.ENGINE_DOWN, f"Docker engine unreachable: {why}", ts=now)
        else:
            self.engine_backoff = min(self.engine_backoff * 2, 30.0)

    def _engine_back(self) -> None:
        if self.engine_up:
            return
        now = self.clock()
        down_for = now - (self.engine_down_since or now)
        self.engine_up = True
        self.engine_backoff = 1.0
        self.docker.invalidate()
        logger.info("Docker engine reachable again after {:.1f} s", down_for)
        self.journal.record(
            EntryKind.ENGINE_UP, f"Docker engine reachable again after {down_for:.1f} s", ts=now, duration=down_for
        )

    def _record_detections(self, diagnosis: Diagnosis, by_id: dict[str, ContainerSnapshot], now: float) -> None:
        current = {f.container_id: f for f in diagnosis.faults}
        for container_id, fault in current.items():
            known = self.active_faults.get(container_id)
            if known is not None and known.episode == fault.episode:
                continue
            self.active_faults[container_id] = fault
            self.metrics.fault_detected(fault.container, fault.kind.value)
            logger.bind(container=fault.container, gpu=",".join(fault.gpus), fault=fault.kind.value).warning(
                "fault detected: {} {}: {}", fault.container, fault.kind.value, fault.reason
            )
            self.journal.record(
                EntryKind.DETECTED,
                fault.reason,
                ts=now,
                container=fault.container,
                container_id=container_id,
                gpus=fault.gpus,
                fault=fault.kind.value,
                detail={"since": fault.since},
            )
        stopped_on_purpose = {n.container_id for n in diagnosis.notes if n.kind == NoteKind.DELIBERATE_STOP}
        for container_id, fault in list(self.active_faults.items()):
            if container_id in current:
                continue
            if container_id in diagnosis.ready:
                outcome, text = EntryKind.RECOVERED, f"healthy again after {now - fault.since:.1f} s"
            elif container_id not in by_id:
                outcome, text = EntryKind.CLEARED, "container removed"
            elif container_id in stopped_on_purpose:
                outcome, text = EntryKind.CLEARED, "stopped on purpose"
            else:
                continue  # restarting or in its start period: not back yet
            del self.active_faults[container_id]
            if outcome == EntryKind.RECOVERED:
                self.metrics.recovered(fault.kind.value, now - fault.since)
            self.last_decision.pop(container_id, None)
            self.dry_run_announced = {k for k in self.dry_run_announced if k[0] != container_id}
            logger.bind(container=fault.container, fault=fault.kind.value).info("{}: {}", fault.container, text)
            self.journal.record(
                outcome,
                text,
                ts=now,
                container=fault.container,
                container_id=container_id,
                gpus=fault.gpus,
                fault=fault.kind.value,
                duration=now - fault.since,
            )

    def _settle_in_flight(self, by_id: dict[str, ContainerSnapshot], diagnosis: Diagnosis, now: float) -> None:
        for name, job in list(self.in_flight.items()):
            if job.future is not None and not job.future.done():
                continue
            container = by_id.get(job.container_id)
            state = recovery_of(container, job.container_id in diagnosis.ready, job.issued_at, job.timeout, now)
            if job.outcome is not None and job.outcome != "ok" and state != Recovery.RECOVERED:
                state = Recovery.TIMED_OUT  # the restart call itself failed: free the slot
            if state == Recovery.PENDING:
                continue
            del self.in_flight[name]
            log = logger.bind(container=name, action_id=job.action_id)
            if state == Recovery.RECOVERED:
                log.info("{} is back {:.1f} s after its restart was issued", name, now - job.issued_at)
            elif state == Recovery.GONE:
                log.warning("{} disappeared while being restarted", name)
            elif state == Recovery.FAILED:
                log.warning(
                    "{} died again {:.1f} s after its restart, before it was healthy", name, now - job.issued_at
                )
            else:
                log.warning(
                    "{} not healthy {:.0f} s after its restart ({}); slot released",
                    name,
                    now - job.issued_at,
                    job.outcome or "call ok",
                )
            self.journal.record(
                restart_outcome(state.value),
                f"{name}: {state.value} {now - job.issued_at:.1f} s after the restart was issued",
                ts=now,
                container=name,
                container_id=job.container_id,
                action_id=job.action_id,
                fault=job.fault.kind.value,
                duration=now - job.issued_at,
            )

    def _act(self, decisions: list[Decision], by_id: dict[str, ContainerSnapshot], now: float) -> None:
        for decision in decisions:
            fault = decision.fault
            log = logger.bind(
                container=fault.container,
                gpu=",".join(fault.gpus),
                fault=fault.kind.value,
                verdict=decision.verdict.value,
            )
            if decision.verdict == Verdict.RESTART:
                if self.config.dry_run:
                    key = (fault.container_id, fault.kind.value)
                    if key not in self.dry_run_announced:
                        self.dry_run_announced.add(key)
                        log.warning("DRY-RUN: would restart {} ({})", fault.container, decision.reason)
                        self.journal.record(
                            EntryKind.DRY_RUN,
                            f"would restart: {decision.reason}",
                            ts=now,
                            container=fault.container,
                            container_id=fault.container_id,
                            gpus=fault.gpus,
                            fault=fault.kind.value,
                        )
                    continue
                self._issue_restart(decision, by_id.get(fault.container_id), now)
                continue
            if decision.verdict == Verdict.GIVE_UP:
                self.journal.give_up(fault.container, ts=now)
                log.critical(
                    "GIVING UP on {}: {}. Fix it, then `gpu-watchdog reset {}`",
                    fault.container,
                    decision.reason,
                    fault.container,
                )
            previous = self.last_decision.get(fault.container_id)
            if previous is not None and previous[0] == decision.verdict:
                continue
            self.last_decision[fault.container_id] = (decision.verdict, decision.reason)
            if decision.verdict != Verdict.GIVE_UP:
                log.info("{}: {}: {}", fault.container, decision.verdict.value, decision.reason)
            self.journal.record(
                verdict_entry(decision.verdict.value),
                decision.reason,
                ts=now,
                container=fault.container,
                container_id=fault.container_id,
                gpus=fault.gpus,
                fault=fault.kind.value,
            )

    def _issue_restart(self, decision: Decision, container: ContainerSnapshot | None, now: float) -> None:
        fault = decision.fault
        self.own.open(fault.container_id, now)
        action_id = self.journal.begin_action(
            ActionKind.RESTART, fault.container, fault.container_id, fault.kind.value, decision.reason, ts=now
        )
        job = InFlight(
            action_id,
            fault.container,
            fault.container_id,
            fault,
            now,
            decision.ram_needed,
            recovery_timeout_of(container, self.config),
        )
        self.in_flight[fault.container] = job
        self.metrics.restart_issued(fault.container, fault.kind.value)
        self.last_decision[fault.container_id] = (decision.verdict, decision.reason)
        logger.bind(
            container=fault.container, gpu=",".join(fault.gpus), fault=fault.kind.value, action_id=action_id
        ).warning("restarting {}: {}", fault.container, decision.reason)
        job.future = self.executor.submit(self._run_restart, job, decision.stop_timeout)

    def _run_restart(self, job: InFlight, stop_timeout: float) -> str:
        call_started_at = self.clock()
        started = time.monotonic()
        try:
            restart_container(self.client, job.container_id, stop_timeout)
            outcome = "ok"
        except EngineUnreachable as exc:  # e.g. the engine shutting down: no attempt, the breaker does not count it
            outcome = f"{NOT_SENT}: engine unreachable ({exc})"
        except ActionFailed as exc:
            outcome = f"failed: {exc}"
        except Exception as exc:  # an adapter bug must not kill the worker silently
            outcome = f"failed: {type(exc).__name__}: {exc}"
        duration = time.monotonic() - started
        end = self.clock()
        job.outcome = outcome
        self.own.close(job.container_id, job.issued_at, end)
        self.journal.finish_action(job.action_id, outcome, ts=end)
        self.journal.record(
            EntryKind.RESTART_CALL,
            f"docker restart {job.container}: {outcome} in {duration:.2f} s",
            ts=end,
            container=job.container,
            container_id=job.container_id,
            action_id=job.action_id,
            fault=job.fault.kind.value,
            duration=duration,
            detail={"call_started_at": call_started_at, "detected_at": job.issued_at},
        )
        log = logger.bind(container=job.container, action_id=job.action_id)
        (log.info if outcome == "ok" else log.error)(
            "restart call for {}: {} ({:.2f} s)", job.container, outcome, duration
        )
        self.wake.set()
        return outcome

    def _write_status(
        self,
        containers: list[ContainerSnapshot],
        diagnosis: Diagnosis,
        decisions: list[Decision],
        histories: Mapping[str, ProbeHistory],
        gpu: GpuFindings,
        now: float,
    ) -> None:
        """The daemon's view for `gpu-watchdog status` (atomic replace, at most once a poll)."""
        view = daemon_view(
            containers,
            diagnosis,
            decisions,
            histories,
            set(self.in_flight),
            now,
            dry_run=self.config.dry_run,
            engine_up=self.engine_up,
            journal_write_failures=self.journal.write_failures,
        )
        view["gpu"] = gpu.view
        view["router"] = self.router.view()
        self.metrics.observe(containers, diagnosis, decisions, gpu.view, view["router"], self.engine_up)
        path = self.state_dir / STATUS_FILE
        try:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(view))
            tmp.replace(path)
        except OSError as exc:
            logger.error("cannot write {}: {}", path, exc)
        if now - self._heartbeat_written >= self.config.poll_interval:
            self._heartbeat_written = now
            self.journal.set_meta("heartbeat", repr(now))

    # -- running -------------------------------------------------------------

    def next_wait(self) -> float:
        if not self.engine_up:
            return self.engine_backoff
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
        if self.watcher is not None:
            self.watcher.stop()
        pending = [job for job in self.in_flight.values() if job.future is not None and not job.future.done()]
        if pending:
            logger.info("waiting up to {:.0f} s for {} restart call(s) in flight", grace, len(pending))
        deadline = time.monotonic() + grace
        for job in pending:
            assert job.future is not None
            try:
                job.future.result(timeout=max(0.1, deadline - time.monotonic()))
            except Exception:  # recorded as unfinished; reconciled at next start
                logger.warning(
                    "restart of {} still running at shutdown: it is reconciled at the next start", job.container
                )
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.memory_limits.stop()
        self.prober.close()
        self.gpu.stop()
