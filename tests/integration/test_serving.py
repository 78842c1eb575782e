"""Serving-level liveness on the real engine, with the real daemon and the stand-in server.

A wedged server (/health 200, work waiting, counters frozen) is taken out of rotation and
restarted with its evidence journaled; a saturated server making slow progress, and one whose
/health answers slowly within the thresholds, are never restarted; a hang is suspect (out of
rotation) within about a second or two and restarted well within 10 s with the default probe
timeout and threshold. No timed asserts: generous waits, then the journal's timestamps reported.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import new_daemon
from tests.integration.harness import Daemon, Fleet, ok_restarts, wait_for

pytestmark = pytest.mark.engine
TEMPLATE = Path(__file__).resolve().parents[2] / "litellm" / "config.template.yaml"


def router(tmp_path: Path) -> dict[str, Any]:
    """The rotation on (no proxy to restart): out-of-rotation moments are journaled."""
    return {"enabled": True, "template": str(TEMPLATE), "out": str(tmp_path / "litellm" / "config.yaml")}


def send_completions(fleet: Fleet, name: str, count: int, stop: threading.Event) -> list[threading.Thread]:
    """`count` completions in flight at once, each sent again when it ends, until `stop`."""

    url = fleet.url(name, "/v1/chat/completions")

    def one() -> None:
        with httpx.Client(timeout=120, trust_env=False) as http:
            while not stop.is_set():
                with contextlib.suppress(httpx.HTTPError):
                    http.post(url, json={"max_tokens": 8})

    threads = [threading.Thread(target=one, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads


def test_a_wedged_server_is_taken_out_and_restarted_with_its_evidence(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str
) -> None:
    fleet.start("wedge", model="m", server="llama.cpp", stall_window="4s")
    fleet.wait_ready("wedge")
    name = fleet.get("wedge").name
    daemon = new_daemon(daemons, tmp_path, prefix, litellm=router(tmp_path), serving={"progress_interval": 1}).start()
    stop = threading.Event()
    fleet.fault("wedge", "wedge")
    send_completions(fleet, "wedge", 2, stop)  # they never answer; /health stays 200
    try:
        wait_for(lambda: ok_restarts(daemon, name), 40, "the wedged server's restart")
    finally:
        stop.set()
    (detected,) = [e for e in daemon.entries(kind="detected", container=name) if e["fault"] == "wedged"][:1]
    detail = detected["detail"] if isinstance(detected["detail"], dict) else json.loads(detected["detail"])
    assert detail["running"] >= 1 and detail["server"] == "llama.cpp" and detail["stalled_seconds"] >= 4
    assert any("wedged" in e["reason"] for e in daemon.entries(kind="rotation-out", container=name))
    assert daemon.entries(kind="detected", container=name)[0]["fault"] == "wedged"  # not endpoint-failing


def predicted_tokens(fleet: Fleet, name: str) -> int:
    """The stand-in's llamacpp:tokens_predicted_total: one per canary (max_tokens 1), or -1 when unreadable."""
    try:
        text = httpx.get(fleet.url(name, "/metrics"), timeout=2, trust_env=False).text
    except httpx.HTTPError:
        return -1
    line = next(line for line in text.splitlines() if line.startswith("llamacpp:tokens_predicted_total "))
    return int(float(line.split()[1]))


