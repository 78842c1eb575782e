"""What outlives the daemon in the journal: breakers, deliberate stops, GPU marks, counter samples, meta. I/O.

These are read back at start, and re-read when another process (`gpu-watchdog reset`, `gpu
release`) writes the file, so an operator's action and a restart of the watchdog lose nothing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping

from watchdog.containers.breaker import BreakerHistory
from watchdog.entries import ActionKind
from watchdog.gpu.marks import GpuCondition, GpuMark
from watchdog.journal.store import JournalFile
from watchdog.model import NOT_SENT


class JournalState(JournalFile):
    """The tables of state: one row per container or GPU, replaced as it changes."""

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

    # -- GPU counter samples (predictive maintenance) ------------------------

    def add_counter_samples(self, uuid: str, ts: float, values: Mapping[str, float], *, keep_since: float) -> None:
        """One sample of each signal of a GPU; that GPU's samples older than `keep_since` go."""

        def write(db: sqlite3.Connection) -> None:
            db.executemany(
                "INSERT OR REPLACE INTO gpu_counter_samples(uuid, signal, ts, value) VALUES (?,?,?,?)",
                [(uuid, signal, ts, value) for signal, value in values.items()],
            )
            db.execute("DELETE FROM gpu_counter_samples WHERE uuid = ? AND ts < ?", (uuid, keep_since))

        self._write("counter samples", write)

    def counter_samples(self, uuid: str, since: float) -> dict[str, list[tuple[float, float]]]:
        """Signal -> its (ts, value) samples of this GPU since `since`, oldest first."""
        samples: dict[str, list[tuple[float, float]]] = {}
        for signal, ts, value in self._read(
            "SELECT signal, ts, value FROM gpu_counter_samples WHERE uuid = ? AND ts >= ? ORDER BY ts", (uuid, since)
        ):
            samples.setdefault(signal, []).append((ts, value))
        return samples

    # -- meta ----------------------------------------------------------------

    def set_meta(self, key: str, value: str) -> None:
        self._write(
            "meta",
            lambda db: db.execute(
                "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            ),
        )

    def delete_meta(self, key: str) -> None:
        self._write("meta", lambda db: db.execute("DELETE FROM meta WHERE key = ?", (key,)))

    def get_meta(self, key: str) -> str | None:
        row = self._read("SELECT value FROM meta WHERE key = ?", (key,))
        return str(row[0][0]) if row else None
