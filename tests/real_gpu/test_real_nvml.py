"""Against a real NVIDIA GPU and driver: the same code paths the fake driver exercises in CI.

Deselected by `make test` (CI has no GPU); run them on a GPU host with
`make test-real-gpu` (= pytest -m real_gpu tests/real_gpu). They fail, never
skip, when no GPU is there: running them is a claim that there is one.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from watchdog.gpu.assignment import resolve
from watchdog.gpu.kernel_log import normalise_bus_id
from watchdog.gpu.nvml import GpuProbe
from watchdog.gpu.readings import GpuHealth, NvmlState, clock_reason_names
from watchdog.gpu.xid_events import XidWatcher

pytestmark = pytest.mark.real_gpu


def test_probe_reads_every_gpu_within_the_deadline() -> None:
    probe = GpuProbe(deadline=5.0)
    reading = probe.read()
    assert reading.state == NvmlState.OK, reading.detail
    assert reading.gpus, "NVML shows no GPU"
    for gpu in reading.gpus:
        assert gpu.health == GpuHealth.OK, gpu.error
        assert gpu.uuid and gpu.uuid.startswith(("GPU-", "MIG-"))
        assert gpu.memory_total and gpu.memory_total > 0
        assert gpu.memory_used is not None and 0 <= gpu.memory_used <= gpu.memory_total
        assert gpu.bus_id and normalise_bus_id(gpu.bus_id).count(":") == 2
        assert clock_reason_names(gpu.clock_event_reasons) is not None or "clock_event_reasons" in gpu.unsupported
    times = []
    for _ in range(20):
        started = time.perf_counter()
        assert probe.read().state == NvmlState.OK
        times.append(time.perf_counter() - started)
    times.sort()
    median, worst = times[10] * 1000, times[-1] * 1000
    print(f"real GPU probe over {len(reading.gpus)} GPU(s): median {median:.1f} ms, max {worst:.1f} ms")


def test_container_references_resolve_against_the_real_uuids() -> None:
    gpus = GpuProbe(deadline=5.0).read().gpus
    first = gpus[0]
    assert first.uuid is not None
    assert resolve(("0",), gpus).uuids == (first.uuid,)
    assert resolve((first.uuid[:12],), gpus).uuids == (first.uuid,) or len(gpus) > 1


def test_xid_watcher_registers_and_stops() -> None:
    states: list[str] = []
    changed = threading.Event()

    def on_state(state: str, detail: str) -> None:
        states.append(state)
        changed.set()

    watcher = XidWatcher(lambda event: None, on_state, wait_ms=500)
    watcher.start()
    deadline = time.monotonic() + 10
    while watcher.state == "starting" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert watcher.state in ("watching", "unsupported"), (watcher.state, states)
    started = time.monotonic()
    watcher.stop(timeout=3.0)
    assert time.monotonic() - started < 3.5


def test_gpu_list_command_reads_the_real_driver() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "watchdog", "--state-dir", "/tmp/gpu-watchdog-real-gpu-test", "gpu", "list", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["nvml"] == "ok" and doc["gpus"] and doc["driver"]
    print(json.dumps(doc["gpus"], indent=1))
