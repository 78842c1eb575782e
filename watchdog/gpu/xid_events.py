"""Watch NVML Xid events (GPU driver errors) as they happen.

Polling counters misses most Xids (13, 31, 43, 79 leave no counter behind), so
the watchdog also subscribes to NVML's event set. nvmlEventSetWait blocks, and
a hung driver can block it (or nvmlInit) forever, so all of it runs on one
daemon thread of its own: a stuck driver stalls only that thread, stop() never
waits longer than its timeout, and the process can still exit.

States: "starting" until the devices are registered, then "watching";
"no-driver" (no libnvidia-ml or driver not loaded) and "unsupported" (no GPU
offers Xid events) end the thread; "error" retries after `retry_after`;
"stopped" after stop(). on_state hears each change once, from the watcher's
thread (or from stop()'s caller when the thread is stuck in the driver).
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loguru import logger

from watchdog.gpu.readings import normalise_bus_id as kernel_bus_id
from watchdog.model import XidEvent

STARTING = "starting"
WATCHING = "watching"
NO_DRIVER = "no-driver"
UNSUPPORTED = "unsupported"
ERROR = "error"
STOPPED = "stopped"

_XID_EVENT = 0x8  # nvmlEventTypeXidCriticalError, in case a binding lacks the constant


@dataclass(frozen=True)
class _Device:
    """What an event needs to name its GPU, read once at registration (a lost GPU may not answer later)."""

    index: int
    uuid: str | None
    bus_id: str | None


class _Finished(Exception):
    """The watcher reached a final state (no-driver, unsupported): end the thread, do not retry."""


def normalise_bus_id(value: Any) -> str | None:
    """NVML's busId (bytes or str, "00000000:2A:00.0") in the kernel log's form "0000:2a:00"."""
    text = value.decode(errors="replace") if isinstance(value, bytes) else str(value or "")
    text = text.strip().rstrip("\x00")
    return kernel_bus_id(text) if text else None


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _uuid(nvml: Any, handle: Any) -> str | None:
    """The GPU's UUID; an event can do without it (NotSupported on some boards)."""
    try:
        return _text(nvml.nvmlDeviceGetUUID(handle))
    except (nvml.NVMLError_NotSupported, nvml.NVMLError_FunctionNotFound):
        return None


def _bus_id(nvml: Any, handle: Any) -> str | None:
    """The GPU's PCI address in kernel-log form; an event can do without it."""
    try:
        return normalise_bus_id(nvml.nvmlDeviceGetPciInfo_v3(handle).busId)
    except (nvml.NVMLError_NotSupported, nvml.NVMLError_FunctionNotFound):
        return None


def _handle_key(handle: Any) -> int | None:
    """A device handle's address: pynvml builds a new pointer object per call, so identity never matches."""
    try:
        value = ctypes.cast(handle, ctypes.c_void_p).value
    except (TypeError, ctypes.ArgumentError):
        return None
    return int(value) if value else None


