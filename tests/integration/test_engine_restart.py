"""The engine restarted under a running watchdog: no crash, no false restart, healing resumes.

This test stops and starts the Docker engine, so it runs only against an engine
that scripts/ensure-docker.sh started itself (as `make test` and CI do).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.conftest import new_daemon
from tests.integration.harness import ROOT, Daemon, Fleet, wait_for

ENGINE_DIR = Path(os.environ.get("GPU_WATCHDOG_ENGINE_DIR", "/var/tmp/gpu-watchdog-engine"))

pytestmark = [pytest.mark.engine, pytest.mark.engine_restart]


def engine_pid() -> int | None:
    try:
        return int((ENGINE_DIR / "dockerd.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def sent(daemon: Daemon, name: str) -> list[object]:
    """Restarts that reached the engine."""
    return [a for a in daemon.restarts(name) if not (a.outcome or "").startswith("not sent")]


@pytest.fixture
def own_engine() -> int:
    pid = engine_pid()
    ours = (ENGINE_DIR / "owned").exists() and pid is not None and Path(f"/proc/{pid}").exists()
    if not ours:
        message = "the engine was not started by scripts/ensure-docker.sh; this test restarts only an engine it owns"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI always starts its own engine: never hide this test there
        pytest.skip(message)
    assert pid is not None
    return pid


def test_engine_restart_under_the_watchdog(
    own_engine: int, fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str
) -> None:
    fleet.start("policy", restart_policy="unless-stopped")
    fleet.start("plain")
    fleet.wait_ready("policy")
    fleet.wait_ready("plain")
    daemon = new_daemon(daemons, tmp_path, prefix).start()
    policy, plain = fleet.get("policy").name, fleet.get("plain").name

    os.kill(own_engine, signal.SIGTERM)
    wait_for(lambda: not Path(f"/proc/{own_engine}").exists(), 60, "the engine to stop")
    wait_for(lambda: daemon.entries(kind="engine-down"), 15, "the watchdog to notice the engine is down")
    time.sleep(2)
    assert daemon.alive(), daemon.log()[-3000:]
    subprocess.run(["bash", str(ROOT / "scripts" / "ensure-docker.sh")], check=True, timeout=120)
    wait_for(lambda: daemon.entries(kind="engine-up"), 30, "the watchdog to reconnect")
    wait_for(
        lambda: fleet.state("policy")["Status"] == "running", 30, "the engine to restore its unless-stopped container"
    )
    time.sleep(5)  # several cycles after the engine came back

    assert daemon.alive()
    # A restart call made while the engine was going away never reached it ("not sent"): not a restart, and not
    # counted by the breaker. None may have reached the engine.
    assert sent(daemon, policy) == [], "the engine restored it: the watchdog must not restart it too"
    assert sent(daemon, plain) == [], "stopped by the engine's shutdown (SIGTERM, exit 0): not a failure"
    assert daemon.entries(kind="give-up") == []
    assert fleet.state("plain")["Status"] == "exited"
    assert daemon.entries(kind="engine-down")[0]["reason"].startswith("Docker engine unreachable")

    # healing resumes: a kill after the outage is restarted
    fleet.wait_ready("policy")
    fleet.get("policy").kill()
    wait_for(lambda: [a for a in daemon.restarts(policy) if a.outcome == "ok"], 20, "healing after the engine restart")
