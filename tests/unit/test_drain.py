"""Drains and the replica floor (issue 15, points 3 and 4): urgency, the floor, the drain state machine, the plan."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from watchdog.config import Config, ConfigError, DrainConfig, parse_config
from watchdog.containers.plan import RestartBudget, plan
from watchdog.containers.urgency import below_floor, may_take_out, urgency, xid_urgency
from watchdog.entries import EntryKind
from watchdog.model import ContainerSnapshot, ContainerSpec, ContainerState, Decision, Fault, FaultKind, Verdict
from watchdog.router.drain import SETTLE, Drain, DrainBoard, DrainPurpose, DrainState, InFlightSeen, step
from watchdog.router.drain_watch import operator_targets
from watchdog.router.router_feedback import in_flight_of, parse_report

NOW = 10_000.0
CFG = replace(Config(), max_concurrent_restarts=5)


def fault(name: str, kind: FaultKind = FaultKind.UNHEALTHY, **evidence: object) -> Fault:
    return Fault(f"id-{name}", name, kind, 100.0, f"{name}: {kind.value}", evidence=evidence or None)


def snap(name: str, model: str | None = "qwen") -> ContainerSnapshot:
    return ContainerSnapshot(
        id=f"id-{name}", name=name, state=ContainerState.RUNNING, spec=ContainerSpec(model=model, gpus=("0",))
    )


def decide(
    faults: list[Fault],
    containers: list[ContainerSnapshot],
    *,
    ready: tuple[str, ...] = (),
    drained: tuple[str, ...] | None = (),
    draining: tuple[str, ...] = (),
    in_progress: tuple[str, ...] = (),
    config: Config = CFG,
) -> list[Decision]:
    return plan(
        faults,
        {c.id: c for c in containers},
        {},
        in_progress,
        RestartBudget(),
        config=config,
        now=NOW,
        ready=ready,
        drained=drained,
        draining=draining,
    )


# -- urgency: one table -----------------------------------------------------


@pytest.mark.parametrize(
    "kind", [FaultKind.STOPPED, FaultKind.WEDGED, FaultKind.ENDPOINT_FAILING, FaultKind.ZERO_VRAM, FaultKind.GPU_XID]
)
def test_dead_hung_wedged_and_gpu_faults_are_urgent(kind: FaultKind) -> None:
    urgent, why = urgency(fault("a", kind))
    assert urgent and why.startswith(kind.value)


def test_an_unhealthy_healthcheck_can_wait_for_a_drain() -> None:
    assert urgency(fault("a", FaultKind.UNHEALTHY))[0] is False


def test_uncorrectable_ecc_resets_do_not_wait_other_reset_xids_do() -> None:
    assert xid_urgency(48)[0] and xid_urgency(95)[0]
    assert "silent corruption" in xid_urgency(48)[1]
    assert not xid_urgency(119)[0] and not xid_urgency(64)[0] and not xid_urgency(None)[0]


# -- the floor ----------------------------------------------------------------


def test_taking_out_the_last_serving_replica_is_refused_with_what_would_be_left() -> None:
    allowed, reason = may_take_out({"a"}, 1, name="a", group="qwen", size=2)
    assert not allowed
    assert reason == "would leave group qwen with 0 of 2 replicas serving (floor 1)"


def test_taking_out_one_of_two_serving_replicas_keeps_the_floor_of_one() -> None:
    assert may_take_out({"a", "b"}, 1, name="a", group="qwen", size=2) == (
        True,
        "leaves group qwen with 1 of 2 replicas serving (floor 1)",
    )


def test_no_group_or_a_zero_floor_never_refuses() -> None:
    assert may_take_out(set(), 1, name="a", group=None)[0]
    assert may_take_out({"a"}, 0, name="a", group="qwen")[0]


def test_below_floor_says_so_and_says_nothing_at_the_floor() -> None:
    assert below_floor({"a"}, ["a", "b"], 1, "qwen") is None
    said = below_floor(set(), ["a", "b"], 1, "qwen")
    assert said is not None and "cannot keep the replica floor of group qwen: 0 of 2" in said


# -- the drain state machine -----------------------------------------------------


def drain(timeout: float = 60.0, started: float = NOW) -> Drain:
    return Drain("id-a", "a", DrainPurpose.RESTART, "restart for unhealthy", started, timeout)


def test_a_drain_waits_while_the_proxy_or_the_server_shows_requests_in_flight() -> None:
    d = step(drain(), InFlightSeen(router=1, server=0, server_at=NOW + 1), NOW + 5)
    assert d.state == DrainState.DRAINING and d.in_flight == 1
    d = step(d, InFlightSeen(router=0, server=2, server_at=NOW + 5), NOW + 6)
    assert d.state == DrainState.DRAINING and d.in_flight == 2


def test_a_drain_ends_when_every_source_says_zero() -> None:
    d = step(drain(), InFlightSeen(router=0, server=0, server_at=NOW + 3), NOW + 3)
    assert d.state == DrainState.DRAINED and d.ended_at == NOW + 3
    assert "proxy 0, server 0" in d.reason


def test_a_drain_does_not_end_before_the_proxy_can_have_seen_the_rotation() -> None:
    d = step(drain(), InFlightSeen(router=0), NOW + SETTLE / 2)
    assert d.state == DrainState.DRAINING


def test_a_server_sample_from_before_the_drain_says_nothing() -> None:
    d = step(drain(), InFlightSeen(server=0, server_at=NOW - 1), NOW + SETTLE + 1)
    assert d.state == DrainState.DRAINING


def test_with_no_source_at_all_the_drain_goes_on_after_the_settle_time() -> None:
    d = step(drain(), InFlightSeen(), NOW + SETTLE)
    assert d.state == DrainState.DRAINED and "nothing shows its in-flight requests" in d.reason


def test_a_drain_times_out_with_requests_in_flight_and_says_so() -> None:
    d = step(drain(timeout=30), InFlightSeen(router=2), NOW + 30)
    assert d.state == DrainState.TIMED_OUT
    assert "timed out after 30 s" in d.reason and "proxy 2" in d.reason


def test_an_ended_drain_stays_ended() -> None:
    d = step(drain(), InFlightSeen(router=0), NOW + 3)
    assert step(d, InFlightSeen(router=5), NOW + 4) is d


def test_the_board_keeps_one_drain_a_container_and_reports_those_that_end() -> None:
    board = DrainBoard()
    assert board.request(drain())
    assert not board.request(replace(drain(), why="another"))
    assert board.out() == {"id-a": "draining: restart for unhealthy"}
    assert board.advance({"id-a": InFlightSeen(router=1)}, NOW + 3) == []
    ended = board.advance({"id-a": InFlightSeen(router=0)}, NOW + 4)
    assert [d.state for d in ended] == [DrainState.DRAINED]
    assert board.finished() == {"id-a"} and board.out() == {"id-a": "drained: restart for unhealthy"}
    assert board.view()["a"]["state"] == "drained"
    assert [d.container for d in board.release(["id-a"])] == ["a"] and not board.drains


# -- the plan: drain first, floor, stagger -------------------------------------------


def test_a_fault_that_can_wait_is_drained_before_its_restart() -> None:
    containers = [snap("a"), snap("b")]
    [first] = decide([fault("a")], containers, ready=("id-b",))
    assert first.verdict == Verdict.DRAIN and "draining before the restart" in first.reason
    [then] = decide([fault("a")], containers, ready=("id-b",), drained=("id-a",))
    assert then.verdict == Verdict.RESTART


def test_an_urgent_fault_is_restarted_at_once_without_a_drain() -> None:
    [decision] = decide([fault("a", FaultKind.STOPPED)], [snap("a"), snap("b")], ready=("id-b",))
    assert decision.verdict == Verdict.RESTART


def test_an_urgent_fault_is_restarted_even_when_it_leaves_the_group_under_its_floor() -> None:
    [decision] = decide([fault("a", FaultKind.STOPPED)], [snap("a")])
    assert decision.verdict == Verdict.RESTART


def test_drains_off_restart_at_once() -> None:
    [decision] = decide([fault("a")], [snap("a"), snap("b")], ready=("id-b",), drained=None)
    assert decision.verdict == Verdict.RESTART


def test_the_floor_defers_the_second_restart_in_a_group_of_two() -> None:
    decisions = decide([fault("a"), fault("b")], [snap("a"), snap("b")])
    assert [(d.fault.container, d.verdict) for d in decisions] == [("a", Verdict.DRAIN), ("b", Verdict.DEFER)]
    assert "would leave group qwen with 0 of 2 replicas serving (floor 1)" in decisions[1].reason


def test_a_replica_restarting_or_draining_does_not_count_as_serving() -> None:
    containers = [snap("a"), snap("b")]
    [decision] = decide([fault("b")], containers, in_progress=("a",))
    assert decision.verdict == Verdict.DEFER
    [decision] = decide([fault("b")], containers, draining=("id-a",))
    assert decision.verdict == Verdict.DEFER


def test_once_the_first_is_back_the_second_may_go() -> None:
    [decision] = decide([fault("b")], [snap("a"), snap("b")], ready=("id-a",))
    assert decision.verdict == Verdict.DRAIN


def test_containers_without_a_model_group_have_no_floor() -> None:
    [decision] = decide([fault("a")], [snap("a", model=None)])
    assert decision.verdict == Verdict.DRAIN


def test_a_floor_of_zero_lets_the_last_replica_go() -> None:
    config = replace(CFG, drain=DrainConfig(min_replicas=0))
    [decision] = decide([fault("a")], [snap("a")], config=config)
    assert decision.verdict == Verdict.DRAIN


# -- config, operator requests, the proxy's report ------------------------------------


def test_drain_config_parses_and_rejects_bad_values_by_name() -> None:
    config = parse_config({"drain": {"timeout": 30, "min_replicas": 2, "enabled": False}})
    assert config.drain == DrainConfig(enabled=False, timeout=30.0, min_replicas=2)
    with pytest.raises(ConfigError, match=r"drain\.min_replicas"):
        parse_config({"drain": {"min_replicas": -1}})
    with pytest.raises(ConfigError, match="drain"):
        parse_config({"drain": {"timeuot": 3}})


def test_an_operator_drain_holds_until_it_is_ended() -> None:
    rows = [
        {"id": 1, "kind": EntryKind.DRAIN_REQUESTED, "container": "a", "gpu": None, "ts": 5.0},
        {"id": 2, "kind": EntryKind.DRAIN_REQUESTED, "container": None, "gpu": "GPU-1", "ts": 6.0},
        {"id": 3, "kind": EntryKind.DRAIN_ENDED, "container": "a", "gpu": None, "ts": 7.0},
    ]
    assert operator_targets(rows) == {"GPU-1": 6.0}


def test_the_report_carries_in_flight_summed_over_proxy_processes() -> None:
    text = '{"version": 1, "written_at": 100, "deployments": {"d1": {"in_flight": 2}, "d2": {}}}'
    first, why = parse_report(text, "router-report-h-1.json", 100.0)
    second, _ = parse_report(text, "router-report-h-2.json", 100.0)
    assert why == "ok"
    assert in_flight_of([*first, *second]) == {"d1": 4}


def load_outliers() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "litellm" / "gpu_watchdog_outliers.py"
    spec = importlib.util.spec_from_file_location("gpu_watchdog_outliers", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gpu_watchdog_outliers", module)
    spec.loader.exec_module(module)
    return module


def test_the_proxy_counts_an_attempt_in_flight_from_its_pre_call_to_its_end() -> None:
    outliers = load_outliers()
    book = outliers.OutlierBook()
    book.started("call-1", "d1", "qwen", 10.0)
    book.started("call-1", "d1", "qwen", 10.0)  # the same attempt seen twice: counted once
    book.started("call-2", "d1", "qwen", 11.0)
    assert book.document(12.0, "h", 1)["deployments"]["d1"]["in_flight"] == 2
    book.ended("call-1", "d1")
    book.ended("call-9", "d1")  # an end with no start changes nothing
    assert book.in_flight(12.0) == {"d1": 1}
    assert book.in_flight(11.0 + outliers.IN_FLIGHT_MAX + 1) == {"d1": 0}, "a lost end event is forgotten"


def test_a_drained_replica_keeps_its_turn_over_the_other_of_its_group() -> None:
    decisions = decide([fault("b"), fault("a")], [snap("a"), snap("b")], drained=("id-a",), draining=("id-a",))
    assert sorted((d.fault.container, d.verdict) for d in decisions) == [("a", Verdict.RESTART), ("b", Verdict.DEFER)]


# -- the drain watch (the I/O side) on a real journal ------------------------------------


def watch_of(tmp_path: Path, config: Config = CFG, in_flight: dict[str, int] | None = None) -> Any:
    from concurrent.futures import ThreadPoolExecutor

    from watchdog.containers.own_actions import OwnActionWindows
    from watchdog.journal import Journal
    from watchdog.router.drain_watch import DrainWatch
    from watchdog.subsystem import Services

    journal = Journal.in_dir(tmp_path)
    services = Services(journal, None, ThreadPoolExecutor(1), OwnActionWindows(), lambda: NOW, lambda: None)  # type: ignore[arg-type]
    return DrainWatch(config, services, lambda: in_flight or {})


def view_of(
    containers: list[ContainerSnapshot], decisions: tuple[Decision, ...] = (), ready: tuple[str, ...] = ()
) -> Any:
    from watchdog.containers.diagnose import ProbeHistory
    from watchdog.model import Diagnosis, ProbeResult, ProbeStatus
    from watchdog.subsystem import CycleView

    probed = {c.id: ProbeHistory((ProbeResult(NOW, ProbeStatus.OK, "200"),)) for c in containers}
    faults = tuple(d.fault for d in decisions)
    return CycleView(tuple(containers), probed, Diagnosis(faults, (), frozenset(ready)), decisions)


def test_the_watch_begins_a_drain_for_the_planners_verdict_and_ends_it_with_the_verdict(tmp_path: Path) -> None:
    watch = watch_of(tmp_path)
    a = replace(snap("a"), endpoint="http://127.0.0.1:1/health")
    verdict = Decision(fault("a"), Verdict.DRAIN, "draining before the restart")
    watch.cycle(view_of([a], (verdict,)), NOW)
    assert watch.board.out() == {"id-a": "draining: restart for unhealthy"}
    watch.cycle(view_of([a], (verdict,)), NOW + SETTLE)  # no proxy report, no counters: nothing shows it busy
    assert watch.board.finished() == {"id-a"}
    assert watch.journal.entries(kind="drained")[0]["container"] == "a"
    watch.cycle(view_of([a], (replace(verdict, verdict=Verdict.RESTART),)), NOW + SETTLE + 1)
    assert not watch.board.drains, "the restart took over"


def test_the_proxy_count_holds_a_drain_until_it_is_zero(tmp_path: Path) -> None:
    counts = {"a.gpu0": 2}
    watch = watch_of(tmp_path, replace(CFG, litellm=replace(CFG.litellm, enabled=True)), in_flight=counts)
    a = replace(snap("a"), gpus=("0",))
    verdict = Decision(fault("a"), Verdict.DRAIN, "draining")
    watch.cycle(view_of([a], (verdict,)), NOW)
    watch.cycle(view_of([a], (verdict,)), NOW + 10)
    assert watch.board.view()["a"]["in_flight"] == 2 and not watch.board.finished()
    counts["a.gpu0"] = 0
    watch.cycle(view_of([a], (verdict,)), NOW + 11)
    assert watch.board.finished() == {"id-a"}


def test_in_a_dry_run_a_drain_ends_at_once(tmp_path: Path) -> None:
    watch = watch_of(tmp_path, replace(CFG, dry_run=True))
    verdict = Decision(fault("a"), Verdict.DRAIN, "draining")
    watch.cycle(view_of([snap("a")], (verdict,)), NOW)
    assert watch.board.finished() == {"id-a"} and watch.board.drains["id-a"].reason == "dry run: would drain"


def test_an_operator_drain_comes_through_the_journal_and_ends_with_end(tmp_path: Path) -> None:
    from watchdog.journal import Journal
    from watchdog.ops.operator_actions import NotFound, drain_target

    watch = watch_of(tmp_path)
    cli = Journal.in_dir(tmp_path)  # the CLI's own connection, as `gpu-watchdog drain` has
    a, b = snap("a"), snap("b")
    with pytest.raises(NotFound, match="managed: a, b"):
        drain_target(cli, "c", {"a": ("0",), "b": ("0",)}, "test", NOW)
    drain_target(cli, "a", {"a": ("0",), "b": ("0",)}, "test", NOW)
    watch.cycle(view_of([a, b], ready=("id-a", "id-b")), NOW)
    assert watch.board.out() == {"id-a": "draining: operator drain of a"}
    assert watch.journal.entries(kind="drain")[0]["container"] == "a"
    drain_target(cli, "a", {"a": ("0",), "b": ("0",)}, "test", NOW + 1, end=True)
    watch.cycle(view_of([a, b], ready=("id-a", "id-b")), NOW + 1)
    assert not watch.board.drains


def test_a_group_under_its_floor_is_said_once_and_once_when_back(tmp_path: Path) -> None:
    watch = watch_of(tmp_path)
    a, b = snap("a"), snap("b")
    for now in (NOW, NOW + 1):
        watch.cycle(view_of([a, b]), now)  # neither ready
    watch.cycle(view_of([a, b], ready=("id-a",)), NOW + 2)
    said = [e["reason"] for e in watch.journal.entries(kind="replica-floor")]
    assert said == [
        "cannot keep the replica floor of group qwen: 0 of 2 replicas serving (floor 1; drain.min_replicas)",
        "group qwen back at its replica floor: 1 of 2 serving",
    ]


def test_metrics_count_the_drains_by_state() -> None:
    from watchdog.model import Diagnosis
    from watchdog.ops.metrics import Metrics

    metrics = Metrics()
    drains = {"a": {"state": "draining"}, "b": {"state": "drained"}, "c": {"state": "draining"}}
    metrics.observe([], Diagnosis(), [], {}, {"drains": drains}, engine_up=True)
    text = metrics.exposition().decode()
    assert 'gpu_watchdog_drains{state="draining"} 2.0' in text
    assert 'gpu_watchdog_drains{state="timed-out"} 0.0' in text
