"""The NVIDIA driver's state as NVML reads it, said once per change.

A hung driver is an alert (GPU actions pause, container healing goes on); an NVML
error is journaled; the driver answering again after a hang is journaled as its
recovery. The same state on the next reading says nothing again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from loguru import logger

from watchdog.entries import ALERT_DRIVER_HUNG, EntryKind
from watchdog.gpu.readings import GpuReading, NvmlState

if TYPE_CHECKING:
    from watchdog.journal import Journal


class DriverState:
    """The last NVML state said; None before the first reading."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.state: NvmlState | None = None

    def observe(self, reading: GpuReading, now: float) -> None:
        state = reading.state
        if state == self.state:
            return
        previous, self.state = self.state, state
        if state == NvmlState.HUNG:
            text = f"NVIDIA driver hung: {reading.detail}; GPU actions paused, container healing goes on"
            logger.critical(text)
            self.journal.record(EntryKind.ALERT, text, ts=now, fault=ALERT_DRIVER_HUNG)
        elif state == NvmlState.NO_DRIVER:
            logger.info("no NVIDIA driver ({}): GPU checks off", reading.detail)
        elif state == NvmlState.ERROR:
            logger.error("NVML error: {}; GPU actions paused until it reads again", reading.detail)
            self.journal.record(EntryKind.GPU_ERROR, f"NVML error: {reading.detail}", ts=now)
        elif previous == NvmlState.HUNG:
            logger.warning("NVIDIA driver answers again: GPU checks resume")
            self.journal.record(EntryKind.DRIVER_RECOVERED, "NVML answers again: GPU checks resume", ts=now)
        elif previous in (None, NvmlState.NO_DRIVER):
            logger.info("NVML: driver {}, {} GPU(s)", reading.driver_version or "?", len(reading.gpus))
