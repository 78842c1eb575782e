#!/usr/bin/env bash
# Build the local images the tests run, without any registry or network:
#   local/busybox              FROM scratch + the host's static busybox
#   local/python-min           the host's python3.11 + stdlib + shared libs + busybox
#   gpu-watchdog/standin:dev   compose/standin (the stand-in inference server)
#   gpu-watchdog/watchdog:dev  compose/Dockerfile: the watchdog itself (WATCHDOG_BASE picks the base)
#   gpu-watchdog/llama-server:dev  compose/llama-server: the real llama.cpp server and the tiny model that
#                              scripts/ensure-llama-server.sh cached (skipped, said once, when it has not run)
# Idempotent: an image that already exists is skipped unless --force is given.
# gpu-watchdog/standin:dev is also rebuilt when compose/standin changed (its
# context hash is kept in a label) or when local/python-min was rebuilt; the
# llama-server image when the binary, its libraries, the model or its Dockerfile changed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUSYBOX_IMAGE=local/busybox
PYTHON_IMAGE=local/python-min
STANDIN_IMAGE=gpu-watchdog/standin:dev
STANDIN_DIR="$ROOT/compose/standin"
HASH_LABEL=io.gpu-watchdog.standin.context-sha256
HOST_BUSYBOX="${HOST_BUSYBOX:-/bin/busybox}"  # overridable for tests only
WATCHDOG_IMAGE=gpu-watchdog/watchdog:dev
WATCHDOG_BASE="${WATCHDOG_BASE:-$PYTHON_IMAGE}"  # e.g. python:3.11-slim where a registry is reachable
LLAMA_IMAGE=gpu-watchdog/llama-server:dev
LLAMA_DIR="$ROOT/compose/llama-server"

FORCE=0
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; echo "usage: $0 [--force]"; exit 0 ;;
    *) echo "build-images: unknown argument: $arg (usage: $0 [--force])" >&2; exit 2 ;;
  esac
done

