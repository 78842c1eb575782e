"""Memory limits per role, decided: which containers' limits differ from the plan, and why.

Pure. `plan_memory_limits` classifies each managed container whose role has limits (not
applied yet, drifted since the watchdog set them, or blocked because the plan is below what
it uses now), each with a one-line reason naming the fix, and `render_compose_override`
writes the same limits for `docker compose`, so a container compose recreates gets them from
the start. watchdog/router/memory_limits.py reads the engine and applies or reports them.

A limit is never set below a container's usage: cgroup v1 refuses it, and
cgroup v2 reclaims and then OOM-kills the model. That is reported, not applied.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

from watchdog.model import ContainerSnapshot
from watchdog.router.capacity import MIB, RoleMemory
from watchdog.units import format_bytes


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
    container: ContainerSnapshot, role: str, planned: Limits, *, applied: Applied | None, usage: int | None
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
        action = classify(
            container,
            container.spec.role,
            planned,
            applied=applied.get(container.name),
            usage=usage.get(container.id),
        )
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
    containers: Iterable[ContainerSnapshot], limits: Mapping[str, RoleMemory], *, filename: str = "compose.memory.yml"
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
