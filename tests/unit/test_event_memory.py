"""Event memory: our own events are never an operator's; an operator's stop is marked, a start clears it."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from watchdog.config import Config
from watchdog.containers.diagnose import diagnose
from watchdog.containers.event_memory import EventMeaning, EventMemory
from watchdog.containers.own_actions import OwnActionWindows
from watchdog.daemon.event_intake import LAST_EVENT_META, EventIntake
from watchdog.entries import EntryKind
from watchdog.journal import Journal
from watchdog.model import (
    ContainerHistory,
    ContainerSnapshot,
    ContainerSpec,
    ContainerState,
    EngineEvent,
    FaultKind,
    NoteKind,
)
from watchdog.subsystem import Services

CID = "c" * 64


def ev(action: str, at: float, signal: int | None = None, cid: str = CID) -> EngineEvent:
    return EngineEvent(at=at, container_id=cid, action=action, name="llm", signal=signal)


# A restart of a running container, as the engine reports it: kill (SIGTERM), die, stop, start.
RESTART_EVENTS = [ev("kill", 100.1, 15), ev("die", 100.2), ev("stop", 100.3), ev("start", 100.5)]


@pytest.mark.parametrize(
    ("window", "events", "meanings"),
    [
        # (a) inside our own restart's window: all four are ours, none an operator's stop
        ((100.0, None), RESTART_EVENTS, [EventMeaning.OWN] * 4),
        ((100.0, 100.6), RESTART_EVENTS, [EventMeaning.OWN] * 4),
        # no window of ours: the same events are someone's `docker restart`, the stop is deliberate
        (
            None,
            RESTART_EVENTS,
            [
                EventMeaning.REMEMBERED,
                EventMeaning.REMEMBERED,
                EventMeaning.OPERATOR_STOP,
                EventMeaning.STARTED_AFTER_STOP,
            ],
        ),
        # (b) after our restart's `start`, a die is the container's own: remembered, not ours
        ((100.0, None), [*RESTART_EVENTS, ev("die", 100.8)], [EventMeaning.OWN] * 4 + [EventMeaning.REMEMBERED]),
        # a window closed long ago covers nothing
        ((10.0, 11.0), [ev("stop", 100.3)], [EventMeaning.OPERATOR_STOP]),
    ],
)
def test_what_each_event_means(
    window: tuple[float, float | None] | None, events: list[EngineEvent], meanings: list[EventMeaning]
) -> None:
    memory = EventMemory(OwnActionWindows())
    if window is not None:
        memory.own.open(CID, *window)
    assert [memory.take(e) for e in events] == meanings


def test_our_own_restart_leaves_no_history_and_no_stop() -> None:
    memory = EventMemory(OwnActionWindows())
    memory.own.open(CID, 100.0)
    for event in RESTART_EVENTS:
        memory.take(event)
    assert memory.histories.get(CID, ContainerHistory()).manual_stop_at is None
    assert CID not in memory.histories


def exited(started_at: float, finished_at: float, exit_code: int = 1) -> ContainerSnapshot:
    return ContainerSnapshot(
        id=CID,
        name="llm",
        state=ContainerState.EXITED,
        spec=ContainerSpec(),
        exit_code=exit_code,
        started_at=started_at,
        finished_at=finished_at,
    )


def test_a_die_right_after_our_restarts_start_is_a_crash_the_breaker_sees() -> None:
    memory = EventMemory(OwnActionWindows())
    memory.own.open(CID, 100.0)
    for event in [*RESTART_EVENTS, ev("die", 100.8)]:
        memory.take(event)
    assert memory.histories[CID] == ContainerHistory(last_die_at=100.8)
    diagnosis = diagnose([exited(100.5, 100.8)], {}, memory.histories, Config(), 101.0)
    assert [f.kind for f in diagnosis.faults] == [FaultKind.STOPPED]
    assert "crash" in diagnosis.faults[0].reason


def test_an_operator_stop_is_deliberate_until_a_start_and_destroy_forgets() -> None:
    memory = EventMemory(OwnActionWindows())
    for event in [ev("kill", 200.0, 15), ev("die", 200.1), ev("stop", 200.2)]:
        memory.take(event)
    assert memory.histories[CID].manual_stop_at == 200.2
    diagnosis = diagnose([exited(150.0, 200.1, exit_code=143)], {}, memory.histories, Config(), 201.0)
    assert diagnosis.faults == () and [n.kind for n in diagnosis.notes] == [NoteKind.DELIBERATE_STOP]
    assert memory.take(ev("start", 300.0)) == EventMeaning.STARTED_AFTER_STOP
    assert memory.histories[CID].manual_stop_at is None
    assert memory.take(ev("start", 400.0)) == EventMeaning.REMEMBERED  # no stop mark to clear now
    assert memory.take(ev("destroy", 500.0)) == EventMeaning.DESTROYED
    assert CID not in memory.histories


def test_stop_marks_load_and_are_dropped_when_another_process_clears_them() -> None:
    memory = EventMemory(OwnActionWindows())
    memory.load_stop_marks({CID: 50.0, "other": 60.0})
    memory.keep_only_stop_marks({"other": 60.0})
    assert memory.histories[CID].manual_stop_at is None
    assert memory.histories["other"].manual_stop_at == 60.0
    memory.heal_requested(CID, 70.0)
    assert memory.histories[CID].heal_requested_at == 70.0


# -- the intake: the same, journaled --------------------------------------------------


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal.in_dir(tmp_path)
    yield j
    j.close()


@pytest.fixture
def intake(journal: Journal) -> Iterator[EventIntake]:
    executor = ThreadPoolExecutor(1)
    services = Services(journal, None, executor, OwnActionWindows(), lambda: 1000.0, lambda: None)  # type: ignore[arg-type]
    yield EventIntake(Config(), services)
    executor.shutdown()


def kinds(journal: Journal) -> list[str]:
    return [e["kind"] for e in journal.entries()]


def test_intake_journals_an_operator_stop_once_and_a_start_clears_the_mark(
    intake: EventIntake, journal: Journal
) -> None:
    for event in [ev("kill", 200.0, 15), ev("die", 200.1), ev("stop", 200.2)]:
        intake.on_event(event)
    assert intake.drain({}) == {CID}
    assert journal.stop_marks() == {CID: 200.2}
    assert kinds(journal) == [EntryKind.MANUAL_STOP]
    assert journal.get_meta(LAST_EVENT_META) == repr(200.2)
    intake.on_event(ev("start", 300.0))
    intake.drain({})
    assert journal.stop_marks() == {}
    assert intake.histories[CID].manual_stop_at is None


def test_intake_takes_our_own_restart_for_ours(intake: EventIntake, journal: Journal) -> None:
    intake.memory.own.open(CID, 100.0, 100.6)
    for event in RESTART_EVENTS:
        intake.on_event(event)
    assert intake.drain({}) == {CID}  # touched: the cached inspect is dropped all the same
    assert journal.stop_marks() == {} and kinds(journal) == []
    assert CID not in intake.histories


def test_intake_destroy_forgets_the_container_and_its_mark(intake: EventIntake, journal: Journal) -> None:
    intake.on_event(ev("stop", 200.0))
    intake.drain({})
    intake.on_event(ev("destroy", 250.0))
    intake.drain({})
    assert journal.stop_marks() == {} and CID not in intake.histories


def test_intake_loads_stop_marks_and_own_windows_from_the_journal(journal: Journal, intake: EventIntake) -> None:
    journal.mark_stop(CID, "llm", ts=900.0)
    action = journal.begin_action("restart", "llm", "d" * 64, "stopped", "t", ts=950.0)
    journal.finish_action(action, "ok", ts=951.0)
    intake.load()
    assert intake.histories[CID].manual_stop_at == 900.0
    assert intake.memory.own.covers("d" * 64, 950.5)
    assert not intake.memory.own.covers(CID, 950.5)
