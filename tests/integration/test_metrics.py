"""The daemon's HTTP endpoint: /metrics (real prometheus-client exposition), /healthz, /status.

The real daemon, a real container healed after `docker kill`, the fake NVIDIA driver for GPU series.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fake_nvml.harness import FakeNvml, environment
from tests.integration.conftest import new_daemon
from tests.integration.harness import Daemon, Fleet, free_port, wait_for

pytestmark = pytest.mark.engine


def samples(base: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(f"{base}/metrics", timeout=5, trust_env=False).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float | None:
    for (metric, have), v in found.items():
        if metric == name and set(labels.items()) <= set(have):
            return v
    return None


def test_metrics_healthz_status(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str, fake_nvml: FakeNvml
) -> None:
    target = fleet.start("m0", gpu="0")
    fleet.wait_ready("m0")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    daemon = new_daemon(
        daemons,
        tmp_path,
        prefix,
        env=environment(fake_nvml.scenario_file),
        http=f"127.0.0.1:{port}",
        gpu={"deadline": 1, "kernel_log": "off", "pid_mapping": False},
    ).start()
    wait_for(lambda: httpx.get(f"{base}/healthz", timeout=2, trust_env=False).status_code == 200, 15, "/healthz 200")
    name = target.name
    wait_for(lambda: value(samples(base), "gpu_watchdog_container_healthy", container=name) == 1, 15, "healthy gauge")
    found = samples(base)
    assert value(found, "gpu_watchdog_container_up", container=name) == 1
    assert value(found, "gpu_watchdog_engine_up") == 1 and value(found, "gpu_watchdog_nvml_ok") == 1
    uuid = "GPU-5f1c0b6e-1d2a-4c7e-9b3a-000000000100"
    # The GPU series come from the monitor's latest reading, which may lag the container's health by a read.
    gpu_series = wait_for(
        lambda: value(samples(base), "gpu_watchdog_gpu_memory_used_bytes", gpu="0", UUID=uuid, modelName="P106-100"),
        15,
        "GPU 0's memory series with its UUID",
    )
    assert gpu_series == 4000 * 2**20
    assert value(found, "gpu_watchdog_last_cycle_timestamp_seconds") and value(
        found, "gpu_watchdog_loop_duration_seconds_count"
    )

    target.kill()
    wait_for(
        lambda: value(samples(base), "gpu_watchdog_recovery_seconds_count", fault="stopped") == 1,
        20,
        "recovery observed",
    )
    found = samples(base)
    assert value(found, "gpu_watchdog_restarts_total", container=name, reason="stopped") == 1
    assert value(found, "gpu_watchdog_fault_detections_total", container=name, fault="stopped") == 1
    status = json.loads(httpx.get(f"{base}/status", timeout=10, trust_env=False).text)
    assert any(row["name"] == name for row in status["containers"])
    assert httpx.get(f"{base}/nope", timeout=2, trust_env=False).status_code == 404

    # A daemon whose port is taken says so once and heals without HTTP.
    (tmp_path / "b").mkdir()
    other = new_daemon(daemons, tmp_path / "b", f"{prefix}x", http=f"127.0.0.1:{port}").start()
    wait_for(lambda: "cannot listen" in other.log(), 10, "the port-taken message")
    assert other.alive() and daemon.alive()
