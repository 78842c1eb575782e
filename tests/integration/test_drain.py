"""Drains before planned disruption and the replica floor (issue 15, points 3 and 4), end to end.

Two stand-in backends of one model group on the real engine, streaming (TOKEN_SECONDS: a long
stream is seconds long), behind the pinned LiteLLM proxy with the rendered config and the
callback, which counts each deployment's attempts in flight; the daemon drains on that and on
the servers' own counters. An operator's drain lets a stream in flight finish, then keeps the
backend out; a restart for a fault that can wait (a failing engine healthcheck while the server
answers) waits for the drain; an urgent one (a crash) does not; a second such restart in the
group waits until the first replica is back (floor 1).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration import litellm_proxy
from tests.integration.conftest import new_daemon
from tests.integration.harness import ROOT, Daemon, Fleet, free_port, ok_restarts, wait_for

pytestmark = pytest.mark.engine
TEMPLATE = ROOT / "litellm" / "config.template.yaml"
TOKEN_SECONDS = 0.1
LONG = 80  # tokens: an 8 s stream
SICK = "/dev/shm/sick"  # the engine healthcheck fails while this file exists; /health still answers
HEALTHCHECK = {
    "test": ["CMD", "python3", "-c", f"import os, sys; sys.exit(os.path.exists('{SICK}'))"],
    "interval": 1_000_000_000,
    "timeout": 1_000_000_000,
    "retries": 1,
    "start_period": 1_000_000_000,
}


@pytest.fixture(scope="module")
def proxy_installed() -> None:
    litellm_proxy.ensure_installed()


def read_json(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


@pytest.fixture
def drained_pair(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str, proxy_installed: None
) -> Iterator[Any]:
    """b0 and b1 (model qwen), the proxy and the daemon; returns (daemon, names by deployment, rotation path, port)."""
    pids: list[int] = []

    def start() -> tuple[Daemon, dict[str, str], Path, int]:
        pair = litellm_proxy.streaming_pair(fleet, TOKEN_SECONDS, 4, healthcheck=HEALTHCHECK, start_period="1")
        names = {f"{name}.gpu{gpu}": name for gpu, name in pair.items()}
        out = tmp_path / "litellm" / "config.yaml"
        port = free_port()
        litellm = {"enabled": True, "template": str(TEMPLATE), "out": str(out), "stale_after": 3}
        daemon = new_daemon(daemons, tmp_path, prefix, litellm=litellm, capacity={"rpm_per_gpu": [20, 30]})
        rendered = daemon.cli("litellm", "render")
        assert rendered.returncode == 0, rendered.stderr
        pids.append(litellm_proxy.start(out, port, tmp_path / "proxy.log"))
        wait_for(lambda: litellm_proxy.live(port), 90, "the LiteLLM proxy to answer")
        daemon.start()
        rotation = out.parent / "rotation.json"
        wait_for(lambda: len(read_json(rotation).get("in", [])) == 2, 30, "2 backends in rotation")
        return daemon, names, rotation, port

    yield start
    for pid in pids:
        litellm_proxy.stop(pid)


def stream_on(
    port: int, deployment: str, tokens: int = LONG
) -> tuple[litellm_proxy.Stream, list[litellm_proxy.Stream]]:
    """A long stream that landed on `deployment` (LiteLLM picks at random: up to 12 tries), and the others."""
    others = []
    for _ in range(12):
        stream = litellm_proxy.Stream(port, tokens).start()
        assert stream.answered.wait(30), "the proxy answered the stream"
        if stream.record.get("deployment") == deployment:
            return stream, others
        others.append(stream)
    raise AssertionError(f"no stream landed on {deployment}: {[s.record for s in others]}")


def after(daemon: Daemon, kind: str, name: str, since: float = 0.0) -> list[dict[str, Any]]:
    return [e for e in daemon.entries(kind=kind, container=name) if e["ts"] >= since]


def test_operator_drain_lets_the_stream_in_flight_finish_then_keeps_the_backend_out(drained_pair: Any) -> None:
    daemon, names, rotation, port = drained_pair()
    ident = sorted(names)[0]
    name = names[ident]
    stream, others = stream_on(port, ident)
    asked = daemon.cli("drain", name)
    assert asked.returncode == 0, asked.stderr
    wait_for(lambda: ident in read_json(rotation).get("out", {}), 10, "the backend out of rotation")
    assert "draining: operator drain of" in read_json(rotation)["out"][ident]
    drained = wait_for(lambda: after(daemon, "drained", name), 40, "the drain to end")
    record = stream.wait(30)
    assert record["complete"] and record["error"] is None, record
    assert record["chunks"] >= LONG, record
    assert drained[0]["ts"] >= record["end"] - 1.0, "drained only once the stream was over"
    assert not after(daemon, "drain-timed-out", name)
    for other in others:
        assert other.wait(30)["complete"], other.record
    # Drained, it stays out: new requests go to the other backend only.
    assert "drained: operator drain of" in read_json(rotation)["out"][ident]
    with litellm_proxy.client(port) as http:
        served = [
            http.post("/v1/chat/completions", json={"model": "qwen", "messages": [{"role": "user", "content": "hi"}]})
            for _ in range(6)
        ]
    assert {r.status_code for r in served} == {200}
    assert ident not in {r.headers.get("x-litellm-model-id") for r in served}
    ended = daemon.cli("drain", "--end", name)
    assert ended.returncode == 0, ended.stderr
    wait_for(lambda: ident in read_json(rotation).get("in", []), 15, "the backend back in rotation")


def test_a_restart_for_a_fault_that_can_wait_waits_for_the_drain(fleet: Fleet, drained_pair: Any) -> None:
    daemon, names, _rotation, port = drained_pair()
    ident = sorted(names)[0]
    name = names[ident]
    stream, others = stream_on(port, ident)
    fleet.get(name).exec_run(["python3", "-c", f"open('{SICK}', 'w')"])
    wait_for(lambda: after(daemon, "drain", name), 20, "the planner's drain verdict")
    restart = wait_for(lambda: ok_restarts(daemon, name), 40, "the restart after the drain")
    record = stream.wait(30)
    assert record["complete"] and record["error"] is None, record
    drained = after(daemon, "drained", name)
    assert drained, "the drain ended as drained, not timed out"
    assert restart[0].started_at >= drained[0]["ts"]
    assert restart[0].started_at >= record["end"] - 1.0, "restarted only once the stream was over"
    for other in others:
        other.wait(30)


def test_an_urgent_fault_does_not_wait_for_the_stream(fleet: Fleet, drained_pair: Any) -> None:
    daemon, names, _rotation, port = drained_pair()
    ident = sorted(names)[0]
    name = names[ident]
    stream, others = stream_on(port, ident, tokens=300)  # 30 s
    fleet.fault(name, "crash")
    restart = wait_for(lambda: ok_restarts(daemon, name), 20, "the restart of the crashed backend")
    record = stream.wait(40)
    assert not record["complete"], "the crash cut the stream"
    assert not after(daemon, "drain", name), "no drain before an urgent restart"
    assert restart[0].started_at < stream.record["start"] + 300 * TOKEN_SECONDS
    for other in others:
        other.wait(40)


def test_the_replica_floor_defers_the_second_restart_of_a_group_of_two(fleet: Fleet, drained_pair: Any) -> None:
    daemon, names, _rotation, _port = drained_pair()
    first, second = (names[i] for i in sorted(names))
    for name in (first, second):
        fleet.get(name).exec_run(["python3", "-c", f"open('{SICK}', 'w')"])
    deferred = wait_for(
        lambda: [e for e in daemon.entries(kind="defer") if "would leave group qwen with 0 of 2" in e["reason"]],
        30,
        "the floor's deferral",
    )
    assert "(floor 1)" in deferred[0]["reason"]

    def both_restarted() -> list[Any] | None:
        ours = [*ok_restarts(daemon, first), *ok_restarts(daemon, second)]
        return sorted(ours, key=lambda a: a.started_at) if {a.container for a in ours} == {first, second} else None

    restarts = wait_for(both_restarted, 90, "both replicas restarted")
    gone_first = restarts[0].container
    back = after(daemon, "restart-recovered", gone_first)
    assert back, "the first replica was back before the second restart"
    assert restarts[1].started_at >= back[0]["ts"], "staggered: one at a time while the other serves"
