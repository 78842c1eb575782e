"""Global settings: defaults from the seeds, an optional YAML file, env overrides.

Loading is strict: an unknown key or a wrong type is a ConfigError naming the
key path and the fix, because a silently ignored setting is worse than none.
"""

from __future__ import annotations

import difflib
import importlib.util
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from watchdog.ops.notices import NOTIFY_EVENTS, NOTIFY_KINDS, RESERVED_FIELDS
from watchdog.router.capacity import CapacityPolicy, RoleMemory
from watchdog.units import parse_bool, parse_bytes, parse_duration

ENV_CONFIG = "GPU_WATCHDOG_CONFIG"
ENV_STATE_DIR = "GPU_WATCHDOG_STATE_DIR"
ENV_DRY_RUN = "GPU_WATCHDOG_DRY_RUN"
ENV_LOG_FORMAT = "GPU_WATCHDOG_LOG_FORMAT"
ENV_LOG_LEVEL = "GPU_WATCHDOG_LOG_LEVEL"


class ConfigError(ValueError):
    """Bad configuration; the message is one line naming the key and the fix."""


@dataclass(frozen=True)
class BreakerConfig:
    """Crash-loop breaker, after systemd's StartLimitBurst/IntervalSec."""

    max_restarts: int = 5
    window: float = 300.0
    backoff_initial: float = 10.0
    backoff_max: float = 60.0
    cooldown: float = 3600.0


@dataclass(frozen=True)
class RamPreflightConfig:
    """Refuse a (re)start unless MemAvailable >= need x factor + reserve (seed 004)."""

    enabled: bool = True
    factor: float = 1.1
    reserve: int = 1024**3


DEFAULT_RESET_COMMAND = ("nvidia-smi", "--gpu-reset", "-i", "{uuid}")


@dataclass(frozen=True)
class GpuConfig:
    """NVML checks: zero-VRAM, Xid faults, quarantine (issue 3). Off by itself when no driver loads."""

    enabled: bool = True
    deadline: float = 2.0  # an NVML read that takes longer means "driver hung"
    zero_vram_threshold: int = 100 * 1024**2  # GPU used memory under this = model gone (no PID mapping)
    pid_mapping: bool = True  # map NVML's host PIDs to containers when this process can see them
    xid_events: bool = True
    kernel_log: str | None = "/dev/kmsg"  # scanned once at start-up for earlier Xids; None: off
    xid_overrides: Mapping[Any, Any] = field(default_factory=dict)  # same format as the shipped table's xids
    reset: bool = False  # opt-in: stop its containers, run reset_command, verify, start them
    reset_command: tuple[str, ...] = DEFAULT_RESET_COMMAND
    reset_timeout: float = 120.0
    kill_orphans: bool = False  # opt-in: SIGKILL GPU processes of no live container (host PIDs only)
    max_quarantined_fraction: float = 0.5  # never quarantine more than this share of the GPUs automatically


ALL_DOWN_MODES = ("route-anyway", "fail-fast")


@dataclass(frozen=True)
class LitellmConfig:
    """The LiteLLM proxy in front of the fleet: its config file and its rotation (issue 4)."""

    enabled: bool = False  # render the config and keep the rotation file in step every cycle
    template: str = "litellm/config.template.yaml"
    out: str = "litellm/config.yaml"  # rotation.json and the callback module are written next to it
    proxy_url: str | None = None  # e.g. http://127.0.0.1:4000: watched, and checked after a restart
    proxy_container: str | None = None  # restarted (docker restart) when the deployment set changes
    restart_command: tuple[str, ...] | None = None  # or this argv (no shell), e.g. [systemctl, restart, litellm]
    restart_timeout: float = 60.0  # how long the proxy may take to answer again after a restart
    all_down: str = "route-anyway"  # every deployment of a model out: route-anyway (LiteLLM decides) | fail-fast
    stale_after: float = 15.0  # the callback ignores a rotation file older than this (watchdog gone)
    recovery_probe_interval: float = 0.5  # probe interval for a deployment out of rotation


