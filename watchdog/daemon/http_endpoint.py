"""The daemon's HTTP endpoint wired to the running loop: what /status, /healthz and the POST actions read and do. I/O.

The server itself (routes, token, threads) is `watchdog.ops.metrics.HttpServer`; this says where its
pages come from. Each page and action opens an engine connection (and a journal connection) of
its own: the loop's client and journal stay the loop's, and the loop sees an action's journal
write at its next cycle.
"""

from __future__ import annotations

import os
import time
from http import HTTPStatus
from typing import Any

from loguru import logger

from watchdog.config import parse_listen
from watchdog.daemon.loop import Watchdog
from watchdog.journal import Journal
from watchdog.ops.connect import fleet_snapshot
from watchdog.ops.metrics import TOKEN_ENV, HttpServer, recent
from watchdog.ops.operator_actions import NotFound, release_gpu, reset_container
from watchdog.ops.status import build_status, daemon_max_age


def start_http(watchdog: Watchdog, journal: Journal) -> HttpServer | None:
    """The metrics server; a port already taken is said once and the daemon runs on without it."""
    config = watchdog.config
    listen = parse_listen(config.http)
    if listen is None:
        return None

    def status_doc() -> dict[str, Any]:
        containers = fleet_snapshot(config)  # the HTTP thread's own connection; the loop's client stays the loop's
        return build_status(containers, journal, watchdog.config, time.time(), config.resolved_state_dir())

    def healthy() -> tuple[bool, str]:
        return recent(watchdog.last_cycle_at, daemon_max_age(watchdog.config.poll_interval))

    def control(action: str, name: str) -> tuple[int, str]:
        """What `gpu-watchdog reset` / `gpu release` do, through a connection of its own (the loop sees it)."""
        own = Journal.in_dir(config.resolved_state_dir())
        try:
            if action == "reset":
                managed = [c.name for c in fleet_snapshot(config) if c.managed]
                text = reset_container(own, name, managed, "POST /reset", time.time())
            else:
                text = release_gpu(own, name, "POST /gpu/release", time.time())
        except NotFound as exc:
            return HTTPStatus.NOT_FOUND, str(exc)
        finally:
            own.close()
        watchdog.wake.set()
        return HTTPStatus.OK, text

    token = os.environ.get(TOKEN_ENV, "").strip() or None
    try:
        server = HttpServer(listen, watchdog.metrics, healthy, status_doc, control=control, token=token)
    except OSError as exc:
        logger.error("http {}: cannot listen ({}); metrics off, healing goes on. Set http: or --http", config.http, exc)
        return None
    server.start()
    logger.info(
        "http: /metrics, /healthz, /status on http://{}; POST /reset/NAME, /gpu/release/UUID {}",
        server.address,
        "with the token" if token else f"off (no {TOKEN_ENV})",
    )
    return server
