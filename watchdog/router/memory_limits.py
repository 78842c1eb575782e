"""Memory limits per role: find the containers whose limits differ from the plan, and fix or report them.

The pure part decides: `plan_memory_limits` classifies each managed container
whose role has limits (not applied yet, drifted since the watchdog set them, or
blocked because the plan is below what it uses now), and
`render_compose_override` writes the same limits for `docker compose`, so a
container compose recreates gets them from the start. The edges read usage,
call `docker update` and write the journal and the override file;
`MemoryLimitSync` runs them once per cycle and never raises.

A limit is never set below a container's usage: cgroup v1 refuses it, and
cgroup v2 reclaims and then OOM-kills the model. That is reported, not applied.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import docker
import docker.errors
from loguru import logger

from watchdog.containers.engine import ENGINE_ERRORS
from watchdog.containers.restart import ActionFailed
from watchdog.entries import EntryKind
from watchdog.files import write_if_changed
from watchdog.journal import Journal
from watchdog.model import ContainerSnapshot, ContainerState
from watchdog.router.capacity import MIB, CapacityPolicy, RoleMemory
from watchdog.units import format_bytes

META_KEY = "memory_limits_applied"  # journal meta: JSON {name: {"id", "mem", "swap"}} of what the watchdog set
RETRY_AFTER = 300.0  # s before a refused `docker update` is tried again
USAGE_MAX_AGE = 30.0  # s a usage reading is reused in report mode (nothing is applied there)
T = TypeVar("T")
_GOING = (ContainerState.REMOVING, ContainerState.DEAD)  # `docker update` would fail: left alone
_STOPPED = (ContainerState.EXITED, ContainerState.CREATED)  # no process: nothing a limit could kill


# -- pure core ---------------------------------------------------------------


class Limits(NamedTuple):
    """A container's HostConfig.Memory and HostConfig.MemorySwap, as the engine keeps them."""

    mem: int  # 0: no limit
    swap: int  # RAM + swap; 0: unset, -1: unlimited


@dataclass(frozen=True)
class Applied:
    """What the watchdog set on one container: drift is judged against the same container only."""

    container_id: str
    limits: Limits


class LimitKind(StrEnum):
    NOT_APPLIED = "not-applied"  # never set by the watchdog (or set for an older plan, or a recreated container)
    DRIFT = "drift"  # the watchdog set it; someone changed it since
    BLOCKED = "blocked"  # the plan is below what the container uses (or would lower it with usage unknown)


@dataclass(frozen=True)
class LimitAction:
    """One container whose limits are not the planned ones, with a one-line reason naming the fix."""

    container: str
    container_id: str
    role: str
    kind: LimitKind
    current: Limits
    planned: Limits
    applied: Limits | None  # what the watchdog set on this container earlier
    usage: int | None  # bytes in use (None: unknown)
    reason: str

    @property
    def detail(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "role": self.role,
            "current": list(self.current),
            "planned": list(self.planned),
            "applied": list(self.applied) if self.applied else None,
            "usage": self.usage,
        }


def planned_limits(container: ContainerSnapshot, limits: Mapping[str, RoleMemory]) -> Limits | None:
    """The limits for a managed container's role; None when it has no role or the role has no entry."""
    if not container.managed or container.spec is None or not container.spec.role:
        return None
    role = limits.get(container.spec.role)
    if role is None or role.mem_limit <= 0:  # `docker update` cannot remove a limit: 0 is not planned
        return None
    return Limits(role.mem_limit, role.memswap_limit)


def current_limits(container: ContainerSnapshot) -> Limits:
    return Limits(container.memory_limit, container.memory_swap)


def needs_change(container: ContainerSnapshot, limits: Mapping[str, RoleMemory]) -> bool:
    planned = planned_limits(container, limits)
    return planned is not None and planned != current_limits(container)


def lowers(current: Limits, planned: Limits) -> bool:
    return current.mem > 0 and planned.mem < current.mem


def needs_usage(current: Limits, planned: Limits) -> bool:
    """Raising an existing limit cannot go below usage (usage <= limit now): no need to read it."""
    return current.mem == 0 or lowers(current, planned)


def _size(value: int) -> str:
    return "none" if value == 0 else format_bytes(value)


def format_limits(limits: Limits) -> str:
    """`1.5 GiB (RAM+swap 2.0 GiB)`; `none` for a container without limits."""
    if limits.mem == 0 and limits.swap in (0, -1):
        return "none"
    swap = {0: "unset", -1: "unlimited"}.get(limits.swap) or format_bytes(limits.swap)
    return f"{_size(limits.mem)} (RAM+swap {swap})"


def docker_size(value: int) -> str:
    """Sizes as docker and compose take them: 1536m, 512k, -1, or bytes."""
    if value > 0 and value % MIB == 0:
        return f"{value // MIB}m"
    if value > 0 and value % 1024 == 0:
        return f"{value // 1024}k"
    return str(value)


def update_command(name: str, planned: Limits) -> str:
    return f"`docker update --memory {docker_size(planned.mem)} --memory-swap {docker_size(planned.swap)} {name}`"


