"""GPU faults answered: the Xid queue and its history, and lost GPUs.

Xids arrive on a queue from the event thread (`xid_events`) and, at start, from the
kernel log; each cycle drains it. Per Xid: find which GPU it is about, classify it
against the table and the recent history (repeats escalate), journal it, and carry
out the response: restart requests for the loop, marks and alerts through the
`MarkBook`, and the opt-in reset through the callback it was given. A GPU NVML calls
lost is quarantined (or, past the cap, alerted) the same way.
"""

from __future__ import annotations

import queue
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from loguru import logger

from watchdog.config import Config
from watchdog.entries import EntryKind
from watchdog.gpu.assignment import GONE, HOST, GpuAssignment, gpu_key
from watchdog.gpu.kernel_log import scan_kernel_log
from watchdog.gpu.mark_book import MarkBook
from watchdog.gpu.marks import GpuCondition, XidResponse, mark_or_alert, respond_to_xid
from watchdog.gpu.pid_map import owner_of
from watchdog.gpu.readings import GpuSnapshot, normalise_bus_id
from watchdog.gpu.xid import XidTable, XidVerdict, classify, default_table, with_overrides
from watchdog.model import ContainerSnapshot, XidEvent

if TYPE_CHECKING:
    from watchdog.journal import Journal

XID_HISTORY = 24 * 3600.0  # long enough for the widest escalation window of the shipped table
XID_HISTORY_MAX = 10_000


def identify(event: XidEvent, gpus: Sequence[GpuSnapshot]) -> XidEvent:
    """The event keyed like everything GPU-side (by UUID, else index), matched by UUID, bus ID or index."""
    for gpu in gpus:
        same_bus = event.bus_id is not None and gpu.bus_id is not None and normalise_bus_id(gpu.bus_id) == event.bus_id
        if (event.gpu_uuid and gpu.uuid == event.gpu_uuid) or same_bus or event.gpu_index == gpu.index:
            return replace(event, gpu_uuid=gpu_key(gpu), gpu_index=gpu.index)
    return event


class XidResponder:
    """Drains the Xid queue each cycle and answers each Xid; keeps what the loop must act on."""

    def __init__(
        self, config: Config, journal: Journal, book: MarkBook, start_reset: Callable[[str, float, str], None]
    ) -> None:
        self.config = config
        self.journal = journal
        self.book = book
        self._start_reset = start_reset
        self.table: XidTable = with_overrides(default_table(), config.gpu.xid_overrides, "gpu.xid_overrides")
        self.queue: queue.Queue[XidEvent] = queue.Queue()
        self.history: deque[XidEvent] = deque(maxlen=XID_HISTORY_MAX)
        self.requests: dict[str, tuple[float, str]] = {}  # container ID -> (at, why): restart it
        self.counts: dict[str, int] = {}  # GPU key -> Xids seen

    def apply_config(self, config: Config) -> None:
        self.config = config
        self.table = with_overrides(default_table(), config.gpu.xid_overrides, "gpu.xid_overrides")

    def scan_kernel_log(self, path: str) -> None:
        """Xids logged while the watchdog was not running are answered in the first cycle."""
        last = self.journal.get_meta("kernel_log_until")
        scan = scan_kernel_log(Path(path), since=float(last) if last else None)
        if scan.error:
            logger.info("kernel log not scanned for earlier Xids: {}", scan.error)
        for event in scan.events:
            self.queue.put(event)
        if scan.events:
            logger.warning("kernel log: {} Xid line(s) since the last scan", len(scan.events))
            self.journal.set_meta("kernel_log_until", repr(max(e.at for e in scan.events)))

    def lost(self, gpu: GpuSnapshot, count: int, now: float) -> None:
        """A GPU fallen off the bus: quarantine it (within the cap) and alert once."""
        key = gpu_key(gpu)
        reason = f"GPU {gpu.index} is lost (NVML: GPU is lost; fallen off the bus): it needs a host reboot"
        fraction = self.config.gpu.max_quarantined_fraction
        response = mark_or_alert(
            key,
            gpu.index,
            GpuCondition.QUARANTINED,
            reason,
            self.book.marks,
            gpu_count=count,
            fraction=fraction,
            now=now,
        )
        self._carry_out(response, key, now, fault="gpu-lost", topic="quarantine")

    def drain(
        self,
        gpus: Sequence[GpuSnapshot],
        owners: Mapping[int, str] | None,
        assignments: Mapping[str, GpuAssignment],
        now: float,
    ) -> None:
        """Answer every queued Xid. `owners` None: PID mapping off (a culprit PID is looked up alone)."""
        while True:
            try:
                event = self.queue.get_nowait()
            except queue.Empty:
                break
            self._answer(identify(event, gpus), len(gpus), owners, assignments, now)

    def _answer(
        self,
        event: XidEvent,
        gpu_count: int,
        owners: Mapping[int, str] | None,
        assignments: Mapping[str, GpuAssignment],
        now: float,
    ) -> None:
        self.history.append(event)
        while self.history and self.history[0].at < now - XID_HISTORY:
            self.history.popleft()
        verdict = classify(event, self.table, self.history)
        key = event.gpu_uuid or "unknown"
        self.counts[key] = self.counts.get(key, 0) + 1
        response = respond_to_xid(
            verdict,
            event.gpu_uuid,
            event.gpu_index,
            self.book.marks,
            gpu_count=gpu_count,
            assignments=assignments,
            culprit=self._culprit(event, owners, assignments),
            reset_enabled=self.config.gpu.reset,
            fraction=self.config.gpu.max_quarantined_fraction,
            now=now,
        )
        self._journal(event, verdict)
        for container_id in response.restart:
            if container_id not in self.requests:
                self.requests[container_id] = (event.at, verdict.reason)
        self._carry_out(response, key, now, fault=f"xid-{event.xid}", topic=verdict.action.value)

    @staticmethod
    def _culprit(
        event: XidEvent, owners: Mapping[int, str] | None, assignments: Mapping[str, GpuAssignment]
    ) -> str | None:
        """The managed container the Xid's PID belongs to, if it says one and that one is ours."""
        if event.pid is None:
            return None
        owner = owners.get(event.pid) if owners is not None else owner_of(event.pid)
        return owner if owner not in (None, HOST, GONE) and owner in assignments else None

    def _journal(self, event: XidEvent, verdict: XidVerdict) -> None:
        self.journal.record(
            EntryKind.XID,
            verdict.reason,
            ts=event.at,
            gpus=(event.gpu_uuid,) if event.gpu_uuid else (),
            fault=f"xid-{event.xid}",
            detail={"xid": event.xid, "action": verdict.action.value, "source": event.source, "pid": event.pid},
        )
        log = logger.bind(gpu=event.gpu_uuid or "?", xid=event.xid, action=verdict.action.value)
        (log.info if verdict.action.value == "log" else log.warning)("Xid: {}", verdict.reason)

    def _carry_out(self, response: XidResponse, key: str, now: float, *, fault: str, topic: str) -> None:
        if self.book.apply(response, key, now, fault=fault, topic=topic):
            self._start_reset(key, now, fault)

    def prune(self, containers: Sequence[ContainerSnapshot]) -> None:
        """A restart request ends when its container is gone or has started since the Xid."""
        by_id = {c.id: c for c in containers}
        for container_id, (at, _) in list(self.requests.items()):
            container = by_id.get(container_id)
            if container is None or (container.started_at is not None and container.started_at > at):
                del self.requests[container_id]
