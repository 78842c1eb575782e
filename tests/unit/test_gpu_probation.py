"""Verified return: a released GPU is proven by its containers' 1-token answers and a clean window."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from watchdog.config import Config, ConfigError, parse_config
from watchdog.containers.diagnose import ProbeHistory
from watchdog.entries import EntryKind
from watchdog.gpu.assignment import GpuAssignment
from watchdog.gpu.findings import GpuFindings
from watchdog.gpu.health_score import ClassedXid
from watchdog.gpu.mark_book import MarkBook
from watchdog.gpu.marks import GpuCondition, GpuMark
from watchdog.gpu.probation import (
    CanaryState,
    ProbationConfig,
    Step,
    Strikes,
    begin,
    failed_mark,
    from_record,
    judge,
    released,
    to_record,
    trouble,
    window_for,
)
from watchdog.gpu.readings import GpuSnapshot
from watchdog.gpu.return_watch import ReturnWatch
from watchdog.gpu.xid import default_table
from watchdog.journal import Journal
from watchdog.model import ContainerSnapshot, ContainerSpec, ContainerState, ProbeResult, ProbeStatus, Verdict, XidEvent
from watchdog.subsystem import CycleView

UUID = "GPU-3"
NOW = 1_000_000.0
SETTINGS = ProbationConfig(window=60.0, max_window=240.0, clean_after=3600.0)
DRAINED = GpuMark(UUID, 3, GpuCondition.DRAINED, "Xid 48: double-bit ECC", NOW - 600)
RESETTING = GpuMark(UUID, 3, GpuCondition.RESETTING, "Xid 48: double-bit ECC", NOW - 60)


def container(cid: str, state: ContainerState = ContainerState.RUNNING, port: int = 1) -> ContainerSnapshot:
    return ContainerSnapshot(
        id=cid,
        name=f"name-{cid}",
        state=state,
        spec=ContainerSpec(role="chat", model="qwen"),
        endpoint=f"http://127.0.0.1:{port}/health",
        gpus=("3",),
    )


def probe(at: float, status: ProbeStatus = ProbeStatus.OK) -> ProbeResult:
    return ProbeResult(at, status, "200" if status == ProbeStatus.OK else "connection refused", 0.01)


# -- the pure state machine ------------------------------------------------------


def test_a_released_gpu_is_proven_only_after_every_container_answered_and_the_window_passed() -> None:
    probation = begin(DRAINED, None, NOW, SETTINGS)
    assert probation.window == 60 and probation.strikes == 0 and probation.origin == "its release"
    first = judge(probation, containers=["a", "b"], answered={"a": NOW + 5}, problems=[], now=NOW + 5)
    assert first.step == Step.WAITING and "1 of 2" in first.reason
    both = judge(first.probation, containers=["a", "b"], answered={"b": NOW + 20}, problems=[], now=NOW + 20)
    assert both.step == Step.WAITING and both.probation.proving_since == NOW + 20
    inside = judge(both.probation, containers=["a", "b"], answered={}, problems=[], now=NOW + 79)
    assert inside.step == Step.WAITING and "59 of 60 s" in inside.reason
    proven = judge(inside.probation, containers=["a", "b"], answered={}, problems=[], now=NOW + 80)
    assert proven.step == Step.PROVEN


def test_a_gpu_with_no_container_is_proven_by_the_window_alone() -> None:
    probation = begin(DRAINED, None, NOW, SETTINGS)
    started = judge(probation, containers=[], answered={}, problems=[], now=NOW)
    assert started.step == Step.WAITING
    assert judge(started.probation, containers=[], answered={}, problems=[], now=NOW + 60).step == Step.PROVEN


def test_a_failure_inside_the_window_marks_it_again_with_a_doubled_capped_window() -> None:
    probation = begin(DRAINED, None, NOW, SETTINGS)
    why = "Xid 79 (quarantine) on GPU 3"
    failed = judge(probation, containers=["a"], answered={"a": NOW}, problems=[why], now=NOW + 30)
    assert failed.step == Step.FAILED and failed.reason == why
    mark, strikes = failed_mark(failed.probation, failed.reason, NOW + 30, SETTINGS)
    assert mark.condition == GpuCondition.DRAINED and "Xid 79" in mark.reason and "120 s" in mark.reason
    assert strikes == Strikes(1, NOW + 30)
    again = begin(mark, strikes, NOW + 100, SETTINGS)
    assert again.window == 120 and again.strikes == 1
    assert [window_for(n, SETTINGS) for n in range(5)] == [60, 120, 240, 240, 240]


def test_strikes_are_forgotten_after_a_clean_period() -> None:
    assert begin(DRAINED, Strikes(3, NOW - 3599), NOW, SETTINGS).window == 240
    assert begin(DRAINED, Strikes(3, NOW - 3600), NOW, SETTINGS).window == 60


def test_a_reset_gpu_that_fails_is_drained_not_reset_again() -> None:
    probation = begin(RESETTING, None, NOW, SETTINGS)
    assert probation.origin == "its reset"
    mark, _ = failed_mark(probation, "a failed canary", NOW, SETTINGS)
    assert mark.condition == GpuCondition.DRAINED


def test_trouble_counts_what_happens_after_a_container_answered_never_before() -> None:
    probation = replace(begin(DRAINED, None, NOW, SETTINGS), answered={"a": NOW + 10})
    restarting = container("b", ContainerState.RESTARTING)
    quiet = trouble(
        probation,
        containers=[container("a"), restarting],
        probes={
            "a": (probe(NOW + 5, ProbeStatus.FAILED), probe(NOW + 11)),
            "b": (probe(NOW + 12, ProbeStatus.FAILED),),
        },
        canaries={"b": CanaryState(failures=1, detail="HTTP 500")},
        xids=[ClassedXid(NOW - 1, 48, "reset-gpu"), ClassedXid(NOW + 1, 45, "log")],
        config=SETTINGS,
    )
    assert quiet == []
    found = trouble(
        probation,
        containers=[container("a", ContainerState.EXITED), restarting],
        probes={"a": (probe(NOW + 11, ProbeStatus.FAILED),)},
        canaries={"b": CanaryState(failures=2, detail="HTTP 500 after 0.01 s")},
        xids=[ClassedXid(NOW + 20, 79, "quarantine")],
        config=SETTINGS,
    )
    assert found[0] == "Xid 79 (quarantine) on GPU 3"
    assert any("name-a is exited" in f for f in found) and any("name-a: probe failed" in f for f in found)
    assert any("name-b: 2 1-token completions in a row failed (HTTP 500" in f for f in found)


def test_released_marks_are_those_gone_since_the_last_cycle() -> None:
    other = GpuMark("GPU-1", 1, GpuCondition.QUARANTINED, "lost", NOW)
    assert released({UUID: DRAINED, "GPU-1": other}, {"GPU-1": other}) == [DRAINED]
    assert released({}, {UUID: DRAINED}) == []


def test_a_probation_reads_back_from_its_journal_record() -> None:
    probation = replace(begin(DRAINED, Strikes(1, NOW), NOW, SETTINGS), answered={"a": NOW + 1}, proving_since=NOW + 1)
    assert from_record(UUID, json.loads(json.dumps(to_record(probation)))) == probation
    assert from_record(UUID, {"condition": "some-new-state", "since": 1, "window": 1}) is None


# -- config ------------------------------------------------------------------------


def test_probation_keys_parse_with_their_defaults() -> None:
    assert parse_config({}).gpu.probation == ProbationConfig()
    parsed = parse_config({"gpu": {"probation": {"window": "2m", "max_window": 600, "canary_failures": 3}}})
    assert parsed.gpu.probation.window == 120 and parsed.gpu.probation.canary_failures == 3


@pytest.mark.parametrize(
    ("section", "named"),
    [
        ({"window": "soon"}, "gpu.probation.window"),
        ({"canary_timeout": 0}, "gpu.probation.canary_timeout"),
        ({"canary_failures": 0}, "gpu.probation.canary_failures"),
        ({"enabled": "perhaps"}, "gpu.probation.enabled"),
        ({"windw": 60}, "windw"),
    ],
)
def test_bad_probation_keys_are_one_line_errors_naming_the_key(section: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"gpu": {"probation": section}})
    assert named in str(caught.value) and "\n" not in str(caught.value)


# -- the watch, against a real journal and a real HTTP server ----------------------------


class Completions(BaseHTTPRequestHandler):
    status = 200

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b'{"choices": [{"text": "!"}]}'
        self.send_response(type(self).status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[int, type[Completions]]]:
    handler = type("Handler", (Completions,), {"status": 200})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1], handler
    httpd.shutdown()
    httpd.server_close()


def config(*, dry_run: bool = False, window: float = 60.0) -> Config:
    gpu = replace(Config().gpu, probation=replace(ProbationConfig(), window=window, canary_interval=0.05))
    return replace(Config(), gpu=gpu, dry_run=dry_run)


def gpu_side(xids: tuple[XidEvent, ...] = ()) -> dict[str, Any]:
    """What the GPU supervisor hands the watch: the reading's GPUs, the recent Xids and the table that classes them."""
    gpus = tuple(GpuSnapshot(index=i, uuid=f"GPU-{i}") for i in range(4))
    return {"gpus": gpus, "xids": list(xids), "table": default_table()}


