"""The Xid watcher against pynvml's real event API and the fake NVML driver (tests/fake_nvml).

Each case runs the watcher in a fresh interpreter (the fake is loaded through
LD_LIBRARY_PATH at process start); the child prints one JSON line per callback,
so the parent sees exactly what on_event / on_state were given, in order.
"""

from __future__ import annotations

import json
import queue
import re
import subprocess
import threading
import time
from typing import Any

import pytest

from tests.fake_nvml.harness import FakeNvml, scenario
from watchdog.gpu.xid_events import normalise_bus_id

# Everything a child needs: JSON-line callbacks and a bounded wait.
PRELUDE = """
import json, sys, threading, time
from watchdog.gpu.xid_events import XidWatcher

events, states = [], []
_emitting = threading.Lock()  # the watcher's thread and the main thread both emit: one whole line at a time

def emit(kind, **fields):
    with _emitting:
        sys.stdout.write(json.dumps({"kind": kind, **fields}) + "\\n")
        sys.stdout.flush()

def on_event(e):
    events.append(e)
    emit("event", xid=e.xid, gpu=e.gpu_index, uuid=e.gpu_uuid, bus=e.bus_id, source=e.source, at=e.at)

def on_state(state, detail):
    states.append(state)
    emit("state", state=state, detail=detail)

def wait_until(predicate, timeout):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)
    return predicate()

def watcher_alive():
    return any(t.name == "nvml-xid-watcher" and t.is_alive() for t in threading.enumerate())
"""


