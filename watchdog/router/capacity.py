"""The capacity planner: what the fleet can carry, and what of it reaches the LiteLLM proxy.

Pure. From the deployments in service (healthy managed containers serving a
model, on GPUs not quarantined) and a policy, it computes per-deployment `rpm`
and requests in flight, the fleet's in-flight total with headroom, the fleet's
capacity and the target's share of it with a verdict, and memory limits per role
that must fit the host with its overhead.

Only the shares reach the proxy, as each deployment's `weight` (`proxy_params`):
LiteLLM 1.102.4 turns every in-flight limit into a queue a stuck backend fills
(NOT_RENDERED says why per key; README, "The router"). The in-flight numbers stay
in the plan to size the backends (llama.cpp `--parallel`, vLLM `--max-num-seqs`).

Seed 001's fleet is the reference: 8 GPUs at 3-4 rpm = 24-32 rpm; 30 rpm is
94% of 32; one request in flight per GPU plus 30% headroom gives 12.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from watchdog.gpu.marks import GpuMark
from watchdog.model import ContainerSnapshot, ContainerState, Health
from watchdog.units import format_bytes

GIB = 1024**3
MIB = 1024**2


@dataclass(frozen=True)
class RoleMemory:
    """docker's mem_limit and memswap_limit (RAM + swap) for one container of a role."""

    mem_limit: int
    memswap_limit: int


@dataclass(frozen=True)
class CapacityPolicy:
    """Operator's numbers (config `capacity:`); defaults are seed 001's."""

    rpm_per_gpu: tuple[float, float] = (3.0, 4.0)  # measured capacity of one GPU, low and high
    target_rpm: float = 30.0
    safety_margin: float = 0.9  # warn when the target is above this share of capacity
    parallel_per_gpu: int = 1  # requests in flight per deployment and GPU
    headroom: float = 0.3  # share of the global limit kept spare
    serving_roles: tuple[str, ...] = ("chat",)  # roles whose deployments carry the target rpm
    memory: Mapping[str, RoleMemory] = field(
        default_factory=lambda: {
            "chat": RoleMemory(1536 * MIB, 2048 * MIB),
            "embed": RoleMemory(512 * MIB, 768 * MIB),
        }
    )
    host_overhead: int = 2 * GIB  # RAM for the OS, the engine, the proxy and the watchdog
    memory_limits: str = "report"  # off | report (drift and unapplied limits) | enforce (docker update)
    compose_override: str | None = None  # path of the compose override file with the limits; None: not written


@dataclass(frozen=True)
class Member:
    """One managed container as the planner sees it."""

    name: str
    role: str | None
    model: str | None
    gpus: tuple[str, ...]
    in_service: bool  # healthy, and none of its GPUs quarantined or drained, and not given up


# What the plan does not hand LiteLLM, and why (LiteLLM 1.102.4's source; `plan` and the rendered file say it).
NOT_RENDERED: Mapping[str, str] = {
    "max_parallel_requests": (
        "LiteLLM picks a deployment first, then waits on its semaphore with no timeout: one stuck backend's "
        "requests would queue until clients give up, though the others stand idle"
    ),
    "rpm": "without max_parallel_requests LiteLLM sizes the same semaphore from rpm; the share goes as weight",
    "global_max_parallel_requests": (
        "read only by LiteLLM's legacy limiter (LEGACY_MULTI_INSTANCE_RATE_LIMITING), where one stuck "
        "backend's requests use it up and every other request gets a 429"
    ),
}


@dataclass(frozen=True)
class DeploymentPlan:
    name: str
    model: str
    role: str | None
    gpus: tuple[str, ...]
    rpm: int | None  # None: not rate-limited (a role that does not carry the target)
    max_parallel_requests: int  # requests in flight the backend is sized for; not rendered (NOT_RENDERED)


def proxy_params(deployment: DeploymentPlan) -> dict[str, int]:
    """What the plan adds to a deployment's litellm_params: its share of the traffic, nothing that queues.

    simple-shuffle picks by `weight` before `rpm` (router_strategy/simple_shuffle.py), and
    `weight` sizes no semaphore, so a stuck backend takes only its share of new requests,
    each bounded by the deployment timeout, then retried on another deployment.
    """
    return {} if deployment.rpm is None else {"weight": deployment.rpm}


class CapacityVerdict(StrEnum):
    """How the target rpm fits the fleet's capacity (not the heal planner's `model.Verdict`)."""

    OK = "ok"
    ABOVE_MARGIN = "above-margin"  # fits, but above the safety margin
    OVER_CAPACITY = "over-capacity"  # the target exceeds even the high estimate
    NO_CAPACITY = "no-capacity"  # nothing in service serves the target


