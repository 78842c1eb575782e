"""Restarts in flight: what each holds (a slot, the RAM it loads) and when it lets go.

Pure: no I/O, time passed in. `daemon.restarts.RestartTracker` issues the calls and journals
their ends; what a restart in flight costs the budget and when it is settled is decided here.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass

from watchdog.containers.diagnose import Recovery, recovery_of
from watchdog.containers.plan import RestartBudget
from watchdog.model import ContainerSnapshot, Fault


@dataclass
class InFlight:
    """A restart the watchdog issued: it holds a slot until the container is back or times out."""

    action_id: int | None
    container: str
    container_id: str
    fault: Fault
    issued_at: float
    ram: int
    timeout: float
    future: Future[str] | None = None
    outcome: str | None = None  # the restart call's outcome once it returned: "ok", "failed: ...", "not sent: ..."

    @property
    def calling(self) -> bool:
        """The restart call has not returned yet: nothing to settle."""
        return self.future is not None and not self.future.done()


def settlement_of(job: InFlight, container: ContainerSnapshot | None, ready: bool, now: float) -> Recovery:
    """Whether a restart in flight is over, and how; PENDING while it holds its slot.

    A call that failed or never reached the engine frees its slot at once (as TIMED_OUT),
    unless the container came back anyway.
    """
    state = recovery_of(container, ready, job.issued_at, timeout=job.timeout, now=now)
    if job.outcome is not None and job.outcome != "ok" and state != Recovery.RECOVERED:
        return Recovery.TIMED_OUT
    return state


def budget_of(jobs: Iterable[InFlight], mem_available: int | None) -> RestartBudget:
    """What the restarts in flight already spend of the budget the planner may use."""
    jobs = list(jobs)
    return RestartBudget(
        restarts_in_flight=len(jobs), ram_committed=sum(job.ram for job in jobs), mem_available=mem_available
    )
