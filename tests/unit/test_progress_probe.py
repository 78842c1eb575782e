"""The progress probe against a real HTTP server on 127.0.0.1 serving llama.cpp's /metrics format.

A sample that completes a wedge's evidence wakes the loop at once (not at its next poll); a
server whose counters move, or that has nothing to do, never does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from watchdog.containers.http_probe import Prober
from watchdog.serving.probe import ProgressProbe, ProgressTarget
from watchdog.serving.progress import ServerKind


class Counters(BaseHTTPRequestHandler):
    state: ClassVar[dict[str, float]] = {}

    def do_GET(self) -> None:
        if self.path != "/metrics":
            self.send_error(404)
            return
        s = self.state
        s["reads"] = s.get("reads", 0) + 1
        body = (
            f"llamacpp:n_decode_total {s['tokens']}\n"
            f"llamacpp:requests_processing {s['running']}\n"
            f"llamacpp:requests_deferred {s['waiting']}\n"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, *_args: object) -> None:  # a probe cancelled at close: not this test's subject
        pass


@pytest.fixture
def metrics_server() -> Iterator[tuple[str, dict[str, float]]]:
    Counters.state = {"tokens": 10, "running": 1, "waiting": 0}
    server = QuietServer(("127.0.0.1", 0), Counters)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/metrics", Counters.state
    finally:
        server.shutdown()
        server.server_close()


def watch(url: str, window: float, seconds: float, state: dict[str, float], moving: bool) -> tuple[list[float], bool]:
    """Run a probe at 0.2 s for `seconds`; the wake times (from the start) and whether a verdict stands."""
    prober = Prober(timeout=1.0, min_interval=60.0)
    woken: list[float] = []
    started = time.monotonic()
    probe = ProgressProbe(prober, 0.2, 1.0, on_wedged=lambda: woken.append(time.monotonic() - started))
    try:
        probe.set_targets([ProgressTarget("c1", None, url, ServerKind.LLAMA_CPP, window)])
        while time.monotonic() - started < seconds:
            if moving:
                state["tokens"] += 1
            time.sleep(0.05)
        return woken, "c1" in probe.verdicts(time.time())
    finally:
        probe.close()
        prober.close()


def test_a_busy_server_with_frozen_counters_wakes_the_loop_once_its_window_is_full(
    metrics_server: tuple[str, dict[str, float]],
) -> None:
    url, state = metrics_server
    woken, verdict = watch(url, window=1.0, seconds=4.0, state=state, moving=False)
    assert verdict
    assert woken, "no wake within 4 s"  # the probe woke the loop itself: there is no poll in this test
    assert woken[0] > 0.9, woken  # never before the window (1 s) is full


def test_moving_counters_or_no_work_never_wake(metrics_server: tuple[str, dict[str, float]]) -> None:
    url, state = metrics_server
    assert watch(url, window=0.6, seconds=1.5, state=state, moving=True) == ([], False)
    state["running"] = 0
    assert watch(url, window=0.6, seconds=1.5, state=state, moving=False) == ([], False)


def test_a_server_without_metrics_is_unmonitored_not_wedged(metrics_server: tuple[str, dict[str, float]]) -> None:
    url, _state = metrics_server
    prober = Prober(timeout=1.0, min_interval=60.0)
    probe = ProgressProbe(prober, 0.2, 1.0)
    try:
        probe.set_targets([ProgressTarget("c1", None, url.replace("/metrics", "/nothing"), None, 0.5)])
        deadline = time.monotonic() + 5
        while not probe.unmonitored() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "answers 404" in probe.unmonitored()["c1"]
        assert probe.verdicts(time.time()) == {}
    finally:
        probe.close()
        prober.close()


def reads_in(url: str, state: dict[str, float], seconds: float) -> float:
    """How many times a probe read /metrics in `seconds`: every 5 s while idle, every 0.2 s while busy."""
    prober = Prober(timeout=1.0, min_interval=60.0)
    probe = ProgressProbe(prober, 5.0, 1.0, busy_interval=0.2)
    state["reads"] = 0
    try:
        probe.set_targets([ProgressTarget("c1", None, url, ServerKind.LLAMA_CPP, 30.0)])
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            state["tokens"] += 1
            time.sleep(0.05)
        return state["reads"]
    finally:
        probe.close()
        prober.close()


def test_a_busy_server_is_read_at_the_busy_cadence_an_idle_one_at_the_slow_one(
    metrics_server: tuple[str, dict[str, float]],
) -> None:
    url, state = metrics_server
    busy = reads_in(url, state, 2.2)
    state["running"] = 0
    idle = reads_in(url, state, 2.2)
    assert busy >= 4, busy  # every 0.5 s (the scheduler's tick bounds the 0.2 s)
    assert idle == 1, idle  # the first reading, then not for 5 s
