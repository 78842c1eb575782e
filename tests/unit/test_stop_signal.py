"""A stop is a stop, whatever the signal: a container whose stop signal is SIGKILL, stopped with `docker stop`.

Its `docker stop` and an operator's `docker kill` give the same kill (9) and die events; only the
engine's stop event, just after the die, tells them apart. The die may be handled first, so the
diagnosis waits `stop_settle` for it, as it does for a polite signal. For every other container a
SIGKILL is `docker kill`, healed without waiting.
"""

from __future__ import annotations

import signal

import pytest

from watchdog.config import Config
from watchdog.containers.diagnose import diagnose, remember_event
from watchdog.model import (
    ContainerHistory,
    ContainerSnapshot,
    ContainerSpec,
    ContainerState,
    Diagnosis,
    EngineEvent,
    FaultKind,
    NoteKind,
)
from watchdog.units import parse_signal

CFG = Config()  # stop_settle 0.3 s
STARTED, DIED = 1000.0, 2000.0


def exited(stop_signal: int | None) -> ContainerSnapshot:
    return ContainerSnapshot(
        id="c1",
        name="llm",
        state=ContainerState.EXITED,
        spec=ContainerSpec(),
        exit_code=137,
        started_at=STARTED,
        finished_at=DIED,
        stop_signal=stop_signal,
    )


def judge(container: ContainerSnapshot, events: list[tuple[str, float, int | None]], now: float) -> Diagnosis:
    history = ContainerHistory()
    for action, at, sig in events:
        history = remember_event(history, EngineEvent(at, container.id, action, name="llm", signal=sig))
    return diagnose([container], {}, {container.id: history}, CFG, now)


KILL_DIE = [("kill", DIED - 0.01, 9), ("die", DIED, None)]


@pytest.mark.parametrize(
    ("stop_signal", "events", "now", "expected"),
    [
        # SIGKILL is this container's stop signal: its die may be a `docker stop`, wait for the stop event
        (9, KILL_DIE, DIED + 0.1, NoteKind.SETTLING),
        (9, [*KILL_DIE, ("stop", DIED + 0.02, None)], DIED + 0.1, NoteKind.DELIBERATE_STOP),
        (9, [*KILL_DIE, ("stop", DIED + 0.02, None)], DIED + 60.0, NoteKind.DELIBERATE_STOP),
        # no stop event within stop_settle: it was `docker kill` after all
        (9, KILL_DIE, DIED + CFG.stop_settle + 0.01, FaultKind.STOPPED),
        # the usual stop signal (SIGTERM, or unknown): a SIGKILL is `docker kill`, healed at once
        (15, KILL_DIE, DIED + 0.01, FaultKind.STOPPED),
        (None, KILL_DIE, DIED + 0.01, FaultKind.STOPPED),
        # a polite signal still settles whatever the stop signal
        (None, [("kill", DIED - 0.01, 15), ("die", DIED, None)], DIED + 0.1, NoteKind.SETTLING),
        # a die with no kill is a crash, never settled
        (9, [("die", DIED, None)], DIED + 0.01, FaultKind.STOPPED),
    ],
)
def test_a_sigkill_settles_only_where_it_is_the_stop_signal(
    stop_signal: int | None, events: list[tuple[str, float, int | None]], now: float, expected: object
) -> None:
    d = judge(exited(stop_signal), events, now)
    if isinstance(expected, FaultKind):
        assert [f.kind for f in d.faults] == [expected] and d.notes == ()
    else:
        assert d.faults == () and [n.kind for n in d.notes] == [expected]


def test_a_settling_sigkill_is_rechecked_when_the_wait_ends() -> None:
    d = judge(exited(9), KILL_DIE, DIED + 0.1)
    assert d.recheck_at == pytest.approx(DIED + CFG.stop_settle)


def test_a_docker_kill_after_the_wait_is_named_as_such() -> None:
    (fault,) = judge(exited(9), KILL_DIE, DIED + 1.0).faults
    assert "SIGKILL, exit 137" in fault.reason and "(docker kill)" in fault.reason


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("SIGKILL", 9),
        ("KILL", 9),
        ("sigterm", 15),
        ("9", 9),
        (" SIGINT ", int(signal.SIGINT)),
        ("", None),
        (None, None),
        ("SIGRTMIN+3", None),
        ("NOPE", None),
    ],
)
def test_the_engines_stop_signal_is_read_as_a_number(text: str | None, number: int | None) -> None:
    assert parse_signal(text) == number
