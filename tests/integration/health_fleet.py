"""A fleet whose GPUs have set health scores, behind the real LiteLLM proxy (test_health_traffic, bench/health_share).

One stand-in backend per GPU of the fake NVML driver, all serving model "qwen". The scenario gives
each GPU a signal the score reads (hw slowdown, hw thermal slowdown, an uncorrectable ECC error) and
the `gpu.health` config prices them so the scores are exactly the ones asked for; the daemon writes
their shares into the rotation file and the proxy's callback routes by them. Requests are sent one at
a time and counted by the `x-litellm-model-id` header the proxy returns.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.fake_nvml.harness import build, environment
from tests.integration import litellm_proxy
from tests.integration.harness import ROOT, Daemon, Fleet, free_port, wait_for

TEMPLATE = ROOT / "litellm" / "config.template.yaml"
UUID = "GPU-7a0e44c2-35f1-4b8e-a1d6-0000000002{:02d}"
# Each score the fleet can ask for: the scenario keys that give it, under HEALTH below.
SIGNALS: dict[float, str] = {
    1.0: "",
    0.5: "clocks_reasons=0x8",  # hw-slowdown, priced 0.5 (the default)
    0.2: "clocks_reasons=0x40",  # hw-thermal-slowdown, priced 0.2 here
    0.0: "ecc_uncorrected=1",  # an uncorrectable ECC error: 0 (the default), under evict_below
}
HEALTH: dict[str, Any] = {"clock_event_factors": {"hw-thermal-slowdown": 0.2}}


def scenario(scores: list[float]) -> str:
    lines = ["driver 550.90.07"]
    for i, score in enumerate(scores):
        lines.append(
            f'gpu {i} uuid={UUID.format(i)} bus=00000000:1{i}:00.0 name="NVIDIA H100 80GB HBM3" '
            f"pci_device_id=0x233010DE total_mib=81559 used_mib=40000 temp=45 {SIGNALS[score]}".rstrip()
        )
    return "\n".join(lines) + "\n"


@dataclass
class HealthFleet:
    daemon: Daemon
    port: int  # the proxy's
    ids: list[str]  # deployment id per GPU index
    rotation_file: Path

    def count(self, requests: int, concurrency: int = 1) -> tuple[Counter[str], list[dict[str, Any]]]:
        """`requests` chat completions, `concurrency` at a time: deployment id -> how many it served; failures."""
        served: Counter[str] = Counter()
        failures: list[dict[str, Any]] = []
        lock = threading.Lock()

        def client_loop(share: int) -> None:
            with litellm_proxy.client(self.port) as http:
                for _ in range(share):
                    response = http.post(
                        "/v1/chat/completions", json={"model": "qwen", "messages": [{"role": "user", "content": "hi"}]}
                    )
                    with lock:
                        if response.status_code != 200:
                            failures.append({"status": response.status_code, "body": response.text[:200]})
                        else:
                            served[response.headers.get("x-litellm-model-id") or "?"] += 1

        shares = [requests // concurrency + (1 if n < requests % concurrency else 0) for n in range(concurrency)]
        threads = [threading.Thread(target=client_loop, args=(share,)) for share in shares]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return served, failures


@contextlib.contextmanager
def health_fleet(
    fleet: Fleet, workdir: Path, prefix: str, scores: list[float], *, daemons: list[Daemon] | None = None
) -> Iterator[HealthFleet]:
    """The fleet, the daemon and the proxy, up and routing by health; all stopped after."""
    build()
    scenario_file = workdir / "scenario.txt"
    scenario_file.write_text(scenario(scores))
    names = []
    for gpu in range(len(scores)):
        names.append(fleet.start(f"h{gpu}", gpu=str(gpu), role="chat", model="qwen", host_port=free_port()).name)
    for gpu in range(len(scores)):
        fleet.wait_ready(f"h{gpu}")
    port = free_port()
    out = workdir / "litellm" / "config.yaml"
    pidfile, proxy_log = workdir / "proxy.pid", workdir / "proxy.log"
    restart = [sys.executable, "-m", "tests.integration.litellm_proxy", "restart", str(pidfile), str(out)]
    daemon = Daemon(
        workdir,
        prefix,
        env={**environment(scenario_file), "PYTHONPATH": str(ROOT)},
        gpu={"deadline": 1, "kernel_log": "off", "pid_mapping": False, "health": HEALTH},
        capacity={"rpm_per_gpu": [20, 30]},
        litellm={
            "enabled": True,
            "template": str(TEMPLATE),
            "out": str(out),
            "proxy_url": f"http://127.0.0.1:{port}",
            "restart_command": [*restart, str(port), str(proxy_log)],
        },
    )
    if daemons is not None:
        daemons.append(daemon)
    try:
        rendered = daemon.cli("litellm", "render")
        assert rendered.returncode == 0, rendered.stderr
        pidfile.write_text(str(litellm_proxy.start(out, port, proxy_log)))
        wait_for(lambda: litellm_proxy.live(port), 90, "the LiteLLM proxy to answer")
        daemon.start()
        ids = [f"{name}.gpu{gpu}" for gpu, name in enumerate(names)]
        yield HealthFleet(daemon, port, ids, out.parent / "rotation.json")
    finally:
        daemon.stop()
        if pidfile.exists():
            litellm_proxy.stop(int(pidfile.read_text()))


def expected_shares(scores: list[float], evict_below: float = 0.1) -> list[float]:
    """Each GPU's share of traffic by the design: its score over the sum of the scores kept in."""
    kept = [s if s >= evict_below else 0.0 for s in scores]
    total = sum(kept)
    return [s / total for s in kept]
