"""The restart tracker: issues restarts on the worker pool, settles them, waits for them at shutdown. I/O.

A restart holds a slot (and the RAM it loads) from the moment it is issued until the container
is back, died again, disappeared, or timed out; `containers.in_flight` decides which. Each
restart is an action row in the journal (begun before the call, finished when it returns), so
a watchdog killed mid-call leaves a row that `containers.reconcile` settles at the next start.
The call runs in an own-action window, so its kill/die/stop/start events are not an operator's.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping

from loguru import logger

from watchdog.config import Config
from watchdog.containers.diagnose import Recovery, recovery_timeout_of
from watchdog.containers.in_flight import InFlight, budget_of, settlement_of
from watchdog.containers.plan import RestartBudget
from watchdog.containers.restart import ActionFailed, EngineUnreachable, restart_container
from watchdog.entries import ActionKind, EntryKind, restart_outcome
from watchdog.model import NOT_SENT, ContainerSnapshot, Decision
from watchdog.ops.metrics import Metrics
from watchdog.subsystem import Services


class RestartTracker:
    """The restarts in flight, by container name: at most one each."""

    def __init__(self, config: Config, services: Services, metrics: Metrics) -> None:
        self.config = config
        self.services = services
        self.metrics = metrics
        self.in_flight: dict[str, InFlight] = {}

    def apply_config(self, config: Config) -> None:
        """New settings (recovery timeout, start periods) apply to restarts issued from now on."""
        self.config = config

    @property
    def restarting(self) -> set[str]:
        """IDs of containers whose restart call has not returned: their transient states are no fault."""
        return {job.container_id for job in self.in_flight.values() if job.outcome is None}

    def budget(self, mem_available: int | None) -> RestartBudget:
        """What the planner may still spend, given what the restarts in flight hold."""
        return budget_of(self.in_flight.values(), mem_available)

    def issue(self, decision: Decision, container: ContainerSnapshot | None, now: float) -> InFlight:
        """Begin the action, take the slot, and hand the call to the worker pool."""
        fault = decision.fault
        journal = self.services.journal
        self.services.own.open(fault.container_id, now)
        action_id = journal.begin_action(
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
        logger.bind(
            container=fault.container, gpu=",".join(fault.gpus), fault=fault.kind.value, action_id=action_id
        ).warning("restarting {}: {}", fault.container, decision.reason)
        job.future = self.services.executor.submit(self.run, job, decision.stop_timeout)
        return job

    def run(self, job: InFlight, stop_timeout: float) -> str:
        """On a worker: make the call, close the own-action window, finish the action row, wake the loop."""
        clock = self.services.clock
        call_started_at = clock()
        started = time.monotonic()
        try:
            restart_container(self.services.client, job.container_id, stop_timeout)
            outcome = "ok"
        except EngineUnreachable as exc:  # e.g. the engine shutting down: no attempt, the breaker does not count it
            outcome = f"{NOT_SENT}: engine unreachable ({exc})"
        except ActionFailed as exc:
            outcome = f"failed: {exc}"
        except Exception as exc:  # an adapter bug must not kill the worker silently
            outcome = f"failed: {type(exc).__name__}: {exc}"
        duration = time.monotonic() - started
        end = clock()
        job.outcome = outcome
        self.services.own.close(job.container_id, job.issued_at, end)
        self.services.journal.finish_action(job.action_id, outcome, ts=end)
        self.services.journal.record(
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
        self.services.wake()
        return outcome

    def settle(self, by_id: Mapping[str, ContainerSnapshot], ready: Collection[str], now: float) -> list[InFlight]:
        """Release the slots of restarts that are over, journaling how each ended; returns them."""
        settled: list[InFlight] = []
        for name, job in list(self.in_flight.items()):
            if job.calling:
                continue
            state = settlement_of(job, by_id.get(job.container_id), job.container_id in ready, now)
            if state == Recovery.PENDING:
                continue
            del self.in_flight[name]
            settled.append(job)
            self._say_settled(job, state, now)
        return settled

    def _say_settled(self, job: InFlight, state: Recovery, now: float) -> None:
        name = job.container
        log = logger.bind(container=name, action_id=job.action_id)
        if state == Recovery.RECOVERED:
            log.info("{} is back {:.1f} s after its restart was issued", name, now - job.issued_at)
        elif state == Recovery.GONE:
            log.warning("{} disappeared while being restarted", name)
        elif state == Recovery.FAILED:
            log.warning("{} died again {:.1f} s after its restart, before it was healthy", name, now - job.issued_at)
        else:
            log.warning(
                "{} not healthy {:.0f} s after its restart ({}); slot released",
                name,
                now - job.issued_at,
                job.outcome or "call ok",
            )
        self.services.journal.record(
            restart_outcome(state.value),
            f"{name}: {state.value} {now - job.issued_at:.1f} s after the restart was issued",
            ts=now,
            container=name,
            container_id=job.container_id,
            action_id=job.action_id,
            fault=job.fault.kind.value,
            duration=now - job.issued_at,
        )

    def wait_for_calls(self, grace: float) -> None:
        """At shutdown: let restart calls in flight finish and be journaled, up to `grace` seconds."""
        pending = [job for job in self.in_flight.values() if job.calling]
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
