"""Planning: from faults and policy to an ordered list of decisions.

Pure: no I/O, no clock reads. Order is priority (higher first), then fault
severity (stopped, zero-VRAM, unhealthy/endpoint), then longest-down first.
Each fault gets exactly one decision with a reason: restart, defer (no slot,
not enough host RAM), backoff, give up, given up, already in progress, or held
(its GPU is quarantined or draining).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from watchdog.config import Config
from watchdog.containers.breaker import BreakerHistory, BreakerState, evaluate
from watchdog.model import ContainerSnapshot, Decision, Fault, FaultKind, Verdict
from watchdog.units import format_bytes

DEFAULT_STOP_TIMEOUT = 10.0


@dataclass(frozen=True)
class RestartBudget:
    """What restarts may still spend when planning: slots in flight, RAM they will load, MemAvailable.

    A restart budget, not a fleet's capacity (that is `router.capacity`): `plan` spends it
    in priority order and defers what it cannot cover.
    """

    restarts_in_flight: int = 0
    ram_committed: int = 0
    mem_available: int | None = None  # None: unknown host, preflight skipped


def fault_order(fault: Fault) -> tuple[int, int, float, str]:
    return (-fault.priority, fault.severity, fault.since, fault.container)


def ram_need(container: ContainerSnapshot | None) -> int:
    """The model-size label, else the memory limit, else 0 (only the reserve applies)."""
    if container is None:
        return 0
    if container.spec is not None and container.spec.model_size:
        return container.spec.model_size
    return container.memory_limit


def stop_timeout_of(container: ContainerSnapshot | None) -> float:
    if container is not None and container.spec is not None and container.spec.stop_timeout is not None:
        return container.spec.stop_timeout
    if container is not None and container.stop_timeout is not None:
        return container.stop_timeout
    return DEFAULT_STOP_TIMEOUT


def does_not_answer(fault: Fault) -> bool:
    """A hung server (every probe of its streak timed out) or a wedged one: its SIGTERM handler may never run."""
    if fault.kind == FaultKind.WEDGED:
        return True
    return fault.kind == FaultKind.ENDPOINT_FAILING and bool(fault.evidence and fault.evidence.get("unanswered"))


def stop_timeout_for(fault: Fault, container: ContainerSnapshot | None, hung_stop_timeout: float) -> float:
    """The stop timeout of this restart: the container's own, capped for a server that does not answer.

    A hung llama.cpp or vLLM server never acts on SIGTERM (its handler waits on the stuck loop), so
    `docker restart` would wait out the whole timeout (10 s by default) before its SIGKILL. A
    stop-timeout label is the operator's explicit wish and is kept as it is.
    """
    own = stop_timeout_of(container)
    labelled = container is not None and container.spec is not None and container.spec.stop_timeout is not None
    return own if labelled or not does_not_answer(fault) else min(own, hung_stop_timeout)


def plan(
    faults: Sequence[Fault],
    containers: Mapping[str, ContainerSnapshot],
    breakers: Mapping[str, BreakerHistory],
    in_progress: Collection[str],
    budget: RestartBudget,
    *,
    config: Config,
    now: float,
    held: Mapping[str, str] | None = None,
) -> list[Decision]:
    """One decision per fault, in the order they should be carried out.

    `held`: container ID -> why its GPU forbids a restart (quarantined, draining, resetting).
    """
    held = held or {}
    decisions: list[Decision] = []
    slots_used = budget.restarts_in_flight
    committed = budget.ram_committed
    for fault in sorted(faults, key=fault_order):
        container = containers.get(fault.container_id)
        need = ram_need(container)
        stop_timeout = stop_timeout_for(fault, container, config.serving.hung_stop_timeout)

        def decide(
            verdict: Verdict,
            reason: str,
            retry_at: float | None = None,
            *,
            fault: Fault = fault,
            need: int = need,
            stop_timeout: float = stop_timeout,
        ) -> None:
            decisions.append(Decision(fault, verdict, reason, need, stop_timeout, retry_at))

        if fault.container in in_progress:
            decide(Verdict.IN_PROGRESS, "a restart of it is already in progress")
            continue
        if fault.container_id in held:
            decide(Verdict.HELD, f"not restarted: {held[fault.container_id]}")
            continue
        max_restarts = container.spec.max_restarts if container and container.spec else None
        verdict = evaluate(breakers.get(fault.container, BreakerHistory()), config.breaker, now, max_restarts)
        if verdict.state == BreakerState.OPEN:
            decide(Verdict.GIVEN_UP, verdict.reason)
            continue
        if verdict.state == BreakerState.TRIP:
            decide(Verdict.GIVE_UP, verdict.reason)
            continue
        if verdict.state == BreakerState.BACKOFF:
            decide(Verdict.BACKOFF, verdict.reason, retry_at=verdict.next_allowed_at)
            continue
        if slots_used >= config.max_concurrent_restarts:
            decide(
                Verdict.DEFER,
                f"waiting for a restart slot ({slots_used} of max_concurrent_restarts="
                f"{config.max_concurrent_restarts} in use)",
            )
            continue
        if config.ram_preflight.enabled and budget.mem_available is not None:
            required = int(need * config.ram_preflight.factor) + config.ram_preflight.reserve
            available = budget.mem_available - committed
            if available < required:
                decide(
                    Verdict.DEFER,
                    f"host RAM preflight: needs {format_bytes(required)} ({format_bytes(need)} x "
                    f"{config.ram_preflight.factor} + {format_bytes(config.ram_preflight.reserve)} reserve), "
                    f"MemAvailable {format_bytes(available)}"
                    + (f" after {format_bytes(committed)} committed to restarts in progress" if committed else ""),
                )
                continue
        slots_used += 1
        committed += need
        decide(Verdict.RESTART, f"restart: {fault.kind.value}: {fault.reason}")
    return decisions
