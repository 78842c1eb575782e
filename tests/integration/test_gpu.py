"""GPU awareness end to end: real containers on the real engine, mapped to fake GPUs.

The daemon runs as a subprocess whose pynvml loads the fake NVML driver
(tests/fake_nvml); each test rewrites the scenario file to make a GPU lose its
memory, hang, fall off the bus or report an Xid, and watches what the daemon
does to the real containers.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fake_nvml.harness import FakeNvml, environment
from tests.integration.conftest import new_daemon
from tests.integration.harness import Daemon, Fleet, ok_restarts, wait_for

pytestmark = pytest.mark.engine

UUID = "GPU-5f1c0b6e-1d2a-4c7e-9b3a-0000000001{:02d}"
GPU_LINE = (
    "gpu {i} uuid={uuid} bus=00000000:0{b}:00.0 name=P106-100 total_mib=6144 used_mib={used} temp=50 ecc=notsupported"
)


def scenario(used: dict[int, int], procs: list[tuple[int, int, int]] = (), extra: str = "") -> str:  # type: ignore[assignment]
    """Two (or more) 6 GB GPUs like the seed's; `procs` are (gpu, pid, MiB)."""
    lines = ["driver 535.183.01"]
    lines += [GPU_LINE.format(i=i, uuid=UUID.format(i), b=i + 1, used=mib) for i, mib in sorted(used.items())]
    lines += [f"proc {gpu} pid={pid} used_mib={mib}" for gpu, pid, mib in procs]
    return "\n".join(lines) + "\n" + extra


GPU_FAST: dict[str, Any] = {"deadline": 1, "kernel_log": "off", "pid_mapping": False}


def gpu_daemon(daemons: list[Daemon], tmp_path: Path, prefix: str, fake: FakeNvml, **gpu: Any) -> Daemon:
    return new_daemon(daemons, tmp_path, prefix, env=environment(fake.scenario_file), gpu={**GPU_FAST, **gpu})


def status(daemon: Daemon) -> dict[str, Any]:
    done = daemon.cli("status", "--json")
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def host_pid(fleet: Fleet, name: str) -> int:
    return int(fleet.get(name).attrs["State"]["Pid"])


def test_gpu_losing_its_memory_gets_its_container_restarted(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str, fake_nvml: FakeNvml
) -> None:
    """Threshold path (PID mapping off): GPU 0's used memory drops under 100 MiB while /health still answers."""
    fake_nvml.write(scenario({0: 4000, 1: 4000}))
    fleet.start("a", gpu="0", start_period="2")
    fleet.start("b", env={"NVIDIA_VISIBLE_DEVICES": UUID.format(1)}, start_period="2")
    fleet.wait_ready("a")
    fleet.wait_ready("b")
    daemon = gpu_daemon(daemons, tmp_path, prefix, fake_nvml).start()
    a, b = fleet.get("a").name, fleet.get("b").name
    wait_for(lambda: status(daemon)["gpu"]["gpus"], 10, "GPU lines in status")
    rows = {g["index"]: g for g in status(daemon)["gpu"]["gpus"]}
    assert rows[0]["containers"] == [a] and rows[1]["containers"] == [b], rows
    time.sleep(2.5)  # past the start period, nothing wrong yet
    assert not daemon.restarts(a) and not daemon.restarts(b)

    fake_nvml.write(scenario({0: 12, 1: 4000}))  # the model is gone from GPU 0; the server still answers
    wait_for(lambda: ok_restarts(daemon, a), 10, "a restart of the container whose GPU lost its memory")
    detected = [e for e in daemon.entries(kind="detected", container=a) if e["fault"] == "zero-vram"]
    assert detected and "12.0 MiB" in detected[0]["reason"], detected
    fake_nvml.write(scenario({0: 4000, 1: 4000}))  # reloaded after the restart
    fleet.wait_ready("a")
    time.sleep(3)
    assert len(daemon.restarts(a)) == 1, "restarted once, not in a loop"
    assert not daemon.restarts(b), "the container on the healthy GPU is untouched"