def test_a_canary_finds_a_wedge_no_counter_shows(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str
) -> None:
    """`server: openai`: no counters the watchdog reads, /health 200 all along; only the 1-token canary can tell."""
    fleet.start("quiet", model="m", server="openai", canary="2s")
    fleet.wait_ready("quiet")
    name = fleet.get("quiet").name
    daemon = new_daemon(daemons, tmp_path, prefix, litellm=router(tmp_path), serving={"canary_timeout": 1}).start()
    wait_for(lambda: predicted_tokens(fleet, "quiet") >= 2, 20, "two canaries answered")
    assert daemon.entries(kind="detected", container=name) == []  # a serving server passes its canary
    fleet.fault("quiet", "wedge")  # completions taken and never answered; /health stays 200
    wedged_at = time.time()
    wait_for(lambda: ok_restarts(daemon, name), 30, "the restart of the server its canary found wedged")
    detected = daemon.entries(kind="detected", container=name)[0]
    detail = detected["detail"] if isinstance(detected["detail"], dict) else json.loads(detected["detail"])
    assert detected["fault"] == "wedged" and "canary" in detected["reason"], detected
    assert detail["check"] == "canary" and detail["failed_canaries"] == 2 and "timeout" in detail["last_detail"]
    # The next canary (within 2 s), its 1 s timeout, a retry 1 s later and its timeout: a few seconds, not minutes.
    assert detected["ts"] - wedged_at >= 2.0, detected  # never on the first failed canary
    assert any("wedged" in e["reason"] for e in daemon.entries(kind="rotation-out", container=name))


def test_a_saturated_server_making_slow_progress_is_not_restarted(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str
) -> None:
    fleet.start("busy", env={"SLOTS": "1"}, model="m", stall_window="4s")  # kind detected from /metrics
    fleet.wait_ready("busy")
    name = fleet.get("busy").name
    daemon = new_daemon(daemons, tmp_path, prefix, serving={"progress_interval": 1}).start()
    httpx.post(fleet.url("busy", "/fault/slow-tokens?per_token=0.6"), timeout=2, trust_env=False)
    stop = threading.Event()
    threads = send_completions(fleet, "busy", 4, stop)  # one slot: 1 running, 3 queued, 4.8 s each
    try:
        time.sleep(16)  # four stall windows
        metrics = httpx.get(fleet.url("busy", "/metrics"), timeout=2, trust_env=False).text
    finally:
        stop.set()
    assert "llamacpp:requests_deferred 3" in metrics or "llamacpp:requests_deferred 2" in metrics
    assert daemon.restarts(name) == [] and daemon.entries(kind="detected", container=name) == []
    for thread in threads:
        thread.join(15)


def test_a_hang_is_suspect_at_once_and_restarted_within_the_threshold(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str
) -> None:
    fleet.start("hang", model="m")
    fleet.wait_ready("hang")
    name = fleet.get("hang").name
    defaults = {"poll_interval": 5, "probe_timeout": 3, "failure_threshold": 3}  # the shipped defaults
    daemon = new_daemon(daemons, tmp_path, prefix, litellm=router(tmp_path), **defaults).start()
    time.sleep(4)  # a few probes answered: the usual answer time is known
    hung_at = time.time()
    fleet.fault("hang", "hang")
    wait_for(lambda: ok_restarts(daemon, name), 40, "the hung server's restart")
    out = [e for e in daemon.entries(kind="rotation-out", container=name) if e["ts"] >= hung_at]
    restart = daemon.restarts(name)[0]
    out_after = out[0]["ts"] - hung_at
    restart_after = restart.started_at - hung_at
    print(f"hang -> out of rotation {out_after:.2f} s, restart issued {restart_after:.2f} s")
    assert "suspect" in out[0]["reason"]
    (detected,) = daemon.entries(kind="detected", container=name)[:1]
    assert detected["fault"] == "endpoint-failing"


def test_a_slow_health_within_the_thresholds_is_not_restarted(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str
) -> None:
    fleet.start("slowhealth", model="m")
    fleet.wait_ready("slowhealth")
    name = fleet.get("slowhealth").name
    defaults = {"poll_interval": 5, "probe_timeout": 3, "failure_threshold": 3}
    daemon = new_daemon(daemons, tmp_path, prefix, litellm=router(tmp_path), **defaults).start()
    httpx.post(fleet.url("slowhealth", "/fault/slow?seconds=2&every=1"), timeout=3, trust_env=False)
    time.sleep(20)
    assert daemon.restarts(name) == [] and daemon.entries(kind="detected", container=name) == []
