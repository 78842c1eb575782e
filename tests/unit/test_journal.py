"""watchdog.journal against a real SQLite file in tmp_path."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from watchdog.containers.breaker import BreakerHistory
from watchdog.journal import JOURNAL_FILE, Journal


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal.in_dir(tmp_path / "state")
    yield j
    j.close()


def test_journal_file_is_created_in_the_state_dir(journal: Journal, tmp_path: Path) -> None:
    assert journal.path == tmp_path / "state" / JOURNAL_FILE
    assert journal.path.is_file()


def test_record_and_entries_round_trip_with_detail_json(journal: Journal) -> None:
    journal.record(
        "detected",
        "exited with code 137",
        ts=100.0,
        container="llm",
        container_id="abc",
        gpus=("0", "1"),
        fault="stopped",
        action_id=7,
        duration=1.5,
        detail={"exit_code": 137, "signals": [15, 9]},
    )
    journal.record("note", "fine", ts=200.0)
    first, second = journal.entries()
    assert {k: v for k, v in first.items() if k != "id"} == {
        "ts": 100.0,
        "kind": "detected",
        "container": "llm",
        "container_id": "abc",
        "gpu": "0,1",
        "fault": "stopped",
        "reason": "exited with code 137",
        "action_id": 7,
        "duration": 1.5,
        "detail": {"exit_code": 137, "signals": [15, 9]},
    }
    assert (second["kind"], second["gpu"], second["detail"], second["container"]) == ("note", None, None, None)
    assert second["id"] > first["id"]


def test_entries_filter_by_since_container_and_kind(journal: Journal) -> None:
    journal.record("detected", "r1", ts=100.0, container="a")
    journal.record("detected", "r2", ts=200.0, container="b")
    journal.record("restart-call", "r3", ts=300.0, container="a")
    assert [e["reason"] for e in journal.entries(since=150.0)] == ["r2", "r3"]
    assert [e["reason"] for e in journal.entries(container="a")] == ["r1", "r3"]
    assert [e["reason"] for e in journal.entries(container="a", kind="detected")] == ["r1"]


def test_actions_begin_finish_and_unfinished(journal: Journal) -> None:
    first = journal.begin_action("restart", "llm", "abc", "stopped", "restart: stopped", ts=100.0)
    second = journal.begin_action("restart", "emb", "def", None, "restart", ts=110.0, dry_run=True)
    assert first is not None and second is not None and second != first
    assert [a.id for a in journal.unfinished_actions()] == [first, second]
    journal.finish_action(first, "ok", ts=130.0)
    journal.finish_action(None, "ignored", ts=131.0)  # no row: nothing happens
    [pending] = journal.unfinished_actions()
    assert pending.id == second and pending.dry_run is True and pending.finished_at is None
    done = journal.actions(container="llm")[0]
    assert (done.kind, done.container_id, done.fault, done.dry_run) == ("restart", "abc", "stopped", False)
    assert (done.started_at, done.finished_at, done.outcome) == (100.0, 130.0, "ok")
    assert [a.id for a in journal.actions(since=105.0)] == [second]


def test_breaker_history_counts_only_real_restarts_since_the_given_time(journal: Journal) -> None:
    journal.begin_action("restart", "llm", "abc", "stopped", "r", ts=100.0)
    journal.begin_action("restart", "llm", "abc", "stopped", "r", ts=150.0, dry_run=True)
    journal.begin_action("restart", "llm", "abc", "stopped", "r", ts=200.0)
    journal.begin_action("stop", "llm", "abc", None, "r", ts=210.0)
    journal.begin_action("restart", "other", "xyz", "stopped", "r", ts=220.0)
    journal.begin_action("restart", "llm", "abc2", "stopped", "r", ts=230.0)  # same name, new container id
    assert journal.breaker_history("llm", since=0.0) == BreakerHistory((100.0, 200.0, 230.0))
    assert journal.breaker_history("llm", since=150.0) == BreakerHistory((200.0, 230.0))
    assert journal.breaker_history("nobody", since=0.0) == BreakerHistory()


def test_give_up_and_reset_are_remembered_per_container(journal: Journal) -> None:
    journal.give_up("llm", ts=300.0)
    assert journal.breaker_history("llm", since=0.0) == BreakerHistory((), given_up_at=300.0)
    journal.reset_breaker("llm", ts=400.0)
    journal.give_up("llm", ts=500.0)
    journal.reset_breaker("emb", ts=450.0)
    assert journal.breaker_history("llm", since=0.0) == BreakerHistory((), given_up_at=500.0, reset_at=400.0)
    assert journal.breaker_history("emb", since=0.0) == BreakerHistory((), given_up_at=None, reset_at=450.0)


def test_stop_marks_set_update_clear_and_clear_by_name(journal: Journal) -> None:
    journal.mark_stop("id1", "llm", ts=10.0)
    journal.mark_stop("id1", "llm", ts=20.0)
    journal.mark_stop("id2", "emb", ts=30.0)
    journal.mark_stop("id3", "emb", ts=40.0)
    assert journal.stop_marks() == {"id1": 20.0, "id2": 30.0, "id3": 40.0}
    journal.clear_stop("id1")
    journal.clear_stop("missing")
    assert journal.stop_marks() == {"id2": 30.0, "id3": 40.0}
    assert journal.clear_stops_named("emb") == 2
    assert journal.clear_stops_named("emb") == 0
    assert journal.stop_marks() == {}


def test_meta_set_get_and_overwrite(journal: Journal) -> None:
    assert journal.get_meta("heartbeat") is None
    journal.set_meta("heartbeat", "1.5")
    journal.set_meta("heartbeat", "2.5")
    assert journal.get_meta("heartbeat") == "2.5"


def test_data_is_persisted_for_the_next_journal_on_the_file(journal: Journal) -> None:
    journal.mark_stop("id1", "llm", ts=10.0)
    journal.close()
    again = Journal(journal.path)
    try:
        assert again.stop_marks() == {"id1": 10.0}
    finally:
        again.close()


def test_data_version_changes_when_another_journal_writes_the_file(journal: Journal) -> None:
    before = journal.data_version()
    journal.set_meta("own", "write")
    assert journal.data_version() == before  # own writes do not count
    other = Journal(journal.path)
    try:
        other.reset_breaker("llm", ts=1.0)
    finally:
        other.close()
    assert journal.data_version() != before
    assert journal.breaker_history("llm", since=0.0).reset_at == 1.0


def test_failed_write_does_not_raise_and_is_counted(journal: Journal) -> None:
    # Running as root, chmod cannot make the file read-only; drop the table underneath instead.
    journal.record("detected", "kept", ts=1.0)
    with sqlite3.connect(journal.path) as other:
        other.execute("DROP TABLE stop_marks")
    journal.mark_stop("id1", "llm", ts=2.0)
    journal.mark_stop("id2", "llm", ts=3.0)
    assert journal.write_failures == 2
    journal.record("detected", "still works", ts=4.0)  # other tables are untouched
    assert [e["reason"] for e in journal.entries()] == ["kept", "still works"]
    assert journal.write_failures == 2


def test_write_to_read_only_database_does_not_raise_and_is_counted(journal: Journal) -> None:
    journal._db.execute("PRAGMA query_only = ON")  # the connection refuses writes, as a read-only file would
    assert journal.begin_action("restart", "llm", "abc", None, "r", ts=1.0) is None
    journal.record("detected", "lost", ts=1.0)
    assert journal.clear_stops_named("llm") == 0
    assert journal.write_failures == 3
    journal._db.execute("PRAGMA query_only = OFF")
    assert journal.entries() == []
    assert journal.unfinished_actions() == []


def test_write_after_close_does_not_raise_and_is_counted(journal: Journal) -> None:
    journal.close()
    journal.record("restart-call", "late", ts=1.0)
    assert journal.write_failures == 1


def test_last_entry_is_the_newest_of_its_kind_for_that_container(journal: Journal) -> None:
    assert journal.last_entry("a", "detected") is None
    journal.record("detected", "first", ts=1.0, container="a", fault="stopped")
    journal.record("detected", "other container", ts=2.0, container="b", fault="stopped")
    journal.record("recovered", "not this kind", ts=3.0, container="a")
    journal.record("detected", "second", ts=4.0, container="a", fault="unhealthy")
    last = journal.last_entry("a", "detected")
    assert last is not None
    assert (last["ts"], last["fault"], last["reason"]) == (4.0, "unhealthy", "second")


def test_a_journal_that_cannot_be_written_is_said_loudly_once_then_resumes(journal: Journal) -> None:
    from loguru import logger

    said: list[tuple[str, str]] = []
    sink = logger.add(lambda m: said.append((m.record["level"].name, m.record["message"])), level="DEBUG")
    try:
        journal._db.execute("PRAGMA query_only = ON")  # what a read-only disk does to every write
        for i in range(3):
            journal.record("detected", f"lost {i}", ts=float(i), container="a")
        assert journal.write_failures == 3
        critical = [text for level, text in said if level == "CRITICAL"]
        assert len(critical) == 1 and "journal cannot be written" in critical[0] and "WITHOUT a record" in critical[0]
        assert sum(1 for level, _ in said if level == "ERROR") == 3  # each lost record, one line
        journal._db.execute("PRAGMA query_only = OFF")
        journal.record("detected", "kept", ts=10.0, container="a")
    finally:
        logger.remove(sink)
    assert [e["reason"] for e in journal.entries()] == ["kept"]
    assert any(level == "WARNING" and "3 record(s) were lost" in text for level, text in said)
