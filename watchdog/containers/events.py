"""Engine events in a background thread: they wake the loop at once.

The poll is the safety net; events make detection fast and tell a deliberate
`docker stop` (kill + die + stop) from a `docker kill` or crash (no stop).
The stream blocks without a timeout, so `stop()` closes it from outside; after
an engine restart it reconnects with `since=` the last event seen.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import docker
from loguru import logger

from watchdog.containers.engine import ENGINE_ERRORS
from watchdog.model import EngineEvent

# "update": `docker update` changed a limit; the cached inspect is dropped so drift shows at once.
WATCHED_ACTIONS = ["die", "oom", "health_status", "start", "stop", "kill", "destroy", "update"]


def parse_event(raw: dict[str, Any]) -> EngineEvent | None:
    """Read Action and Actor (not the deprecated status/id fields)."""
    if raw.get("Type") != "container":
        return None
    actor = raw.get("Actor") or {}
    attributes = actor.get("Attributes") or {}
    action = str(raw.get("Action") or "")
    if action.startswith("health_status"):
        action = "health_status"

    def as_int(value: Any) -> int | None:
        try:
            return int(value)
        except (TypeError, ValueError):
            return None

    at = raw.get("timeNano")
    return EngineEvent(
        at=at / 1e9 if at else float(raw.get("time") or time.time()),
        container_id=str(actor.get("ID") or ""),
        action=action,
        name=str(attributes.get("name") or ""),
        signal=as_int(attributes.get("signal")),
        exit_code=as_int(attributes.get("exitCode")),
    )


def _refused(stream: Any) -> str | None:
    """Why the engine (or a proxy in front of it) answered /events with an error status, else None."""
    status = getattr(getattr(stream, "_response", None), "status_code", None)
    if isinstance(status, int) and status >= 400:
        return f"event stream refused: HTTP {status} (a socket proxy must allow GET /events)"
    return None


class EventWatcher:
    """Feeds engine events to a callback; reconnects with backoff when the engine goes away."""

    def __init__(
        self,
        client_factory: Callable[[], docker.DockerClient],
        label: str,
        on_event: Callable[[EngineEvent], None],
        on_connection: Callable[[bool, str], None] | None = None,
    ) -> None:
        self._client_factory = client_factory
        self._label = label
        self._on_event = on_event
        self._on_connection = on_connection
        self._stopping = threading.Event()
        self._stream: Any = None
        self._thread: threading.Thread | None = None
        self.last_event_at: float | None = None
        self.connected = False
        self._said = False

    def start(self, since: float | None) -> None:
        self.last_event_at = since
        self._thread = threading.Thread(target=self._run, name="docker-events", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        stream = self._stream
        if stream is not None:
            with contextlib.suppress(Exception):  # best effort
                stream.close()
        if self._thread is not None:
            self._thread.join(3)

    def _set_connected(self, connected: bool, why: str) -> None:
        """Said on each change, and the first time: a stream never opened is said once too."""
        if connected != self.connected or not self._said:
            self._said = True
            self.connected = connected
            if self._on_connection is not None:
                self._on_connection(connected, why)

    def _run(self) -> None:
        backoff = 0.5
        while not self._stopping.is_set():
            try:
                client = self._client_factory()
                filters = {"type": "container", "event": WATCHED_ACTIONS, "label": [self._label]}
                kwargs: dict[str, Any] = {"decode": True, "filters": filters}
                if self.last_event_at is not None:
                    kwargs["since"] = self.last_event_at
                self._stream = client.events(**kwargs)
                refused = _refused(self._stream)
                if refused:  # the SDK does not raise for /events: e.g. a socket proxy's 403 reads as one "event"
                    self._stream.close()
                    self._set_connected(False, refused)
                    self._stopping.wait(backoff)
                    backoff = min(backoff * 2, 10.0)
                    continue
                self._set_connected(True, "event stream open")
                backoff = 0.5
                for raw in self._stream:
                    if self._stopping.is_set():
                        break
                    event = parse_event(raw)
                    if event is None:
                        continue
                    self.last_event_at = max(self.last_event_at or 0.0, event.at)
                    self._on_event(event)
                if not self._stopping.is_set():
                    self._set_connected(False, "event stream ended")
            except ENGINE_ERRORS as exc:
                if self._stopping.is_set():
                    break
                self._set_connected(False, str(exc))
            except Exception as exc:  # never let the thread die silently
                logger.exception("event watcher error: {}", exc)
                self._set_connected(False, str(exc))
            self._stopping.wait(backoff)
            backoff = min(backoff * 2, 10.0)
