"""Fault bookkeeping between cycles: which faults are new, which ended and how, which verdicts are news.

Pure: no I/O, time passed in. The loop journals, logs and counts what this returns (see
`daemon.fault_record`); keeping the decisions here means each is said once per episode:
a fault is detected once per container life and kind, ends once (recovered, or cleared when
the container is removed or stopped on purpose), and a verdict other than a restart is
journaled when it changes, not every cycle it holds.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from watchdog.entries import EntryKind
from watchdog.model import Decision, Diagnosis, Fault, NoteKind, Verdict


@dataclass(frozen=True)
class FaultEnded:
    """A fault that is over: recovered (healthy again) or cleared (removed, stopped on purpose)."""

    fault: Fault
    outcome: EntryKind  # EntryKind.RECOVERED or EntryKind.CLEARED
    text: str  # what the operator reads: "healthy again after 12.3 s", "container removed"
    duration: float  # since the fault was detected


@dataclass(frozen=True)
class FaultChanges:
    """What one diagnosis changed: faults detected this cycle, faults that ended."""

    detected: tuple[Fault, ...] = ()
    ended: tuple[FaultEnded, ...] = ()


def ending_of(
    fault: Fault, container_id: str, diagnosis: Diagnosis, present: Collection[str], now: float
) -> FaultEnded | None:
    """How a fault no longer diagnosed ended, or None while it is not over (restarting, starting)."""
    stopped_on_purpose = any(
        n.container_id == container_id and n.kind == NoteKind.DELIBERATE_STOP for n in diagnosis.notes
    )
    duration = now - fault.since
    if container_id in diagnosis.ready:
        return FaultEnded(fault, EntryKind.RECOVERED, f"healthy again after {duration:.1f} s", duration)
    if container_id not in present:
        return FaultEnded(fault, EntryKind.CLEARED, "container removed", duration)
    if stopped_on_purpose:
        return FaultEnded(fault, EntryKind.CLEARED, "stopped on purpose", duration)
    return None  # restarting or in its start period: not back yet


class FaultBook:
    """The faults in force, the last verdict said for each, and the dry-run restarts announced.

    One entry per container ID. A fault's episode (kind, container life) is what makes it new:
    the same kind in the same life is not detected twice. When a fault ends, what was said about
    it (its last verdict, its dry-run announcement) is forgotten, so a next episode is said anew.
    """

    def __init__(self) -> None:
        self.active: dict[str, Fault] = {}
        self.last_verdict: dict[str, tuple[Verdict, str]] = {}
        self.dry_run_announced: set[tuple[str, str]] = set()  # (container ID, fault kind)

    def update(self, diagnosis: Diagnosis, present: Collection[str], now: float) -> FaultChanges:
        """Take this cycle's diagnosis; `present`: the IDs of every container the engine shows."""
        current = {f.container_id: f for f in diagnosis.faults}
        detected: list[Fault] = []
        for container_id, fault in current.items():
            known = self.active.get(container_id)
            if known is not None and known.episode == fault.episode:
                continue
            self.active[container_id] = fault
            detected.append(fault)
        ended: list[FaultEnded] = []
        for container_id, fault in list(self.active.items()):
            if container_id in current:
                continue
            ending = ending_of(fault, container_id, diagnosis, present, now)
            if ending is None:
                continue
            del self.active[container_id]
            self.last_verdict.pop(container_id, None)
            self.dry_run_announced = {k for k in self.dry_run_announced if k[0] != container_id}
            ended.append(ending)
        return FaultChanges(tuple(detected), tuple(ended))

    def verdict_is_news(self, decision: Decision) -> bool:
        """Whether this verdict differs from the last one said for the container (and remember it)."""
        container_id = decision.fault.container_id
        previous = self.last_verdict.get(container_id)
        if previous is not None and previous[0] == decision.verdict:
            return False
        self.last_verdict[container_id] = (decision.verdict, decision.reason)
        return True

    def restart_issued(self, decision: Decision) -> None:
        """A restart was issued: a later verdict for the same fault (in progress, give up) is news."""
        self.last_verdict[decision.fault.container_id] = (decision.verdict, decision.reason)

    def first_dry_run(self, fault: Fault) -> bool:
        """Whether a dry-run restart of this container for this kind of fault is still to be announced."""
        key = (fault.container_id, fault.kind.value)
        if key in self.dry_run_announced:
            return False
        self.dry_run_announced.add(key)
        return True
