"""Prometheus metrics of the daemon (prometheus-client), and the small HTTP server that serves them.

`/metrics` (text exposition), `/healthz` (200 while the loop has cycled recently, else
503) and `/status` (the JSON `gpu-watchdog status --json` prints). GPU series carry the
labels dcgm-exporter uses (`gpu`, `UUID`, `modelName`, `Hostname`) so they join with it.
The server runs on its own daemon thread; a slow scrape never touches the loop.
"""

from __future__ import annotations

import hmac
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from loguru import logger
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from watchdog.model import ContainerSnapshot, ContainerState, Decision, Diagnosis, Verdict

RECOVERY_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800)
LOOP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
GPU_LABELS = ("gpu", "UUID", "modelName", "Hostname")


class Metrics:
    """One registry per daemon (never the global one: tests run several)."""

    def __init__(self, hostname: str | None = None) -> None:
        self.hostname = hostname or socket.gethostname()
        r = self.registry = CollectorRegistry()
        self.restarts = Counter(
            "gpu_watchdog_restarts", "Restarts issued, by container and fault", ["container", "reason"], registry=r
        )
        self.detections = Counter(
            "gpu_watchdog_fault_detections", "Faults detected", ["container", "fault"], registry=r
        )
        self.recovery = Histogram(
            "gpu_watchdog_recovery_seconds",
            "Fault detected -> healthy again",
            ["fault"],
            buckets=RECOVERY_BUCKETS,
            registry=r,
        )
        self.container_up = Gauge("gpu_watchdog_container_up", "1 while the container runs", ["container"], registry=r)
        self.container_healthy = Gauge(
            "gpu_watchdog_container_healthy",
            "1 while it runs with no fault and its checks pass",
            ["container"],
            registry=r,
        )
        self.breaker_open = Gauge(
            "gpu_watchdog_breaker_open", "1 while the crash-loop breaker has given up on it", ["container"], registry=r
        )
        self.gpu_memory_used = Gauge("gpu_watchdog_gpu_memory_used_bytes", "GPU memory used", GPU_LABELS, registry=r)
        self.gpu_memory_total = Gauge("gpu_watchdog_gpu_memory_total_bytes", "GPU memory", GPU_LABELS, registry=r)
        self.gpu_temperature = Gauge("gpu_watchdog_gpu_temperature_celsius", "GPU temperature", GPU_LABELS, registry=r)
        self.gpu_health_score = Gauge(
            "gpu_watchdog_gpu_health_score",
            "GPU health score, 0 (unusable) to 1 (healthy): the product of its contributions (status shows them)",
            GPU_LABELS,
            registry=r,
        )
        self.gpu_maintenance_hours = Gauge(
            "gpu_watchdog_gpu_maintenance_predicted_hours",
            "Hours until the counter is predicted to reach its gpu.predict limit (0: reached; absent: not rising)",
            [*GPU_LABELS, "signal"],
            registry=r,
        )
        self.gpu_xids = Gauge(
            "gpu_watchdog_gpu_xid_events", "Xid events seen since the daemon started", GPU_LABELS, registry=r
        )
        self.gpu_marked = Gauge(
            "gpu_watchdog_gpu_marked",
            "1 while quarantined, drained, resetting or on probation (condition probation: released, not yet proven)",
            [*GPU_LABELS, "condition"],
            registry=r,
        )
        self.nvml_ok = Gauge("gpu_watchdog_nvml_ok", "1 while NVML answers (0: no driver, hung or erring)", registry=r)
        self.in_rotation = Gauge(
            "gpu_watchdog_router_in_rotation",
            "1 while the deployment is in LiteLLM's rotation",
            ["deployment"],
            registry=r,
        )
        self.router_reports = Counter(
            "gpu_watchdog_router_reports", "Failure streaks the LiteLLM proxy reported (router-report)", registry=r
        )
        self.router_ejected = Gauge(
            "gpu_watchdog_router_ejected_deployments", "Deployments the proxy's outlier ejection holds out", registry=r
        )
        self._reports_counted = 0
        self.drains = Gauge(
            "gpu_watchdog_drains",
            "Drains in force (draining, drained, timed-out): router/drain.py",
            ["state"],
            registry=r,
        )
        self.proxy_up = Gauge("gpu_watchdog_router_proxy_up", "1 while the LiteLLM proxy answers", registry=r)
        self.cluster_up = Gauge(
            "gpu_watchdog_cluster_redis_up", "1 while the fleet's Redis takes this host's view (cluster on)", registry=r
        )
        self.cluster_silent = Gauge(
            "gpu_watchdog_cluster_silent_hosts",
            "Other hosts of the fleet that stopped publishing their view",
            registry=r,
        )
        self.engine_up = Gauge("gpu_watchdog_engine_up", "1 while the Docker engine answers", registry=r)
        self.loop_duration = Histogram(
            "gpu_watchdog_loop_duration_seconds", "One cycle of the loop", buckets=LOOP_BUCKETS, registry=r
        )
        self.last_cycle = Gauge("gpu_watchdog_last_cycle_timestamp_seconds", "When the last cycle finished", registry=r)
        self.cycle_errors = Gauge("gpu_watchdog_cycle_errors", "Cycles that failed since the start", registry=r)
        self.notifications = Counter(
            "gpu_watchdog_notifications",
            "Notifications per target and outcome (sent, failed, suppressed, dropped)",
            ["target", "outcome"],
            registry=r,
        )

    # -- updates from the loop ---------------------------------------------------

    def restart_issued(self, container: str, fault: str) -> None:
        self.restarts.labels(container, fault).inc()

    def fault_detected(self, container: str, fault: str) -> None:
        self.detections.labels(container, fault).inc()

    def recovered(self, fault: str, seconds: float) -> None:
        self.recovery.labels(fault).observe(seconds)

    def notification(self, target: str, outcome: str) -> None:
        self.notifications.labels(target, outcome).inc()

    def observe(
        self,
        containers: Sequence[ContainerSnapshot],
        diagnosis: Diagnosis,
        decisions: Sequence[Decision],
        gpu_view: Mapping[str, Any],
        router_view: Mapping[str, Any],
        *,
        engine_up: bool,
    ) -> None:
        """Gauges from what the cycle saw (the same data `status` shows)."""
        self.engine_up.set(1 if engine_up else 0)
        given_up = {d.fault.container for d in decisions if d.verdict in (Verdict.GIVE_UP, Verdict.GIVEN_UP)}
        self.container_up.clear()
        self.container_healthy.clear()
        self.breaker_open.clear()
        for c in containers:
            if not c.managed:
                continue
            self.container_up.labels(c.name).set(1 if c.state == ContainerState.RUNNING else 0)
            self.container_healthy.labels(c.name).set(1 if c.id in diagnosis.ready else 0)
            self.breaker_open.labels(c.name).set(1 if c.name in given_up else 0)
        self.nvml_ok.set(1 if gpu_view.get("nvml") == "ok" else 0)
        for gauge in (
            self.gpu_memory_used,
            self.gpu_memory_total,
            self.gpu_temperature,
            self.gpu_health_score,
            self.gpu_maintenance_hours,
            self.gpu_xids,
            self.gpu_marked,
        ):
            gauge.clear()
        on_probation = {p["uuid"] for p in gpu_view.get("probation") or []}
        for row in gpu_view.get("gpus") or []:
            labels = (str(row.get("index")), str(row.get("uuid") or ""), str(row.get("name") or ""), self.hostname)
            if row.get("memory_used") is not None:
                self.gpu_memory_used.labels(*labels).set(row["memory_used"])
            if row.get("memory_total") is not None:
                self.gpu_memory_total.labels(*labels).set(row["memory_total"])
            if row.get("temperature") is not None:
                self.gpu_temperature.labels(*labels).set(row["temperature"])
            if row.get("health_score"):
                self.gpu_health_score.labels(*labels).set(row["health_score"]["score"])
            for signal, trend in (row.get("maintenance") or {}).items():
                if trend.get("predicted_hours") is not None:
                    self.gpu_maintenance_hours.labels(*labels, signal).set(trend["predicted_hours"])
            self.gpu_xids.labels(*labels).set(row.get("xids") or 0)
            if row.get("mark"):
                self.gpu_marked.labels(*labels, row["mark"]["condition"]).set(1)
            elif row.get("uuid") in on_probation:
                self.gpu_marked.labels(*labels, "probation").set(1)
        self.in_rotation.clear()
        litellm = router_view.get("litellm") or {}
        for deployment, entry in (litellm.get("rotation") or {}).items():
            self.in_rotation.labels(deployment).set(1 if entry.get("in") else 0)
        outliers = litellm.get("outliers") or {}
        self.router_ejected.set(sum(1 for row in outliers.values() if row.get("ejected")))
        reports = int(litellm.get("router_reports") or 0)
        if reports > self._reports_counted:
            self.router_reports.inc(reports - self._reports_counted)
        self._reports_counted = reports
        if litellm.get("proxy_up") is not None:
            self.proxy_up.set(1 if litellm["proxy_up"] else 0)
        cluster = router_view.get("cluster") or {}
        if cluster.get("up") is not None:
            self.cluster_up.set(1 if cluster["up"] else 0)
            self.cluster_silent.set(len(cluster.get("silent_hosts") or {}))
        states = [row.get("state") for row in (router_view.get("drains") or {}).values()]
        for state in ("draining", "drained", "timed-out"):
            self.drains.labels(state).set(states.count(state))

    def cycle_done(self, duration: float, now: float, errors: int) -> None:
        self.loop_duration.observe(duration)
        self.last_cycle.set(now)
        self.cycle_errors.set(errors)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


