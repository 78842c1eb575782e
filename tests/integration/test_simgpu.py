"""The demo's simulated GPUs mirror the stand-in servers, and the real daemon acts on them.

compose/demo/simgpu.py writes the fake driver's scenario from the running stand-ins
(their host PIDs, whether they lost their model); the daemon reads it through pynvml
and the fake libnvidia-ml, maps the PIDs through /proc/<pid>/cgroup, and restarts the
stand-in that lost its model while its /health still answers.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.fake_nvml.harness import FakeNvml, environment
from tests.integration.conftest import new_daemon
from tests.integration.harness import ROOT, Daemon, Fleet, wait_for

pytestmark = pytest.mark.engine
SIMGPU = ROOT / "compose" / "demo" / "simgpu.py"


def mirror(scenario: Path, prefix: str) -> str:
    subprocess.run(
        [sys.executable, str(SIMGPU), "--scenario", str(scenario), "--prefix", prefix, "--gpus", "2", "--once"],
        check=True,
        timeout=30,
    )
    return scenario.read_text()


def test_simulated_gpus_follow_the_standins_and_zero_vram_is_healed(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str, fake_nvml: FakeNvml
) -> None:
    for gpu in range(2):
        fleet.start(f"s{gpu}", gpu=str(gpu), start_period="2")
        fleet.wait_ready(f"s{gpu}")
    pids = {gpu: fleet.get(f"s{gpu}").attrs["State"]["Pid"] for gpu in range(2)}
    scenario = fake_nvml.scenario_file
    text = mirror(scenario, prefix)
    assert text.startswith("# SIMULATED GPUs")
    assert f"proc 0 pid={pids[0]} used_mib=4000" in text and f"proc 1 pid={pids[1]} used_mib=4000" in text

    bridge = subprocess.Popen(
        [sys.executable, str(SIMGPU), "--scenario", str(scenario), "--prefix", prefix, "--gpus", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        daemon = new_daemon(
            daemons, tmp_path, prefix, env=environment(scenario), gpu={"deadline": 1, "kernel_log": "off"}
        ).start()
        before = fleet.state("s1")["StartedAt"]
        fleet.fault("s1", "vram-lost")  # /health still answers 200
        wait_for(lambda: f"pid={pids[1]}" not in scenario.read_text(), 5, "GPU 1 to show the model gone")
        wait_for(lambda: fleet.state("s1")["StartedAt"] != before, 20, "s1 restarted for zero VRAM")
        detected = daemon.entries(kind="detected", container=fleet.get("s1").name)
        assert detected and detected[0]["fault"] == "zero-vram"
        new_pid = wait_for(lambda: fleet.get("s1").attrs["State"]["Pid"] or None, 10, "s1 running again")
        wait_for(lambda: f"proc 1 pid={new_pid} used_mib=4000" in scenario.read_text(), 5, "GPU 1 loaded again")
        assert daemon.restarts(fleet.get("s0").name) == []
    finally:
        bridge.terminate()
        bridge.wait(10)