class Rig:
    def __init__(self, tmp_path: Path, port: int, *, dry_run: bool = False) -> None:
        self.journal = Journal.in_dir(tmp_path / "state")
        self.book = MarkBook(self.journal)
        self.book.put(DRAINED)
        self.watch = ReturnWatch(config(dry_run=dry_run), self.journal, self.book)
        self.a = container("a", port=port)
        self.histories = {"a": ProbeHistory((probe(NOW - 1),), NOW - 1)}

    def cycle(self, now: float, xids: tuple[XidEvent, ...] = ()) -> dict[str, str]:
        assignments = {"a": GpuAssignment((UUID,))}
        return self.watch.cycle([self.a], self.histories, assignments=assignments, **gpu_side(xids), now=now)

    def cycle_until(self, done: Any, now: float) -> dict[str, str]:
        deadline = time.monotonic() + 10
        while True:
            held = self.cycle(now)
            if done(held) or time.monotonic() > deadline:
                return held
            time.sleep(0.02)

    def kinds(self) -> list[str]:
        return [e["kind"] for e in self.journal.entries() if e["kind"].startswith("gpu-pro")]


def test_a_released_gpu_is_held_out_until_its_canary_answers_and_its_window_passes(
    tmp_path: Path, server: tuple[int, type[Completions]]
) -> None:
    rig = Rig(tmp_path, server[0])
    assert rig.cycle(NOW) == {}
    rig.book.release(UUID)
    held = rig.cycle(NOW + 1)
    assert "probation: proving GPU 3 after its release" in held["a"]
    held = rig.cycle_until(lambda h: "clean for" in h.get("a", ""), NOW + 1)  # the window starts at its answer
    assert "clean for 0 of 60 s" in held["a"], held
    assert rig.cycle(NOW + 60) == {"a": held["a"].replace("0 of 60", "59 of 60")}
    assert rig.cycle(NOW + 61) == {} and not rig.watch.active
    assert rig.kinds() == [EntryKind.GPU_PROBATION, EntryKind.GPU_PROVEN]
    assert not rig.book.marks
    rig.journal.close()


