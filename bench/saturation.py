"""Saturation: every real llama.cpp server busy with long generations and a queue; does the watchdog stay still?

Setup: 4 real llama.cpp servers (gpu-watchdog/llama-server:dev) on the larger generated model
(scripts/make_tiny_gguf.py --embd 512 --layers 8 --ff 1536 --heads 8, about 110 MB, mounted at
/models/extra), each `-np 1 -c 4096 -t 1`: one slot, one thread; on a 2-core machine the four
share the cores, so each decodes slowly. gpu-watchdog labels as the tests give them (model `slow`,
gpu 0-3, start-period 5 s), 127.0.0.1 ports. The watchdog as a real daemon subprocess with its
defaults (bench/common.py daemon_defaults; the router sync on, so a suspect's rotation-out is
journaled; no proxy: the clients call each server directly, so each one's queue is known).

Load: --concurrency (default 3) clients per server, each sending one long generation after another
(--max-tokens, default 256, ignore_eos: every one decodes all of them; client timeout 600 s) for
--minutes (default 10): one request decoding and the others deferred at every moment. Bounded:
at most 1000 generations per client and the time. Every 10 s the bench reads each server's
/metrics (requests_processing, requests_deferred, n_decode_total) to show it was busy and moving.

Counted from the journal, from the load's start on: restarts (every one is false: nothing is
faulted), detected faults, suspects (rotation-out entries "suspect: ..."), every rotation-out, and
from the clients: generations completed, errors, tokens/s.
Results: bench/results/saturation.json.

Usage: .venv/bin/python bench/saturation.py [--minutes 10] [--concurrency 3] [--max-tokens 256]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import docker
import httpx
from common import (
    BENCH_RUN_LABEL,
    ROOT,
    LoadSampler,
    WatchdogProcess,
    daemon_defaults,
    get_ok,
    remove_containers,
    run_llama,
    save,
)
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.harness import free_port
from tests.integration.harness import wait_for as wait_until

SERVERS = 4
SLOW_MODEL_ARGS = ["--embd", "512", "--layers", "8", "--ff", "1536", "--heads", "8"]
SLOW_MODEL = "/models/extra/slow.gguf"
SERVER_ARGS = ["-m", SLOW_MODEL, "-np", "1", "-c", "4096", "-t", "1"]
START_PERIOD = "5"
CLIENT_TIMEOUT = 600.0
MAX_PER_CLIENT = 1000


def rnd(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


class Run:
    def __init__(self, client: docker.DockerClient, minutes: float, concurrency: int, max_tokens: int) -> None:
        self.client = client
        self.minutes = minutes
        self.concurrency = concurrency
        self.max_tokens = max_tokens
        self.tag = uuid.uuid4().hex[:6]
        self.prefix = f"gwbsat{self.tag}"
        self.work = Path(tempfile.mkdtemp(prefix=f"gwb-sat-{self.tag}-"))
        self.names = [f"{self.prefix}-s{i}" for i in range(SERVERS)]
        self.ports = {name: free_port() for name in self.names}
        out = self.work / "litellm" / "config.yaml"
        self.daemon = WatchdogProcess(self.work, daemon_defaults(self.prefix, self.work / "state", out, free_port()))
        self.done: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.samples: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def url(self, name: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}{path}"

    def model(self) -> Path:
        folder = self.work / "models"
        folder.mkdir()
        subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "make_tiny_gguf.py"), str(folder / "slow.gguf"), *SLOW_MODEL_ARGS],
            check=True,
            capture_output=True,
            timeout=180,
        )
        folder.chmod(0o755)
        (folder / "slow.gguf").chmod(0o644)
        return folder

    def start_servers(self) -> None:
        models = self.model()
        for i, name in enumerate(self.names):
            p = self.prefix
            labels = {
                f"{p}.enable": "true",
                f"{p}.health-port": "8080",
                f"{p}.role": "chat",
                f"{p}.model": "slow",
                f"{p}.gpu": str(i),
                f"{p}.start-period": START_PERIOD,
                BENCH_RUN_LABEL: self.tag,
            }
            run_llama(self.client, name, self.ports[name], labels, SERVER_ARGS, models)
        for name in self.names:
            wait_until(lambda n=name: get_ok(self.url(n, "/health")), 120, f"{name} healthy")

    def generate(self, name: str, max_tokens: int, timeout: float = CLIENT_TIMEOUT) -> dict[str, Any]:
        response = httpx.post(
            self.url(name, "/v1/chat/completions"),
            json={
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": max_tokens,
                "ignore_eos": True,
            },
            timeout=timeout,
            trust_env=False,
        )
        response.raise_for_status()
        return dict(response.json())

    def client_loop(self, name: str, deadline: float) -> None:
        for _ in range(MAX_PER_CLIENT):
            if self.stop.is_set() or time.time() >= deadline:
                return
            began = time.time()
            try:
                body = self.generate(name, self.max_tokens)
                record = {
                    "server": name,
                    "start": began,
                    "seconds": time.time() - began,
                    "tokens": int(body["usage"]["completion_tokens"]),
                    "decode_per_s": float((body.get("timings") or {}).get("predicted_per_second") or 0.0),
                }
                with self.lock:
                    self.done.append(record)
            except (httpx.HTTPError, KeyError, ValueError) as exc:
                with self.lock:
                    self.errors.append({"server": name, "at": began, "error": f"{type(exc).__name__}: {exc}"[:200]})
                self.stop.wait(1.0)

    def sample(self) -> None:
        while not self.stop.is_set():
            for name in self.names:
                try:
                    text = httpx.get(self.url(name, "/metrics"), timeout=10, trust_env=False).text
                    values = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
                    self.samples.append(
                        {
                            "at": time.time(),
                            "server": name,
                            "processing": values.get("llamacpp:requests_processing"),
                            "deferred": values.get("llamacpp:requests_deferred"),
                            "decoded": values.get("llamacpp:n_decode_total"),
                        }
                    )
                except (httpx.HTTPError, ValueError) as exc:
                    self.samples.append({"at": time.time(), "server": name, "error": type(exc).__name__})
            self.stop.wait(10)

    def execute(self) -> dict[str, Any]:
        try:
            self.start_servers()
            warm = [self.generate(name, 16, 300) for name in self.names]  # pages of the model touched once
            self.daemon.start()
            sampler = LoadSampler().start()
            self.t0 = time.time()
            deadline = self.t0 + self.minutes * 60
            threads = [
                threading.Thread(target=self.client_loop, args=(name, deadline), daemon=True)
                for name in self.names
                for _ in range(self.concurrency)
            ]
            sampling = threading.Thread(target=self.sample, daemon=True)
            for thread in [*threads, sampling]:
                thread.start()
            for thread in threads:  # the last generation started before the deadline runs to its end
                thread.join(max(0.1, deadline + CLIENT_TIMEOUT - time.time()))
            self.t_end = time.time()
            self.stop.set()
            sampling.join(30)
            machine = sampler.stop()
            time.sleep(1.0)
            entries, actions = self.daemon.journal(since=self.t0 - 60)
            return self.analyse(entries, actions, machine, warm)
        finally:
            self.stop.set()
            self.daemon.stop()
            remove_containers(self.client, self.names)

    def analyse(
        self, entries: list[dict[str, Any]], actions: list[dict[str, Any]], machine: dict[str, Any], warm: list[Any]
    ) -> dict[str, Any]:
        mine = [e for e in entries if e["container"] in self.names and e["ts"] >= self.t0]
        detected = [e for e in mine if e["kind"] == "detected"]
        outs = [e for e in mine if e["kind"] == "rotation-out"]  # "starting" at the daemon's start is before t0
        suspects = [e for e in outs if "suspect" in (e["reason"] or "")]
        ok = [s for s in self.samples if "error" not in s]
        busy = [s for s in ok if (s["processing"] or 0) > 0]
        queued = [s for s in ok if (s["deferred"] or 0) > 0]
        moved = 0
        steps = 0
        for name in self.names:
            series = [s["decoded"] for s in ok if s["server"] == name]
            for a, b in itertools.pairwise(series):
                steps += 1
                moved += int(b > a)
        seconds = [d["seconds"] for d in self.done]
        rates = [d["decode_per_s"] for d in self.done if d["decode_per_s"]]
        return {
            "settings": {
                "servers": SERVERS,
                "server_args": SERVER_ARGS,
                "model_args": SLOW_MODEL_ARGS,
                "clients_per_server": self.concurrency,
                "max_tokens": self.max_tokens,
                "minutes": self.minutes,
                "start_period_label_s": float(START_PERIOD),
                "watchdog_config": self.daemon.config_path.read_text(),
            },
            "machine_load": machine,
            "ran_s": rnd(self.t_end - self.t0, 1),
            "warm_decode_per_s": [
                rnd(float((w.get("timings") or {}).get("predicted_per_second") or 0.0)) for w in warm
            ],
            "generations_completed": len(self.done),
            "generations_per_server": {n: sum(1 for d in self.done if d["server"] == n) for n in self.names},
            "tokens_generated": sum(d["tokens"] for d in self.done),
            "generation_seconds_median": rnd(statistics.median(seconds) if seconds else None),
            "generation_seconds_max": rnd(max(seconds, default=0.0)),
            "decode_per_s_median": rnd(statistics.median(rates) if rates else None),
            "client_errors": len(self.errors),
            "error_samples": self.errors[:5],
            "metrics_samples": len(ok),
            "metrics_samples_failed": len(self.samples) - len(ok),
            "samples_busy": len(busy),
            "samples_with_queue": len(queued),
            "decode_counter_moved_between_samples": f"{moved}/{steps}",
            "restarts": len(actions),
            "false_restarts": len(actions),
            "restart_details": actions,
            "detected_faults": len(detected),
            "detected_details": [
                {"t_s": rnd(e["ts"] - self.t0), "container": e["container"], "fault": e["fault"], "reason": e["reason"]}
                for e in detected
            ],
            "suspects": len(suspects),
            "suspect_details": [
                {"t_s": rnd(e["ts"] - self.t0), "container": e["container"], "reason": (e["reason"] or "")[:200]}
                for e in suspects
            ],
            "rotation_outs": len(outs),
            "journal_kinds": sorted({e["kind"] for e in mine}),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=3, help="clients per server (1 slot each)")
    parser.add_argument("--max-tokens", type=int, default=256)
    args = parser.parse_args()
    if not 1 <= args.minutes <= 60 or not 2 <= args.concurrency <= 6 or not 16 <= args.max_tokens <= 2048:
        parser.error("--minutes 1-60, --concurrency 2-6, --max-tokens 16-2048 (the bench is bounded)")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    result = Run(docker.from_env(timeout=120), args.minutes, args.concurrency, args.max_tokens).execute()
    result["commit"] = commit.stdout.strip()
    save("saturation", {"description": __doc__.splitlines()[0], **result})
    with contextlib.suppress(KeyError):
        del result["settings"]["watchdog_config"]
    print(json.dumps({k: v for k, v in result.items() if k != "restart_details"}, indent=2))


if __name__ == "__main__":
    main()
