"""The router and capacity: traffic goes only where a healthy model is, within what the host can carry.

Pure: `capacity` (the capacity planner: what the fleet can carry and the limits that follow),
`health_weights` (each deployment's share of traffic from its GPUs' health scores, evictions within the floor),
`litellm_config` (the LiteLLM config and rotation, rendered from the fleet and the plan),
`wanted_config` (what the proxy's config lists: one decision for the daemon and `litellm render`),
`router_feedback` (the proxy's outlier reports judged: router suspects, false alarms to clear),
`memory_limit_plan` (which containers' memory limits differ from the plan, and the compose override),
`fallbacks` (fallbacks between model groups: config and labels checked, rendered, their failover caps).
`drain` (a drain's state machine and the board of drains in force, shared through the loop's services).
I/O: `sync` (RouterSync, the loop's subsystem: composes the parts below and keeps their order),
`capacity_watch` (the plan in force, said when it changes), `config_writer` (the proxy's config on
disk: `write_router_config`, the one way it is written), `rotation_writer` (the rotation file, the
callback's heartbeat), `proxy_sync` (what the proxy has loaded, its restarts, up/down),
`problems` (each router problem said once), `router_reports` (reads the proxy's outlier reports on a
thread), `feedback_watch` (router suspects for the serving watch, clears for the rotation file),
`drain_watch` (begins and ends drains, reads in flight, journals them),
`memory_limits` (sets or reports the containers' memory limits the plan asks for), `limit_watch`
(when a memory-limit pass runs, off the loop's thread).
"""

# The modules here that do no I/O and read no clock (checked by tests/unit/test_purity.py).
PURE_MODULES: tuple[str, ...] = (
    "capacity",
    "health_weights",
    "fallbacks",
    "drain",
    "litellm_config",
    "memory_limit_plan",
    "router_feedback",
    "wanted_config",
)
