"""GpuSupervisor: one cycle's GPU side, fed readings and Xids directly (the threads are tested elsewhere)."""

from __future__ import annotations

import time
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest

from tests.fake_nvml.harness import scenario
from watchdog.gpu.marks import GpuCondition
from watchdog.gpu.readings import GpuHealth, GpuReading, GpuSnapshot, NvmlState
from watchdog.journal import Journal
from watchdog.model import ContainerSnapshot, ContainerSpec, ContainerState, XidEvent
from watchdog.subsystem import CycleView

MIB = 1024**2
UUIDS = [f"GPU-storm-{i}" for i in range(4)]


class Readings:
    """Stands in for GpuMonitor: the supervisor asks it for the latest reading and hands it new settings."""

    def __init__(self, reading: GpuReading) -> None:
        self.reading = reading
        self.interval = 0.0
        self.threshold = 0
        self.probe = SimpleNamespace(deadline=0.0)  # apply_config sets the NVML deadline here

    def latest(self) -> GpuReading:
        return self.reading

    def read_now(self) -> GpuReading:
        return self.reading

    def stop(self) -> None:
        pass


def reading(state: NvmlState = NvmlState.OK, lost: tuple[int, ...] = ()) -> GpuReading:
    gpus = tuple(
        GpuSnapshot(i, GpuHealth.LOST if i in lost else GpuHealth.OK, uuid, memory_used=4000 * MIB)
        for i, uuid in enumerate(UUIDS)
    )
    return GpuReading(state, 100.0, 0.001, gpus if state == NvmlState.OK else ())


def fleet() -> list[ContainerSnapshot]:
    return [
        ContainerSnapshot(
            f"{i:064x}", f"llm-{i}", ContainerState.RUNNING, spec=ContainerSpec(), gpus=(str(i),), started_at=50.0
        )
        for i in range(4)
    ]


def storm_events() -> list[XidEvent]:
    lines = [line.split() for line in scenario("xid_storm").read_text().splitlines() if line.startswith("xid ")]
    return [XidEvent(at=100.0 + n * 0.01, xid=int(code), gpu_index=int(gpu)) for n, (_, gpu, code) in enumerate(lines)]


def test_an_xid_storm_gives_bounded_actions(supervisor: Any) -> None:
    events = storm_events()
    assert len(events) == 200
    for event in events:
        supervisor.xid_queue.put(event)
    result = supervisor.cycle(CycleView(tuple(fleet())), now=103.0)
    journal: Journal = supervisor.journal
    assert len(journal.entries(kind="xid")) == 200, "every Xid is journaled"
    # Each container gets one restart request, however many Xids its GPU had.
    assert set(result.xids) <= {c.id for c in fleet()} and len(result.xids) >= 1
    # Repeats escalate to reset-gpu (drain by default) and 79 to quarantine, but never past half the GPUs.
    marks = journal.gpu_marks()
    assert 1 <= len(marks) <= 2, marks
    assert len(result.held) == len(marks)
    alerts = journal.entries(kind="alert")
    assert any("cap 2" in a["reason"] for a in alerts), "the cap is said, not silently applied"
    assert any("Xid 79" in a["reason"] for a in alerts), "a lost GPU past the cap is still alerted"
    per_gpu = [sum(1 for a in alerts if a["gpu"] == uuid or uuid in a["reason"]) for uuid in UUIDS]
    assert max(per_gpu) <= 2, f"one alert per GPU and action, not one per Xid: {per_gpu}"


def test_a_lost_gpu_is_quarantined_once_and_its_container_held(supervisor: Any) -> None:
    supervisor.monitor.reading = reading(lost=(2,))
    for now in (101.0, 102.0, 103.0):
        result = supervisor.cycle(CycleView(tuple(fleet())), now=now)
    marks = supervisor.journal.gpu_marks()
    assert list(marks) == [UUIDS[2]] and marks[UUIDS[2]].condition == GpuCondition.QUARANTINED
    assert list(result.held) == [f"{2:064x}"] and "quarantined" in result.held[f"{2:064x}"]
    assert len(supervisor.journal.entries(kind="gpu-quarantined")) == 1
    assert result.vram is not None and result.vram[f"{2:064x}"].empty is False, "no zero-VRAM verdict on a lost GPU"


def test_a_hung_driver_alerts_once_pauses_gpu_verdicts_and_keeps_marks(supervisor: Any) -> None:
    supervisor.monitor.reading = reading(lost=(1,))
    supervisor.cycle(CycleView(tuple(fleet())), now=101.0)
    supervisor.monitor.reading = reading(NvmlState.HUNG)
    for now in (102.0, 103.0):
        result = supervisor.cycle(CycleView(tuple(fleet())), now=now)
    alerts = [e for e in supervisor.journal.entries(kind="alert") if e["fault"] == "driver-hung"]
    assert len(alerts) == 1
    assert result.vram is None and result.xids == {}
    assert list(result.held) == [f"{1:064x}"], "a GPU marked before the hang still holds its container"
    supervisor.monitor.reading = reading()
    supervisor.cycle(CycleView(tuple(fleet())), now=104.0)
    assert len(supervisor.journal.entries(kind="driver-recovered")) == 1