def classify(
    container: ContainerSnapshot, role: str, planned: Limits, applied: Applied | None, usage: int | None
) -> LimitAction | None:
    """None when the container has the planned limits; else what is wrong and the fix."""
    current = current_limits(container)
    if current == planned:
        return None
    ours = applied.limits if applied is not None and applied.container_id == container.id else None
    name = container.name
    fix = update_command(name, planned)
    head = f"{name}: planned memory limit {format_limits(planned)} for role {role}"
    if usage is not None and planned.mem < usage:
        kind = LimitKind.BLOCKED
        reason = (
            f"{head} is below its usage {format_bytes(usage)} (limit now {format_limits(current)}): not applied, "
            f"it would OOM-kill it; fix: raise capacity.memory.{role}.mem_limit above {format_bytes(usage)}, "
            f"or restart {name} and apply it while it uses less"
        )
    elif usage is None and lowers(current, planned):
        kind = LimitKind.BLOCKED
        reason = (
            f"{head} is lower than its limit now {format_limits(current)} and its usage is unknown: not lowered; "
            f"fix: check `docker stats {name}`, then {fix}"
        )
    elif ours is not None and ours != current:
        kind = LimitKind.DRIFT
        reason = (
            f"{name}: memory limit changed to {format_limits(current)} since the watchdog set {format_limits(ours)} "
            f"(planned {format_limits(planned)}, role {role}); fix: {fix}, or change capacity.memory.{role} "
            "if the new value is meant"
        )
    else:
        kind = LimitKind.NOT_APPLIED
        reason = (
            f"{name}: memory limit {format_limits(current)}, planned {format_limits(planned)} for role {role}: "
            f"not applied; fix: {fix}, capacity.memory_limits: enforce, or compose with the override file"
        )
    return LimitAction(name, container.id, role, kind, current, planned, ours, usage, reason)


def plan_memory_limits(
    containers: Iterable[ContainerSnapshot],
    limits: Mapping[str, RoleMemory],
    applied: Mapping[str, Applied],
    usage: Mapping[str, int | None],
) -> list[LimitAction]:
    """Every managed container whose role has limits and whose limits differ from them, by name.

    `usage`: container ID -> bytes used; missing or None is unknown, and then a
    limit is only raised or set where there was none, never lowered.
    """
    actions = []
    for container in sorted(containers, key=lambda c: c.name):
        planned = planned_limits(container, limits)
        if planned is None or container.spec is None or container.spec.role is None:
            continue
        action = classify(container, container.spec.role, planned, applied.get(container.name), usage.get(container.id))
        if action is not None:
            actions.append(action)
    return actions


def load_applied(text: str | None) -> dict[str, Applied]:
    """The journal meta value; anything unreadable is dropped (worst case: a drift reported as not applied)."""
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    result = {}
    for name, entry in data.items():
        if not isinstance(entry, dict):
            continue
        container_id, mem, swap = entry.get("id"), entry.get("mem"), entry.get("swap")
        if isinstance(container_id, str) and type(mem) is int and type(swap) is int:
            result[str(name)] = Applied(container_id, Limits(mem, swap))
    return result


def dump_applied(applied: Mapping[str, Applied]) -> str:
    return json.dumps(
        {
            name: {"id": a.container_id, "mem": a.limits.mem, "swap": a.limits.swap}
            for name, a in sorted(applied.items())
        },
        separators=(",", ":"),
    )


def _yaml_key(text: str) -> str:
    """Compose service names are plain words; anything else is quoted (a JSON string is valid YAML)."""
    plain = text and all(ch.isalnum() or ch in "._-" for ch in text) and text[0].isalnum()
    return text if plain else json.dumps(text)


def _yaml_size(value: int) -> str:
    return str(value) if value < 0 else json.dumps(docker_size(value))


def render_compose_override(
    containers: Iterable[ContainerSnapshot], limits: Mapping[str, RoleMemory], filename: str = "compose.memory.yml"
) -> str:
    """A compose override with `mem_limit`/`memswap_limit` per service, sorted by service.

    A service whose containers would get different limits (different roles)
    is left out with a comment naming them.
    """
    services: dict[str, dict[str, Limits]] = {}
    projects: set[str] = set()
    for container in containers:
        planned = planned_limits(container, limits)
        if planned is None or not container.compose_service:
            continue
        services.setdefault(container.compose_service, {})[container.name] = planned
        if container.compose_project:
            projects.add(container.compose_project)
    lines = [
        "# Memory limits per role, written by gpu-watchdog from capacity.memory; rewritten when they change.",
        f"# Use it on top of the fleet's compose file: docker compose -f compose.yaml -f {filename} up -d",
        "# so that containers compose (re)creates start with the limits the watchdog keeps.",
    ]
    if projects:
        lines.append(f"# compose project(s): {', '.join(sorted(projects))}")
    body = []
    for service in sorted(services):
        values = set(services[service].values())
        if len(values) > 1:
            names = ", ".join(f"{n} {format_limits(v)}" for n, v in sorted(services[service].items()))
            lines.append(f"# service {service} left out: its containers have different roles ({names})")
            continue
        (planned,) = values
        body += [
            f"  {_yaml_key(service)}:",
            f"    mem_limit: {_yaml_size(planned.mem)}",
            f"    memswap_limit: {_yaml_size(planned.swap)}",
        ]
    lines.append("services:" if body else "services: {}")
    return "\n".join(lines + body) + "\n"


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
        self._override: tuple[str, str] | None = None  # (path, text) last written or found unchanged
        self._override_error: str | None = None

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
        if policy.compose_override:
            self._write_override(containers, policy, now)
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

    def _write_override(self, containers: Sequence[ContainerSnapshot], policy: CapacityPolicy, now: float) -> None:
        path = Path(policy.compose_override or "").expanduser()
        text = render_compose_override(containers, policy.memory, path.name)
        if self._override == (str(path), text):
            return
        try:
            written = write_if_changed(path, text)
        except OSError as exc:
            self.failures += 1
            message = f"memory limits: cannot write the compose override {path}: {exc}; tried again next cycle"
            if message != self._override_error:
                self._override_error = message
                logger.error("{}", message)
            return
        self._override, self._override_error = (str(path), text), None
        if written:
            logger.info("memory limits: compose override {} written", path)
            self.journal.record(
                EntryKind.MEMORY_LIMIT_OVERRIDE, f"compose override {path} written", ts=now, detail={"path": str(path)}
            )
