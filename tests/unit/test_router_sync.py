"""RouterSync on real files and a real journal: replanning, rotation writes, proxy-restart decisions."""

from __future__ import annotations

import json
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from watchdog.config import Config, parse_config
from watchdog.containers.diagnose import ProbeHistory
from watchdog.containers.own_actions import OwnActionWindows
from watchdog.gpu.findings import GpuFindings
from watchdog.journal import Journal
from watchdog.model import (
    ContainerSnapshot,
    ContainerSpec,
    ContainerState,
    Decision,
    Diagnosis,
    Fault,
    FaultKind,
    Note,
    NoteKind,
    ProbeResult,
    ProbeStatus,
    Verdict,
)
from watchdog.router.proxy_sync import META_PROXY_SET
from watchdog.router.sync import RouterSync
from watchdog.subsystem import CycleView, Services

ROOT = Path(__file__).resolve().parents[2]


class InlineExecutor:
    """Runs submitted work at once: the restart's outcome is there on the next cycle."""

    def __init__(self) -> None:
        self.calls = 0

    def submit(self, fn: Any, *args: Any) -> Future[Any]:
        self.calls += 1
        future: Future[Any] = Future()
        future.set_result(fn(*args))
        return future


def run_cycle(sync: RouterSync, containers: Any, diagnosis: Any, decisions: Any, *rest: Any) -> None:
    """One router cycle from the pieces the loop's view holds (held GPUs, marks, histories, now)."""
    held, marks, histories, now = rest
    gpu = GpuFindings(held=dict(held), marks=dict(marks))
    sync.cycle(CycleView(tuple(containers), histories, diagnosis, tuple(decisions), gpu), now)


def snapshot(i: int, state: ContainerState = ContainerState.RUNNING) -> ContainerSnapshot:
    return ContainerSnapshot(
        id=f"id{i}",
        name=f"llm-{i}",
        state=state,
        spec=ContainerSpec(role="chat", model="qwen"),
        endpoint=f"http://127.0.0.1:{18000 + i}/health" if state == ContainerState.RUNNING else None,
        gpus=(str(i),),
    )


def make(tmp_path: Path, **litellm: Any) -> tuple[RouterSync, Journal, InlineExecutor]:
    settings = {"enabled": True, "template": str(ROOT / "litellm" / "config.template.yaml")}
    settings["out"] = str(tmp_path / "out" / "config.yaml")
    settings.update(litellm)
    config: Config = parse_config({"capacity": {"rpm_per_gpu": [4, 4], "target_rpm": 12}, "litellm": settings})
    journal = Journal.in_dir(tmp_path / "state")
    executor = InlineExecutor()
    services = Services(journal, None, executor, OwnActionWindows(), lambda: 1000.0, lambda: None)  # type: ignore[arg-type]
    sync = RouterSync(config, services, lambda: None)
    return sync, journal, executor


def ok_history() -> ProbeHistory:
    return ProbeHistory((ProbeResult(999.0, ProbeStatus.OK, "HTTP 200"),), 999.0)


def test_given_up_container_replans_with_a_warning_and_leaves_the_config(tmp_path: Path) -> None:
    sync, journal, _ = make(tmp_path)
    fleet = [snapshot(i) for i in range(4)]
    ready = Diagnosis(ready=frozenset(c.id for c in fleet))
    histories = {c.id: ok_history() for c in fleet}
    run_cycle(sync, fleet, ready, [], {}, {}, histories, 1000.0)
    assert sync.plan is not None and sync.plan.text.startswith("12 rpm = 75% of 16 rpm")
    assert journal.entries(kind="capacity") == []  # a healthy start says nothing in the journal
    config = (tmp_path / "out" / "config.yaml").read_text()
    assert config.count("model_info") == 4

    fault = Fault("id3", "llm-3", FaultKind.STOPPED, 990.0, "crash loop")
    crashed = [*fleet[:3], snapshot(3, ContainerState.EXITED)]
    diagnosis = Diagnosis(faults=(fault,), ready=frozenset({"id0", "id1", "id2"}))
    run_cycle(sync, crashed, diagnosis, [Decision(fault, Verdict.GIVEN_UP, "given up")], {}, {}, histories, 1001.0)
    capacity = journal.entries(kind="capacity")
    assert len(capacity) == 1 and "12 rpm = 100% of 12 rpm" in capacity[0]["reason"]
    assert "above the 90% safety margin" in capacity[0]["reason"]
    assert (tmp_path / "out" / "config.yaml").read_text().count("model_info") == 3
    rotation = json.loads((tmp_path / "out" / "rotation.json").read_text())
    # Given up: out of the config, and denied until the proxy has loaded the config without it.
    assert list(rotation["out"]) == ["llm-3.gpu3"] and "removed from the config" in rotation["out"]["llm-3.gpu3"]
    run_cycle(sync, crashed, diagnosis, [Decision(fault, Verdict.GIVEN_UP, "given up")], {}, {}, histories, 1002.0)
    assert len(journal.entries(kind="capacity")) == 1  # said once per change


