"""The restart tracker: a restart holds its slot until it is over; a failed or unsent call frees it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import docker
import pytest
import requests

from watchdog.config import Config
from watchdog.containers.diagnose import Recovery
from watchdog.containers.in_flight import InFlight, budget_of, settlement_of
from watchdog.containers.own_actions import OwnActionWindows
from watchdog.containers.plan import RestartBudget
from watchdog.daemon.restarts import RestartTracker
from watchdog.entries import EntryKind
from watchdog.journal import Journal
from watchdog.model import ContainerSnapshot, ContainerState, Decision, Fault, FaultKind, Verdict
from watchdog.ops.metrics import Metrics
from watchdog.subsystem import Services

CID = "c" * 64
ISSUED = 1000.0
FAULT = Fault(CID, "llm", FaultKind.STOPPED, 990.0, "exited with code 1")


def job(outcome: str | None = None, timeout: float = 150.0, ram: int = 0) -> InFlight:
    return InFlight(1, "llm", CID, FAULT, ISSUED, ram, timeout, outcome=outcome)


def snap(state: ContainerState, started_at: float | None) -> ContainerSnapshot:
    return ContainerSnapshot(id=CID, name="llm", state=state, started_at=started_at)


BACK = snap(ContainerState.RUNNING, ISSUED + 2.0)
OLD_LIFE = snap(ContainerState.EXITED, ISSUED - 500.0)
DIED_AGAIN = snap(ContainerState.EXITED, ISSUED + 2.0)


@pytest.mark.parametrize(
    ("outcome", "container", "ready", "now", "expected"),
    [
        ("ok", BACK, True, ISSUED + 5, Recovery.RECOVERED),
        ("ok", BACK, False, ISSUED + 5, Recovery.PENDING),  # running, not healthy yet: holds its slot
        ("ok", OLD_LIFE, False, ISSUED + 5, Recovery.PENDING),
        ("ok", OLD_LIFE, False, ISSUED + 151, Recovery.TIMED_OUT),
        ("ok", DIED_AGAIN, False, ISSUED + 5, Recovery.FAILED),
        ("ok", None, False, ISSUED + 5, Recovery.GONE),
        (None, OLD_LIFE, False, ISSUED + 5, Recovery.PENDING),  # the call has not returned
        # a call that failed or never reached the engine frees its slot at once
        ("failed: boom", OLD_LIFE, False, ISSUED + 5, Recovery.TIMED_OUT),
        ("not sent: engine unreachable (socket gone)", OLD_LIFE, False, ISSUED + 5, Recovery.TIMED_OUT),
        ("failed: container is gone", None, False, ISSUED + 5, Recovery.TIMED_OUT),
        # ... unless it came back anyway
        ("failed: read timed out", BACK, True, ISSUED + 5, Recovery.RECOVERED),
    ],
)
def test_settlement(
    outcome: str | None, container: ContainerSnapshot | None, ready: bool, now: float, expected: Recovery
) -> None:
    assert settlement_of(job(outcome), container, ready, now) == expected


def test_the_budget_counts_slots_and_ram_in_flight() -> None:
    assert budget_of([job(ram=4), job(ram=6)], 100) == RestartBudget(2, 10, 100)
    assert budget_of([], None) == RestartBudget(0, 0, None)


# -- the tracker, on a worker pool, against a fake engine ------------------------------


@dataclass
class FakeApi:
    """`docker restart` that answers as told: nothing (ok), or an exception."""

    raises: Exception | None = None
    gate: threading.Event | None = None  # the call blocks until it is set
    calls: list[tuple[str, int]] = field(default_factory=list)

    def restart(self, container_id: str, timeout: int) -> None:
        if self.gate is not None:
            self.gate.wait(10)
        self.calls.append((container_id, timeout))
        if self.raises is not None:
            raise self.raises


@dataclass
class FakeClient:
    api: FakeApi = field(default_factory=FakeApi)


@dataclass
class Rig:
    tracker: RestartTracker
    journal: Journal
    own: OwnActionWindows
    client: FakeClient
    clock: list[float]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    journal = Journal.in_dir(tmp_path)
    executor = ThreadPoolExecutor(2)
    client = FakeClient()
    own = OwnActionWindows()
    clock = [ISSUED]
    services = Services(journal, client, executor, own, lambda: clock[0], lambda: None)  # type: ignore[arg-type]
    yield Rig(RestartTracker(Config(recovery_timeout=150.0), services, Metrics()), journal, own, client, clock)
    if client.api.gate is not None:
        client.api.gate.set()
    executor.shutdown(wait=True)
    journal.close()


def restart(rig: Rig) -> InFlight:
    issued = rig.tracker.issue(Decision(FAULT, Verdict.RESTART, "restart: stopped", 0, 7.0), None, ISSUED)
    assert issued.future is not None
    issued.future.result(timeout=10)
    return issued


def kinds(journal: Journal) -> list[str]:
    return [e["kind"] for e in journal.entries()]


def test_a_restart_holds_its_slot_until_the_container_is_back(rig: Rig) -> None:
    issued = restart(rig)
    assert rig.client.api.calls == [(CID, 7)]
    assert issued.outcome == "ok" and set(rig.tracker.in_flight) == {"llm"}
    assert rig.tracker.budget(None).restarts_in_flight == 1
    assert rig.tracker.settle({CID: BACK}, set(), ISSUED + 5) == []  # running, not ready: still holds it
    assert rig.tracker.settle({CID: BACK}, {CID}, ISSUED + 6) == [issued]
    assert rig.tracker.in_flight == {}
    assert kinds(rig.journal) == [EntryKind.RESTART_CALL, EntryKind.RESTART_RECOVERED]
    (action,) = rig.journal.actions()
    assert action.outcome == "ok" and action.finished_at == ISSUED


@pytest.mark.parametrize(
    ("raises", "outcome"),
    [
        (docker.errors.APIError("500 Server Error", explanation="cannot restart"), "failed: "),
        (docker.errors.NotFound("no such container"), "failed: container is gone"),
        (requests.exceptions.ConnectionError("socket gone"), "not sent: engine unreachable"),
        (ValueError("adapter bug"), "failed: ValueError: adapter bug"),
    ],
)
def test_a_call_that_fails_or_never_reaches_the_engine_frees_its_slot(
    rig: Rig, raises: Exception, outcome: str
) -> None:
    rig.client.api.raises = raises
    issued = restart(rig)
    assert issued.outcome is not None and issued.outcome.startswith(outcome)
    assert rig.tracker.restarting == set()  # the call returned: no longer being restarted
    assert rig.tracker.settle({CID: OLD_LIFE}, set(), ISSUED + 1) == [issued]
    assert rig.tracker.in_flight == {} and rig.tracker.budget(None) == RestartBudget()
    assert kinds(rig.journal) == [EntryKind.RESTART_CALL, EntryKind.RESTART_TIMED_OUT]
    (action,) = rig.journal.actions()
    assert action.outcome == issued.outcome


def test_the_call_runs_in_an_own_action_window_that_closes_when_it_returns(rig: Rig) -> None:
    rig.client.api.gate = threading.Event()
    issued = rig.tracker.issue(Decision(FAULT, Verdict.RESTART, "restart: stopped"), None, ISSUED)
    assert rig.tracker.restarting == {CID}
    assert rig.own.covers(CID, ISSUED + 500.0)  # open while the call runs
    assert rig.tracker.settle({}, set(), ISSUED + 1) == []  # a call in flight is never settled
    rig.clock[0] = ISSUED + 3.0
    rig.client.api.gate.set()
    assert issued.future is not None and issued.future.result(timeout=10) == "ok"
    assert rig.own.covers(CID, ISSUED + 3.5) and not rig.own.covers(CID, ISSUED + 10.0)


def test_shutdown_waits_for_a_call_in_flight_then_gives_up_waiting(rig: Rig) -> None:
    rig.client.api.gate = threading.Event()
    issued = rig.tracker.issue(Decision(FAULT, Verdict.RESTART, "restart: stopped"), None, ISSUED)
    rig.tracker.wait_for_calls(0.2)  # returns although the call still runs: reconciled at the next start
    assert issued.future is not None and not issued.future.done()
    (action,) = rig.journal.actions()
    assert action.finished_at is None
    rig.client.api.gate.set()
    rig.tracker.wait_for_calls(10.0)
    assert issued.future.done() and rig.journal.actions()[0].outcome == "ok"
