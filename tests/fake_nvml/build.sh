#!/usr/bin/env bash
# Builds the fake NVIDIA driver library, tests/fake_nvml/build/libnvidia-ml.so.1,
# from fake_nvml.c. Idempotent: rebuilds only when the source is newer.
# Point pynvml at it with LD_LIBRARY_PATH=tests/fake_nvml/build (set before Python starts).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="$here/fake_nvml.c"
out_dir="$here/build"
lib="$out_dir/libnvidia-ml.so.1"
CC="${CC:-gcc}"

if ! command -v "$CC" >/dev/null 2>&1; then
    echo "fake_nvml/build.sh: the C compiler '$CC' was not found; install gcc (Debian: apt-get install gcc) to build the fake NVML library" >&2
    exit 1
fi
if [[ -f "$lib" && "$lib" -nt "$src" && "$lib" -nt "$here/build.sh" ]]; then
    exit 0
fi
mkdir -p "$out_dir"
tmp="$(mktemp "$out_dir/.libnvidia-ml.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
"$CC" -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Werror -fPIC -fvisibility=hidden -pthread -shared \
    -Wl,-soname,libnvidia-ml.so.1 -o "$tmp" "$src"
mv -f "$tmp" "$lib"   # atomic: a test running in parallel never loads a half-written file
trap - EXIT
echo "built $lib"
