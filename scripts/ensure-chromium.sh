#!/usr/bin/env bash
# A headless Chromium, to render the HTML report the way an operator's browser will (tests only).
# Debian's chromium-headless-shell package (the package registry here has it; no browser
# download of its own). Idempotent: a chromium already on PATH is used as it is.
set -euo pipefail
for name in chromium-headless-shell chromium; do
  if command -v "$name" >/dev/null 2>&1; then
    echo "ensure-chromium: $("$name" --version 2>/dev/null | head -1)" >&2
    exit 0
  fi
done
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
echo "ensure-chromium: installing Debian's chromium-headless-shell package" >&2
install() { $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium-headless-shell; }
install >/dev/null 2>&1 || { $SUDO apt-get update -q >/dev/null 2>&1; install >/dev/null; }
command -v chromium-headless-shell >/dev/null 2>&1 || { echo "ensure-chromium: FAILED: no chromium-headless-shell after installing it" >&2; exit 1; }
