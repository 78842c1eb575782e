"""Beyond one host: each host's watchdog publishes its deployments' state to Redis; every proxy reads the fleet.

No consensus, no leader and no store of our own: Redis (the one LiteLLM's multi-instance setups already
run) holds one key per host, written only by that host's watchdog, with a TTL of a few poll intervals.
Each watchdog stays the local actuator (NVML and the Docker socket stay local); with Redis down every
watchdog goes on healing on its own and the proxies route as LiteLLM alone would.

Pure: `fleet_view` (the document a host publishes, and the strict reading of what others published:
another fleet's prefix, a wrong version or garbage is ignored, never trusted), `fleet_config` (the
router host's LiteLLM deployments from the fleet's views). I/O: `redis_link` (the connection, its
password from the environment), `publisher` (the router's part that publishes), `fleet_reader` (the
fleet as Redis holds it, for `gpu-watchdog fleet status` and `fleet render`).
"""

# The modules here that do no I/O and read no clock (checked by tests/unit/test_purity.py).
PURE_MODULES: tuple[str, ...] = ("fleet_view", "fleet_config")
