#!/usr/bin/env bash
# A headless Chromium, to render the HTML report the way an operator's browser will (tests only):
# Debian's chromium-headless-shell package, no browser download of its own. A chromium on PATH is used as it is.
if command -v chromium >/dev/null 2>&1 && ! command -v chromium-headless-shell >/dev/null 2>&1; then
  echo "ensure-chromium: $(chromium --version 2>/dev/null | head -1)" >&2
  exit 0
fi
exec bash "$(dirname "$0")/ensure-debian-tool.sh" chromium-headless-shell chromium-headless-shell
