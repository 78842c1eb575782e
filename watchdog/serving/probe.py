"""The progress probe: each server's /metrics at a slow cadence, on the HTTP prober's thread.

I/O. It shares the prober's asyncio loop and its transport (containers/http_get.py: a GET on a
fresh connection, no thread), so it costs one small GET and a parse of a few filtered lines
per server per `serving.progress_interval` while the server has nothing to do, and per
`serving.progress_busy_interval` while it has work (progress.reading_interval). Each sample
is folded into the progress book as it arrives; a sample that completes a wedge's evidence
wakes the main loop (`on_wedged`), so a wedged server goes out of rotation within a sample of
its stall window, not a poll later.
The main loop reads the verdicts and never waits for a reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from loguru import logger

from watchdog.containers.http_get import METRICS_BODY_LIMIT, BadAnswer, get
from watchdog.containers.http_probe import Prober
from watchdog.serving.counters import detect_kind, parse_counters
from watchdog.serving.progress import (
    CounterSample,
    ProgressBook,
    ProgressTrack,
    ServerKind,
    Wedged,
    reading_interval,
    wedged,
)

TICK = 0.5


@dataclass(frozen=True)
class ProgressTarget:
    """One container life's metrics endpoint; `kind` None: detected from the names it serves."""

    container_id: str
    life: float | None
    url: str
    kind: ServerKind | None = None
    stall_window: float = 30.0


@dataclass(frozen=True)
class ProgressReading:
    """Why one server's progress is unmonitored (said once by the caller); None: monitored."""

    unmonitored: str | None = None


class ProgressProbe:
    """Fetches every target's metrics every `interval` on the prober's loop; `readings()` for the loop."""

    def __init__(
        self,
        prober: Prober,
        interval: float,
        timeout: float,
        clock: Callable[[], float] = time.time,
        *,
        on_wedged: Callable[[], None] | None = None,
        busy_interval: float | None = None,
    ) -> None:
        self.prober = prober
        self.interval = interval  # between readings of a server with nothing to do
        self.busy_interval = interval if busy_interval is None else min(busy_interval, interval)
        self.timeout = timeout
        self._clock = clock
        self._on_wedged = on_wedged  # called (on the prober's thread) when a sample completes a wedge's evidence
        self._book = ProgressBook()
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
            self._book.keep_only({cid: t.life for cid, t in wanted.items()})

    @property
    def max_age(self) -> float:
        """A sample older than this gives no verdict: the /metrics probe has stopped answering."""
        return 3 * self.interval + self.timeout

    def unmonitored(self) -> dict[str, str]:
        """Container ID -> why its progress is unmonitored."""
        with self._lock:
            return {cid: r.unmonitored for cid, r in self._readings.items() if r.unmonitored}

    def track(self, container_id: str) -> ProgressTrack:
        """What this server's counters showed so far (the canary asks it: did real traffic prove it alive?)."""
        with self._lock:
            return self._book.track(container_id)

    def verdicts(self, now: float) -> dict[str, Wedged]:
        """Container ID -> its wedged verdict, over the monitored targets."""
        with self._lock:
            windows = {
                cid: t.stall_window
                for cid, t in self._targets.items()
                if not (cid in self._readings and self._readings[cid].unmonitored)
            }
            return self._book.verdicts(windows, now, self.max_age)

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
                asyncio.get_running_loop().create_task(self._fetch(target, now))
            await asyncio.sleep(TICK)

    async def _fetch(self, target: ProgressTarget, launched: float) -> None:
        got: ProgressReading | CounterSample | None
        try:
            got = await self._read(target)
        except Exception as exc:  # a probe must never take the prober down
            logger.exception("progress probe of {} crashed: {}", target.url, exc)
            got = None
        newly_wedged = False
        with self._lock:
            self._in_flight.discard(target.container_id)
            if got is None or self._targets.get(target.container_id) != target:
                return
            if isinstance(got, ProgressReading):
                self._readings[target.container_id] = got
                return
            self._readings[target.container_id] = ProgressReading()
            track = self._book.fold(target.container_id, target.life, got)
            self._due[target.container_id] = launched + reading_interval(track, self.interval, self.busy_interval)
            newly_wedged = wedged(track, target.stall_window, got.at, self.max_age) is not None
        if newly_wedged and self._on_wedged is not None:
            self._on_wedged()

    async def _read(self, target: ProgressTarget) -> ProgressReading | CounterSample | None:
        """A sample, or why there is none for good; None: no answer this time (the health probe judges)."""
        try:
            answer = await get(target.url, self.timeout, body_limit=METRICS_BODY_LIMIT)
        except (TimeoutError, OSError, BadAnswer):  # ssl.SSLError is an OSError
            return None
        at = self._clock()
        if answer.status == 404:
            return ProgressReading(
                unmonitored=f"{target.url} answers 404: progress unmonitored (llama.cpp: start it with --metrics)"
            )
        if answer.status != 200:
            return None
        text = answer.body.decode("utf-8", errors="replace")
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
        return sample

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.prober.loop.call_soon_threadsafe(self._task.cancel)
