"""Engine events into the loop: the stream's thread queues them, each cycle drains them. I/O.

`containers.event_memory.EventMemory` decides what an event means; this module journals it
(an operator's stop is marked so it survives a restart of the watchdog, a later start clears
the mark, a destroy forgets it), remembers the last event seen so a restart replays from
there, and loads the deliberate stops and own-action windows the journal kept.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Mapping, Sequence

import docker
from loguru import logger

from watchdog.config import Config
from watchdog.containers.engine import ENGINE_ERRORS
from watchdog.containers.event_memory import EventMeaning, EventMemory
from watchdog.containers.events import WATCHED_ACTIONS, EventWatcher, parse_event
from watchdog.entries import EntryKind
from watchdog.journal import Journal
from watchdog.model import ContainerHistory, ContainerSnapshot, EngineEvent
from watchdog.subsystem import Services

EVENT_REPLAY_DEFAULT = 600.0  # seconds of engine events replayed on a first start
LAST_EVENT_META = "last_event_at"  # journal meta key: the last engine event taken, replayed from at start


class EventIntake:
    """The engine events the loop has not taken yet, and the memory they build."""

    def __init__(self, config: Config, services: Services) -> None:
        self.config = config
        self.journal: Journal = services.journal
        self.clock = services.clock
        self.wake = services.wake
        self.memory = EventMemory(services.own)
        self.watcher: EventWatcher | None = None
        self._queue: queue.Queue[EngineEvent] = queue.Queue()

    @property
    def histories(self) -> dict[str, ContainerHistory]:
        return self.memory.histories

    def apply_config(self, config: Config) -> None:
        self.config = config

    def load(self) -> None:
        """Deliberate stops and own action windows survive restarts of the watchdog."""
        self.memory.load_stop_marks(self.journal.stop_marks())
        horizon = self.clock() - EVENT_REPLAY_DEFAULT
        for action in self.journal.actions(since=horizon):
            if not action.dry_run:
                self.memory.own.open(action.container_id, action.started_at, action.finished_at)

    def _replay_from(self) -> float:
        replay_from = self.journal.get_meta(LAST_EVENT_META)
        return float(replay_from) if replay_from else self.clock() - EVENT_REPLAY_DEFAULT

    def start(self, client_factory: Callable[[], docker.DockerClient]) -> None:
        """The event stream on its own thread, from the last event seen (or the replay horizon)."""
        if not self.config.events:
            return
        since = self._replay_from()
        self.watcher = EventWatcher(
            client_factory, f"{self.config.label_prefix}.enable", self.on_event, self.on_connection
        )
        self.watcher.start(since)

    def replay(self, client: docker.DockerClient) -> None:
        """For one-shot runs: read the engine's buffered events since the last one seen."""
        since = self._replay_from()
        filters = {"type": "container", "event": WATCHED_ACTIONS, "label": [f"{self.config.label_prefix}.enable"]}
        try:
            # The engine takes fractional seconds; the SDK's stubs say int.
            stream = client.events(decode=True, since=since, until=self.clock(), filters=filters)  # type: ignore[call-overload]
            for raw in stream:
                event = parse_event(raw)
                if event is not None:
                    self._queue.put(event)
        except ENGINE_ERRORS as exc:
            logger.warning("could not replay engine events ({}): deliberate stops are judged by exit code", exc)

    def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()

    # -- callbacks from the stream's thread ---------------------------------

    def on_event(self, event: EngineEvent) -> None:
        self._queue.put(event)
        self.wake()

    def on_connection(self, connected: bool, why: str) -> None:
        if connected:
            logger.info("engine event stream connected")
        else:
            logger.warning(
                "engine event stream lost ({}); polling every {} s until it is back", why, self.config.poll_interval
            )
        self.wake()

    # -- the loop's side -----------------------------------------------------

    def queued_ids(self) -> set[str]:
        """The containers that events not taken yet are about: their cached inspects are stale.

        Read before the cycle's snapshot: for a moment after a `die` event the engine's container
        list can still say running (the inspect already says exited), and a snapshot keyed on the
        list would reuse the cached running container until the next poll.
        """
        with self._queue.mutex:
            return {event.container_id for event in self._queue.queue}

    def drain(self, names: Mapping[str, str]) -> set[str]:
        """Take every queued event in order; returns the IDs of the containers they touched."""
        touched: set[str] = set()
        last_at: float | None = None
        while True:
            try:
                event = self._queue.get_nowait()
            except queue.Empty:
                break
            touched.add(event.container_id)
            last_at = max(last_at or 0.0, event.at)
            meaning = self.memory.take(event)
            if meaning != EventMeaning.OWN:
                self._journal(event, meaning, event.name or names.get(event.container_id, event.container_id[:12]))
        self.memory.own.prune(self.clock() - EVENT_REPLAY_DEFAULT)
        if last_at is not None:
            self.journal.set_meta(LAST_EVENT_META, repr(last_at))
        return touched

    def _journal(self, event: EngineEvent, meaning: EventMeaning, name: str) -> None:
        log = logger.bind(container=name, event=event.action)
        if meaning == EventMeaning.OPERATOR_STOP:
            self.journal.mark_stop(event.container_id, name, ts=event.at)
            self.journal.record(
                EntryKind.MANUAL_STOP,
                "stopped by an operator (engine stop event): left stopped until someone starts it",
                ts=event.at,
                container=name,
                container_id=event.container_id,
            )
            log.info("{} was stopped on purpose; it stays stopped until someone starts it", name)
        elif meaning == EventMeaning.STARTED_AFTER_STOP:
            self.journal.clear_stop(event.container_id)
            log.info("{} was started by someone: it is healed again if it fails", name)
        elif meaning == EventMeaning.DESTROYED:
            self.journal.clear_stop(event.container_id)

    def reload(self, containers: Sequence[ContainerSnapshot]) -> None:
        """Another process wrote the journal (`gpu-watchdog reset`): stop marks cleared, heals requested."""
        self.memory.keep_only_stop_marks(self.journal.stop_marks())
        for container in containers:
            history = self.journal.breaker_history(container.name, since=self.clock() - self.config.breaker.window)
            if history.reset_at is not None:
                self.memory.heal_requested(container.id, history.reset_at)
