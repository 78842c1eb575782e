"""Router feedback both ways (issue 14): the real LiteLLM proxy ejects what fails on real traffic, tells the watchdog.

4 stand-in backends on the real engine, the pinned proxy with the rendered config and the
callback, and the daemon; traffic from a client thread all along. (a) A backend whose
completions fail with HTTP 500 while its /health answers: the proxy ejects it after 3 failures,
clients (LiteLLM retries elsewhere) see almost no errors, the watchdog hears of it, probes it,
finds it answering and clears it, twice; at the third report it stops clearing (a fault /health
cannot show) and the proxy's growing ejection keeps it out; it is never restarted. (b) A backend
whose completions hang while its /health answers too late: the proxy sees timeouts, the watchdog
takes it out on the proxy's word within about a second, and its probes confirm the fault: restarted.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.integration import litellm_proxy
from tests.integration.conftest import new_daemon
from tests.integration.harness import ROOT, Daemon, Fleet, free_port, ok_restarts, wait_for

pytestmark = pytest.mark.engine
TEMPLATE = ROOT / "litellm" / "config.template.yaml"


@pytest.fixture(scope="module")
def proxy_installed() -> None:
    litellm_proxy.ensure_installed()


class Traffic:
    """One client thread sending chat completions through the proxy until stopped."""

    def __init__(self, port: int) -> None:
        self.http = litellm_proxy.client(port)
        self.log: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def ask(self) -> dict[str, Any]:
        started = time.time()
        try:
            response = self.http.post(
                "/v1/chat/completions", json={"model": "qwen", "messages": [{"role": "user", "content": "hi"}]}
            )
            status, ident = response.status_code, response.headers.get("x-litellm-model-id")
        except httpx.HTTPError as exc:
            status, ident = 0, type(exc).__name__
        record = {"at": started, "seconds": time.time() - started, "status": status, "id": ident}
        self.log.append(record)
        return record

    def _run(self) -> None:
        while not self._stop.is_set():
            self.ask()
            self._stop.wait(0.05)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(70)
        self.http.close()


@pytest.fixture
def routed(fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str, proxy_installed: None) -> Iterator[Any]:
    """A function starting 4 backends, the proxy and the daemon (with `overrides`); the proxy is stopped after."""
    pids: list[int] = []

    def start(**overrides: Any) -> tuple[Daemon, dict[int, str], Path, int]:
        names = {}
        for gpu in range(4):
            names[gpu] = fleet.start(f"b{gpu}", gpu=str(gpu), role="chat", model="qwen", host_port=free_port()).name
        for gpu in range(4):
            fleet.wait_ready(f"b{gpu}")
        template = yaml.safe_load(TEMPLATE.read_text())
        template["deployment"]["litellm_params"].update(timeout=3, stream_timeout=3)  # a hang costs 3 s an attempt
        template_path = tmp_path / "template.yaml"
        template_path.write_text(yaml.safe_dump(template))
        out = tmp_path / "litellm" / "config.yaml"
        port = free_port()
        litellm = {"enabled": True, "template": str(template_path), "out": str(out), "stale_after": 3}
        daemon = new_daemon(daemons, tmp_path, prefix, litellm=litellm, capacity={"rpm_per_gpu": [20, 30]}, **overrides)
        rendered = daemon.cli("litellm", "render")
        assert rendered.returncode == 0, rendered.stderr
        pids.append(litellm_proxy.start(out, port, tmp_path / "proxy.log"))
        wait_for(lambda: litellm_proxy.live(port), 90, "the LiteLLM proxy to answer")
        daemon.start()
        wait_for(lambda: len(read_json(out.parent / "rotation.json").get("in", [])) == 4, 20, "4 backends in rotation")
        return daemon, names, out.parent, port

    yield start
    for pid in pids:
        litellm_proxy.stop(pid)


def read_json(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def proxy_view(directory: Path, ident: str) -> dict[str, Any]:
    """The deployment as the proxy's report files show it (the latest failure over all of them)."""
    rows = [read_json(p).get("deployments", {}).get(ident) for p in directory.glob("router-report-*.json")]
    rows = [r for r in rows if r]
    return max(rows, key=lambda r: r.get("last_failure_at") or 0.0) if rows else {}


def entries(daemon: Daemon, kind: str, name: str, after: float) -> list[dict[str, Any]]:
    return [e for e in daemon.entries(kind=kind, container=name) if e["ts"] >= after]