@dataclass(frozen=True)
class NotifyTarget:
    """One place notifications go. `url` and header values are secrets: never in a repr, a log or an error."""

    name: str
    kind: str  # webhook | slack | discord | apprise
    url: str = field(repr=False)
    url_env: str | None = None  # where the URL came from, when from the environment
    events: tuple[str, ...] = NOTIFY_EVENTS
    key: str = "text"  # webhook: the JSON key of the message text
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    def describe(self) -> str:
        """Name, kind and where the URL comes from; no secret."""
        source = f"url from ${self.url_env}" if self.url_env else "url in the config file"
        return f"{self.name} ({self.kind}, {source})"


@dataclass(frozen=True)
class NotifyConfig:
    """Webhook notifications on state transitions; no targets: off."""

    targets: tuple[NotifyTarget, ...] = ()
    dedup_window: float = 300.0  # the same event about the same container/GPU is sent once per window
    rate_limit_per_minute: int = 10  # per target; the rest are counted and reported with the next one
    timeout: float = 5.0  # per HTTP request
    retries: int = 1  # further attempts after a failed send (connection error, timeout, HTTP 429 or 5xx)
    host: str | None = None  # the name messages give this machine; None: its host name


@dataclass(frozen=True)
class Config:
    poll_interval: float = 5.0
    probe_timeout: float = 3.0
    failure_threshold: int = 3
    default_start_period: float = 120.0
    max_concurrent_restarts: int = 1
    recovery_timeout: float | None = None
    stop_settle: float = 0.3
    label_prefix: str = "gpu-watchdog"
    dry_run: bool = False
    events: bool = True
    state_dir: str | None = None
    log_format: str = "text"
    log_level: str = "INFO"
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    ram_preflight: RamPreflightConfig = field(default_factory=RamPreflightConfig)
    gpu: GpuConfig = field(default_factory=GpuConfig)
    capacity: CapacityPolicy = field(default_factory=CapacityPolicy)
    litellm: LitellmConfig = field(default_factory=LitellmConfig)
    http: str = "127.0.0.1:9108"  # /metrics, /healthz, /status; "off" disables it
    notify: NotifyConfig = field(default_factory=NotifyConfig)

    def resolved_state_dir(self, env: Mapping[str, str] | None = None) -> Path:
        """state_dir, else $XDG_STATE_HOME/gpu-watchdog, else ~/.local/state/gpu-watchdog."""
        env = os.environ if env is None else env
        if self.state_dir:
            return Path(self.state_dir).expanduser()
        base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        return Path(base) / "gpu-watchdog"


_LOG_FORMATS = ("text", "json")
MEMORY_LIMIT_MODES = ("off", "report", "enforce")
_LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")


def _positive_seconds(path: str, value: Any, allow_zero: bool = False) -> float:
    try:
        seconds = parse_duration(value)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"config: {path}={value!r}: {exc}") from None
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise ConfigError(f"config: {path}={value!r}: must be {'>= 0' if allow_zero else '> 0'} seconds")
    return seconds


def _int(path: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"config: {path}={value!r}: must be a whole number >= {minimum}")
    return value


def _bool(path: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    try:
        return parse_bool(str(value))
    except ValueError:
        raise ConfigError(f"config: {path}={value!r}: must be true or false") from None


def _number(path: str, value: Any, minimum: float, maximum: float = 1000.0) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not minimum <= value <= maximum
        or (isinstance(value, float) and not math.isfinite(value))
    ):
        raise ConfigError(f"config: {path}={value!r}: must be a number from {minimum} to {maximum}")
    return float(value)


def _check_keys(path: str, data: Mapping[str, Any], allowed: list[str]) -> None:
    for key in data:
        if key not in allowed:
            where = f"{path}.{key}" if path else str(key)
            if not where.isprintable() or len(where) > 80:  # a line break or a wall of text stays one short line
                where = ascii(where[:80])[1:-1]
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f"; known keys: {', '.join(allowed)}"
            raise ConfigError(f"config: unknown key '{where}'{hint}")


def _section(path: str, value: Any) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"config: '{path}' must be a mapping of keys, got {type(value).__name__}")
    return value


