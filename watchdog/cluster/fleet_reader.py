"""The fleet as Redis holds it, read in two round trips: every host in P:hosts, then their documents.

For `gpu-watchdog fleet status`, from Redis alone (no engine, no journal): what every proxy sees.
"""

from __future__ import annotations

from typing import Any

from watchdog.cluster.fleet_view import FleetView, fleet_view, host_key, hosts_key
from watchdog.cluster.redis_link import connect
from watchdog.config.model import ClusterConfig


def read_fleet(cluster: ClusterConfig, now: float) -> FleetView:
    """Raises one of redis_link.redis_errors() when Redis does not answer."""
    client = connect(cluster)
    try:
        prefix = cluster.key_prefix
        members: list[Any] = list(client.zrange(hosts_key(prefix), 0, -1, withscores=True))
        heartbeats = {(h.decode() if isinstance(h, bytes) else str(h)): float(at) for h, at in members}
        keys = [host_key(prefix, h) for h in heartbeats]
        bodies = client.mget(keys) if keys else []
        return fleet_view(dict(zip(keys, bodies, strict=True)), heartbeats, prefix=prefix, now=now)
    finally:
        client.close()
