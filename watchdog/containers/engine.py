"""Observe the engine: managed containers as ContainerSnapshots.

One `GET /containers/json` per cycle (filtered by the enable label); a
container is inspected again only when its state or health in that list
changes, an event names it, or its cached inspect is older than a minute.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions

from watchdog.containers.labels import gpus_from_engine, parse_spec, unknown_labels
from watchdog.model import ContainerSnapshot, ContainerState, Health
from watchdog.units import parse_signal

INSPECT_MAX_AGE = 60.0  # at most; each container's own age is 30-60 s, so a fleet is not re-inspected in one cycle
_ID_RE = re.compile(r"[0-9a-f]{64}")
_HEALTH_IN_STATUS = re.compile(r"\((healthy|unhealthy|health: starting)\)")

# What the engine may raise when it is down, restarting or slow.
ENGINE_ERRORS: tuple[type[BaseException], ...] = (
    docker.errors.DockerException,
    requests.exceptions.RequestException,
    ConnectionError,
    OSError,
)


def inspect_max_age(container_id: str) -> float:
    """30-60 s, fixed per container: 256 inspects all due in one cycle made it 8x slower than the median."""
    try:
        spread = int(container_id[:8], 16) / 0xFFFFFFFF
    except ValueError:
        spread = 1.0
    return INSPECT_MAX_AGE * (0.5 + 0.5 * spread)


class EngineUnavailable(RuntimeError):
    """The Docker engine did not answer; the loop retries with backoff."""


def parse_docker_time(text: str | None) -> float | None:
    """Docker's RFC 3339 nanosecond timestamps; its zero time means 'never'."""
    if not text or text.startswith("0001-01-01"):
        return None
    match = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", text)
    if not match:
        return None
    base, frac, zone = match.groups()
    stamp = datetime.fromisoformat(base + ("+00:00" if zone == "Z" else zone))
    return stamp.timestamp() + (float(frac) if frac else 0.0)


def own_container_ids(proc: Path = Path("/proc/self")) -> frozenset[str]:
    """IDs the watchdog's own container may have (cgroup v1 paths, mountinfo on v2)."""
    found: set[str] = set()
    for name in ("cgroup", "mountinfo"):
        try:
            text = (proc / name).read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if "docker" in line or "containers" in line:
                found.update(_ID_RE.findall(line))
    return frozenset(found)


def _is_self(container_id: str, self_ids: frozenset[str], hostname: str | None) -> bool:
    if container_id in self_ids:
        return True
    # In a container, HOSTNAME defaults to the first 12 characters of its ID.
    return bool(hostname) and len(hostname or "") >= 12 and container_id.startswith(hostname or "-")


def _endpoint(attrs: dict[str, Any], port: int | None, path: str, url: str | None) -> str | None:
    """Where to probe: the label URL, else the published port on this host, else the container IP."""
    if url:
        return url
    if port is None:
        return None
    settings = attrs.get("NetworkSettings") or {}
    bindings = (settings.get("Ports") or {}).get(f"{port}/tcp") or []
    for binding in bindings:
        host_ip = binding.get("HostIp") or "127.0.0.1"
        if host_ip in ("0.0.0.0", "::", ""):
            host_ip = "127.0.0.1"
        if ":" in host_ip:
            host_ip = f"[{host_ip}]"
        if binding.get("HostPort"):
            return f"http://{host_ip}:{binding['HostPort']}{path}"
    if (attrs.get("HostConfig") or {}).get("NetworkMode") == "host":
        return f"http://127.0.0.1:{port}{path}"
    for network in (settings.get("Networks") or {}).values():
        if network.get("IPAddress"):
            return f"http://{network['IPAddress']}:{port}{path}"
    return None


