"""The router host's LiteLLM config from the fleet's views: every host's deployments, under HOST/ID. Pure.

Each GPU host renders its own deployments; the proxies of a router host need all of them, with the
ids the views in Redis use, so that the callback's fleet rotation (gpu_watchdog_cluster.py) names
the deployments their config lists. A deployment is listed when a fresh view publishes it with a
model group and an api_base, at the weight its host's plan gave it.
"""

from __future__ import annotations

from watchdog.cluster.fleet_view import FleetView
from watchdog.router.litellm_config import RouterDeployment


def fleet_deployments(view: FleetView) -> list[RouterDeployment]:
    """Every published deployment that can be routed to (a group and an api_base), in id order."""
    found: dict[str, RouterDeployment] = {}
    for host in view.hosts:
        for d in host.deployments:
            if d.group and d.api_base:
                found[d.id] = RouterDeployment(d.id, d.group, f"{host.host}/{d.container}", d.api_base, (), d.weight)
    return [found[i] for i in sorted(found)]
