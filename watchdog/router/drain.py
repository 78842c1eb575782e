"""Drains: a deployment out of rotation until its in-flight requests are done, then the action.

Pure: time comes in as `now`. A drain is asked for before a planned disruption (a restart for
a fault that can wait, a GPU reset the Xid table plans, an operator's `gpu-watchdog drain`).
From then on its container is out of rotation ("draining: ..."); it is *drained* once every
source of in-flight counts that is available says 0 (the proxy's count of attempts sent to the
deployment and not yet ended, streams at their end; the server's own requests running and
waiting), or *timed out* when `timeout` passed with requests still in flight (the action goes
ahead then, and the journal says so). A source read before the drain began says nothing of it:
the proxy's report counts only once SETTLE seconds have passed (the rotation reaches the proxy
at its next attempt, its report within a second), the server's sample only when taken after
the start. With no source at all the drain ends after SETTLE: nothing could show it busy.

`DrainBoard` holds the drains in force (by container ID) for the loop's parts: the planner
reads which are done, the rotation writer which are out, the GPU reset waits on its containers.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

SETTLE = 2.0  # s before a drain may end: the rotation reaches the proxy, and its report the watchdog
RECHECK = 1.0  # s between two looks at a drain in progress (its sources change without waking the loop)


class DrainState(StrEnum):
    DRAINING = "draining"
    DRAINED = "drained"
    TIMED_OUT = "timed-out"


class DrainPurpose(StrEnum):
    RESTART = "restart"  # a restart for a fault that can wait
    GPU_RESET = "gpu-reset"  # a planned GPU reset
    OPERATOR = "operator"  # `gpu-watchdog drain`: stays out until `gpu-watchdog drain --end`


@dataclass(frozen=True)
class Drain:
    container_id: str
    container: str
    purpose: DrainPurpose
    why: str  # what the drain is for, for the rotation's reason and the journal
    started_at: float
    timeout: float
    state: DrainState = DrainState.DRAINING
    ended_at: float | None = None
    in_flight: int | None = None  # the last count seen (the larger of the sources); None: no source yet
    reason: str = ""  # how it ended

    @property
    def done(self) -> bool:
        return self.state != DrainState.DRAINING


@dataclass(frozen=True)
class InFlightSeen:
    """One container's in-flight requests as each source shows them now."""

    router: int | None = None  # the proxy's attempts in flight (None: no fresh report of it)
    server: int | None = None  # the server's requests running + waiting (None: no counters)
    server_at: float | None = None  # when the server's sample was taken


def step(drain: Drain, seen: InFlightSeen, now: float) -> Drain:
    """The drain one cycle on: still draining, drained, or timed out."""
    if drain.done:
        return drain
    waited = now - drain.started_at
    router = seen.router if waited >= SETTLE else None
    server = seen.server if seen.server_at is not None and seen.server_at >= drain.started_at else None
    counts = {name: n for name, n in (("proxy", router), ("server", server)) if n is not None}
    busy = max(counts.values(), default=None)
    said = ", ".join(f"{name} {n}" for name, n in counts.items())
    if waited >= SETTLE and busy == 0:
        return replace(
            drain, state=DrainState.DRAINED, ended_at=now, in_flight=0, reason=f"drained in {waited:.1f} s ({said})"
        )
    if waited >= SETTLE and busy is None and seen.router is None and seen.server is None:
        return replace(
            drain,
            state=DrainState.DRAINED,
            ended_at=now,
            reason=f"nothing shows its in-flight requests (no proxy report, no server counters): went on after "
            f"{waited:.1f} s",
        )
    if waited >= drain.timeout:
        return replace(
            drain,
            state=DrainState.TIMED_OUT,
            ended_at=now,
            in_flight=busy,
            reason=f"drain timed out after {drain.timeout:g} s with requests still in flight ({said or 'unknown'}); "
            "going ahead",
        )
    return replace(drain, in_flight=busy if busy is not None else drain.in_flight)


class DrainBoard:
    """The drains in force, by container ID. No I/O: the drain watch journals what changes."""

    def __init__(self) -> None:
        self.drains: dict[str, Drain] = {}

    def request(self, drain: Drain) -> bool:
        """Begin `drain` unless its container has one already (True: a new one)."""
        if drain.container_id in self.drains:
            return False
        self.drains[drain.container_id] = drain
        return True

    def advance(self, seen: Mapping[str, InFlightSeen], now: float) -> list[Drain]:
        """Step every drain; the ones that ended now."""
        ended = []
        for cid, drain in list(self.drains.items()):
            after = step(drain, seen.get(cid, InFlightSeen()), now)
            self.drains[cid] = after
            if after.done and not drain.done:
                ended.append(after)
        return ended

    def recheck_at(self, now: float) -> float | None:
        """When the loop should look again: soon while a drain is in progress, else None."""
        return now + RECHECK if any(not d.done for d in self.drains.values()) else None

    def finished(self, container_ids: Collection[str] | None = None) -> set[str]:
        """Container IDs whose drain ended (drained or timed out), of `container_ids` if given."""
        ids = self.drains if container_ids is None else [c for c in container_ids if c in self.drains]
        return {c for c in ids if self.drains[c].done}

    def out(self) -> dict[str, str]:
        """Container ID -> why it is out of rotation (every drain in force, ended or not)."""
        return {cid: f"{d.state.value if d.done else 'draining'}: {d.why}" for cid, d in self.drains.items()}

    def release(self, container_ids: Collection[str]) -> list[Drain]:
        """The action went ahead (or is no longer wanted): the drains end; the rotation's own rules apply again."""
        return [self.drains.pop(c) for c in list(container_ids) if c in self.drains]

    def of(self, purpose: DrainPurpose) -> dict[str, Drain]:
        return {cid: d for cid, d in self.drains.items() if d.purpose == purpose}

    def view(self) -> dict[str, dict[str, object]]:
        """For status: container name -> its drain."""
        return {
            d.container: {
                "purpose": d.purpose.value,
                "why": d.why,
                "state": d.state.value,
                "since": d.started_at,
                "timeout": d.timeout,
                "in_flight": d.in_flight,
                "ended": d.reason or None,
            }
            for d in sorted(self.drains.values(), key=lambda d: d.container)
        }
