#!/usr/bin/env bash
# promtool, to check compose/monitoring/alerts.yml the way Prometheus will load it.
# From Debian's `prometheus` package (the package registry here has it); only the binary is used:
# without systemd the package starts no server. Idempotent.
set -euo pipefail
if command -v promtool >/dev/null 2>&1; then
  echo "ensure-promtool: $(promtool --version 2>&1 | head -1)" >&2
  exit 0
fi
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
echo "ensure-promtool: installing Debian's prometheus package for promtool" >&2
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1 || {
  $SUDO apt-get update -q >/dev/null 2>&1
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null
}
command -v promtool >/dev/null 2>&1 || { echo "ensure-promtool: FAILED: no promtool after installing prometheus" >&2; exit 1; }
