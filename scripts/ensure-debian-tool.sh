#!/usr/bin/env bash
# Usage: ensure-debian-tool.sh COMMAND PACKAGE [VERSION-FLAG]
# Installs Debian's PACKAGE (the package registry here has it) unless COMMAND is already on PATH.
# Only the binary is used: without systemd a package starts no service. Idempotent.
set -euo pipefail
command_name=$1 package=$2 version_flag=${3:---version}
say() { echo "ensure-$command_name: $*" >&2; }
if command -v "$command_name" >/dev/null 2>&1; then
  say "$("$command_name" "$version_flag" 2>&1 | head -1)"
  exit 0
fi
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
say "installing Debian's $package package"
install() { $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$package"; }
install >/dev/null 2>&1 || { $SUDO apt-get update -q >/dev/null 2>&1; install >/dev/null; }
command -v "$command_name" >/dev/null 2>&1 || { say "FAILED: no $command_name after installing $package"; exit 1; }
say "$("$command_name" "$version_flag" 2>&1 | head -1)"
