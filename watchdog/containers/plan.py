"""Planning: from faults and policy to an ordered list of decisions.

Pure: no I/O, no clock reads. Order is priority (higher first), then fault
severity (stopped, zero-VRAM, unhealthy/endpoint), then longest-down first.
Each fault gets exactly one decision with a reason: restart, drain (a fault
that can wait: its in-flight requests finish first, see containers/urgency.py),
defer (no slot, not enough host RAM, or the replica floor of its model group),
backoff, give up, given up, already in progress, or held (its GPU is
quarantined or draining). Faults that can wait are staggered within a model
group: one is taken out only while the others keep `drain.min_replicas` serving.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from watchdog.config import Config
from watchdog.containers.breaker import BreakerHistory, BreakerState, evaluate
from watchdog.containers.urgency import may_take_out, urgency
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


def group_of(container: ContainerSnapshot | None) -> str | None:
    """The model group a container serves in (its `model` label), if any."""
    return container.spec.model if container is not None and container.spec is not None else None


def serving_by_group(
    containers: Mapping[str, ContainerSnapshot], faults: Sequence[Fault], ready: Collection[str], out: Collection[str]
) -> dict[str, set[str]]:
    """Model group -> names of its replicas serving now: healthy, or with a fault that leaves it answering.

    `out`: container IDs taken out already (draining, restarting, held).
    """
    answering = set(ready) | {f.container_id for f in faults if not urgency(f)[0]}
    answering -= {f.container_id for f in faults if urgency(f)[0]}
    groups: dict[str, set[str]] = {}
    for container_id, container in containers.items():
        group = group_of(container)
        if group is not None and container.managed:
            members = groups.setdefault(group, set())
            if container_id in answering and container_id not in out:
                members.add(container.name)
    return groups


def group_sizes(containers: Mapping[str, ContainerSnapshot]) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for container in containers.values():
        group = group_of(container)
        if group is not None and container.managed:
            sizes[group] = sizes.get(group, 0) + 1
    return sizes


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
    ready: Collection[str] = (),
    drained: Collection[str] | None = None,
    draining: Collection[str] = (),
) -> list[Decision]:
    """One decision per fault, in the order they should be carried out.

    `held`: container ID -> why its GPU forbids a restart (quarantined, draining, resetting).
    `ready`: container IDs healthy now (the replica floor counts them). `drained`: container IDs
    whose drain ended, None when drains are off; `draining`: those with a drain in force, ended or not
    (out of rotation: not serving).
    """
    held = held or {}
    decisions: list[Decision] = []
    restarting = {c.id for c in containers.values() if c.name in in_progress}
    serving = serving_by_group(containers, faults, ready, {*draining, *restarting, *held})
    sizes = group_sizes(containers)
    floor = config.drain.min_replicas
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
        urgent, why = urgency(fault)
        group = group_of(container)
        if not urgent and group is not None:
            allowed, floor_reason = may_take_out(
                serving[group], floor, name=fault.container, group=group, size=sizes.get(group)
            )
            if not allowed:
                decide(Verdict.DEFER, f"not taken out: {floor_reason}; {fault.kind.value}: {fault.reason}")
                continue
            serving[group].discard(fault.container)  # staggered: the next one in the group sees one fewer
        if not urgent and drained is not None and fault.container_id not in drained:
            decide(Verdict.DRAIN, f"draining before the restart ({why}): {fault.reason}")
            continue
        slots_used += 1
        committed += need
        decide(Verdict.RESTART, f"restart: {fault.kind.value}: {fault.reason}")
    return decisions
