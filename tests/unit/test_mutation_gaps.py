"""Edges that hand mutation testing of the pure core found unguarded.

Each test here failed against one deliberate bug that the rest of the suite let
through: a die event of an earlier container life taken for this one's, a zero-VRAM
verdict inside the start period, the UNSTABLE boundary, GPU-scaled router limits,
shared GPUs, a report window that is not a whole number of hours, and the rotation
filter's last line of defence.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from watchdog.config import Config
from watchdog.containers.diagnose import ProbeHistory, diagnose, remember_event
from watchdog.gpu.vram import VramMode, VramView
from watchdog.journal import ActionRow
from watchdog.model import (
    ContainerHistory,
    ContainerSnapshot,
    ContainerSpec,
    ContainerState,
    EngineEvent,
    FaultKind,
    Health,
    NoteKind,
    ProbeResult,
    ProbeStatus,
)
from watchdog.reports.restart_rates import INSTABILITY_PER_HOUR, Window, build, render
from watchdog.router.capacity import CapacityPolicy, CapacityVerdict, Member, plan_capacity

MIB = 1024**2

# -- diagnosis: what belongs to which container life ------------------------------------

STARTED, FINISHED = 1000.0, 2000.0


def test_die_event_of_an_earlier_life_leaves_a_clean_exit_a_deliberate_stop() -> None:
    # Life 1 died at 500 (the event was seen); life 2 started at 1000 and exited 0 at 2000
    # while the watchdog was not watching: nothing of life 2 was witnessed.
    memory = ContainerHistory()
    for event in (EngineEvent(500.0, "c1", "die", "llm"), EngineEvent(STARTED, "c1", "start", "llm")):
        memory = remember_event(memory, event)
    assert memory.last_die_at == 500.0
    container = ContainerSnapshot(
        id="c1",
        name="llm",
        state=ContainerState.EXITED,
        spec=ContainerSpec(start_period=60.0),
        exit_code=0,
        started_at=STARTED,
        finished_at=FINISHED,
    )
    d = diagnose([container], {}, {"c1": memory}, Config(), now=5000.0)
    assert d.faults == ()
    assert [n.kind for n in d.notes] == [NoteKind.DELIBERATE_STOP]
    assert "presumed stopped on purpose" in d.notes[0].text


# -- zero-VRAM inside the start period ----------------------------------------------------

EMPTY = VramView(VramMode.GPU_TOTAL, 5 * MIB, True, "GPU 0 uses 5.0 MiB")
URL = "http://127.0.0.1:32768/health"


def running_llm(health: Health = Health.NONE) -> ContainerSnapshot:
    return ContainerSnapshot(
        id="c1",
        name="llm",
        state=ContainerState.RUNNING,
        health=health,
        spec=ContainerSpec(start_period=60.0),
        started_at=STARTED,
        endpoint=URL,
        gpus=("0",),
    )


@pytest.mark.parametrize(
    ("health", "history"),
    [
        (Health.NONE, ProbeHistory((ProbeResult(1020.0, ProbeStatus.OK, "200"),), first_ok_at=1020.0)),
        (Health.HEALTHY, ProbeHistory((ProbeResult(1020.0, ProbeStatus.OK, "200"),))),
    ],
    ids=["endpoint-answered", "engine-healthy"],
)
def test_server_seen_ready_inside_its_start_period_with_empty_vram_is_not_a_fault(
    health: Health, history: ProbeHistory
) -> None:
    container = running_llm(health)
    inside = diagnose([container], {"c1": history}, {}, Config(), now=1030.0, vram={"c1": EMPTY})
    assert inside.faults == () and inside.notes == ()
    assert inside.ready == frozenset({"c1"})
    assert inside.recheck_at == STARTED + 60.0  # judged again when the start period ends
    after = diagnose([container], {"c1": history}, {}, Config(), now=1060.0, vram={"c1": EMPTY})
    assert [f.kind for f in after.faults] == [FaultKind.ZERO_VRAM]


# -- the restart report: UNSTABLE boundary ------------------------------------------------

H = 3600.0


def restart_at(container: str, at: float, number: int = 0) -> ActionRow:
    return ActionRow(number, "restart", container, f"id-{container}", "stopped", "test", False, at, at + 1.0, "ok")


def report_of(times: list[float], window: Window | None = None) -> Any:
    actions = [restart_at("llm-0", t, i) for i, t in enumerate(times)]
    return build([], actions, window or Window(0.0, 2 * H))


def test_unstable_means_more_than_five_restarts_in_an_hour() -> None:
    assert INSTABILITY_PER_HOUR == 5  # the README and seed 001: "more than 5 an hour"
    assert report_of([]).threshold == 5


def test_five_restarts_in_an_hour_are_stable() -> None:
    report = report_of([600.0, 1200.0, 1800.0, 2400.0, 3000.0])
    row = report.containers[0]
    assert row.peak_restarts_in_an_hour == 5 and not row.unstable
    assert not report.fleet.unstable
    assert "UNSTABLE" not in render(report, "table").split("\n", 1)[1]  # past the heading that explains it


def test_six_restarts_in_an_hour_are_unstable() -> None:
    report = report_of([600.0, 1200.0, 1800.0, 2400.0, 3000.0, 3300.0])
    row = report.containers[0]
    assert row.peak_restarts_in_an_hour == 6 and row.unstable
    assert report.fleet.unstable
    assert "llm-0 UNSTABLE" in render(report, "table")


def test_six_restarts_spread_over_exactly_sixty_minutes_are_stable() -> None:
    # 0 and 3600 are 60 minutes apart: no 60-minute span holds both, so the peak is 5.
    report = report_of([0.0, 720.0, 1440.0, 2160.0, 2880.0, 3600.0])
    row = report.containers[0]
    assert row.restarts == 6 and row.peak_restarts_in_an_hour == 5 and not row.unstable


# -- the restart report: a 90-minute window -------------------------------------------------

T = 100_000.0
NINETY_MINUTES = Window(T, T + 5400.0)


def entry(number: int, ts: float, kind: str, container: str, **extra: object) -> dict[str, Any]:
    return {"id": number, "ts": ts, "kind": kind, "container": container, **extra}


def test_ninety_minute_window_rates_and_fleet_availability_match_the_hand_computed_ones() -> None:
    entries = [
        # a: down 540 s inside the window -> 100 * (1 - 540/5400) = 90.0 %
        entry(1, T + 600.0, "detected", "a", fault="stopped"),
        entry(2, T + 1140.0, "recovered", "a", duration=540.0),
        # b: down since before the window, back 270 s into it -> counted from the start: 95.0 %
        entry(3, T - 300.0, "detected", "b", fault="stopped"),
        entry(4, T + 270.0, "recovered", "b", duration=570.0),
        # c: down 1350 s before the window's end, never back -> 75.0 %
        entry(5, T + 4050.0, "detected", "c", fault="stopped"),
    ]
    actions = [restart_at("a", T + 600.0, 1), restart_at("b", T - 300.0, 2), restart_at("c", T + 4050.0, 3)]
    report = build(entries, actions, NINETY_MINUTES)
    rows = {r.name: r for r in report.containers}
    assert sorted(rows) == ["a", "b", "c"]
    assert (rows["a"].availability_pct, rows["b"].availability_pct, rows["c"].availability_pct) == (90.0, 95.0, 75.0)
    assert (rows["a"].restarts, rows["b"].restarts, rows["c"].restarts) == (1, 0, 1)  # b's was before the window
    assert rows["a"].restarts_per_hour == 0.667  # 1 in 1.5 h
    assert rows["b"].restarts_per_hour == 0.0
    assert rows["a"].recovery_p50_s == 540.0 and rows["c"].recovery_p50_s is None
    fleet = report.fleet
    assert fleet.restarts == 2 and fleet.restarts_per_hour == 1.333  # 2 in 1.5 h
    assert fleet.faults == 2  # b's detection was before the window
    assert fleet.availability_pct == 86.667  # (90 + 95 + 75) / 3
    assert render(report, "table").startswith("restart report: 1.5 h window;")


# -- the capacity planner: GPUs per deployment ---------------------------------------------


def test_a_two_gpu_chat_deployment_gets_rpm_and_in_flight_limits_for_two_gpus() -> None:
    policy = CapacityPolicy(rpm_per_gpu=(3.0, 3.5), target_rpm=5.0)
    plan = plan_capacity([Member("chat-big", "chat", "qwen", ("0", "1"), True)], policy, host_total=None)
    (deployment,) = plan.deployments
    assert deployment.rpm == 7  # floor(3.5 rpm * 2 GPUs), not 2 * floor(3.5) = 6
    assert deployment.max_parallel_requests == 2  # 1 in flight per GPU
    assert plan.serving_gpus == 2 and plan.capacity_rpm == (6.0, 7.0)
    assert plan.global_max_parallel_requests == 3  # 2 / (1 - 30% headroom) = 2.86 -> 3
    assert plan.share == pytest.approx(5.0 / 7.0) and plan.verdict == CapacityVerdict.OK


def test_two_containers_sharing_one_gpu_count_it_once_for_capacity() -> None:
    members = [Member("chat-a", "chat", "qwen", ("0",), True), Member("chat-b", "chat", "qwen", ("0",), True)]
    plan = plan_capacity(members, CapacityPolicy(), host_total=None)
    assert plan.serving_gpus == 1
    assert plan.capacity_rpm == (3.0, 4.0)
    assert plan.share == pytest.approx(30.0 / 4.0) and plan.verdict == CapacityVerdict.OVER_CAPACITY
    assert "(1 GPU(s) at 3-4 rpm)" in plan.text
    assert [(d.name, d.rpm, d.max_parallel_requests) for d in plan.deployments] == [
        ("chat-a", 4, 1),
        ("chat-b", 4, 1),
    ]
    assert plan.global_max_parallel_requests == 3  # 2 in flight in all / 0.7 = 2.86 -> 3


# -- the rotation filter's catch-all --------------------------------------------------------

ROTATION_MODULE = Path(__file__).resolve().parents[2] / "litellm" / "gpu_watchdog_rotation.py"


def rotation_module() -> ModuleType:
    """A fresh copy of the proxy-side callback, as LiteLLM loads it (a file, not a package)."""
    spec = importlib.util.spec_from_file_location("gpu_watchdog_rotation_under_test", ROTATION_MODULE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def deployments(*ids: str) -> list[dict[str, Any]]:
    return [{"model_name": "qwen", "model_info": {"id": i}} for i in ids]


def test_rotation_filter_hands_back_litellms_candidates_when_its_reader_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cb = rotation_module()
    path = tmp_path / "rotation.json"
    path.write_text(json.dumps({"version": 1, "written_at": 1000.0, "out": {"a": "crashed"}}))

    def broken_reader(text: str) -> Any:
        raise RuntimeError("reader broke")

    monkeypatch.setattr(cb, "parse_rotation", broken_reader)
    filt = cb.RotationFilter(path)
    candidates = deployments("a", "b")
    expected = deployments("a", "b")
    with caplog.at_level(logging.WARNING, logger="gpu_watchdog_rotation"):
        kept = filt.select(candidates)
        assert kept is candidates and kept == expected
        via_litellm = asyncio.run(filt.async_filter_deployments("qwen", candidates, []))
        assert via_litellm is candidates and via_litellm == expected
    assert any("filter failed (reader broke)" in r.getMessage() for r in caplog.records)
