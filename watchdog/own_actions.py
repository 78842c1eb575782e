"""The watchdog's own actions in time: engine events inside these windows are its own."""

from __future__ import annotations

import threading

OWN_EVENT_SLACK = 1.0  # engine events this long after our action ended are still ours


class OwnActionWindows:
    """When the watchdog itself acted on each container: engine events inside are its own.

    A restart of a running container emits kill, die and stop; those must never be taken
    for an operator's `docker stop`. Shared by the loop and the action workers, so locked.
    """

    def __init__(self) -> None:
        self._windows: dict[str, list[tuple[float, float | None]]] = {}
        self._lock = threading.Lock()

    def open(self, container_id: str, started: float, ended: float | None = None) -> None:
        with self._lock:
            self._windows.setdefault(container_id, []).append((started, ended))

    def close(self, container_id: str, started: float, ended: float) -> None:
        """Close the window opened at `started` (and any left open before it, e.g. by a killed watchdog)."""
        with self._lock:
            windows = self._windows.get(container_id, [])
            windows[:] = [(s, ended) if e is None and s <= started else (s, e) for s, e in windows]

    def covers(self, container_id: str, at: float) -> bool:
        with self._lock:
            return any(
                at >= started - 0.05 and (ended is None or at <= ended + OWN_EVENT_SLACK)
                for started, ended in self._windows.get(container_id, [])
            )

    def prune(self, horizon: float) -> None:
        """Closed windows older than any event that could still be replayed are not needed."""
        with self._lock:
            for container_id in list(self._windows):
                kept = [(s, e) for s, e in self._windows[container_id] if e is None or e >= horizon]
                if kept:
                    self._windows[container_id] = kept
                else:
                    del self._windows[container_id]
