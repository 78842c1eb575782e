"""Reads the GPUs on its own thread, so the loop never waits on NVML.

The loop takes the latest reading each cycle. A hung driver makes readings
"driver-hung" after `deadline` (GpuProbe), and the loop goes on healing
containers; only GPU-driven actions stop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from loguru import logger

from watchdog.gpu.nvml import GpuProbe
from watchdog.gpu.readings import GpuReading, NvmlState

NO_DRIVER_RETRY = 60.0  # a driver may be loaded later; look again now and then, quietly


class GpuMonitor:
    """One reading every `interval`; `on_change` wakes the loop when something it judges changed."""

    def __init__(
        self,
        probe: GpuProbe,
        interval: float,
        on_change: Callable[[], None],
        threshold: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.probe = probe
        self.interval = interval
        self.threshold = threshold
        self._on_change = on_change
        self._clock = clock
        self._latest: GpuReading | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._signature: Any = None
        self.known_uuids: dict[int, str] = {}  # index -> UUID, for GPUs that stop telling theirs
        self.reads = 0
        self.first_read = threading.Event()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="gpu-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=self.probe.deadline + 1.0)

    def latest(self) -> GpuReading | None:
        with self._lock:
            return self._latest

    def read_now(self) -> GpuReading:
        """A fresh reading (for verifying a GPU reset); blocks up to the deadline."""
        return self._remember(self.probe.read())

    def _remember(self, reading: GpuReading) -> GpuReading:
        gpus = []
        for gpu in reading.gpus:
            if gpu.uuid:
                self.known_uuids[gpu.index] = gpu.uuid
            elif gpu.index in self.known_uuids:
                gpu = replace(gpu, uuid=self.known_uuids[gpu.index])
            gpus.append(gpu)
        return replace(reading, gpus=tuple(gpus))

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                reading = self._remember(self.probe.read())
            except Exception as exc:  # never let the thread die: the loop would see stale data
                logger.exception("GPU read failed: {}", exc)
                reading = GpuReading(NvmlState.ERROR, self._clock(), 0.0, detail=f"{type(exc).__name__}: {exc}")
            self.reads += 1
            with self._lock:
                self._latest = reading
            signature = self._signature_of(reading)
            if signature != self._signature:
                self._signature = signature
                self._on_change()
            self.first_read.set()
            wait = NO_DRIVER_RETRY if reading.state == NvmlState.NO_DRIVER else self.interval
            self._stopping.wait(wait)

    def _signature_of(self, reading: GpuReading) -> Any:
        """What the loop's verdicts depend on; memory is reduced to above/below the zero-VRAM threshold."""
        return (
            reading.state,
            tuple(
                (
                    g.index,
                    g.uuid,
                    g.health,
                    g.memory_used is not None and g.memory_used < self.threshold,
                    tuple(sorted(p.pid for p in g.processes)),
                )
                for g in reading.gpus
            ),
        )
