"""The journal, log and metric side of the fault bookkeeping: said once per episode.

`containers.fault_book.FaultBook` decides what is new (a fault detected, a fault over, a verdict
that changed, a dry-run restart not yet announced); this module says it: a journal entry, a log
line and a metric for each, and nothing for what was already said.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from loguru import logger

from watchdog.containers.fault_book import FaultBook, FaultChanges
from watchdog.entries import EntryKind
from watchdog.entries import verdict as verdict_entry
from watchdog.journal import Journal
from watchdog.model import Decision, Diagnosis, Fault, Verdict
from watchdog.ops.metrics import Metrics

if TYPE_CHECKING:
    from loguru import Logger


def _log_of(fault: Fault, verdict: Verdict) -> Logger:
    """A logger bound to a fault's container, GPUs, kind and the verdict on it."""
    return logger.bind(
        container=fault.container, gpu=",".join(fault.gpus), fault=fault.kind.value, verdict=verdict.value
    )


class FaultRecorder:
    """Journals and logs the faults' lives and the planner's verdicts, each once."""

    def __init__(self, journal: Journal, metrics: Metrics, book: FaultBook | None = None) -> None:
        self.journal = journal
        self.metrics = metrics
        self.book = book if book is not None else FaultBook()

    def observe(self, diagnosis: Diagnosis, present: Collection[str], now: float) -> FaultChanges:
        """This cycle's diagnosis: journal the faults it detected and those that ended."""
        changes = self.book.update(diagnosis, present, now)
        for fault in changes.detected:
            self.metrics.fault_detected(fault.container, fault.kind.value)
            logger.bind(container=fault.container, gpu=",".join(fault.gpus), fault=fault.kind.value).warning(
                "fault detected: {} {}: {}", fault.container, fault.kind.value, fault.reason
            )
            self.journal.record(
                EntryKind.DETECTED,
                fault.reason,
                ts=now,
                container=fault.container,
                container_id=fault.container_id,
                gpus=fault.gpus,
                fault=fault.kind.value,
                detail={"since": fault.since, **(fault.evidence or {})},
            )
        for ended in changes.ended:
            fault = ended.fault
            if ended.outcome == EntryKind.RECOVERED:
                self.metrics.recovered(fault.kind.value, ended.duration)
            logger.bind(container=fault.container, fault=fault.kind.value).info("{}: {}", fault.container, ended.text)
            self.journal.record(
                ended.outcome,
                ended.text,
                ts=now,
                container=fault.container,
                container_id=fault.container_id,
                gpus=fault.gpus,
                fault=fault.kind.value,
                duration=ended.duration,
            )
        return changes

    def verdict(self, decision: Decision, now: float) -> None:
        """A verdict other than a restart: journaled when it changes; a give-up is said every time it trips."""
        fault = decision.fault
        log = _log_of(fault, decision.verdict)
        if decision.verdict == Verdict.GIVE_UP:
            self.journal.give_up(fault.container, ts=now)
            log.critical(
                "GIVING UP on {}: {}. Fix it, then `gpu-watchdog reset {}`",
                fault.container,
                decision.reason,
                fault.container,
            )
        if not self.book.verdict_is_news(decision):
            return
        if decision.verdict != Verdict.GIVE_UP:
            log.info("{}: {}: {}", fault.container, decision.verdict.value, decision.reason)
        self.journal.record(
            verdict_entry(decision.verdict.value),
            decision.reason,
            ts=now,
            container=fault.container,
            container_id=fault.container_id,
            gpus=fault.gpus,
            fault=fault.kind.value,
        )

    def would_restart(self, decision: Decision, now: float) -> None:
        """Dry run: announce the restart it would make, once per container and kind of fault."""
        fault = decision.fault
        if not self.book.first_dry_run(fault):
            return
        _log_of(fault, decision.verdict).warning("DRY-RUN: would restart {} ({})", fault.container, decision.reason)
        self.journal.record(
            EntryKind.DRY_RUN,
            f"would restart: {decision.reason}",
            ts=now,
            container=fault.container,
            container_id=fault.container_id,
            gpus=fault.gpus,
            fault=fault.kind.value,
        )

    def restart_issued(self, decision: Decision) -> None:
        self.book.restart_issued(decision)
