"""Each router problem said once: logged (and journaled) when it appears or changes, quiet while it lasts.

Shared by the parts of the router sync (template, config, rotation, proxy), so a bad template or an
unwritable file is one log line and one journal entry, not one per cycle, and a fix is said when the
problem goes away.
"""

from __future__ import annotations

from collections.abc import Callable

from loguru import logger

from watchdog.entries import EntryKind
from watchdog.journal import Journal


class Problems:
    """Topic -> the message last said; `say` again only when the message changes, `clear` when it is fixed."""

    def __init__(self, journal: Journal, clock: Callable[[], float]) -> None:
        self.journal = journal
        self.clock = clock
        self._said: dict[str, str] = {}

    def say(self, topic: str, message: str, level: str = "ERROR", journal_kind: EntryKind | None = None) -> None:
        """Log (and journal) a problem once until it changes or clears."""
        if self._said.get(topic) == message:
            return
        self._said[topic] = message
        logger.log(level, message)
        if journal_kind:
            self.journal.record(journal_kind, message, ts=self.clock())

    def clear(self, topic: str, message: str | None = None) -> None:
        """The problem is gone; `message` (said only if it had been said) tells the operator so."""
        if self._said.pop(topic, None) is not None and message:
            logger.info(message)

    def messages(self) -> list[str]:
        """Every problem open now, for status."""
        return sorted(self._said.values())
