"""`docker compose up` of the shipped watchdog service (compose/docker-compose.yml) on the real engine.

This machine has no GPU, so a test override drops the NVIDIA device reservation (nothing else) and adds
one stand-in on the project's network with no published port: the watchdog must probe it on its
container IP, as it does in a real compose deployment.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import docker
import pytest

from tests.integration.harness import ROOT, wait_for

pytestmark = pytest.mark.engine
FILES = [
    "-f",
    str(ROOT / "compose" / "docker-compose.yml"),
    "-f",
    str(ROOT / "tests/integration/compose/nogpu.override.yml"),
]


@pytest.fixture
def project(client: docker.DockerClient) -> Iterator[list[str]]:
    subprocess.run(["bash", str(ROOT / "scripts" / "build-images.sh")], check=True, capture_output=True)
    name = f"gwtcompose{uuid.uuid4().hex[:6]}"
    base = ["docker", "compose", "-p", name, *FILES]
    env = {**os.environ, "DOCKER_GID": str(os.stat("/var/run/docker.sock").st_gid)}
    up = subprocess.run([*base, "up", "-d"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    try:
        assert up.returncode == 0, up.stderr
        yield [name]
    finally:
        subprocess.run([*base, "down", "-v", "--timeout", "2"], capture_output=True, env=env, cwd=ROOT, timeout=120)


def container(client: docker.DockerClient, project: str, service: str) -> Any:
    return client.containers.get(f"{project}-{service}-1")


def test_compose_watchdog_heals_a_fleet_on_its_network(client: docker.DockerClient, project: list[str]) -> None:
    name = project[0]
    watchdog = container(client, name, "gpu-watchdog")

    def health() -> str:
        watchdog.reload()
        return str(watchdog.attrs["State"].get("Health", {}).get("Status"))

    # The image's HEALTHCHECK runs every 30 s after a 30 s start period: the loop's own heartbeat.
    wait_for(lambda: "healing loop running: 1 managed container(s)" in watchdog.logs().decode(), 30, "first cycle")
    target = container(client, name, "llm-0")

    def status() -> str:
        done = subprocess.run(
            ["docker", "exec", watchdog.name, "python3", "-m", "watchdog", "status"], capture_output=True, text=True
        )
        return done.stdout + done.stderr

    # Probed on its container IP (no published port), as in a real compose deployment.
    wait_for(lambda: "endpoint ok" in status(), 30, "llm-0's endpoint probed ok")
    before = target.attrs["State"]["StartedAt"]
    target.kill()
    wait_for(
        lambda: (
            (target.reload() or True)
            and target.attrs["State"]["Running"]
            and target.attrs["State"]["StartedAt"] != before
        ),
        30,
        "llm-0 restarted by the compose watchdog",
    )
    logs = watchdog.logs().decode()
    assert f"restarting {name}-llm-0-1" in logs
    assert "Warning" not in logs  # every extension module of the image loads
    wait_for(lambda: "endpoint ok" in status(), 30, "llm-0 probed ok again")
    assert watchdog.attrs["Config"]["User"] == "10001:0" and watchdog.attrs["HostConfig"]["PidMode"] == "host"
    assert health() in ("starting", "healthy")
