"""The loop's orchestration, whole, against an in-memory engine: observe -> diagnose -> plan -> act -> record."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from watchdog.config import Config, GpuConfig, RamPreflightConfig
from watchdog.daemon.loop import Watchdog
from watchdog.entries import EntryKind
from watchdog.journal import Journal
from watchdog.model import EngineEvent, NoteKind, Verdict
from watchdog.ops.status import STATUS_FILE

CID = "c0ffee" + "0" * 58


def rfc3339(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class FakeEngineApi:
    """One labelled container; `docker restart` brings it back running at once."""

    state: str = "exited"
    exit_code: int = 1
    started_at: float = field(default_factory=lambda: time.time() - 600.0)
    finished_at: float = field(default_factory=lambda: time.time() - 60.0)
    down: bool = False
    restarts: int = 0
    listed_state: str | None = None  # what the container list says, when it lags behind the inspect

    def containers(self, all: bool, filters: dict[str, Any]) -> list[dict[str, Any]]:
        if self.down:
            raise requests.exceptions.ConnectionError("socket gone")
        state = self.listed_state or self.state
        return [{"Id": CID, "State": state, "Status": "Up" if state == "running" else "Exited"}]

    def inspect_container(self, container_id: str) -> dict[str, Any]:
        return {
            "Id": CID,
            "Name": "/llm",
            "Config": {"Labels": {"gpu-watchdog.enable": "true", "gpu-watchdog.start-period": "0s"}},
            "State": {
                "Status": self.state,
                "ExitCode": self.exit_code,
                "StartedAt": rfc3339(self.started_at),
                "FinishedAt": rfc3339(self.finished_at),
            },
            "HostConfig": {},
        }

    def restart(self, container_id: str, timeout: int) -> None:
        self.restarts += 1
        self.state, self.exit_code, self.started_at = "running", 0, time.time()


@dataclass
class FakeClient:
    api: FakeEngineApi = field(default_factory=FakeEngineApi)

    def events(self, **kwargs: Any) -> list[dict[str, Any]]:
        return []


CONFIG = Config(
    events=False,
    default_start_period=0.0,
    gpu=GpuConfig(enabled=False),
    ram_preflight=RamPreflightConfig(enabled=False),
    http="off",
)


@pytest.fixture
def engine() -> FakeClient:
    return FakeClient()


@pytest.fixture
def dog(tmp_path: Path, engine: FakeClient) -> Iterator[Watchdog]:
    journal = Journal.in_dir(tmp_path)
    watchdog = Watchdog(replace(CONFIG, state_dir=str(tmp_path)), journal, lambda: engine)  # type: ignore[arg-type, return-value]
    yield watchdog
    watchdog.shutdown(grace=5.0)
    journal.close()


def kinds(dog: Watchdog) -> list[str]:
    """The journal's kinds but the router's capacity plan (it has no chat deployment to plan for here)."""
    return [e["kind"] for e in dog.journal.entries() if e["kind"] != EntryKind.CAPACITY]


def wait_for_calls(dog: Watchdog) -> None:
    for job in list(dog.in_flight.values()):
        assert job.future is not None
        job.future.result(timeout=10)


def test_a_crashed_container_is_restarted_and_recovers(dog: Watchdog, engine: FakeClient) -> None:
    first = dog.cycle()
    assert [d.verdict for d in first.decisions] == [Verdict.RESTART]
    assert set(dog.in_flight) == {"llm"}
    wait_for_calls(dog)
    second = dog.cycle()
    assert second.diagnosis.faults == () and dog.in_flight == {}
    assert engine.api.restarts == 1
    assert kinds(dog) == [EntryKind.DETECTED, EntryKind.RESTART_CALL, EntryKind.RECOVERED, EntryKind.RESTART_RECOVERED]
    assert (dog.state_dir / STATUS_FILE).exists() and dog.cycles == 2 and dog.last_cycle_at is not None


def test_a_crash_is_seen_at_its_die_event_though_the_container_list_still_says_running(
    dog: Watchdog, engine: FakeClient
) -> None:
    engine.api.state, engine.api.exit_code = "running", 0
    assert dog.cycle().diagnosis.faults == ()  # the running container's inspect is cached now
    engine.api.state, engine.api.exit_code, engine.api.finished_at = "exited", 137, time.time()
    engine.api.listed_state = "running"  # the engine's list lags its inspect for tens of milliseconds
    dog.events.on_event(EngineEvent(at=engine.api.finished_at, container_id=CID, action="die", name="llm"))
    faults = dog.cycle().diagnosis.faults
    assert [f.container for f in faults] == ["llm"] and "exit 137" in faults[0].reason, faults


def test_dry_run_announces_once_and_restarts_nothing(dog: Watchdog, engine: FakeClient) -> None:
    dog.apply_config(replace(dog.config, dry_run=True))
    for _ in range(3):
        dog.cycle()
    assert engine.api.restarts == 0 and dog.in_flight == {}
    assert kinds(dog) == [EntryKind.DETECTED, EntryKind.DRY_RUN]


def test_an_operator_stop_is_left_alone(dog: Watchdog, engine: FakeClient) -> None:
    engine.api.exit_code = 143
    dog.events.on_event(EngineEvent(at=engine.api.finished_at, container_id=CID, action="stop", name="llm"))
    result = dog.cycle()
    assert result.diagnosis.faults == () and [n.kind for n in result.diagnosis.notes] == [NoteKind.DELIBERATE_STOP]
    assert dog.memory[CID].manual_stop_at == engine.api.finished_at
    assert kinds(dog) == [EntryKind.MANUAL_STOP] and engine.api.restarts == 0


def test_engine_down_is_said_once_with_backoff_and_back_once(dog: Watchdog, engine: FakeClient) -> None:
    engine.api.down = True
    assert not dog.cycle().engine_up
    assert not dog.cycle().engine_up
    assert not dog.engine_up and dog.next_wait() == 2.0
    engine.api.down = False
    dog.apply_config(replace(dog.config, dry_run=True))
    assert dog.cycle().engine_up and dog.engine_up
    assert kinds(dog)[:2] == [EntryKind.ENGINE_DOWN, EntryKind.ENGINE_UP]
