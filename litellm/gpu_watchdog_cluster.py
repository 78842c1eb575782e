"""The fleet's rotation from Redis, for the rotation callback of every proxy (several GPU hosts, one view).

Set GPU_WATCHDOG_CLUSTER_REDIS_URL (redis://HOST:PORT/DB) in the proxy's environment, and
GPU_WATCHDOG_CLUSTER_PREFIX when the fleet's cluster.key_prefix is not "gpu-watchdog"; the password
(and an ACL user) come from GPU_WATCHDOG_REDIS_PASSWORD / GPU_WATCHDOG_REDIS_USERNAME, else LiteLLM's
own REDIS_PASSWORD / REDIS_USERNAME. Without the URL the rotation file is read, as on one host.

Each host's watchdog publishes PREFIX:host:NAME (a TTL of a few poll intervals) and its heartbeat in
PREFIX:hosts. A thread here reads them all every REFRESH seconds in one round trip (a Lua script:
the host set and every host's document) and builds one rotation state, applied exactly as the file
is: a deny-list of the deployments out, and the health shares. A routing attempt reads only that
state in memory: no Redis call per request.

Trusted only when sound: a document of another version, whose body names another host, from the
future, of the wrong shape, or with a deployment not under its own host's name is ignored whole
(logged once). Fail open: when Redis does not answer, or the last good read is older than STALE,
the state is None and the proxy routes as LiteLLM alone would (its retries and cooldowns), said once;
a host whose view expired is simply not in the state, so its deployments are routed by LiteLLM alone.
Needs the `redis` package (LiteLLM's proxy extras install it). Standard library otherwise.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import threading
import time
from typing import Any

log = logging.getLogger("gpu_watchdog_cluster")

ENV_URL = "GPU_WATCHDOG_CLUSTER_REDIS_URL"
ENV_PREFIX = "GPU_WATCHDOG_CLUSTER_PREFIX"
VIEW_VERSION = 1
STATES = ("in", "out", "suspect", "draining")
HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
REFRESH = 1.0  # s between two reads of the fleet
STALE = 5.0  # s without a good read: route as LiteLLM alone would
TIMEOUT = 1.0  # s per Redis call (on the refresh thread: no request waits on it)
CLOCK_SKEW = 60.0
MAX_TEXT = 500

# KEYS[1] = PREFIX:hosts, ARGV[1] = PREFIX:host: -> [name, heartbeat, document or false, ...]
FLEET_SCRIPT = """
local hosts = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local out = {}
for i = 1, #hosts, 2 do
  out[#out + 1] = hosts[i]
  out[#out + 1] = hosts[i + 1]
  out[#out + 1] = redis.call('GET', ARGV[1] .. hosts[i])
end
return out
"""


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def parse_host(host: str, raw: Any, now: float) -> tuple[dict[str, Any] | None, str]:
    """One host's document checked whole: (document, "ok") or (None, why)."""
    if raw is None or raw is False:
        return None, "expired"
    try:
        data = json.loads(raw)
    except (ValueError, TypeError, UnicodeDecodeError):
        return None, "not JSON"
    if not isinstance(data, dict) or data.get("version") != VIEW_VERSION:
        return None, f"not a version-{VIEW_VERSION} host view"
    if data.get("host") != host or not HOST_NAME.fullmatch(host):
        return None, f"its body names host {str(data.get('host'))[:64]!r}"
    heartbeat, ttl = _number(data.get("heartbeat")), _number(data.get("ttl"))
    if heartbeat is None or ttl is None or ttl <= 0 or heartbeat > now + CLOCK_SKEW:
        return None, "no heartbeat or TTL, or a heartbeat in the future"
    if data.get("engine") not in ("up", "down"):
        return None, "engine is not up or down"
    deployments = data.get("deployments")
    if not isinstance(deployments, dict):
        return None, "deployments is not an object"
    for ident, body in deployments.items():
        name = str(ident)[:80]
        if not isinstance(ident, str) or not ident.startswith(host + "/") or len(ident) > MAX_TEXT:
            return None, f"deployment {name!r} is not under the host's own name {host}/"
        if not isinstance(body, dict) or body.get("state") not in STATES:
            return None, f"deployment {name!r} has no state of {', '.join(STATES)}"
        share = _number(body.get("share", 1.0))
        if share is None or not 0.0 <= share <= 1.0 or not isinstance(body.get("reason", ""), str):
            return None, f"deployment {name!r} has a share outside 0..1 or a reason that is not text"
    if now - heartbeat > ttl:
        return None, "expired"
    return data, "ok"


def fleet_state(rows: list[Any], now: float) -> tuple[dict[str, Any], dict[str, str]]:
    """The script's reply -> (a rotation document in the file's format, host -> why it was ignored)."""
    out: dict[str, str] = {}
    weights: dict[str, float] = {}
    known: list[str] = []
    ignored: dict[str, str] = {}
    for i in range(0, len(rows) - 2, 3):
        raw_host = rows[i]
        host = raw_host.decode("utf-8", "replace") if isinstance(raw_host, bytes) else str(raw_host)
        document, why = parse_host(host, rows[i + 2], now)
        if document is None:
            ignored[host] = why
            continue
        engine_up = document["engine"] == "up"
        for ident, body in document["deployments"].items():
            known.append(ident)
            if body["state"] != "in" or not engine_up:
                reason = body.get("reason") if engine_up else f"host {host}'s Docker engine is down"
                out[ident] = f"{host}: {body.get('container', '')}: {reason}"
            elif float(body.get("share", 1.0)) < 1.0:
                weights[ident] = float(body["share"])
    document = {
        "version": 1,
        "written_at": now,
        "stale_after": STALE,
        "out": out,
        "in": sorted(set(known) - set(out)),
        "weights": weights,
    }
    return document, ignored


class ClusterView:
    """The fleet's rotation, refreshed on a thread; `text(now)` gives it to the callback as the file's text."""

    def __init__(self, url: str, prefix: str = "gpu-watchdog", env: dict[str, str] | None = None) -> None:
        self.url = url
        self.prefix = prefix
        self.env = dict(os.environ if env is None else env)
        self._client: Any = None
        self._script: Any = None
        self._text: str | None = None
        self._good_at = 0.0
        self._why = "not read yet"
        self._ignored: dict[str, str] = {}
        self.reads = 0  # round trips, for the benchmark
        self.version = 0  # one more per good read: the callback parses a new view once
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_env(cls) -> ClusterView | None:
        url = os.environ.get(ENV_URL)
        return cls(url, os.environ.get(ENV_PREFIX) or "gpu-watchdog") if url else None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="gpu-watchdog-cluster", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _connect(self) -> Any:
        import redis  # the proxy's extras have it; imported here so a file-only proxy never needs it

        password = self.env.get("GPU_WATCHDOG_REDIS_PASSWORD") or self.env.get("REDIS_PASSWORD") or None
        username = self.env.get("GPU_WATCHDOG_REDIS_USERNAME") or self.env.get("REDIS_USERNAME") or None
        client = redis.Redis.from_url(
            self.url,
            username=username,
            password=password,
            socket_timeout=TIMEOUT,
            socket_connect_timeout=TIMEOUT,
            retry_on_timeout=False,
        )
        self._script = client.register_script(FLEET_SCRIPT)
        return client

    def refresh(self, now: float | None = None) -> None:
        """One read of the fleet (one round trip); never raises."""
        try:
            if self._client is None:
                self._client = self._connect()
            rows = self._script(keys=[f"{self.prefix}:hosts"], args=[f"{self.prefix}:host:"], client=self._client)
            self.reads += 1
            stamp = time.time() if now is None else now
            document, ignored = fleet_state(list(rows or []), stamp)
        except Exception as exc:  # Redis down, a bad reply, anything: fail open, said once
            self._say(f"Redis {self._where()} unreadable ({type(exc).__name__}: {str(exc)[:120]})")
            self._client = None
            return
        self._text, self._good_at = json.dumps(document), document["written_at"]
        self.version += 1
        for host, why in ignored.items():
            if self._ignored.get(host) != why and why != "expired":
                log.warning("gpu-watchdog cluster: host %s's view ignored: %s", host, why)
        self._ignored = ignored
        self._say("ok")

    def _where(self) -> str:
        return self.url.split("@")[-1]

    def _say(self, why: str) -> None:
        if why != self._why:
            if why == "ok":
                log.warning("gpu-watchdog cluster: following the fleet's view in Redis %s", self._where())
            else:
                log.warning("gpu-watchdog cluster: %s; routing as LiteLLM alone would", why)
        self._why = why

    def _run(self) -> None:
        while not self._stop.is_set():
            self.refresh()
            self._stop.wait(REFRESH)

    def text(self, now: float) -> tuple[str | None, str]:
        """The fleet's rotation document as text, or None with why (nothing read, or too old)."""
        if self._text is None:
            return None, f"cluster view: {self._why}"
        if now - self._good_at > STALE:
            return None, f"cluster view {now - self._good_at:.0f} s old ({self._why})"
        return self._text, "ok"