def test_pid_mapping_restarts_only_the_container_that_lost_its_model(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str, fake_nvml: FakeNvml
) -> None:
    """Two containers share GPU 0: the GPU still holds memory, but a's own processes hold none."""
    fleet.start("a", gpu="0", start_period="2")
    fleet.start("b", gpu="0", start_period="2")
    fleet.wait_ready("a")
    fleet.wait_ready("b")
    pa, pb = host_pid(fleet, "a"), host_pid(fleet, "b")
    ghost = 4_000_000  # above any real pid_max: memory held by a process that is gone
    fake_nvml.write(scenario({0: 8000, 1: 0}, [(0, pa, 3900), (0, pb, 3900), (1, ghost, 300)]))
    daemon = gpu_daemon(daemons, tmp_path, prefix, fake_nvml, pid_mapping=True).start()
    a, b = fleet.get("a").name, fleet.get("b").name
    wait_for(lambda: status(daemon)["gpu"]["orphans"], 10, "the orphaned GPU memory in status")
    orphan = status(daemon)["gpu"]["orphans"][0]
    assert orphan["pid"] == ghost and orphan["index"] == 1 and "gone" in orphan["why"]
    assert any(str(ghost) in e["reason"] for e in daemon.entries(kind="orphan"))
    time.sleep(2.5)
    assert not daemon.restarts(a) and not daemon.restarts(b)

    fake_nvml.write(scenario({0: 4200, 1: 0}, [(0, pa, 40), (0, pb, 3900), (1, ghost, 300)]))
    wait_for(lambda: ok_restarts(daemon, a), 10, "a restart of the container whose processes hold no model")
    reason = next(e for e in daemon.entries(kind="detected", container=a) if e["fault"] == "zero-vram")["reason"]
    assert "its processes hold 40.0 MiB" in reason, reason
    fleet.wait_ready("a")
    fake_nvml.write(scenario({0: 8000, 1: 0}, [(0, host_pid(fleet, "a"), 3900), (0, pb, 3900)]))
    time.sleep(3)
    assert len(daemon.restarts(a)) == 1 and not daemon.restarts(b)


def test_hung_driver_does_not_stop_healing_a_killed_container(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str, fake_nvml: FakeNvml
) -> None:
    fake_nvml.write(scenario({0: 4000}))
    fleet.start("a", gpu="0", start_period="2")
    fleet.wait_ready("a")
    daemon = gpu_daemon(daemons, tmp_path, prefix, fake_nvml).start()
    a = fleet.get("a").name
    wait_for(lambda: status(daemon)["gpu"]["nvml"] == "ok", 10, "NVML read")
    fake_nvml.write(scenario({0: 4000}, extra="hang nvmlDeviceGetMemoryInfo_v2\nhang nvmlDeviceGetMemoryInfo\n"))
    wait_for(lambda: daemon.entries(kind="alert"), 10, "the driver-hung alert")
    assert "driver hung" in daemon.entries(kind="alert")[0]["reason"]
    killed_at = time.time()
    fleet.get("a").kill()
    wait_for(lambda: ok_restarts(daemon, a), 10, "the killed container restarted while NVML hangs")
    restart = ok_restarts(daemon, a)[0]
    assert restart.started_at - killed_at < 3.0, "healing was not held up by the hung driver"
    assert status(daemon)["gpu"]["nvml"] == "driver-hung"
    fake_nvml.write(scenario({0: 4000}))
    wait_for(lambda: daemon.entries(kind="driver-recovered"), 15, "NVML answering again")


