"""Simulated GPUs for the demo: a fake NVML scenario that mirrors the stand-in servers.

SIMULATED. There is no GPU here. Each stand-in container labelled `gpu-watchdog.gpu=N`
"holds" GPU N: while it runs and has not been told to lose its model (POST
/fault/vram-lost), the scenario shows its host PID using `LOADED_MIB` on GPU N; once it
lost the model, or it is not running, GPU N shows (almost) no memory used. The fake
driver (tests/fake_nvml) re-reads the file on every call, so the watchdog sees the
change on its next GPU reading, through pynvml's real code.

    python3 compose/demo/simgpu.py --scenario FILE --prefix gpu-watchdog [--gpus 8] [--once]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

TOTAL_MIB = 24576
LOADED_MIB = 4000
IDLE_MIB = 12  # the driver's own context: under the zero-VRAM threshold
HEADER = "# SIMULATED GPUs (gpu-watchdog demo): written by compose/demo/simgpu.py from the stand-in servers\n"


@dataclass(frozen=True)
class Holder:
    """A stand-in server as the simulated GPU sees it."""

    gpu: int
    pid: int | None  # host PID while running
    model_loaded: bool


def scenario(gpus: int, holders: Mapping[int, Holder]) -> str:
    """Pure: the fake driver's scenario text."""
    lines = [HEADER, "driver 550.00.00-simulated\n"]
    for index in range(gpus):
        holder = holders.get(index)
        loaded = holder is not None and holder.pid is not None and holder.model_loaded
        used = LOADED_MIB + IDLE_MIB if loaded else IDLE_MIB
        lines.append(
            f"gpu {index} uuid=GPU-51a0a7ed-0000-4000-8000-{index:012d} bus=00000000:{index + 1:02x}:00.0 "
            f'name="SIMULATED-GPU" total_mib={TOTAL_MIB} used_mib={used} temp={40 + index} ecc=notsupported\n'
        )
    for index in range(gpus):
        holder = holders.get(index)
        if holder is not None and holder.pid is not None and holder.model_loaded:
            lines.append(f"proc {index} pid={holder.pid} used_mib={LOADED_MIB}\n")
    return "".join(lines)


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_holders(prefix: str) -> dict[int, Holder]:
    """Running stand-ins with a GPU label, their host PID, and whether they still hold the model."""
    import docker  # only the live loop needs the engine

    client = docker.from_env(timeout=10)
    holders: dict[int, Holder] = {}
    for container in client.containers.list(all=True, filters={"label": f"{prefix}.enable=true"}):
        gpu = container.labels.get(f"{prefix}.gpu", "")
        if not gpu.isdigit():
            continue
        state = container.attrs.get("State") or {}
        if not state.get("Running"):
            holders[int(gpu)] = Holder(int(gpu), None, False)
            continue
        holders[int(gpu)] = Holder(int(gpu), int(state.get("Pid") or 0) or None, _model_loaded(container))
    return holders


def _model_loaded(container: object) -> bool:
    ports = (getattr(container, "attrs", {}).get("NetworkSettings") or {}).get("Ports") or {}
    binding = (ports.get("8080/tcp") or [{}])[0]
    port = binding.get("HostPort")
    if not port:
        return True
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/debug/state", timeout=0.5) as answer:
            return not json.load(answer).get("vram_lost", False)
    except (OSError, ValueError):
        return True  # busy or hung: a hang is not a lost model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", required=True, type=Path)
    parser.add_argument("--prefix", default="gpu-watchdog")
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--once", action="store_true")
    args = parser.parse_args()
    last = None
    while True:
        try:
            text = scenario(args.gpus, read_holders(args.prefix))
        except Exception as exc:  # the engine away for a moment: keep the last picture
            print(f"simgpu: {exc}", file=sys.stderr)
            text = last or scenario(args.gpus, {})
        if text != last:
            write_atomic(args.scenario, text)
            last = text
        if args.once:
            return 0
        time.sleep(args.interval)


if __name__ == "__main__":
    sys.exit(main())
