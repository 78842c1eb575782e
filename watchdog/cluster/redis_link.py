"""The connection to the fleet's Redis: short timeouts, the password and ACL user from the environment.

The URL in the config names the server only (config/cluster.py refuses one with a password); the
secret is read here from the variable `cluster.password_env` names, handed to the client, and never
logged: errors say which server and what failed, not with which credentials. A call takes at most
`TIMEOUT` seconds, so a Redis that does not answer costs the publisher's thread at most that, never
the loop.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from watchdog.config.model import ClusterConfig

if TYPE_CHECKING:  # imported when first used: a daemon without cluster.redis_url never loads redis-py
    import redis

TIMEOUT = 2.0  # s, connect and each command (on the publisher's own thread, never the loop's)


def redis_errors() -> tuple[type[BaseException], ...]:
    """What a Redis call raises when the server does not answer or refuses.

    ValueError too: redis-py can raise "I/O operation on closed file" out of a read that timed out.
    """
    import redis

    return (redis.RedisError, OSError, ValueError)


def default_host() -> str:
    """This machine's short host name, made a valid fleet host name."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname().split(".")[0])[:63].strip("-._")
    return name or "host"


def host_name(cluster: ClusterConfig) -> str:
    return cluster.host or default_host()


def where(cluster: ClusterConfig) -> str:
    """The server as logs may name it: host and port, no credentials."""
    parts = urlsplit(cluster.redis_url or "")
    return f"{parts.hostname}:{parts.port or 6379}"


def connect(cluster: ClusterConfig, env: Mapping[str, str] | None = None) -> redis.Redis:
    """A client for the configured server (connecting lazily, on the first command)."""
    import redis

    env = os.environ if env is None else env
    return redis.Redis.from_url(
        cluster.redis_url or "",
        username=env.get(cluster.username_env) or None,
        password=env.get(cluster.password_env) or None,
        socket_timeout=TIMEOUT,
        socket_connect_timeout=TIMEOUT,
        retry_on_timeout=False,
        health_check_interval=0,
    )


def error_text(exc: BaseException) -> str:
    """One line about a failed call, with nothing of the credentials in it."""
    import redis

    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, redis.AuthenticationError) or "auth" in text.lower() or "WRONGPASS" in text:
        return "authentication failed: check the password (cluster.password_env) and the ACL user"
    return f"{type(exc).__name__}: {text[:200]}"
