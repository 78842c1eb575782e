"""Observe endpoints: concurrent HTTP probes that never stall the loop.

Probes run on an asyncio loop in their own thread with one shared httpx
client (connection reuse, no per-cycle TLS setup). The main loop submits
targets and reads the histories; it never waits for a probe. An endpoint that
accepts and never answers costs its own probe one timeout, nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import httpx
from loguru import logger

from watchdog.containers.diagnose import ProbeHistory
from watchdog.model import ProbeResult, ProbeStatus, ProbeTarget

HISTORY_LENGTH = 16
SCHEDULER_TICK = 0.2
STALE_CONNECTION_ERRORS = (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)


@dataclass
class _TargetState:
    target: ProbeTarget
    results: deque[ProbeResult] = field(default_factory=lambda: deque(maxlen=HISTORY_LENGTH))
    first_ok_at: float | None = None
    in_flight: bool = False
    last_started: float = 0.0


def classify(status_code: int) -> tuple[ProbeStatus, str]:
    """2xx is up; 503 is a model still loading (llama.cpp); anything else failed."""
    if 200 <= status_code < 300:
        return ProbeStatus.OK, f"HTTP {status_code}"
    if status_code == 503:
        return ProbeStatus.LOADING, "HTTP 503 (loading)"
    return ProbeStatus.FAILED, f"HTTP {status_code}"


async def probe_once(client: httpx.AsyncClient, url: str, timeout: float, clock: Callable[[], float]) -> ProbeResult:
    """One GET with its own deadline; every outcome is a ProbeResult, never an exception."""
    started = time.monotonic()
    try:
        try:
            response = await asyncio.wait_for(client.get(url, timeout=timeout), timeout + 0.5)
        except STALE_CONNECTION_ERRORS:
            # A pooled keep-alive connection the server closed while idle (cpp-httplib closes
            # after 5 s, our poll interval) is not the server failing: one retry on a new connection.
            remaining = max(0.1, timeout - (time.monotonic() - started))
            response = await asyncio.wait_for(client.get(url, timeout=remaining), remaining + 0.5)
        status, detail = classify(response.status_code)
    except (TimeoutError, httpx.TimeoutException):
        status, detail = ProbeStatus.FAILED, f"timeout after {timeout:g} s"
    except httpx.ConnectError as exc:
        status, detail = ProbeStatus.FAILED, f"connection failed: {exc}" if str(exc) else "connection refused"
    except httpx.HTTPError as exc:
        cause = exc.__cause__ or exc.__context__
        why = str(exc) or (f"{type(cause).__name__}: {cause}" if cause else "no detail")
        status, detail = ProbeStatus.FAILED, f"{type(exc).__name__} after {time.monotonic() - started:.2f} s: {why}"
    return ProbeResult(clock(), status, detail, time.monotonic() - started)


class Prober:
    """Background HTTP prober; one history per container life's endpoint."""

    def __init__(
        self,
        timeout: float,
        min_interval: float,
        on_result: Callable[[ProbeTarget, ProbeResult, ProbeResult | None], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.timeout = timeout
        self.min_interval = min_interval
        self._on_result = on_result
        self._clock = clock
        self._states: dict[str, _TargetState] = {}
        self._fast: frozenset[str] = frozenset()
        self.fast_interval = min_interval
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="http-prober", daemon=True)
        # One small client per endpoint origin: httpcore's pool walks every connection it holds
        # (with a syscall each) on every request event, so one pool over 64 endpoints goes
        # quadratic (profiled: 70% of the prober's time). The TLS context is built once, shared.
        self._ssl = httpx.create_ssl_context()
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._thread.start()
        self._scheduler = asyncio.run_coroutine_threadsafe(self._schedule(), self._loop)

    def _client_for(self, url: str) -> httpx.AsyncClient:
        """On the prober's loop only. trust_env=False: never a proxy from the environment in between."""
        origin = _origin(url)
        client = self._clients.get(origin)
        if client is None:
            client = httpx.AsyncClient(
                trust_env=False,
                follow_redirects=False,
                verify=self._ssl,
                limits=httpx.Limits(max_connections=4, max_keepalive_connections=1),
            )
            self._clients[origin] = client
        return client

    def _close_unused_clients(self) -> None:
        with self._lock:
            wanted = {_origin(s.target.url) for s in self._states.values()}
        for origin in [o for o in self._clients if o not in wanted]:
            self._loop.create_task(self._clients.pop(origin).aclose())

    def set_targets(self, targets: Iterable[ProbeTarget]) -> None:
        """The endpoints to probe from now on; a new container life is probed at once."""
        with self._lock:
            live: dict[str, _TargetState] = {}
            for target in targets:
                state = self._states.get(target.container_id)
                if state is None or state.target.key != target.key:
                    state = _TargetState(target)
                live[target.container_id] = state
            self._states = live
        self._loop.call_soon_threadsafe(self._launch_due)
        self._loop.call_soon_threadsafe(self._close_unused_clients)

    def set_fast(self, container_ids: Iterable[str], interval: float) -> None:
        """Probe these every `interval` instead (a backend out of rotation: back the moment it answers)."""
        with self._lock:
            self._fast = frozenset(container_ids)
            self.fast_interval = interval

    async def _schedule(self) -> None:
        """Each target is probed every min_interval, whatever the main loop is doing."""
        while True:
            self._launch_due()
            await asyncio.sleep(SCHEDULER_TICK)

    def _launch_due(self) -> None:
        now = time.monotonic()
        with self._lock:
            due = [
                s
                for cid, s in self._states.items()
                if not s.in_flight
                and now - s.last_started >= (self.fast_interval if cid in self._fast else self.min_interval)
            ]
            for state in due:
                state.in_flight = True
                state.last_started = now
        for state in due:
            self._loop.create_task(self._probe(state))

    def probe_round(self, targets: Iterable[ProbeTarget]) -> dict[str, ProbeResult]:
        """Probe every target once, now, and wait (for `run --once` and benchmarks)."""

        async def run_all() -> list[ProbeResult]:
            probes = (probe_once(self._client_for(t.url), t.url, self.timeout, self._clock) for t in targets_list)
            return list(await asyncio.gather(*probes))

        targets_list = list(targets)
        results = asyncio.run_coroutine_threadsafe(run_all(), self._loop).result(self.timeout + 5)
        return {t.container_id: r for t, r in zip(targets_list, results, strict=True)}

    async def _probe(self, state: _TargetState) -> None:
        try:
            result = await probe_once(self._client_for(state.target.url), state.target.url, self.timeout, self._clock)
        except Exception as exc:  # a probe must never take the prober down
            logger.exception("probe of {} crashed: {}", state.target.url, exc)
            result = ProbeResult(self._clock(), ProbeStatus.FAILED, f"probe error: {exc}")
        with self._lock:
            previous = state.results[-1] if state.results else None
            state.results.append(result)
            if result.status == ProbeStatus.OK and state.first_ok_at is None:
                state.first_ok_at = result.at
            state.in_flight = False
        if self._on_result is not None:
            self._on_result(state.target, result, previous)

    def histories(self) -> dict[str, ProbeHistory]:
        """Per container ID: the current life's probe results, oldest first."""
        with self._lock:
            return {cid: ProbeHistory(tuple(s.results), s.first_ok_at) for cid, s in self._states.items()}

    def close(self) -> None:
        async def shutdown() -> None:
            self._scheduler.cancel()
            for client in list(self._clients.values()):
                await client.aclose()

        with contextlib.suppress(Exception):  # best effort
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def _origin(url: str) -> str:
    parsed = httpx.URL(url)
    return f"{parsed.scheme}://{parsed.host}:{parsed.port}"
