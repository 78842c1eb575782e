"""`make demo` end to end: the demo stack up with compose on the real engine, the chaos, the outcomes, down.

The GPUs are simulated (fake NVML driven by the stand-ins); the engine, containers, watchdog daemon,
LiteLLM proxy and HTTP are real. Every injected fault must be healed (or, the crash loop, given up)
while the proxy keeps answering.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import docker
import pytest

from tests.integration import litellm_proxy
from tests.integration.harness import ROOT

pytestmark = pytest.mark.engine
DEMO = ROOT / "compose" / "demo" / "demo.py"


def demo(step: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(DEMO), step], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_demo_heals_the_chaos_and_the_proxy_keeps_serving(client: docker.DockerClient) -> None:
    litellm_proxy.ensure_installed()
    try:
        started = demo("up", 240)
        assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
        assert "[SIMULATED GPUs]" in started.stdout and "8/8 deployment(s) in rotation" in started.stdout
        chaos = demo("chaos", 400)
        assert chaos.returncode == 0, chaos.stdout[-3000:] + chaos.stderr[-3000:]
        result = json.loads((ROOT / ".demo" / "chaos.json").read_text())
        outcomes = result["outcomes"]
        for name in ("llm-0", "llm-1", "llm-2", "llm-3"):
            assert "healed in" in outcomes[name], outcomes
        assert outcomes["llm-4"] == "crash loop: given up by the breaker"
        requests = result["requests"]
        assert requests.get("ok", 0) >= 20 and sum(requests.values()) == requests["ok"], requests
        report = demo("report", 60)
        assert "restart report" in report.stdout and "gpu-watchdog-demo-llm-4-1" in report.stdout
        lines = report.stdout.splitlines()
        header = re.split(r"\s{2,}", next(line for line in lines if line.strip().startswith("name")).strip())
        llm4 = next(line for line in lines if line.strip().startswith("gpu-watchdog-demo-llm-4-1"))
        assert re.split(r"\s{2,}", llm4.strip())[header.index("gave up")] == "1"  # the breaker gave up once
        page = (ROOT / ".demo" / "report.html").read_text()
        assert 'data-lane="gpu-watchdog-demo-llm-4-1"' in page and 'data-kind="give-up"' in page
    finally:
        stopped = demo("down", 120)
    assert stopped.returncode == 0, stopped.stderr
    assert client.containers.list(all=True, filters={"label": "gpu-watchdog-demo.enable"}) == []
    assert not (ROOT / ".demo" / "pids.json").exists()