def parse_config(data: Mapping[str, Any] | None, env: Mapping[str, str] | None = None, secrets: bool = True) -> Config:
    """Validate a mapping (as read from YAML) into a Config.

    `env` resolves notify's url_env and headers_env (default os.environ). With `secrets` False a
    variable that is not set is no error (its target gets an empty URL): for the commands that
    never send, so `status` works from a shell without the daemon's secrets.
    """
    data = _section("", data) if data is not None else {}
    top = [f.name for f in fields(Config)]
    _check_keys("", data, top)
    base = Config()
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key in ("poll_interval", "probe_timeout", "default_start_period"):
            values[key] = _positive_seconds(key, value, allow_zero=key == "default_start_period")
        elif key == "stop_settle":
            values[key] = _positive_seconds(key, value, allow_zero=True)
        elif key == "recovery_timeout":
            values[key] = None if value is None else _positive_seconds(key, value)
        elif key == "failure_threshold" or key == "max_concurrent_restarts":
            values[key] = _int(key, value, 1)
        elif key in ("dry_run", "events"):
            values[key] = _bool(key, value)
        elif key == "label_prefix":
            if not isinstance(value, str) or not value.rstrip(".") or any(c.isspace() for c in value):
                raise ConfigError(f"config: label_prefix={value!r}: must be a non-empty word, e.g. gpu-watchdog")
            values[key] = value.rstrip(".")
        elif key == "state_dir":
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"config: state_dir={value!r}: must be a path")
            values[key] = value
        elif key == "log_format":
            if value not in _LOG_FORMATS:
                raise ConfigError(f"config: log_format={value!r}: must be one of {', '.join(_LOG_FORMATS)}")
            values[key] = value
        elif key == "log_level":
            if not isinstance(value, str) or value.upper() not in _LOG_LEVELS:
                raise ConfigError(f"config: log_level={value!r}: must be one of {', '.join(_LOG_LEVELS)}")
            values[key] = value.upper()
        elif key == "breaker":
            values[key] = _parse_breaker(_section("breaker", value))
        elif key == "ram_preflight":
            values[key] = _parse_ram(_section("ram_preflight", value))
        elif key == "gpu":
            values[key] = _parse_gpu(_section("gpu", value))
        elif key == "capacity":
            values[key] = _parse_capacity(_section("capacity", value))
        elif key == "litellm":
            values[key] = _parse_litellm(_section("litellm", value))
        elif key == "http":
            values[key] = _listen(key, value)
        elif key == "notify":
            values[key] = _parse_notify(_section("notify", value), os.environ if env is None else env, secrets)
    config = replace(base, **values)
    if config.probe_timeout > config.poll_interval * 4:
        raise ConfigError(
            f"config: probe_timeout={config.probe_timeout} is over 4x poll_interval={config.poll_interval}; "
            "lower probe_timeout or raise poll_interval"
        )
    if config.litellm.stale_after < 2 * config.poll_interval:
        raise ConfigError(
            f"config: litellm.stale_after={config.litellm.stale_after:g} must be at least 2x poll_interval="
            f"{config.poll_interval:g} (the rotation file is rewritten every poll); raise it"
        )
    if config.breaker.backoff_max < config.breaker.backoff_initial:
        raise ConfigError("config: breaker.backoff_max must be >= breaker.backoff_initial")
    return config


def _parse_breaker(data: Mapping[str, Any]) -> BreakerConfig:
    _check_keys("breaker", data, [f.name for f in fields(BreakerConfig)])
    values: dict[str, Any] = {}
    for key, value in data.items():
        path = f"breaker.{key}"
        if key == "max_restarts":
            values[key] = _int(path, value, 1)
        else:
            values[key] = _positive_seconds(path, value, allow_zero=key.startswith("backoff"))
    return replace(BreakerConfig(), **values)


def _parse_ram(data: Mapping[str, Any]) -> RamPreflightConfig:
    _check_keys("ram_preflight", data, [f.name for f in fields(RamPreflightConfig)])
    values: dict[str, Any] = {}
    for key, value in data.items():
        path = f"ram_preflight.{key}"
        if key == "enabled":
            values[key] = _bool(path, value)
        elif key == "factor":
            values[key] = _number(path, value, 0.0)
        elif key == "reserve":
            values[key] = _size(path, value)
    return replace(RamPreflightConfig(), **values)


