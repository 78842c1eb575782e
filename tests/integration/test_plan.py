"""`gpu-watchdog plan` against a real fleet on the real engine (issue 4, first step)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.conftest import new_daemon
from tests.integration.harness import Daemon, Fleet

pytestmark = pytest.mark.engine


def test_plan_counts_only_deployments_in_service(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str
) -> None:
    for gpu in range(3):
        fleet.start(f"chat{gpu}", gpu=str(gpu), role="chat", model="qwen")
    fleet.start("embed0", gpu="0", role="embed", model="bge")
    fleet.get("chat2").stop(timeout=1)  # out of service
    daemon = new_daemon(daemons, tmp_path, prefix, capacity={"target_rpm": 6, "host_overhead": "1g"})
    done = daemon.cli("plan", "--json")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    chat = sorted(d["name"] for d in plan["deployments"] if d["role"] == "chat")
    assert chat == [fleet.get("chat0").name, fleet.get("chat1").name]
    assert plan["capacity_rpm"] == [6.0, 8.0] and plan["verdict"] == "ok"
    assert plan["text"].startswith("6 rpm = 75% of 8 rpm capacity (2 GPU(s) at 6-8 rpm)")
    assert plan["global_max_parallel_requests"] == 3  # 2 in flight / 0.7
    assert plan["memory"]["containers_per_role"] == {"chat": 3, "embed": 1}
    table = daemon.cli("plan")
    assert table.returncode == 0 and "in flight: 3 with headroom" in table.stdout
    # What LiteLLM gets of the plan: the shares, no in-flight limit (a queue a stuck backend would fill).
    assert {d["litellm_params"]["weight"] for d in plan["deployments"] if d["role"] == "chat"} == {4}
    assert "global_max_parallel_requests not rendered: " in table.stdout


def test_plan_that_cannot_fit_the_host_exits_1_with_the_fix(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str
) -> None:
    fleet.start("chat0", gpu="0", role="chat", model="qwen")
    daemon = new_daemon(daemons, tmp_path, prefix, capacity={"memory": {"chat": {"mem_limit": "20000g"}}})
    done = daemon.cli("plan")
    assert done.returncode == 1
    assert "does NOT fit" in done.stdout and "capacity.memory" in done.stdout
