"""The progress probe: each server's /metrics at a slow cadence, on the HTTP prober's thread.

I/O. It shares the prober's asyncio loop and its per-origin connection pools (a keep-alive
connection per server, no thread, no TLS setup per probe), so it costs one small GET and a
parse of a few filtered lines per server per `serving.progress_interval`. The main loop reads
the latest readings and never waits for one.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import httpx
from loguru import logger

from watchdog.containers.http_probe import Prober
from watchdog.serving.counters import detect_kind, parse_counters
from watchdog.serving.progress import CounterSample, ServerKind

TICK = 0.5


@dataclass(frozen=True)
class ProgressTarget:
    """One container life's metrics endpoint; `kind` None: detected from the names it serves."""

    container_id: str
    life: float | None
    url: str
    kind: ServerKind | None = None


@dataclass(frozen=True)
class ProgressReading:
    """The latest sample of one server, or why it is unmonitored (said once by the caller)."""

    sample: CounterSample | None = None
    unmonitored: str | None = None


class ProgressProbe:
    """Fetches every target's metrics every `interval` on the prober's loop; `readings()` for the loop."""

    def __init__(self, prober: Prober, interval: float, timeout: float, clock: Callable[[], float] = time.time) -> None:
        self.prober = prober
        self.interval = interval
        self.timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._targets: dict[str, ProgressTarget] = {}
        self._readings: dict[str, ProgressReading] = {}
        self._kinds: dict[str, ServerKind] = {}  # detected, per container life
        self._due: dict[str, float] = {}
        self._in_flight: set[str] = set()
        self._task = asyncio.run_coroutine_threadsafe(self._schedule(), prober.loop)

    def set_targets(self, targets: Iterable[ProgressTarget]) -> None:
        with self._lock:
            wanted = {t.container_id: t for t in targets}
            for cid, target in wanted.items():
                if self._targets.get(cid) != target:
                    self._readings.pop(cid, None)
                    self._kinds.pop(cid, None)
                    self._due[cid] = 0.0
            for cid in set(self._targets) - set(wanted):
                self._readings.pop(cid, None)
                self._kinds.pop(cid, None)
                self._due.pop(cid, None)
            self._targets = wanted

    def readings(self) -> dict[str, ProgressReading]:
        with self._lock:
            return dict(self._readings)

    async def _schedule(self) -> None:
        while True:
            now = time.monotonic()
            with self._lock:
                due = [
                    t
                    for cid, t in self._targets.items()
                    if cid not in self._in_flight and now >= self._due.get(cid, 0.0)
                ]
                for target in due:
                    self._in_flight.add(target.container_id)
                    self._due[target.container_id] = now + self.interval
            for target in due:
                asyncio.get_running_loop().create_task(self._fetch(target))
            await asyncio.sleep(TICK)

    async def _fetch(self, target: ProgressTarget) -> None:
        reading: ProgressReading | None
        try:
            reading = await self._read(target)
        except Exception as exc:  # a probe must never take the prober down
            logger.exception("progress probe of {} crashed: {}", target.url, exc)
            reading = None
        with self._lock:
            self._in_flight.discard(target.container_id)
            if reading is not None and self._targets.get(target.container_id) == target:
                self._readings[target.container_id] = reading

    async def _read(self, target: ProgressTarget) -> ProgressReading | None:
        """None: no answer this time (a failing server is the health probe's to judge); keep the last one."""
        client = self.prober.client_for(target.url)
        try:
            response = await asyncio.wait_for(client.get(target.url, timeout=self.timeout), self.timeout + 0.5)
        except (TimeoutError, httpx.HTTPError):
            return None
        at = self._clock()
        if response.status_code == 404:
            return ProgressReading(
                unmonitored=f"{target.url} answers 404: progress unmonitored (llama.cpp: start it with --metrics)"
            )
        if response.status_code != 200:
            return None
        text = response.text
        kind = target.kind or self._kinds.get(target.container_id) or detect_kind(text)
        if kind is None or kind == ServerKind.OPENAI:
            return ProgressReading(
                unmonitored=f"{target.url} shows no llama.cpp or vLLM counters: progress unmonitored "
                "(set the label gpu-watchdog.server)"
            )
        with self._lock:
            self._kinds[target.container_id] = kind
        sample = parse_counters(text, kind, at)
        if sample is None:
            return ProgressReading(unmonitored=f"{target.url} lacks the {kind.value} token or request counters")
        return ProgressReading(sample=sample)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.prober.loop.call_soon_threadsafe(self._task.cancel)
