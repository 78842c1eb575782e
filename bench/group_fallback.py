"""Every primary of a model group killed: what clients of the LiteLLM proxy see, and when traffic comes back.

Setup (fresh per run): two stand-in backends serve the primary group `big` (the fast engine's
stand-ins, LOAD_SECONDS=10 so a restarted one is healthy only 10 s after its start, as a model
load would make it), one real llama.cpp server (FIELD-NOTES 7: tiny random-weight model) serves
the fallback group `small`; config `litellm.fallbacks: {big: [small]}`; the config rendered by
`gpu-watchdog litellm render` from litellm/config.template.yaml (unchanged: num_retries 2);
the pinned LiteLLM proxy as a host process; the daemon with its default timings and the
rotation. capacity.rpm_per_gpu is [--rpm, --rpm] (default 400), so the llama.cpp deployment's
failover cap (its planned rpm) is 400 a minute, above the load; `--rpm 12 --name
group_fallback_capped` shows the cap at work (what is over it gets a 429).

Load: --rate requests/s (default 5) to `big`, each in its own thread (client timeout 60 s), for
--seconds (default 60). At --kill-at (default 15 s) both primaries are killed (`docker kill`);
the watchdog restarts them. Healthy = the first 200 of a primary's /health after the kill
(polled every 0.1 s).

Measured: client errors (any status but 200, or no answer), in all and during the failover
(from the kill until the first primary is healthy again); p50/p99 latency before the kill and
during the failover; requests the fallback group answered; from the first primary healthy to
the first request a primary answered, and to the last request the fallback answered (after it,
every request is on a primary again; negative: none after that moment); the journal's
rotation-out/-in of the primaries.

Usage: .venv/bin/python bench/group_fallback.py [--rate 5] [--seconds 60] [--kill-at 15] [--rpm 400]
       [--name group_fallback]      writes bench/results/NAME.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import docker
import httpx
import yaml
from common import (
    BENCH_RUN_LABEL,
    STANDIN_IMAGE,
    LoadSampler,
    WatchdogProcess,
    daemon_defaults,
    get_ok,
    pct,
    proxy_chat,
    remove_containers,
    run_llama,
    save,
)

from tests.integration import litellm_proxy
from tests.integration.harness import free_port
from tests.integration.harness import wait_for as wait_until

PRIMARY, FALLBACK = "big", "small"
LOAD_SECONDS = 10.0


def rnd(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


class Run:
    def __init__(self, rate: float, seconds: float, kill_at: float, rpm: int) -> None:
        self.client = docker.from_env(timeout=120)
        self.rate, self.seconds, self.kill_at = rate, seconds, kill_at
        self.tag = uuid.uuid4().hex[:6]
        self.prefix = f"fallback{self.tag}"
        self.work = Path(tempfile.mkdtemp(prefix=f"fallback-bench-{self.tag}-"))
        self.primaries = [f"{self.prefix}-vllm{i}" for i in range(2)]
        self.fallback = f"{self.prefix}-llama0"
        self.ports = {n: free_port() for n in [*self.primaries, self.fallback]}
        self.proxy_port = free_port()
        self.out = self.work / "litellm" / "config.yaml"
        config = daemon_defaults(self.prefix, self.work / "state", self.out)
        config["capacity"] = {"rpm_per_gpu": [rpm, rpm], "target_rpm": rate * 60}
        config["litellm"].update(proxy_url=f"http://127.0.0.1:{self.proxy_port}", fallbacks={PRIMARY: [FALLBACK]})
        self.daemon = WatchdogProcess(self.work, config)
        self.requests: list[dict[str, Any]] = []
        self.healthy: dict[str, float] = {}
        self.lock = threading.Lock()
        self.proxy_pid: int | None = None

    def labels(self, index: int, model: str) -> dict[str, str]:
        p = self.prefix
        return {
            f"{p}.enable": "true",
            f"{p}.health-port": "8080",
            f"{p}.role": "chat",
            f"{p}.model": model,
            f"{p}.gpu": str(index),
            BENCH_RUN_LABEL: self.tag,
        }

    def url(self, name: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}{path}"

    def setup(self) -> dict[str, Any]:
        for i, name in enumerate(self.primaries):
            self.client.containers.run(
                STANDIN_IMAGE,
                detach=True,
                name=name,
                labels=self.labels(i, PRIMARY),
                environment={"LOAD_SECONDS": str(LOAD_SECONDS), "MODEL_NAME": PRIMARY},
                ports={"8080/tcp": ("127.0.0.1", self.ports[name])},
            )
        run_llama(self.client, self.fallback, self.ports[self.fallback], self.labels(2, FALLBACK))
        for name in self.ports:
            wait_until(lambda n=name: get_ok(self.url(n, "/health")), 60, f"{name} healthy")
        done = self.daemon.cli("litellm", "render")
        if done.returncode != 0:
            raise RuntimeError(f"litellm render failed: {done.stderr or done.stdout}")
        rendered = yaml.safe_load(self.out.read_text())
        self.proxy_pid = litellm_proxy.start(self.out, self.proxy_port, self.work / "proxy.log")
        wait_until(lambda: litellm_proxy.live(self.proxy_port), 120, "the LiteLLM proxy")
        self.daemon.start()
        rotation = self.out.with_name("rotation.json")

        def all_in() -> dict[str, Any] | None:
            try:
                document = json.loads(rotation.read_text())
            except (OSError, ValueError):
                return None
            return document if len(document.get("in", [])) == 3 else None

        document = wait_until(all_in, 60, "every backend in rotation")
        return {
            "router_settings.fallbacks": rendered["router_settings"].get("fallbacks"),
            "failover_rpm": document.get("failover_rpm"),
        }

    def request(self, http: httpx.Client, index: int) -> None:
        record = proxy_chat(http, self.proxy_port, litellm_proxy.MASTER_KEY, PRIMARY, index)
        with self.lock:
            self.requests.append(record)

    def watch_health(self, name: str, after: float) -> None:
        deadline = after + 120
        while time.time() < deadline:
            if get_ok(self.url(name, "/health"), 0.3):
                self.healthy[name] = time.time()
                return
            time.sleep(0.1)

    def load(self) -> float:
        http = httpx.Client(timeout=60, trust_env=False, limits=httpx.Limits(max_connections=200))
        threads: list[threading.Thread] = []
        t0, killed_at = time.time(), 0.0
        for index in range(int(self.seconds * self.rate)):
            at = t0 + index / self.rate
            if not killed_at and at >= t0 + self.kill_at:
                killed_at = time.time()
                for name in self.primaries:
                    self.client.api.kill(name)
                for name in self.primaries:
                    threading.Thread(target=self.watch_health, args=(name, killed_at), daemon=True).start()
            time.sleep(max(0.0, at - time.time()))
            thread = threading.Thread(target=self.request, args=(http, index), daemon=True)
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join(70)
        http.close()
        return killed_at

    def teardown(self) -> None:
        self.daemon.stop()
        if self.proxy_pid is not None:
            litellm_proxy.stop(self.proxy_pid)
        remove_containers(self.client, [*self.primaries, self.fallback])

    def results(self, killed_at: float) -> dict[str, Any]:
        ids = {n: f"{n}.gpu{i}" for i, n in enumerate([*self.primaries, self.fallback])}
        fallback_id, primary_ids = ids[self.fallback], {ids[n] for n in self.primaries}
        done = sorted(self.requests, key=lambda r: r["start"])
        failed = [r for r in done if r.get("status") != 200]
        first_healthy = min(self.healthy.values()) if self.healthy else None
        before = [r for r in done if r["start"] < killed_at]
        during = [r for r in done if killed_at <= r["start"] and (first_healthy is None or r["start"] < first_healthy)]
        on_primary_after = [
            r["start"]
            for r in done
            if first_healthy and r["start"] > first_healthy and r.get("deployment") in primary_ids
        ]
        on_fallback = [r for r in done if r.get("deployment") == fallback_id]
        last_fallback = max((r["start"] for r in on_fallback), default=None)
        entries, restarts = self.daemon.journal(since=killed_at - 1)
        moves = [
            {"kind": e["kind"], "after_kill_s": rnd(e["ts"] - killed_at), "reason": e["reason"]}
            for e in entries
            if e["kind"] in ("rotation-out", "rotation-in")
            and any(n in (e.get("container") or "") for n in self.primaries)
        ]

        def latency(records: list[dict[str, Any]]) -> dict[str, float | None]:
            seconds = [r["seconds"] for r in records if r.get("status") == 200]
            return {
                "n": len(records),
                "p50_s": rnd(pct(seconds, 0.5)),
                "p99_s": rnd(pct(seconds, 0.99)),
                "max_s": rnd(max(seconds, default=None)),
            }

        return {
            "requests": len(done),
            "client_errors": len(failed),
            "client_errors_during_failover": len([r for r in during if r.get("status") != 200]),
            "errors": [r.get("error") for r in failed][:10],
            "before_kill": latency(before),
            "during_failover": latency(during),
            "during_failover_on_fallback": len([r for r in during if r.get("deployment") == fallback_id]),
            "during_failover_slowest": [
                {"after_kill_s": rnd(r["start"] - killed_at), "seconds": rnd(r["seconds"]), "by": r.get("deployment")}
                for r in sorted(during, key=lambda r: -r["seconds"])[:5]
            ],
            "answered_by_fallback": len(on_fallback),
            "retries_during_failover": sum(r.get("retries") or 0 for r in during),
            "failover_s": rnd(first_healthy - killed_at if first_healthy else None),
            "healthy_after_kill_s": {n: rnd(t - killed_at) for n, t in sorted(self.healthy.items())},
            "healthy_to_first_on_primary_s": rnd(
                min(on_primary_after) - first_healthy if on_primary_after and first_healthy else None
            ),
            "first_healthy_to_last_on_fallback_s": rnd(
                last_fallback - first_healthy if last_fallback and first_healthy else None
            ),
            "primary_restarts": len(restarts),
            "rotation_moves": moves,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rate", type=float, default=5.0, help="requests per second (at most 20)")
    parser.add_argument("--seconds", type=float, default=60.0, help="load duration (at most 300)")
    parser.add_argument("--kill-at", type=float, default=15.0, help="seconds into the load when both primaries die")
    parser.add_argument("--rpm", type=int, default=400, help="capacity.rpm_per_gpu: the fallback's failover cap")
    parser.add_argument("--name", default="group_fallback", help="results file name (bench/results/NAME.json)")
    args = parser.parse_args()
    rate, seconds = min(args.rate, 20.0), min(args.seconds, 300.0)
    run = Run(rate, seconds, min(args.kill_at, seconds / 2), args.rpm)
    try:
        setup = run.setup()
        sampler = LoadSampler().start()
        killed_at = run.load()
        measured = {**run.results(killed_at), "host_load": sampler.stop()}
    finally:
        run.teardown()
    data = {
        "command": f".venv/bin/python bench/group_fallback.py --rate {rate:g} --seconds {seconds:g} "
        f"--kill-at {args.kill_at:g} --rpm {args.rpm} --name {args.name}",
        "setup": {
            "primary": f"{PRIMARY}: 2 stand-ins (LOAD_SECONDS={LOAD_SECONDS:g})",
            "fallback": f"{FALLBACK}: 1 real llama.cpp server",
            "rate_per_s": rate,
            "seconds": seconds,
            "kill_at_s": args.kill_at,
            "cpus": os.cpu_count(),
            **setup,
        },
        **measured,
    }
    path = save(args.name, data)
    print(json.dumps(data, indent=2))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