class XidWatcher:
    """Reads NVML Xid events on its own daemon thread: a hung driver stalls only this thread."""

    def __init__(
        self,
        on_event: Callable[[XidEvent], None],
        on_state: Callable[[str, str], None] | None = None,
        *,
        nvml: Any = None,
        wait_ms: int = 1000,
        clock: Callable[[], float] = time.time,
        retry_after: float = 30.0,
    ) -> None:
        self._on_event = on_event
        self._on_state = on_state
        self._nvml = nvml
        self._wait_ms = max(1, int(wait_ms))
        self._clock = clock
        self._retry_after = retry_after
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._state = STARTING
        self._thread: threading.Thread | None = None

    @property
    def state(self) -> str:
        """One of starting, watching, no-driver, unsupported, error, stopped."""
        with self._lock:
            return self._state

    def start(self) -> None:
        """Start the daemon thread and return at once; a second call does nothing."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="nvml-xid-watcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Ask the thread to end and wait up to `timeout`; a thread stuck in the driver is left behind.

        No event is delivered once stop() has been called.
        """
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, timeout))
        if thread is None or thread.is_alive():
            # Never started, or stuck in an NVML call: it is a daemon and will say nothing more.
            self._set_state(STOPPED, "stopped" if thread is None else "stopped; an NVML call has not returned")

    # ---- the thread ----

    def _set_state(self, state: str, detail: str) -> None:
        with self._lock:
            if self._state == state or self._state == STOPPED:
                return
            self._state = state
        if self._on_state is not None:
            try:
                self._on_state(state, detail)
            except Exception:
                logger.exception("the Xid watcher's on_state callback failed")

    def _load(self) -> Any:
        if self._nvml is None:
            import pynvml  # the package imports fine without a GPU; the driver loads at nvmlInit

            self._nvml = pynvml
        return self._nvml

    def _run(self) -> None:
        try:
            nvml = self._load()
        except Exception as exc:
            self._set_state(NO_DRIVER, f"pynvml unavailable: {exc}")
            return
        while not self._stop.is_set():
            try:
                self._session(nvml)
            except _Finished:
                return
            except Exception as exc:  # NVMLError or a binding bug: report, back off, start over
                self._set_state(ERROR, f"{type(exc).__name__}: {exc}")
                logger.warning("Xid watcher: {}; retrying in {:g} s", exc, self._retry_after)
                self._stop.wait(self._retry_after)
        self._set_state(STOPPED, "stopped")

    def _session(self, nvml: Any) -> None:
        """One nvmlInit .. nvmlShutdown: register every device, then wait for events until stopped."""
        try:
            nvml.nvmlInit()
        except (nvml.NVMLError_LibraryNotFound, nvml.NVMLError_DriverNotLoaded) as exc:
            self._set_state(NO_DRIVER, f"NVML unavailable: {exc}")
            raise _Finished from exc
        event_set: Any = None
        try:
            event_set = nvml.nvmlEventSetCreate()
            devices = self._register(nvml, event_set)
            self._watch(nvml, event_set, devices)
        finally:
            if event_set is not None:
                try:
                    nvml.nvmlEventSetFree(event_set)
                except Exception as exc:
                    logger.debug("nvmlEventSetFree failed: {}", exc)
            try:
                nvml.nvmlShutdown()
            except Exception as exc:
                logger.debug("nvmlShutdown failed: {}", exc)

    def _register(self, nvml: Any, event_set: Any) -> dict[int, _Device]:
        """Register Xid events on every GPU that offers them; keyed by handle address."""
        xid_type = getattr(nvml, "nvmlEventTypeXidCriticalError", _XID_EVENT)
        devices: dict[int, _Device] = {}
        unsupported: list[int] = []
        failed: list[str] = []
        for index in range(nvml.nvmlDeviceGetCount()):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                device = _Device(index, _uuid(nvml, handle), _bus_id(nvml, handle))
                nvml.nvmlDeviceRegisterEvents(handle, xid_type, event_set)
            except nvml.NVMLError_NotSupported:
                unsupported.append(index)
                continue
            except nvml.NVMLError as exc:  # e.g. a lost GPU: watch the others
                failed.append(f"GPU {index}: {exc}")
                continue
            key = _handle_key(handle)
            devices[key if key is not None else -1 - index] = device
        notes = []
        if unsupported:
            notes.append(f"Xid events not supported on GPU {', '.join(map(str, unsupported))}")
        if failed:
            notes.append("not registered: " + "; ".join(failed))
        if not devices:
            if failed:
                raise RuntimeError("no GPU could be registered for Xid events: " + "; ".join(failed))
            self._set_state(UNSUPPORTED, "; ".join(notes) or "no GPUs")
            raise _Finished
        for note in notes:
            logger.info("Xid watcher: {}", note)
        watched = ", ".join(str(d.index) for d in sorted(devices.values(), key=lambda d: d.index))
        self._set_state(WATCHING, "; ".join([f"watching Xid events on GPU {watched}", *notes]))
        return devices

    def _watch(self, nvml: Any, event_set: Any, devices: dict[int, _Device]) -> None:
        xid_type = getattr(nvml, "nvmlEventTypeXidCriticalError", _XID_EVENT)
        # Current nvidia-ml-py (13.x) makes nvmlEventSetWait an alias of nvmlEventSetWait_v2 (the C _v2);
        # older bindings' nvmlEventSetWait calls the v1 C function, which lacks only the instance ids.
        wait = getattr(nvml, "nvmlEventSetWait_v2", None) or nvml.nvmlEventSetWait
        while not self._stop.is_set():
            try:
                data = wait(event_set, self._wait_ms)
            except nvml.NVMLError_Timeout:
                self._set_state(WATCHING, "watching Xid events")
                continue
            except nvml.NVMLError_FunctionNotFound:
                if wait is nvml.nvmlEventSetWait:
                    raise
                wait = nvml.nvmlEventSetWait  # an old driver without the _v2 entry point
                continue
            except nvml.NVMLError_GpuIsLost as exc:
                # A GPU fell off the bus; its Xid 79 (if any) came as an event. Keep watching the rest.
                self._set_state(ERROR, f"nvmlEventSetWait: {exc}")
                self._stop.wait(self._wait_ms / 1000)
                continue
            self._set_state(WATCHING, "watching Xid events")
            if int(data.eventType) & xid_type and not self._stop.is_set():
                self._deliver(self._event(nvml, data, devices))

    def _event(self, nvml: Any, data: Any, devices: dict[int, _Device]) -> XidEvent:
        at = self._clock()
        key = _handle_key(data.device)
        device = devices.get(key) if key is not None else None
        if device is None:
            try:
                index = int(nvml.nvmlDeviceGetIndex(data.device))
                device = next((d for d in devices.values() if d.index == index), _Device(index, None, None))
            except Exception as exc:  # still report the Xid, without its GPU
                logger.debug("Xid event from an unknown device: {}", exc)
        return XidEvent(
            at=at,
            xid=int(data.eventData),
            gpu_index=device.index if device else None,
            gpu_uuid=device.uuid if device else None,
            bus_id=device.bus_id if device else None,
            source="nvml",
        )

    def _deliver(self, event: XidEvent) -> None:
        try:
            self._on_event(event)
        except Exception:
            logger.exception("the Xid watcher's on_event callback failed on {}", event)
