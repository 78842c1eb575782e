"""The daemon's runtime and the lines it shares with the CLI, without an engine."""

from __future__ import annotations

import ast
import threading
from pathlib import Path

import pytest

from watchdog.daemon.lock import InstanceLock
from watchdog.daemon.runtime import ConfigSource, StopSignals, wait_for_lock
from watchdog.ops.messages import ENGINE_FIX, engine_unreachable, first_line
from watchdog.ops.status import daemon_max_age

PACKAGE = Path(__file__).resolve().parents[2] / "watchdog"


@pytest.mark.parametrize(("poll", "max_age"), [(1.0, 15.0), (5.0, 15.0), (10.0, 30.0)])
def test_the_daemon_is_stale_after_three_polls_and_never_under_15_s(poll: float, max_age: float) -> None:
    assert daemon_max_age(poll) == max_age


def test_engine_unreachable_is_one_line_with_the_fix_or_what_happens_next() -> None:
    exc = OSError("socket gone\nsecond line")
    assert engine_unreachable(exc) == f"Docker engine unreachable (socket gone); {ENGINE_FIX}"
    assert engine_unreachable(exc, "retrying") == "Docker engine unreachable (socket gone); retrying"
    assert first_line(ConnectionError()) == "ConnectionError"
    assert len(first_line(OSError("x" * 500))) == 200


def test_config_source_applies_only_the_overrides_given(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("poll_interval: 7\ndry_run: true\n")
    config = ConfigSource(str(path), {"dry_run": None, "state_dir": str(tmp_path)}).load()
    assert config.poll_interval == 7 and config.dry_run is True and config.state_dir == str(tmp_path)


def test_waiting_for_a_held_lock_ends_when_stopping(tmp_path: Path) -> None:
    held = InstanceLock(tmp_path)
    held.acquire()
    try:
        stopping = threading.Event()
        threading.Timer(0.2, stopping.set).start()
        assert wait_for_lock(InstanceLock(tmp_path), stopping, poll=0.05) is False
    finally:
        held.release()
    assert wait_for_lock(InstanceLock(tmp_path), threading.Event(), poll=0.05) is True


def test_a_stop_signal_sets_stopping_and_wakes_the_loop() -> None:
    signals = StopSignals()
    woken: list[bool] = []
    signals.wake = lambda: woken.append(True)
    signals._on_stop(15, None)
    signals._on_hup(1, None)
    assert signals.stopping.is_set() and signals.reload_requested.is_set() and woken == [True, True]


def test_nothing_outside_the_cli_imports_it() -> None:
    importers = []
    for path in PACKAGE.rglob("*.py"):
        if path.parent.name == "cli" or path.name == "__main__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if any(n == "watchdog.cli" or n.startswith("watchdog.cli.") for n in names):
                importers.append(str(path.relative_to(PACKAGE)))
    assert importers == []
