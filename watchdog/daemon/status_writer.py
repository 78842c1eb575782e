"""The daemon's view for `gpu-watchdog status` and the metrics, and the heartbeat. I/O.

Written after every cycle (atomic replace, so a reader never sees half a file); the heartbeat
in the journal at most once a poll interval, so `status` can tell a live daemon from a dead one.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path
from typing import Any

from loguru import logger

from watchdog.journal import Journal
from watchdog.ops.metrics import Metrics
from watchdog.ops.status import STATUS_FILE, daemon_view
from watchdog.subsystem import CycleView

HEARTBEAT_META = "heartbeat"  # journal meta key: when the daemon last finished a cycle


class StatusWriter:
    """Writes STATUS_FILE in the state directory and the journal's heartbeat."""

    def __init__(self, journal: Journal, metrics: Metrics, state_dir: Path) -> None:
        self.journal = journal
        self.metrics = metrics
        self.state_dir = state_dir
        self._heartbeat_written = 0.0

    def write(
        self,
        view: CycleView,
        now: float,
        *,
        restarting: Collection[str],
        router: dict[str, Any],
        dry_run: bool,
        engine_up: bool,
        heartbeat_every: float,
    ) -> None:
        """The daemon's view (atomic replace), the metrics it implies, and the heartbeat when due."""
        status = daemon_view(
            view.containers,
            view.diagnosis,
            view.decisions,
            view.histories,
            set(restarting),
            now=now,
            dry_run=dry_run,
            engine_up=engine_up,
            journal_write_failures=self.journal.write_failures,
        )
        status["gpu"] = view.gpu.view
        status["router"] = router
        self.metrics.observe(
            view.containers, view.diagnosis, view.decisions, view.gpu.view, router, engine_up=engine_up
        )
        path = self.state_dir / STATUS_FILE
        try:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(status))
            tmp.replace(path)
        except OSError as exc:
            logger.error("cannot write {}: {}", path, exc)
        if now - self._heartbeat_written >= heartbeat_every:
            self._heartbeat_written = now
            self.journal.set_meta(HEARTBEAT_META, repr(now))
