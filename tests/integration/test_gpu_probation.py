"""Verified return end to end: a released GPU's container is out of rotation until it has proven itself.

The daemon runs with the fake NVML driver (tests/fake_nvml) and stand-in servers on the real engine;
GPU 1 falls off the bus, is quarantined, "rebooted" and released with `gpu-watchdog gpu release`. The
rotation file, status and the journal say what happened; waits are generous, nothing is timed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.fake_nvml.harness import FakeNvml, environment
from tests.integration.conftest import new_daemon
from tests.integration.harness import Daemon, Fleet, free_port, wait_for
from tests.integration.test_gpu import GPU_FAST, UUID, scenario, status
from tests.integration.test_litellm import TEMPLATE, rotation

pytestmark = pytest.mark.engine

WINDOW = 4  # s: short, so the test waits little; the outcome, not the time, is asserted
LONG_WINDOW = 20  # s: long enough to restart the daemon and read status inside it, even on a loaded machine


def probation_daemon(
    daemons: list[Daemon], tmp_path: Path, prefix: str, fake: FakeNvml, window: float = WINDOW, **gpu: Any
) -> tuple[Daemon, Path]:
    out = tmp_path / "litellm" / "config.yaml"
    daemon = new_daemon(
        daemons,
        tmp_path,
        prefix,
        env=environment(fake.scenario_file),
        gpu={**GPU_FAST, "probation": {"window": window, "canary_interval": 0.5, "canary_timeout": 3}, **gpu},
        litellm={"enabled": True, "template": str(TEMPLATE), "out": str(out), "stale_after": 5},
    )
    return daemon, out.parent / "rotation.json"


def quarantined_gpu_1(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str, fake: FakeNvml, window: float = WINDOW
) -> tuple[Daemon, Path, str]:
    """Container b serving on GPU 1, which falls off the bus, is quarantined (b out of rotation), then "rebooted"."""
    fake.write(scenario({0: 4000, 1: 4000}))
    fleet.start("b", gpu="1", role="chat", model="qwen", host_port=free_port(), start_period="2")
    fleet.wait_ready("b")
    daemon, rotation_file = probation_daemon(daemons, tmp_path, prefix, fake, window)
    daemon.start()
    ident = f"{fleet.get('b').name}.gpu1"
    wait_for(lambda: ident in rotation(rotation_file).get("in", []), 30, "b in rotation")
    fake.write(scenario({0: 4000, 1: 4000}, extra="lost 1\n"))
    wait_for(lambda: daemon.entries(kind="gpu-quarantined"), 15, "GPU 1 quarantined")
    wait_for(lambda: ident in rotation(rotation_file).get("out", {}), 15, "b out of rotation on its quarantined GPU")
    fake.write(scenario({0: 4000, 1: 4000}))
    return daemon, rotation_file, ident


def test_a_released_gpu_serves_again_only_after_its_canary_answered_and_its_window_passed(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str, fake_nvml: FakeNvml
) -> None:
    """Also across a restart of the watchdog inside the window: the probation is kept in the journal."""
    daemon, rotation_file, ident = quarantined_gpu_1(fleet, daemons, tmp_path, prefix, fake_nvml, LONG_WINDOW)

    released = daemon.cli("gpu", "release", UUID.format(1))
    assert released.returncode == 0, released.stderr
    started = wait_for(lambda: daemon.entries(kind="gpu-probation"), 15, "the probation started")
    assert "after its release" in started[0]["reason"] and UUID.format(1) in str(started[0]["gpu"])
    out = wait_for(lambda: rotation(rotation_file).get("out", {}).get(ident, ""), 15, "b's rotation entry")
    wait_for(lambda: "probation: proving GPU 1" in rotation(rotation_file).get("out", {}).get(ident, ""), 15, out)
    assert daemon.stop() == 0
    daemon.start()
    wait_for(lambda: "GPU probation goes on for GPU 1" in daemon.log(), 20, "the restarted daemon to go on with it")
    wait_for(lambda: "clean for" in rotation(rotation_file).get("out", {}).get(ident, ""), 30, "b answered, held")
    shown = status(daemon)["gpu"]["probation"]
    assert shown and shown[0]["uuid"] == UUID.format(1) and shown[0]["window"] == LONG_WINDOW, shown
    assert "PROBATION" in daemon.cli("status").stdout

    wait_for(lambda: daemon.entries(kind="gpu-proven"), 90, "GPU 1 proven")
    wait_for(lambda: ident in rotation(rotation_file).get("in", []), 15, "b back in rotation once proven")
    proven_at = daemon.entries(kind="gpu-proven")[0]["ts"]
    entries = daemon.entries(kind="rotation-in", container=fleet.get("b").name)
    back = [e for e in entries if e["ts"] >= started[0]["ts"]]
    assert back and all(e["ts"] >= proven_at for e in back), "b came back only once its GPU was proven"
    assert not status(daemon)["gpu"]["probation"] and not status(daemon)["gpu"]["marks"]
    assert not daemon.entries(kind="gpu-probation-failed")


def test_a_released_gpu_whose_server_fails_its_completions_stays_out_and_is_marked_again(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str, fake_nvml: FakeNvml
) -> None:
    daemon, rotation_file, ident = quarantined_gpu_1(fleet, daemons, tmp_path, prefix, fake_nvml)
    fleet.fault("b", "completions-5xx")  # /health still answers 200; every completion is an HTTP 500

    released = daemon.cli("gpu", "release", UUID.format(1))
    assert released.returncode == 0, released.stderr
    failed = wait_for(lambda: daemon.entries(kind="gpu-probation-failed"), 30, "the probation failed")
    assert "1-token completions in a row failed" in failed[0]["reason"] and "HTTP 500" in failed[0]["reason"]
    wait_for(lambda: len(daemon.entries(kind="gpu-quarantined")) == 2, 15, "GPU 1 quarantined again")
    mark = status(daemon)["gpu"]["marks"][UUID.format(1)]
    assert mark["condition"] == "quarantined" and "failed its probation" in mark["reason"], mark
    assert f"next probation window {2 * WINDOW} s" in mark["reason"], mark
    assert ident in rotation(rotation_file).get("out", {}), "b stayed out of rotation"
    assert not daemon.entries(kind="gpu-proven")


def test_a_gpu_reset_by_the_watchdog_is_on_probation_before_it_serves_again(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str, fake_nvml: FakeNvml
) -> None:
    script = tmp_path / "fake-reset"
    script.write_text("#!/bin/sh\nexit 0\n")
    os.chmod(script, 0o755)
    fake_nvml.write(scenario({0: 4000, 1: 4000}))
    fleet.start("b", gpu="1", role="chat", model="qwen", host_port=free_port(), start_period="2")
    fleet.wait_ready("b")
    daemon, rotation_file = probation_daemon(
        daemons, tmp_path, prefix, fake_nvml, reset=True, reset_command=[str(script), "{uuid}"]
    )
    daemon.start()
    ident = f"{fleet.get('b').name}.gpu1"
    wait_for(lambda: ident in rotation(rotation_file).get("in", []), 30, "b in rotation")
    with fake_nvml.scenario_file.open("a") as file:
        file.write("xid 1 48\n")
    wait_for(lambda: daemon.entries(kind="gpu-reset-ok"), 30, "the GPU reset done")
    started = wait_for(lambda: daemon.entries(kind="gpu-probation"), 15, "the probation after the reset")
    assert "after its reset" in started[0]["reason"]
    wait_for(lambda: daemon.entries(kind="gpu-proven"), 60, "GPU 1 proven after its reset")
    wait_for(lambda: ident in rotation(rotation_file).get("in", []), 15, "b back in rotation once proven")
    proven_at = daemon.entries(kind="gpu-proven")[0]["ts"]
    back = [e for e in daemon.entries(kind="rotation-in", container=fleet.get("b").name) if e["ts"] >= started[0]["ts"]]
    assert back and all(e["ts"] >= proven_at for e in back), "b came back only once its GPU was proven"
