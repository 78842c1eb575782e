"""The `cluster` section: several hosts sharing one router view on Redis (watchdog/cluster/). Pure.

Off unless `redis_url` is set: one host keeps its rotation in the file next to its proxy. The URL
names the server only: a password in it is refused (it would be shown in status and logs), it comes
from the environment variable `password_env` (and an ACL user from `username_env`), read by the
connection, never by this module. Every bad value is one line naming the key and the fix.
"""

from __future__ import annotations

import re
from dataclasses import fields, replace
from typing import Any
from urllib.parse import urlsplit

from watchdog.config.fields import _check_keys, _positive_seconds, _section, shown
from watchdog.config.model import ClusterConfig, ConfigError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_PREFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_ENV = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def parse_cluster(data: Any, poll_interval: float) -> ClusterConfig:
    section = _section("cluster", data)
    _check_keys("cluster", section, [f.name for f in fields(ClusterConfig)])
    values: dict[str, Any] = {}
    for key, value in section.items():
        path = f"cluster.{key}"
        if key == "redis_url":
            values[key] = None if value is None else _redis_url(path, value)
        elif key == "host":
            if value is not None and not (isinstance(value, str) and _NAME.fullmatch(value)):
                raise ConfigError(
                    f"config: {path}={shown(value)}: must be a host name of letters, digits, '.', '_' or '-' "
                    "(up to 63), e.g. gpu-a"
                )
            values[key] = value
        elif key == "key_prefix":
            if not (isinstance(value, str) and _PREFIX.fullmatch(value)):
                raise ConfigError(
                    f"config: {path}={shown(value)}: must be letters, digits, '.', '_', ':' or '-' (up to 64), "
                    "one per fleet, e.g. gpu-watchdog-prod"
                )
            values[key] = value
        elif key == "ttl":
            values[key] = None if value is None else _positive_seconds(path, value)
        elif key in ("password_env", "username_env"):
            if not (isinstance(value, str) and _ENV.fullmatch(value)):
                raise ConfigError(f"config: {path}={shown(value)}: must be an environment variable name")
            values[key] = value
    cluster = replace(ClusterConfig(), **values)
    if cluster.ttl is not None and cluster.ttl < 2 * poll_interval:
        raise ConfigError(
            f"config: cluster.ttl={cluster.ttl:g} must be at least 2x poll_interval={poll_interval:g} "
            "(the view is republished every poll); raise it"
        )
    return cluster


def _redis_url(path: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"config: {path}={shown(value)}: must be a URL such as redis://10.0.0.5:6379/0")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ConfigError(f"config: {path}: not a URL; write it as redis://HOST:PORT/DB") from None
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ConfigError(
            f"config: {path}: must start redis:// or rediss:// and name a host, e.g. redis://10.0.0.5:6379/0"
        )
    if parts.password is not None:
        raise ConfigError(
            f"config: {path} has a password in it; remove it and set the environment variable named by "
            "cluster.password_env (GPU_WATCHDOG_REDIS_PASSWORD by default)"
        )
    if parts.path not in ("", "/") and not parts.path.lstrip("/").isdigit():
        raise ConfigError(f"config: {path}: the path must be a database number, e.g. redis://HOST:6379/0")
    del port  # read for its check: a port that is not a number raised above
    return value
