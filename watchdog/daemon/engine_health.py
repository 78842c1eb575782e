"""Whether the Docker engine answers: said once when it goes, once when it is back. I/O.

While it is down the loop takes no action and retries with a backoff that doubles up to
30 s; when it is back the cached inspects are dropped, since anything may have changed.
"""

from __future__ import annotations

from collections.abc import Callable

from loguru import logger

from watchdog.entries import EntryKind
from watchdog.journal import Journal
from watchdog.ops.messages import engine_unreachable
from watchdog.ops.metrics import Metrics

MAX_BACKOFF = 30.0  # seconds between retries while the engine is down, at most


class EngineHealth:
    """Up or down, since when, and how long the loop waits before it asks again."""

    def __init__(
        self, journal: Journal, metrics: Metrics, clock: Callable[[], float], on_back: Callable[[], None]
    ) -> None:
        self.journal = journal
        self.metrics = metrics
        self.clock = clock
        self.on_back = on_back  # e.g. drop the engine snapshot's cache
        self.up = True
        self.down_since: float | None = None
        self.backoff = 1.0

    def down(self, why: str) -> None:
        """The engine did not answer this cycle."""
        now = self.clock()
        self.metrics.engine_up.set(0)
        if self.up:
            self.up = False
            self.down_since = now
            logger.error("{}", engine_unreachable(why, "retrying with backoff, no action until it is back"))
            self.journal.record(EntryKind.ENGINE_DOWN, f"Docker engine unreachable: {why}", ts=now)
        else:
            self.backoff = min(self.backoff * 2, MAX_BACKOFF)

    def answered(self) -> None:
        """The engine answered this cycle: if it was down, it is back."""
        if self.up:
            return
        now = self.clock()
        down_for = now - (self.down_since or now)
        self.up = True
        self.backoff = 1.0
        self.on_back()
        logger.info("Docker engine reachable again after {:.1f} s", down_for)
        self.journal.record(
            EntryKind.ENGINE_UP, f"Docker engine reachable again after {down_for:.1f} s", ts=now, duration=down_for
        )
