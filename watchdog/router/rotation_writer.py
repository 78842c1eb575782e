"""Writes the rotation file: which deployments of the config are out right now, and why.

The I/O edge of watchdog/router/litellm_config.py for the rotation. The callback in litellm/ reads the
file on every routing attempt and ignores it once stale, so it is also the watchdog's heartbeat: written
at once when it changes, and otherwise every stale_after / 5. Each deployment going out of or back into
rotation is logged and journaled once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from loguru import logger

from watchdog.config import Config
from watchdog.entries import EntryKind
from watchdog.files import write_atomic
from watchdog.journal import Journal
from watchdog.model import ContainerState, Decision, Diagnosis, ProbeStatus, Verdict
from watchdog.router.config_writer import config_out_path
from watchdog.router.fallbacks import NO_FALLBACKS, FallbackPlan, rotation_fields
from watchdog.router.health_weights import Candidate, health_shares
from watchdog.router.litellm_config import ROTATION_FILE, RotationEntry, RouterDeployment, rotation, rotation_document
from watchdog.router.problems import Problems
from watchdog.router.router_feedback import outlier_settings
from watchdog.subsystem import CycleView


def why_not_serving(diagnosis: Diagnosis, decisions: Sequence[Decision], held: Mapping[str, str]) -> dict[str, str]:
    """Container ID -> a short reason, for rotation log lines and status."""
    reasons: dict[str, str] = {}
    for note in diagnosis.notes:
        reasons[note.container_id] = note.kind.value
    for fault in diagnosis.faults:
        reasons[fault.container_id] = f"{fault.kind.value}: {fault.reason}"
    for decision in decisions:
        if decision.verdict in (Verdict.GIVE_UP, Verdict.GIVEN_UP):
            reasons[decision.fault.container_id] = "given up"
    for container_id, why in held.items():
        reasons[container_id] = f"held: {why}"
    return reasons


class RotationWriter:
    """The rotation of the config's deployments, kept on disk and in the journal; `view` for status."""

    def __init__(
        self,
        config: Config,
        journal: Journal,
        problems: Problems,
        cleared: Callable[[], Mapping[str, float]] = dict,
        *,
        draining: Callable[[], Mapping[str, str]] = dict,
    ) -> None:
        self.config = config
        self.cleared = cleared  # deployment -> when the watchdog cleared it (router_feedback)
        self.draining = draining  # container ID -> "draining: why" (router/drain.py): out, whatever else holds
        self.journal = journal
        self.problems = problems
        self._rotation: dict[str, bool] = {}
        self._names: dict[str, str] = {}  # deployment id -> container name
        self._written: tuple[str, float] | None = None  # (rotation without its time, when written)
        self.view: dict[str, dict[str, Any]] = {}  # deployment id -> container, in, reason (for status)
        self.evicted: set[str] = set()  # deployment ids out for their GPU's health (hysteresis)
        self.health: dict[str, str] = {}  # deployment id -> why its share is under 1 (for status)

    def apply_config(self, config: Config) -> None:
        self.config = config

    @property
    def path(self) -> Path:
        return config_out_path(self.config).with_name(ROTATION_FILE)

    def write(
        self,
        deployments: Sequence[RouterDeployment],
        view: CycleView,
        loaded: set[str],
        now: float,
        *,
        fallbacks: FallbackPlan = NO_FALLBACKS,
    ) -> None:
        """`loaded`: the deployment ids the proxy may still have loaded (removed ones stay denied until it reloads).
        `fallbacks`: their groups, fallbacks and failover caps go into the file for the callback."""
        self._names.update({d.id: d.container for d in deployments})
        entries, weights = self._follow_health(self._entries(deployments, view, loaded), view)
        document = rotation_document(entries, now, self.config.litellm.stale_after, self.config.litellm.all_down)
        document["weights"] = weights
        document["outlier"] = outlier_settings(self.config.litellm)
        document["cleared"] = dict(sorted(self.cleared().items()))
        document.update(rotation_fields(fallbacks, deployments))
        try:
            self._write_file(document, now)
            self.problems.clear("rotation-write", f"rotation file {self.path} writable again")
        except OSError as exc:
            self.problems.say(
                "rotation-write",
                f"cannot write the rotation file {self.path} ({exc.strerror}): the proxy falls back to "
                f"LiteLLM's own routing after {self.config.litellm.stale_after:g} s; fix litellm.out's directory",
                journal_kind=EntryKind.ROUTER_ERROR,
            )
        self._say_changes(entries, now)
        self._rotation = {e.id: e.in_rotation for e in entries}
        self.view = {
            e.id: {
                "container": e.container,
                "in": e.in_rotation,
                "reason": e.reason,
                "share": weights.get(e.id, 1.0),
                "health": self.health.get(e.id),
            }
            for e in entries
        }

    def _follow_health(
        self, entries: list[RotationEntry], view: CycleView
    ) -> tuple[list[RotationEntry], dict[str, float]]:
        """Entries with the health evictions applied, and the share factor (< 1 only) of each one in rotation."""
        health = self.config.gpu.health
        if not (health.enabled and health.traffic) or not view.gpu.scores:
            self.evicted, self.health = set(), {}  # no verdict now (off, no reading): routed as before
            return entries, {}
        ids = {c.name: c.id for c in view.containers}
        candidates = [
            Candidate(e.id, e.container, e.model, view.gpu.assigned.get(ids.get(e.container, ""), ()))
            for e in entries
            if e.in_rotation
        ]
        shares = health_shares(
            candidates,
            view.gpu.scores,
            evict_below=health.evict_below,
            readmit_above=health.readmit_above,
            floor=self.config.drain.min_replicas,
            evicted_before=self.evicted,
        )
        self.evicted = {i for i, share in shares.items() if share.evicted}
        self.health = {i: share.reason for i, share in shares.items()}
        for entry in entries:
            if entry.id in shares and shares[entry.id].kept:
                self.problems.say(
                    f"floor:{entry.id}",
                    f"{entry.container}: its GPU's health is under gpu.health.evict_below, but it stays in "
                    f"rotation: model group {entry.model} is at its floor of {self.config.drain.min_replicas} serving "
                    "replica(s) (drain.min_replicas)",
                    level="WARNING",
                    journal_kind=EntryKind.REPLICA_FLOOR,
                )
            else:
                self.problems.clear(f"floor:{entry.id}")
        out = [
            RotationEntry(e.id, e.container, e.model, False, shares[e.id].reason) if e.id in self.evicted else e
            for e in entries
        ]
        weights = {i: share.factor for i, share in sorted(shares.items()) if not share.evicted}
        return out, weights

    def _entries(
        self, deployments: Sequence[RouterDeployment], view: CycleView, loaded: set[str]
    ) -> list[RotationEntry]:
        containers, diagnosis, histories, held = view.containers, view.diagnosis, view.histories, view.gpu.held
        suspects = view.serving.suspects
        probation = view.gpu.probation  # restartable and probed, but out until its GPU is proven
        draining = self.draining()
        ready = set(diagnosis.ready) - set(held) - set(suspects) - set(probation) - set(draining)
        # Not probed yet in this life, no fault, no note (a watchdog start, not a restart, which
        # is "starting"): keep what it was, and in at first sight, as LiteLLM alone would route it.
        was_out = {d.container for d in deployments if self._rotation.get(d.id) is False}
        unjudged = {
            c.id
            for c in containers
            if c.name not in was_out
            and c.id not in probation
            and c.state == ContainerState.RUNNING
            and not (histories.get(c.id) and histories[c.id].results)
        }
        why_not = {**probation, **suspects, **why_not_serving(diagnosis, view.decisions, held), **draining}
        for container in containers:  # a hang shows first as one failed probe, before it is a fault
            results = histories[container.id].results if container.id in histories else ()
            if container.id not in why_not and results and results[-1].status != ProbeStatus.OK:
                why_not[container.id] = f"last probe {results[-1].status.value}: {results[-1].detail}"
        entries = rotation(deployments, containers, ready, why_not, unjudged)
        # Removed from the config (given up, GPU quarantined) but still loaded in the proxy until it
        # restarts, or forever without a restart mechanism: denied until then.
        for ident in sorted(loaded - {d.id for d in deployments}):
            name = self._names.get(ident, ident)
            entries.append(RotationEntry(ident, name, "", False, "removed from the config; the proxy still has it"))
        return entries

    def _say_changes(self, entries: Sequence[RotationEntry], now: float) -> None:
        """A deployment out of or back in rotation, once per change (in at first sight says nothing)."""
        for entry in entries:
            before = self._rotation.get(entry.id)
            if before == entry.in_rotation or (before is None and entry.in_rotation):
                continue
            log = logger.bind(container=entry.container, deployment=entry.id)
            if entry.in_rotation:
                log.info("{} back in rotation", entry.id)
                self.journal.record(
                    EntryKind.ROTATION_IN, f"{entry.id} back in rotation", ts=now, container=entry.container
                )
            else:
                log.warning("{} out of rotation: {}", entry.id, entry.reason)
                self.journal.record(
                    EntryKind.ROTATION_OUT,
                    f"{entry.id} out of rotation: {entry.reason}",
                    ts=now,
                    container=entry.container,
                )

    def _write_file(self, document: dict[str, Any], now: float) -> None:
        """At once when it changes; otherwise often enough to stay fresh (it is the callback's heartbeat).

        Cycles can come many times a second on an event storm: an unchanged rotation is
        rewritten only every stale_after / 5.
        """
        content = json.dumps({k: v for k, v in document.items() if k != "written_at"}, sort_keys=True)
        last = self._written
        if last is not None and last[0] == content and now - last[1] < self.config.litellm.stale_after / 5:
            return
        write_atomic(self.path, json.dumps(document, indent=1), durable=False)
        self._written = (content, now)
