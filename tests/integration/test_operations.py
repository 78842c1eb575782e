"""Operator-facing behaviour on a real engine: one-shot runs, config reload, the RAM preflight."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import new_daemon
from tests.integration.harness import Daemon, Fleet, wait_for

pytestmark = pytest.mark.engine


def test_run_once_heals_a_killed_container_and_exits(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str
) -> None:
    fleet.start("a")
    fleet.wait_ready("a")
    name = fleet.get("a").name
    fleet.get("a").kill()
    once = new_daemon(daemons, tmp_path, prefix).cli("run", "--once")
    assert once.returncode == 0, once.stderr
    assert f"{name}: restart:" in once.stdout
    assert fleet.state("a")["Status"] == "running"
    assert [a.outcome for a in daemons[0].restarts(name)] == ["ok"]


def test_sighup_reloads_the_config_and_keeps_it_when_invalid(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str
) -> None:
    fleet.start("a")
    fleet.wait_ready("a")
    daemon = new_daemon(daemons, tmp_path, prefix).start()
    assert daemon.proc is not None
    good = yaml.safe_load(daemon.config_path.read_text())

    daemon.config_path.write_text(yaml.safe_dump({**good, "poll_interval": "fast"}))
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "config not reloaded" in daemon.log(), 10, "the invalid config to be refused")
    assert "poll_interval='fast'" in daemon.log()

    daemon.config_path.write_text(yaml.safe_dump({**good, "dry_run": True}))
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "SIGHUP: config reloaded" in daemon.log(), 10, "the reload")
    name = fleet.get("a").name
    fleet.get("a").kill()
    wait_for(lambda: daemon.entries(kind="dry-run", container=name), 10, "dry-run after the reload")
    time.sleep(2)
    assert daemon.restarts(name) == [] and daemon.alive()


def test_ram_preflight_defers_a_restart_the_host_cannot_hold(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str
) -> None:
    fleet.start("huge", model_size="100t")  # more than any machine of ours has
    fleet.start("small", model_size="64m")
    fleet.wait_ready("huge")
    fleet.wait_ready("small")
    daemon = new_daemon(daemons, tmp_path, prefix).start()
    huge, small = fleet.get("huge").name, fleet.get("small").name
    fleet.get("huge").kill()
    fleet.get("small").kill()
    wait_for(lambda: daemon.entries(kind="defer", container=huge), 10, "the deferral")
    reason = daemon.entries(kind="defer", container=huge)[0]["reason"]
    assert "host RAM preflight" in reason and "MemAvailable" in reason
    wait_for(lambda: [a for a in daemon.restarts(small) if a.outcome == "ok"], 15, "the small one restarted")
    time.sleep(2)
    assert daemon.restarts(huge) == [] and fleet.state("huge")["Status"] == "exited"
    assert len(daemon.entries(kind="defer", container=huge)) == 1  # journaled once, not every cycle


def test_unreachable_engine_is_one_clear_line_and_the_daemon_keeps_waiting(tmp_path: Path, prefix: str) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock", "GPU_WATCHDOG_STATE_DIR": str(tmp_path)}
    status = subprocess.run([sys.executable, "-m", "watchdog", "status"], capture_output=True, text=True, env=env)
    assert status.returncode == 1
    assert (
        status.stderr.count("\n") == 1
        and "Docker engine unreachable" in status.stderr
        and "DOCKER_HOST" in status.stderr
    )

    log = tmp_path / "daemon.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "watchdog", "--daemon"], stdout=out, stderr=subprocess.STDOUT, env=env
        )
        try:
            wait_for(lambda: "retrying until it answers" in log.read_text(), 15, "the daemon to say it waits")
            time.sleep(3)
            assert proc.poll() is None  # still waiting, not crashed
            assert log.read_text().count("Docker engine unreachable") == 1  # said once, not every retry
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(15) == 0
