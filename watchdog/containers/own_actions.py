"""The watchdog's own actions in time: engine events inside these windows are its own."""

from __future__ import annotations

import threading
from dataclasses import dataclass

OWN_EVENT_SLACK = 1.0  # engine events this long after our action ended are still ours


@dataclass
class _Window:
    started: float
    ended: float | None = None  # None: still acting
    start_seen: float | None = None  # the container's `start` event from this action

    def inside(self, at: float) -> bool:
        return (
            at >= self.started - 0.05
            and (self.ended is None or at <= self.ended + OWN_EVENT_SLACK)
            and (self.start_seen is None or at <= self.start_seen)
        )


class OwnActionWindows:
    """When the watchdog itself acted on each container: engine events inside are its own.

    A restart of a running container emits kill, die and stop; those must never be taken
    for an operator's `docker stop`. Shared by the loop and the action workers, so locked.
    """

    def __init__(self) -> None:
        self._windows: dict[str, list[_Window]] = {}
        self._lock = threading.Lock()

    def open(self, container_id: str, started: float, ended: float | None = None) -> None:
        with self._lock:
            self._windows.setdefault(container_id, []).append(_Window(started, ended))

    def close(self, container_id: str, started: float, ended: float) -> None:
        """Close the window opened at `started` (and any left open before it, e.g. by a killed watchdog)."""
        with self._lock:
            for window in self._windows.get(container_id, []):
                if window.ended is None and window.started <= started:
                    window.ended = ended

    def covers(self, container_id: str, at: float) -> bool:
        with self._lock:
            return any(window.inside(at) for window in self._windows.get(container_id, []))

    def saw_start(self, container_id: str, at: float) -> None:
        """Our restart's `start` event: what the container does after it (dies at once, say) is its own doing."""
        with self._lock:
            for window in self._windows.get(container_id, []):
                if window.inside(at) and window.start_seen is None:
                    window.start_seen = at

    def prune(self, horizon: float) -> None:
        """Closed windows older than any event that could still be replayed are not needed."""
        with self._lock:
            for container_id in list(self._windows):
                kept = [w for w in self._windows[container_id] if w.ended is None or w.ended >= horizon]
                if kept:
                    self._windows[container_id] = kept
                else:
                    del self._windows[container_id]
