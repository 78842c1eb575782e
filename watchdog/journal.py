"""The journal: every detection, decision, action and outcome, in one SQLite file.

WAL mode, one short transaction per write, so a `kill -9` mid-action leaves a
consistent file; an action row without `finished_at` is an action that was in
flight and is reconciled at the next start. Reports, restart counts and the
breaker are read from here, never from the daemon's memory alone.

A write that fails (disk full, read-only) never stops the loop: it is logged
loudly and counted in `write_failures`.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from loguru import logger

from watchdog.containers.breaker import BreakerHistory
from watchdog.entries import ActionKind, EntryKind
from watchdog.gpu.marks import GpuCondition, GpuMark
from watchdog.model import NOT_SENT

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
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

JOURNAL_FILE = "journal.sqlite3"
T = TypeVar("T")
Observer = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class ActionRow:
    id: int
    kind: str
    container: str
    container_id: str
    fault: str | None
    reason: str
    dry_run: bool
    started_at: float
    finished_at: float | None
    outcome: str | None


class Journal:
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
    def in_dir(cls, state_dir: Path, in_memory: bool = False) -> Journal:
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

    # -- entries -------------------------------------------------------------

    def record(
        self,
        kind: EntryKind,
        reason: str,
        *,
        ts: float,
        container: str | None = None,
        container_id: str | None = None,
        gpus: tuple[str, ...] = (),
        fault: str | None = None,
        action_id: int | None = None,
        duration: float | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        row = (
            ts,
            kind,
            container,
            container_id,
            ",".join(gpus) or None,
            fault,
            reason,
            action_id,
            duration,
            json.dumps(detail) if detail else None,
        )
        entry_id = self._write(
            kind,
            lambda db: (
                db.execute(
                    "INSERT INTO entries(ts, kind, container, container_id, gpu, fault, reason, action_id, duration,"
                    " detail) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    row,
                ).lastrowid
            ),
        )
        if entry_id is not None and self._observers:
            names = ("ts", "kind", "container", "container_id", "gpu", "fault", "reason", "action_id", "duration")
            entry: dict[str, Any] = {"id": entry_id, **dict(zip(names, row[:9], strict=True)), "detail": detail}
            self._tell(entry)

    def entries(
        self, since: float = 0.0, container: str | None = None, kind: str | None = None
    ) -> list[dict[str, Any]]:
        sql = (
            "SELECT id, ts, kind, container, container_id, gpu, fault, reason, action_id, duration, detail"
            " FROM entries WHERE ts >= ?"
        )
        params: list[Any] = [since]
        if container is not None:
            sql += " AND container = ?"
            params.append(container)
        if kind is not None:
            sql += " AND kind = ?"
            params.append(kind)
        sql += " ORDER BY id"
        names = (
            "id",
            "ts",
            "kind",
            "container",
            "container_id",
            "gpu",
            "fault",
            "reason",
            "action_id",
            "duration",
            "detail",
        )
        rows = []
        for row in self._read(sql, tuple(params)):
            item = dict(zip(names, row, strict=True))
            item["detail"] = json.loads(item["detail"]) if item["detail"] else None
            rows.append(item)
        return rows

    def last_entry(self, container: str, kind: str) -> dict[str, Any] | None:
        """The newest entry of one kind for one container (one indexed row, however long the journal)."""
        rows = self._read(
            "SELECT id, ts, fault, reason FROM entries WHERE container = ? AND kind = ? ORDER BY id DESC LIMIT 1",
            (container, kind),
        )
        return dict(zip(("id", "ts", "fault", "reason"), rows[0], strict=True)) if rows else None

    # -- actions -------------------------------------------------------------

    _ACTION_COLUMNS = "id, kind, container, container_id, fault, reason, dry_run, started_at, finished_at, outcome"

    def begin_action(
        self,
        kind: ActionKind,
        container: str,
        container_id: str,
        fault: str | None,
        reason: str,
        *,
        ts: float,
        dry_run: bool = False,
    ) -> int | None:
        """Row written before the action runs: if we die mid-way, the next start sees it."""
        row = (kind, container, container_id, fault, reason, int(dry_run), ts)
        return self._write(
            "action",
            lambda db: (
                db.execute(
                    "INSERT INTO actions(kind, container, container_id, fault, reason, dry_run, started_at)"
                    " VALUES (?,?,?,?,?,?,?)",
                    row,
                ).lastrowid
            ),
        )

    def finish_action(self, action_id: int | None, outcome: str, *, ts: float) -> None:
        if action_id is None:
            return
        self._write(
            "action outcome",
            lambda db: db.execute(
                "UPDATE actions SET finished_at = ?, outcome = ? WHERE id = ?", (ts, outcome, action_id)
            ),
        )

    def _action_rows(self, where: str, params: tuple[Any, ...]) -> list[ActionRow]:
        rows = self._read(f"SELECT {self._ACTION_COLUMNS} FROM actions WHERE {where} ORDER BY id", params)
        return [ActionRow(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6]), r[7], r[8], r[9]) for r in rows]

    def actions(self, since: float = 0.0, container: str | None = None) -> list[ActionRow]:
        if container is None:
            return self._action_rows("started_at >= ?", (since,))
        return self._action_rows("started_at >= ? AND container = ?", (since, container))

    def unfinished_actions(self) -> list[ActionRow]:
        return self._action_rows("finished_at IS NULL", ())

    # -- breaker -------------------------------------------------------------

    def breaker_history(self, container: str, since: float) -> BreakerHistory:
        attempts = tuple(
            r[0]
            for r in self._read(
                "SELECT started_at FROM actions WHERE container = ? AND kind = ? AND dry_run = 0"
                " AND started_at >= ? AND coalesce(outcome, '') NOT LIKE ? ORDER BY started_at",
                (container, str(ActionKind.RESTART), since, NOT_SENT + "%"),
            )
        )
        row = self._read("SELECT given_up_at, reset_at FROM breakers WHERE container = ?", (container,))
        given_up_at, reset_at = row[0] if row else (None, None)
        return BreakerHistory(attempts, given_up_at, reset_at)

    def give_up(self, container: str, *, ts: float) -> None:
        self._write(
            "give up",
            lambda db: db.execute(
                "INSERT INTO breakers(container, given_up_at) VALUES (?, ?)"
                " ON CONFLICT(container) DO UPDATE SET given_up_at = excluded.given_up_at",
                (container, ts),
            ),
        )

    def reset_breaker(self, container: str, *, ts: float) -> None:
        self._write(
            "reset",
            lambda db: db.execute(
                "INSERT INTO breakers(container, reset_at) VALUES (?, ?)"
                " ON CONFLICT(container) DO UPDATE SET reset_at = excluded.reset_at",
                (container, ts),
            ),
        )

    # -- deliberate stops ----------------------------------------------------

    def mark_stop(self, container_id: str, container: str, *, ts: float) -> None:
        self._write(
            "stop mark",
            lambda db: db.execute(
                "INSERT INTO stop_marks(container_id, container, stopped_at) VALUES (?,?,?)"
                " ON CONFLICT(container_id) DO UPDATE SET stopped_at = excluded.stopped_at",
                (container_id, container, ts),
            ),
        )

    def clear_stop(self, container_id: str) -> None:
        self._write(
            "stop mark", lambda db: db.execute("DELETE FROM stop_marks WHERE container_id = ?", (container_id,))
        )

    def clear_stops_named(self, container: str) -> int:
        cleared = self._write(
            "stop mark", lambda db: db.execute("DELETE FROM stop_marks WHERE container = ?", (container,)).rowcount
        )
        return cleared or 0

    def stop_marks(self) -> dict[str, float]:
        return {r[0]: r[1] for r in self._read("SELECT container_id, stopped_at FROM stop_marks")}

    # -- GPU marks (quarantine) ---------------------------------------------

    def mark_gpu(self, mark: GpuMark) -> None:
        self._write(
            "gpu mark",
            lambda db: db.execute(
                "INSERT INTO gpu_marks(uuid, gpu_index, condition, reason, since, auto) VALUES (?,?,?,?,?,?)"
                " ON CONFLICT(uuid) DO UPDATE SET gpu_index = excluded.gpu_index, condition = excluded.condition,"
                " reason = excluded.reason, since = excluded.since, auto = excluded.auto",
                (mark.uuid, mark.index, mark.condition.value, mark.reason, mark.since, int(mark.auto)),
            ),
        )

    def release_gpu(self, uuid: str) -> bool:
        """Remove a GPU's mark; False when it had none."""
        removed = self._write(
            "gpu mark", lambda db: db.execute("DELETE FROM gpu_marks WHERE uuid = ?", (uuid,)).rowcount
        )
        return bool(removed)

    def gpu_marks(self) -> dict[str, GpuMark]:
        rows = self._read("SELECT uuid, gpu_index, condition, reason, since, auto FROM gpu_marks")
        marks: dict[str, GpuMark] = {}
        for uuid, index, condition, reason, since, auto in rows:
            try:
                state = GpuCondition(condition)
            except ValueError:
                state = GpuCondition.QUARANTINED  # a newer version's condition: keep the GPU out of service
            marks[uuid] = GpuMark(uuid, index, state, reason, since, bool(auto))
        return marks

    # -- meta ----------------------------------------------------------------

    def set_meta(self, key: str, value: str) -> None:
        self._write(
            "meta",
            lambda db: db.execute(
                "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            ),
        )

    def get_meta(self, key: str) -> str | None:
        row = self._read("SELECT value FROM meta WHERE key = ?", (key,))
        return str(row[0][0]) if row else None