def test_lost_gpu_is_quarantined_its_container_held_and_released_by_the_operator(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str, fake_nvml: FakeNvml
) -> None:
    fake_nvml.write(scenario({0: 4000, 1: 4000}))
    fleet.start("a", gpu="0", start_period="2")
    fleet.start("b", gpu="1", start_period="2")
    fleet.wait_ready("b")
    daemon = gpu_daemon(daemons, tmp_path, prefix, fake_nvml).start()
    b = fleet.get("b").name
    wait_for(lambda: status(daemon)["gpu"]["nvml"] == "ok", 10, "NVML read")
    fake_nvml.write(scenario({0: 4000, 1: 4000}, extra="lost 1\n"))
    wait_for(lambda: daemon.entries(kind="gpu-quarantined"), 10, "GPU 1 quarantined")
    fleet.fault("b", "crash")  # its process dies with the GPU
    wait_for(
        lambda: any(e["kind"] == "held" for e in daemon.entries(container=b)), 10, "b held, not restarted in a loop"
    )
    time.sleep(2)
    assert not daemon.restarts(b)
    doc = status(daemon)
    assert doc["gpu"]["marks"][UUID.format(1)]["condition"] == "quarantined"
    table = daemon.cli("status").stdout
    assert "QUARANTINED" in table and "reboot the host" in table, table

    wrong = daemon.cli("gpu", "release", "GPU-nope")
    assert wrong.returncode == 2 and UUID.format(1) in wrong.stderr and len(wrong.stderr.splitlines()) == 1
    fake_nvml.write(scenario({0: 4000, 1: 4000}))  # "rebooted"
    released = daemon.cli("gpu", "release", UUID.format(1))
    assert released.returncode == 0, released.stderr
    wait_for(lambda: ok_restarts(daemon, b), 10, "b restarted once its GPU is back in service")


def test_xid_events_restart_the_container_or_drain_the_gpu(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str, fake_nvml: FakeNvml
) -> None:
    fake_nvml.write(scenario({0: 4000, 1: 4000}))
    fleet.start("a", gpu="0", start_period="2")
    fleet.start("b", gpu="1", start_period="2")
    fleet.wait_ready("a")
    daemon = gpu_daemon(daemons, tmp_path, prefix, fake_nvml).start()
    a, b = fleet.get("a").name, fleet.get("b").name
    wait_for(lambda: status(daemon)["gpu"]["nvml"] == "ok", 10, "NVML read")
    with fake_nvml.scenario_file.open("a") as file:
        file.write("xid 0 13\n")
    wait_for(lambda: ok_restarts(daemon, a), 10, "the container on the GPU with Xid 13 restarted")
    assert [e for e in daemon.entries(kind="detected", container=a) if e["fault"] == "gpu-xid"]
    fleet.wait_ready("b")
    b_started = fleet.state("b")["StartedAt"]
    with fake_nvml.scenario_file.open("a") as file:
        file.write("xid 1 48\n")
    wait_for(lambda: daemon.entries(kind="gpu-drained"), 10, "GPU 1 drained after Xid 48")
    alert = daemon.entries(kind="alert")[-1]["reason"]
    assert "nvidia-smi --gpu-reset" in alert and UUID.format(1) in alert, alert
    assert fleet.state("b")["StartedAt"] == b_started and not daemon.entries(kind="gpu-reset"), "no reset by default"
    # Drained: b now has a reason to be restarted, and must be held instead (not restarted onto the GPU).
    fleet.fault("b", "crash")
    wait_for(lambda: any(e["kind"] == "held" for e in daemon.entries(container=b)), 10, "b held on its drained GPU")
    assert not daemon.restarts(b), "the default is drain and alert, not a reset"


def test_opt_in_gpu_reset_stops_resets_and_starts_its_containers(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str, fake_nvml: FakeNvml
) -> None:
    record = tmp_path / "reset-args"
    script = tmp_path / "fake-reset"
    script.write_text(f'#!/bin/sh\necho "$@" > {record}\n')
    os.chmod(script, 0o755)
    fake_nvml.write(scenario({0: 4000, 1: 4000}))
    fleet.start("b", gpu="1", start_period="2")
    fleet.wait_ready("b")
    daemon = gpu_daemon(
        daemons, tmp_path, prefix, fake_nvml, reset=True, reset_command=[str(script), "-i", "{uuid}"]
    ).start()
    before = fleet.state("b")["StartedAt"]
    wait_for(lambda: status(daemon)["gpu"]["nvml"] == "ok", 10, "NVML read")
    with fake_nvml.scenario_file.open("a") as file:
        file.write("xid 1 48\n")
    wait_for(lambda: daemon.entries(kind="gpu-reset-ok"), 20, "the GPU reset done")
    assert record.read_text().split() == ["-i", UUID.format(1)]
    wait_for(lambda: fleet.state("b")["Status"] == "running", 10, "b started again")
    assert fleet.state("b")["StartedAt"] != before
    assert not status(daemon)["gpu"]["marks"], "the mark is released after a verified reset"
    assert not daemon.entries(kind="manual-stop"), "the reset's own stop is not taken for an operator's"
