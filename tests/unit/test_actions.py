"""The restart call: a call that never reaches the engine is told apart, and is not an attempt."""

from __future__ import annotations

from pathlib import Path

import docker
import pytest

from watchdog.containers.restart import ActionFailed, EngineUnreachable, restart_container
from watchdog.journal import Journal
from watchdog.reports.restart_rates import Window, build


def test_a_missing_engine_socket_is_engine_unreachable(tmp_path: Path) -> None:
    client = docker.DockerClient(base_url=f"unix://{tmp_path}/gone.sock", version="1.41", timeout=5)
    with pytest.raises(EngineUnreachable) as caught:
        restart_container(client, "c0ffee", 10)
    assert isinstance(caught.value, ActionFailed)  # callers that only know ActionFailed still catch it


def test_a_restart_not_sent_counts_neither_for_the_breaker_nor_the_report(tmp_path: Path) -> None:
    journal = Journal.in_dir(tmp_path)
    sent = journal.begin_action("restart", "a", "id-a", "stopped", "t", ts=100.0)
    journal.finish_action(sent, "ok", ts=101.0)
    lost = journal.begin_action("restart", "a", "id-a", "stopped", "t", ts=200.0)
    journal.finish_action(lost, "not sent: engine unreachable (socket gone)", ts=200.1)
    in_flight = journal.begin_action("restart", "a", "id-a", "stopped", "t", ts=300.0)
    assert in_flight is not None
    assert journal.breaker_history("a", since=0.0).attempts == (100.0, 300.0)
    report = build(journal.entries(), journal.actions(), Window(0.0, 3600.0))
    assert report.fleet.restarts == 2
    journal.close()
