"""Reconcile actions a killed watchdog left in flight, from what the engine shows now.

Such an action is never repeated blindly: it is finished as completed (the
engine finished the restart) or interrupted (it counts toward the breaker).
"""

from __future__ import annotations

from collections.abc import Callable

from loguru import logger

from watchdog.containers.engine import DockerProbe, EngineUnavailable
from watchdog.containers.own_actions import OwnActionWindows
from watchdog.entries import EntryKind
from watchdog.journal import Journal


def reconcile_unfinished(
    journal: Journal, docker: DockerProbe, own: OwnActionWindows, clock: Callable[[], float]
) -> None:
    """Finish every unfinished action row with the outcome the engine shows."""
    for action in journal.unfinished_actions():
        now = clock()
        log = logger.bind(container=action.container, action_id=action.id)
        try:
            current = docker.inspect(action.container_id)
        except EngineUnavailable as exc:
            log.warning("cannot reconcile action {} yet: engine unavailable ({})", action.id, exc)
            continue
        if action.dry_run:
            outcome = "dry-run (reconciled)"
        elif current is None:
            outcome = "interrupted: container gone (reconciled at start-up)"
        elif current.started_at is not None and current.started_at >= action.started_at - 1.0:
            outcome = "ok (completed while the watchdog was down; reconciled at start-up)"
        else:
            outcome = "interrupted (reconciled at start-up; counts toward the breaker, not repeated blindly)"
        journal.finish_action(action.id, outcome, ts=now)
        journal.record(
            EntryKind.RECONCILED,
            f"{action.kind} of {action.container} started {now - action.started_at:.1f} s ago: {outcome}",
            ts=now,
            container=action.container,
            container_id=action.container_id,
            fault=action.fault,
            action_id=action.id,
        )
        own.close(action.container_id, action.started_at, now)
        log.warning("reconciled {} started before a watchdog restart: {}", action.kind, outcome)
