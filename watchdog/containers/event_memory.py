"""Event memory: each container's history of engine events, and what an event means.

Pure: no I/O (the own-action windows are in-memory). The loop feeds it the engine's events in
order (`daemon.event_intake`); what it returns says what to journal: an operator's stop is a
deliberate stop (marked, so it survives a restart of the watchdog), a later start clears it,
a destroy forgets the container. Events inside the watchdog's own action windows (a restart's
kill, die, stop and start) are its own and never an operator's; after our restart's `start`
event, what the container does (dies at once, say) is its own doing again: a crash loop the
breaker must see.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from enum import StrEnum

from watchdog.containers.diagnose import remember_event
from watchdog.containers.own_actions import OwnActionWindows
from watchdog.model import ContainerHistory, EngineEvent


class EventMeaning(StrEnum):
    """What one engine event means for the watchdog."""

    OWN = "own"  # inside the watchdog's own action window: not remembered
    REMEMBERED = "remembered"  # folded into the container's history (kill, die, oom, a start with no stop mark)
    OPERATOR_STOP = "operator-stop"  # `docker stop` by someone: a deliberate stop, left stopped
    STARTED_AFTER_STOP = "started-after-stop"  # someone started a deliberately stopped container: heal it again
    DESTROYED = "destroyed"  # removed: its history is forgotten


class EventMemory:
    """Container ID -> its remembered history; the own-action windows tell our events from others'."""

    def __init__(self, own: OwnActionWindows) -> None:
        self.own = own
        self.histories: dict[str, ContainerHistory] = {}

    def take(self, event: EngineEvent) -> EventMeaning:
        """Fold one event in (events arrive in the engine's order) and say what it meant."""
        if self.own.covers(event.container_id, event.at):
            if event.action == "start":
                self.own.saw_start(event.container_id, event.at)
            return EventMeaning.OWN
        before = self.histories.get(event.container_id, ContainerHistory())
        self.histories[event.container_id] = remember_event(before, event)
        if event.action == "stop":
            return EventMeaning.OPERATOR_STOP
        if event.action == "start" and before.manual_stop_at is not None:
            return EventMeaning.STARTED_AFTER_STOP
        if event.action == "destroy":
            self.histories.pop(event.container_id, None)
            return EventMeaning.DESTROYED
        return EventMeaning.REMEMBERED

    def load_stop_marks(self, marks: Mapping[str, float]) -> None:
        """Deliberate stops the journal kept across a restart of the watchdog."""
        for container_id, stopped_at in marks.items():
            self.histories[container_id] = ContainerHistory(manual_stop_at=stopped_at)

    def keep_only_stop_marks(self, marks: Mapping[str, float]) -> None:
        """Another process (`gpu-watchdog reset`) cleared stop marks: those containers are healed again."""
        for container_id, history in list(self.histories.items()):
            if history.manual_stop_at is not None and container_id not in marks:
                self.histories[container_id] = replace(history, manual_stop_at=None)

    def heal_requested(self, container_id: str, reset_at: float) -> None:
        """An operator's reset asks to heal the container even if its stop looked deliberate."""
        history = self.histories.get(container_id, ContainerHistory())
        if history.heal_requested_at != reset_at:
            self.histories[container_id] = replace(history, heal_requested_at=reset_at)