def test_a_probation_survives_a_watchdog_restart_through_the_journal(
    tmp_path: Path, server: tuple[int, type[Completions]]
) -> None:
    rig = Rig(tmp_path, server[0])
    rig.cycle(NOW)
    rig.book.release(UUID)
    rig.cycle_until(lambda h: "clean for" in h.get("a", ""), NOW + 1)
    again = ReturnWatch(config(), rig.journal, MarkBook(rig.journal))
    assert list(again.active) == [UUID] and "a" in again.active[UUID].answered
    view = again.view()
    assert view[0]["uuid"] == UUID and view[0]["window"] == 60
    # Its first cycles may come before the first NVML reading: no GPU maps its containers yet, still held.
    unread = again.cycle([rig.a], rig.histories, assignments={}, gpus=(), xids=[], table=default_table(), now=NOW + 29)
    assert "waiting for an NVML reading" in unread["a"] and list(again.active) == [UUID]
    held = again.cycle([rig.a], rig.histories, assignments={"a": GpuAssignment((UUID,))}, **gpu_side(), now=NOW + 30)
    assert "clean for 29 of 60 s" in held["a"]
    rig.journal.close()


def test_a_failing_canary_marks_the_gpu_again_with_a_longer_window_next_time(
    tmp_path: Path, server: tuple[int, type[Completions]]
) -> None:
    server[1].status = 500
    rig = Rig(tmp_path, server[0])
    rig.cycle(NOW)
    rig.book.release(UUID)
    rig.cycle_until(lambda h: not h, NOW + 1)
    mark = rig.book.marks[UUID]
    assert mark.condition == GpuCondition.DRAINED and "1-token completions in a row failed" in mark.reason
    assert rig.kinds() == [EntryKind.GPU_PROBATION, EntryKind.GPU_PROBATION_FAILED]
    assert rig.journal.entries(kind=EntryKind.GPU_DRAINED) and rig.journal.entries(kind=EntryKind.ALERT)
    server[1].status = 200
    rig.book.release(UUID)
    rig.cycle(NOW + 100)
    assert rig.watch.active[UUID].window == 120 and rig.watch.active[UUID].strikes == 1
    rig.journal.close()