def test_released_marks_are_picked_up(supervisor: Any) -> None:
    supervisor.monitor.reading = reading(lost=(0,))
    supervisor.cycle(CycleView(tuple(fleet())), now=101.0)
    assert supervisor.journal.release_gpu(UUIDS[0])
    supervisor.reload_marks()
    supervisor.monitor.reading = reading()
    assert supervisor.cycle(CycleView(tuple(fleet())), now=102.0).held == {}


class NoContainers:
    """The engine's answer that no container is running (only `containers()` is asked)."""

    class api:  # mirrors docker.DockerClient.api
        @staticmethod
        def containers(quiet: bool = False) -> list[dict[str, str]]:
            return []


@pytest.mark.parametrize("kill", [False, True], ids=["reported", "killed"])
def test_orphaned_gpu_memory_is_reported_and_killed_only_when_opted_in(
    supervisor: Any, kill: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess

    from watchdog.gpu.readings import GpuProcess

    leaked = subprocess.Popen(["sleep", "60"])  # a live process of a container that no longer runs
    try:
        supervisor.apply_config(replace(supervisor.config, gpu=replace(supervisor.config.gpu, kill_orphans=kill)))
        supervisor.client = NoContainers()
        supervisor.host_pids = True
        gone_container = "d" * 64
        monkeypatch.setattr(supervisor, "_owners", lambda gpus: {leaked.pid: gone_container, 4_000_000: "gone"})
        base = reading()
        gpu0 = replace(base.gpus[0], processes=(GpuProcess(leaked.pid, 500 * MIB), GpuProcess(4_000_000, 300 * MIB)))
        supervisor.monitor.reading = replace(base, gpus=(gpu0, *base.gpus[1:]))
        result = supervisor.cycle(CycleView(tuple(fleet())), now=101.0)
        orphans = {o["pid"]: o["why"] for o in result.view["orphans"]}
        assert "not running" in orphans[leaked.pid] and "gone" in orphans[4_000_000]
        supervisor.cycle(CycleView(tuple(fleet())), now=102.0)
        entries = supervisor.journal.entries(kind="orphan")
        assert len(entries) == 2, "each orphan is journaled once"
        try:
            leaked.wait(timeout=2)
            was_killed = True
        except subprocess.TimeoutExpired:
            was_killed = False
        assert was_killed is kill
        assert any("killed: gpu.kill_orphans" in e["reason"] for e in entries) is kill
    finally:
        leaked.kill()
        leaked.wait()


class StopStart:
    """The engine's stop/start, recorded (the reset's docker calls are tested on the real engine)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

        class Api:
            @staticmethod
            def stop(container_id: str, timeout: int) -> None:
                self.calls.append(("stop", container_id))

            @staticmethod
            def start(container_id: str) -> None:
                self.calls.append(("start", container_id))

        self.api = Api()


def test_a_reset_closes_its_own_action_windows(supervisor: Any) -> None:
    """Engine events after the reset are the operator's again, not hidden as the watchdog's own."""
    supervisor.client = StopStart()
    supervisor.apply_config(
        replace(supervisor.config, gpu=replace(supervisor.config.gpu, reset=True, reset_command=("true", "{uuid}")))
    )
    now = time.time()  # the reset's end is read from the real clock, so its start must be real too
    supervisor.cycle(CycleView(tuple(fleet())), now=now)  # learns which containers sit on which GPU
    supervisor.xid_queue.put(XidEvent(at=now, xid=48, gpu_index=1))
    supervisor.cycle(CycleView(tuple(fleet())), now=now)
    supervisor.executor.shutdown(wait=True)
    cid = f"{1:064x}"
    assert supervisor.client.calls == [("stop", cid), ("start", cid)]
    assert supervisor.journal.entries(kind="gpu-reset-ok") and supervisor.journal.gpu_marks() == {}
    assert supervisor.own.covers(cid, now + 0.1), "the reset's own stop/start events are ignored"
    assert not supervisor.own.covers(cid, time.time() + 60), "later events are not"


def health_rows(result: Any) -> dict[int, Any]:
    return {row["index"]: row["health_score"] for row in result.view["gpus"]}


def test_each_cycle_scores_the_gpus_from_the_readings_it_takes(supervisor: Any) -> None:
    fleet_now = CycleView(tuple(fleet()))
    base = reading()
    gpus = list(base.gpus)
    gpus[1] = replace(gpus[1], pcie_replays=0, temperature=40, temperature_slowdown=90, temperature_shutdown=95)
    supervisor.monitor.reading = replace(base, at=100.0, gpus=tuple(gpus))
    first = health_rows(supervisor.cycle(fleet_now, now=100.0))
    assert first[1]["score"] == 1.0
    assert "PCIe replays: no earlier reading yet -> 1.0" in [c["evidence"] for c in first[1]["contributions"]]
    assert "uncorrectable ECC" in first[0]["unmonitored"]  # fields the reading lacks: never a penalty
    assert first[0]["score"] == 1.0
    # A minute later GPU 1 has 10 replays more (half rate: 0.5) and runs at its slowdown threshold (0.5).
    gpus[1] = replace(gpus[1], pcie_replays=10, temperature=90)
    supervisor.monitor.reading = replace(base, at=160.0, gpus=tuple(gpus))
    second = health_rows(supervisor.cycle(fleet_now, now=160.0))
    assert second[1]["score"] == pytest.approx(0.25)
    evidence = [c["evidence"] for c in second[1]["contributions"]]
    assert "PCIe replays: +10/min replays -> 0.5" in evidence
    assert "temperature 90 C, slowdown at 90 C, shutdown at 95 C -> 0.5" in evidence
    assert second[0]["score"] == 1.0


def test_xids_on_a_gpu_cost_it_score_and_a_lost_gpu_scores_zero(supervisor: Any) -> None:
    supervisor.xid_queue.put(XidEvent(at=100.0, xid=79, gpu_index=3))
    supervisor.monitor.reading = reading(lost=(2,))
    rows = health_rows(supervisor.cycle(CycleView(tuple(fleet())), now=100.5))
    assert rows[2]["score"] == 0.0 and rows[2]["contributions"][0]["name"] == "lost"
    assert rows[0]["score"] == 1.0
    # The Xid is drained in the cycle after the reading was scored; the next reading scores it.
    supervisor.monitor.reading = replace(reading(lost=(2,)), at=101.0)
    rows = health_rows(supervisor.cycle(CycleView(tuple(fleet())), now=101.5))
    xid = next(c for c in rows[3]["contributions"] if c["name"] == "xid")
    assert xid["factor"] < 1.0 and "(79)" in xid["evidence"]
    assert rows[3]["score"] == xid["factor"]


def test_the_score_is_off_with_gpu_health_enabled_false(supervisor: Any) -> None:
    config = supervisor.config
    supervisor.apply_config(replace(config, gpu=replace(config.gpu, health=replace(config.gpu.health, enabled=False))))
    rows = health_rows(supervisor.cycle(CycleView(tuple(fleet())), now=101.0))
    assert set(rows.values()) == {None}


def test_the_health_score_gauge_has_dcgm_exporters_labels(supervisor: Any) -> None:
    from watchdog.model import Diagnosis
    from watchdog.ops.metrics import Metrics

    gpus = list(reading().gpus)
    gpus[0] = replace(gpus[0], name="NVIDIA H100 80GB HBM3", ecc_uncorrected=0, clock_event_reasons=0x8)
    supervisor.monitor.reading = replace(reading(), gpus=tuple(gpus))
    view = supervisor.cycle(CycleView(tuple(fleet())), now=101.0).view
    metrics = Metrics("host-a")
    metrics.observe([], Diagnosis(), [], view, {}, engine_up=True)
    text = metrics.exposition().decode()
    assert (
        'gpu_watchdog_gpu_health_score{Hostname="host-a",UUID="GPU-storm-0",gpu="0",modelName="NVIDIA H100 80GB HBM3"}'
        " 0.5" in text
    )
    assert 'gpu_watchdog_gpu_health_score{Hostname="host-a",UUID="GPU-storm-1",gpu="1",modelName=""} 1.0' in text
    from watchdog.ops.status import render_gpus

    lines = render_gpus(view, now=101.0)
    assert "SCORE" in lines[1]
    assert "  GPU 0 health 0.50: clock events: hw-slowdown -> 0.5" in lines
    assert not any(line.startswith("  GPU 1 health") for line in lines)


def test_a_planned_reset_waits_for_the_drain_of_its_containers(supervisor: Any) -> None:
    """Xid 119 (not urgent): the GPU's container drains first; the reset starts once the drain ended."""
    from watchdog.router.drain import InFlightSeen

    supervisor.client = StopStart()
    supervisor.apply_config(
        replace(supervisor.config, gpu=replace(supervisor.config.gpu, reset=True, reset_command=("true", "{uuid}")))
    )
    now = time.time()
    supervisor.cycle(CycleView(tuple(fleet())), now=now)
    supervisor.xid_queue.put(XidEvent(at=now, xid=119, gpu_index=1))
    supervisor.cycle(CycleView(tuple(fleet())), now=now)
    cid = f"{1:064x}"
    board = supervisor.gpu_reset.drains
    assert set(board.drains) == {cid} and supervisor.client.calls == [], "draining, not stopped yet"
    assert supervisor.journal.entries(kind="drain")[0]["reason"].startswith("GPU reset of GPU-storm-1 planned")
    board.advance({cid: InFlightSeen(router=1)}, now + 5)
    supervisor.cycle(CycleView(tuple(fleet())), now=now + 5)
    assert supervisor.client.calls == [], "a request still in flight"
    board.advance({cid: InFlightSeen(router=0)}, now + 6)
    supervisor.cycle(CycleView(tuple(fleet())), now=now + 6)
    supervisor.executor.shutdown(wait=True)
    assert supervisor.client.calls == [("stop", cid), ("start", cid)]
    assert not board.drains, "the drain ends when the reset starts"
