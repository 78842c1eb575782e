"""A mapping (as read from YAML) into a Config: the top-level keys and each section but notify.

Strict: an unknown key or a wrong type is a ConfigError naming the key path and the fix,
because a silently ignored setting is worse than none. Cross-field rules (probe_timeout
against poll_interval, ...) are checked here once every section is parsed. Pure: no I/O.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import fields, replace
from typing import Any

from watchdog.config.cluster import parse_cluster
from watchdog.config.fields import (
    _bool,
    _check_keys,
    _int,
    _listen,
    _number,
    _positive_seconds,
    _section,
    _size,
    shown,
    shown_path,
)
from watchdog.config.gpu_health import parse_health
from watchdog.config.gpu_predict import parse_predict
from watchdog.config.gpu_probation import parse_probation
from watchdog.config.model import (
    _LOG_FORMATS,
    _LOG_LEVELS,
    ALL_DOWN_MODES,
    MEMORY_LIMIT_MODES,
    BreakerConfig,
    Config,
    ConfigError,
    DrainConfig,
    GpuConfig,
    LitellmConfig,
    RamPreflightConfig,
    ServingConfig,
)
from watchdog.config.notify import _parse_notify
from watchdog.router.capacity import CapacityPolicy, RoleMemory


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
        if key in ("poll_interval", "probe_interval", "probe_timeout", "default_start_period"):
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
                raise ConfigError(f"config: label_prefix={shown(value)}: must be a non-empty word, e.g. gpu-watchdog")
            values[key] = value.rstrip(".")
        elif key == "state_dir":
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"config: state_dir={shown(value)}: must be a path")
            values[key] = value
        elif key == "log_format":
            if value not in _LOG_FORMATS:
                raise ConfigError(f"config: log_format={shown(value)}: must be one of {', '.join(_LOG_FORMATS)}")
            values[key] = value
        elif key == "log_level":
            if not isinstance(value, str) or value.upper() not in _LOG_LEVELS:
                raise ConfigError(f"config: log_level={shown(value)}: must be one of {', '.join(_LOG_LEVELS)}")
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
        elif key == "serving":
            values[key] = _parse_serving(_section("serving", value))
        elif key == "drain":
            values[key] = _parse_drain(_section("drain", value))
        elif key == "notify":
            values[key] = _parse_notify(_section("notify", value), os.environ if env is None else env, secrets)
    config = replace(base, **values)
    if "cluster" in data:  # after the loop: its checks read poll_interval
        config = replace(config, cluster=parse_cluster(data["cluster"], config.poll_interval))
        if config.cluster.enabled and not config.litellm.enabled:
            raise ConfigError(
                "config: cluster.redis_url is set but litellm.enabled is false: the cluster publishes this host's "
                "rotation; set litellm.enabled: true (no local proxy is needed)"
            )
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


def _parse_serving(data: Mapping[str, Any]) -> ServingConfig:
    _check_keys("serving", data, [f.name for f in fields(ServingConfig)])
    values: dict[str, Any] = {}
    for key, value in data.items():
        path = f"serving.{key}"
        if key == "progress":
            values[key] = _bool(path, value)
        else:
            values[key] = _positive_seconds(path, value, allow_zero=key == "canary_interval")
    return replace(ServingConfig(), **values)


def _parse_drain(data: Mapping[str, Any]) -> DrainConfig:
    _check_keys("drain", data, [f.name for f in fields(DrainConfig)])
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key == "enabled":
            values[key] = _bool("drain.enabled", value)
        elif key == "min_replicas":
            values[key] = _int("drain.min_replicas", value, 0)
        else:
            values[key] = _positive_seconds(f"drain.{key}", value)
    return replace(DrainConfig(), **values)


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
                raise ConfigError(f"config: {path}={shown(value)}: must be a path such as /dev/kmsg, or off")
        elif key == "reset_command":
            if (
                not isinstance(value, list)
                or not value
                or not all(isinstance(v, str) and v for v in value)
                or not any("{uuid}" in v for v in value)
            ):
                raise ConfigError(
                    f"config: {path}={shown(value)}: must be a list of arguments (no shell) containing {{uuid}}, "
                    'e.g. ["nvidia-smi", "--gpu-reset", "-i", "{uuid}"]'
                )
            values[key] = tuple(value)
        elif key == "max_quarantined_fraction":
            values[key] = _number(path, value, 0.0, 0.5)
        elif key == "xid_overrides":
            values[key] = _parse_xid_overrides(path, value)
        elif key == "health":
            values[key] = parse_health(path, value)
        elif key == "probation":
            values[key] = parse_probation(path, value)
        elif key == "predict":
            values[key] = parse_predict(path, value)
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


def _parse_capacity(data: Mapping[str, Any]) -> CapacityPolicy:
    _check_keys("capacity", data, [f.name for f in fields(CapacityPolicy)])
    values: dict[str, Any] = {}
    for key, value in data.items():
        path = f"capacity.{key}"
        if key == "rpm_per_gpu":
            pair = value if isinstance(value, list) else [value, value]
            if len(pair) != 2:
                raise ConfigError(f"config: {path}={shown(value)}: must be a number or [low, high], e.g. [3, 4]")
            low, high = (_number(path, v, 0.001, 1e6) for v in pair)
            if low > high:
                raise ConfigError(f"config: {path}={shown(value)}: low must be <= high, e.g. [3, 4]")
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
                raise ConfigError(f"config: {path}={shown(value)}: must be one of {', '.join(MEMORY_LIMIT_MODES)}")
            values[key] = value
        elif key == "compose_override":
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigError(
                    f"config: {path}={shown(value)}: must be a file path, e.g. compose.limits.yml, or null"
                )
            values[key] = value
        elif key == "serving_roles":
            if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
                raise ConfigError(f"config: {path}={shown(value)}: must be a list of role names, e.g. [chat]")
            values[key] = tuple(value)
        elif key == "memory":
            roles: dict[str, RoleMemory] = {}
            for role, limits in _section(path, value).items():
                where = f"{path}.{shown_path(str(role), 30)}"  # a key from the file; room for the key after it
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


def _fallbacks(path: str, value: Any) -> dict[str, tuple[str, ...]]:
    """{group: [fallback group, ...]} (a single name allowed); no group to itself, no cycle."""
    example = "e.g. {vllm-big: [llama-small]}"
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"config: {path}={shown(value)}: must map a model group to its fallback groups, {example}")
    result: dict[str, tuple[str, ...]] = {}
    for primary, targets in value.items():
        where = f"{path}.{shown_path(str(primary))}"
        names = [targets] if isinstance(targets, str) else targets
        if not isinstance(primary, str) or not primary.strip() or not isinstance(names, list) or not names:
            raise ConfigError(f"config: {where}={shown(targets)}: must be a list of model groups, {example}")
        if not all(isinstance(n, str) and n.strip() for n in names):
            raise ConfigError(f"config: {where}={shown(targets)}: every fallback must be a model group name")
        clean = tuple(dict.fromkeys(n.strip() for n in names))
        if primary.strip() in clean:
            raise ConfigError(f"config: {where}: {primary} falls back to itself; name another model group")
        result[primary.strip()] = clean
    for primary in result:  # a cycle: LiteLLM would bounce a request between the groups
        todo, seen = list(result[primary]), set()
        while todo:
            group = todo.pop()
            if group == primary:
                raise ConfigError(
                    f"config: {path}.{shown_path(primary)}: {primary} falls back to itself through other groups "
                    "(a cycle); remove one of the entries"
                )
            if group not in seen:
                seen.add(group)
                todo.extend(result.get(group, ()))
    return result


def _parse_litellm(data: Mapping[str, Any]) -> LitellmConfig:
    _check_keys("litellm", data, [f.name for f in fields(LitellmConfig)])
    values: dict[str, Any] = {}
    for key, value in data.items():
        path = f"litellm.{key}"
        if key == "enabled":
            values[key] = _bool(path, value)
        elif key in ("template", "out"):
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"config: {path}={shown(value)}: must be a file path, e.g. litellm/config.yaml")
            values[key] = value
        elif key == "proxy_url":
            if value is not None and (
                not isinstance(value, str) or not value.startswith(("http://", "https://")) or value[-3:] == "://"
            ):
                raise ConfigError(
                    f"config: {path}={shown(value)}: must be the proxy's base URL, e.g. http://127.0.0.1:4000"
                )
            values[key] = value.rstrip("/") if isinstance(value, str) else None
        elif key == "proxy_container":
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigError(f"config: {path}={shown(value)}: must be the proxy container's name, e.g. litellm")
            values[key] = value
        elif key == "restart_command":
            if value is not None and (
                not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value)
            ):
                raise ConfigError(
                    f"config: {path}={shown(value)}: must be a list of arguments (no shell), "
                    'e.g. ["systemctl", "restart", "litellm"]'
                )
            values[key] = tuple(value) if value is not None else None
        elif key in ("restart_timeout", "stale_after", "recovery_probe_interval"):
            values[key] = _positive_seconds(path, value)
        elif key == "outlier_consecutive":
            values[key] = _int(path, value, 1)
        elif key in ("outlier_base_ejection", "outlier_max_ejection"):
            values[key] = _positive_seconds(path, value)
        elif key == "outlier_max_percent":
            values[key] = _number(path, value, 0, 100)
        elif key == "fallbacks":
            values[key] = _fallbacks(path, value)
        elif key == "all_down":
            if value not in ALL_DOWN_MODES:
                raise ConfigError(f"config: {path}={shown(value)}: must be one of {', '.join(ALL_DOWN_MODES)}")
            values[key] = value
    result = replace(LitellmConfig(), **values)
    if result.outlier_max_ejection < result.outlier_base_ejection:
        raise ConfigError(
            f"config: litellm.outlier_max_ejection={result.outlier_max_ejection:g} must be at least "
            f"litellm.outlier_base_ejection={result.outlier_base_ejection:g}"
        )
    if result.proxy_container and result.restart_command:
        raise ConfigError("config: litellm.proxy_container and litellm.restart_command both set; keep one")
    return result
