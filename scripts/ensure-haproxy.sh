#!/usr/bin/env bash
# haproxy, the least-privilege Docker socket proxy that tests/integration/test_socket_proxy.py runs the
# watchdog through (config: compose/socket-proxy/haproxy.cfg). Debian's `haproxy` package (the package
# registry here has it); only the binary is used: without systemd the package starts no service, and the
# test runs `haproxy -db -f ...` itself. Idempotent.
set -euo pipefail
if command -v haproxy >/dev/null 2>&1; then
  echo "ensure-haproxy: $(haproxy -v 2>&1 | head -1)" >&2
  exit 0
fi
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
echo "ensure-haproxy: installing Debian's haproxy package" >&2
install() { $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends haproxy; }
install >/dev/null 2>&1 || { $SUDO apt-get update -q >/dev/null 2>&1; install >/dev/null; }
command -v haproxy >/dev/null 2>&1 || { echo "ensure-haproxy: FAILED: no haproxy after installing it" >&2; exit 1; }
echo "ensure-haproxy: $(haproxy -v 2>&1 | head -1)" >&2
