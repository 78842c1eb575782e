"""Fault bookkeeping: a fault is detected, and ends, once per episode; verdicts and dry runs are said once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from watchdog.containers.fault_book import FaultBook
from watchdog.daemon.fault_record import FaultRecorder
from watchdog.entries import EntryKind
from watchdog.journal import Journal
from watchdog.model import Decision, Diagnosis, Fault, FaultKind, Note, NoteKind, Verdict
from watchdog.ops.metrics import Metrics

A, B = "id-a", "id-b"


def fault(cid: str = A, kind: FaultKind = FaultKind.STOPPED, life: float | None = 10.0, since: float = 100.0) -> Fault:
    return Fault(cid, cid.removeprefix("id-"), kind, since, f"{kind.value} reason", life=life)


def faulty(*faults: Fault) -> Diagnosis:
    return Diagnosis(faults=faults)


READY_A = Diagnosis(ready=frozenset({A}))
STOPPED_A = Diagnosis(notes=(Note(A, NoteKind.DELIBERATE_STOP, "stopped by an operator"),))
STARTING_A = Diagnosis(notes=(Note(A, NoteKind.STARTING, "starting"),))


# Each row: the diagnoses of successive cycles (with the containers present), and what each cycle changes:
# the kinds detected, and the outcomes of the faults that ended.
@pytest.mark.parametrize(
    ("cycles", "expected"),
    [
        ([(faulty(fault()), {A})], [(["stopped"], [])]),
        # the same episode seen again is not detected again
        ([(faulty(fault()), {A})] * 3, [(["stopped"], []), ([], []), ([], [])]),
        # healthy again: recovered, once
        (
            [(faulty(fault()), {A}), (READY_A, {A}), (READY_A, {A})],
            [(["stopped"], []), ([], [EntryKind.RECOVERED]), ([], [])],
        ),
        # gone from the engine: cleared
        ([(faulty(fault()), {A}), (Diagnosis(), set())], [(["stopped"], []), ([], [EntryKind.CLEARED])]),
        # stopped on purpose: cleared
        ([(faulty(fault()), {A}), (STOPPED_A, {A})], [(["stopped"], []), ([], [EntryKind.CLEARED])]),
        # restarting or in its start period: not over yet, then recovered
        (
            [(faulty(fault()), {A}), (STARTING_A, {A}), (Diagnosis(), {A}), (READY_A, {A})],
            [(["stopped"], []), ([], []), ([], []), ([], [EntryKind.RECOVERED])],
        ),
        # a new kind, or a new container life, is a new episode
        (
            [(faulty(fault()), {A}), (faulty(fault(kind=FaultKind.UNHEALTHY)), {A}), (faulty(fault(life=50.0)), {A})],
            [(["stopped"], []), (["unhealthy"], []), (["stopped"], [])],
        ),
        # two containers: each its own
        (
            [(faulty(fault(A), fault(B)), {A, B}), (Diagnosis(faults=(fault(B),), ready=frozenset({A})), {A, B})],
            [(["stopped", "stopped"], []), ([], [EntryKind.RECOVERED])],
        ),
    ],
)
def test_detected_and_ended_once_per_episode(
    cycles: list[tuple[Diagnosis, set[str]]], expected: list[tuple[list[str], list[EntryKind]]]
) -> None:
    book = FaultBook()
    seen = []
    for now, (diagnosis, present) in enumerate(cycles, start=200):
        changes = book.update(diagnosis, present, float(now))
        seen.append(([f.kind.value for f in changes.detected], [e.outcome for e in changes.ended]))
    assert seen == expected


def test_an_ended_fault_says_how_long_it_lasted() -> None:
    book = FaultBook()
    book.update(faulty(fault(since=100.0)), {A}, 101.0)
    (ended,) = book.update(READY_A, {A}, 112.5).ended
    assert (ended.text, ended.duration) == ("healthy again after 12.5 s", 12.5)


def decision(verdict: Verdict, reason: str = "why", kind: FaultKind = FaultKind.STOPPED) -> Decision:
    return Decision(fault(kind=kind), verdict, reason)


@pytest.mark.parametrize(
    ("verdicts", "news"),
    [
        ([Verdict.DEFER, Verdict.DEFER, Verdict.DEFER], [True, False, False]),
        ([Verdict.DEFER, Verdict.BACKOFF, Verdict.DEFER], [True, True, True]),
        ([Verdict.GIVE_UP, Verdict.GIVEN_UP, Verdict.GIVEN_UP], [True, True, False]),
    ],
)
def test_a_verdict_is_news_when_it_changes(verdicts: list[Verdict], news: list[bool]) -> None:
    book = FaultBook()
    assert [book.verdict_is_news(decision(v)) for v in verdicts] == news


def test_after_a_restart_the_same_verdict_again_is_news_and_a_fault_end_forgets() -> None:
    book = FaultBook()
    book.update(faulty(fault()), {A}, 200.0)
    assert book.verdict_is_news(decision(Verdict.DEFER))
    book.restart_issued(decision(Verdict.RESTART))
    assert book.verdict_is_news(decision(Verdict.DEFER))
    book.update(READY_A, {A}, 201.0)
    assert book.last_verdict == {}


def test_dry_run_is_announced_once_per_container_and_kind_until_the_fault_ends() -> None:
    book = FaultBook()
    book.update(faulty(fault()), {A}, 200.0)
    assert [book.first_dry_run(fault()) for _ in range(3)] == [True, False, False]
    assert book.first_dry_run(fault(kind=FaultKind.UNHEALTHY))
    assert book.first_dry_run(fault(B))
    book.update(READY_A, {A}, 201.0)
    assert book.first_dry_run(fault())  # a next episode is announced anew


# -- the recorder: the same, journaled ------------------------------------------


@pytest.fixture
def recorder(tmp_path: Path) -> Iterator[FaultRecorder]:
    journal = Journal.in_dir(tmp_path)
    yield FaultRecorder(journal, Metrics())
    journal.close()


def kinds(recorder: FaultRecorder) -> list[str]:
    return [e["kind"] for e in recorder.journal.entries()]


def test_detected_then_recovered_is_journaled_once_each(recorder: FaultRecorder) -> None:
    for now in (200.0, 201.0, 202.0):
        recorder.observe(faulty(fault()), {A}, now)
    for now in (203.0, 204.0):
        recorder.observe(READY_A, {A}, now)
    assert kinds(recorder) == [EntryKind.DETECTED, EntryKind.RECOVERED]
    recovered = recorder.journal.entries()[-1]
    assert recovered["container"] == "a" and recovered["duration"] == pytest.approx(103.0)


def test_cleared_is_journaled_once_when_the_container_is_removed(recorder: FaultRecorder) -> None:
    recorder.observe(faulty(fault()), {A}, 200.0)
    recorder.observe(Diagnosis(), set(), 201.0)
    recorder.observe(Diagnosis(), set(), 202.0)
    assert kinds(recorder) == [EntryKind.DETECTED, EntryKind.CLEARED]
    assert recorder.journal.entries()[-1]["reason"] == "container removed"


def test_a_held_verdict_is_journaled_once_while_it_holds(recorder: FaultRecorder) -> None:
    for now in (200.0, 201.0, 202.0):
        recorder.verdict(decision(Verdict.HELD, "not restarted: GPU 0 is quarantined"), now)
    assert kinds(recorder) == [EntryKind.HELD]


def test_give_up_opens_the_breaker_and_is_journaled(recorder: FaultRecorder) -> None:
    recorder.verdict(decision(Verdict.GIVE_UP, "5 restarts in 300 s"), 200.0)
    assert kinds(recorder) == [EntryKind.GIVE_UP]
    assert recorder.journal.breaker_history("a", since=0.0).given_up_at == 200.0


def test_dry_run_is_journaled_once_per_container_and_fault(recorder: FaultRecorder) -> None:
    recorder.observe(faulty(fault()), {A}, 200.0)
    for now in (200.0, 205.0, 210.0):
        recorder.would_restart(decision(Verdict.RESTART, "restart: stopped"), now)
    recorder.would_restart(decision(Verdict.RESTART, "restart: unhealthy", kind=FaultKind.UNHEALTHY), 215.0)
    dry = [e for e in recorder.journal.entries() if e["kind"] == EntryKind.DRY_RUN]
    assert [(e["fault"], e["reason"]) for e in dry] == [
        ("stopped", "would restart: restart: stopped"),
        ("unhealthy", "would restart: restart: unhealthy"),
    ]


@pytest.mark.parametrize(
    "module", ["watchdog.containers.fault_book", "watchdog.containers.event_memory", "watchdog.containers.in_flight"]
)
def test_the_bookkeeping_is_pure(module: str) -> None:
    from tests.unit.test_purity import FORBIDDEN, modules_after_import

    loaded = modules_after_import(module)
    assert module in loaded and sorted(loaded & set(FORBIDDEN)) == []
