"""The journal's history: entries (what was seen and decided) and actions (what was done). I/O.

Reports, restart counts and the breaker are read from here, never from the daemon's memory alone.
An action row without `finished_at` is an action that was in flight when the watchdog died, and
is reconciled at the next start.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from watchdog.entries import ActionKind, EntryKind
from watchdog.journal.state import JournalState


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


class Journal(JournalState):
    """The whole journal: its file, the state tables, and the history of entries and actions."""

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
