"""The drains' I/O side: who asks for one, what in flight looks like, what the journal says.

Owned by the router sync and run first in its cycle (the rotation writer then puts every drain
in force out of rotation). Each cycle it:
- begins a drain for each planner verdict `drain` (a restart for a fault that can wait), and
  ends those whose container's verdict is no longer `drain` (restarted now, or the fault is gone,
  or deferred: back in rotation meanwhile);
- follows the operator's `gpu-watchdog drain NAME|GPU` and `--end` (journal entries written by
  the CLI, read when another process wrote the journal): drained, the container stays out of
  rotation until `--end`;
- steps every drain on what the proxy's reports (attempts in flight per deployment) and the
  server's own counters (requests running + waiting) show, and journals and logs each drain
  that ended (drained, or timed out: the action goes ahead anyway);
- says once, in the journal and the log, when a model group has fewer serving replicas than
  drain.min_replicas (and once when it is back at its floor).
In a dry run a drain ends at once ("would drain"): nothing is taken out of rotation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from loguru import logger

from watchdog.config import Config
from watchdog.containers.plan import group_of, serving_by_group
from watchdog.containers.urgency import below_floor
from watchdog.entries import EntryKind
from watchdog.model import ContainerSnapshot, Verdict
from watchdog.router.drain import Drain, DrainPurpose, DrainState, InFlightSeen
from watchdog.router.litellm_config import deployment_id
from watchdog.subsystem import CycleView, Services


def drain_timeout_of(container: ContainerSnapshot | None, config: Config) -> float:
    """The container's drain-timeout label, else drain.timeout."""
    if container is not None and container.spec is not None and container.spec.drain_timeout is not None:
        return container.spec.drain_timeout
    return config.drain.timeout


def operator_targets(entries: list[dict[str, Any]]) -> dict[str, float]:
    """Target (container name or GPU) -> when its drain was asked for, for the drains not ended since."""
    wanted: dict[str, float] = {}
    for entry in entries:  # in journal order
        target = str(entry.get("container") or entry.get("gpu") or "")
        if entry["kind"] == EntryKind.DRAIN_REQUESTED:
            wanted[target] = float(entry["ts"])
        else:
            wanted.pop(target, None)
    return wanted


