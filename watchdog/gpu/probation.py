"""Verified return: a released GPU serves again only once proven (the decisions; `return_watch` does the I/O).

Pure. A GPU whose mark is released (by `gpu-watchdog gpu release` or by a verified reset) is on
probation: its containers may be restarted and are probed, but stay out of rotation until
(a) each of them has answered a real 1-token completion, and (b) from the moment the last one
answered, the GPU stays clean for its window: no failed probe or stopped container among those
that answered, no Xid on the GPU, no canary failing `canary_failures` times in a row. A GPU
that fails inside its probation is marked again (as it was; a reset's GPU is drained) and its
next window is longer: `window` x 2^strikes, at most `max_window`; strikes are forgotten after
`clean_after` seconds without a failure.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from watchdog.gpu.health_score import ClassedXid
from watchdog.gpu.marks import GpuCondition, GpuMark
from watchdog.gpu.xid import XidAction
from watchdog.model import ContainerSnapshot, ContainerState, ProbeResult, ProbeStatus


@dataclass(frozen=True)
class ProbationConfig:
    """The `gpu.probation` section."""

    enabled: bool = True
    window: float = 60.0  # s clean after the last canary answered (the first probation)
    max_window: float = 960.0  # the longest window, however many strikes
    clean_after: float = 3600.0  # s without a failure after which a GPU's strikes are forgotten
    canary_interval: float = 2.0  # s between 1-token completions to a container that has not answered yet
    canary_timeout: float = 10.0  # s one 1-token completion may take
    canary_failures: int = 2  # failed completions in a row that fail the probation


@dataclass(frozen=True)
class Strikes:
    """How often a GPU failed its probation, and when it last did (kept in the journal)."""

    count: int
    last: float


@dataclass(frozen=True)
class Probation:
    """One GPU on probation."""

    uuid: str
    index: int | None
    condition: GpuCondition  # the mark it had: given again if it fails
    reason: str  # that mark's reason
    since: float
    window: float
    strikes: int  # failures counted when it started (its window came from them)
    answered: Mapping[str, float] = field(default_factory=dict)  # container ID -> when its 1-token completion answered
    proving_since: float | None = None  # when every container had answered: the window runs from here
    containers: tuple[str, ...] = ()  # container IDs last seen on it: held while no NVML reading maps them

    @property
    def name(self) -> str:
        return f"GPU {self.index}" if self.index is not None else f"GPU {self.uuid}"

    @property
    def origin(self) -> str:
        return "its reset" if self.condition == GpuCondition.RESETTING else "its release"


class Step(StrEnum):
    WAITING = "waiting"  # canaries still due, or inside the window
    PROVEN = "proven"
    FAILED = "failed"


@dataclass(frozen=True)
class ProbationJudgement:
    step: Step
    probation: Probation  # with what this cycle added (answers, the window's start)
    reason: str


@dataclass(frozen=True)
class CanaryState:
    """What the 1-token completions to one container showed so far in this probation."""

    answered: bool = False
    failures: int = 0  # in a row
    detail: str = ""


def strikes_now(record: Strikes | None, now: float, config: ProbationConfig) -> int:
    """The strikes that still count: none after `clean_after` without a failure."""
    if record is None or now - record.last >= config.clean_after:
        return 0
    return record.count


def window_for(strikes: int, config: ProbationConfig) -> float:
    """`window` doubled per strike, capped at `max_window` (never under `window`)."""
    return float(min(config.window * 2.0 ** min(strikes, 32), max(config.max_window, config.window)))


def begin(mark: GpuMark, record: Strikes | None, now: float, config: ProbationConfig) -> Probation:
    """The probation of a GPU whose `mark` was just released."""
    strikes = strikes_now(record, now, config)
    return Probation(mark.uuid, mark.index, mark.condition, mark.reason, now, window_for(strikes, config), strikes)


def released(before: Mapping[str, GpuMark], after: Mapping[str, GpuMark]) -> list[GpuMark]:
    """The marks present before and gone now (released in between), in GPU order."""
    return [before[uuid] for uuid in sorted(set(before) - set(after))]


def trouble(
    probation: Probation,
    *,
    containers: Iterable[ContainerSnapshot],
    probes: Mapping[str, tuple[ProbeResult, ...]],
    canaries: Mapping[str, CanaryState],
    xids: Iterable[ClassedXid],
    config: ProbationConfig,
) -> list[str]:
    """What fails this probation now (empty: nothing). `containers`, `xids`: those on the GPU.

    An Xid the table only logs (45: a process was killed, as a restart does) is no failure.
    """
    found = [
        f"Xid {event.xid} ({event.klass}) on {probation.name}"
        for event in xids
        if event.at >= probation.since and event.klass != XidAction.LOG.value
    ]
    for container in containers:
        canary = canaries.get(container.id, CanaryState())
        if canary.failures >= config.canary_failures:
            found.append(f"{container.name}: {canary.failures} 1-token completions in a row failed ({canary.detail})")
        answered_at = probation.answered.get(container.id)
        if answered_at is None:
            continue  # before its answer it may still be (re)starting
        if container.state != ContainerState.RUNNING:
            found.append(f"{container.name} is {container.state.value} after it answered")
        failed = [r for r in probes.get(container.id, ()) if r.at >= answered_at and r.status != ProbeStatus.OK]
        if failed:
            found.append(f"{container.name}: probe {failed[-1].status.value} ({failed[-1].detail})")
    return found


def judge(
    probation: Probation,
    *,
    containers: Collection[str],
    answered: Mapping[str, float],
    problems: Collection[str],
    now: float,
) -> ProbationJudgement:
    """One cycle of a probation. `containers`: IDs on the GPU; `answered`: those whose canary answered, and when."""
    if problems:
        return ProbationJudgement(Step.FAILED, probation, "; ".join(problems))
    heard = {**{cid: at for cid, at in answered.items() if cid in containers}, **probation.answered}
    waiting = sorted(set(containers) - set(heard))
    if waiting:
        updated = replace(probation, answered=heard, proving_since=None, containers=tuple(sorted(containers)))
        return ProbationJudgement(
            Step.WAITING, updated, f"waiting for a 1-token answer from {len(waiting)} of {len(containers)} container(s)"
        )
    start = probation.proving_since if probation.proving_since is not None else now
    updated = replace(probation, answered=heard, proving_since=start, containers=tuple(sorted(containers)))
    if now - start >= probation.window:
        return ProbationJudgement(
            Step.PROVEN, updated, f"clean for {probation.window:g} s after every container answered"
        )
    return ProbationJudgement(Step.WAITING, updated, f"clean for {now - start:.0f} of {probation.window:g} s")


def hold_reason(probation: Probation, judgement: ProbationJudgement) -> str:
    """Why its containers are out of rotation, for the rotation file and status."""
    return f"probation: proving {probation.name} after {probation.origin} ({judgement.reason})"


def failed_mark(probation: Probation, why: str, now: float, config: ProbationConfig) -> tuple[GpuMark, Strikes]:
    """The mark given again (a reset's GPU is drained: the reset did not fix it) and the strikes after it."""
    strikes = Strikes(probation.strikes + 1, now)
    condition = GpuCondition.DRAINED if probation.condition == GpuCondition.RESETTING else probation.condition
    reason = (
        f"failed its probation after {probation.origin}: {why}; next probation window "
        f"{window_for(strikes.count, config):g} s"
    )
    return GpuMark(probation.uuid, probation.index, condition, reason, now), strikes


def to_record(probation: Probation) -> dict[str, object]:
    """What the journal keeps of a probation (JSON)."""
    return {
        "index": probation.index,
        "condition": probation.condition.value,
        "reason": probation.reason,
        "since": probation.since,
        "window": probation.window,
        "strikes": probation.strikes,
        "answered": dict(sorted(probation.answered.items())),
        "proving_since": probation.proving_since,
        "containers": list(probation.containers),
    }


def from_record(uuid: str, data: Mapping[str, object]) -> Probation | None:
    """A probation read back from the journal; None when the record is not one (a newer version's)."""
    try:
        index = data.get("index")
        proving = data.get("proving_since")
        answered = data.get("answered") or {}
        containers = data.get("containers") or []
        return Probation(
            uuid,
            int(index) if isinstance(index, int) else None,
            GpuCondition(str(data["condition"])),
            str(data.get("reason", "")),
            float(data["since"]),  # type: ignore[arg-type]
            float(data["window"]),  # type: ignore[arg-type]
            int(data.get("strikes", 0)),  # type: ignore[call-overload]
            {str(cid): float(at) for cid, at in answered.items()},  # type: ignore[attr-defined]
            float(proving) if isinstance(proving, int | float) else None,
            tuple(str(cid) for cid in containers),  # type: ignore[attr-defined]
        )
    except (KeyError, TypeError, ValueError):
        return None


def _mark_from(uuid: str, record: Any) -> GpuMark | None:
    try:
        index = record.get("index")
        condition = GpuCondition(str(record["condition"]))
        since = float(record["since"])
        return GpuMark(uuid, index if isinstance(index, int) else None, condition, str(record["reason"]), since)
    except (AttributeError, KeyError, TypeError, ValueError):
        return None


def book_document(active: Mapping[str, Probation], strikes: Mapping[str, Strikes], seen: Mapping[str, GpuMark]) -> str:
    """What the journal keeps (meta `gpu-probation`): the probations, each GPU's strikes, the marks last seen."""
    return json.dumps(
        {
            "active": {u: to_record(p) for u, p in sorted(active.items())},
            "strikes": {u: {"count": s.count, "last": s.last} for u, s in sorted(strikes.items())},
            "seen": {
                u: {"index": m.index, "condition": m.condition.value, "reason": m.reason, "since": m.since}
                for u, m in sorted(seen.items())
            },
        },
        sort_keys=True,
    )


def read_book(
    raw: str | None,
) -> tuple[dict[str, Probation], dict[str, Strikes], dict[str, GpuMark] | None]:
    """`book_document` read back; what is unreadable is left out (seen None: never written)."""
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    active: dict[str, Probation] = {}
    for uuid, record in (data.get("active") or {}).items():
        probation = from_record(uuid, record) if isinstance(record, dict) else None
        if probation is not None:
            active[uuid] = probation
    strikes = {
        uuid: Strikes(int(record["count"]), float(record.get("last", 0.0)))
        for uuid, record in (data.get("strikes") or {}).items()
        if isinstance(record, dict) and isinstance(record.get("count"), int)
    }
    seen_data = data.get("seen")
    if not isinstance(seen_data, dict):
        return active, strikes, None
    seen = {u: m for u, m in ((u, _mark_from(u, r)) for u, r in seen_data.items()) if m is not None}
    return active, strikes, seen


def status_rows(active: Mapping[str, Probation], reasons: Mapping[str, str], *, dry_run: bool) -> list[dict[str, Any]]:
    """The probations in force as status shows them; `reasons`: GPU UUID -> what it waits for now."""
    return [
        {
            "uuid": uuid,
            "index": probation.index,
            "since": probation.since,
            "after": probation.origin,
            "window": probation.window,
            "strikes": probation.strikes,
            "answered": sorted(probation.answered),
            "state": reasons.get(uuid, "starting"),
            "dry_run": dry_run,
        }
        for uuid, probation in sorted(active.items())
    ]