def run(fake: FakeNvml, body: str, timeout: float = 15) -> tuple[list[dict[str, Any]], str]:
    """Run PRELUDE + body under the fake; the JSON lines it printed, and its stderr."""
    done = fake.run(PRELUDE + body, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")], done.stderr


def kinds(lines: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [line for line in lines if line["kind"] == kind]


def xid_lines(text: str) -> list[tuple[int, int]]:
    """The scenario's `xid <gpu> <code>` lines, in file order."""
    return [(int(m[1]), int(m[2])) for m in re.finditer(r"^xid\s+(\d+)\s+(\d+)", text, re.MULTILINE)]


class Child:
    """A running child whose stdout lines arrive on a queue, so every read has a deadline."""

    def __init__(self, fake: FakeNvml, body: str) -> None:
        self.proc = fake.popen(PRELUDE + body)
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.lines.put(json.loads(line))

    def expect(self, predicate: Any, timeout: float = 5.0) -> dict[str, Any]:
        """The next line that satisfies predicate; fails after timeout."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(0.01, left))
            except queue.Empty:
                pytest.fail(f"no matching line within {timeout} s; stderr: {self._stderr()}")
            if predicate(line):
                return line

    def finish(self, timeout: float = 10.0) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail("the child did not exit")

    def _stderr(self) -> str:
        if self.proc.poll() is None:
            self.proc.kill()
        assert self.proc.stderr is not None
        return self.proc.stderr.read()


def test_xid48_is_one_event_naming_gpu_1_by_uuid_and_kernel_log_bus_id(fake_nvml: FakeNvml) -> None:
    text = fake_nvml.use("xid48").read_text()
    uuid = re.search(r"^gpu 1 uuid=(\S+)", text, re.MULTILINE)
    assert uuid is not None
    lines, _ = run(
        fake_nvml,
        """
w = XidWatcher(on_event, on_state, wait_ms=100)
w.start()
assert wait_until(lambda: events, 5)
time.sleep(0.5)  # room for a duplicate to show up
w.stop()
emit("done", state=w.state)
""",
    )
    assert [(e["xid"], e["gpu"], e["uuid"], e["bus"], e["source"]) for e in kinds(lines, "event")] == [
        (48, 1, uuid[1], "0000:2a:00", "nvml")
    ]
    assert [s["state"] for s in kinds(lines, "state")] == ["watching", "stopped"]
    assert kinds(lines, "done") == [{"kind": "done", "state": "stopped"}]


def test_an_xid_appended_while_watching_arrives_within_two_seconds(fake_nvml: FakeNvml) -> None:
    text = fake_nvml.use("p106x8").read_text()
    child = Child(
        fake_nvml,
        """
w = XidWatcher(on_event, on_state)  # the default 1 s wait: delivery must not wait for it to expire
w.start()
assert wait_until(lambda: w.state == "watching", 5)
emit("ready")
wait_until(lambda: events, 5)
w.stop()
emit("done")
""",
    )
    child.expect(lambda line: line["kind"] == "ready")
    appended = time.time()
    fake_nvml.write(text + "xid 0 13\n")
    event = child.expect(lambda line: line["kind"] == "event")
    assert (event["xid"], event["gpu"], event["bus"]) == (13, 0, "0000:01:00")
    assert event["at"] - appended < 2.0
    child.expect(lambda line: line["kind"] == "done")
    assert child.finish() == 0


def test_an_xid_storm_is_delivered_whole_and_in_order(fake_nvml: FakeNvml) -> None:
    expected = xid_lines(scenario("xid_storm").read_text())
    fake_nvml.use("xid_storm")
    assert len(expected) >= 100
    lines, _ = run(
        fake_nvml,
        f"""
w = XidWatcher(on_event, on_state, wait_ms=100)
started = time.monotonic()
w.start()
wait_until(lambda: len(events) >= {len(expected)}, 8)
elapsed = time.monotonic() - started
time.sleep(0.2)  # room for extra events to show up
w.stop()
emit("done", elapsed=elapsed)
""",
    )
    assert [(e["gpu"], e["xid"]) for e in kinds(lines, "event")] == expected
    assert kinds(lines, "done")[0]["elapsed"] < 5.0


def test_no_driver_is_reported_once_and_the_thread_ends(fake_nvml: FakeNvml) -> None:
    fake_nvml.scenario_file.unlink()  # the fake answers like a machine whose driver is not loaded
    lines, _ = run(
        fake_nvml,
        """
w = XidWatcher(on_event, on_state, retry_after=0.05)
w.start()
ended = wait_until(lambda: not watcher_alive(), 5)
time.sleep(0.2)  # a retry would report again
emit("done", ended=ended, state=w.state)
w.stop(timeout=0.5)
emit("after_stop", state=w.state)
""",
    )
    states = kinds(lines, "state")
    assert [s["state"] for s in states] == ["no-driver"]
    assert "Driver Not Loaded" in states[0]["detail"]
    assert kinds(lines, "done") == [{"kind": "done", "ended": True, "state": "no-driver"}]
    assert kinds(lines, "after_stop")[0]["state"] == "no-driver"
    assert not kinds(lines, "event")


def test_stop_returns_within_its_timeout_while_the_driver_hangs_and_the_process_exits(fake_nvml: FakeNvml) -> None:
    # Both entry points: pynvml's nvmlEventSetWait_v2 calls the C _v2, old bindings' nvmlEventSetWait the v1.
    text = fake_nvml.use("xid48").read_text()
    fake_nvml.write(text + "hang nvmlEventSetWait_v2\nhang nvmlEventSetWait\n")
    started = time.monotonic()
    lines, _ = run(
        fake_nvml,
        """
w = XidWatcher(on_event, on_state, wait_ms=100)
w.start()
assert wait_until(lambda: w.state == "watching", 5)
time.sleep(0.5)  # several 100 ms waits would have returned by now: the call is stuck
t0 = time.monotonic()
w.stop(timeout=1.0)
emit("done", stop_took=time.monotonic() - t0, stuck=watcher_alive(), state=w.state)
""",
        timeout=15,
    )
    done = kinds(lines, "done")[0]
    assert done["stuck"] is True and done["state"] == "stopped"
    assert 0.9 <= done["stop_took"] < 1.5
    assert not kinds(lines, "event")
    assert time.monotonic() - started < 10  # the child exited with the watcher still stuck


def test_a_raising_on_event_does_not_stop_later_events(fake_nvml: FakeNvml) -> None:
    text = fake_nvml.use("p106x8").read_text()
    fake_nvml.write(text + "xid 0 13\nxid 1 31\nxid 2 43\n")
    lines, stderr = run(
        fake_nvml,
        """
seen = []
def explosive(e):
    seen.append(e.xid)
    emit("event", xid=e.xid, gpu=e.gpu_index)
    if len(seen) == 1:
        raise RuntimeError("callback bug")
w = XidWatcher(explosive, on_state, wait_ms=100)
w.start()
wait_until(lambda: len(seen) >= 3, 5)
emit("done", state=w.state, alive=watcher_alive())
w.stop()
""",
    )
    assert [(e["gpu"], e["xid"]) for e in kinds(lines, "event")] == [(0, 13), (1, 31), (2, 43)]
    assert kinds(lines, "done")[0] == {"kind": "done", "state": "watching", "alive": True}
    assert "on_event callback failed" in stderr and "callback bug" in stderr


def test_no_gpu_supporting_xid_events_is_unsupported_and_ends(fake_nvml: FakeNvml) -> None:
    text = fake_nvml.use("p106x8").read_text()
    fake_nvml.write(text + "notsupported nvmlDeviceRegisterEvents\n")
    lines, _ = run(
        fake_nvml,
        """
w = XidWatcher(on_event, on_state, retry_after=0.05)
w.start()
ended = wait_until(lambda: not watcher_alive(), 5)
emit("done", ended=ended, state=w.state)
""",
    )
    assert [s["state"] for s in kinds(lines, "state")] == ["unsupported"]
    assert kinds(lines, "done")[0] == {"kind": "done", "ended": True, "state": "unsupported"}


def test_a_gpu_without_xid_events_is_skipped_and_the_others_watched(fake_nvml: FakeNvml) -> None:
    text = fake_nvml.use("xid48").read_text()
    fake_nvml.write(text + "notsupported nvmlDeviceRegisterEvents 0\nxid 0 13\n")
    lines, _ = run(
        fake_nvml,
        """
w = XidWatcher(on_event, on_state, wait_ms=100)
w.start()
wait_until(lambda: events, 5)
time.sleep(0.3)  # GPU 0's Xid must not arrive: it is not registered
w.stop()
""",
    )
    watching = kinds(lines, "state")[0]
    assert watching["state"] == "watching" and "not supported on GPU 0" in watching["detail"]
    assert [(e["gpu"], e["xid"]) for e in kinds(lines, "event")] == [(1, 48)]


def test_a_failing_wait_reports_error_and_the_watcher_recovers(fake_nvml: FakeNvml) -> None:
    text = fake_nvml.use("p106x8").read_text()
    fake_nvml.write(text + "fail nvmlEventSetWait_v2 999\nfail nvmlEventSetWait 999\n")
    child = Child(
        fake_nvml,
        """
w = XidWatcher(on_event, on_state, wait_ms=100, retry_after=0.2)
w.start()
wait_until(lambda: events, 8)
w.stop()
emit("done", states=states)
""",
    )
    error = child.expect(lambda line: line["kind"] == "state" and line["state"] == "error")
    assert "Unknown" in error["detail"]
    fake_nvml.write(text + "xid 0 13\n")  # the driver answers again
    event = child.expect(lambda line: line["kind"] == "event")
    assert (event["gpu"], event["xid"]) == (0, 13)
    done = child.expect(lambda line: line["kind"] == "done")
    assert done["states"] == ["watching", "error", "watching", "stopped"]
    assert child.finish() == 0


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("00000000:2A:00.0", "0000:2a:00"),  # NVML's busId
        (b"0000:3B:00.0", "0000:3b:00"),  # the legacy 16-byte form, as bytes
        ("00000001:81:1F.0", "0001:81:1f"),
        ("", None),
    ],
)
def test_bus_ids_take_the_kernel_log_form(raw: str | bytes, canonical: str | None) -> None:
    assert normalise_bus_id(raw) == canonical


def test_a_lost_gpu_on_wait_reports_error_and_keeps_the_same_event_set(fake_nvml: FakeNvml) -> None:
    text = fake_nvml.use("p106x8").read_text() + "xid 1 31\n"
    fake_nvml.write(text)
    child = Child(
        fake_nvml,
        """
w = XidWatcher(on_event, on_state, wait_ms=100, retry_after=0.05)
w.start()
wait_until(lambda: len(events) >= 2, 8)
time.sleep(0.3)  # a re-created event set would deliver `xid 1 31` a second time
w.stop()
emit("done", states=states, xids=[e.xid for e in events])
""",
    )
    child.expect(lambda line: line["kind"] == "event" and line["xid"] == 31)
    fake_nvml.write(text + "fail nvmlEventSetWait_v2 15\nfail nvmlEventSetWait 15\n")  # NVML_ERROR_GPU_IS_LOST
    error = child.expect(lambda line: line["kind"] == "state" and line["state"] == "error")
    assert "GPU is lost" in error["detail"]
    fake_nvml.write(text + "xid 2 79\n")
    child.expect(lambda line: line["kind"] == "event" and line["xid"] == 79)
    done = child.expect(lambda line: line["kind"] == "done")
    assert done["states"] == ["watching", "error", "watching", "stopped"]
    assert done["xids"] == [31, 79]
    assert child.finish() == 0
