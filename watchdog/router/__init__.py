"""The router and capacity: traffic goes only where a healthy model is, within what the host can carry.

Pure: `capacity` (the capacity planner: what the fleet can carry and the limits that follow),
`litellm_config` (the LiteLLM config and rotation, rendered from the fleet and the plan).
I/O: `sync` (keeps the plan, the proxy's config, the rotation file and the proxy in step),
`memory_limits` (sets or reports the containers' memory limits the plan asks for).
"""

PURE_MODULES: tuple[str, ...] = ("capacity", "litellm_config")  # no I/O, time passed in (tests/unit/test_purity.py)