def test_a_crash_changes_the_rotation_not_the_config(tmp_path: Path) -> None:
    sync, journal, executor = make(tmp_path, restart_command=["true"])
    fleet = [snapshot(i) for i in range(2)]
    histories = {c.id: ok_history() for c in fleet}
    run_cycle(sync, fleet, Diagnosis(ready=frozenset({"id0", "id1"})), [], {}, {}, histories, 1000.0)
    config_path = tmp_path / "out" / "config.yaml"
    before = config_path.stat().st_mtime_ns
    fault = Fault("id1", "llm-1", FaultKind.STOPPED, 1000.5, "killed")
    dead = [fleet[0], snapshot(1, ContainerState.EXITED)]
    run_cycle(sync, dead, Diagnosis(faults=(fault,), ready=frozenset({"id0"})), [], {}, {}, histories, 1001.0)
    rotation = json.loads((tmp_path / "out" / "rotation.json").read_text())
    assert list(rotation["out"]) == ["llm-1.gpu1"] and "killed" in rotation["out"]["llm-1.gpu1"]
    assert config_path.stat().st_mtime_ns == before  # the stopped container kept its URL
    assert executor.calls == 1 and journal.entries(kind="rotation-out")  # only the first load
    restarting = Diagnosis(notes=(Note("id1", NoteKind.STARTING, "starting"),), ready=frozenset({"id0"}))
    run_cycle(sync, fleet, restarting, [], {}, {}, {"id0": ok_history(), "id1": ProbeHistory()}, 1002.0)
    assert "llm-1.gpu1" in json.loads((tmp_path / "out" / "rotation.json").read_text())["out"]
    run_cycle(sync, fleet, Diagnosis(ready=frozenset({"id0", "id1"})), [], {}, {}, histories, 1003.0)
    assert json.loads((tmp_path / "out" / "rotation.json").read_text())["out"] == {}
    assert journal.entries(kind="rotation-in")


def test_a_new_deployment_restarts_the_proxy_once(tmp_path: Path) -> None:
    sync, journal, executor = make(tmp_path, restart_command=["true"])
    fleet = [snapshot(i) for i in range(2)]
    histories = {c.id: ok_history() for c in fleet}
    ready = Diagnosis(ready=frozenset({"id0", "id1"}))
    run_cycle(sync, fleet, ready, [], {}, {}, histories, 1000.0)
    assert executor.calls == 1  # first run, file written fresh: the proxy must load it
    run_cycle(sync, fleet, ready, [], {}, {}, histories, 1001.0)
    assert executor.calls == 1 and json.loads(journal.get_meta(META_PROXY_SET) or "[]")
    grown = [*fleet, snapshot(2)]
    run_cycle(sync, grown, Diagnosis(ready=frozenset({"id0", "id1", "id2"})), [], {}, {}, histories, 1002.0)
    run_cycle(sync, grown, Diagnosis(ready=frozenset({"id0", "id1", "id2"})), [], {}, {}, histories, 1003.0)
    assert executor.calls == 2 and len(journal.entries(kind="proxy-restart")) == 2


def test_removed_deployment_stays_denied_until_the_proxy_reloads(tmp_path: Path) -> None:
    sync, _, executor = make(tmp_path, restart_command=["true"])
    fleet = [snapshot(i) for i in range(3)]
    histories = {c.id: ok_history() for c in fleet}
    run_cycle(sync, fleet, Diagnosis(ready=frozenset({"id0", "id1", "id2"})), [], {}, {}, histories, 1000.0)
    run_cycle(sync, fleet, Diagnosis(ready=frozenset({"id0", "id1", "id2"})), [], {}, {}, histories, 1001.0)
    fault = Fault("id2", "llm-2", FaultKind.STOPPED, 1001.5, "crash loop")
    dead = [*fleet[:2], snapshot(2, ContainerState.EXITED)]
    given_up = [Decision(fault, Verdict.GIVEN_UP, "given up")]
    diagnosis = Diagnosis(faults=(fault,), ready=frozenset({"id0", "id1"}))
    run_cycle(sync, dead, diagnosis, given_up, {}, {}, histories, 1002.0)  # config rewritten, restart issued
    assert "llm-2.gpu2" in json.loads((tmp_path / "out" / "rotation.json").read_text())["out"]
    run_cycle(sync, dead, diagnosis, given_up, {}, {}, histories, 1003.0)  # restart confirmed: the proxy forgot it
    assert json.loads((tmp_path / "out" / "rotation.json").read_text())["out"] == {}
    assert executor.calls == 2


