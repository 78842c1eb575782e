"""Serving faults behind the real LiteLLM proxy: what clients see, with and without the watchdog.

Setup per mode (everything fresh): 4 real llama.cpp servers (gpu-watchdog/llama-server:dev, the
tiny model, gpu-watchdog labels: model `tiny`, gpu 0-3, start-period 5 s as the tests give them;
no stop-timeout label, so Docker's 10 s) and a 5th backend of the same model, the stand-in
(gpu-watchdog/standin:dev, label server=llama.cpp), all on fixed 127.0.0.1 ports; the LiteLLM
config rendered by `gpu-watchdog litellm render` from litellm/config.template.yaml as shipped
(num_retries 2, deployment timeout 10 s); one real LiteLLM proxy as a host process.
- `--mode on`: the watchdog as a real daemon subprocess with its defaults (bench/common.py
  daemon_defaults: only the label prefix, state dir, LiteLLM paths with the router sync on, and a
  free HTTP port are set); it heals, the bench only injects.
- `--mode off`: LiteLLM alone, the same config without the watchdog's callback, no watchdog.
  Nobody heals, so the bench `docker restart`s a faulted llama-server
  25 s after its fault (after SIGCONT for the hang), to give each fault the same window; the wedge
  is left as it is until the end.

Load: 2 requests/s through the proxy (each in its own thread, max_tokens 8, client timeout 60 s),
bounded in count (rate x seconds) and time. Faults, one every 30 s from t=30 s:
docker-kill (b0, `docker kill`), sigstop-hang (b1, SIGSTOP of llama-server's host PID: the kernel
still accepts connections, nothing answers; SIGCONT at cleanup if the process is still there),
sigkill-crash (b2, SIGKILL of the host PID), wedge (the stand-in: POST /fault/wedge, completions
accepted and never answered, /health 200, counters frozen; 2 completions sent straight to it so it
has work waiting whatever LiteLLM routes). The run ends when the wedge's tail is over: 3 stall
windows + one progress interval (30 s) + 20 s after the wedge.

Per fault, from the requests sent in its window (from 1 s before it to 1 s before the next):
requests slower than 5 s, client errors (not a 200), and with the watchdog, from its journal and
the rotation file polled every 0.1 s: fault -> detected, -> out of rotation, -> restart issued,
-> restart done, -> back in rotation, -> first request answered by it again. Over the run: p50/p99
of every request's latency, restarts per container (a restart of a backend not faulted is false).
`--wedge-window S` sets the stand-in's stall-window label (default: none, so the daemon's
serving.stall_window, 30 s). Results: bench/results/serving_faults.json, one entry per mode (with
--wedge-window: "on-wedge-window-5s" and so on); a run replaces only its own entries.

Usage: .venv/bin/python bench/serving_faults.py [--mode on|off|both] [--wedge-window S]
       (about 5-6 minutes per mode)
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
from common import (
    BENCH_RUN_LABEL,
    RESULTS,
    ROOT,
    STANDIN_IMAGE,
    LoadSampler,
    WatchdogProcess,
    daemon_defaults,
    get_ok,
    host_pid,
    pct,
    process_start,
    proxy_chat,
    remove_containers,
    run_llama,
    save,
)

from tests.integration.harness import free_port
from tests.integration.harness import wait_for as wait_until

MODEL = "tiny"
LLAMAS = 4
WEDGE = LLAMAS  # index of the stand-in
FAULT_EVERY = 30.0
FAULTS = (("docker-kill", 0), ("sigstop-hang", 1), ("sigkill-crash", 2), ("wedge", WEDGE))
OFF_HEAL_AFTER = 25.0
RATE = 2.0
CLIENT_TIMEOUT = 60.0
SLOW = 5.0
START_PERIOD = "5"
DEFAULT_STALL_WINDOW = 30.0  # serving.stall_window's default
DEFAULT_PROGRESS_INTERVAL = 30.0  # serving.progress_interval's default
LITELLM = ROOT / ".venv-litellm" / "bin" / "litellm"
MASTER_KEY_FALLBACK = "sk-gpu-watchdog-change-me"
GOALS = {
    "slow_requests_per_hang": "<= 1",
    "slow_requests_per_kill": 0,
    "client_errors": 0,
    "p99_s": "<= 1",
    "hang_out_of_rotation_s": "~2",
    "hang_restart_issued_s_median": "<= 10",
    "wedge_out_of_rotation_s": "<= stall window + 2",
    "false_restarts": 0,
}


def rnd(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def first(entries: list[dict[str, Any]], kind: str, after: float) -> dict[str, Any] | None:
    """The first KIND entry at or after AFTER."""
    return next((e for e in entries if e["kind"] == kind and e["ts"] >= after), None)


class Run:
    def __init__(self, client: docker.DockerClient, watchdog: bool, wedge_window: float | None) -> None:
        self.client = client
        self.watchdog = watchdog
        self.wedge_window = wedge_window
        self.tag = uuid.uuid4().hex[:6]
        self.prefix = f"gwbf{self.tag}"
        self.work = Path(tempfile.mkdtemp(prefix=f"gwb-faults-{self.tag}-"))
        self.names = [f"{self.prefix}-b{i}" for i in range(LLAMAS)] + [f"{self.prefix}-wedge"]
        self.ports = {name: free_port() for name in self.names}
        self.proxy_port = free_port()
        self.out = self.work / "litellm" / "config.yaml"
        self.daemon = WatchdogProcess(
            self.work, daemon_defaults(self.prefix, self.work / "state", self.out, http_port=free_port())
        )
        self.proxy: subprocess.Popen[bytes] | None = None
        self.requests: list[dict[str, Any]] = []
        self.faults: list[dict[str, Any]] = []
        self.rotation_changes: list[dict[str, Any]] = []
        self.stopped: list[tuple[int, str | None]] = []  # (host PID, its start time) this run SIGSTOPped
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.window = wedge_window or DEFAULT_STALL_WINDOW
        self.wedge_tail = 3 * self.window + DEFAULT_PROGRESS_INTERVAL + 20
        self.seconds = FAULT_EVERY * len(FAULTS) + self.wedge_tail
        self.t0 = 0.0

    def deployment(self, index: int) -> str:
        return f"{self.names[index]}.gpu{index}"

    def url(self, name: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}{path}"

    def labels(self, index: int) -> dict[str, str]:
        p = self.prefix
        labels = {
            f"{p}.enable": "true",
            f"{p}.health-port": "8080",
            f"{p}.role": "chat",
            f"{p}.model": MODEL,
            f"{p}.gpu": str(index),
            f"{p}.start-period": START_PERIOD,
            BENCH_RUN_LABEL: self.tag,
        }
        if index == WEDGE:
            labels[f"{p}.server"] = "llama.cpp"
            if self.wedge_window is not None:
                labels[f"{p}.stall-window"] = f"{self.wedge_window:g}s"
        return labels

    def start_backends(self) -> None:
        for i in range(LLAMAS):
            run_llama(self.client, self.names[i], self.ports[self.names[i]], self.labels(i))
        wedge = self.names[WEDGE]
        self.client.containers.run(
            STANDIN_IMAGE,
            detach=True,
            name=wedge,
            labels=self.labels(WEDGE),
            environment={"LOAD_SECONDS": "0.5", "MODEL_NAME": MODEL},
            ports={"8080/tcp": ("127.0.0.1", self.ports[wedge])},
        )
        for name in self.names:
            wait_until(lambda n=name: get_ok(self.url(n, "/health")), 60, f"{name} healthy")

    def render(self) -> Path:
        done = self.daemon.cli("litellm", "render")
        if done.returncode != 0:
            raise RuntimeError(f"litellm render failed: {done.stderr or done.stdout}")
        config = yaml.safe_load(self.out.read_text())
        ids = sorted(m["model_info"]["id"] for m in config.get("model_list") or [])
        if ids != sorted(self.deployment(i) for i in range(len(self.names))):
            raise RuntimeError(f"rendered deployments {ids}")
        self.master_key = (config.get("general_settings") or {}).get("master_key") or MASTER_KEY_FALLBACK
        params = config["model_list"][0]["litellm_params"]
        self.settings = {
            "num_retries": (config.get("router_settings") or {}).get("num_retries"),
            "deployment_timeout_s": params.get("timeout"),
            "router_settings": config.get("router_settings"),
        }
        with contextlib.suppress(FileNotFoundError):
            (self.out.parent / "rotation.json").unlink()  # off: LiteLLM alone; on: the daemon writes it anew
        if not self.watchdog:
            # LiteLLM alone: without the watchdog's callback too (it ejects failing deployments on its own).
            settings = config.get("litellm_settings") or {}
            settings["callbacks"] = [c for c in settings.get("callbacks") or [] if "gpu_watchdog" not in str(c)]
            self.out.write_text(yaml.safe_dump(config, sort_keys=False))
        return self.out

    def start_proxy(self, config: Path) -> None:
        env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONUNBUFFERED": "1"}
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

        wait_until(up, 150, "the LiteLLM proxy")

    def rotation(self) -> dict[str, Any]:
        try:
            return dict(json.loads((self.out.parent / "rotation.json").read_text()))
        except (OSError, ValueError):
            return {}

    def start_watchdog(self) -> None:
        self.daemon.start()
        wait_until(lambda: len(self.rotation().get("in", [])) == len(self.names), 60, "every backend in rotation")

    # -- load and faults --------------------------------------------------------------------------------

    def request(self, http: httpx.Client, index: int) -> None:
        record = proxy_chat(http, self.proxy_port, self.master_key, MODEL, index)
        with self.lock:
            self.requests.append(record)

    def load(self, http: httpx.Client) -> list[threading.Thread]:
        threads = []
        for index in range(int(self.seconds * RATE)):  # bounded in count, and so in time
            time.sleep(max(0.0, self.t0 + index / RATE - time.time()))
            thread = threading.Thread(target=self.request, args=(http, index), daemon=True)
            thread.start()
            threads.append(thread)
        return threads

    def watch_rotation(self) -> None:
        last: list[str] | None = None
        while not self.stop.is_set():
            out = sorted(self.rotation().get("out", {}))
            if out != last:
                self.rotation_changes.append({"ts": time.time(), "out": out})
                last = out
            self.stop.wait(0.1)

    def inject(self, kind: str, index: int) -> None:
        name = self.names[index]
        time.sleep(max(0.0, self.t0 + FAULT_EVERY * (len(self.faults) + 1) - time.time()))
        record: dict[str, Any] = {"fault": kind, "container": name, "deployment": self.deployment(index)}
        if kind == "docker-kill":
            self.client.api.kill(name)
        elif kind == "sigstop-hang":
            pid = host_pid(self.client, name)
            self.stopped.append((pid, process_start(pid)))
            os.kill(pid, signal.SIGSTOP)
        elif kind == "sigkill-crash":
            os.kill(host_pid(self.client, name), signal.SIGKILL)
        else:
            httpx.post(self.url(name, "/fault/wedge"), timeout=2, trust_env=False).raise_for_status()
            for _ in range(2):  # work waiting on it, whatever LiteLLM routes there
                threading.Thread(target=self.direct_completion, args=(name,), daemon=True).start()
        record["ts"] = time.time()
        self.faults.append(record)
        if not self.watchdog and kind != "wedge":
            threading.Thread(target=self.heal_later, args=(record,), daemon=True).start()

    def direct_completion(self, name: str) -> None:
        with contextlib.suppress(httpx.HTTPError):
            httpx.post(
                self.url(name, "/v1/chat/completions"),
                json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8},
                timeout=self.wedge_tail,
                trust_env=False,
            )

    def heal_later(self, record: dict[str, Any]) -> None:
        """Without the watchdog: the bench restarts the faulted llama-server (off mode only)."""
        if self.stop.wait(max(0.0, record["ts"] + OFF_HEAL_AFTER - time.time())):
            return
        self.release_stopped()
        self.client.api.restart(record["container"], timeout=2)
        record["bench_restart_at"] = time.time()

    def release_stopped(self) -> None:
        """SIGCONT to each process this run stopped, if it is still that process."""
        for pid, born in self.stopped:
            if born is not None and process_start(pid) == born:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    def execute(self) -> dict[str, Any]:
        try:
            self.start_backends()
            self.start_proxy(self.render())
            if self.watchdog:
                self.start_watchdog()
            limits = httpx.Limits(max_connections=400, max_keepalive_connections=20)
            with httpx.Client(timeout=CLIENT_TIMEOUT, trust_env=False, limits=limits) as http:
                for i in range(2 * len(self.names)):  # warm-up, not counted
                    http.post(
                        f"http://127.0.0.1:{self.proxy_port}/v1/chat/completions",
                        headers={"Authorization": f"Bearer {self.master_key}"},
                        json={"model": MODEL, "messages": [{"role": "user", "content": f"warm {i}"}], "max_tokens": 4},
                    ).raise_for_status()
                sampler = LoadSampler().start()
                self.t0 = time.time() + 1
                helpers = [threading.Thread(target=self.watch_rotation, daemon=True)]
                injector = threading.Thread(
                    target=lambda: [self.inject(kind, index) for kind, index in FAULTS], daemon=True
                )
                helpers.append(injector)
                for helper in helpers:
                    helper.start()
                threads = self.load(http)
                deadline = time.time() + CLIENT_TIMEOUT + 5
                for thread in threads:
                    thread.join(max(0.1, deadline - time.time()))
                self.t_end = time.time()
                self.stop.set()
                for helper in helpers:
                    helper.join(15)
                machine = sampler.stop()
            time.sleep(1.0)
            entries, actions = self.daemon.journal(since=self.t0 - 120)
            return self.analyse(entries, actions, machine)
        finally:
            self.stop.set()
            self.release_stopped()
            self.daemon.stop()
            self.stop_proxy()
            remove_containers(self.client, self.names)

    def stop_proxy(self) -> None:
        if self.proxy is None or self.proxy.poll() is not None:
            return
        self.proxy.send_signal(signal.SIGTERM)
        try:
            self.proxy.wait(30)
        except subprocess.TimeoutExpired:
            self.proxy.kill()
            self.proxy.wait(5)

    # -- analysis ---------------------------------------------------------------------------------------

    def analyse(
        self, entries: list[dict[str, Any]], actions: list[dict[str, Any]], machine: dict[str, Any]
    ) -> dict[str, Any]:
        records = sorted(self.requests, key=lambda r: r["i"])
        latencies = [r["seconds"] for r in records]
        faults = sorted(self.faults, key=lambda f: f["ts"])
        rows = []
        for n, fault in enumerate(faults):
            f_ts, name = fault["ts"], fault["container"]
            until = faults[n + 1]["ts"] - 1 if n + 1 < len(faults) else self.t_end
            window = [r for r in records if f_ts - 1 <= r["start"] < until]
            row: dict[str, Any] = {
                "fault": fault["fault"],
                "container": name,
                "at_s": rnd(f_ts - self.t0),
                "requests": len(window),
                "slower_than_5s": sum(1 for r in window if r["seconds"] > SLOW),
                "client_errors": sum(1 for r in window if r["status"] != 200),
                "error_samples": sorted({str(r.get("error"))[:160] for r in window if r["status"] != 200})[:3],
                "answered_by_faulted": sum(
                    1 for r in window if r["status"] == 200 and r.get("deployment") == fault["deployment"]
                ),
                "window_max_s": rnd(max((r["seconds"] for r in window), default=None)),
            }
            if "bench_restart_at" in fault:
                row["bench_restart_after_s"] = rnd(fault["bench_restart_at"] - f_ts)
            if self.watchdog:
                mine = [e for e in entries if e["container"] == name and e["ts"] >= f_ts - 0.2]
                detected, out = first(mine, "detected", f_ts - 0.2), first(mine, "rotation-out", f_ts - 0.2)
                restart = next((a for a in actions if a["container"] == name and a["started_at"] >= f_ts - 0.2), None)
                back = first(mine, "rotation-in", out["ts"]) if out else None
                file_out = next(
                    (c["ts"] for c in self.rotation_changes if c["ts"] >= f_ts and fault["deployment"] in c["out"]),
                    None,
                )
                served = next(
                    (
                        r["end"]
                        for r in records
                        if back
                        and r["start"] > back["ts"]
                        and r["status"] == 200
                        and r.get("deployment") == fault["deployment"]
                    ),
                    None,
                )
                row.update(
                    {
                        "detected_after_s": rnd(detected["ts"] - f_ts if detected else None),
                        "detected_fault": detected["fault"] if detected else None,
                        "detected_reason": (detected["reason"] or "")[:240] if detected else None,
                        "out_of_rotation_after_s": rnd(out["ts"] - f_ts if out else None),
                        "out_of_rotation_reason": (out["reason"] or "")[:200] if out else None,
                        "rotation_file_out_after_s": rnd(file_out - f_ts if file_out else None),
                        "restart_issued_after_s": rnd(restart["started_at"] - f_ts if restart else None),
                        "restart_took_s": rnd(
                            restart["finished_at"] - restart["started_at"]
                            if restart and restart["finished_at"]
                            else None
                        ),
                        "restart_outcome": restart["outcome"] if restart else None,
                        "back_in_rotation_after_s": rnd(back["ts"] - f_ts if back else None),
                        "served_again_after_s": rnd(served - f_ts if served else None),
                    }
                )
                if fault["fault"] == "wedge":
                    row["stall_window_s"] = self.window
                    row["goal_out_within_s"] = self.window + 2
            rows.append(row)
        faulted = {f["container"] for f in faults}
        restarts: dict[str, int] = {}
        for action in actions:
            restarts[action["container"]] = restarts.get(action["container"], 0) + 1
        return {
            "mode": "on" if self.watchdog else "off",
            "settings": {
                "llama_servers": LLAMAS,
                "standin_backends": 1,
                "model": MODEL,
                "rate_per_s": RATE,
                "seconds": rnd(self.seconds, 1),
                "max_tokens": 8,
                "client_timeout_s": CLIENT_TIMEOUT,
                "fault_every_s": FAULT_EVERY,
                "start_period_label_s": float(START_PERIOD),
                "stall_window_s": self.window,
                "wedge_window_option": self.wedge_window,
                "off_mode_bench_restart_after_s": None if self.watchdog else OFF_HEAL_AFTER,
                "watchdog_config": self.daemon.config_path.read_text() if self.watchdog else None,
                "litellm": self.settings,
            },
            "machine_load": machine,
            "requests": len(records),
            "answered": sum(1 for r in records if r["status"] == 200),
            "client_errors": sum(1 for r in records if r["status"] != 200),
            "slower_than_5s": sum(1 for r in records if r["seconds"] > SLOW),
            "p50_s": rnd(pct(latencies, 0.50), 3),
            "p99_s": rnd(pct(latencies, 0.99), 3),
            "max_s": rnd(max(latencies, default=0.0), 3),
            "faults": rows,
            "restarts_per_container": restarts,
            "false_restarts": sum(n for c, n in restarts.items() if c not in faulted),
            "journal": [
                {
                    "t_s": rnd(e["ts"] - self.t0),
                    "kind": e["kind"],
                    "container": e["container"],
                    "reason": (e["reason"] or "")[:160],
                }
                for e in entries
                if e["ts"] >= self.t0 - 5
            ],
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("on", "off", "both"), default="both")
    parser.add_argument("--wedge-window", type=float, default=None, help="the stand-in's stall-window label, s")
    args = parser.parse_args()
    if args.wedge_window is not None and not 1 <= args.wedge_window <= 120:
        parser.error("--wedge-window must be 1-120 s")
    if not (ROOT / ".venv-litellm" / "bin" / "litellm").exists():
        parser.error("no LiteLLM proxy in .venv-litellm: run `make litellm-proxy`")
    client = docker.from_env(timeout=120)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    path = RESULTS / "serving_faults.json"
    modes: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        modes = dict(json.loads(path.read_text()).get("modes") or {})
    for mode in ("on", "off") if args.mode == "both" else (args.mode,):
        result = Run(client, mode == "on", args.wedge_window).execute()
        key = mode if args.wedge_window is None else f"{mode}-wedge-window-{args.wedge_window:g}s"
        modes[key] = {"measured_at": time.strftime("%Y-%m-%d %H:%M:%S"), "commit": commit.stdout.strip(), **result}
        save("serving_faults", {"description": __doc__.splitlines()[0], "goals": GOALS, "modes": modes})
        summary = {k: v for k, v in result.items() if k not in ("journal", "settings")}
        print(json.dumps(summary, indent=2), flush=True)


if __name__ == "__main__":
    main()
