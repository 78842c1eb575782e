"""The daemon speaks systemd's notify protocol: READY after the first cycle, a heartbeat per cycle, STOPPING.

A real AF_UNIX datagram socket stands where systemd's would (NOTIFY_SOCKET), and the
real daemon runs against the real engine. The shipped unit is checked for the
settings that make it work.
"""

from __future__ import annotations

import configparser
import socket
import time
from pathlib import Path

import pytest

from tests.integration.conftest import new_daemon
from tests.integration.harness import ROOT, Daemon, Fleet

pytestmark = pytest.mark.engine


def receive(sock: socket.socket, seconds: float) -> list[tuple[float, str]]:
    got = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            got.append((time.monotonic(), sock.recv(4096).decode()))
        except TimeoutError:
            break
    return got


def test_ready_heartbeat_and_stopping(fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str) -> None:
    fleet.start("n0")
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        env = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "1000000"}
        daemon = new_daemon(daemons, tmp_path, prefix, env=env).start()
        messages = receive(sock, 4.0)
        texts = [m for _, m in messages]
        assert texts and texts[0].startswith("READY=1") and "watching 1 container(s)" in texts[0]
        beats = [t for t, m in messages if m.startswith("WATCHDOG=1")]
        # poll 1 s, WatchdogSec 1 s: a beat per cycle, at most one per 0.5 s (datagrams queued before
        # the test reads arrive together, so the count is checked, not the spacing).
        assert 4 <= len(beats) <= 2 + (messages[-1][0] - messages[0][0] + 1.5) / 0.5
        daemon.stop()
        assert any(m == "STOPPING=1" for _, m in receive(sock, 2.0))


def test_no_heartbeat_for_another_pid(fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        env = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}
        new_daemon(daemons, tmp_path, prefix, env=env).start()
        texts = [m for _, m in receive(sock, 2.5)]
        assert texts and texts[0].startswith("READY=1")
        assert not any(m.startswith("WATCHDOG=1") for m in texts)


def test_shipped_unit_is_a_notify_service_with_a_watchdog() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(ROOT / "compose" / "systemd" / "gpu-watchdog.service")
    service = unit["Service"]
    assert service["Type"] == "notify" and service["Restart"] == "always"
    assert int(service["WatchdogSec"]) >= 3 * 5  # >= 3 x the default poll_interval
    assert service["ExecStart"].endswith("gpu-watchdog --daemon")
    assert "HUP" in service["ExecReload"]
    assert unit["Install"]["WantedBy"] == "multi-user.target"
