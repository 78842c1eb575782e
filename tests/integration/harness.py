"""Test harness: real stand-in containers on the real engine, the real daemon as a subprocess.

Everything reaches containers through ports published on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import httpx
import yaml

from watchdog.journal import Journal

ROOT = Path(__file__).resolve().parents[2]
STANDIN_IMAGE = "gpu-watchdog/standin:dev"
LLAMA_IMAGE = "gpu-watchdog/llama-server:dev"  # the real llama.cpp server (scripts/ensure-llama-server.sh)
RUN_LABEL = "gpu-watchdog-test.run"
RUN_ID = uuid.uuid4().hex[:8]

# Fast settings so each scenario takes seconds: same logic, shorter clocks.
FAST_CONFIG: dict[str, Any] = {
    "poll_interval": 1,
    "probe_timeout": 1,
    "failure_threshold": 3,
    "default_start_period": 5,
    "stop_settle": 0.3,
    "log_level": "DEBUG",
    "log_format": "json",
    "http": "off",  # tests run several daemons at once; the metrics test gives its own port
    "breaker": {"max_restarts": 3, "window": 120, "backoff_initial": 1, "backoff_max": 2, "cooldown": 600},
}


def free_port() -> int:
    """A port nothing listens on now (the kernel picks; a tiny race is acceptable in tests)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def end_process(proc: subprocess.Popen[bytes] | None, timeout: float = 5) -> None:
    """SIGTERM a child this test started, then SIGKILL after `timeout`; a finished one is left alone."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def ok_restarts(daemon: Daemon, name: str) -> list[Any]:
    """The restarts of NAME whose call succeeded."""
    return [a for a in daemon.restarts(name) if a.outcome == "ok"]


def started_at(fleet: Fleet, name: str) -> str:
    """The engine's StartedAt: it changes when the container really was (re)started."""
    return str(fleet.state(name)["StartedAt"])


class Fleet:
    """Stand-in inference containers created for one test, removed after it."""

    def __init__(self, client: docker.DockerClient, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self.names: list[str] = []

    def labels(self, **extra: str) -> dict[str, str]:
        base = {f"{self.prefix}.enable": "true", RUN_LABEL: RUN_ID}
        base.update({f"{self.prefix}.{k.replace('_', '-')}": v for k, v in extra.items()})
        return base

    def start(
        self,
        name: str,
        *,
        labels: dict[str, str] | None = None,
        env: dict[str, str] | None = None,
        healthcheck: dict[str, Any] | None = None,
        restart_policy: str | None = None,
        endpoint: bool = True,
        host_port: int | None = None,
        stop_signal: str | None = None,
        image: str = STANDIN_IMAGE,
        run_options: dict[str, Any] | None = None,
        **label_values: str,
    ) -> Any:
        full = f"gwt-{RUN_ID}-{name}"
        all_labels = labels if labels is not None else self.labels(**label_values)
        if labels is None and endpoint:
            all_labels.setdefault(f"{self.prefix}.health-port", "8080")
        all_labels[RUN_LABEL] = RUN_ID
        container = self.client.containers.run(
            image,
            detach=True,
            name=full,
            labels=all_labels,
            environment={"LOAD_SECONDS": "0.5", "MODEL_NAME": name, **(env or {})},
            # A fixed host port survives `docker restart` (an ephemeral one may not): the router needs that.
            ports={"8080/tcp": ("127.0.0.1", host_port)},
            healthcheck=healthcheck,
            restart_policy={"Name": restart_policy} if restart_policy else None,
            stop_signal=stop_signal,
            **(run_options or {}),  # e.g. command (arguments after the image), volumes, nano_cpus
        )
        self.names.append(full)
        return container

    def get(self, name: str) -> Any:
        return self.client.containers.get(name if name.startswith("gwt-") else f"gwt-{RUN_ID}-{name}")

    def url(self, name: str, path: str) -> str:
        container = self.get(name)
        binding = container.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]
        return f"http://127.0.0.1:{binding['HostPort']}{path}"

    def fault(self, name: str, fault: str) -> None:
        httpx.post(self.url(name, f"/fault/{fault}"), timeout=2, trust_env=False)

    def wait_ready(self, name: str, timeout: float = 15) -> None:
        def ready() -> bool:
            try:
                return httpx.get(self.url(name, "/health"), timeout=1, trust_env=False).status_code == 200
            except (httpx.HTTPError, KeyError, IndexError, TypeError):
                return False

        wait_for(ready, timeout, f"{name} to answer /health")

    def state(self, name: str) -> dict[str, Any]:
        return dict(self.get(name).attrs["State"])

    def remove_all(self) -> None:
        for container in self.client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={RUN_ID}"}):
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)


class Daemon:
    """`python -m watchdog --daemon` with its own config and state dir."""

    def __init__(self, workdir: Path, prefix: str, env: dict[str, str] | None = None, **overrides: Any) -> None:
        self.workdir = workdir
        self.extra_env = env or {}
        self.state_dir = workdir / "state"
        self.config_path = workdir / "config.yaml"
        config = json.loads(json.dumps(FAST_CONFIG))
        config["label_prefix"] = prefix
        config["state_dir"] = str(self.state_dir)
        for key, value in overrides.items():
            if isinstance(value, dict):
                config.setdefault(key, {}).update(value)
            else:
                config[key] = value
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    def cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "watchdog", "--config", str(self.config_path), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**_env(), **self.extra_env},
        )

    def start(self) -> Daemon:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "watchdog", "--config", str(self.config_path), "--daemon"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**_env(), **self.extra_env},
        )
        wait_for(lambda: "healing loop running" in self.log() or self.proc.poll() is not None, 20, "daemon start")
        assert self.proc.poll() is None, f"daemon exited early:\n{self.log()}"
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        code = self.proc.returncode
        self.proc = None
        if self._log:
            self._log.close()
        return code

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def journal(self) -> Journal:
        return Journal.in_dir(self.state_dir)

    def entries(self, kind: str | None = None, container: str | None = None) -> list[dict[str, Any]]:
        if not (self.state_dir / "journal.sqlite3").exists():
            return []
        journal = self.journal()
        try:
            return journal.entries(kind=kind, container=container)
        finally:
            journal.close()

    def restarts(self, container: str) -> list[Any]:
        if not (self.state_dir / "journal.sqlite3").exists():
            return []
        journal = self.journal()
        try:
            return [a for a in journal.actions(container=container) if a.kind == "restart"]
        finally:
            journal.close()


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("GPU_WATCHDOG_CONFIG", None)
    env.pop("GPU_WATCHDOG_STATE_DIR", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env
