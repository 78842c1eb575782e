"""Observe endpoints: concurrent HTTP probes that never stall the loop.

Probes run on an asyncio loop in their own thread, each a GET on a fresh connection
(containers/http_get.py: a few hundred microseconds of CPU, so probing every second is
cheap). The main loop submits targets and reads the histories; it never waits for a probe.
An endpoint that accepts and never answers costs its own probe one timeout, nothing else.

A suspect (its last probe failed, or one is in flight overdue: serving/suspect.py) is probed
every `suspect_interval` with up to `failure_threshold` probes in flight at once, so a hang
reaches the threshold in about one timeout instead of three. What the watchdog itself causes
never counts as the server failing: a probe that timed out while this prober's own loop was
stalled (a CPU-starved watchdog) is dropped and probed again.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from loguru import logger

from watchdog.containers.diagnose import ProbeHistory
from watchdog.containers.http_get import BadAnswer, get
from watchdog.model import TIMEOUT_DETAIL, ProbeResult, ProbeStatus, ProbeTarget
from watchdog.serving.suspect import overdue_after

HISTORY_LENGTH = 16
SCHEDULER_TICK = 0.2
PROBER_STALL = 1.0  # s the prober's own loop may be late before its timeouts stop counting


@dataclass
class _TargetState:
    target: ProbeTarget
    results: deque[ProbeResult] = field(default_factory=lambda: deque(maxlen=HISTORY_LENGTH))
    first_ok_at: float | None = None
    in_flight: list[float] = field(default_factory=list)  # wall-clock starts of the probes in flight
    last_started: float = 0.0


def classify(status_code: int) -> tuple[ProbeStatus, str]:
    """2xx is up; 503 is a model still loading (llama.cpp); anything else failed."""
    if 200 <= status_code < 300:
        return ProbeStatus.OK, f"HTTP {status_code}"
    if status_code == 503:
        return ProbeStatus.LOADING, "HTTP 503 (loading)"
    return ProbeStatus.FAILED, f"HTTP {status_code}"


async def probe_once(url: str, timeout: float, clock: Callable[[], float]) -> ProbeResult:
    """One GET with its own deadline; every outcome is a ProbeResult, never an exception."""
    started = time.monotonic()
    try:
        answer = await get(url, timeout)
        status, detail = classify(answer.status)
    except TimeoutError:
        status, detail = ProbeStatus.FAILED, f"{TIMEOUT_DETAIL} {timeout:g} s"
    except ConnectionRefusedError:
        status, detail = ProbeStatus.FAILED, "connection refused"
    except ssl.SSLError as exc:
        status, detail = ProbeStatus.FAILED, f"TLS failed: {exc.reason or exc}"
    except BadAnswer as exc:
        status, detail = ProbeStatus.FAILED, f"bad answer after {time.monotonic() - started:.2f} s: {exc}"
    except OSError as exc:
        status, detail = ProbeStatus.FAILED, f"connection failed: {exc.strerror or exc}"
    return ProbeResult(clock(), status, detail, time.monotonic() - started)


class Prober:
    """Background HTTP prober; one history per container life's endpoint."""

    def __init__(
        self,
        timeout: float,
        min_interval: float,
        on_result: Callable[[ProbeTarget, ProbeResult, ProbeResult | None], None] | None = None,
        clock: Callable[[], float] = time.time,
        *,
        on_overdue: Callable[[ProbeTarget], None] | None = None,
    ) -> None:
        self.timeout = timeout
        self.min_interval = min_interval
        self._on_result = on_result
        self._clock = clock
        self._states: dict[str, _TargetState] = {}
        self._fast: frozenset[str] = frozenset()
        self.fast_interval = min_interval
        self.on_overdue = on_overdue  # called (on the prober's thread) when a probe is in flight overdue
        self._suspects: frozenset[str] = frozenset()
        self.suspect_interval = min_interval
        self.suspect_overlap = 1
        self.suspect_after = 1.0  # floor of serving.suspect.overdue_after
        self._last_tick = time.monotonic()
        self._stalls: deque[tuple[float, float]] = deque(maxlen=8)  # monotonic (from, to) the loop was late
        self.dropped = 0  # results dropped as the watchdog's own doing
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="http-prober", daemon=True)
        self._thread.start()
        self._scheduler = asyncio.run_coroutine_threadsafe(self._schedule(), self._loop)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The prober's own asyncio loop: other slow-cadence probes (serving/probe.py) run on it too."""
        return self._loop

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

    def set_fast(self, container_ids: Iterable[str], interval: float) -> None:
        """Probe these every `interval` instead (a backend out of rotation: back the moment it answers)."""
        with self._lock:
            self._fast = frozenset(container_ids)
            self.fast_interval = interval

    def set_suspects(self, container_ids: Iterable[str], interval: float, overlap: int) -> None:
        """Probe these every `interval`, up to `overlap` in flight: a hang reaches its threshold in one timeout."""
        with self._lock:
            self._suspects = frozenset(container_ids)
            self.suspect_interval = interval
            self.suspect_overlap = max(1, overlap)

    async def _schedule(self) -> None:
        """Each target is probed every min_interval, whatever the main loop is doing."""
        while True:
            now = time.monotonic()
            if now - self._last_tick > SCHEDULER_TICK + PROBER_STALL:
                self._stalls.append((self._last_tick, now))
            self._last_tick = now
            self._launch_due()
            await asyncio.sleep(SCHEDULER_TICK)

    def _stalled_during(self, since: float) -> bool:
        """Was this prober's own loop stalled at some point since `since` (monotonic)? Then a timeout is ours."""
        late_now = time.monotonic() - self._last_tick > SCHEDULER_TICK + PROBER_STALL
        return late_now or any(to >= since for _, to in self._stalls)

    def _is_due(self, cid: str, state: _TargetState, now: float) -> bool:
        if cid in self._suspects and len(state.in_flight) < self.suspect_overlap:
            return now - state.last_started >= self.suspect_interval
        interval = self.fast_interval if cid in self._fast else self.min_interval
        return not state.in_flight and now - state.last_started >= interval

    def _launch_due(self) -> None:
        now = time.monotonic()
        with self._lock:
            due = [s for cid, s in self._states.items() if self._is_due(cid, s, now)]
            for state in due:
                state.last_started = now
                state.in_flight.append(self._clock())
                if self.on_overdue is not None:
                    after = overdue_after(tuple(state.results), self.suspect_after, self.timeout)
                    self._loop.call_later(after, self._check_overdue, state, state.in_flight[-1])
        for state in due:
            self._loop.create_task(self._probe(state, state.in_flight[-1]))

    def _check_overdue(self, state: _TargetState, started: float) -> None:
        """A probe still in flight past its overdue time: wake the loop, which makes the server suspect."""
        with self._lock:
            overdue = started in state.in_flight and state.target.container_id in self._states
        if overdue and self.on_overdue is not None:
            self.on_overdue(state.target)

    def probe_round(self, targets: Iterable[ProbeTarget]) -> dict[str, ProbeResult]:
        """Probe every target once, now, and wait (for `run --once` and benchmarks)."""

        async def run_all() -> list[ProbeResult]:
            probes = (probe_once(t.url, self.timeout, self._clock) for t in targets_list)
            return list(await asyncio.gather(*probes))

        targets_list = list(targets)
        results = asyncio.run_coroutine_threadsafe(run_all(), self._loop).result(self.timeout + 5)
        return {t.container_id: r for t, r in zip(targets_list, results, strict=True)}

    async def _probe(self, state: _TargetState, started: float) -> None:
        launched = time.monotonic()
        try:
            result = await probe_once(state.target.url, self.timeout, self._clock)
        except Exception as exc:  # a probe must never take the prober down
            logger.exception("probe of {} crashed: {}", state.target.url, exc)
            result = ProbeResult(self._clock(), ProbeStatus.FAILED, f"probe error: {exc}")
        ours = result.status == ProbeStatus.FAILED and self._stalled_during(launched)
        with self._lock:
            previous = state.results[-1] if state.results else None
            if started in state.in_flight:
                state.in_flight.remove(started)
            if ours:
                self.dropped += 1
                state.last_started = 0.0  # probe again at once
                return
            state.results.append(result)
            if result.status == ProbeStatus.OK and state.first_ok_at is None:
                state.first_ok_at = result.at
        if self._on_result is not None:
            self._on_result(state.target, result, previous)

    def histories(self) -> dict[str, ProbeHistory]:
        """Per container ID: the current life's probe results, oldest first."""
        with self._lock:
            return {
                cid: ProbeHistory(tuple(s.results), s.first_ok_at, min(s.in_flight, default=None))
                for cid, s in self._states.items()
            }

    def close(self) -> None:
        async def shutdown() -> None:
            """Cancel every task on this loop (probes in flight, the progress probe) and let them finish."""
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):  # best effort
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