READ_PATHS = ("/metrics", "/healthz", "/status")
CONTROL_PATH = re.compile(r"^/(reset|gpu/release)/([^/]+)$")
TOKEN_ENV = "GPU_WATCHDOG_HTTP_TOKEN"

# One action (reset, gpu/release) on one name -> (HTTP status, one line of text).
Control = Callable[[str, str], tuple[int, str]]


class HttpServer:
    """/metrics, /healthz, /status on a daemon thread; POST /reset/NAME and /gpu/release/UUID with a token.

    Reading is open (on 127.0.0.1 by default); changing state needs `Authorization: Bearer <token>`,
    the token from GPU_WATCHDOG_HTTP_TOKEN. Without a token those endpoints are off (403).
    """

    def __init__(
        self,
        listen: tuple[str, int],
        metrics: Metrics,
        healthy: Callable[[], tuple[bool, str]],
        status: Callable[[], dict[str, Any]],
        *,
        control: Control | None = None,
        token: str | None = None,
    ) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "gpu-watchdog"

            def log_message(self, fmt: str, *args: object) -> None:  # scrapes are not log lines
                return

            def do_POST(self) -> None:
                path = self.path.split("?", 1)[0]
                self._drain()
                route = CONTROL_PATH.match(path)
                if route is None:
                    if path in READ_PATHS:
                        self._send(HTTPStatus.METHOD_NOT_ALLOWED, b"read-only: use GET\n", allow="GET")
                    else:
                        self._send(HTTPStatus.NOT_FOUND, b"not found: POST /reset/NAME or /gpu/release/UUID\n")
                    return
                if outer.token is None or outer.control is None:
                    text = f"state-changing endpoints are off: set {TOKEN_ENV} for the daemon to turn them on\n"
                    self._send(HTTPStatus.FORBIDDEN, text.encode())
                    return
                given = self.headers.get("Authorization", "").encode()
                if not hmac.compare_digest(given, f"Bearer {outer.token}".encode()):
                    logger.bind(client=self.client_address[0]).warning("http POST {}: refused, bad or no token", path)
                    self._send(HTTPStatus.UNAUTHORIZED, b"token required: Authorization: Bearer <token>\n", bearer=True)
                    return
                action, name = route.group(1), unquote(route.group(2))
                try:
                    code, text = outer.control(action, name)
                except Exception as exc:  # a failing action must not take the server down
                    logger.warning("http POST {}: {}", path, exc)
                    code, text = HTTPStatus.INTERNAL_SERVER_ERROR, f"error: {type(exc).__name__}: {exc}"
                logger.bind(client=self.client_address[0]).warning("http POST {}: {} {}", path, code, text)
                self._send(code, (text + "\n").encode())

            def _refuse_method(self) -> None:
                path = self.path.split("?", 1)[0]
                allow = "POST" if CONTROL_PATH.match(path) else "GET"
                self._send(HTTPStatus.METHOD_NOT_ALLOWED, f"use {allow}\n".encode(), allow=allow)

            do_PUT = do_DELETE = do_PATCH = _refuse_method

            def _drain(self) -> None:
                """Read (and ignore) a request body, up to 64 KiB, so the connection stays sane."""
                length = min(int(self.headers.get("Content-Length") or 0), 1 << 16)
                if length > 0:
                    self.rfile.read(length)

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if CONTROL_PATH.match(path):
                    self._refuse_method()
                    return
                try:
                    if path == "/metrics":
                        self._send(HTTPStatus.OK, outer.metrics.exposition(), CONTENT_TYPE_LATEST)
                    elif path == "/healthz":
                        ok, why = outer.healthy()
                        self._send(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE, (why + "\n").encode())
                    elif path == "/status":
                        self._send(HTTPStatus.OK, json.dumps(outer.status()).encode(), "application/json")
                    else:
                        self._send(HTTPStatus.NOT_FOUND, b"not found: try /metrics, /healthz or /status\n")
                except Exception as exc:  # a failing page must not take the server down
                    logger.warning("http {}: {}", path, exc)
                    self._send(HTTPStatus.INTERNAL_SERVER_ERROR, f"error: {exc}\n".encode())

            def _send(
                self,
                code: int,
                body: bytes,
                content_type: str = "text/plain; charset=utf-8",
                allow: str | None = None,
                bearer: bool = False,
            ) -> None:
                self.send_response(code)
                if allow is not None:
                    self.send_header("Allow", allow)
                if bearer:
                    self.send_header("WWW-Authenticate", 'Bearer realm="gpu-watchdog"')
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.metrics = metrics
        self.healthy = healthy
        self.status = status
        self.control = control
        self.token = token or None
        self.server = ThreadingHTTPServer(listen, Handler)
        self.server.daemon_threads = True
        self.address = f"{listen[0]}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="http", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def recent(last_cycle_at: float | None, max_age: float, now: float | None = None) -> tuple[bool, str]:
    now = time.time() if now is None else now
    if last_cycle_at is None:
        return False, "no cycle yet"
    age = now - last_cycle_at
    if age > max_age:
        return False, f"last cycle {age:.1f} s ago (more than {max_age:g} s): loop hung or engine down"
    return True, f"ok: last cycle {age:.1f} s ago"