def _parse_gpu(data: Mapping[str, Any]) -> GpuConfig:
    _check_keys("gpu", data, [f.name for f in fields(GpuConfig)])
    values: dict[str, Any] = {}
    for key, value in data.items():
        path = f"gpu.{key}"
        if key in ("enabled", "pid_mapping", "xid_events", "reset", "kill_orphans"):
            values[key] = _bool(path, value)
        elif key in ("deadline", "reset_timeout"):
            values[key] = _positive_seconds(path, value)
        elif key == "zero_vram_threshold":
            values[key] = _size(path, value)
        elif key == "kernel_log":
            if value in (None, False, "off"):
                values[key] = None
            elif isinstance(value, str) and value.strip():
                values[key] = value
            else:
                raise ConfigError(f"config: {path}={value!r}: must be a path such as /dev/kmsg, or off")
        elif key == "reset_command":
            if (
                not isinstance(value, list)
                or not value
                or not all(isinstance(v, str) and v for v in value)
                or not any("{uuid}" in v for v in value)
            ):
                raise ConfigError(
                    f"config: {path}={value!r}: must be a list of arguments (no shell) containing {{uuid}}, "
                    'e.g. ["nvidia-smi", "--gpu-reset", "-i", "{uuid}"]'
                )
            values[key] = tuple(value)
        elif key == "max_quarantined_fraction":
            values[key] = _number(path, value, 0.0, 0.5)
        elif key == "xid_overrides":
            values[key] = _parse_xid_overrides(path, value)
    return replace(GpuConfig(), **values)


def _parse_xid_overrides(path: str, value: Any) -> Mapping[Any, Any]:
    """Validated now (a bad table is a config error at start-up), applied by the loop."""
    from watchdog.gpu.xid import XidTableError, default_table, with_overrides

    data = _section(path, value)
    try:
        with_overrides(default_table(), data, path)
    except XidTableError as exc:
        raise ConfigError(f"config: {exc}") from None
    return dict(data)


def _size(path: str, value: Any) -> int:
    try:
        return parse_bytes(value)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"config: {path}={value!r}: {exc}") from None


def _parse_capacity(data: Mapping[str, Any]) -> CapacityPolicy:
    _check_keys("capacity", data, [f.name for f in fields(CapacityPolicy)])
    values: dict[str, Any] = {}
    for key, value in data.items():
        path = f"capacity.{key}"
        if key == "rpm_per_gpu":
            pair = value if isinstance(value, list) else [value, value]
            if len(pair) != 2:
                raise ConfigError(f"config: {path}={value!r}: must be a number or [low, high], e.g. [3, 4]")
            low, high = (_number(path, v, 0.001, 1e6) for v in pair)
            if low > high:
                raise ConfigError(f"config: {path}={value!r}: low must be <= high, e.g. [3, 4]")
            values[key] = (low, high)
        elif key == "target_rpm":
            values[key] = _number(path, value, 0.0, 1e9)
        elif key == "safety_margin":
            values[key] = _number(path, value, 0.01, 1.0)
        elif key == "headroom":
            values[key] = _number(path, value, 0.0, 0.9)
        elif key == "parallel_per_gpu":
            values[key] = _int(path, value, 1)
        elif key == "host_overhead":
            values[key] = _size(path, value)
        elif key == "memory_limits":
            if value not in MEMORY_LIMIT_MODES:
                raise ConfigError(f"config: {path}={value!r}: must be one of {', '.join(MEMORY_LIMIT_MODES)}")
            values[key] = value
        elif key == "compose_override":
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigError(f"config: {path}={value!r}: must be a file path, e.g. compose.limits.yml, or null")
            values[key] = value
        elif key == "serving_roles":
            if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
                raise ConfigError(f"config: {path}={value!r}: must be a list of role names, e.g. [chat]")
            values[key] = tuple(value)
        elif key == "memory":
            roles: dict[str, RoleMemory] = {}
            for role, limits in _section(path, value).items():
                where = f"{path}.{role}"
                entry = _section(where, limits)
                _check_keys(where, entry, ["mem_limit", "memswap_limit"])
                if "mem_limit" not in entry:
                    raise ConfigError(f"config: {where}: mem_limit is required, e.g. {{mem_limit: 1536m}}")
                limit = _size(f"{where}.mem_limit", entry["mem_limit"])
                swap = _size(f"{where}.memswap_limit", entry.get("memswap_limit", entry["mem_limit"]))
                if swap < limit:
                    raise ConfigError(
                        f"config: {where}.memswap_limit must be >= mem_limit (it counts RAM + swap, as docker's does)"
                    )
                roles[str(role)] = RoleMemory(limit, swap)
            values[key] = roles
    return replace(CapacityPolicy(), **values)