def test_an_xid_inside_the_window_fails_the_probation(tmp_path: Path, server: tuple[int, type[Completions]]) -> None:
    rig = Rig(tmp_path, server[0])
    rig.cycle(NOW)
    rig.book.release(UUID)
    rig.cycle_until(lambda h: "clean for" in h.get("a", ""), NOW + 1)
    assert "a" in rig.cycle(NOW + 9, xids=(XidEvent(NOW + 8, 45, 3, UUID),)), "Xid 45 (a killed process) is logged only"
    assert rig.cycle(NOW + 10, xids=(XidEvent(NOW + 9, 31, 3, UUID),)) == {}
    assert "Xid 31 (restart-container) on GPU 3" in rig.book.marks[UUID].reason
    rig.journal.close()


def test_dry_run_watches_but_holds_nothing_and_marks_nothing(
    tmp_path: Path, server: tuple[int, type[Completions]]
) -> None:
    server[1].status = 500
    rig = Rig(tmp_path, server[0], dry_run=True)
    rig.cycle(NOW)
    rig.book.release(UUID)
    assert rig.cycle(NOW + 1) == {} and rig.watch.active
    rig.cycle_until(lambda h: not rig.watch.active, NOW + 2)
    failed = rig.journal.entries(kind=EntryKind.GPU_PROBATION_FAILED)
    assert failed and "dry-run: would mark it drained again" in failed[0]["reason"]
    assert not rig.book.marks
    rig.journal.close()


