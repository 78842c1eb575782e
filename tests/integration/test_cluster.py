"""Several hosts, one router view on a real Redis (issue 16, first steps).

Each host's publisher writes its view; the proxy side's ClusterView reads the fleet in one round trip
and the rotation callback applies it as it applies the file. Hostile and stale keys are ignored; with
Redis gone the proxy routes as LiteLLM alone would and the watchdog says so once, and publishes
again when Redis is back. The password comes from the environment and is never shown.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml

from tests.integration.redis_server import RedisServer
from tests.unit.test_router import load_callback
from watchdog.cluster.fleet_view import Rejected, parse_host
from watchdog.cluster.publisher import ClusterPublisher
from watchdog.config import ConfigError, parse_config
from watchdog.containers.own_actions import OwnActionWindows
from watchdog.journal import Journal
from watchdog.router.litellm_config import RouterDeployment
from watchdog.subsystem import Services

PASSWORD = "s3cret-for-the-test-only"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


def publisher(tmp_path: Path, url: str, host: str, engine: Any = None, **cluster: Any) -> ClusterPublisher:
    config = parse_config({"litellm": {"enabled": True}, "cluster": {"redis_url": url, "host": host, **cluster}})
    journal = Journal.in_dir(tmp_path / f"state-{host}")
    client = engine if engine is not None else docker.from_env(timeout=5)
    services = Services(journal, client, None, OwnActionWindows(), time.time, lambda: None)  # type: ignore[arg-type]
    return ClusterPublisher(config, services)


def deployments(*names: str) -> list[RouterDeployment]:
    return [
        RouterDeployment(f"{n}.gpu{i}", "qwen", n, f"http://127.0.0.1:{18000 + i}/v1", (str(i),), 30)
        for i, n in enumerate(names)
    ]


def rotation_view(**rows: tuple[bool, str, float]) -> dict[str, dict[str, Any]]:
    return {
        ident.replace("_", "-").replace("-gpu", ".gpu"): {
            "container": ident.split("_gpu")[0].replace("_", "-"),
            "in": i,
            "reason": r,
            "share": s,
        }
        for ident, (i, r, s) in rows.items()
    }


def candidates(*ids: str) -> list[dict[str, Any]]:
    return [{"model_name": "qwen", "model_info": {"id": i}, "litellm_params": {"weight": 30}} for i in ids]


def test_two_hosts_publish_and_the_proxy_applies_the_fleet_view(tmp_path: Path, redis_server: RedisServer) -> None:
    a = publisher(tmp_path, redis_server.url, "gpu-a")
    b = publisher(tmp_path, redis_server.url, "gpu-b")
    a.offer(
        rotation_view(llm_0_gpu0=(True, "ready", 1.0), llm_1_gpu1=(True, "ready", 0.5)),
        deployments("llm-0", "llm-1"),
        [],
    )
    b.offer(rotation_view(llm_0_gpu0=(False, "stopped: killed", 1.0)), deployments("llm-0"), [])
    assert a.publish_now() and b.publish_now()
    raw = redis_server.client().get("gpu-watchdog:host:gpu-b")
    assert raw is not None and 0 < redis_server.client().ttl("gpu-watchdog:host:gpu-b") <= 15
    assert parse_host("gpu-watchdog:host:gpu-b", raw, prefix="gpu-watchdog", now=time.time()).engine == "up"

    cb = load_callback()
    view = cb.cluster_view.ClusterView(redis_server.url)
    view.refresh()
    assert view.reads == 1
    filt = cb.RotationFilter(cluster=view)
    pool = candidates("gpu-a/llm-0.gpu0", "gpu-a/llm-1.gpu1", "gpu-b/llm-0.gpu0", "elsewhere/x")
    picked = [filt.select(pool, "qwen")[0]["model_info"]["id"] for _ in range(300)]
    assert "gpu-b/llm-0.gpu0" not in picked  # out on host B
    assert picked.count("gpu-a/llm-1.gpu1") * 2 == picked.count("gpu-a/llm-0.gpu0")  # its share 0.5
    assert picked.count("elsewhere/x") == 120  # nobody publishes it: routed at its full weight (1 : 0.5 : 1)


@pytest.mark.parametrize(
    ("key", "body", "why"),
    [
        ("gpu-watchdog:host:evil", {"host": "gpu-a"}, "names host"),  # speaks for another host
        ("gpu-watchdog:host:evil", {"deployments": {"gpu-a/llm-0.gpu0": {"state": "out", "reason": "x"}}}, "under"),
        ("gpu-watchdog:host:evil", {"version": 2}, "version"),
        ("gpu-watchdog:host:evil", {"heartbeat": time.time() + 3600}, "future"),
        ("gpu-watchdog:host:evil", {"deployments": {"evil/x": {"state": "in", "share": 7}}}, "share"),
        ("gpu-watchdog:host:evil", {"deployments": {"evil/x": {"state": "gone"}}}, "state"),
        ("gpu-watchdog:host:evil", "garbage{", "JSON"),
    ],
)
def test_hostile_or_stale_keys_are_ignored_never_trusted(
    tmp_path: Path, redis_server: RedisServer, key: str, body: Any, why: str
) -> None:
    a = publisher(tmp_path, redis_server.url, "gpu-a")
    a.offer(rotation_view(llm_0_gpu0=(True, "ready", 1.0)), deployments("llm-0"), [])
    assert a.publish_now(), a.view()
    good = {"version": 1, "host": "evil", "heartbeat": time.time(), "ttl": 15, "engine": "up", "deployments": {}}
    text = body if isinstance(body, str) else json.dumps({**good, **body})
    r = redis_server.client()
    r.set(key, text)
    r.zadd("gpu-watchdog:hosts", {"evil": time.time()})
    r.set(
        "other-fleet:host:gpu-a",
        json.dumps({**good, "host": "gpu-a", "deployments": {"gpu-a/llm-0.gpu0": {"state": "out", "reason": "x"}}}),
    )
    cb = load_callback()
    view = cb.cluster_view.ClusterView(redis_server.url)
    view.refresh()
    filt = cb.RotationFilter(cluster=view)
    pool = candidates("gpu-a/llm-0.gpu0", "gpu-a/llm-1.gpu1")
    assert filt.select(pool, "qwen") == pool  # neither the hostile host nor another fleet's key took one out
    assert why in view._ignored["evil"]
    with pytest.raises(Rejected):  # the watchdog's own reading (fleet status) refuses it too
        parse_host(key, text, prefix="gpu-watchdog", now=time.time())


def test_redis_gone_fails_open_and_comes_back(tmp_path: Path, redis_server: RedisServer) -> None:
    a = publisher(tmp_path, redis_server.url, "gpu-a")
    a.offer(rotation_view(llm_0_gpu0=(False, "endpoint-failing: timeout", 1.0)), deployments("llm-0", "llm-1"), [])
    assert a.publish_now()
    cb = load_callback()
    view = cb.cluster_view.ClusterView(redis_server.url)
    view.refresh()
    filt = cb.RotationFilter(cluster=view)
    pool = candidates("gpu-a/llm-0.gpu0", "gpu-a/llm-1.gpu1")
    assert [d["model_info"]["id"] for d in filt.select(pool, "qwen")] == ["gpu-a/llm-1.gpu1"]

    redis_server.stop()
    assert not a.publish_now() and not a.publish_now()
    down = a.journal.entries(kind="cluster-down")
    assert len(down) == 1 and "healing goes on locally" in down[0]["reason"]
    assert a.view()["up"] is False  # type: ignore[index]
    view.refresh()
    assert filt.select(pool, "qwen") != pool  # the last good view holds for a few seconds
    text, why = view.text(time.time() + cb.cluster_view.STALE + 1)
    assert text is None and "old" in why  # then: routed as LiteLLM alone would

    redis_server.start()
    assert a.publish_now()
    assert len(a.journal.entries(kind="cluster-up")) == 1
    assert redis_server.client().get("gpu-watchdog:host:gpu-a") is not None  # published again in full


def test_a_down_engine_takes_the_hosts_deployments_out(tmp_path: Path, redis_server: RedisServer) -> None:
    gone = docker.DockerClient(base_url=f"unix://{tmp_path}/no-engine.sock", timeout=1, version="1.41")
    b = publisher(tmp_path, redis_server.url, "gpu-b", engine=gone)
    b.offer(rotation_view(llm_0_gpu0=(True, "ready", 1.0)), deployments("llm-0"), [])
    assert b.publish_now()
    cb = load_callback()
    view = cb.cluster_view.ClusterView(redis_server.url)
    view.refresh()
    text, _ = view.text(time.time())
    assert "gpu-b/llm-0.gpu0" in cb.parse_rotation(text)[0].out
    assert "host gpu-b's Docker engine is down" in json.loads(text)["out"]["gpu-b/llm-0.gpu0"]


def test_the_password_comes_from_the_environment_and_is_never_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = RedisServer(tmp_path, password=PASSWORD).start()
    try:
        monkeypatch.setenv("FLEET_REDIS_PASSWORD", "wrong-one")
        a = publisher(tmp_path, server.url, "gpu-a", password_env="FLEET_REDIS_PASSWORD")
        a.offer(rotation_view(llm_0_gpu0=(True, "ready", 1.0)), deployments("llm-0"), [])
        assert not a.publish_now()
        said = json.dumps(a.view()) + json.dumps(a.journal.entries())
        assert "authentication failed" in said and "wrong-one" not in said and PASSWORD not in said
        monkeypatch.setenv("FLEET_REDIS_PASSWORD", PASSWORD)
        a._redis = None
        assert a.publish_now()
        assert server.client().get("gpu-watchdog:host:gpu-a") is not None
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("section", "culprit"),
    [
        ({"redis_url": "redis://:pw@10.0.0.5:6379/0"}, "password in it"),
        ({"redis_url": "http://10.0.0.5"}, "redis://"),
        ({"redis_url": "redis://10.0.0.5:6379/0", "host": "a b"}, "cluster.host"),
        ({"redis_url": "redis://10.0.0.5:6379/0", "ttl": 1}, "cluster.ttl"),
        ({"redis_url": "redis://10.0.0.5:6379/0", "key_prefix": ""}, "cluster.key_prefix"),
        ({"redis_url": "redis://10.0.0.5:6379/0", "password_env": "not a name"}, "cluster.password_env"),
        ({"redis": "x"}, "cluster.redis"),
    ],
)
def test_bad_cluster_settings_name_the_key_and_the_fix(section: dict[str, Any], culprit: str) -> None:
    with pytest.raises(ConfigError, match=culprit.replace(".", r"\.")):
        parse_config({"litellm": {"enabled": True}, "cluster": section})
    with pytest.raises(ConfigError, match=r"litellm\.enabled"):
        parse_config({"cluster": {"redis_url": "redis://10.0.0.5:6379/0"}})


def fleet_cli(tmp_path: Path, url: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    config: dict[str, Any] = {"litellm": {"enabled": True}, "state_dir": str(tmp_path / "cli-state")}
    if url:
        config["cluster"] = {"redis_url": url, "host": "gpu-a"}
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run(
        [sys.executable, "-m", "watchdog", "--config", str(path), "fleet", "status", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_fleet_status_shows_every_host_from_redis_alone(tmp_path: Path, redis_server: RedisServer) -> None:
    a = publisher(tmp_path, redis_server.url, "gpu-a")
    a.offer(
        rotation_view(llm_0_gpu0=(True, "ready", 1.0), llm_1_gpu1=(False, "stopped: killed", 1.0)),
        deployments("llm-0", "llm-1"),
        [{"index": 0, "uuid": "GPU-0", "health_score": {"score": 0.5}}],
    )
    assert a.publish_now()
    r = redis_server.client()
    r.zadd("gpu-watchdog:hosts", {"gpu-c": time.time() - 600})  # published once, silent since
    r.set("gpu-watchdog:host:evil", "garbage")
    r.zadd("gpu-watchdog:hosts", {"evil": time.time()})
    done = fleet_cli(tmp_path, redis_server.url, "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    (host,) = doc["hosts"]
    assert host["host"] == "gpu-a" and host["in"] == 1 and host["deployments"] == 2
    assert host["out"] == {"gpu-a/llm-1.gpu1": "stopped: killed"} and host["gpus"][0]["score"] == 0.5
    assert set(doc["silent"]) == {"gpu-c", "evil"} and "not JSON" in doc["ignored"]["gpu-watchdog:host:evil"]
    text = fleet_cli(tmp_path, redis_server.url).stdout
    assert "gpu-a: heartbeat" in text and "1/2 deployment(s) in rotation, GPUs 0:0.50" in text
    assert "gpu-c: SILENT, last heartbeat 10m ago" in text

    redis_server.stop()
    down = fleet_cli(tmp_path, redis_server.url)
    assert down.returncode == 1 and down.stderr.count("\n") == 1 and "unreachable" in down.stderr
    off = fleet_cli(tmp_path, None)
    assert off.returncode == 2 and "cluster.redis_url is not set" in off.stderr


def test_a_host_gone_silent_is_alerted_once_by_the_others_and_its_return_said(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    a = publisher(tmp_path, redis_server.url, "gpu-a", ttl=10)
    b = publisher(tmp_path, redis_server.url, "gpu-b", ttl=10)
    for host in (a, b):
        host.offer(rotation_view(llm_0_gpu0=(True, "ready", 1.0)), deployments("llm-0"), [])
        assert host.publish_now()
    assert a.journal.entries(kind="alert") == []
    # gpu-b stops publishing (its machine is gone): its heartbeat ages past 2 x TTL.
    redis_server.client().zadd("gpu-watchdog:hosts", {"gpu-b": time.time() - 30})
    assert a.publish_now() and a.publish_now()
    alerts = a.journal.entries(kind="alert")
    assert len(alerts) == 1 and alerts[0]["fault"] == "host-silent" and "host gpu-b" in alerts[0]["reason"]
    assert a.view()["silent_hosts"].keys() == {"gpu-b"}  # type: ignore[index]
    assert b.publish_now()  # back
    assert a.publish_now()
    assert len(a.journal.entries(kind="host-back")) == 1 and a.view()["silent_hosts"] == {}  # type: ignore[index]
    redis_server.client().zadd("gpu-watchdog:hosts", {"gpu-old": time.time() - 2 * 86400})  # retired long ago
    assert a.publish_now() and len(a.journal.entries(kind="alert")) == 1
