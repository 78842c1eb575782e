"""Fixtures for the integration suite: the engine, the images, a fleet, a daemon.

`make test` installs and starts the engine and builds the images first; if
they are missing here the suite fails loudly (never skips), naming the fix.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.fake_nvml.harness import fake_nvml, fake_nvml_lib
from tests.integration.harness import ROOT, STANDIN_IMAGE, Daemon, Fleet

__all__ = ["fake_nvml", "fake_nvml_lib"]


@pytest.fixture(scope="session")
def client() -> Iterator[docker.DockerClient]:
    try:
        engine = docker.from_env(timeout=60)
        engine.ping()
    except Exception as exc:  # any failure here means the suite cannot run at all
        pytest.fail(
            f"no Docker engine answers ({exc}); run `make test` or scripts/ensure-docker.sh first", pytrace=False
        )
    try:
        engine.images.get(STANDIN_IMAGE)
    except docker.errors.ImageNotFound:
        subprocess.run(["bash", str(ROOT / "scripts" / "build-images.sh")], check=True)
    yield engine
    engine.close()


@pytest.fixture
def prefix() -> str:
    """A label prefix of this test's own, so no two tests ever manage each other's containers."""
    return f"gwt{uuid.uuid4().hex[:6]}"


@pytest.fixture
def fleet(client: docker.DockerClient, prefix: str) -> Iterator[Fleet]:
    group = Fleet(client, prefix)
    yield group
    group.remove_all()


@pytest.fixture
def daemons(tmp_path: Path, prefix: str, request: pytest.FixtureRequest) -> Iterator[list[Daemon]]:
    """Daemons a test starts; all are stopped after it, and their logs shown if it failed."""
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.stop()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for daemon in started:
            print(f"---- daemon log {daemon.log_path} ----\n{daemon.log()[-20000:]}")


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def new_daemon(daemons: list[Daemon], tmp_path: Path, prefix: str, **overrides: object) -> Daemon:
    daemon = Daemon(tmp_path, prefix, **overrides)
    daemons.append(daemon)
    return daemon
