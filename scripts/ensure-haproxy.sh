#!/usr/bin/env bash
# haproxy, the least-privilege Docker socket proxy that tests/integration/test_socket_proxy.py runs the
# watchdog through (config: compose/socket-proxy/haproxy.cfg); the test runs `haproxy -db -f ...` itself.
exec bash "$(dirname "$0")/ensure-debian-tool.sh" haproxy haproxy -v
