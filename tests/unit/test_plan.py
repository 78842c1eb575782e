"""watchdog.containers.plan: order faults, respect slots, RAM and the breaker; one decision each."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from watchdog.config import Config, RamPreflightConfig
from watchdog.containers.breaker import BreakerHistory
from watchdog.containers.plan import DEFAULT_STOP_TIMEOUT, RestartBudget, plan
from watchdog.model import ContainerSnapshot, ContainerSpec, ContainerState, Decision, Fault, FaultKind, Verdict

GIB = 1024**3
NOW = 10_000.0
CFG = Config()  # 1 slot; RAM: need x 1.1 + 1 GiB
MANY = replace(CFG, max_concurrent_restarts=10)
NO_RAM = RestartBudget(mem_available=None)


def fault(name: str, priority: int = 0, kind: FaultKind = FaultKind.STOPPED, since: float = 100.0) -> Fault:
    return Fault(f"id-{name}", name, kind, since, f"{name} is down", priority)


def snap(name: str, model_size: int | None = None, memory_limit: int = 0, **spec: object) -> ContainerSnapshot:
    return ContainerSnapshot(
        id=f"id-{name}",
        name=name,
        state=ContainerState.EXITED,
        spec=ContainerSpec(model_size=model_size, **spec),  # type: ignore[arg-type]
        memory_limit=memory_limit,
    )


def decide(
    faults: list[Fault],
    containers: Sequence[ContainerSnapshot] = (),
    capacity: RestartBudget = NO_RAM,
    config: Config = CFG,
    breakers: dict[str, BreakerHistory] | None = None,
    in_progress: tuple[str, ...] = (),
) -> list[Decision]:
    return plan(faults, {c.id: c for c in containers}, breakers or {}, in_progress, capacity, config=config, now=NOW)


def verdicts(decisions: list[Decision]) -> list[tuple[str, Verdict]]:
    return [(d.fault.container, d.verdict) for d in decisions]


def test_order_is_priority_then_severity_then_oldest_first() -> None:
    faults = [
        fault("low", priority=0, since=1.0),
        fault("endpoint", priority=10, kind=FaultKind.ENDPOINT_FAILING, since=50.0),
        fault("stopped-new", priority=10, since=60.0),
        fault("stopped-old", priority=10, since=40.0),
        fault("unhealthy-old", priority=10, kind=FaultKind.UNHEALTHY, since=5.0),
    ]
    decisions = decide(faults, config=MANY)
    assert [d.fault.container for d in decisions] == ["stopped-old", "stopped-new", "unhealthy-old", "endpoint", "low"]
    assert all(d.verdict == Verdict.RESTART for d in decisions)


def test_one_slot_restarts_the_first_and_defers_the_rest_naming_the_setting() -> None:
    decisions = decide([fault("a", 1), fault("b", 5), fault("c", 3)])
    assert verdicts(decisions) == [("b", Verdict.RESTART), ("c", Verdict.DEFER), ("a", Verdict.DEFER)]
    assert all("max_concurrent_restarts=1" in d.reason for d in decisions[1:])


def test_restarts_in_flight_use_up_slots() -> None:
    two = replace(CFG, max_concurrent_restarts=2)
    decisions = decide([fault("a"), fault("b")], capacity=RestartBudget(restarts_in_flight=1), config=two)
    assert verdicts(decisions) == [("a", Verdict.RESTART), ("b", Verdict.DEFER)]
    full = decide([fault("a")], capacity=RestartBudget(restarts_in_flight=2), config=two)
    assert full[0].verdict == Verdict.DEFER
    assert "2 of max_concurrent_restarts=2" in full[0].reason


def required(need: int, config: Config = CFG) -> int:
    return int(need * config.ram_preflight.factor) + config.ram_preflight.reserve


@pytest.mark.parametrize(
    ("container", "need"),
    [
        (snap("a", model_size=4 * GIB, memory_limit=16 * GIB), 4 * GIB),  # label wins
        (snap("a", memory_limit=8 * GIB), 8 * GIB),
        (snap("a"), 0),  # only the reserve applies
    ],
    ids=["model-size", "memory-limit", "nothing"],
)
def test_ram_preflight_need_is_model_size_else_memory_limit(container: ContainerSnapshot, need: int) -> None:
    enough = decide([fault("a")], [container], RestartBudget(mem_available=required(need)))
    assert enough[0].verdict == Verdict.RESTART
    assert enough[0].ram_needed == need
    short = decide([fault("a")], [container], RestartBudget(mem_available=required(need) - 1))
    assert short[0].verdict == Verdict.DEFER
    assert "MemAvailable" in short[0].reason


def test_required_ram_is_need_times_factor_plus_reserve() -> None:
    config = replace(CFG, ram_preflight=RamPreflightConfig(factor=1.5, reserve=2 * GIB))
    container = snap("a", model_size=4 * GIB)
    assert decide([fault("a")], [container], RestartBudget(mem_available=8 * GIB), config)[0].verdict == Verdict.RESTART
    short = decide([fault("a")], [container], RestartBudget(mem_available=8 * GIB - 1), config)[0]
    assert short.verdict == Verdict.DEFER
    assert "8.0 GiB" in short.reason  # 4 GiB x 1.5 + 2 GiB


def test_ram_committed_by_earlier_decisions_in_the_same_plan_counts() -> None:
    containers = [snap("a", model_size=4 * GIB), snap("b", model_size=4 * GIB)]
    capacity = RestartBudget(mem_available=required(4 * GIB) + 4 * GIB - 1)
    decisions = decide([fault("a", 2), fault("b", 1)], containers, capacity, MANY)
    assert verdicts(decisions) == [("a", Verdict.RESTART), ("b", Verdict.DEFER)]
    assert "MemAvailable" in decisions[1].reason and "committed" in decisions[1].reason


def test_ram_committed_to_restarts_in_flight_counts() -> None:
    container = snap("a", model_size=4 * GIB)
    capacity = RestartBudget(restarts_in_flight=1, ram_committed=4 * GIB, mem_available=required(4 * GIB) + 4 * GIB - 1)
    decision = decide([fault("a")], [container], capacity, MANY)[0]
    assert decision.verdict == Verdict.DEFER
    assert "MemAvailable" in decision.reason


def test_a_ram_deferral_does_not_take_the_slot_from_a_smaller_container() -> None:
    containers = [snap("big", model_size=64 * GIB), snap("small", model_size=1 * GIB)]
    decisions = decide([fault("big", 9), fault("small", 1)], containers, RestartBudget(mem_available=8 * GIB))
    assert verdicts(decisions) == [("big", Verdict.DEFER), ("small", Verdict.RESTART)]


@pytest.mark.parametrize(
    ("config", "capacity"),
    [
        (replace(CFG, ram_preflight=RamPreflightConfig(enabled=False)), RestartBudget(mem_available=1)),
        (CFG, RestartBudget(mem_available=None)),
    ],
    ids=["preflight-disabled", "mem-available-unknown"],
)
def test_no_ram_deferral_without_preflight(config: Config, capacity: RestartBudget) -> None:
    decision = decide([fault("a")], [snap("a", model_size=64 * GIB)], capacity, config)[0]
    assert decision.verdict == Verdict.RESTART


def test_container_already_in_progress_gets_in_progress_and_no_slot() -> None:
    decisions = decide([fault("a", 5), fault("b", 1)], in_progress=("a",))
    assert verdicts(decisions) == [("a", Verdict.IN_PROGRESS), ("b", Verdict.RESTART)]


def test_breaker_backoff_comes_through_with_retry_at() -> None:
    decision = decide([fault("a")], breakers={"a": BreakerHistory((NOW - 4.0,))})[0]
    assert decision.verdict == Verdict.BACKOFF
    assert decision.retry_at == NOW - 4.0 + CFG.breaker.backoff_initial


def test_breaker_trip_is_give_up() -> None:
    attempts = tuple(NOW - 200.0 + 40.0 * i for i in range(5))
    decision = decide([fault("a")], breakers={"a": BreakerHistory(attempts)})[0]
    assert decision.verdict == Verdict.GIVE_UP
    assert decision.retry_at is None


def test_breaker_open_is_given_up() -> None:
    decision = decide([fault("a")], breakers={"a": BreakerHistory(given_up_at=NOW - 60.0)})[0]
    assert decision.verdict == Verdict.GIVEN_UP


def test_breaker_verdicts_do_not_use_slots() -> None:
    decisions = decide([fault("a", 5), fault("b", 1)], breakers={"a": BreakerHistory((NOW - 4.0,))})
    assert verdicts(decisions) == [("a", Verdict.BACKOFF), ("b", Verdict.RESTART)]


def test_per_container_max_restarts_label_is_used_by_the_breaker() -> None:
    history = {"a": BreakerHistory((NOW - 100.0, NOW - 50.0))}
    limited = decide([fault("a")], [snap("a", max_restarts=2)], breakers=history)[0]
    assert limited.verdict == Verdict.GIVE_UP
    assert decide([fault("a")], [snap("a")], breakers=history)[0].verdict == Verdict.RESTART


def test_stop_timeout_is_label_then_container_then_default() -> None:
    labelled = replace(snap("a", stop_timeout=45.0), stop_timeout=20.0)
    assert decide([fault("a")], [labelled])[0].stop_timeout == 45.0
    assert decide([fault("a")], [replace(snap("a"), stop_timeout=20.0)])[0].stop_timeout == 20.0
    assert decide([fault("a")], [snap("a")])[0].stop_timeout == DEFAULT_STOP_TIMEOUT
    assert DEFAULT_STOP_TIMEOUT == 10.0  # README, gpu-watchdog.stop-timeout: "else 10"
    assert decide([fault("a")], [snap("a")])[0].stop_timeout == 10.0


faults_strategy = st.lists(
    st.builds(
        Fault,
        container_id=st.just(""),
        container=st.text(alphabet="abcdefgh", min_size=1, max_size=3),
        kind=st.sampled_from(FaultKind),
        since=st.floats(0, NOW),
        reason=st.just("down"),
        priority=st.integers(-5, 5),
    ),
    max_size=12,
).map(lambda fs: [replace(f, container_id=f"id-{f.container}") for f in fs])


@given(
    faults=faults_strategy,
    slots=st.integers(1, 4),
    in_flight=st.integers(0, 6),
    mem_available=st.none() | st.integers(0, 64 * GIB),
    committed=st.integers(0, 8 * GIB),
    sizes=st.lists(st.integers(0, 16 * GIB), min_size=8, max_size=8),
    in_progress=st.sets(st.sampled_from(list("abcdefgh")), max_size=3),
)
def test_restarts_never_exceed_free_slots_and_every_fault_gets_one_decision(
    faults: list[Fault],
    slots: int,
    in_flight: int,
    mem_available: int | None,
    committed: int,
    sizes: list[int],
    in_progress: set[str],
) -> None:
    containers = [snap(name, model_size=size or None) for name, size in zip("abcdefgh", sizes, strict=True)]
    capacity = RestartBudget(restarts_in_flight=in_flight, ram_committed=committed, mem_available=mem_available)
    decisions = decide(
        faults, containers, capacity, replace(CFG, max_concurrent_restarts=slots), None, tuple(in_progress)
    )
    restarts = [d for d in decisions if d.verdict == Verdict.RESTART]
    assert len(restarts) <= max(0, slots - in_flight)
    assert sorted(map(id, (d.fault for d in decisions))) == sorted(map(id, faults))
    if mem_available is not None:
        assert sum(d.ram_needed for d in restarts) <= max(0, mem_available - committed)


def test_a_server_that_does_not_answer_gets_a_short_stop_unless_its_label_says_otherwise() -> None:
    hung = replace(fault("a", kind=FaultKind.ENDPOINT_FAILING), evidence={"unanswered": True})
    erring = replace(fault("a", kind=FaultKind.ENDPOINT_FAILING), evidence={"unanswered": False})
    wedged = fault("a", kind=FaultKind.WEDGED)
    own = replace(snap("a"), stop_timeout=20.0)
    assert decide([hung], [own])[0].stop_timeout == CFG.serving.hung_stop_timeout == 2.0
    assert decide([wedged], [own])[0].stop_timeout == 2.0
    assert decide([erring], [own])[0].stop_timeout == 20.0  # it answers (HTTP 500): a polite stop can work
    assert decide([fault("a")], [own])[0].stop_timeout == 20.0
    assert decide([hung], [replace(own, stop_timeout=1.0)])[0].stop_timeout == 1.0  # never longer than its own
    assert decide([hung], [snap("a", stop_timeout=45.0)])[0].stop_timeout == 45.0  # the label is an explicit wish