def test_the_rotation_keeps_a_probation_container_out_and_the_plan_may_restart_it(tmp_path: Path) -> None:
    from watchdog.containers.plan import RestartBudget, plan
    from watchdog.model import Diagnosis, Fault, FaultKind
    from watchdog.router.litellm_config import RouterDeployment
    from watchdog.router.problems import Problems
    from watchdog.router.rotation_writer import RotationWriter

    journal = Journal.in_dir(tmp_path / "state")
    settings = replace(Config(), litellm=replace(Config().litellm, enabled=True, out=str(tmp_path / "config.yaml")))
    writer = RotationWriter(settings, journal, Problems(journal, time.time))
    a = container("a")
    why = "probation: proving GPU 3 after its reset (clean for 5 of 60 s)"
    view = CycleView(
        (a,),
        {"a": ProbeHistory((probe(NOW),), NOW)},
        Diagnosis(ready=frozenset({"a"})),
        gpu=GpuFindings(probation={"a": why}),
    )
    deployment = RouterDeployment("name-a.gpu3", "qwen", "name-a", "http://127.0.0.1:1", ("3",), None)
    writer.write([deployment], view, set(), NOW)
    doc = json.loads((tmp_path / "rotation.json").read_text())
    assert doc["out"] == {"name-a.gpu3": f"name-a: {why}"}
    # Its GPU's probation does not hold its restarts (a quarantine does): the plan takes `held` only.
    fault = Fault("a", "name-a", FaultKind.STOPPED, NOW, "exited")
    decisions = plan([fault], {"a": a}, {}, set(), RestartBudget(), config=settings, now=NOW, held=view.gpu.held)
    assert decisions[0].verdict == Verdict.RESTART
    journal.close()


def test_a_release_made_while_the_daemon_was_down_starts_a_probation_at_its_start(
    tmp_path: Path, server: tuple[int, type[Completions]]
) -> None:
    from watchdog.ops.operator_actions import release_gpu

    rig = Rig(tmp_path, server[0])
    rig.cycle(NOW)  # the daemon saw the mark, then stopped
    release_gpu(rig.journal, UUID, "`gpu-watchdog gpu release`", NOW + 5)
    started = ReturnWatch(config(), rig.journal, MarkBook(rig.journal))
    assert not started.active
    held = started.cycle([rig.a], rig.histories, assignments={"a": GpuAssignment((UUID,))}, **gpu_side(), now=NOW + 9)
    assert "probation: proving GPU 3 after its release" in held["a"] and list(started.active) == [UUID]
    rig.journal.close()


def test_status_shows_a_gpu_on_probation_in_its_table_and_on_its_own_line() -> None:
    from watchdog.gpu.probation import status_rows
    from watchdog.ops.status import render_gpus

    probation = begin(RESETTING, Strikes(1, NOW - 10), NOW, SETTINGS)
    row = {"index": 3, "uuid": UUID, "memory_used": None, "memory_total": None, "health": "ok", "containers": ["a"]}
    doc = {
        "nvml": "ok",
        "gpus": [row],
        "probation": status_rows({UUID: probation}, {UUID: "clean for 5 of 120 s"}, dry_run=False),
    }
    lines = render_gpus(doc, now=NOW + 30)
    assert "PROBATION" in next(line for line in lines if line.startswith("3 "))
    line = next(line for line in lines if line.strip().startswith(f"{UUID}: PROBATION"))
    assert "after its reset, window 120 s, 1 earlier failure(s): clean for 5 of 120 s" in line, line


def test_metrics_show_a_gpu_on_probation_as_marked_with_condition_probation() -> None:
    from watchdog.gpu.probation import status_rows
    from watchdog.model import Diagnosis
    from watchdog.ops.metrics import Metrics

    metrics = Metrics("host-a")
    row = {"index": 3, "uuid": UUID, "name": "P106-100", "health": "ok"}
    view = {
        "nvml": "ok",
        "gpus": [row],
        "probation": status_rows({UUID: begin(DRAINED, None, NOW, SETTINGS)}, {}, dry_run=False),
    }
    metrics.observe([], Diagnosis(), [], view, {}, engine_up=True)
    text = metrics.exposition().decode()
    assert (
        'gpu_watchdog_gpu_marked{Hostname="host-a",UUID="GPU-3",condition="probation",gpu="3",modelName="P106-100"} 1.0'
        in text
    ), text
