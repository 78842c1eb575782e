"""The canary: its label and settings, its pure rules, and the probe against a real HTTP server on 127.0.0.1.

The server answers /v1/completions (one token) or, told to, takes the request and never answers
(a wedged engine whose /health still works), or answers 400 (a server the canary cannot ask).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from watchdog.config import ConfigError, parse_config
from watchdog.containers.http_probe import Prober
from watchdog.containers.labels import parse_spec
from watchdog.serving.canary import CanaryProbe, CanaryTarget
from watchdog.serving.canary_rules import CanaryResult, canary_wedged, proved_alive
from watchdog.serving.progress import CounterSample, ProgressTrack, ServerKind, advance

P = "gpu-watchdog"


def test_the_canary_label_is_a_duration_or_off_and_a_bad_one_is_named() -> None:
    spec, _ = parse_spec({f"{P}.enable": "true", f"{P}.canary": "5m"}, P)
    assert spec is not None and spec.canary_interval == 300.0
    spec, _ = parse_spec({f"{P}.enable": "true", f"{P}.canary": "off"}, P)
    assert spec is not None and spec.canary_interval == 0.0
    spec, _ = parse_spec({f"{P}.enable": "true"}, P)
    assert spec is not None and spec.canary_interval is None  # the fleet's serving.canary_interval
    spec, problems = parse_spec({f"{P}.enable": "true", f"{P}.canary": "often"}, P)
    assert spec is None and len(problems) == 1 and f"{P}.canary" in problems[0], problems


def test_canary_settings_default_off_and_bad_values_are_one_line_errors() -> None:
    config = parse_config({}, env={})
    assert config.serving.canary_interval == 0.0 and config.serving.canary_timeout == 30.0
    assert parse_config({"serving": {"canary_interval": "10m"}}, env={}).serving.canary_interval == 600.0
    with pytest.raises(ConfigError, match=r"serving\.canary_timeout"):
        parse_config({"serving": {"canary_timeout": 0}}, env={})
    with pytest.raises(ConfigError, match=r"serving\.canary_interval"):
        parse_config({"serving": {"canary_interval": -1}}, env={})


def test_real_traffic_that_generated_tokens_lately_makes_a_canary_unneeded() -> None:
    idle = advance(ProgressTrack(), CounterSample(100.0, ServerKind.LLAMA_CPP, 50, 0, 0))
    assert not proved_alive(idle, 60.0, 110.0)  # the first reading is no proof: nothing grew yet
    grew = advance(idle, CounterSample(105.0, ServerKind.LLAMA_CPP, 60, 1, 0))
    assert proved_alive(grew, 60.0, 110.0)
    assert not proved_alive(grew, 60.0, 170.0)  # proof older than the interval


def test_two_failed_canaries_in_a_row_of_this_life_are_wedged() -> None:
    ok, bad = CanaryResult(100.0, True, "HTTP 200", 0.1), CanaryResult(130.0, False, "timeout after 30 s", 30.0)
    later = CanaryResult(161.0, False, "timeout after 30 s", 30.0)
    assert canary_wedged([ok, bad], None) is None  # one failure can be bad luck
    verdict = canary_wedged([ok, bad, later], None)
    assert verdict is not None and verdict.since == 100.0 and "2 1-token completions" in verdict.reason
    assert verdict.evidence["check"] == "canary" and verdict.evidence["last_detail"] == "timeout after 30 s"
    assert canary_wedged([bad, later], life=140.0) is None  # a new life starts afresh
    assert canary_wedged([bad, later, ok], None) is None


class Completions(BaseHTTPRequestHandler):
    mode: ClassVar[dict[str, str]] = {"mode": "ok"}
    posts: ClassVar[list[bytes]] = []
    release = threading.Event()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.posts.append(body)
        if self.path != "/v1/completions":
            self.send_error(404)
            return
        if self.mode["mode"] == "wedged":
            self.release.wait(10)  # takes the request, never answers (until the test ends)
            return
        status = 400 if self.mode["mode"] == "400" else 200
        answer = b'{"choices": [{"text": "x"}]}'
        self.send_response(status)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *_args: object) -> None:
        pass


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, *_args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Completions.mode["mode"], Completions.posts = "ok", []
    Completions.release.clear()
    httpd = QuietServer(("127.0.0.1", 0), Completions)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1/completions"
    finally:
        Completions.release.set()
        httpd.shutdown()
        httpd.server_close()


def run_canary(url: str, seconds: float, alive: bool = False) -> tuple[CanaryProbe, list[float]]:
    prober = Prober(timeout=1.0, min_interval=60.0)
    woken: list[float] = []
    started = time.monotonic()
    probe = CanaryProbe(prober, 0.5, alive=lambda *_: alive, on_wedged=lambda: woken.append(time.monotonic() - started))
    try:
        probe.set_targets([CanaryTarget("c1", None, url, 0.5)])
        time.sleep(seconds)
        return probe, woken
    finally:
        probe.close()
        prober.close()


def test_a_serving_server_answers_its_canary_of_one_token(server: str) -> None:
    probe, woken = run_canary(server, 2.0)
    assert probe.sent >= 2 and woken == [] and probe.verdicts() == {}
    assert b'"max_tokens": 1' in Completions.posts[0] and b'"prompt"' in Completions.posts[0]


def test_a_server_that_takes_the_canary_and_never_answers_is_wedged_after_two(server: str) -> None:
    Completions.mode["mode"] = "wedged"
    probe, woken = run_canary(server, 3.5)
    verdict = probe.verdicts()["c1"]
    assert "timeout after 0.5 s" in verdict.reason and woken, verdict
    assert woken[0] > 1.0  # two timeouts of 0.5 s after the first interval (0.5 s): never on the first


def test_real_traffic_spares_the_server_its_canary(server: str) -> None:
    probe, _ = run_canary(server, 1.6, alive=True)
    assert probe.sent == 0 and probe.skipped >= 1 and Completions.posts == []


def test_a_4xx_answer_means_no_canary_for_that_server_never_wedged(server: str) -> None:
    Completions.mode["mode"] = "400"
    probe, woken = run_canary(server, 2.0)
    assert probe.sent == 1 and woken == [] and probe.verdicts() == {}
    assert "HTTP 400" in probe.unusable()["c1"]
