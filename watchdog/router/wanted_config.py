"""What the proxy's config should list: the plan it follows and the deployments in it.

Pure. The daemon (each cycle) and `gpu-watchdog litellm render` (once) decide it here, the same
way, and write it with watchdog/router/config_writer.py `write_router_config`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from watchdog.gpu.marks import GpuMark
from watchdog.model import ContainerSnapshot, Decision, Verdict
from watchdog.router.capacity import CapacityPlan, CapacityPolicy, plan_capacity, planned_members
from watchdog.router.fallbacks import NO_FALLBACKS, FallbackPlan, plan_fallbacks
from watchdog.router.litellm_config import RouterDeployment, router_deployments, unreachable


@dataclass(frozen=True)
class WantedConfig:
    """The deployments the config lists, the plan that gives their numbers, and who is left out for want of a URL."""

    plan: CapacityPlan
    deployments: tuple[RouterDeployment, ...]
    unreachable: tuple[str, ...]  # planned containers with no URL known: not in the config
    fallbacks: FallbackPlan = NO_FALLBACKS  # between the model groups of these deployments


def config_plan(
    containers: Sequence[ContainerSnapshot],
    marks: Mapping[str, GpuMark],
    given_up: set[str],
    *,
    policy: CapacityPolicy,
    host_total: int | None,
) -> CapacityPlan:
    """The plan the router config follows. A container stopped on purpose stays in it (out of rotation
    only): an operator's `docker stop` for maintenance must not cost a proxy restart (an ~11 s outage)."""
    return plan_capacity(planned_members(containers, marks, given_up, stopped_on_purpose=set()), policy, host_total)


def wanted_config(
    containers: Sequence[ContainerSnapshot],
    marks: Mapping[str, GpuMark],
    given_up: set[str],
    *,
    policy: CapacityPolicy,
    host_total: int | None,
    known: Mapping[str, str],
    plan: CapacityPlan | None = None,
    fallbacks: Mapping[str, Sequence[str]] | None = None,
    label_prefix: str = "gpu-watchdog",
) -> WantedConfig:
    """The config for this fleet. `known`: deployment id -> the api_base last seen (a stopped container
    publishes no port, and a crash must not change the config: that would restart the proxy).
    `plan`: the config's plan when the caller already has it (the daemon's capacity plan is the same
    when no container is stopped on purpose), so a cycle does not plan the fleet twice. `fallbacks`: config
    litellm.fallbacks (the containers' fallback labels add to it), kept for the groups the config lists."""
    if plan is None:
        plan = config_plan(containers, marks, given_up, policy=policy, host_total=host_total)
    deployments = router_deployments(containers, plan, known)
    groups = {d.model for d in deployments}
    routes = plan_fallbacks(fallbacks or {}, containers, groups, prefix=label_prefix)
    return WantedConfig(plan, tuple(deployments), tuple(unreachable(deployments, plan)), routes)


def given_up_names(decisions: Sequence[Decision]) -> set[str]:
    """The containers the crash-loop breaker gave up on this cycle or earlier: out of the config."""
    return {d.fault.container for d in decisions if d.verdict in (Verdict.GIVE_UP, Verdict.GIVEN_UP)}