def parse_listen(text: str) -> tuple[str, int] | None:
    """`HOST:PORT`, or `off` (None). Raises ValueError with the fix."""
    if text.strip().lower() == "off":
        return None
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r}: expected HOST:PORT such as 127.0.0.1:9108, or off")
    return host.strip("[]"), int(port)


def _listen(path: str, value: Any) -> str:
    if value is False:
        return "off"
    try:
        parse_listen(str(value))
    except ValueError as exc:
        raise ConfigError(f"config: {path}={exc}") from None
    return str(value)


def _parse_litellm(data: Mapping[str, Any]) -> LitellmConfig:
    _check_keys("litellm", data, [f.name for f in fields(LitellmConfig)])
    values: dict[str, Any] = {}
    for key, value in data.items():
        path = f"litellm.{key}"
        if key == "enabled":
            values[key] = _bool(path, value)
        elif key in ("template", "out"):
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"config: {path}={value!r}: must be a file path, e.g. litellm/config.yaml")
            values[key] = value
        elif key == "proxy_url":
            if value is not None and (
                not isinstance(value, str) or not value.startswith(("http://", "https://")) or value[-3:] == "://"
            ):
                raise ConfigError(f"config: {path}={value!r}: must be the proxy's base URL, e.g. http://127.0.0.1:4000")
            values[key] = value.rstrip("/") if isinstance(value, str) else None
        elif key == "proxy_container":
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigError(f"config: {path}={value!r}: must be the proxy container's name, e.g. litellm")
            values[key] = value
        elif key == "restart_command":
            if value is not None and (
                not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value)
            ):
                raise ConfigError(
                    f"config: {path}={value!r}: must be a list of arguments (no shell), "
                    'e.g. ["systemctl", "restart", "litellm"]'
                )
            values[key] = tuple(value) if value is not None else None
        elif key in ("restart_timeout", "stale_after", "recovery_probe_interval"):
            values[key] = _positive_seconds(path, value)
        elif key == "all_down":
            if value not in ALL_DOWN_MODES:
                raise ConfigError(f"config: {path}={value!r}: must be one of {', '.join(ALL_DOWN_MODES)}")
            values[key] = value
    result = replace(LitellmConfig(), **values)
    if result.proxy_container and result.restart_command:
        raise ConfigError("config: litellm.proxy_container and litellm.restart_command both set; keep one")
    return result


_TARGET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_TARGET_KEYS = ["name", "kind", "url", "url_env", "events", "key", "headers", "headers_env"]


def apprise_installed() -> bool:
    """Whether the optional apprise package can be imported (found, not imported: config stays pure)."""
    try:
        return importlib.util.find_spec("apprise") is not None
    except (ImportError, ValueError):
        return False


def _parse_notify(data: Mapping[str, Any], env: Mapping[str, str], secrets: bool = True) -> NotifyConfig:
    _check_keys("notify", data, [f.name for f in fields(NotifyConfig)])
    values: dict[str, Any] = {}
    for key, value in data.items():
        path = f"notify.{key}"
        if key == "dedup_window":
            values[key] = _positive_seconds(path, value, allow_zero=True)
        elif key == "timeout":
            values[key] = _positive_seconds(path, value)
            if values[key] > 60:
                raise ConfigError(f"config: {path}={value!r}: must be at most 60 s; a webhook answers in seconds")
        elif key == "rate_limit_per_minute":
            values[key] = _int(path, value, 1)
        elif key == "retries":
            values[key] = _int(path, value, 0)
            if values[key] > 5:
                raise ConfigError(f"config: {path}={value!r}: must be from 0 to 5")
        elif key == "host":
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigError(f"config: {path}={value!r}: must be the name messages give this host, or null")
            values[key] = value.strip() if isinstance(value, str) else None
        elif key == "targets":
            if value is None:
                value = []
            if not isinstance(value, list):
                raise ConfigError(
                    f"config: {path} must be a list of targets, e.g. [{{name: ops, kind: slack, url_env: SLACK_URL}}]"
                )
            targets = [_parse_target(f"{path}[{i}]", item, env, secrets) for i, item in enumerate(value)]
            names = [t.name for t in targets]
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ConfigError(f"config: {path}: target name {twice[0]!r} is used twice; give each its own name")
            values[key] = tuple(targets)
    return replace(NotifyConfig(), **values)


