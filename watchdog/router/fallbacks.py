"""Fallbacks between model groups: when every deployment of a group is out, its requests go to another.

Pure. Where they come from: config `litellm.fallbacks: {PRIMARY: [FALLBACK, ...]}` first, then the
label `gpu-watchdog.fallback: FALLBACK[,FALLBACK]` on the containers of PRIMARY (their
`gpu-watchdog.model`). What the fleet does not serve is left out with one line naming it and the
fix, never an error: a group falling back to itself, to a group no deployment serves, or an edge
that would close a cycle (LiteLLM would bounce the request between them until max_fallbacks).

What reaches LiteLLM 1.102.4 (its Router, `async_function_with_fallbacks`):
- `router_settings.fallbacks: [{PRIMARY: [FALLBACK, ...]}]` in the rendered config. Any exception
  of the primary group's call, after its retries, sends the request to the fallback groups in order,
  the "No deployments available" 429 (RouterRateLimitError) included.
- In rotation.json: the groups, their fallbacks and each fallback deployment's failover cap, so the
  callback can (1) return no candidate when every primary is out and a fallback group has one in
  rotation (the 429 that makes LiteLLM fall back at once, instead of routing anyway to dead
  primaries and paying their connection errors or timeouts), and (2) cap the failover.

The cap (`failover_rpm`): a fallback deployment takes at most its planned rpm (capacity planner:
`capacity.rpm_per_gpu` high x its GPUs, the same number its weight carries) of failover requests in
any rolling minute. The primary group's traffic may be larger than the small GPUs can serve; what
is over their capacity gets LiteLLM's 429 at once instead of queueing on them (a swamped
llama.cpp answers everyone late, its own group too). The fallback group's own requests are never
refused by the cap. A role that does not carry the target rpm has no cap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from watchdog.model import ContainerSnapshot
from watchdog.router.litellm_config import RouterDeployment

Routes = tuple[tuple[str, tuple[str, ...]], ...]  # (primary group, its fallback groups in order), sorted


@dataclass(frozen=True)
class FallbackPlan:
    """The fallbacks the fleet can honour, and what was left out (one line each, with the fix)."""

    routes: Routes = ()
    problems: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, list[str]]:
        return {primary: list(targets) for primary, targets in self.routes}


NO_FALLBACKS = FallbackPlan()


def labelled_fallbacks(containers: Sequence[ContainerSnapshot], prefix: str) -> dict[str, list[tuple[str, str]]]:
    """Primary group -> [(fallback group, the container whose label named it)], in container order."""
    found: dict[str, list[tuple[str, str]]] = {}
    for c in sorted(containers, key=lambda c: c.name):
        if c.spec is None or not c.spec.model or not c.spec.fallback:
            continue
        for target in c.spec.fallback:
            found.setdefault(c.spec.model, []).append((target, f"label {prefix}.fallback on {c.name}"))
    return found


def _reaches(graph: Mapping[str, list[str]], start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        group = todo.pop()
        if group == goal:
            return True
        if group not in seen:
            seen.add(group)
            todo.extend(graph.get(group, []))
    return False


def plan_fallbacks(
    configured: Mapping[str, Sequence[str]],
    containers: Sequence[ContainerSnapshot],
    groups: set[str] | frozenset[str],
    *,
    prefix: str = "gpu-watchdog",
) -> FallbackPlan:
    """The routes for the model groups in the config (`groups`), config entries first, then labels."""
    wanted: dict[str, list[tuple[str, str]]] = {
        primary: [(t, f"litellm.fallbacks.{primary}") for t in targets] for primary, targets in configured.items()
    }
    for primary, named in labelled_fallbacks(containers, prefix).items():
        wanted.setdefault(primary, []).extend(named)
    graph: dict[str, list[str]] = {}
    problems: list[str] = []
    for primary in sorted(wanted):
        for target, source in wanted[primary]:
            if target in graph.get(primary, []):
                continue
            why = ""
            if target == primary:
                why = f"{primary} falls back to itself; name another model group"
            elif primary not in groups:
                why = f"no deployment serves {primary}; start one or remove the entry"
            elif target not in groups:
                why = f"no deployment serves the fallback group {target}; start one or remove it"
            elif _reaches(graph, target, primary):
                why = f"{primary} -> {target} closes a cycle ({target} already falls back to {primary}); remove one"
            if why:
                problems.append(f"fallback {primary} -> {target} ({source}) left out: {why}")
            else:
                graph.setdefault(primary, []).append(target)
    routes = tuple(sorted((p, tuple(t)) for p, t in graph.items() if t))
    return FallbackPlan(routes, tuple(problems))


def litellm_fallbacks(plan: FallbackPlan) -> list[dict[str, list[str]]]:
    """router_settings.fallbacks as LiteLLM reads it: one single-key mapping per primary group."""
    return [{primary: list(targets)} for primary, targets in plan.routes]


def failover_caps(plan: FallbackPlan, deployments: Sequence[RouterDeployment]) -> dict[str, int]:
    """Fallback deployment id -> failover requests it takes per rolling minute (its planned rpm)."""
    targets = {t for _, group in plan.routes for t in group}
    return {d.id: d.weight for d in deployments if d.model in targets and d.weight is not None}


def rotation_fields(plan: FallbackPlan, deployments: Sequence[RouterDeployment]) -> dict[str, object]:
    """What the callback needs beside the deny-list; empty without fallbacks (the file stays as it was)."""
    if not plan.routes:
        return {}
    involved = {p for p, _ in plan.routes} | {t for _, group in plan.routes for t in group}
    groups: dict[str, list[str]] = {}
    for d in sorted(deployments, key=lambda d: d.id):
        if d.model in involved:
            groups.setdefault(d.model, []).append(d.id)
    return {"fallbacks": plan.as_dict(), "groups": groups, "failover_rpm": failover_caps(plan, deployments)}
