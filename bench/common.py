"""Shared bits of the benchmark scripts: a fleet on the real engine, result files, statistics."""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402
import httpx  # noqa: E402

from tests.integration.harness import Fleet  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def new_fleet() -> Fleet:
    client = docker.from_env(timeout=120)
    return Fleet(client, f"gwb{uuid.uuid4().hex[:6]}")


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "median": statistics.median(ordered),
        "p95": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))],
        "min": ordered[0],
        "max": ordered[-1],
    }


def save(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{platform.node()} {platform.machine()}",
        **data,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2))
    return path


def ms(value: float) -> str:
    return f"{value * 1000:.1f} ms"


def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..1); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def get_ok(url: str, timeout: float = 0.5) -> bool:
    """True when url answers 200 in time (loopback only, no proxy from the environment)."""
    try:
        return httpx.get(url, timeout=timeout, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


# -- the real daemon, real llama.cpp servers (bench/serving_faults.py, bench/saturation.py) ------------------

WATCHDOG_PY = ROOT / ".venv" / "bin" / "python"
LITELLM_TEMPLATE = ROOT / "litellm" / "config.template.yaml"
LLAMA_IMAGE = "gpu-watchdog/llama-server:dev"
STANDIN_IMAGE = "gpu-watchdog/standin:dev"
BENCH_RUN_LABEL = "gpu-watchdog-bench.run"


def proxy_chat(http: httpx.Client, port: int, master_key: str, model: str, index: int) -> dict[str, Any]:
    """One 8-token chat completion through the LiteLLM proxy on 127.0.0.1:`port`, as a record.

    status (None: no answer), the deployment that answered and LiteLLM's retries (its response
    headers), the error text of a failure, and start, end and seconds (wall clock).
    """
    record: dict[str, Any] = {"i": index, "start": time.time()}
    try:
        response = http.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            headers={"Authorization": f"Bearer {master_key}"},
            json={"model": model, "messages": [{"role": "user", "content": f"hi {index}"}], "max_tokens": 8},
        )
        record["status"] = response.status_code
        record["deployment"] = response.headers.get("x-litellm-model-id")
        record["retries"] = int(response.headers.get("x-litellm-attempted-retries") or 0)
        if response.status_code != 200:
            record["error"] = response.text[:200]
    except httpx.HTTPError as exc:
        record["status"] = None
        record["error"] = f"{type(exc).__name__}: {exc}"[:200]
    record["end"] = time.time()
    record["seconds"] = record["end"] - record["start"]
    return record


def daemon_defaults(
    prefix: str, state_dir: Path, litellm_out: Path | None = None, http_port: int | None = None
) -> dict[str, Any]:
    """The daemon's config defaults (watchdog/config/model.py), except what a bench must set.

    Set: the label prefix (this run's containers only), the state dir (a fresh journal), the LiteLLM
    template and output paths (the router sync on, when litellm_out is given) and the HTTP port (the
    default's interface, 127.0.0.1, on a free port: the default port may be taken by another daemon).
    Every timing (poll, probe interval and timeout, failure threshold, serving.*) is the default.
    """
    config: dict[str, Any] = {"label_prefix": prefix, "state_dir": str(state_dir)}
    if http_port is not None:
        config["http"] = f"127.0.0.1:{http_port}"
    if litellm_out is not None:
        config["litellm"] = {"enabled": True, "template": str(LITELLM_TEMPLATE), "out": str(litellm_out)}
    return config


class WatchdogProcess:
    """`python -m watchdog --config FILE --daemon` as a subprocess; stopped by its own PID."""

    def __init__(self, workdir: Path, config: dict[str, Any], env: dict[str, str] | None = None) -> None:
        import yaml

        self.workdir = workdir
        self.env = env or {}  # e.g. the fake NVML driver's (tests/fake_nvml/harness.environment)
        self.config_path = workdir / "watchdog.yaml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.state_dir = Path(config["state_dir"])
        self.log_path = workdir / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(WATCHDOG_PY), "-m", "watchdog", "--config", str(self.config_path), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
        )

    def start(self, timeout: float = 30) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GPU_WATCHDOG_")}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(WATCHDOG_PY), "-m", "watchdog", "--config", str(self.config_path), "--daemon"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**env, **self.env, "PYTHONUNBUFFERED": "1"},
                cwd=ROOT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the daemon exited: {self.log()[-3000:]}")
            if "healing loop running" in self.log():
                return
            time.sleep(0.2)
        raise RuntimeError(f"the daemon did not start in {timeout} s: {self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def journal(self, since: float = 0.0) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(entries, restart actions) since SINCE; empty when the daemon never wrote a journal."""
        from watchdog.journal import Journal

        if not (self.state_dir / "journal.sqlite3").exists():
            return [], []
        journal = Journal.in_dir(self.state_dir)
        try:
            entries = journal.entries(since=since)
            actions = [
                {
                    "container": a.container,
                    "fault": a.fault,
                    "reason": a.reason,
                    "started_at": a.started_at,
                    "finished_at": a.finished_at,
                    "outcome": a.outcome,
                }
                for a in journal.actions(since=since)
                if a.kind == "restart" and not a.dry_run
            ]
        finally:
            journal.close()
        return entries, actions


class LoadSampler:
    """The machine's 1-minute load average every `every` seconds, on a thread, until stop()."""

    def __init__(self, every: float = 5.0) -> None:
        self.every = every
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> LoadSampler:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop.wait(self.every)

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join(self.every + 1)
        return {
            "cpus": os.cpu_count(),
            "loadavg_1m_median": round(statistics.median(self.samples), 2) if self.samples else None,
            "loadavg_1m_max": round(max(self.samples), 2) if self.samples else None,
            "samples": len(self.samples),
        }


def host_pid(client: docker.DockerClient, name: str) -> int:
    """The container's PID 1 on the host (llama-server itself in gpu-watchdog/llama-server:dev)."""
    return int(client.api.inspect_container(name)["State"]["Pid"])


def process_start(pid: int) -> str | None:
    """/proc/PID/stat's start time: tells a PID from a later process that reused it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def run_llama(
    client: docker.DockerClient,
    name: str,
    port: int,
    labels: dict[str, str],
    args: list[str] | None = None,
    models: Path | None = None,
) -> None:
    """A real llama-server on 127.0.0.1:PORT; ARGS are appended to the image's (-m tiny, --metrics, --slots)."""
    options: dict[str, Any] = {}
    if models is not None:
        options["volumes"] = {str(models): {"bind": "/models/extra", "mode": "ro"}}
    client.containers.run(
        LLAMA_IMAGE,
        command=args or [],
        detach=True,
        name=name,
        labels=labels,
        ports={"8080/tcp": ("127.0.0.1", port)},
        **options,
    )


def remove_containers(client: docker.DockerClient, names: list[str]) -> None:
    """Remove the containers this run started, by name."""
    for name in names:
        with contextlib.suppress(docker.errors.APIError):
            client.api.remove_container(name, force=True)