def _parse_target(where: str, item: Any, env: Mapping[str, str], secrets: bool) -> NotifyTarget:
    """One target. Error messages name the target and the key, never the URL or a header value."""
    data = _section(where, item)
    _check_keys(where, data, _TARGET_KEYS)
    name = data.get("name")
    if not isinstance(name, str) or not _TARGET_NAME.match(name):
        raise ConfigError(
            f"config: {where}.name={name!r}: each target needs a name (letters, digits, . _ -), e.g. ops-slack"
        )
    who = f"{where} ({name})"
    kind = data.get("kind")
    if kind not in NOTIFY_KINDS:
        raise ConfigError(f"config: {who}.kind={kind!r}: must be one of {', '.join(NOTIFY_KINDS)}")
    url = _target_url(who, kind, data, env, secrets)
    events: tuple[str, ...] = NOTIFY_EVENTS
    if "events" in data:
        listed = data["events"]
        if listed == "all":
            listed = list(NOTIFY_EVENTS)
        if not isinstance(listed, list) or not listed or not all(isinstance(e, str) for e in listed):
            raise ConfigError(
                f"config: {who}.events={listed!r}: must be a list of events (or all), e.g. [fault, given-up]"
            )
        for event in listed:
            if event not in NOTIFY_EVENTS:
                close = difflib.get_close_matches(event, NOTIFY_EVENTS, n=1)
                hint = f"did you mean '{close[0]}'?" if close else f"known: {', '.join(NOTIFY_EVENTS)}"
                raise ConfigError(f"config: {who}.events: unknown event {event!r} ({hint})")
        events = tuple(e for e in NOTIFY_EVENTS if e in listed)
    key = "text"
    if "key" in data:
        if kind != "webhook":
            raise ConfigError(f"config: {who}.key: only webhook targets take a key; remove it")
        key = data["key"]
        if not isinstance(key, str) or not key.strip() or key in RESERVED_FIELDS:
            raise ConfigError(
                f"config: {who}.key={key!r}: must be the JSON key for the message text, e.g. text or message, "
                f"and none of {', '.join(RESERVED_FIELDS)}"
            )
    headers = _target_headers(who, kind, data, env, secrets)
    if kind == "apprise" and not apprise_installed():
        raise ConfigError(
            f"config: {who}: kind apprise needs the apprise package, which is not installed; "
            "pip install apprise (or install gpu-watchdog[apprise])"
        )
    return NotifyTarget(name, kind, url, data.get("url_env"), events, key, headers)


def _target_url(who: str, kind: str, data: Mapping[str, Any], env: Mapping[str, str], secrets: bool) -> str:
    if "url" in data and "url_env" in data:
        raise ConfigError(
            f"config: {who}: both url and url_env set; keep one (url_env keeps the secret out of the file)"
        )
    if "url_env" in data:
        variable = data["url_env"]
        if not isinstance(variable, str) or not _ENV_NAME.match(variable):
            raise ConfigError(
                f"config: {who}.url_env={variable!r}: must be an environment variable name, e.g. SLACK_URL"
            )
        url = env.get(variable, "").strip()
        if not url and not secrets:
            return ""
        if not url:
            raise ConfigError(
                f"config: {who}.url_env: environment variable {variable} is not set; "
                "export it in the daemon's environment (systemd Environment=, compose environment:)"
            )
        source = f"the value of ${variable}"
    elif "url" in data:
        url = data["url"].strip() if isinstance(data["url"], str) else ""
        source = "url"
    else:
        raise ConfigError(f"config: {who}: url_env: NAME (the variable holding the webhook URL) or url: is required")
    if kind == "apprise":
        if "://" not in url or url.startswith("://"):
            raise ConfigError(f"config: {who}: {source} must be an apprise URL, e.g. json://host/path or slack://...")
    elif not re.match(r"^https?://[^/\s]+", url):
        raise ConfigError(f"config: {who}: {source} must be an http:// or https:// URL (value not shown: a secret)")
    return url


