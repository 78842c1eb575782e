"""A real LiteLLM proxy routing by the fleet's view in a real Redis, published by a real daemon.

The daemon (host "gpu-a") watches two stand-ins and publishes its rotation to Redis; `fleet render`
writes the router host's config from Redis alone; the proxy runs with GPU_WATCHDOG_CLUSTER_REDIS_URL
and no rotation file at all. A killed backend leaves the proxy's rotation through Redis and comes back
once healed; a stopped one gets no attempt while it is out; with Redis gone the proxy still serves,
as LiteLLM alone would.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration import litellm_proxy
from tests.integration.conftest import new_daemon
from tests.integration.harness import ROOT, Daemon, Fleet, free_port, wait_for
from tests.integration.redis_server import RedisServer

pytestmark = pytest.mark.engine
TEMPLATE = ROOT / "litellm" / "config.template.yaml"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


def published(server: RedisServer, host: str) -> dict[str, Any]:
    raw = server.client().get(f"gpu-watchdog:host:{host}")
    return dict(json.loads(raw)) if raw else {}


def ask(port: int, count: int) -> list[dict[str, Any]]:
    answers = []
    with litellm_proxy.client(port) as http:
        for _ in range(count):
            started = time.time()
            response = http.post(
                "/v1/chat/completions", json={"model": "qwen", "messages": [{"role": "user", "content": "hi"}]}
            )
            answers.append(
                {
                    "at": started,
                    "status": response.status_code,
                    "id": response.headers.get("x-litellm-model-id"),
                    "seconds": time.time() - started,
                    "retries": int(response.headers.get("x-litellm-attempted-retries") or 0),
                }
            )
    return answers


def test_a_proxy_follows_the_fleet_view_in_redis(
    fleet: Fleet,
    daemons: list[Daemon],
    tmp_path: Path,
    prefix: str,
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for gpu in range(2):
        fleet.start(f"c{gpu}", gpu=str(gpu), role="chat", model="qwen", host_port=free_port())
    for gpu in range(2):
        fleet.wait_ready(f"c{gpu}")
    names = [fleet.get(f"c{gpu}").name for gpu in range(2)]
    ids = [f"gpu-a/{name}.gpu{gpu}" for gpu, name in enumerate(names)]
    daemon = new_daemon(
        daemons,
        tmp_path,
        prefix,
        gpu={"enabled": False},
        litellm={"enabled": True, "template": str(TEMPLATE), "out": str(tmp_path / "local" / "config.yaml")},
        cluster={"redis_url": redis_server.url, "host": "gpu-a"},
    ).start()
    wait_for(
        lambda: (
            sorted(d for d, v in published(redis_server, "gpu-a").get("deployments", {}).items() if v["state"] == "in")
            == sorted(ids)
        ),
        30,
        "both deployments published in rotation",
    )

    router = tmp_path / "router" / "config.yaml"
    rendered = daemon.cli("fleet", "render", "--out", str(router))
    assert rendered.returncode == 0, rendered.stderr
    assert "2 deployment(s) from 1 host(s)" in rendered.stdout
    listed = yaml.safe_load(router.read_text())["model_list"]
    assert sorted(m["model_info"]["id"] for m in listed) == sorted(ids)
    assert (router.parent / "gpu_watchdog_cluster.py").is_file() and not (router.parent / "rotation.json").exists()

    port = free_port()
    monkeypatch.setenv("GPU_WATCHDOG_CLUSTER_REDIS_URL", redis_server.url)
    pid = litellm_proxy.start(router, port, tmp_path / "proxy.log")
    try:
        wait_for(lambda: litellm_proxy.live(port), 90, "the LiteLLM proxy to answer")
        warm = ask(port, 12)
        assert all(a["status"] == 200 for a in warm) and {a["id"] for a in warm} == set(ids), warm

        def state(ident: str) -> str:
            return str(published(redis_server, "gpu-a")["deployments"][ident]["state"])

        killed_at = time.time()
        fleet.get("c1").kill()  # out of rotation at its die event, then healed by the watchdog
        wait_for(lambda: state(ids[1]) != "in", 15, "c1 out in Redis")
        assert time.time() - killed_at < 5
        wait_for(lambda: state(ids[1]) == "in", 60, "c1 healed and back in Redis")

        fleet.get("c1").stop(timeout=2)  # an operator's stop: out, and left stopped
        wait_for(lambda: state(ids[1]) != "in", 15, "c1 out in Redis after docker stop")
        time.sleep(1.5)  # the proxy reads the fleet once a second
        during = ask(port, 12)
        # Not one attempt on it: LiteLLM alone would try it first for some and retry them elsewhere.
        assert all(a["status"] == 200 and a["id"] == ids[0] and a["retries"] == 0 for a in during), during
        fleet.get("c1").start()
        wait_for(lambda: state(ids[1]) == "in", 30, "c1 back in Redis after docker start")
        wait_for(lambda: any(a["id"] == ids[1] for a in ask(port, 4)), 20, "c1 serving through the proxy again")

        redis_server.stop()  # fail open: the proxy routes as LiteLLM alone would, every request served
        time.sleep(6)
        alone = ask(port, 12)
        assert all(a["status"] == 200 for a in alone) and {a["id"] for a in alone} == set(ids), alone
        assert "routing as LiteLLM alone would" in (tmp_path / "proxy.log").read_text()
        wait_for(lambda: "cluster-down" in {e["kind"] for e in daemon.entries()}, 30, "the daemon's cluster-down")
    finally:
        litellm_proxy.stop(pid)
