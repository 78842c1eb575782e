#!/usr/bin/env bash
# promtool, to check compose/monitoring/alerts.yml the way Prometheus will load it (Debian's prometheus package).
exec bash "$(dirname "$0")/ensure-debian-tool.sh" promtool prometheus