def _target_headers(
    who: str, kind: str, data: Mapping[str, Any], env: Mapping[str, str], secrets: bool
) -> tuple[tuple[str, str], ...]:
    headers: dict[str, str] = {}
    for key in ("headers", "headers_env"):
        if key not in data:
            continue
        if kind == "apprise":
            raise ConfigError(f"config: {who}.{key}: apprise targets take headers in their URL; remove {key}")
        section = _section(f"{who}.{key}", data[key])
        for header, value in section.items():
            if not isinstance(header, str) or not _HEADER_NAME.match(header):
                raise ConfigError(f"config: {who}.{key}: {header!r} is not a valid HTTP header name")
            if key == "headers":
                if not isinstance(value, str) or "\n" in value or "\r" in value:
                    raise ConfigError(f"config: {who}.headers.{header}: must be a one-line string (value not shown)")
                headers[header] = value
            else:
                if not isinstance(value, str) or not _ENV_NAME.match(value):
                    raise ConfigError(
                        f"config: {who}.headers_env.{header}={value!r}: must be an environment variable name"
                    )
                if not env.get(value, "").strip():
                    if not secrets:
                        continue
                    raise ConfigError(
                        f"config: {who}.headers_env.{header}: environment variable {value} is not set; "
                        "export it in the daemon's environment"
                    )
                headers[header] = env[value].strip()
    return tuple(headers.items())


def load_config(path: str | Path | None, env: Mapping[str, str] | None = None, secrets: bool = True) -> Config:
    """Config from the file at `path` (or $GPU_WATCHDOG_CONFIG), then env overrides (`secrets`: parse_config)."""
    env = os.environ if env is None else env
    path = path or env.get(ENV_CONFIG) or None
    data: Any = None
    if path:
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"config: {file} is not UTF-8 text; save it as UTF-8 YAML") from None
        except OSError as exc:
            raise ConfigError(f"config: cannot read {file}: {exc.strerror}; check --config / {ENV_CONFIG}") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"config: {file}{where} is not valid YAML; fix the syntax there") from None
        if data is not None and not isinstance(data, Mapping):
            raise ConfigError(f"config: {file} must hold a mapping of settings, got {type(data).__name__}")
    config = parse_config(data, env, secrets)
    return apply_env(config, env)


def apply_env(config: Config, env: Mapping[str, str]) -> Config:
    """Environment variables win over the file (documented in the README)."""
    values: dict[str, Any] = {}
    if env.get(ENV_STATE_DIR):
        values["state_dir"] = env[ENV_STATE_DIR]
    if env.get(ENV_DRY_RUN):
        try:
            values["dry_run"] = parse_bool(env[ENV_DRY_RUN])
        except ValueError:
            raise ConfigError(f"env {ENV_DRY_RUN}={env[ENV_DRY_RUN]!r}: must be true or false") from None
    if env.get(ENV_LOG_FORMAT):
        if env[ENV_LOG_FORMAT] not in _LOG_FORMATS:
            raise ConfigError(f"env {ENV_LOG_FORMAT}={env[ENV_LOG_FORMAT]!r}: must be text or json")
        values["log_format"] = env[ENV_LOG_FORMAT]
    if env.get(ENV_LOG_LEVEL):
        if env[ENV_LOG_LEVEL].upper() not in _LOG_LEVELS:
            raise ConfigError(f"env {ENV_LOG_LEVEL}={env[ENV_LOG_LEVEL]!r}: must be one of {', '.join(_LOG_LEVELS)}")
        values["log_level"] = env[ENV_LOG_LEVEL].upper()
    return replace(config, **values)
