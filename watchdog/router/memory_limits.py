"""Memory limits per role, kept: read the engine, then fix or report the containers whose limits differ.

The I/O edge of watchdog/router/memory_limit_plan.py (which decides). The edges read usage,
call `docker update` and write the journal and the compose override file;
`MemoryLimitSync` runs them once per pass and never raises (watchdog/router/limit_watch.py
decides when a pass runs).

A limit is never set below a container's usage: cgroup v1 refuses it, and
cgroup v2 reclaims and then OOM-kills the model. That is reported, not applied.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
from loguru import logger

from watchdog.containers.engine import ENGINE_ERRORS
from watchdog.containers.restart import ActionFailed
from watchdog.entries import EntryKind
from watchdog.files import write_if_changed
from watchdog.journal import Journal
from watchdog.model import ContainerSnapshot, ContainerState
from watchdog.router.capacity import CapacityPolicy
from watchdog.router.memory_limit_plan import (
    Applied,
    LimitAction,
    LimitKind,
    Limits,
    current_limits,
    dump_applied,
    format_limits,
    load_applied,
    needs_change,
    needs_usage,
    plan_memory_limits,
    planned_limits,
    render_compose_override,
    update_command,
)

META_KEY = "memory_limits_applied"  # journal meta: JSON {name: {"id", "mem", "swap"}} of what the watchdog set
RETRY_AFTER = 300.0  # s before a refused `docker update` is tried again
USAGE_MAX_AGE = 30.0  # s a usage reading is reused in report mode (nothing is applied there)
T = TypeVar("T")
_GOING = (ContainerState.REMOVING, ContainerState.DEAD)  # `docker update` would fail: left alone
_STOPPED = (ContainerState.EXITED, ContainerState.CREATED)  # no process: nothing a limit could kill


# -- edges: engine and disk --------------------------------------------------


def read_usage(client: docker.DockerClient, container_id: str) -> int | None:
    """Memory in use as `docker stats` shows it (page cache the kernel can drop not counted); None on error."""
    try:
        stats = client.api.stats(container_id, stream=False, one_shot=True)
        memory = stats.get("memory_stats") or {}
        usage = memory.get("usage")
        if not isinstance(usage, int):
            return None
        extra = memory.get("stats") or {}
        inactive = extra.get("total_inactive_file")  # cgroup v1
        if not isinstance(inactive, int):
            inactive = extra.get("inactive_file")  # cgroup v2
        return usage - inactive if isinstance(inactive, int) and inactive < usage else usage
    except Exception:  # any failure means "unknown", which only ever makes the planner more careful
        return None


def read_limits(client: docker.DockerClient, container_id: str) -> Limits | None:
    """The limits the engine has now (the probe's cached inspect may be older); None on error."""
    try:
        host = client.api.inspect_container(container_id).get("HostConfig") or {}
        return Limits(int(host.get("Memory") or 0), int(host.get("MemorySwap") or 0))
    except Exception:
        return None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def apply_limit(client: docker.DockerClient, container_id: str, mem: int, swap: int) -> tuple[str, ...]:
    """`docker update --memory --memory-swap`, both at once (docker refuses memory above the old swap alone).

    Returns the engine's warnings; raises ActionFailed with the engine's or the kernel's reason.
    """
    try:
        answer = client.api.update_container(container_id, mem_limit=mem, memswap_limit=swap)
    except docker.errors.NotFound as exc:
        raise ActionFailed("container is gone") from exc
    except docker.errors.APIError as exc:
        raise ActionFailed(_one_line(str(exc.explanation or exc))) from exc
    except ENGINE_ERRORS as exc:
        raise ActionFailed(_one_line(str(exc))) from exc
    warnings = (answer or {}).get("Warnings") if isinstance(answer, dict) else None
    return tuple(str(w) for w in warnings or ())


# -- the sync the loop calls -------------------------------------------------


class Outcome(StrEnum):
    REPORTED = "reported"  # report mode or dry run: journaled, nothing changed
    APPLIED = "applied"
    CORRECTED = "corrected"  # drift set back
    BLOCKED = "blocked"
    FAILED = "failed"
    WAITING = "waiting"  # failed earlier; retried after RETRY_AFTER


@dataclass(frozen=True)
class SyncResult:
    action: LimitAction
    outcome: Outcome
    text: str


def _getter(value: T | Callable[[], T]) -> Callable[[], T]:
    if callable(value):
        return value
    return lambda: value


class ComposeOverrideWriter:
    """The compose override file with the planned limits: written when its text changes, a failure said once."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self._written: tuple[str, str] | None = None  # (path, text) last written or found unchanged
        self._error: str | None = None

    def write(self, containers: Sequence[ContainerSnapshot], policy: CapacityPolicy, now: float) -> bool:
        """False when the file cannot be written (tried again next pass)."""
        path = Path(policy.compose_override or "").expanduser()
        text = render_compose_override(containers, policy.memory, filename=path.name)
        if self._written == (str(path), text):
            return True
        try:
            written = write_if_changed(path, text)
        except OSError as exc:
            message = f"memory limits: cannot write the compose override {path}: {exc}; tried again next cycle"
            if message != self._error:
                self._error = message
                logger.error("{}", message)
            return False
        self._written, self._error = (str(path), text), None
        if written:
            logger.info("memory limits: compose override {} written", path)
            self.journal.record(
                EntryKind.MEMORY_LIMIT_OVERRIDE, f"compose override {path} written", ts=now, detail={"path": str(path)}
            )
        return True


class MemoryLimitSync:
    """Keeps the managed containers' memory limits on the plan, once per cycle; never raises.

    report: each problem is journaled once (kind `memory-limit`) while it lasts;
    enforce: limits are applied with `docker update` and journaled, and what was
    set is kept in journal meta so a later hand change shows as drift. A restart
    of the watchdog reports problems still open once more.
    """

    def __init__(
        self,
        client: docker.DockerClient,
        journal: Journal,
        policy: CapacityPolicy | Callable[[], CapacityPolicy],
        *,
        dry_run: bool | Callable[[], bool] = False,
        retry_after: float = RETRY_AFTER,
    ) -> None:
        self.client = client
        self.journal = journal
        self._policy: Callable[[], CapacityPolicy] = _getter(policy)
        self._dry_run: Callable[[], bool] = _getter(dry_run)
        self.retry_after = retry_after
        self.failures = 0
        self._applied: dict[str, Applied] | None = None
        self._open: set[tuple[Any, ...]] = set()  # problems journaled and not resolved since
        self._retry_at: dict[tuple[str, Limits], float] = {}
        self._usage: dict[str, tuple[float, int | None]] = {}
        self._override = ComposeOverrideWriter(journal)

    def sync(self, containers: Sequence[ContainerSnapshot], now: float) -> list[SyncResult]:
        try:
            return self._sync(containers, now)
        except Exception as exc:  # a cycle must never die here
            self.failures += 1
            logger.opt(exception=exc).error("memory limits: sync failed ({}); tried again next cycle", exc)
            return []

    def applied(self) -> dict[str, Applied]:
        """What the watchdog set, from journal meta (read once, then kept in step)."""
        if self._applied is None:
            self._applied = load_applied(self.journal.get_meta(META_KEY))
        return self._applied

    def _sync(self, containers: Sequence[ContainerSnapshot], now: float) -> list[SyncResult]:
        policy = self._policy()
        if policy.memory_limits not in ("report", "enforce"):
            self._open.clear()
            return []
        enforce = policy.memory_limits == "enforce" and not self._dry_run()
        if policy.compose_override and not self._override.write(containers, policy, now):
            self.failures += 1
        fresh, usage = self._observe(containers, policy, now, enforce)
        actions = plan_memory_limits(fresh, policy.memory, self.applied(), usage)
        results = []
        seen: set[tuple[Any, ...]] = set()
        for action in actions:
            try:
                result = self._enforce(action, containers, now) if enforce else self._report(action, now)
            except Exception as exc:
                self.failures += 1
                logger.bind(container=action.container).opt(exception=exc).error(
                    "memory limits: {} failed: {}", action.container, exc
                )
                continue
            seen.add(self._key(action, enforce))
            results.append(result)
        self._open &= seen
        live = {c.id for c in containers}
        self._usage = {k: v for k, v in self._usage.items() if k in live}
        return results

    def _observe(
        self, containers: Sequence[ContainerSnapshot], policy: CapacityPolicy, now: float, enforce: bool
    ) -> tuple[list[ContainerSnapshot], dict[str, int | None]]:
        """The containers whose limits look off, with the engine's values now and usage where it matters."""
        fresh: list[ContainerSnapshot] = []
        usage: dict[str, int | None] = {}
        for container in containers:
            if container.state in _GOING or not needs_change(container, policy.memory):
                continue
            refreshed = self._refresh(container)
            if refreshed is None:
                continue
            fresh.append(refreshed)
            planned = planned_limits(refreshed, policy.memory)
            if planned is not None and needs_usage(current_limits(refreshed), planned):
                usage[refreshed.id] = self._read_usage(refreshed, now, fresh=enforce)
        return fresh, usage

    def _refresh(self, container: ContainerSnapshot) -> ContainerSnapshot | None:
        """The limits as the engine has them now; None when it no longer answers for the container."""
        limits = read_limits(self.client, container.id)
        if limits is None:
            return None
        return replace(container, memory_limit=limits.mem, memory_swap=limits.swap)

    def _read_usage(self, container: ContainerSnapshot, now: float, fresh: bool) -> int | None:
        if container.state in _STOPPED:
            return 0
        cached = self._usage.get(container.id)
        if not fresh and cached is not None and now - cached[0] < USAGE_MAX_AGE:
            return cached[1]
        value = read_usage(self.client, container.id)
        self._usage[container.id] = (now, value)
        return value

    @staticmethod
    def _key(action: LimitAction, enforce: bool) -> tuple[Any, ...]:
        return (action.container, action.container_id, enforce, action.kind, action.current, action.planned)

    def _journal_once(self, action: LimitAction, enforce: bool, kind: EntryKind, text: str, now: float) -> bool:
        """Journal a problem the first time this run sees it; True when it was new."""
        key = self._key(action, enforce)
        if key in self._open:
            return False
        self._open.add(key)
        self._record(kind, action, text, now, "enforce" if enforce else "report")
        return True

    def _record(self, kind: EntryKind, action: LimitAction, text: str, now: float, mode: str) -> None:
        self.journal.record(
            kind,
            text,
            ts=now,
            container=action.container,
            container_id=action.container_id,
            fault=action.kind.value,
            detail={**action.detail, "mode": mode},
        )

    def _report(self, action: LimitAction, now: float) -> SyncResult:
        text = f"dry run: {action.reason}" if self._dry_run() else action.reason
        if self._journal_once(action, False, EntryKind.MEMORY_LIMIT, text, now):
            log = logger.bind(container=action.container, memory_limit=action.kind.value)
            (log.info if action.kind == LimitKind.NOT_APPLIED else log.warning)("memory limits: {}", text)
        outcome = Outcome.BLOCKED if action.kind == LimitKind.BLOCKED else Outcome.REPORTED
        return SyncResult(action, outcome, text)

    def _enforce(self, action: LimitAction, containers: Sequence[ContainerSnapshot], now: float) -> SyncResult:
        """`docker update` to the plan, unless blocked or waiting after a refusal."""
        if action.kind == LimitKind.BLOCKED:
            if self._journal_once(action, True, EntryKind.MEMORY_LIMIT_BLOCKED, action.reason, now):
                logger.bind(container=action.container, memory_limit="blocked").warning(
                    "memory limits: {}", action.reason
                )
            return SyncResult(action, Outcome.BLOCKED, action.reason)
        retry = (action.container_id, action.planned)
        if now < self._retry_at.get(retry, 0.0):
            return SyncResult(action, Outcome.WAITING, f"{action.container}: memory limit update failed; retry later")
        try:
            warnings = apply_limit(self.client, action.container_id, action.planned.mem, action.planned.swap)
        except ActionFailed as exc:
            return self._failed(action, f"`docker update` refused: {exc}", now)
        self._retry_at.pop(retry, None)
        got = read_limits(self.client, action.container_id) or action.planned
        self._remember(action, got, containers)
        if got != action.planned:
            why = f"; engine warnings: {'; '.join(warnings)}" if warnings else ""
            return self._failed(action, f"the engine kept {format_limits(got)} after `docker update`{why}", now)
        return self._done(action, warnings, now)

    def _done(self, action: LimitAction, warnings: tuple[str, ...], now: float) -> SyncResult:
        if action.kind == LimitKind.DRIFT:
            kind, outcome = EntryKind.MEMORY_LIMIT_DRIFT, Outcome.CORRECTED
            text = (
                f"{action.container}: memory limit changed by hand to {format_limits(action.current)}; "
                f"set back to {format_limits(action.planned)} (role {action.role})"
            )
        else:
            kind, outcome = EntryKind.MEMORY_LIMIT_APPLIED, Outcome.APPLIED
            text = (
                f"{action.container}: memory limit set to {format_limits(action.planned)} "
                f"(was {format_limits(action.current)}, role {action.role})"
            )
        if warnings:
            text += f"; engine warnings: {'; '.join(warnings)}"
        log = logger.bind(container=action.container, memory_limit=action.kind.value)
        (log.warning if outcome == Outcome.CORRECTED else log.info)("memory limits: {}", text)
        self._record(kind, action, text, now, "enforce")
        return SyncResult(action, outcome, text)

    def _failed(self, action: LimitAction, why: str, now: float) -> SyncResult:
        self.failures += 1
        self._retry_at[(action.container_id, action.planned)] = now + self.retry_after
        text = (
            f"{action.container}: memory limit {format_limits(action.planned)} not applied: {why}; "
            f"tried again in {self.retry_after:.0f} s; fix: {update_command(action.container, action.planned)} "
            f"by hand, or change capacity.memory.{action.role}"
        )
        if self._journal_once(action, True, EntryKind.MEMORY_LIMIT_FAILED, text, now):
            logger.bind(container=action.container, memory_limit=action.kind.value).error("memory limits: {}", text)
        return SyncResult(action, Outcome.FAILED, text)

    def _remember(self, action: LimitAction, got: Limits, containers: Sequence[ContainerSnapshot]) -> None:
        """Keep what the container has now that the watchdog set it; names no longer present are dropped."""
        names = {c.name for c in containers}
        applied = {name: a for name, a in self.applied().items() if name in names}
        applied[action.container] = Applied(action.container_id, got)
        self._applied = applied
        self.journal.set_meta(META_KEY, dump_applied(applied))
