"""Every primary of a model group out: the real proxy falls back to the fallback group, and comes back (issue 15).

Two stand-in backends serve `big` (label gpu-watchdog.fallback: small), one serves `small`; the
pinned LiteLLM proxy runs the config the watchdog renders, with the rotation callback. Both `big`
backends are stopped (docker stop): the watchdog takes them out of rotation, the callback hands
LiteLLM no candidate, LiteLLM falls back to `small`, and no client request fails. Started again,
they are back in rotation and get the traffic again. With a failover cap of 3 a minute (the plan's
rpm for the small GPU), the fourth failover request is refused (429), and `small`'s own requests are not.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration import litellm_proxy
from tests.integration.conftest import new_daemon
from tests.integration.harness import ROOT, Daemon, Fleet, free_port, wait_for
from tests.integration.test_litellm import entry_time, proxy_installed, proxy_pids

pytestmark = pytest.mark.engine
TEMPLATE = ROOT / "litellm" / "config.template.yaml"
__all__ = ["proxy_installed", "proxy_pids"]  # fixtures


def ask(http: Any, log: list[dict[str, Any]]) -> dict[str, Any]:
    started = time.time()
    response = http.post("/v1/chat/completions", json={"model": "big", "messages": [{"role": "user", "content": "hi"}]})
    record = {
        "at": started,
        "status": response.status_code,
        "id": response.headers.get("x-litellm-model-id"),
        "retries": int(response.headers.get("x-litellm-attempted-retries") or 0),
        "seconds": time.time() - started,
    }
    log.append(record)
    return record


class Groups:
    """Two `big` stand-ins (label fallback: small), one `small`, the daemon and the real proxy, all in rotation."""

    def __init__(
        self, fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str, proxy_pids: Path, *, rpm: int
    ) -> None:
        for name, gpu, model in (("p0", "0", "big"), ("p1", "1", "big"), ("f0", "2", "small")):
            extra = {"fallback": "small"} if model == "big" else {}
            fleet.start(name, gpu=gpu, role="chat", model=model, host_port=free_port(), **extra)
        for name in ("p0", "p1", "f0"):
            fleet.wait_ready(name)
        self.names = {n: fleet.get(n).name for n in ("p0", "p1", "f0")}
        self.ids = {n: f"{self.names[n]}.gpu{gpu}" for n, gpu in (("p0", 0), ("p1", 1), ("f0", 2))}
        self.port, out = free_port(), tmp_path / "litellm" / "config.yaml"
        restart = [sys.executable, "-m", "tests.integration.litellm_proxy", "restart", str(proxy_pids), str(out)]
        self.daemon = new_daemon(
            daemons,
            tmp_path,
            prefix,
            env={"PYTHONPATH": str(ROOT)},
            capacity={"rpm_per_gpu": [rpm, rpm]},
            litellm={
                "enabled": True,
                "template": str(TEMPLATE),
                "out": str(out),
                "proxy_url": f"http://127.0.0.1:{self.port}",
                "restart_command": [*restart, str(self.port), str(tmp_path / "proxy.log")],
                "stale_after": 3,
                "fallbacks": {"big": ["missing"]},  # no deployment serves it: left out, said; the label's stays
            },
        )
        rendered = self.daemon.cli("litellm", "render")
        assert rendered.returncode == 0, rendered.stderr
        assert "fallback big -> missing (litellm.fallbacks.big) left out: no deployment serves" in rendered.stderr
        assert yaml.safe_load(out.read_text())["router_settings"]["fallbacks"] == [{"big": ["small"]}]
        proxy_pids.write_text(str(litellm_proxy.start(out, self.port, tmp_path / "proxy.log")))
        wait_for(lambda: litellm_proxy.live(self.port), 90, "the LiteLLM proxy to answer")
        self.daemon.start()
        self.rotation_file = out.parent / "rotation.json"
        wait_for(lambda: len(self.rotation().get("in", [])) == 3, 20, "all 3 backends in rotation")
        assert self.rotation()["failover_rpm"] == {self.ids["f0"]: rpm}  # the plan's rpm for its one GPU

    def rotation(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.rotation_file.read_text()))
        except (OSError, ValueError):
            return {}


def test_every_primary_stopped_falls_back_without_client_errors_and_returns(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str, proxy_installed: None, proxy_pids: Path
) -> None:
    groups = Groups(fleet, daemons, tmp_path, prefix, proxy_pids, rpm=600)
    daemon, names, ids, port = groups.daemon, groups.names, groups.ids, groups.port
    status = wait_for(lambda: json.loads(daemon.cli("status", "--json").stdout or "{}").get("router"), 10, "status")
    assert status["litellm"]["fallbacks"] == {"big": ["small"]}
    assert [p for p in status["litellm"]["problems"] if p.startswith("fallback big -> missing")], status
    http, log = litellm_proxy.client(port), []
    before = [ask(http, log) for _ in range(8)]
    assert all(r["status"] == 200 and r["id"] in (ids["p0"], ids["p1"]) for r in before), before

    stopped_at = time.time()
    for name in ("p0", "p1"):
        fleet.get(name).stop(timeout=2)
    for name in ("p0", "p1"):
        wait_for(lambda n=names[name]: entry_time(daemon, "rotation-out", n, stopped_at), 10, f"{name} out")
    during = [ask(http, log) for _ in range(20)]
    # Straight to the fallback group: no attempt on the stopped primaries first (route-anyway would retry them).
    assert all(r["status"] == 200 and r["id"] == ids["f0"] and r["retries"] == 0 for r in during), during

    started_at = time.time()
    for name in ("p0", "p1"):
        fleet.get(name).start()
    for name in ("p0", "p1"):
        wait_for(lambda n=names[name]: entry_time(daemon, "rotation-in", n, started_at), 30, f"{name} back in")
    back = wait_for(
        lambda: {r["id"] for r in (ask(http, log) for _ in range(8))} & {ids["p0"], ids["p1"]}, 20, "primaries again"
    )
    assert back
    after = [ask(http, log) for _ in range(12)]
    assert all(r["id"] in (ids["p0"], ids["p1"]) for r in after), after  # none fails over once they serve

    # Both hung (they still accept connections): out of rotation, the fallback answers at once. Routed
    # anyway, each request would first wait the deployment timeout (10 s) on a hung primary.
    hung_at = time.time()
    for name in ("p0", "p1"):
        fleet.fault(name, "hang")
    outs = [
        wait_for(lambda n=names[name]: entry_time(daemon, "rotation-out", n, hung_at), 20, f"{name} out (hung)")
        for name in ("p0", "p1")
    ]
    hung = [ask(http, log) for _ in range(6)]
    ins = [
        wait_for(lambda n=names[name]: entry_time(daemon, "rotation-in", n, hung_at), 60, f"{name} back (healed)")
        for name in ("p0", "p1")
    ]
    while_out = [r for r in hung if r["at"] + r["seconds"] < min(ins)]
    assert while_out and max(outs) < while_out[0]["at"], (hung, outs, ins)
    assert all(r["status"] == 200 and r["id"] == ids["f0"] and r["seconds"] < 5 for r in while_out), while_out
    assert daemon.restarts(names["p0"]) and daemon.restarts(names["p1"])
    wait_for(lambda: {r["id"] for r in (ask(http, log) for _ in range(8))} - {ids["f0"]}, 20, "primaries again")
    # From the first request to the last, through the stop, the hang and the returns: no client saw an error.
    assert [r for r in log if r["status"] != 200] == []
    assert proxy_pids.read_text() and daemon.entries(kind="proxy-restart") == []


def test_failover_beyond_the_fallbacks_planned_rpm_is_refused_not_queued(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str, proxy_installed: None, proxy_pids: Path
) -> None:
    groups = Groups(fleet, daemons, tmp_path, prefix, proxy_pids, rpm=3)
    http, log = litellm_proxy.client(groups.port), []
    stopped_at = time.time()
    for name in ("p0", "p1"):
        fleet.get(name).stop(timeout=2)
    for name in ("p0", "p1"):
        wait_for(
            lambda n=groups.names[name]: entry_time(groups.daemon, "rotation-out", n, stopped_at), 10, f"{name} out"
        )
    answers = [ask(http, log) for _ in range(5)]
    # 3 a minute for the one small GPU (capacity.rpm_per_gpu 3): the rest gets LiteLLM's 429 (after its retry
    # back-off), not a place in a queue on the small GPU.
    assert [r["status"] for r in answers] == [200, 200, 200, 429, 429], answers
    assert all(r["id"] == groups.ids["f0"] for r in answers[:3])
    own = litellm_proxy.client(groups.port).post(
        "/v1/chat/completions", json={"model": "small", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert own.status_code == 200  # the small group's own traffic is never refused by the cap
