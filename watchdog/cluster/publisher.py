"""This host's view into the fleet's Redis, on a thread of its own: the loop never waits on Redis.

The router sync hands over its rotation after each cycle (`offer`). The thread publishes at once
when the rotation changed, and otherwise every TTL / 3 as a heartbeat, in one round trip (a
pipeline: SET P:host:NAME with its TTL, ZADD P:hosts). Each heartbeat pings the Docker engine, so a
host whose engine is down says so ("engine": "down": every proxy takes its deployments out) while
the loop itself waits for the engine. A watchdog writes only its own host's keys.

Fail open: when Redis does not answer, the watchdog goes on healing locally; the fact is said once
(log, journal `cluster-down`, which notifies) and again when Redis is back (`cluster-up`), when the
view is published again in full. Status carries the link's state; the proxies, not hearing from
this host, route its deployments as LiteLLM alone would once its key expires.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from loguru import logger

from watchdog.cluster.fleet_view import (
    HostView,
    PublishedDeployment,
    host_document,
    host_key,
    hosts_key,
    qualified,
    silent_hosts,
    state_of,
)
from watchdog.cluster.redis_link import connect, error_text, host_name, redis_errors, where
from watchdog.config import Config
from watchdog.entries import ALERT_HOST_SILENT, EntryKind
from watchdog.router.litellm_config import RouterDeployment
from watchdog.subsystem import Services

SILENT_FORGET = 86400.0  # s: a host silent longer than a day was taken out of the fleet, not lost


class ClusterPublisher:
    """Publishes the latest rotation of this host; `view()` for status."""

    def __init__(self, config: Config, services: Services) -> None:
        self.config = config
        self.journal = services.journal
        self.client = services.client
        self.clock = services.clock
        self._deployments: tuple[PublishedDeployment, ...] = ()
        self._gpus: tuple[Mapping[str, Any], ...] = ()
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._redis: Any = None
        self._lock = threading.Lock()  # one publish at a time: the thread's, or a caller's (`publish_now`)
        self.up: bool | None = None  # None: not tried yet
        self.error = ""
        self.published_at: float | None = None
        self.publishes = 0
        self.failures = 0
        self.silent: dict[str, float] = {}  # other hosts gone silent -> their last heartbeat

    @property
    def enabled(self) -> bool:
        return self.config.cluster.enabled

    @property
    def host(self) -> str:
        return host_name(self.config.cluster)

    @property
    def ttl(self) -> float:
        return self.config.cluster.ttl_for(self.config.poll_interval)

    def apply_config(self, config: Config) -> None:
        changed = config.cluster != self.config.cluster
        self.config = config
        if changed:
            self._redis = None  # the next publish connects to the new server
            self._changed.set()
        if self.enabled:
            self._start()

    def offer(
        self, rotation: Mapping[str, Mapping[str, Any]], deployments: Sequence[RouterDeployment], gpus: Sequence[Any]
    ) -> None:
        """The router's rotation of this cycle (deployment id -> container, in, reason, share), its config, its GPUs."""
        if not self.enabled:
            return
        host = self.host
        by_id = {d.id: d for d in deployments}
        published = tuple(
            PublishedDeployment(
                qualified(host, ident),
                str(row.get("container") or ""),
                by_id[ident].model if ident in by_id else "",
                state_of(bool(row.get("in")), str(row.get("reason") or "")),
                str(row.get("reason") or ""),
                float(row.get("share") or 0.0) if row.get("share") is not None else 1.0,
                by_id[ident].api_base if ident in by_id else None,
                by_id[ident].weight if ident in by_id else None,
            )
            for ident, row in sorted(rotation.items())
        )
        summary = tuple(
            {"index": g.get("index"), "uuid": g.get("uuid"), "score": (g.get("health_score") or {}).get("score")}
            for g in gpus
            if isinstance(g, Mapping)
        )
        if published != self._deployments or summary != self._gpus:
            self._deployments, self._gpus = published, summary
            self._changed.set()
        self._start()

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="cluster-publish", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._changed.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    # -- the thread ------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._changed.wait(max(0.5, self.ttl / 3))
            self._changed.clear()
            if self._stop.is_set() or not self.enabled:
                continue
            try:
                self.publish_now()
            except Exception as exc:  # a bug here must not end the thread: said, and tried again
                logger.exception("cluster: publishing failed: {}", exc)

    def _engine(self) -> str:
        try:
            self.client.ping()
            return "up"
        except Exception:  # any failure to answer is "down" for the fleet
            return "down"

    def document(self, now: float) -> dict[str, Any]:
        view = HostView(self.host, now, self.ttl, self._engine(), self._deployments, self._gpus)
        return host_document(view)

    def publish_now(self) -> bool:
        """One publish (SET with TTL + ZADD, one round trip); the link's state said on a change."""
        with self._lock:
            return self._publish()

    def _publish(self) -> bool:
        now = self.clock()
        cluster = self.config.cluster
        body = json.dumps(self.document(now), separators=(",", ":"))
        try:
            if self._redis is None:
                self._redis = connect(cluster)
            pipe = self._redis.pipeline(transaction=False)
            pipe.set(host_key(cluster.key_prefix, self.host), body, ex=max(1, math.ceil(self.ttl)))
            pipe.zadd(hosts_key(cluster.key_prefix), {self.host: now})
            pipe.zrange(hosts_key(cluster.key_prefix), 0, -1, withscores=True)
            members = pipe.execute()[-1]
        except redis_errors() as exc:
            self.failures += 1
            self._down(error_text(exc), now)
            return False
        self.publishes += 1
        self.published_at = now
        self._watch_peers(members, now)
        if self.up is not True:
            if self.up is False:
                text = f"cluster: Redis {where(cluster)} answers again; this host's view is published again"
                logger.info(text)
                self.journal.record(EntryKind.CLUSTER_UP, text, ts=now)
            else:
                logger.info("cluster: publishing this host ({}) to Redis {}", self.host, where(cluster))
        self.up, self.error = True, ""
        return True

    def _watch_peers(self, members: Any, now: float) -> None:
        """Each other host that stopped publishing, said once (an alert that names it), and once when it is back."""
        heartbeats = {(h.decode() if isinstance(h, bytes) else str(h)): float(at) for h, at in members or []}
        silent = silent_hosts(heartbeats, me=self.host, now=now, after=2 * self.ttl, forget_after=SILENT_FORGET)
        for host, at in silent.items():
            if host not in self.silent:
                text = (
                    f"cluster: host {host} has published nothing for {now - at:.0f} s (its watchdog, engine or "
                    "machine is down): the proxies route its deployments as LiteLLM alone would"
                )
                logger.bind(host=host).critical("ALERT: {}", text)
                self.journal.record(EntryKind.ALERT, text, ts=now, fault=ALERT_HOST_SILENT, detail={"host": host})
        for host in set(self.silent) - set(silent):
            if host in heartbeats and now - heartbeats[host] <= 2 * self.ttl:
                text = f"cluster: host {host} publishes again"
                logger.bind(host=host).info(text)
                self.journal.record(EntryKind.HOST_BACK, text, ts=now, detail={"host": host})
        self.silent = silent

    def _down(self, error: str, now: float) -> None:
        if self.up is False and error == self.error:
            return
        text = (
            f"cluster: Redis {where(self.config.cluster)} unreachable ({error}): healing goes on locally; "
            "the proxies route this host's deployments as LiteLLM alone would once its view expires"
        )
        logger.warning(text)
        if self.up is not False:
            self.journal.record(EntryKind.CLUSTER_DOWN, text, ts=now)
        self.up, self.error = False, error

    def view(self) -> dict[str, Any] | None:
        """For status."""
        if not self.enabled:
            return None
        return {
            "redis": where(self.config.cluster),
            "host": self.host,
            "up": self.up,
            "error": self.error or None,
            "published_at": self.published_at,
            "publishes": self.publishes,
            "failures": self.failures,
            "ttl": self.ttl,
            "silent_hosts": dict(self.silent),
        }