def snapshot_from_inspect(attrs: dict[str, Any], prefix: str, is_self: bool = False) -> ContainerSnapshot:
    """Pure: one inspect document to a snapshot (labels parsed, GPUs and endpoint resolved)."""
    config = attrs.get("Config") or {}
    state = attrs.get("State") or {}
    host = attrs.get("HostConfig") or {}
    labels = config.get("Labels") or {}
    spec, problems = parse_spec(labels, prefix)
    health = Health.parse((state.get("Health") or {}).get("Status"))
    healthcheck = config.get("Healthcheck") or {}
    start_period_ns = healthcheck.get("StartPeriod") or 0
    gpus: tuple[str, ...] = (
        spec.gpus if spec and spec.gpus else gpus_from_engine(host.get("DeviceRequests"), config.get("Env"))
    )
    endpoint = _endpoint(attrs, spec.health_port, spec.health_path, spec.health_url) if spec else None
    stop_timeout = config.get("StopTimeout")
    return ContainerSnapshot(
        id=attrs["Id"],
        name=str(attrs.get("Name") or attrs["Id"][:12]).lstrip("/"),
        state=ContainerState.parse(state.get("Status") or "unknown"),
        health=health,
        spec=spec,
        problems=problems,
        warnings=unknown_labels(labels, prefix),
        exit_code=state.get("ExitCode"),
        oom_killed=bool(state.get("OOMKilled")),
        started_at=parse_docker_time(state.get("StartedAt")),
        finished_at=parse_docker_time(state.get("FinishedAt")),
        memory_limit=int(host.get("Memory") or 0),
        memory_swap=int(host.get("MemorySwap") or 0),
        healthcheck_start_period=start_period_ns / 1e9 if start_period_ns else None,
        stop_timeout=float(stop_timeout) if stop_timeout is not None else None,
        stop_signal=parse_signal(config.get("StopSignal")),
        endpoint=endpoint,
        gpus=gpus,
        restart_policy=str((host.get("RestartPolicy") or {}).get("Name") or "no"),
        is_self=is_self,
        compose_project=labels.get("com.docker.compose.project"),
        compose_service=labels.get("com.docker.compose.service"),
    )


class DockerProbe:
    """Reads the managed containers from the engine, caching inspects between changes."""

    def __init__(
        self,
        client: docker.DockerClient,
        prefix: str,
        self_ids: frozenset[str] | None = None,
        hostname: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.self_ids = own_container_ids() if self_ids is None else self_ids
        self.hostname = os.environ.get("HOSTNAME") if hostname is None else hostname
        self._clock = clock
        self._cache: dict[str, tuple[tuple[str, str], float, ContainerSnapshot]] = {}
        self._lock = threading.Lock()

    def invalidate(self, container_ids: Iterable[str] | None = None) -> None:
        with self._lock:
            if container_ids is None:
                self._cache.clear()
            else:
                for container_id in container_ids:
                    self._cache.pop(container_id, None)

    def snapshot(self) -> list[ContainerSnapshot]:
        """Every container carrying the enable label, managed or not (misconfigured ones too)."""
        try:
            listed = self.client.api.containers(all=True, filters={"label": f"{self.prefix}.enable"})
        except ENGINE_ERRORS as exc:
            raise EngineUnavailable(str(exc)) from exc
        now = self._clock()
        result: list[ContainerSnapshot] = []
        seen: set[str] = set()
        for item in listed:
            container_id = item["Id"]
            seen.add(container_id)
            status = str(item.get("Status") or "")
            health_match = _HEALTH_IN_STATUS.search(status)
            key = (str(item.get("State") or ""), health_match.group(1) if health_match else "")
            with self._lock:
                cached = self._cache.get(container_id)
            if cached and cached[0] == key and now - cached[1] < inspect_max_age(container_id):
                result.append(cached[2])
                continue
            try:
                attrs = self.client.api.inspect_container(container_id)
            except docker.errors.NotFound:
                continue  # removed between the list and the inspect
            except ENGINE_ERRORS as exc:
                raise EngineUnavailable(str(exc)) from exc
            snap = snapshot_from_inspect(attrs, self.prefix, _is_self(container_id, self.self_ids, self.hostname))
            with self._lock:
                self._cache[container_id] = (key, now, snap)
            result.append(snap)
        with self._lock:
            for gone in set(self._cache) - seen:
                del self._cache[gone]
        return result

    def inspect(self, container: str) -> ContainerSnapshot | None:
        """One container by ID or name (for reconciliation and the CLI), or None if gone."""
        try:
            attrs = self.client.api.inspect_container(container)
        except docker.errors.NotFound:
            return None
        except ENGINE_ERRORS as exc:
            raise EngineUnavailable(str(exc)) from exc
        return snapshot_from_inspect(attrs, self.prefix, _is_self(attrs["Id"], self.self_ids, self.hostname))
