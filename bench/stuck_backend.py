"""One stuck backend behind the real LiteLLM proxy, the watchdog NOT acting: does the model group stay up?

The issue (measured with llama.cpp): with the config as the watchdog rendered it, one
backend that accepts requests and never answers left 38 of 180 requests unanswered
within 60 s, though three healthy backends stood by. This reproduces it with the
stand-ins, bounded, for whatever rendering the checkout has:

- 4 stand-in backends of one model (fixed host ports, a label prefix of this run's own);
- the config from `gpu-watchdog litellm render` (seed 001's capacity policy: 3-4 rpm and
  1 request in flight per GPU, 30% headroom), `--variant no-limits` strips
  `max_parallel_requests` and `global_max_parallel_requests` from it (the issue's baseline);
- LiteLLM alone: the proxy as a host process, no watchdog, no rotation file (the rotation
  callback then hands LiteLLM its candidates unchanged);
- after a warm-up, b1 gets POST /fault/hang (every later request accepted, never answered);
- load: --rate requests/s (default 2) for --seconds (default 90), each in its own thread,
  client timeout 60 s; the bench waits for the last one (bounded by that timeout).

Counted: answered (200 within 60 s), unanswered (no answer within 60 s), errors (an answer
that is not a 200), slow (answered after more than 5 s), p50/p99 of the latency with an
unanswered request counted as 60 s. Results: bench/results/stuck_backend.json, one entry per
--label (the runs of other labels in the file are kept), with the limits the config had.

Usage: .venv/bin/python bench/stuck_backend.py --label new [--variant rendered|no-limits]
       [--seconds 90] [--rate 2] [--template FILE]      (about 3 minutes a run)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import docker
import httpx
import yaml
from common import RESULTS, ROOT, get_ok, pct, proxy_chat, save

from tests.integration.harness import free_port
from tests.integration.harness import wait_for as wait_until

IMAGE = "gpu-watchdog/standin:dev"
MODEL = "bench"
BACKENDS = 4
HUNG = 1  # index of the backend that hangs
CLIENT_TIMEOUT = 60.0
SLOW = 5.0
RUN_LABEL = "gpu-watchdog-bench.run"
WATCHDOG = ROOT / ".venv" / "bin" / "gpu-watchdog"
LITELLM = ROOT / ".venv-litellm" / "bin" / "litellm"
TEMPLATE = ROOT / "litellm" / "config.template.yaml"
MASTER_KEY_FALLBACK = "sk-gpu-watchdog-change-me"


def limits_of(config: dict[str, Any]) -> dict[str, Any]:
    """The keys of the config that limit, weight or bound requests: what this run measured."""
    keys = ("rpm", "weight", "max_parallel_requests", "timeout", "stream_timeout", "num_retries")
    deployments = {
        str(m["model_info"]["id"]): {k: m["litellm_params"][k] for k in keys if k in m["litellm_params"]}
        for m in config.get("model_list") or []
    }
    router = config.get("router_settings") or {}
    router_keys = ("num_retries", "timeout", "cooldown_time", "allowed_fails", "allowed_fails_policy", "retry_after")
    return {
        "deployments": deployments,
        "global_max_parallel_requests": (config.get("general_settings") or {}).get("global_max_parallel_requests"),
        "router_settings": {k: router[k] for k in router_keys if k in router},
    }


class Run:
    """Backends, the rendered config, the proxy; then the hang and the load."""

    def __init__(
        self, client: docker.DockerClient, variant: str, seconds: float, rate: float, template: Path = TEMPLATE
    ) -> None:
        self.client = client
        self.template = template
        self.variant = variant
        self.seconds = seconds
        self.rate = rate
        self.tag = uuid.uuid4().hex[:6]
        self.prefix = f"gwbs{self.tag}"
        self.work = Path(tempfile.mkdtemp(prefix=f"gwb-stuck-{self.tag}-"))
        self.names = [f"{self.prefix}-b{i}" for i in range(BACKENDS)]
        self.ports = {name: free_port() for name in self.names}
        self.proxy_port = free_port()
        self.proxy: subprocess.Popen[bytes] | None = None
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def url(self, name: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}{path}"

    def start_backends(self) -> None:
        for i, name in enumerate(self.names):
            labels = {
                f"{self.prefix}.enable": "true",
                f"{self.prefix}.health-port": "8080",
                f"{self.prefix}.role": "chat",
                f"{self.prefix}.model": MODEL,
                f"{self.prefix}.gpu": str(i),
                RUN_LABEL: self.tag,
            }
            self.client.containers.run(
                IMAGE,
                detach=True,
                name=name,
                labels=labels,
                environment={"LOAD_SECONDS": "0.5", "MODEL_NAME": name},
                ports={"8080/tcp": ("127.0.0.1", self.ports[name])},
            )
        for name in self.names:
            wait_until(lambda n=name: get_ok(self.url(n, "/health")), 30, f"{name} healthy")

    def write_config(self) -> Path:
        out = self.work / "litellm" / "config.yaml"
        wd = {
            "label_prefix": self.prefix,
            "litellm": {"enabled": True, "template": str(self.template), "out": str(out)},
        }
        wd_config = self.work / "watchdog.yaml"
        wd_config.write_text(yaml.safe_dump(wd, sort_keys=False))
        done = subprocess.run(
            [str(WATCHDOG), "--config", str(wd_config), "--state-dir", str(self.work / "state"), "litellm", "render"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            raise RuntimeError(f"litellm render failed: {done.stderr or done.stdout}")
        config = yaml.safe_load(out.read_text())
        if len(config.get("model_list") or []) != BACKENDS:
            raise RuntimeError(f"rendered config lists {len(config.get('model_list') or [])} deployments")
        if self.variant == "no-limits":
            for entry in config["model_list"]:
                entry["litellm_params"].pop("max_parallel_requests", None)
            config.get("general_settings", {}).pop("global_max_parallel_requests", None)
        self.master_key = (config.get("general_settings") or {}).get("master_key") or MASTER_KEY_FALLBACK
        self.config = config
        run_config = out.parent / "bench-config.yaml"
        run_config.write_text(yaml.safe_dump(config, sort_keys=False))
        return run_config

    def start_proxy(self, config: Path) -> None:
        env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        with open(self.work / "proxy.log", "ab") as log:
            self.proxy = subprocess.Popen(
                [str(LITELLM), "--config", str(config), "--host", "127.0.0.1", "--port", str(self.proxy_port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=config.parent,
            )

        def up() -> bool:
            if self.proxy is not None and self.proxy.poll() is not None:
                raise RuntimeError(f"proxy exited: see {self.work / 'proxy.log'}")
            return get_ok(f"http://127.0.0.1:{self.proxy_port}/health/liveliness", 1)

        wait_until(up, 120, "the LiteLLM proxy")

    def request(self, http: httpx.Client, index: int) -> None:
        record = proxy_chat(http, self.proxy_port, self.master_key, MODEL, index)
        with self.lock:
            self.requests.append(record)

    def execute(self) -> dict[str, Any]:
        try:
            self.start_backends()
            self.start_proxy(self.write_config())
            limits = httpx.Limits(max_connections=400, max_keepalive_connections=20)
            with httpx.Client(timeout=CLIENT_TIMEOUT, trust_env=False, limits=limits) as http:
                for i in range(BACKENDS):  # warm-up, not counted
                    http.post(
                        f"http://127.0.0.1:{self.proxy_port}/v1/chat/completions",
                        headers={"Authorization": f"Bearer {self.master_key}"},
                        json={"model": MODEL, "messages": [{"role": "user", "content": f"warm {i}"}]},
                    ).raise_for_status()
                httpx.post(self.url(self.names[HUNG], "/fault/hang"), timeout=2, trust_env=False)
                t0 = time.time() + 0.5
                threads = []
                for index in range(int(self.seconds * self.rate)):
                    time.sleep(max(0.0, t0 + index / self.rate - time.time()))
                    thread = threading.Thread(target=self.request, args=(http, index), daemon=True)
                    thread.start()
                    threads.append(thread)
                deadline = time.time() + CLIENT_TIMEOUT + 10
                for thread in threads:
                    thread.join(max(0.1, deadline - time.time()))
            return self.analyse()
        finally:
            self.stop_proxy()
            self.remove_backends()

    def stop_proxy(self) -> None:
        """SIGTERM, then SIGKILL, to the proxy this run started (by its PID)."""
        if self.proxy is None or self.proxy.poll() is not None:
            return
        self.proxy.send_signal(signal.SIGTERM)
        try:
            self.proxy.wait(30)
        except subprocess.TimeoutExpired:
            self.proxy.kill()
            self.proxy.wait(5)

    def remove_backends(self) -> None:
        for name in self.names:
            with contextlib.suppress(docker.errors.APIError):
                self.client.api.remove_container(name, force=True)

    def analyse(self) -> dict[str, Any]:
        records = sorted(self.requests, key=lambda r: r["i"])
        answered = [r for r in records if r["status"] == 200]
        unanswered = [r for r in records if r["status"] is None]
        errors = [r for r in records if r["status"] not in (None, 200)]
        latencies = [CLIENT_TIMEOUT if r["status"] is None else r["seconds"] for r in records]
        hung_id = f"{self.names[HUNG]}.gpu{HUNG}"
        return {
            "variant": self.variant,
            "load": {"rate_per_s": self.rate, "seconds": self.seconds, "client_timeout_s": CLIENT_TIMEOUT},
            "limits": limits_of(self.config),
            "requests": len(records),
            "answered": len(answered),
            "unanswered_within_60s": len(unanswered),
            "errors": len(errors),
            "error_samples": sorted({str(r.get("error"))[:120] for r in errors})[:3],
            "slower_than_5s": sum(1 for r in answered if r["seconds"] > SLOW),
            "retried": sum(1 for r in answered if r.get("retries")),
            "answered_by_hung_backend": sum(1 for r in answered if r.get("deployment") == hung_id),
            "p50_s": round(pct(latencies, 0.50) or 0.0, 3),
            "p99_s": round(pct(latencies, 0.99) or 0.0, 3),
            "max_s": round(max(latencies), 3),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", required=True, help="name of this run in the results file, e.g. old, new")
    parser.add_argument("--variant", choices=("rendered", "no-limits"), default="rendered")
    parser.add_argument("--seconds", type=float, default=90.0)
    parser.add_argument("--rate", type=float, default=2.0)
    parser.add_argument("--template", type=Path, default=TEMPLATE, help="another template (default: the shipped one)")
    args = parser.parse_args()
    if not 10 <= args.seconds <= 300 or not 0.1 <= args.rate <= 10:
        parser.error("--seconds must be 10-300 and --rate 0.1-10 (the bench is bounded)")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    result = Run(docker.from_env(timeout=120), args.variant, args.seconds, args.rate, args.template).execute()
    result["template"] = str(args.template)
    result["commit"] = commit.stdout.strip()
    path = RESULTS / "stuck_backend.json"
    runs: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        runs = dict(json.loads(path.read_text()).get("runs") or {})
    runs[args.label] = {"measured_at": time.strftime("%Y-%m-%d %H:%M:%S"), **result}
    save("stuck_backend", {"description": __doc__.splitlines()[0], "runs": runs})
    print(json.dumps({k: v for k, v in result.items() if k != "limits"}, indent=2))


if __name__ == "__main__":
    main()
