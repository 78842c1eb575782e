"""The journal's file: one SQLite connection (WAL), one short transaction per write, and its observers.

A write that fails (disk full, read-only) never stops the loop: it is logged loudly once with the
fix, each lost record said, and counted in `write_failures`; writing resumes by itself. I/O.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self, TypeVar

from loguru import logger

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    container TEXT,
    container_id TEXT,
    gpu TEXT,
    fault TEXT,
    reason TEXT NOT NULL,
    action_id INTEGER,
    duration REAL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS entries_ts ON entries(ts);
CREATE INDEX IF NOT EXISTS entries_container ON entries(container, ts);
CREATE TABLE IF NOT EXISTS actions (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    container TEXT NOT NULL,
    container_id TEXT NOT NULL,
    fault TEXT,
    reason TEXT NOT NULL,
    dry_run INTEGER NOT NULL DEFAULT 0,
    started_at REAL NOT NULL,
    finished_at REAL,
    outcome TEXT
);
CREATE INDEX IF NOT EXISTS actions_container ON actions(container, started_at);
CREATE TABLE IF NOT EXISTS stop_marks (
    container_id TEXT PRIMARY KEY,
    container TEXT NOT NULL,
    stopped_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS breakers (
    container TEXT PRIMARY KEY,
    given_up_at REAL,
    reset_at REAL
);
CREATE TABLE IF NOT EXISTS gpu_marks (
    uuid TEXT PRIMARY KEY,
    gpu_index INTEGER,
    condition TEXT NOT NULL,
    reason TEXT NOT NULL,
    since REAL NOT NULL,
    auto INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS gpu_counter_samples (
    uuid TEXT NOT NULL,
    signal TEXT NOT NULL,
    ts REAL NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (uuid, signal, ts)
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

JOURNAL_FILE = "journal.sqlite3"
T = TypeVar("T")
Observer = Callable[[dict[str, Any]], None]


class JournalFile:
    """Thread-safe access to the journal file (the loop and action workers share it)."""

    def __init__(self, path: Path, in_memory: bool = False) -> None:
        """`in_memory`: the daemon's fallback when the file cannot be opened; `path` still names the state dir."""
        self.path = path
        if not in_memory:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        target = ":memory:" if in_memory else str(path)
        self._db = sqlite3.connect(target, timeout=10.0, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self.write_failures = 0
        self._lost = 0  # failed writes since the last one that worked
        self._observers: list[Observer] = []

    @classmethod
    def in_dir(cls, state_dir: Path, in_memory: bool = False) -> Self:
        return cls(state_dir / JOURNAL_FILE, in_memory)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _write(self, what: str, statement: Callable[[sqlite3.Connection], T]) -> T | None:
        """Run one write transaction; on failure log, count, and return None."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                result = statement(self._db)
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self.write_failures += 1
                self._lost += 1
                with contextlib.suppress(sqlite3.Error):  # also when the connection is closed
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                log = logger.bind(journal=str(self.path))
                if self._lost == 1:  # the first of a run: loud, once, with the fix
                    log.critical(
                        "journal cannot be written ({}): healing goes on WITHOUT a record; free space or fix the"
                        " disk under {} (writing resumes by itself)",
                        exc,
                        self.path.parent,
                    )
                log.error("journal write failed ({}): {}; healing goes on, this record is lost", what, exc)
                return None
            if self._lost:
                logger.bind(journal=str(self.path)).warning(
                    "journal writable again: {} record(s) were lost while it was not", self._lost
                )
                self._lost = 0
            return result

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return list(self._db.execute(sql, params).fetchall())

    def data_version(self) -> int:
        """Changes when another process (e.g. `gpu-watchdog reset`) wrote the file."""
        with self._lock:
            return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    # -- observers -----------------------------------------------------------

    def subscribe(self, observer: Observer) -> None:
        """Call `observer(entry)` after each entry written (the fields `entries()` returns, from this process).

        It runs on the writer's thread (the loop, an action worker): it must be quick and not block;
        an exception in it is logged and never reaches the writer.
        """
        self._observers = [*self._observers, observer]

    def unsubscribe(self, observer: Observer) -> None:
        self._observers = [o for o in self._observers if o != observer]  # == : bound methods are new objects

    def _tell(self, entry: dict[str, Any]) -> None:
        for observer in self._observers:
            try:
                observer(entry)
            except Exception as exc:  # an observer's bug must not break the journal's writer
                logger.error("journal observer failed ({}); the entry is journaled", type(exc).__name__)
