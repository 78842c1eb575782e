"""Orphaned GPU memory, acted on: the engine asked, each orphan said once, the opt-in kill.

The judgement is `orphans` (pure); this is its edge. A process of a container that
no longer runs is killed only with `gpu.kill_orphans` and never in dry-run; memory
held by a gone process can only be freed by a GPU reset, so it is reported, never
killed.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from loguru import logger

from watchdog.config import Config
from watchdog.containers.engine import ENGINE_ERRORS
from watchdog.entries import EntryKind
from watchdog.gpu.orphans import Orphan, confirm, needs_engine, suspects
from watchdog.gpu.readings import GpuSnapshot
from watchdog.model import ContainerSnapshot, ContainerState
from watchdog.units import format_bytes

if TYPE_CHECKING:
    import docker

    from watchdog.journal import Journal


class OrphanWatch:
    """Finds orphaned GPU memory on each new reading and says each orphan once (per GPU and PID)."""

    def __init__(self, config: Config, journal: Journal, client: docker.DockerClient) -> None:
        self.config = config
        self.journal = journal
        self.client = client
        self._seen: set[tuple[str, int]] = set()

    def apply_config(self, config: Config) -> None:
        self.config = config

    def check(
        self,
        gpus: Sequence[GpuSnapshot],
        owners: Mapping[int, str] | None,
        containers: Sequence[ContainerSnapshot],
        now: float,
    ) -> list[dict[str, Any]]:
        """GPU processes of no live container and no live host process (host PIDs only), as status rows."""
        running = {c.id for c in containers if c.state == ContainerState.RUNNING}
        candidates = suspects(gpus, owners, running)
        if not candidates:
            return []
        live = self._running_container_ids() if needs_engine(candidates) else set()
        found = confirm(candidates, live)
        for orphan in found:
            self._say_once(orphan, now)
        return [orphan.row() for orphan in found]

    def _say_once(self, orphan: Orphan, now: float) -> None:
        seen = (orphan.gpu, orphan.pid)
        if seen in self._seen:
            return
        self._seen.add(seen)
        memory = format_bytes(orphan.memory) if orphan.memory is not None else "unknown memory"
        text = f"orphaned GPU memory on GPU {orphan.index}: PID {orphan.pid} holds {memory}; {orphan.why}"
        killed = self._kill(orphan)
        logger.bind(gpu=orphan.gpu, pid=orphan.pid).warning(text + killed)
        self.journal.record(EntryKind.ORPHAN, text + killed, ts=now, gpus=(orphan.gpu,), detail={"pid": orphan.pid})

    def _kill(self, orphan: Orphan) -> str:
        """What became of the process, as the tail of the orphan's line ("" when it is left alone)."""
        if orphan.process_gone or not self.config.gpu.kill_orphans or self.config.dry_run:
            return ""
        try:
            os.kill(orphan.pid, signal.SIGKILL)
        except OSError as exc:
            return f" (kill failed: {exc.strerror})"
        return " (killed: gpu.kill_orphans)"

    def _running_container_ids(self) -> set[str] | None:
        try:
            return {c["Id"] for c in self.client.api.containers(quiet=True)}
        except ENGINE_ERRORS:
            return None
