"""Observe the GPUs through NVML (module `pynvml`), always under a deadline.

A hung driver hangs NVML calls (even nvmlInit), so every read runs on one
dedicated worker thread and the caller waits at most `deadline` seconds. After
a timeout the reading is "driver-hung" at once, without piling up more stuck
threads, until the stuck call returns. No driver at all is "no-driver".

Per field, NotSupported means unmonitored, never failed (consumer cards such as
the seeds' P106 support little). A lost GPU (NVMLError_GpuIsLost) is reported
as such and keyed by index, since it may no longer tell its UUID.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from watchdog.gpu.readings import GpuHealth, GpuProcess, GpuReading, GpuSnapshot, NvmlState


class _Lost(Exception):
    """The GPU answered GpuIsLost: stop reading it."""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_gpus(nvml: Any, clock: Callable[[], float] = time.time) -> GpuReading:
    """Read every GPU once. Blocking I/O: call it through GpuProbe, never on the loop."""
    started = time.monotonic()

    def done(state: NvmlState, gpus: tuple[GpuSnapshot, ...] = (), detail: str = "", **extra: Any) -> GpuReading:
        return GpuReading(state, clock(), time.monotonic() - started, gpus, detail, **extra)

    try:
        nvml.nvmlInit()
    except (nvml.NVMLError_LibraryNotFound, nvml.NVMLError_DriverNotLoaded) as exc:
        return done(NvmlState.NO_DRIVER, detail=f"NVML unavailable: {exc}")
    except nvml.NVMLError as exc:
        return done(NvmlState.ERROR, detail=f"nvmlInit failed: {exc}")
    try:
        driver = _text(nvml.nvmlSystemGetDriverVersion())
    except nvml.NVMLError:
        driver = None
    try:
        count = nvml.nvmlDeviceGetCount()
    except nvml.NVMLError as exc:
        return done(NvmlState.ERROR, detail=f"nvmlDeviceGetCount failed: {exc}", driver_version=driver)
    gpus = tuple(_read_one(nvml, index) for index in range(count))
    return done(NvmlState.OK, gpus, driver_version=driver)


def _read_one(nvml: Any, index: int) -> GpuSnapshot:
    unsupported: list[str] = []
    errors: list[str] = []

    def query(name: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except nvml.NVMLError_GpuIsLost as exc:
            raise _Lost(str(exc)) from exc
        except (nvml.NVMLError_NotSupported, nvml.NVMLError_FunctionNotFound):
            unsupported.append(name)
        except nvml.NVMLError as exc:
            errors.append(f"{name}: {exc}")
        return None

    try:
        handle = query("handle", lambda: nvml.nvmlDeviceGetHandleByIndex(index))
        if handle is None:
            return GpuSnapshot(index, GpuHealth.ERROR, error="; ".join(errors) or "no handle")
        uuid = query("uuid", lambda: _text(nvml.nvmlDeviceGetUUID(handle)))
        pci = query("pci", lambda: nvml.nvmlDeviceGetPciInfo_v3(handle))
        name = query("name", lambda: _text(nvml.nvmlDeviceGetName(handle)))
        memory = query("memory", lambda: _memory(nvml, handle))
        processes = query("processes", lambda: nvml.nvmlDeviceGetComputeRunningProcesses(handle)) or []
        temperature = query("temperature", lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))
        slowdown = query("temperature_slowdown", lambda: _threshold(nvml, handle, "SLOWDOWN"))
        shutdown = query("temperature_shutdown", lambda: _threshold(nvml, handle, "SHUTDOWN"))
        reasons = query("clock_event_reasons", lambda: _clock_reasons(nvml, handle))
        ecc = query("ecc", lambda: _ecc(nvml, handle, "UNCORRECTED", "VOLATILE"))
        ecc_corrected = query("ecc_corrected", lambda: _ecc(nvml, handle, "CORRECTED", "VOLATILE"))
        ecc_aggregate = query("ecc_aggregate", lambda: _ecc(nvml, handle, "UNCORRECTED", "AGGREGATE"))
        corrected_aggregate = query("ecc_corrected_aggregate", lambda: _ecc(nvml, handle, "CORRECTED", "AGGREGATE"))
        retired = query(
            "retired_pages",
            lambda: nvml.nvmlDeviceGetRetiredPages(handle, nvml.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR),
        )
        retired_sbe = query(
            "retired_pages_single_bit",
            lambda: nvml.nvmlDeviceGetRetiredPages(
                handle, nvml.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS
            ),
        )
        retired_pending = query("retired_pages_pending", lambda: nvml.nvmlDeviceGetRetiredPagesPendingStatus(handle))
        remapped = query("remapped_rows", lambda: nvml.nvmlDeviceGetRemappedRows(handle))
        replays = query("pcie_replays", lambda: nvml.nvmlDeviceGetPcieReplayCounter(handle))
    except _Lost as exc:
        return GpuSnapshot(index, GpuHealth.LOST, error=f"GPU is lost: {exc}")
    return GpuSnapshot(
        index=index,
        health=GpuHealth.ERROR if errors and memory is None else GpuHealth.OK,
        uuid=uuid,
        bus_id=_text(pci.busId) if pci is not None else None,
        name=name,
        memory_total=int(memory.total) if memory is not None else None,
        memory_used=int(memory.used) if memory is not None else None,
        temperature=int(temperature) if temperature is not None else None,
        temperature_slowdown=_int(slowdown),
        temperature_shutdown=_int(shutdown),
        clock_event_reasons=_int(reasons),
        ecc_uncorrected=_int(ecc),
        ecc_corrected=_int(ecc_corrected),
        ecc_uncorrected_aggregate=_int(ecc_aggregate),
        ecc_corrected_aggregate=_int(corrected_aggregate),
        retired_pages=len(retired) if retired is not None else None,
        retired_pages_single_bit=len(retired_sbe) if retired_sbe is not None else None,
        retired_pages_pending=bool(retired_pending) if retired_pending is not None else None,
        remapped_rows_pending=bool(remapped[2]) if remapped is not None else None,
        remapped_rows_correctable=int(remapped[0]) if remapped is not None else None,
        remapped_rows_uncorrectable=int(remapped[1]) if remapped is not None else None,
        remapped_rows_failed=bool(remapped[3]) if remapped is not None else None,
        pcie_replays=_int(replays),
        processes=tuple(
            GpuProcess(int(p.pid), int(p.usedGpuMemory) if p.usedGpuMemory is not None else None) for p in processes
        ),
        unsupported=tuple(unsupported),
        error="; ".join(errors) or None,
    )


def _int(value: Any) -> int | None:
    return int(value) if value is not None else None


def _ecc(nvml: Any, handle: Any, error_type: str, counter_type: str) -> Any:
    """One ECC count: error_type CORRECTED or UNCORRECTED, counter_type VOLATILE or AGGREGATE."""
    return nvml.nvmlDeviceGetTotalEccErrors(
        handle, getattr(nvml, f"NVML_MEMORY_ERROR_TYPE_{error_type}"), getattr(nvml, f"NVML_{counter_type}_ECC")
    )


def _threshold(nvml: Any, handle: Any, which: str) -> Any:
    """A temperature threshold, which SLOWDOWN or SHUTDOWN (nvmlTemperatureThresholds_t)."""
    return nvml.nvmlDeviceGetTemperatureThreshold(handle, getattr(nvml, f"NVML_TEMPERATURE_THRESHOLD_{which}"))


def _memory(nvml: Any, handle: Any) -> Any:
    """The v2 API (reserved memory split out), else v1 on drivers or bindings without it."""
    try:
        return nvml.nvmlDeviceGetMemoryInfo(handle, version=nvml.nvmlMemory_v2)
    except (nvml.NVMLError_FunctionNotFound, AttributeError, TypeError):
        return nvml.nvmlDeviceGetMemoryInfo(handle)


def _clock_reasons(nvml: Any, handle: Any) -> Any:
    getter = (
        getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or nvml.nvmlDeviceGetCurrentClocksThrottleReasons
    )
    return getter(handle)


class GpuProbe:
    """Reads the GPUs on a worker thread; the caller never waits longer than `deadline`."""

    def __init__(self, deadline: float = 2.0, nvml: Any = None, clock: Callable[[], float] = time.time) -> None:
        self.deadline = deadline
        self._nvml = nvml
        self._clock = clock
        self._stuck: Future[GpuReading] | None = None
        self._stuck_since: float | None = None

    def _load(self) -> Any:
        if self._nvml is None:
            import pynvml  # the package imports fine without a GPU; the driver loads at nvmlInit

            self._nvml = pynvml
        return self._nvml

    def read(self) -> GpuReading:
        now = self._clock()
        if self._stuck is not None:
            if not self._stuck.done():
                since = self._stuck_since or now
                return GpuReading(
                    NvmlState.HUNG, now, 0.0, detail=f"an NVML call has not returned for {now - since:.1f} s"
                )
            self._stuck, self._stuck_since = None, None  # the driver answered again
        future: Future[GpuReading] = Future()
        nvml = self._load()

        def work() -> None:
            try:
                future.set_result(read_gpus(nvml, self._clock))
            except BaseException as exc:  # delivered to the waiting caller
                future.set_exception(exc)

        # A daemon thread, not an executor: a call stuck in the driver must never block process exit.
        threading.Thread(target=work, name="nvml-read", daemon=True).start()
        try:
            return future.result(timeout=self.deadline)
        except FutureTimeout:
            self._stuck, self._stuck_since = future, now
            return GpuReading(
                NvmlState.HUNG, self._clock(), self.deadline, detail=f"NVML did not answer within {self.deadline:g} s"
            )
        except Exception as exc:  # a binding bug must not take the loop down
            return GpuReading(NvmlState.ERROR, self._clock(), 0.0, detail=f"{type(exc).__name__}: {exc}")

    def close(self) -> None:
        """Nothing to stop: a read in flight finishes (or stays stuck) on its daemon thread."""
