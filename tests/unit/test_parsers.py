"""The pure edges of the adapters: engine timestamps, inspect documents, /proc, events, HTTP codes, status."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from watchdog.containers.engine import own_container_ids, parse_docker_time, snapshot_from_inspect
from watchdog.containers.events import parse_event
from watchdog.containers.http_probe import classify
from watchdog.model import ContainerSpec, ContainerState, Health, ProbeStatus
from watchdog.ops.status import render_table

P = "gpu-watchdog"
CID = "3f4e8a1c" * 8
T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC).timestamp()

INSPECT: dict[str, Any] = {
    "Id": CID,
    "Created": "2024-05-01T11:59:58.000000000Z",
    "Name": "/llm-chat",
    "RestartCount": 0,
    "State": {
        "Status": "running",
        "Running": True,
        "Paused": False,
        "Restarting": False,
        "OOMKilled": False,
        "Dead": False,
        "Pid": 4242,
        "ExitCode": 0,
        "Error": "",
        "StartedAt": "2024-05-01T12:00:00.250000000Z",
        "FinishedAt": "0001-01-01T00:00:00Z",
        "Health": {"Status": "healthy", "FailingStreak": 0, "Log": []},
    },
    "Config": {
        "Hostname": CID[:12],
        "Image": "ghcr.io/ggerganov/llama.cpp:server-cuda",
        "Env": ["PATH=/usr/local/bin:/usr/bin", "NVIDIA_VISIBLE_DEVICES=3"],
        "Labels": {
            "com.docker.compose.project": "fleet",
            "com.docker.compose.service": "chat",
            f"{P}.enable": "true",
            f"{P}.priority": "10",
            f"{P}.health-port": "8080",
            f"{P}.model-size": "4g",
        },
        "Healthcheck": {
            "Test": ["CMD", "curl", "-f", "http://localhost:8080/health"],
            "Interval": 10_000_000_000,
            "StartPeriod": 90_000_000_000,
        },
        "StopTimeout": 30,
    },
    "HostConfig": {
        "Memory": 8 * 1024**3,
        "NetworkMode": "fleet_default",
        "RestartPolicy": {"Name": "unless-stopped", "MaximumRetryCount": 0},
        "DeviceRequests": [
            {"Driver": "nvidia", "Count": 0, "DeviceIDs": ["0", "1"], "Capabilities": [["gpu"]], "Options": {}}
        ],
    },
    "NetworkSettings": {
        "Ports": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "32768"}]},
        "Networks": {"fleet_default": {"IPAddress": "172.18.0.5", "Gateway": "172.18.0.1"}},
    },
}


def inspect(**changes: Any) -> dict[str, Any]:
    """A deep copy of INSPECT; changes are `Section__Key=value` (None deletes)."""
    doc = copy.deepcopy(INSPECT)
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = doc
        for part in parents:
            node = node[part]
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return doc


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T12:00:00Z", T0),
        ("2024-05-01T12:00:00.123456789Z", T0 + 0.123456789),
        ("2024-05-01T12:00:00.5+00:00", T0 + 0.5),
        ("2024-05-01T14:00:00+02:00", T0),
        ("0001-01-01T00:00:00Z", None),
        ("", None),
        (None, None),
        ("yesterday", None),
    ],
)
def test_parse_docker_time(text: str | None, expected: float | None) -> None:
    assert parse_docker_time(text) == (pytest.approx(expected) if expected is not None else None)


def test_snapshot_from_realistic_inspect() -> None:
    snap = snapshot_from_inspect(INSPECT, P)
    assert snap.id == CID and snap.name == "llm-chat"
    assert snap.state == ContainerState.RUNNING and snap.health == Health.HEALTHY
    assert snap.spec == ContainerSpec(priority=10, health_port=8080, model_size=4 * 1024**3)
    assert snap.managed and snap.problems == () and snap.warnings == ()
    assert snap.endpoint == "http://127.0.0.1:32768/health"
    assert snap.gpus == ("0", "1")
    assert snap.healthcheck_start_period == 90.0
    assert snap.started_at == pytest.approx(T0 + 0.25)
    assert snap.finished_at is None
    assert (snap.memory_limit, snap.stop_timeout, snap.restart_policy) == (8 * 1024**3, 30.0, "unless-stopped")
    assert (snap.compose_project, snap.compose_service) == ("fleet", "chat")
    assert snap.is_self is False


@pytest.mark.parametrize("host_ip", ["0.0.0.0", "::", ""])
def test_wildcard_host_ip_is_probed_on_localhost(host_ip: str) -> None:
    doc = inspect(NetworkSettings__Ports={"8080/tcp": [{"HostIp": host_ip, "HostPort": "40001"}]})
    assert snapshot_from_inspect(doc, P).endpoint == "http://127.0.0.1:40001/health"


def test_without_a_published_port_the_container_ip_is_probed() -> None:
    doc = inspect(NetworkSettings__Ports={"8080/tcp": None})
    assert snapshot_from_inspect(doc, P).endpoint == "http://172.18.0.5:8080/health"


def test_health_url_label_wins_over_ports() -> None:
    doc = inspect(Config__Labels={**INSPECT["Config"]["Labels"], f"{P}.health-url": "http://gw.local:9000/ready"})
    assert snapshot_from_inspect(doc, P).endpoint == "http://gw.local:9000/ready"


def test_gpu_label_wins_and_env_is_the_fallback() -> None:
    labelled = inspect(Config__Labels={**INSPECT["Config"]["Labels"], f"{P}.gpu": "7"})
    assert snapshot_from_inspect(labelled, P).gpus == ("7",)
    assert snapshot_from_inspect(inspect(HostConfig__DeviceRequests=None), P).gpus == ("3",)


def test_exited_container_with_bad_label_is_misconfigured_with_its_exit() -> None:
    doc = inspect(
        State={
            "Status": "exited",
            "ExitCode": 137,
            "OOMKilled": True,
            "StartedAt": "2024-05-01T12:00:00Z",
            "FinishedAt": "2024-05-01T12:05:00Z",
        },
        Config__Labels={f"{P}.enable": "true", f"{P}.priority": "high", f"{P}.priorty": "1"},
    )
    snap = snapshot_from_inspect(doc, P, is_self=True)
    assert snap.spec is None and snap.endpoint is None
    assert len(snap.problems) == 1 and f"{P}.priority" in snap.problems[0]
    assert len(snap.warnings) == 1 and f"{P}.priorty" in snap.warnings[0]
    assert (snap.state, snap.exit_code, snap.oom_killed, snap.is_self) == (ContainerState.EXITED, 137, True, True)
    assert snap.finished_at == pytest.approx(T0 + 300.0)
    assert snap.health == Health.NONE


def test_own_container_ids_from_cgroup_v1_and_mountinfo(tmp_path: Path) -> None:
    v1_id, v2_id = "a" * 64, "0123456789abcdef" * 4
    (tmp_path / "cgroup").write_text(f"13:cpuset:/\n12:memory:/docker/{v1_id}\n0::/\n")
    (tmp_path / "mountinfo").write_text(
        "22 1 0:21 / /proc rw,nosuid - proc proc rw\n"
        f"611 590 259:2 /var/lib/docker/containers/{v2_id}/hostname /etc/hostname rw - ext4 /dev/nvme0n1p2 rw\n"
        f"700 590 0:50 / /data rw - ext4 /dev/sdb {'b' * 64}\n"  # a 64-hex string in an unrelated line
    )
    assert own_container_ids(tmp_path) == frozenset({v1_id, v2_id})


def test_own_container_ids_outside_a_container_is_empty(tmp_path: Path) -> None:
    (tmp_path / "cgroup").write_text("0::/user.slice/user-1000.slice/session-2.scope\n")
    assert own_container_ids(tmp_path) == frozenset()
    assert own_container_ids(tmp_path / "missing") == frozenset()


def test_parse_event_reads_a_die_event() -> None:
    raw = {
        "status": "die",
        "id": CID,
        "from": "llama:latest",
        "Type": "container",
        "Action": "die",
        "Actor": {"ID": CID, "Attributes": {"exitCode": "137", "image": "llama:latest", "name": "llm-chat"}},
        "scope": "local",
        "time": 1714564800,
        "timeNano": 1714564800123456789,
    }
    event = parse_event(raw)
    assert event is not None
    assert (event.container_id, event.action, event.name, event.exit_code, event.signal) == (
        CID,
        "die",
        "llm-chat",
        137,
        None,
    )
    assert event.at == pytest.approx(1714564800.123456789)


def test_parse_event_reads_kill_signal_and_normalises_health_status() -> None:
    kill = {"Type": "container", "Action": "kill", "Actor": {"ID": CID, "Attributes": {"signal": "15"}}, "time": 5}
    event = parse_event(kill)
    assert event is not None and (event.action, event.signal, event.at) == ("kill", 15, 5.0)
    health = {"Type": "container", "Action": "health_status: unhealthy", "Actor": {"ID": CID}, "timeNano": 10**9}
    event = parse_event(health)
    assert event is not None and event.action == "health_status" and event.at == 1.0


def test_parse_event_ignores_non_container_events() -> None:
    assert parse_event({"Type": "network", "Action": "connect", "Actor": {"ID": "n1"}, "time": 1}) is None


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (200, ProbeStatus.OK),
        (204, ProbeStatus.OK),
        (503, ProbeStatus.LOADING),
        (500, ProbeStatus.FAILED),
        (404, ProbeStatus.FAILED),
        (301, ProbeStatus.FAILED),
        (502, ProbeStatus.FAILED),
    ],
)
def test_classify_http_status(code: int, status: ProbeStatus) -> None:
    got, detail = classify(code)
    assert got == status
    assert str(code) in detail


def status_row(name: str, **overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "name": name,
        "id": "0123456789ab",
        "managed": True,
        "self": False,
        "misconfigured": [],
        "warnings": [],
        "priority": 5,
        "gpus": ["0"],
        "role": None,
        "model": None,
        "state": "running",
        "health": "healthy",
        "endpoint": None,
        "endpoint_probe": None,
        "fault_now": None,
        "decision": None,
        "notes": [],
        "stopped_on_purpose": False,
        "last_fault": None,
        "restarts_last_hour": 0,
        "breaker": "closed",
        "breaker_reason": "no recent restarts",
    }
    row.update(overrides)
    return row


def test_render_table_shows_misconfigured_rows_and_their_problems() -> None:
    problem = "label gpu-watchdog.priority='high': expected an integer"
    doc = {
        "now": 1000.0,
        "daemon": {"running": False, "pid": None, "dry_run": None, "last_heartbeat": 880.0},
        "journal": "/state/journal.sqlite3",
        "containers": [
            status_row("chat", endpoint_probe={"status": "failed", "failing_streak": 2}),
            status_row("broken", managed=False, misconfigured=[problem], state="exited"),
        ],
    }
    text = render_table(doc)
    lines = text.splitlines()
    assert lines[0] == "daemon: not running (last heartbeat 2m ago)"
    assert lines[1] == "journal: /state/journal.sqlite3"
    broken = next(line for line in lines if line.startswith("broken"))
    assert broken.split() == ["broken", "-", "-", "exited", "-", "-", "-", "MISCONFIGURED"]
    chat = next(line for line in lines if line.startswith("chat"))
    assert "healthy, endpoint failed x2" in chat
    assert f"  broken: {problem}" in lines


def test_render_table_with_no_containers_says_so() -> None:
    doc = {
        "now": 0.0,
        "daemon": {"running": True, "pid": 42, "dry_run": True, "last_heartbeat": None},
        "journal": "j",
        "containers": [],
    }
    text = render_table(doc)
    assert text.splitlines()[0] == "daemon: running (pid 42, DRY-RUN)"
    assert "(no container carries the enable label)" in text
