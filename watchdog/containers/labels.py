"""Read a container's `gpu-watchdog.*` labels into a ContainerSpec.

Pure. A label with a bad value makes the whole container misconfigured: the
caller shows the problem (label, value, fix) and never acts on that container.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

from watchdog.model import ContainerSpec
from watchdog.units import parse_bool, parse_bytes, parse_duration

# Every label the watchdog reads, after the prefix; anything else under the
# prefix is reported, since a typo there would silently change nothing.
KNOWN_LABELS = (
    "enable",
    "priority",
    "gpu",
    "health-url",
    "health-port",
    "health-path",
    "start-period",
    "stop-timeout",
    "max-restarts",
    "role",
    "model",
    "model-size",
    "api-base",
    "server",
    "stall-window",
    "canary",
    "fallback",
    "drain-timeout",
)
SERVER_KINDS = ("llama.cpp", "vllm", "openai")


def unknown_labels(labels: Mapping[str, str], prefix: str) -> tuple[str, ...]:
    """Warnings for labels under the prefix that the watchdog does not read (likely typos)."""
    known = ", ".join(f"{prefix}.{k}" for k in KNOWN_LABELS)
    return tuple(
        f"label {key} is not a gpu-watchdog label and is ignored; known: {known}"
        for key in sorted(labels)
        if key.startswith(f"{prefix}.") and key[len(prefix) + 1 :] not in KNOWN_LABELS
    )


def parse_spec(labels: Mapping[str, str], prefix: str) -> tuple[ContainerSpec | None, tuple[str, ...]]:
    """Spec and problems. (None, ()) means not managed; (None, problems) misconfigured."""
    key = f"{prefix}.enable"
    raw_enable = labels.get(key)
    if raw_enable is None:
        return None, ()
    try:
        enabled = parse_bool(raw_enable)
    except ValueError as exc:
        return None, (f"label {key}={raw_enable!r}: {exc}; set it to true or false",)
    if not enabled:
        return None, ()

    problems: list[str] = []

    def label(name: str) -> str | None:
        return labels.get(f"{prefix}.{name}")

    def bad(name: str, value: str, fix: str) -> None:
        problems.append(f"label {prefix}.{name}={value!r}: {fix}")

    priority = 0
    if (raw := label("priority")) is not None:
        try:
            priority = int(raw.strip())
        except ValueError:
            bad("priority", raw, "expected an integer (higher is restarted first), e.g. 10")

    gpus: tuple[str, ...] = ()
    if (raw := label("gpu")) is not None:
        gpus = tuple(part.strip() for part in raw.split(",") if part.strip())
        if not gpus:
            bad("gpu", raw, "expected GPU indices or UUIDs, comma-separated, e.g. 0 or GPU-1a2b...")

    health_url = label("health-url")
    if health_url is not None:
        try:
            parsed = urlparse(health_url.strip())
            _ = parsed.port  # raises ValueError for a port out of range
            valid = parsed.scheme in ("http", "https") and bool(parsed.hostname)
        except ValueError:  # e.g. an unclosed IPv6 bracket, a port out of range
            valid = False
        if not valid:
            bad("health-url", health_url, "expected a full URL such as http://127.0.0.1:8080/health")
            health_url = None
        else:
            health_url = health_url.strip()

    api_base = label("api-base")
    if api_base is not None:
        api_base = api_base.strip()
        if not _is_http_url(api_base):
            bad("api-base", api_base, "expected the URL LiteLLM should call, e.g. http://llm-0:8080/v1")
            api_base = None

    health_port: int | None = None
    if (raw := label("health-port")) is not None:
        try:
            health_port = int(raw.strip())
            if not 1 <= health_port <= 65535:
                raise ValueError
        except ValueError:
            bad("health-port", raw, "expected the container port 1-65535 the server listens on, e.g. 8080")
            health_port = None

    health_path = label("health-path") or "/health"
    if not health_path.startswith("/"):
        bad("health-path", health_path, "expected a path starting with /, e.g. /health")

    def duration(name: str) -> float | None:
        raw_value = label(name)
        if raw_value is None:
            return None
        try:
            return parse_duration(raw_value)
        except ValueError as exc:
            bad(name, raw_value, str(exc))
            return None

    start_period = duration("start-period")
    stop_timeout = duration("stop-timeout")
    stall_window = duration("stall-window")
    drain_timeout = duration("drain-timeout")
    if drain_timeout is not None and drain_timeout <= 0:
        bad("drain-timeout", label("drain-timeout") or "", "expected a duration > 0 such as 60s or 2m")
    if stall_window is not None and stall_window <= 0:
        bad("stall-window", label("stall-window") or "", "expected a duration > 0 such as 30s or 2m")

    canary_interval: float | None = None
    if (raw := label("canary")) is not None:
        if raw.strip().lower() in ("off", "false", "no", "0"):
            canary_interval = 0.0
        else:
            canary_interval = duration("canary")
            if canary_interval is not None and canary_interval <= 0:
                bad("canary", raw, "expected a duration > 0 such as 5m, or off")

    server = label("server")
    if server is not None:
        server = server.strip().lower()
        if server not in SERVER_KINDS:
            bad("server", server, f"expected one of {', '.join(SERVER_KINDS)} (or no label: detected from /metrics)")

    max_restarts: int | None = None
    if (raw := label("max-restarts")) is not None:
        try:
            max_restarts = int(raw.strip())
            if max_restarts < 1:
                raise ValueError
        except ValueError:
            bad("max-restarts", raw, "expected a whole number >= 1 of restarts per breaker window")
            max_restarts = None

    model_size: int | None = None
    if (raw := label("model-size")) is not None:
        try:
            model_size = parse_bytes(raw)
        except ValueError as exc:
            bad("model-size", raw, str(exc))

    fallback: tuple[str, ...] = ()
    if (raw := label("fallback")) is not None:
        fallback = tuple(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))
        model = (label("model") or "").strip()
        if not fallback or not model:
            bad("fallback", raw, "expected model groups, comma-separated, e.g. llama-small, beside a model label")
        elif model in fallback:
            bad("fallback", raw, f"a group cannot fall back to itself ({model}); name another model group")

    if problems:
        return None, tuple(problems)
    return (
        ContainerSpec(
            priority=priority,
            gpus=gpus,
            health_url=health_url,
            health_port=health_port,
            health_path=health_path,
            start_period=start_period,
            stop_timeout=stop_timeout,
            max_restarts=max_restarts,
            role=label("role"),
            model=label("model"),
            model_size=model_size,
            api_base=api_base,
            server=server,
            stall_window=stall_window,
            canary_interval=canary_interval,
            fallback=fallback,
            drain_timeout=drain_timeout,
        ),
        (),
    )


def _is_http_url(text: str) -> bool:
    try:
        parsed = urlparse(text)
        _ = parsed.port  # raises ValueError for a port out of range
    except ValueError:
        return False
    return parsed.scheme in ("http", "https") and bool(parsed.hostname)


def gpus_from_engine(device_requests: list[dict[str, Any]] | None, env: list[str] | None) -> tuple[str, ...]:
    """GPUs a container was given: compose device reservations, else NVIDIA_VISIBLE_DEVICES."""
    found: list[str] = []
    for request in device_requests or []:
        capabilities = [c for group in request.get("Capabilities") or [] for c in group]
        if request.get("Driver") not in (None, "", "nvidia") and "gpu" not in capabilities:
            continue
        ids = request.get("DeviceIDs") or []
        if ids:
            found.extend(str(i) for i in ids)
        elif request.get("Count") == -1:
            found.append("all")
        elif request.get("Count"):
            found.append(f"count={request['Count']}")
    if found:
        return tuple(found)
    for item in env or []:
        if item.startswith("NVIDIA_VISIBLE_DEVICES="):
            value = item.split("=", 1)[1]
            if value and value not in ("void", "none"):
                return tuple(v.strip() for v in value.split(",") if v.strip())
    return ()