@dataclass(frozen=True)
class MemoryPlan:
    limits: Mapping[str, RoleMemory]
    containers_per_role: Mapping[str, int]
    total_limits: int
    host_total: int | None
    overhead: int
    fits: bool
    text: str
    unplanned_roles: tuple[str, ...] = ()


@dataclass(frozen=True)
class CapacityPlan:
    deployments: tuple[DeploymentPlan, ...]
    serving_gpus: int
    capacity_rpm: tuple[float, float]
    target_rpm: float
    share: float | None  # target / high capacity
    verdict: CapacityVerdict
    text: str
    global_max_parallel_requests: int  # the fleet's in flight + headroom; not rendered (NOT_RENDERED)
    memory: MemoryPlan
    warnings: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {
            "target_rpm": self.target_rpm,
            "capacity_rpm": list(self.capacity_rpm),
            "share": self.share,
            "verdict": self.verdict.value,
            "text": self.text,
            "serving_gpus": self.serving_gpus,
            "global_max_parallel_requests": self.global_max_parallel_requests,
            "deployments": [
                {
                    "name": d.name,
                    "model": d.model,
                    "role": d.role,
                    "gpus": list(d.gpus),
                    "rpm": d.rpm,
                    "max_parallel_requests": d.max_parallel_requests,
                    "litellm_params": proxy_params(d),
                }
                for d in self.deployments
            ],
            "memory": {
                "limits": {
                    role: {"mem_limit": m.mem_limit, "memswap_limit": m.memswap_limit}
                    for role, m in self.memory.limits.items()
                },
                "containers_per_role": dict(self.memory.containers_per_role),
                "total_limits": self.memory.total_limits,
                "host_total": self.memory.host_total,
                "overhead": self.memory.overhead,
                "fits": self.memory.fits,
                "text": self.memory.text,
            },
            "not_rendered": dict(NOT_RENDERED),
            "warnings": list(self.warnings),
        }


def members_from_fleet(
    containers: Sequence[ContainerSnapshot],
    faulty: set[str],
    marks: Mapping[str, GpuMark],
    given_up: set[str],
) -> list[Member]:
    """Managed containers as members; in service = running, no fault, not given up, no marked GPU.

    `faulty`: container IDs with a fault now (from the daemon's view). A GPU reference
    matches a mark by UUID or by the mark's index.
    """
    marked = _marked_refs(marks)
    members = []
    for c in containers:
        if not c.managed or c.spec is None:
            continue
        on_marked_gpu = any(ref.lower() in marked for ref in c.gpus)
        in_service = (
            c.state == ContainerState.RUNNING
            and c.health != Health.UNHEALTHY
            and c.id not in faulty
            and c.name not in given_up
            and not on_marked_gpu
        )
        members.append(Member(c.name, c.spec.role, c.spec.model, c.gpus, in_service))
    return members


def planned_members(
    containers: Sequence[ContainerSnapshot],
    marks: Mapping[str, GpuMark],
    given_up: set[str],
    *,
    stopped_on_purpose: set[str],
) -> list[Member]:
    """Members as the router config sees them: out only when out for long (capacity changes).

    A crash or a hang is a transient fault: the rotation takes the deployment out for
    seconds, the config keeps it. A quarantined/drained GPU, a container given up or
    stopped by an operator changes the capacity: the plan and the config follow.
    """
    marked = _marked_refs(marks)
    members = []
    for c in containers:
        if not c.managed or c.spec is None:
            continue
        in_service = (
            c.name not in given_up
            and c.id not in stopped_on_purpose
            and not any(ref.lower() in marked for ref in c.gpus)
        )
        members.append(Member(c.name, c.spec.role, c.spec.model, c.gpus, in_service))
    return members


def _marked_refs(marks: Mapping[str, GpuMark]) -> set[str]:
    """A GPU reference matches a mark by UUID or by the mark's index."""
    return {m.uuid.lower() for m in marks.values()} | {str(m.index) for m in marks.values() if m.index is not None}


def _rpm(value: float) -> str:
    return f"{value:g}"