class DrainWatch:
    """One per daemon, inside the router sync; the board it keeps is the loop's shared `services.drains`."""

    def __init__(
        self,
        config: Config,
        services: Services,
        in_flight: Callable[[], Mapping[str, int]],
        watch: Callable[[set[str]], None] = lambda _ids: None,
    ) -> None:
        self.config = config
        self.watch = watch  # tells the report reader which deployments drain (it wakes the loop when they are idle)
        self.journal = services.journal
        self.board = services.drains
        self.wake = services.wake  # a drain that ended: its action goes ahead at the next cycle, at once
        self.in_flight = in_flight  # deployment -> attempts in flight, from the proxy's reports
        self._version: int | None = None
        self._operator: dict[str, float] = {}  # target -> asked at
        self._below: dict[str, str] = {}  # model group -> what was said of its floor

    def apply_config(self, config: Config) -> None:
        self.config = config

    def cycle(self, view: CycleView, now: float) -> None:
        by_id = {c.id: c for c in view.containers}
        self._planner_drains(view, by_id, now)
        self._operator_drains(view, now)
        names = {cid: c.name for cid, c in by_id.items()}
        for cid, drain in self.board.drains.items():  # a reset knows only IDs
            if cid in names and drain.container != names[cid]:
                self.board.drains[cid] = replace(drain, container=names[cid])
        for drain in self.board.advance(self._seen(view), now):
            self._say_ended(drain)
            self.wake()
        self._watch_floor(view, now)

    def _begin(self, drain: Drain, now: float, *, journal: bool) -> None:
        if self.config.dry_run:
            drain = replace(drain, state=DrainState.DRAINED, ended_at=now, reason="dry run: would drain")
        if not self.board.request(drain):
            return
        logger.bind(container=drain.container).warning("{}: draining ({})", drain.container, drain.why)
        if journal:
            self.journal.record(
                EntryKind.DRAIN,
                f"draining ({drain.why}): out of rotation until its in-flight requests finish, "
                f"at most {drain.timeout:g} s" + ("; dry run: not taken out" if self.config.dry_run else ""),
                ts=now,
                container=drain.container,
                container_id=drain.container_id,
            )

    def _planner_drains(self, view: CycleView, by_id: Mapping[str, ContainerSnapshot], now: float) -> None:
        wanted = {d.fault.container_id: d for d in view.decisions if d.verdict == Verdict.DRAIN}
        for cid, decision in wanted.items():
            fault = decision.fault
            why = f"restart for {fault.kind.value}"
            timeout = drain_timeout_of(by_id.get(cid), self.config)
            # The planner's verdict is the journal's entry for it (FaultRecorder): not said twice.
            self._begin(Drain(cid, fault.container, DrainPurpose.RESTART, why, now, timeout), now, journal=False)
        self.board.release([cid for cid in self.board.of(DrainPurpose.RESTART) if cid not in wanted])

    def _operator_drains(self, view: CycleView, now: float) -> None:
        version = self.journal.data_version()
        if version != self._version:
            self._version = version
            kinds = (EntryKind.DRAIN_REQUESTED, EntryKind.DRAIN_ENDED)
            rows = [e for kind in kinds for e in self.journal.entries(kind=kind)]
            self._operator = operator_targets(sorted(rows, key=lambda e: int(e["id"])))
        targeted = {
            c.id: (target, at)
            for c in view.containers
            if c.managed
            for target, at in self._operator.items()
            if target == c.name or target in c.gpus
        }
        for cid, (target, at) in targeted.items():
            name = next(c.name for c in view.containers if c.id == cid)
            why = f"operator drain of {target}"
            self._begin(Drain(cid, name, DrainPurpose.OPERATOR, why, at, self.config.drain.timeout), now, journal=True)
        ended = self.board.release([cid for cid in self.board.of(DrainPurpose.OPERATOR) if cid not in targeted])
        for drain in ended:
            logger.bind(container=drain.container).info("{}: operator drain ended; back in rotation", drain.container)

    def _seen(self, view: CycleView) -> dict[str, InFlightSeen]:
        router = self.in_flight() if self.config.litellm.enabled else {}
        self.watch({deployment_id(c.name, c.gpus) for c in view.containers if c.id in self.board.drains})
        seen = {}
        for container in view.containers:
            if container.id not in self.board.drains:
                continue
            work = view.serving.work.get(container.id)
            ident = deployment_id(container.name, container.gpus)
            seen[container.id] = InFlightSeen(router.get(ident), work[1] if work else None, work[0] if work else None)
        return seen

    def _say_ended(self, drain: Drain) -> None:
        log = logger.bind(container=drain.container)
        timed_out = drain.state == DrainState.TIMED_OUT
        (log.warning if timed_out else log.info)("{}: {} ({})", drain.container, drain.reason, drain.why)
        self.journal.record(
            EntryKind.DRAIN_TIMED_OUT if timed_out else EntryKind.DRAINED,
            f"{drain.reason} ({drain.why})",
            ts=drain.ended_at or drain.started_at,
            container=drain.container,
            container_id=drain.container_id,
            duration=(drain.ended_at or drain.started_at) - drain.started_at,
        )

    def _watch_floor(self, view: CycleView, now: float) -> None:
        floor = self.config.drain.min_replicas
        by_id = {c.id: c for c in view.containers}
        out = set(self.board.drains) | set(view.gpu.held)
        serving = serving_by_group(by_id, view.diagnosis.faults, view.diagnosis.ready, out)
        for group, names in sorted(serving.items()):
            group_members = [c for c in view.containers if c.managed and group_of(c) == group]
            unjudged = [
                c for c in group_members if c.endpoint and not (c.id in view.histories and view.histories[c.id].results)
            ]
            if unjudged:
                continue  # not all probed yet (a watchdog start): nothing to say
            members = [c.name for c in group_members]
            said = below_floor(names, members, floor, group)
            if said is not None and self._below.get(group) != said.split(":")[0]:
                self._below[group] = said.split(":")[0]
                logger.warning("{}", said)
                self.journal.record(EntryKind.REPLICA_FLOOR, said, ts=now, detail={"group": group})
            elif said is None and group in self._below:
                del self._below[group]
                message = f"group {group} back at its replica floor: {len(names)} of {len(members)} serving"
                logger.info("{}", message)
                self.journal.record(EntryKind.REPLICA_FLOOR, message, ts=now, detail={"group": group})
