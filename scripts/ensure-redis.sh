#!/usr/bin/env bash
# redis-server, the shared router view of several hosts (watchdog/cluster/, litellm/gpu_watchdog_cluster.py) in
# the tests: tests/integration/redis_server.py starts its own `redis-server --port P --save ''` per test module.
exec bash "$(dirname "$0")/ensure-debian-tool.sh" redis-server redis-server --version