def plan_capacity(members: Sequence[Member], policy: CapacityPolicy, host_total: int | None) -> CapacityPlan:
    """The plan for the members in service; `host_total` is MemTotal (None: unknown host)."""
    low, high = policy.rpm_per_gpu
    deployments: list[DeploymentPlan] = []
    serving_gpus: set[str] = set()
    serving_parallel = 0
    for member in sorted(members, key=lambda m: m.name):
        if not member.in_service or not member.model:
            continue
        gpus = max(1, len(member.gpus))
        parallel = policy.parallel_per_gpu * gpus
        serving = member.role in policy.serving_roles
        if serving:
            serving_gpus.update(member.gpus or (member.name,))
            serving_parallel += parallel
        deployments.append(
            DeploymentPlan(
                member.name,
                member.model,
                member.role,
                member.gpus,
                math.floor(high * gpus) if serving else None,
                parallel,
            )
        )
    count = len(serving_gpus)
    capacity = (low * count, high * count)
    target = policy.target_rpm
    span = f"{_rpm(capacity[0])}-{_rpm(capacity[1])} rpm" if low != high else f"{_rpm(capacity[1])} rpm"
    if count == 0:
        share: float | None = None
        verdict = CapacityVerdict.NO_CAPACITY
        text = f"{_rpm(target)} rpm target: no {'/'.join(policy.serving_roles)} deployment in service"
    else:
        share = target / capacity[1]
        percent = f"{share * 100:.0f}%"
        head = f"{_rpm(target)} rpm = {percent} of {_rpm(capacity[1])} rpm capacity ({count} GPU(s) at {span})"
        if share > 1:
            verdict, text = CapacityVerdict.OVER_CAPACITY, f"{head} — over capacity: add GPUs or lower the target"
        elif share > policy.safety_margin:
            verdict = CapacityVerdict.ABOVE_MARGIN
            text = f"{head} — above the {policy.safety_margin * 100:.0f}% safety margin"
        else:
            verdict = CapacityVerdict.OK
            text = f"{head} — within the {policy.safety_margin * 100:.0f}% safety margin"
    global_parallel = math.ceil(serving_parallel / (1 - policy.headroom) - 1e-9) if serving_parallel else 0
    memory = plan_memory(members, policy, host_total)
    warnings = []
    if verdict != CapacityVerdict.OK:
        warnings.append(text)
    if not memory.fits:
        warnings.append(memory.text)
    return CapacityPlan(
        tuple(deployments),
        count,
        capacity,
        target,
        share,
        verdict,
        text,
        global_parallel,
        memory,
        tuple(warnings),
    )


def plan_memory(members: Sequence[Member], policy: CapacityPolicy, host_total: int | None) -> MemoryPlan:
    """Limits per role for every managed container (in service or not: a restart brings it back)."""
    per_role: dict[str, int] = {}
    unplanned: set[str] = set()
    total = 0
    for member in members:
        role = member.role or ""
        limits = policy.memory.get(role)
        if limits is None:
            unplanned.add(role or "(no role)")
            continue
        per_role[role] = per_role.get(role, 0) + 1
        total += limits.mem_limit
    need = total + policy.host_overhead
    parts = " + ".join(
        f"{n} x {role} {format_bytes(policy.memory[role].mem_limit)}" for role, n in sorted(per_role.items())
    )
    if host_total is None:
        fits, verdict = True, "host RAM unknown: not checked"
    elif need <= host_total:
        fits, verdict = True, f"fits in {format_bytes(host_total)}"
    else:
        fits = False
        verdict = (
            f"does NOT fit in {format_bytes(host_total)}: lower capacity.memory limits or capacity.host_overhead, "
            "or run fewer containers"
        )
    text = (
        f"memory limits {parts or 'none'} = {format_bytes(total)} + {format_bytes(policy.host_overhead)} "
        f"overhead = {format_bytes(need)}: {verdict}"
    )
    return MemoryPlan(
        dict(policy.memory), per_role, total, host_total, policy.host_overhead, fits, text, tuple(sorted(unplanned))
    )


def render(plan: CapacityPlan) -> str:
    """`gpu-watchdog plan`: the verdict first, then what LiteLLM and docker will get, and what not and why."""
    lines = [
        plan.text,
        plan.memory.text,
        f"in flight: {plan.global_max_parallel_requests} with headroom (to size the backends' parallel slots); "
        "LiteLLM gets each deployment's rpm as its weight, and no in-flight limit:",
    ]
    lines += [f"  {key} not rendered: {why}" for key, why in NOT_RENDERED.items()]
    if plan.deployments:
        lines.append("")
        width = max(len(d.name) for d in plan.deployments)
        for d in plan.deployments:
            rpm = "-" if d.rpm is None else str(d.rpm)
            weight = proxy_params(d).get("weight")
            lines.append(
                f"  {d.name.ljust(width)}  model {d.model}  role {d.role or '-'}  GPU {','.join(d.gpus) or '-'}  "
                f"rpm {rpm}  weight {'-' if weight is None else weight}  in flight {d.max_parallel_requests}"
            )
    lines.append("")
    for role, limits in sorted(plan.memory.limits.items()):
        lines.append(
            f"  {role}: mem_limit {limits.mem_limit // MIB}m, memswap_limit {limits.memswap_limit // MIB}m "
            f"({plan.memory.containers_per_role.get(role, 0)} container(s))"
        )
    if plan.memory.unplanned_roles:
        lines.append(f"  no capacity.memory entry for role(s): {', '.join(plan.memory.unplanned_roles)}")
    return "\n".join(lines)
