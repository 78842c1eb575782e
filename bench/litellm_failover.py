"""What clients of the LiteLLM proxy see while backends crash and hang, with and without the watchdog.

Setup per run (everything fresh, nothing shared between runs): 4 stand-in backends
(LOAD_SECONDS=2, so "healthy" is a distinct moment after a start) on fixed host
ports (a `docker restart` must not change a backend's api_base), one model served by
all four, the config rendered by `gpu-watchdog litellm render` from
litellm/config.template.yaml (a copy with router_settings.num_retries: 0 for
--retries off), one LiteLLM proxy as a host process. The watchdog (when on) runs
with poll_interval 2, probe_timeout 1, default_start_period 5 and the rotation.
Containers carry a label prefix of their own (label_prefix in the watchdog's
config), so the daemon touches nothing else on this engine.

Load: 30 requests/minute (one every 2 s, each in its own thread, client timeout
60 s) for --minutes (default 5.5). Faults, one a minute, alternating over the
backends: t=30 s kill b0 (`docker kill`), 90 hang b1 (POST /fault/hang: every
later request, /health included, hangs), 150 kill b2, 210 hang b3, 270 kill b0.

Healing: with the watchdog the bench does nothing after injecting. Without it
nobody would heal, so the bench does a `docker restart` itself after the delay the
watchdog needed in the paired with-watchdog run (median fault -> restart call
started, per fault kind, from its journal; run alone: crash 1 s, hang 4 s), so both
runs see the same recoveries and differ only in routing.

Both runs of a pair use the same proxy config: the rendered one plus a bench-only
callback (bench/attempt_log.py, copied next to it) that logs every routing attempt
(start, end, deployment id, ok or error class); retries hide failed attempts from
the client. Without the watchdog no rotation file exists, so the rotation callback
routes as LiteLLM alone would.

Moments: crash = the `docker kill` returned; hang detection = the journal's
rotation-out of that backend (with the watchdog); healthy = the first 200 of the
backend's /health after the fault (polled every 0.1 s, 0.3 s timeout). Per fault
event: attempts routed to the faulted backend after crash + 3 s / after detection
(before it is healthy again), healthy -> back in rotation (journal rotation-in),
healthy -> first attempt / first success on it (bound by the traffic: one request
every 2 s over 4 backends), and per hang the client requests that paid a timeout:
latency >= the per-deployment timeout 10 s, or an attempt that waited >= 1 s on the
hung backend (a restart ~5 s after the hang cuts its connections before LiteLLM's
10 s timeout, so the wait ends in a connection error, not a Timeout).

Attempts come from LiteLLM's deployment-level hooks (async_pre_call_deployment_hook,
async_post_call_{success,failure}_deployment_hook), which fire once per attempt;
async_log_failure_event does not (deduplicated per client request).

Another process restarting the Docker engine (integration tests of this repo)
stops every container: a run during which the engine went away is void and run
again (up to 3 times).

Usage: .venv/bin/python bench/litellm_failover.py [--watchdog with|without|both]
       [--retries on|off|both] [--minutes 5.5]   (default: all four, ~25 min)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
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
from common import ROOT, get_ok, pct, proxy_chat, save

from tests.integration.harness import free_port
from tests.integration.harness import wait_for as wait_until
from watchdog.journal import Journal

IMAGE = "gpu-watchdog/standin:dev"
MODEL = "bench"
BACKENDS = 4
LOAD_SECONDS = 2.0
INTERVAL = 2.0  # 30 requests/minute
CLIENT_TIMEOUT = 60.0
DEPLOYMENT_TIMEOUT = 10.0  # litellm_params.timeout in the template
CRASH_GOAL = 3.0
RECOVER_GOAL = 3.0
HUNG_WAIT = 1.0  # an attempt to a hung backend that lasted this long waited on it (a normal answer: ~20 ms)
FIRST_FAULT, FAULT_EVERY = 30.0, 60.0
DEFAULT_HEAL = {"kill": 1.0, "hang": 4.0}
MASTER_KEY_FALLBACK = "sk-gpu-watchdog-change-me"
RUN_LABEL = "gpu-watchdog-bench.run"
WATCHDOG = ROOT / ".venv" / "bin" / "gpu-watchdog"
LITELLM = ROOT / ".venv-litellm" / "bin" / "litellm"
TEMPLATE = ROOT / "litellm" / "config.template.yaml"


class EngineLost(RuntimeError):
    """The Docker engine went away during a run (another process restarted it): the run is void."""


def rnd(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


class Run:
    """One run: backends, proxy, optionally the watchdog; the load, the faults, the records."""

    def __init__(self, client: docker.DockerClient, watchdog: bool, retries: bool, minutes: float, heal: dict) -> None:
        self.client = client
        self.watchdog = watchdog
        self.retries = retries
        self.duration = minutes * 60
        self.heal = heal
        self.tag = uuid.uuid4().hex[:6]
        self.prefix = f"gwbf{self.tag}"
        self.work = Path(tempfile.mkdtemp(prefix=f"gwb-failover-{'wd' if watchdog else 'no'}-{self.tag}-"))
        self.out_dir = self.work / "litellm"
        self.state_dir = self.work / "state"
        self.attempt_log = self.work / "attempts.jsonl"
        self.names = [f"{self.prefix}-b{i}" for i in range(BACKENDS)]
        self.ports = {name: free_port() for name in self.names}
        self.proxy_port = free_port()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.requests: list[dict[str, Any]] = []
        self.faults: list[dict[str, Any]] = []
        self.rotation_changes: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.engine_lost: float | None = None

    @property
    def mode(self) -> str:
        return f"{'with' if self.watchdog else 'without'} watchdog, retries {'on' if self.retries else 'off'}"

    def deployment(self, name: str) -> str:
        return f"{name}.gpu{self.names.index(name)}"

    def url(self, name: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}{path}"

    # -- setup ---------------------------------------------------------------

    def start_backends(self) -> None:
        for i, name in enumerate(self.names):
            labels = {
                f"{self.prefix}.enable": "true",
                f"{self.prefix}.health-port": "8080",
                f"{self.prefix}.role": "chat",
                f"{self.prefix}.model": MODEL,
                f"{self.prefix}.gpu": str(i),
                f"{self.prefix}.start-period": "5",
                RUN_LABEL: self.tag,
            }
            self.client.containers.run(
                IMAGE,
                detach=True,
                name=name,
                labels=labels,
                environment={"LOAD_SECONDS": str(LOAD_SECONDS), "MODEL_NAME": name},
                ports={"8080/tcp": ("127.0.0.1", self.ports[name])},
            )
        for name in self.names:
            wait_until(lambda n=name: get_ok(self.url(n, "/health")), 30, f"{name} healthy")

    def write_configs(self) -> Path:
        template_dir = self.work / "template"
        template_dir.mkdir()
        template = yaml.safe_load(TEMPLATE.read_text())
        template["router_settings"]["num_retries"] = 2 if self.retries else 0
        template_path = template_dir / "config.template.yaml"
        template_path.write_text(yaml.safe_dump(template, sort_keys=False))
        self.master_key = (template.get("general_settings") or {}).get("master_key") or MASTER_KEY_FALLBACK
        wd = {
            "label_prefix": self.prefix,
            "poll_interval": 2,
            "probe_timeout": 1,
            "default_start_period": 5,
            "log_level": "INFO",
            "capacity": {"rpm_per_gpu": [20, 30], "target_rpm": 30},
            "litellm": {
                "enabled": True,
                "template": str(template_path),
                "out": str(self.out_dir / "config.yaml"),
                "proxy_url": f"http://127.0.0.1:{self.proxy_port}",
            },
        }
        self.wd_config = self.work / "watchdog.yaml"
        self.wd_config.write_text(yaml.safe_dump(wd, sort_keys=False))
        done = subprocess.run(
            [str(WATCHDOG), "--config", str(self.wd_config), "--state-dir", str(self.state_dir), "litellm", "render"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            raise RuntimeError(f"litellm render failed: {done.stderr or done.stdout}")
        rendered = yaml.safe_load((self.out_dir / "config.yaml").read_text())
        if len(rendered.get("model_list") or []) != BACKENDS:
            raise RuntimeError(f"rendered config lists {len(rendered.get('model_list') or [])} deployments")
        rendered["litellm_settings"]["callbacks"].append("attempt_log.attempt_logger")
        shutil.copyfile(ROOT / "bench" / "attempt_log.py", self.out_dir / "attempt_log.py")
        bench_config = self.out_dir / "bench-config.yaml"
        bench_config.write_text(yaml.safe_dump(rendered, sort_keys=False))
        self.rendered = rendered
        return bench_config

    def start_proxy(self, config: Path) -> None:
        env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "BENCH_ATTEMPT_LOG": str(self.attempt_log)}
        log = open(self.work / "proxy.log", "ab")  # noqa: SIM115 - the child keeps it
        self.procs["proxy"] = subprocess.Popen(
            [str(LITELLM), "--config", str(config), "--host", "127.0.0.1", "--port", str(self.proxy_port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.work,
        )
        url = f"http://127.0.0.1:{self.proxy_port}/health/liveliness"

        def up() -> bool:
            if self.procs["proxy"].poll() is not None:
                raise RuntimeError(f"proxy exited: see {self.work / 'proxy.log'}")
            return get_ok(url, 1)

        wait_until(up, 120, "the LiteLLM proxy")

    def start_watchdog(self) -> None:
        log = open(self.work / "daemon.log", "ab")  # noqa: SIM115 - the child keeps it
        self.procs["watchdog"] = subprocess.Popen(
            [str(WATCHDOG), "--config", str(self.wd_config), "--state-dir", str(self.state_dir), "--daemon"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        rotation = self.out_dir / "rotation.json"

        def all_in() -> bool:
            if self.procs["watchdog"].poll() is not None:
                raise RuntimeError(f"watchdog exited: see {self.work / 'daemon.log'}")
            try:
                return len(json.loads(rotation.read_text()).get("in", [])) == BACKENDS
            except (OSError, ValueError):
                return False

        wait_until(all_in, 30, "the rotation file with every backend in")

    def stop_procs(self) -> None:
        for name in ("watchdog", "proxy"):
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def watch_engine(self) -> None:
        """Other test runs on this host may restart the engine, which stops every container."""
        pinger = docker.from_env(timeout=10)
        while not self.stop.wait(0.5):
            try:
                pinger.ping()
            except Exception as exc:
                if "timed out" in str(exc).lower():
                    continue  # slow under load, not gone
                self.engine_lost = time.time()
                self.stop.set()
                return

    def remove_backends(self) -> None:
        with contextlib.suppress(AssertionError):
            wait_until(engine_up, 90, "the Docker engine")
        for name in self.names:
            with contextlib.suppress(docker.errors.APIError):
                self.client.api.remove_container(name, force=True)

    # -- load and faults -------------------------------------------------------

    def request(self, http: httpx.Client, index: int) -> None:
        record = proxy_chat(http, self.proxy_port, self.master_key, MODEL, index)
        with self.lock:
            self.requests.append(record)

    def load(self, http: httpx.Client) -> None:
        count = int(self.duration / INTERVAL)
        for index in range(count):
            delay = self.t0 + index * INTERVAL - time.time()
            if delay > 0 and self.stop.wait(delay):
                return
            thread = threading.Thread(target=self.request, args=(http, index), daemon=True)
            thread.start()
            self.threads.append(thread)

    def schedule(self) -> list[tuple[float, str, str]]:
        plan, k = [], 0
        while FIRST_FAULT + k * FAULT_EVERY <= self.duration - 45:
            kind = "kill" if k % 2 == 0 else "hang"
            plan.append((FIRST_FAULT + k * FAULT_EVERY, kind, self.names[k % BACKENDS]))
            k += 1
        return plan

    def inject(self, at: float, kind: str, name: str) -> None:
        try:
            self._inject(at, kind, name)
        except Exception as exc:  # the engine gone mid-run: the run is void anyway
            print(f"fault {kind} {name} at {at:g} s failed: {type(exc).__name__}: {exc}", flush=True)

    def _inject(self, at: float, kind: str, name: str) -> None:
        if self.stop.wait(max(0.0, self.t0 + at - time.time())):
            return
        event: dict[str, Any] = {"at": at, "kind": kind, "backend": name, "deployment": self.deployment(name)}
        if kind == "kill":
            self.client.api.kill(name)
        else:
            httpx.post(self.url(name, "/fault/hang"), timeout=2, trust_env=False)
        event["fault_ts"] = time.time()
        with self.lock:
            self.faults.append(event)
        if not self.watchdog:
            heal_at = event["fault_ts"] + self.heal[kind]
            self.stop.wait(max(0.0, heal_at - time.time()))
            event["bench_restart_ts"] = time.time()
            self.client.api.restart(name, timeout=10)
        # The first 200 of /health after the fault: the backend is healthy again.
        deadline = event["fault_ts"] + 90
        while time.time() < deadline and not self.stop.is_set():
            if get_ok(self.url(name, "/health"), 0.3):
                event["healthy_ts"] = time.time()
                return
            time.sleep(0.1)

    def watch_rotation(self) -> None:
        """Every change of the rotation file's out-set, as the proxy's callback would read it."""
        path, last = self.out_dir / "rotation.json", None
        while not self.stop.wait(0.1):
            try:
                out = sorted(json.loads(path.read_text()).get("out") or {})
            except (OSError, ValueError):
                continue
            if out != last:
                self.rotation_changes.append({"ts": time.time(), "out": out})
                last = out

    def execute(self) -> dict[str, Any]:
        watcher = threading.Thread(target=self.watch_engine, daemon=True)
        watcher.start()
        try:
            self.start_backends()
            config = self.write_configs()
            self.start_proxy(config)
            if self.watchdog:
                self.start_watchdog()
            limits = httpx.Limits(max_connections=200, max_keepalive_connections=20)
            with httpx.Client(timeout=CLIENT_TIMEOUT, trust_env=False, limits=limits) as http:
                for i in range(BACKENDS):  # warm-up, not counted
                    http.post(
                        f"http://127.0.0.1:{self.proxy_port}/v1/chat/completions",
                        headers={"Authorization": f"Bearer {self.master_key}"},
                        json={"model": MODEL, "messages": [{"role": "user", "content": f"warm {i}"}]},
                    ).raise_for_status()
                self.t0 = time.time() + 1
                helpers = [threading.Thread(target=self.inject, args=f, daemon=True) for f in self.schedule()]
                helpers.append(threading.Thread(target=self.watch_rotation, daemon=True))
                for thread in helpers:
                    thread.start()
                self.load(http)
                if self.engine_lost:
                    raise EngineLost(f"Docker engine lost {self.engine_lost - self.t0:.0f} s into the run")
                for thread in self.threads:
                    thread.join(max(0.1, CLIENT_TIMEOUT + 5 - (time.time() - self.t0 - self.duration)))
                self.t_end = time.time()
                self.stop.set()
                for thread in helpers:
                    thread.join(15)
            time.sleep(1.0)  # the proxy's logging callbacks run after the response
            journal = self.read_journal()
            self.stop_procs()
            return self.analyse(journal)
        finally:
            self.stop.set()
            self.stop_procs()
            self.remove_backends()

    def read_journal(self) -> list[dict[str, Any]]:
        if not (self.state_dir / "journal.sqlite3").exists():
            return []
        journal = Journal.in_dir(self.state_dir)
        try:
            return journal.entries(since=self.t0 - 60)
        finally:
            journal.close()

    # -- analysis ----------------------------------------------------------------

    def attempts(self) -> list[dict[str, Any]]:
        if not self.attempt_log.exists():
            return []
        rows = [json.loads(line) for line in self.attempt_log.read_text().splitlines() if line.strip()]
        for row in rows:
            row["unpaired"] = row["start"] is None  # its start was not seen: counted from its end
            row["start"] = row["start"] if row["start"] is not None else row["end"]
        return [r for r in rows if r["start"] >= self.t0 - 0.5]

    def analyse(self, journal: list[dict[str, Any]]) -> dict[str, Any]:
        requests = sorted(self.requests, key=lambda r: r["i"])
        attempts = self.attempts()
        latencies = [r["end"] - r["start"] for r in requests]
        errors = [r for r in requests if r.get("status") != 200]
        by_container = lambda kind, name: [e for e in journal if e["kind"] == kind and e["container"] == name]  # noqa: E731
        events = []
        for fault in sorted(self.faults, key=lambda f: f["fault_ts"]):
            f_ts, dep, name = fault["fault_ts"], fault["deployment"], fault["backend"]
            healthy = fault.get("healthy_ts")
            end = healthy if healthy is not None else self.t_end
            to_it = sorted(
                (a for a in attempts if a["deployment"] == dep and a["start"] > f_ts), key=lambda a: a["start"]
            )
            down = [a for a in to_it if a["start"] < end]
            row: dict[str, Any] = {
                "at_s": fault["at"],
                "kind": fault["kind"],
                "backend": dep,
                "healthy_after_s": rnd(healthy - f_ts if healthy else None),
                "attempts_while_down": len(down),
                "failed_attempts_while_down": sum(not a["ok"] for a in down),
            }
            if "bench_restart_ts" in fault:
                row["bench_restart_after_s"] = rnd(fault["bench_restart_ts"] - f_ts)
            outs = [e["ts"] for e in by_container("rotation-out", name) if e["ts"] >= f_ts - 0.5]
            ins = [e["ts"] for e in by_container("rotation-in", name) if e["ts"] >= f_ts]
            calls = [e for e in by_container("restart-call", name) if e["ts"] >= f_ts]
            if self.watchdog:
                row["rotation_out_after_s"] = rnd(outs[0] - f_ts if outs else None)
                row["restart_call_after_s"] = rnd(calls[0]["detail"]["call_started_at"] - f_ts if calls else None)
                row["rotation_in_after_healthy_s"] = rnd(ins[0] - healthy if ins and healthy else None)
            if fault["kind"] == "kill":
                late = [a for a in down if a["start"] > f_ts + CRASH_GOAL]
                row["attempts_after_crash_plus_3s"] = len(late)
                row["last_attempt_after_crash_s"] = rnd(down[-1]["start"] - f_ts if down else None)
            else:
                detected = outs[0] if self.watchdog and outs else None
                row["detected_after_s"] = rnd(detected - f_ts if detected else None)
                row["attempts_after_detection"] = (
                    sum(a["start"] > detected for a in down) if detected is not None else None
                )
                row["timeout_attempts"] = sum(
                    not a["ok"] and "timeout" in (a["error"] or "").lower() for a in to_it if a["start"] < end
                )
                row["requests_paying_timeout"] = sum(
                    r["end"] - r["start"] >= DEPLOYMENT_TIMEOUT * 0.95
                    for r in requests
                    if f_ts - DEPLOYMENT_TIMEOUT <= r["start"] <= end
                )
                # Waited >= 1 s on the hung backend: until LiteLLM's timeout, or until the restart cut it.
                hung = [a for a in down if a["end"] - a["start"] >= HUNG_WAIT]
                stuck = [
                    r for r in requests if any(r["start"] <= a["start"] and a["end"] <= r["end"] + 0.5 for a in hung)
                ]
                row["requests_waiting_on_hung_backend"] = len(stuck)
                row["longest_wait_on_hung_backend_s"] = rnd(max((a["end"] - a["start"] for a in hung), default=None))
            if healthy is not None:
                after = [a for a in to_it if a["start"] >= healthy]
                ok = [a for a in after if a["ok"]]
                row["first_attempt_after_healthy_s"] = rnd(after[0]["start"] - healthy if after else None)
                row["first_success_after_healthy_s"] = rnd(ok[0]["start"] - healthy if ok else None)
            events.append(row)
        kills = [e for e in events if e["kind"] == "kill"]
        hangs = [e for e in events if e["kind"] == "hang"]
        first_after = [e["first_attempt_after_healthy_s"] for e in events if e.get("first_attempt_after_healthy_s")]
        rot_in = [e["rotation_in_after_healthy_s"] for e in events if e.get("rotation_in_after_healthy_s") is not None]
        return {
            "mode": self.mode,
            "watchdog": self.watchdog,
            "retries": self.retries,
            "duration_s": self.duration,
            "heal_delays_s": None if self.watchdog else self.heal,
            "requests": len(requests),
            "client_errors": len(errors),
            "client_error_pct": rnd(100 * len(errors) / max(1, len(requests))),
            "error_samples": sorted({(r.get("error") or str(r.get("status")))[:120] for r in errors})[:5],
            "latency_s": {
                "p50": rnd(pct(latencies, 0.5), 3),
                "p99": rnd(pct(latencies, 0.99), 3),
                "max": rnd(max(latencies, default=None), 3),
                "mean": rnd(statistics.fmean(latencies) if latencies else None, 3),
            },
            "attempts": len(attempts),
            "failed_attempts": sum(not a["ok"] for a in attempts),
            "attempts_without_deployment_id": sum(not a["deployment"] for a in attempts),
            "attempts_unpaired": sum(a["unpaired"] for a in attempts),
            "served_by": {d: sum(r.get("deployment") == d for r in requests) for d in map(self.deployment, self.names)},
            "kill_attempts_after_3s": sum(e["attempts_after_crash_plus_3s"] for e in kills),
            "hang_attempts_after_detection": sum(e["attempts_after_detection"] or 0 for e in hangs)
            if self.watchdog
            else None,
            "max_requests_paying_timeout_per_hang": max((e["requests_paying_timeout"] for e in hangs), default=None),
            "max_requests_waiting_on_hung_backend_per_hang": max(
                (e["requests_waiting_on_hung_backend"] for e in hangs), default=None
            ),
            "healthy_to_rotation_in_s": {"median": rnd(pct(rot_in, 0.5)), "max": rnd(max(rot_in, default=None))}
            if self.watchdog
            else None,
            "healthy_to_first_attempt_s": {
                "median": rnd(pct(first_after, 0.5)),
                "max": rnd(max(first_after, default=None)),
            },
            "events": events,
            "rotation_changes": [{"t_s": rnd(c["ts"] - self.t0), "out": c["out"]} for c in self.rotation_changes],
            "journal": [
                {"t_s": rnd(e["ts"] - self.t0), "kind": e["kind"], "container": e["container"], "reason": e["reason"]}
                for e in journal
                if e["ts"] >= self.t0
            ],
            "workdir": str(self.work),
        }


def engine_up() -> bool:
    try:
        return bool(docker.from_env(timeout=5).ping())
    except Exception:
        return False


def execute(client: docker.DockerClient, wd: bool, retry: bool, minutes: float, heal: dict) -> dict[str, Any]:
    """A run, repeated (up to 3 times) when another process restarted the engine during it."""
    voided = []
    for _ in range(3):
        run = Run(client, wd, retry, minutes, heal)
        print(f"-- {run.mode}: {minutes:g} min, work dir {run.work}", flush=True)
        try:
            result = run.execute()
            result["voided_by_engine_restart"] = voided
            return result
        except EngineLost as exc:
            print(f"   void: {exc}; waiting for the engine, then again", flush=True)
            voided.append(str(exc))
            wait_until(engine_up, 120, "the Docker engine")
            time.sleep(15)
            client = docker.from_env(timeout=120)
    raise RuntimeError(f"{voided}: the engine keeps restarting; run this bench when nothing else uses the engine")


def heal_delays(result: dict[str, Any] | None) -> dict[str, float]:
    """Fault -> restart call started, median per kind, from a with-watchdog run."""
    delays = dict(DEFAULT_HEAL)
    if result is None:
        return delays
    for kind in delays:
        values = [e["restart_call_after_s"] for e in result["events"] if e["kind"] == kind]
        values = [v for v in values if v is not None]
        if values:
            delays[kind] = round(statistics.median(values), 2)
    return delays


def line(result: dict[str, Any]) -> str:
    lat = result["latency_s"]
    kills = [e for e in result["events"] if e["kind"] == "kill"]
    hangs = [e for e in result["events"] if e["kind"] == "hang"]
    down_kill = sum(e["attempts_while_down"] for e in kills)
    down_hang = sum(e["attempts_while_down"] for e in hangs)
    rot = result["healthy_to_rotation_in_s"]
    first = result["healthy_to_first_attempt_s"]
    return (
        f"{result['mode']:<32} req {result['requests']:>3}  err {result['client_errors']:>2} "
        f"({result['client_error_pct']:.1f}%)  p50 {lat['p50']:.2f} p99 {lat['p99']:.2f} max {lat['max']:.2f} s | "
        f"kill: att>3s {result['kill_attempts_after_3s']} (down {down_kill}) | "
        f"hang: att>det {result['hang_attempts_after_detection']} (down {down_hang}), "
        f"timeouts/hang {result['max_requests_paying_timeout_per_hang']} "
        f"(waited {result['max_requests_waiting_on_hung_backend_per_hang']}) | "
        f"healthy->in {rot['max'] if rot else '-'} s, ->1st att {first['median']}/{first['max']} s"
    )


def goals(results: list[dict[str, Any]]) -> list[str]:
    out = []
    for r in results:
        if not r["watchdog"]:
            continue
        tag = f"[{r['mode']}]"
        rot = r["healthy_to_rotation_in_s"] or {}
        checks = [
            ("crash: no attempt > 3 s after the kill", r["kill_attempts_after_3s"] == 0, r["kill_attempts_after_3s"]),
            (
                "hang: no attempt after detection",
                r["hang_attempts_after_detection"] == 0,
                r["hang_attempts_after_detection"],
            ),
            ("recovered: back in rotation <= 3 s", (rot.get("max") or 0) <= RECOVER_GOAL, rot.get("max")),
            (
                f"client errors {'0' if r['retries'] else '<= 0.5%'}",
                r["client_errors"] == 0 if r["retries"] else r["client_error_pct"] <= 0.5,
                f"{r['client_errors']} ({r['client_error_pct']}%)",
            ),
            (
                "<= 1 request pays a timeout per hang (10 s timeout / waited >= 1 s on the hung backend)",
                max(
                    r["max_requests_paying_timeout_per_hang"] or 0,
                    r["max_requests_waiting_on_hung_backend_per_hang"] or 0,
                )
                <= 1,
                f"{r['max_requests_paying_timeout_per_hang']} / {r['max_requests_waiting_on_hung_backend_per_hang']}",
            ),
        ]
        out += [f"{tag} {what}: {'met' if ok else 'NOT met'} ({value})" for what, ok, value in checks]
    return out


def interrupted(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM as Ctrl-C: the runs' finally blocks clean up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--watchdog", choices=("with", "without", "both"), default="both")
    parser.add_argument("--retries", choices=("on", "off", "both"), default="both")
    parser.add_argument("--minutes", type=float, default=5.5)
    args = parser.parse_args()
    client = docker.from_env(timeout=120)
    signal.signal(signal.SIGTERM, interrupted)
    results: list[dict[str, Any]] = []
    retries = {"on": [True], "off": [False], "both": [True, False]}[args.retries]
    watchdogs = {"with": [True], "without": [False], "both": [True, False]}[args.watchdog]
    for retry in retries:
        paired: dict[str, Any] | None = None
        for wd in watchdogs:  # with first: its journal gives the heal delays of the run without
            result = execute(client, wd, retry, args.minutes, heal_delays(paired))
            results.append(result)
            paired = result if wd else paired
            print(line(result), flush=True)
            save("litellm_failover", {"litellm": litellm_version(), "runs": results, "goals": goals(results)})
    print()
    for result in results:
        print(line(result))
    for text in goals(results):
        print(text)
    print("saved", save("litellm_failover", {"litellm": litellm_version(), "runs": results, "goals": goals(results)}))


def litellm_version() -> str:
    done = subprocess.run(
        [
            str(ROOT / ".venv-litellm" / "bin" / "python"),
            "-c",
            "import importlib.metadata as m; print(m.version('litellm'))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.stdout.strip() or "unknown"


if __name__ == "__main__":
    main()
