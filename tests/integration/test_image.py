"""The watchdog's image (compose/Dockerfile), built offline by scripts/build-images.sh, run on the real engine.

Non-root, healthy by its own heartbeat, and it heals a killed container through the mounted socket.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml

from tests.integration.harness import FAST_CONFIG, ROOT, RUN_ID, RUN_LABEL, Fleet, wait_for

pytestmark = pytest.mark.engine
WATCHDOG_IMAGE = "gpu-watchdog/watchdog:dev"
SOCKET = "/var/run/docker.sock"


@pytest.fixture(scope="module")
def image(client: docker.DockerClient) -> Any:
    subprocess.run(["bash", str(ROOT / "scripts" / "build-images.sh")], check=True)  # a no-op when up to date
    return client.images.get(WATCHDOG_IMAGE)


@pytest.fixture
def watchdog_container(client: docker.DockerClient, tmp_path: Path, prefix: str, image: Any) -> Iterator[Any]:
    config = {**FAST_CONFIG, "label_prefix": prefix, "log_format": "text"}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    os.chmod(tmp_path / "config.yaml", 0o644)
    container = client.containers.run(
        WATCHDOG_IMAGE,
        detach=True,
        name=f"gwt-{RUN_ID}-{prefix}-watchdog",
        labels={RUN_LABEL: RUN_ID},
        group_add=[str(os.stat(SOCKET).st_gid)],
        volumes={
            SOCKET: {"bind": SOCKET, "mode": "rw"},
            str(tmp_path / "config.yaml"): {"bind": "/etc/gpu-watchdog/config.yaml", "mode": "ro"},
        },
        environment={"GPU_WATCHDOG_CONFIG": "/etc/gpu-watchdog/config.yaml"},
        healthcheck={"interval": 1_000_000_000, "start_period": 5_000_000_000, "retries": 3},
    )
    yield container
    container.remove(force=True)


def test_image_is_small_non_root_with_a_heartbeat_healthcheck(image: Any) -> None:
    config = image.attrs["Config"]
    assert config["User"] == "10001:0"
    assert config["Healthcheck"]["Test"][-1] == "healthcheck"
    assert image.attrs["Size"] < 150 * 1000**2, image.attrs["Size"]


def test_containerised_watchdog_is_healthy_and_heals(
    fleet: Fleet, client: docker.DockerClient, watchdog_container: Any
) -> None:
    target = fleet.start("victim")
    fleet.wait_ready("victim")

    def health() -> str:
        watchdog_container.reload()
        return str(watchdog_container.attrs["State"].get("Health", {}).get("Status"))

    wait_for(lambda: health() == "healthy", 30, "the watchdog container to be healthy")
    before = fleet.state("victim")["StartedAt"]
    target.kill()
    wait_for(
        lambda: fleet.state("victim")["Running"] and fleet.state("victim")["StartedAt"] != before,
        20,
        "the killed container restarted by the containerised watchdog",
    )
    logs = watchdog_container.logs().decode()
    assert "restarting" in logs and target.name in logs
    assert "host PIDs visible" not in logs  # no `pid: host`: GPU PID mapping must be off, not guessed
    watchdog_container.reload()
    assert watchdog_container.attrs["RestartCount"] == 0 and health() == "healthy"