def test_completions_failing_behind_a_healthy_health_check_are_ejected_by_the_proxy_not_restarted(
    fleet: Fleet, routed: Any
) -> None:
    daemon, names, directory, port = routed()
    name, ident = names[1], f"{names[1]}.gpu1"
    with Traffic(port) as traffic:
        wait_for(lambda: len(traffic.log) >= 20, 30, "traffic before the fault")
        faulted_at = time.time()
        fleet.fault("b1", "completions-5xx")
        # The proxy ejects at 3 failures in a row; the watchdog may take it out as a suspect at 2 first, and each
        # clear resets the proxy's count, so the ejection can wait until the watchdog stops clearing (~20 s).
        wait_for(lambda: (proxy_view(directory, ident).get("ejected_until") or 0) > faulted_at, 60, "the ejection")
        first = wait_for(lambda: entries(daemon, "router-report", name, faulted_at), 10, "the watchdog told")
        assert "failure(s) in a row on real traffic (last: 5xx)" in first[0]["reason"], first
        # /health answers: each of the first two reports is a false alarm as far as a probe can tell.
        wait_for(lambda: len(entries(daemon, "router-cleared", name, faulted_at)) >= 2, 60, "two clears")
        given_up = wait_for(
            lambda: [
                e for e in entries(daemon, "router-report", name, faulted_at) if "no longer cleared" in e["reason"]
            ],
            60,
            "the watchdog to stop clearing",
        )
        stopped_clearing = given_up[0]["ts"]
        time.sleep(8)  # the proxy's own, longer ejection holds it out now
    after = [r for r in traffic.log if r["at"] > faulted_at]
    errors = [r for r in after if r["status"] != 200]
    late = [r for r in after if r["at"] > stopped_clearing + 1]
    view = proxy_view(directory, ident)
    print(
        f"\n(a) {len(errors)} client error(s) of {len(after)} requests after the fault; "
        f"watchdog told {first[0]['ts'] - faulted_at:.1f} s after it, stopped clearing after "
        f"{stopped_clearing - faulted_at:.1f} s; proxy: {view.get('ejections')} recent ejection(s)"
    )
    assert len(after) >= 100, len(after)
    assert len(errors) <= max(2, len(after) // 100), errors  # LiteLLM's retries go elsewhere
    assert late and all(r["id"] != ident for r in late if r["status"] == 200), "served by the failing backend"
    assert view.get("ejections", 0) >= 1 and (view.get("ejected_until") or 0) > stopped_clearing
    assert not ok_restarts(daemon, name) and not daemon.entries(kind="detected", container=name)
    assert read_json(directory / "rotation.json")["cleared"].get(ident) is not None


def test_hung_completions_are_reported_by_the_proxy_and_restarted_by_the_watchdog(fleet: Fleet, routed: Any) -> None:
    # Completions hang while /health still answers: only the router can tell. Once it has, /health turns slow
    # too (5 s, past the 1 s probe timeout), and the suspect's fast probes reach the failure threshold.
    daemon, names, directory, port = routed(probe_interval=10)
    name, ident = names[2], f"{names[2]}.gpu2"
    with Traffic(port) as traffic:
        wait_for(lambda: len(traffic.log) >= 20, 30, "traffic before the fault")
        hung_at = time.time()
        fleet.fault("b2", "wedge")  # completions never answer; the counters stand still with work waiting
        report = wait_for(lambda: entries(daemon, "router-report", name, hung_at), 30, "the watchdog told")
        fleet.fault("b2", "slow?seconds=5&every=1")
        ejected = proxy_view(directory, ident)
        out = wait_for(lambda: entries(daemon, "rotation-out", name, hung_at), 10, "b2 out of rotation")
        restarted = wait_for(lambda: ok_restarts(daemon, name), 30, "b2 restarted")
        wait_for(lambda: entries(daemon, "rotation-in", name, hung_at), 30, "b2 back in rotation")
    timeouts_at = ejected.get("last_failure_at") or 0.0
    print(
        f"\n(b) router saw it {timeouts_at - hung_at:.1f} s after the hang ({ejected.get('consecutive')} timeouts), "
        f"the watchdog {report[0]['ts'] - timeouts_at:.1f} s later; out of rotation {out[0]['ts'] - hung_at:.1f} s, "
        f"restart issued {restarted[0].started_at - hung_at:.1f} s after the hang; "
        f"{sum(1 for r in traffic.log if r['status'] != 200)} client error(s) of {len(traffic.log)}"
    )
    assert "timeout" in report[0]["reason"], report
    assert out[0]["reason"].split(" out of rotation: ", 1)[1].startswith("router:"), out  # on the proxy's word
    assert 0 < report[0]["ts"] - timeouts_at < 2.5, (report, ejected)
    assert restarted[0].started_at - hung_at < 20