log() { echo "build-images: $*" >&2; }
die() { log "error: $*"; exit 1; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/build-images.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

# Ids of the images a rebuild replaced; removed at the end, newest layer
# first, so that --force does not pile up dangling images. Removal fails
# (harmlessly) for an image a container still uses.
REPLACED=()
remember_old() {
  local id
  id="$(docker image inspect --format '{{.Id}}' "$1" 2>/dev/null)" && REPLACED=("$id" "${REPLACED[@]}")
  return 0
}
remove_replaced() {
  local id dangling
  dangling="$(docker images -q --no-trunc --filter dangling=true)"
  for id in "${REPLACED[@]}"; do
    grep -Fxq "$id" <<<"$dangling" || continue
    docker rmi "$id" >/dev/null 2>&1 || true
  done
}

# Run a build command with its (noisy, deprecation-warning laden) output in a
# log; show the log only when it fails.
quiet() {
  local logfile="$WORK/build.log"
  if ! "$@" >"$logfile" 2>&1; then
    cat "$logfile" >&2
    die "command failed: $*"
  fi
}

summary() { # name start-seconds
  local bytes
  bytes="$(docker image inspect --format '{{.Size}}' "$1")"
  printf 'build-images: %-26s %6.1f MB  %5.1f s\n' "$1" \
    "$(awk "BEGIN{print $bytes/1000000}")" "$(awk "BEGIN{print $(date +%s.%N) - $2}")"
}

check_busybox() {
  [ -x "$HOST_BUSYBOX" ] ||
    die "$HOST_BUSYBOX not found; install it with: apt-get install busybox-static"
  local out
  out="$(LC_ALL=C ldd "$HOST_BUSYBOX" 2>&1 || true)"
  if ! grep -Eq 'not a dynamic executable|statically linked' <<<"$out"; then
    die "$HOST_BUSYBOX is not statically linked; install the static one with: apt-get install busybox-static"
  fi
}

# ---------------------------------------------------------------- busybox

build_busybox() {
  check_busybox
  local ctx="$WORK/busybox"
  mkdir -p "$ctx"
  cp "$HOST_BUSYBOX" "$ctx/busybox"
  cat >"$ctx/Dockerfile" <<'EOF'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
CMD ["/bin/sh"]
EOF
  quiet docker build --label org.opencontainers.image.title=gpu-watchdog-busybox \
    -t "$BUSYBOX_IMAGE" "$ctx"
}

# ------------------------------------------------------------- python-min

find_python() {
  local py
  if [ -x /usr/bin/python3.11 ]; then
    py=/usr/bin/python3.11
  else
    command -v python3 >/dev/null 2>&1 || die "no python3 on this machine"
    # python3 may be a pyenv shim (a shell script): ask the interpreter itself.
    py="$(readlink -f "$(python3 -c 'import sys; print(sys.executable)')")"
  fi
  "$py" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' ||
    die "$py is not Python 3.11"
  head -c 4 "$py" | grep -q 'ELF' || die "$py is not an ELF binary"
  echo "$py"
}

# Copy a host file to the same absolute path under the staging root,
# following symlinks (the copy is a plain file).
stage_file() {
  local src="$1" root="$2"
  [ -e "$root$src" ] && return 0
  mkdir -p "$root$(dirname "$src")"
  cp -L "$src" "$root$src"
}

build_python_min() {
  check_busybox
  local py stdlib dynload root="$WORK/python-root"
  py="$(find_python)"
  stdlib="$("$py" -I -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')"
  dynload="$("$py" -I -c 'import os, _json; print(os.path.dirname(_json.__file__))')"
  [ -f "$stdlib/os.py" ] || die "standard library of $py not found at $stdlib"
  log "python-min: interpreter $py, stdlib $stdlib"

  mkdir -p "$root"
  stage_file "$py" "$root"
  # The standard library (plus lib-dynload when it lives elsewhere), without
  # tests, GUI/IDE bits, bytecode caches, build-time files and third-party
  # packages.
  local dir
  for dir in "$stdlib" "$dynload"; do
    [ -e "$root$dir" ] && continue
    mkdir -p "$root$dir"
    tar -C "$dir" -c \
      --exclude=__pycache__ --exclude=test --exclude=tests --exclude=idle_test \
      --exclude=idlelib --exclude=tkinter --exclude=turtledemo --exclude=ensurepip \
      --exclude='config-3.*' --exclude='_test*.so' --exclude='_ctypes_test*.so' \
      --exclude='_xxtestfuzz*.so' --exclude='xxlimited*.so' --exclude='_tkinter*.so' \
      --exclude=site-packages --exclude=dist-packages . | tar -C "$root$dir" -x
  done
  mkdir -p "$root$stdlib/site-packages"
  # Fresh bytecode (plain .pyc only, recorded under the in-image paths): about
  # 13 MB, but it saves ~0.2 s of compiling on every container start.
  quiet "$py" -I -m compileall -q -j 0 -s "$root" -p / "$root$stdlib"
  # Links that point outside the copy (Debian's sitecustomize.py -> /etc/...):
  # replace absolute ones with the file they name, drop the dangling rest.
  local link target
  while IFS= read -r link; do
    target="$(readlink "$link")"
    if [[ "$target" == /* ]]; then
      rm -f "$link"
      if [ -f "$target" ]; then cp -L "$target" "$link"; fi
    elif [ ! -e "$link" ]; then
      rm -f "$link"
    fi
  done < <(find "$root" -type l)

  # Every shared library the interpreter and its extension modules need,
  # the dynamic loader included (ldd lists the whole closure), plus
  # libgcc_s.so.1, which glibc dlopen()s when a thread exits (ldd can't see
  # that; without it Python dies with SIGSEGV when it exits with daemon
  # threads alive: "libgcc_s.so.1 must be installed for pthread_exit to work").
  local libs lib libgcc
  libs="$({ ldd "$py"; find "$root$dynload" -name '*.so' -exec ldd {} \; ; } 2>/dev/null |
    awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u)"
  libgcc="$(dirname "$(grep -m1 '/libc\.so\.6$' <<<"$libs")")/libgcc_s.so.1"
  if [ ! -e "$libgcc" ]; then
    libgcc="$(PATH="$PATH:/sbin:/usr/sbin" ldconfig -p 2>/dev/null |
      awk '$1 == "libgcc_s.so.1" && /x86-64|aarch64|64bit/ {print $NF; exit}')"
  fi
  [ -n "$libgcc" ] && [ -e "$libgcc" ] ||
    die "libgcc_s.so.1 not found on this machine (Debian package libgcc-s1)"
  libs="$(printf '%s\n%s\n' "$libs" "$libgcc" | sort -u)"
  while IFS= read -r lib; do
    stage_file "$lib" "$root"
  done <<<"$libs"

  # busybox, with a link per applet (/bin/sh, wget, ...).
  mkdir -p "$root/bin"
  cp "$HOST_BUSYBOX" "$root/bin/busybox"
  local applet
  while IFS= read -r applet; do
    [ -e "$root/$applet" ] || [ -L "$root/$applet" ] && continue
    mkdir -p "$root/$(dirname "$applet")"
    ln -s /bin/busybox "$root/$applet"
  done < <("$HOST_BUSYBOX" --list-full)

  # python3 / python3.11 on PATH, whatever the interpreter's own path is.
  mkdir -p "$root/usr/bin" "$root/usr/local/bin"
  local name
  for name in python3.11 python3; do
    [ -e "$root/usr/bin/$name" ] || ln -s "$py" "$root/usr/bin/$name"
  done

  mkdir -p "$root/etc" "$root/tmp" "$root/root" "$root/proc" "$root/sys" "$root/dev"
  chmod 1777 "$root/tmp"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
    >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"

  tar -C "$root" --numeric-owner --owner=0 --group=0 -c . |
    quiet docker import \
      --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' \
      --change 'ENV LANG=C.UTF-8' \
      --change 'LABEL org.opencontainers.image.title=gpu-watchdog-python-min' \
      --change 'CMD ["python3"]' \
      - "$PYTHON_IMAGE"
  # Smoke test: the modules the stand-in needs, and the healthcheck tool.
  quiet docker run --rm --network none "$PYTHON_IMAGE" \
    python3 -c 'import json, http.server, threading, signal, ssl, uuid, urllib.parse'
  quiet docker run --rm --network none "$PYTHON_IMAGE" wget --help
}

# ---------------------------------------------------------------- standin

standin_hash() {
  (cd "$STANDIN_DIR" && find . -type f ! -name '*.pyc' | LC_ALL=C sort | xargs sha256sum) |
    sha256sum | cut -d' ' -f1
}

build_standin() {
  quiet docker build --label "$HASH_LABEL=$1" -t "$STANDIN_IMAGE" "$STANDIN_DIR"
}

# --------------------------------------------------------------- watchdog

watchdog_hash() {
  (cd "$ROOT" && find watchdog litellm/config.template.yaml litellm/gpu_watchdog_rotation.py \
    litellm/gpu_watchdog_outliers.py litellm/gpu_watchdog_cluster.py litellm/gpu_watchdog_picks.py pyproject.toml \
    compose/Dockerfile -type f ! -name '*.pyc' | LC_ALL=C sort | xargs sha256sum; echo "$WATCHDOG_BASE") |
    sha256sum | cut -d' ' -f1
}

build_watchdog() {
  # The package and its dependencies are installed on the host (the index is reached here, before
  # the build), with the same Python 3.11 as the image's; the build itself needs no network.
  local ctx="$WORK/watchdog" pip_python="$ROOT/.venv/bin/python"
  [ -x "$pip_python" ] || pip_python="$(command -v python3)"
  mkdir -p "$ctx/litellm"
  quiet "$pip_python" -m pip install --quiet --no-compile --target "$ctx/site" "$ROOT"
  rm -rf "$ctx/site/bin"
  # Shared libraries the dependencies' extension modules need (libpthread for charset_normalizer,
  # PyYAML's libyaml bindings): local/python-min carries only what the interpreter needs. With
  # another base (its own glibc) nothing is copied.
  mkdir -p "$ctx/libs"
  if [ "$WATCHDOG_BASE" = "$PYTHON_IMAGE" ]; then
    local lib
    while IFS= read -r lib; do
      mkdir -p "$ctx/libs$(dirname "$lib")"
      cp -L "$lib" "$ctx/libs$lib"
    done < <(find "$ctx/site" -name '*.so' -exec ldd {} \; 2>/dev/null |
      awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u)
  fi
  cp "$ROOT/compose/Dockerfile" "$ctx/Dockerfile"
  cp "$ROOT/litellm/config.template.yaml" "$ROOT/litellm/gpu_watchdog_rotation.py" \
    "$ROOT/litellm/gpu_watchdog_outliers.py" "$ROOT/litellm/gpu_watchdog_cluster.py" \
    "$ROOT/litellm/gpu_watchdog_picks.py" "$ROOT/litellm/README.md" \
    "$ctx/litellm/"
  quiet docker build --build-arg "BASE=$WATCHDOG_BASE" --label "$HASH_LABEL=$1" -t "$WATCHDOG_IMAGE" "$ctx"
  quiet docker run --rm --network none --entrypoint python3 "$WATCHDOG_IMAGE" -m watchdog --version
  # Every extension module loads (a missing library would fall back silently, or warn at each start).
  quiet docker run --rm --network none --entrypoint python3 "$WATCHDOG_IMAGE" -W error -c \
    'import charset_normalizer.md, docker, httpx, pynvml, yaml; from yaml import CSafeLoader'
}

# ----------------------------------------------------------- llama-server

# The shared libraries BIN links to (the loader included), one per line.
llama_libs() {
  ldd "$1" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u
}

llama_hash() { # BIN MODEL
  { sha256sum "$1" "$2" "$LLAMA_DIR/Dockerfile" | cut -d' ' -f1
    llama_libs "$1" | while IFS= read -r lib; do echo "$lib $(sha256sum <"$lib" | cut -d' ' -f1)"; done
  } | sha256sum | cut -d' ' -f1
}

build_llama() { # BIN MODEL HASH
  local ctx="$WORK/llama" lib
  mkdir -p "$ctx/libs"
  while IFS= read -r lib; do
    mkdir -p "$ctx/libs$(dirname "$lib")"
    cp -L "$lib" "$ctx/libs$lib"
  done < <(llama_libs "$1")
  cp "$1" "$ctx/llama-server"
  cp "$2" "$ctx/tiny.gguf"
  cp "$LLAMA_DIR/Dockerfile" "$ctx/Dockerfile"
  quiet docker build --build-arg "BASE=$BUSYBOX_IMAGE" --label "$HASH_LABEL=$3" -t "$LLAMA_IMAGE" "$ctx"
  # It runs: every library resolves inside the image.
  quiet docker run --rm --network none --entrypoint /usr/local/bin/llama-server "$LLAMA_IMAGE" --version
}

# ------------------------------------------------------------------- main

command -v docker >/dev/null 2>&1 || die "docker CLI not found (run scripts/ensure-docker.sh)"
docker version --format '{{.Server.Version}}' >/dev/null 2>&1 ||
  die "the Docker engine does not answer (run scripts/ensure-docker.sh)"

start="$(date +%s.%N)"
busybox_built=0
if [ "$FORCE" = 1 ] || ! image_exists "$BUSYBOX_IMAGE"; then
  remember_old "$BUSYBOX_IMAGE"
  build_busybox
  busybox_built=1
  summary "$BUSYBOX_IMAGE" "$start"
else
  log "$BUSYBOX_IMAGE exists, skipped (--force rebuilds)"
fi

python_built=0
start="$(date +%s.%N)"
if [ "$FORCE" = 1 ] || ! image_exists "$PYTHON_IMAGE"; then
  remember_old "$PYTHON_IMAGE"
  build_python_min
  python_built=1
  summary "$PYTHON_IMAGE" "$start"
else
  log "$PYTHON_IMAGE exists, skipped (--force rebuilds)"
fi

start="$(date +%s.%N)"
hash="$(standin_hash)"
current="$(docker image inspect --format "{{index .Config.Labels \"$HASH_LABEL\"}}" "$STANDIN_IMAGE" 2>/dev/null || true)"
if [ "$FORCE" = 1 ] || [ "$python_built" = 1 ] || [ "$current" != "$hash" ]; then
  remember_old "$STANDIN_IMAGE"
  build_standin "$hash"
  summary "$STANDIN_IMAGE" "$start"
else
  log "$STANDIN_IMAGE is up to date with compose/standin, skipped (--force rebuilds)"
fi
start="$(date +%s.%N)"
hash="$(watchdog_hash)"
current="$(docker image inspect --format "{{index .Config.Labels \"$HASH_LABEL\"}}" "$WATCHDOG_IMAGE" 2>/dev/null || true)"
if [ "$FORCE" = 1 ] || { [ "$python_built" = 1 ] && [ "$WATCHDOG_BASE" = "$PYTHON_IMAGE" ]; } || [ "$current" != "$hash" ]; then
  remember_old "$WATCHDOG_IMAGE"
  build_watchdog "$hash"
  summary "$WATCHDOG_IMAGE" "$start"
else
  log "$WATCHDOG_IMAGE is up to date, skipped (--force rebuilds)"
fi
start="$(date +%s.%N)"
eval "$(bash "$ROOT/scripts/ensure-llama-server.sh" --paths)"  # BIN=... MODEL=...: where the cache keeps them
if [ ! -x "$BIN" ] || [ ! -s "$MODEL" ]; then
  log "$LLAMA_IMAGE skipped: no cached llama-server or tiny model (run scripts/ensure-llama-server.sh, or make llama-server)"
else
  hash="$(llama_hash "$BIN" "$MODEL")"
  current="$(docker image inspect --format "{{index .Config.Labels \"$HASH_LABEL\"}}" "$LLAMA_IMAGE" 2>/dev/null || true)"
  if [ "$FORCE" = 1 ] || [ "$busybox_built" = 1 ] || [ "$current" != "$hash" ]; then
    remember_old "$LLAMA_IMAGE"
    build_llama "$BIN" "$MODEL" "$hash"
    summary "$LLAMA_IMAGE" "$start"
  else
    log "$LLAMA_IMAGE is up to date, skipped (--force rebuilds)"
  fi
fi
remove_replaced
