"""The shipped compose files, as `docker compose config` resolves them (the real compose plugin).

They cannot be brought up here (no GPU, no registry for the llama.cpp/vLLM/LiteLLM images): this checks
what makes them safe to bring up on a GPU host. The demo (issue 5) brings a stand-in fleet up for real.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import ROOT

pytestmark = pytest.mark.engine
COMPOSE = ROOT / "compose"
ENV = {
    "DOCKER_GID": "105",
    "LLAMA_IMAGE": "llama:test",
    "LITELLM_IMAGE": "litellm:test",
    "VLLM_IMAGE": "vllm:test",
    "PROMETHEUS_IMAGE": "prometheus:test",
    "GRAFANA_IMAGE": "grafana:test",
}


def resolved(*files: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    args = ["docker", "compose"]
    for name in files:
        args += ["-f", str(COMPOSE / name)]
    return subprocess.run(
        [*args, "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(ENV if env is None else env)},
        cwd=ROOT,
    )


def services(*files: str) -> dict[str, Any]:
    done = resolved(*files)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout)["services"])


def test_watchdog_service_is_safe_and_complete() -> None:
    watchdog = services("docker-compose.yml")["gpu-watchdog"]
    assert watchdog["pid"] == "host"
    assert "gpu-watchdog.enable" not in (watchdog.get("labels") or {})  # never managed by itself
    targets = {v["target"] for v in watchdog["volumes"]}
    assert {"/var/run/docker.sock", "/var/lib/gpu-watchdog", "/etc/gpu-watchdog/config.yaml", "/app/litellm"} <= targets
    assert watchdog["group_add"] == ["105"]
    devices = watchdog["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "utility" in devices[0]["capabilities"]
    config = (COMPOSE / "watchdog.yaml").read_text()
    import yaml

    from watchdog.config import parse_config

    parsed = parse_config(yaml.safe_load(config))  # the shipped config is valid
    assert parsed.litellm.enabled and parsed.gpu.kernel_log is None


@pytest.mark.parametrize(("fleet", "count"), [("fleet.example.yml", 16), ("fleet.vllm.example.yml", 2)])
def test_example_fleets_are_labelled_for_the_watchdog(fleet: str, count: int) -> None:
    resolved_services = services("docker-compose.yml", fleet)
    inference = {n: s for n, s in resolved_services.items() if (s.get("labels") or {}).get("gpu-watchdog.enable")}
    assert len(inference) == count
    gpus = set()
    for name, service in inference.items():
        labels = service["labels"]
        assert service["restart"] != "always", name
        assert "ports" not in service, f"{name}: publish no inference port (the watchdog probes it on the network)"
        assert labels["gpu-watchdog.api-base"] == f"http://{name}:{labels['gpu-watchdog.health-port']}/v1"
        assert labels["gpu-watchdog.model"] and labels["gpu-watchdog.role"] and "healthcheck" in service
        device = service["deploy"]["resources"]["reservations"]["devices"][0]
        assert device["device_ids"] == [labels["gpu-watchdog.gpu"]]
        gpus.add(labels["gpu-watchdog.gpu"])
        if "llama" in service["image"]:
            assert service["environment"]["GGML_CUDA_NO_PINNED"] == "1"
            assert service["mem_limit"] and service["memswap_limit"]
    assert len(gpus) == count // 2 if fleet == "fleet.example.yml" else len(gpus) == count


def test_monitoring_services_mount_the_rules_and_the_dashboard() -> None:
    found = services("docker-compose.yml", "monitoring/docker-compose.monitoring.yml")
    prometheus = {v["target"]: v["source"] for v in found["prometheus"]["volumes"]}
    assert prometheus["/etc/prometheus/alerts.yml"].endswith("compose/monitoring/alerts.yml")
    grafana = {v["target"] for v in found["grafana"]["volumes"]}
    assert "/var/lib/grafana/dashboards/gpu-watchdog.json" in grafana
    assert all(p["host_ip"] == "127.0.0.1" for s in ("prometheus", "grafana") for p in found[s]["ports"])


def test_missing_image_variable_is_one_clear_error(tmp_path: Path) -> None:
    done = resolved("docker-compose.yml", "fleet.example.yml", env={"DOCKER_GID": "105"})
    assert done.returncode != 0 and "set LLAMA_IMAGE" in done.stderr