def test_operator_stop_keeps_the_config_and_the_proxy(tmp_path: Path) -> None:
    sync, journal, executor = make(tmp_path, restart_command=["true"])
    fleet = [snapshot(i) for i in range(2)]
    histories = {c.id: ok_history() for c in fleet}
    run_cycle(sync, fleet, Diagnosis(ready=frozenset({"id0", "id1"})), [], {}, {}, histories, 1000.0)
    stopped = [fleet[0], snapshot(1, ContainerState.EXITED)]
    note = Note("id1", NoteKind.DELIBERATE_STOP, "stopped on purpose")
    for now in (1001.0, 1002.0):
        run_cycle(sync, stopped, Diagnosis(notes=(note,), ready=frozenset({"id0"})), [], {}, {}, histories, now)
    assert executor.calls == 1  # only the first load; a maintenance stop costs no proxy restart
    assert list(json.loads((tmp_path / "out" / "rotation.json").read_text())["out"]) == ["llm-1.gpu1"]
    assert sync.plan is not None and sync.plan.serving_gpus == 1  # but the capacity counts it out
    assert journal.entries(kind="capacity")


def test_failed_restart_is_said_once_and_retried(tmp_path: Path) -> None:
    sync, journal, executor = make(tmp_path, restart_command=["false"])
    fleet = [snapshot(0)]
    ready = Diagnosis(ready=frozenset({"id0"}))
    for now in (1000.0, 1001.0, 1002.0, 1031.0):
        run_cycle(sync, fleet, ready, [], {}, {}, {"id0": ok_history()}, now)
    failures = journal.entries(kind="proxy-restart-failed")
    assert (
        len(failures) == 1 and "exited 1" in failures[0]["reason"] and "config.yaml.previous" in failures[0]["reason"]
    )
    assert executor.calls == 2 and journal.get_meta(META_PROXY_SET) is None  # retried after 30 s, not every cycle
    assert "retrying in 30 s" in failures[0]["reason"]


@pytest.mark.parametrize("enabled", [True, False])
def test_disabled_router_writes_nothing_but_still_plans(tmp_path: Path, enabled: bool) -> None:
    sync, _, _ = make(tmp_path, enabled=enabled)
    run_cycle(sync, [snapshot(0)], Diagnosis(ready=frozenset({"id0"})), [], {}, {}, {}, 1000.0)
    assert sync.plan is not None
    assert (tmp_path / "out" / "rotation.json").exists() is enabled
    assert (sync.view()["litellm"] is None) is not enabled


def test_unchanged_rotation_is_rewritten_only_as_a_heartbeat(tmp_path: Path) -> None:
    sync, _, _ = make(tmp_path)  # stale_after 15 s: an unchanged rotation is rewritten every 3 s
    fleet = [snapshot(0)]
    ready = Diagnosis(ready=frozenset({"id0"}))
    path = tmp_path / "out" / "rotation.json"
    run_cycle(sync, fleet, ready, [], {}, {}, {"id0": ok_history()}, 1000.0)
    assert json.loads(path.read_text())["written_at"] == 1000.0
    run_cycle(sync, fleet, ready, [], {}, {}, {"id0": ok_history()}, 1001.0)  # an event storm: same state
    assert json.loads(path.read_text())["written_at"] == 1000.0
    run_cycle(sync, fleet, Diagnosis(), [], {}, {}, {"id0": ok_history()}, 1001.5)  # a change: written at once
    assert json.loads(path.read_text())["written_at"] == 1001.5 and json.loads(path.read_text())["out"]
    run_cycle(sync, fleet, Diagnosis(), [], {}, {}, {"id0": ok_history()}, 1004.6)  # the heartbeat
    assert json.loads(path.read_text())["written_at"] == 1004.6
