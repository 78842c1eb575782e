"""The opt-in GPU reset: stop the GPU's containers, reset it, verify, start them.

Off by default (the watchdog drains and alerts instead): a reset needs every
process on the GPU gone and root. A planned reset (an Xid that is not urgent,
containers/urgency.py) first drains its containers (router/drain.py): out of
rotation until their in-flight requests finish, up to drain.timeout. The command is an argument list run without
a shell; `{uuid}` is the only substitution. `run_reset` is the steps; `GpuReset`
runs them off the loop and carries out the outcome.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import docker
from loguru import logger

from watchdog.config import Config
from watchdog.containers.engine import ENGINE_ERRORS
from watchdog.entries import ALERT_GPU_RESET, EntryKind
from watchdog.gpu.assignment import gpu_key
from watchdog.gpu.mark_book import MarkBook
from watchdog.gpu.marks import GpuCondition, GpuMark
from watchdog.gpu.readings import GpuHealth, NvmlState
from watchdog.router.drain import Drain, DrainPurpose

if TYPE_CHECKING:
    from watchdog.gpu.monitor import GpuMonitor
    from watchdog.subsystem import Services


class ResetFailed(RuntimeError):
    """One line: which step failed and why."""


def reset_command(template: Sequence[str], uuid: str) -> list[str]:
    return [part.replace("{uuid}", uuid) for part in template]


def run_reset(
    client: docker.DockerClient,
    uuid: str,
    container_ids: Sequence[str],
    *,
    template: Sequence[str],
    timeout: float,
    stop_timeout: float,
    verify: Callable[[], str | None],
) -> None:
    """Raises ResetFailed; the containers stay stopped then (the GPU is quarantined by the caller)."""
    for container_id in container_ids:
        try:
            client.api.stop(container_id, timeout=int(stop_timeout))
        except ENGINE_ERRORS as exc:
            raise ResetFailed(f"could not stop container {container_id[:12]}: {exc}") from exc
    argv = reset_command(template, uuid)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise ResetFailed(f"reset command not found: {argv[0]}; install it or set gpu.reset_command") from None
    except subprocess.TimeoutExpired:
        raise ResetFailed(f"reset command did not finish within {timeout:g} s: {' '.join(argv)}") from None
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip().splitlines()
        raise ResetFailed(f"{' '.join(argv)} exited {done.returncode}: {output[-1] if output else 'no output'}")
    problem = verify()
    if problem is not None:
        raise ResetFailed(f"GPU {uuid} not healthy after the reset: {problem}")
    for container_id in container_ids:
        try:
            client.api.start(container_id)
        except ENGINE_ERRORS as exc:
            raise ResetFailed(f"GPU reset, but container {container_id[:12]} did not start: {exc}") from exc
    logger.bind(gpu=uuid).info("GPU {} reset; {} container(s) started again", uuid, len(container_ids))


class GpuReset:
    """Runs the opt-in reset on the loop's worker pool; knows which containers each running reset stopped.

    The loop treats those containers as busy (no restart while their GPU resets). The
    outcome is said once: verified, the GPU is released and its containers run again;
    failed (or a bug), the GPU is quarantined and an operator is alerted, never left
    "resetting" forever.
    """

    def __init__(self, config: Config, services: Services, book: MarkBook) -> None:
        self.config = config
        self.client = services.client
        self.journal = services.journal
        self.executor = services.executor
        self.own = services.own
        self.clock = services.clock
        self._wake = services.wake
        self.book = book
        self.drains = services.drains
        self.planned: dict[str, tuple[tuple[str, ...], GpuMonitor]] = {}  # GPU UUID -> containers draining first
        self.resetting: dict[str, tuple[str, ...]] = {}  # GPU UUID -> containers its reset stopped
        self._lock = threading.Lock()  # `resetting` is written by the reset's worker, read by the loop

    def apply_config(self, config: Config) -> None:
        self.config = config

    def busy(self) -> set[str]:
        """Container IDs a running reset has stopped."""
        with self._lock:
            return {cid for ids in self.resetting.values() for cid in ids}

    def start(
        self, uuid: str, container_ids: Sequence[str], now: float, *, monitor: GpuMonitor, drain: str | None = None
    ) -> None:
        """Stop the GPU's containers, reset and verify it (through `monitor`), on a worker.

        `drain`: why the reset can wait (None: urgent, at once): its containers drain first, and
        `proceed` starts it once their drains ended.
        """
        ids = tuple(container_ids)
        drain_on = drain is not None and self.config.drain.enabled and bool(ids)
        if drain_on and uuid not in self.planned:
            self.planned[uuid] = (ids, monitor)
            names = {cid: cid[:12] for cid in ids}
            for cid in ids:
                self.drains.request(
                    Drain(
                        cid, names[cid], DrainPurpose.GPU_RESET, f"GPU reset of {uuid}", now, self.config.drain.timeout
                    )
                )
            message = f"GPU reset of {uuid} planned ({drain}): draining {len(ids)} container(s) first"
            logger.bind(gpu=uuid).warning(message)
            self.journal.record(EntryKind.DRAIN, message, ts=now, gpus=(uuid,))
            return
        self._begin(uuid, ids, now, monitor)

    def proceed(self, now: float) -> None:
        """The planned resets whose containers' drains ended: started now."""
        for uuid, (ids, monitor) in list(self.planned.items()):
            if self.drains.finished(ids) == set(ids) or not set(ids) & set(self.drains.drains):
                del self.planned[uuid]
                self.drains.release(ids)
                self._begin(uuid, ids, now, monitor)

    def _begin(self, uuid: str, ids: tuple[str, ...], now: float, monitor: GpuMonitor) -> None:
        with self._lock:
            self.resetting[uuid] = ids
        for container_id in ids:
            self.own.open(container_id, now)
        self.journal.record(
            EntryKind.GPU_RESET, f"resetting GPU {uuid}: stopping {len(ids)} container(s)", ts=now, gpus=(uuid,)
        )
        self.executor.submit(self._run, uuid, ids, now, monitor)

    @staticmethod
    def _verify(uuid: str, monitor: GpuMonitor) -> str | None:
        reading = monitor.read_now()
        if reading.state != NvmlState.OK:
            return f"NVML {reading.state.value}: {reading.detail}"
        for gpu in reading.gpus:
            if gpu_key(gpu) == uuid:
                return None if gpu.health == GpuHealth.OK else f"health {gpu.health.value}"
        return "GPU not visible"

    def _run(self, uuid: str, ids: tuple[str, ...], started: float, monitor: GpuMonitor) -> None:
        gpu = self.config.gpu
        try:
            run_reset(
                self.client,
                uuid,
                ids,
                template=gpu.reset_command,
                timeout=gpu.reset_timeout,
                stop_timeout=30.0,
                verify=lambda: self._verify(uuid, monitor),
            )
            outcome, ok = f"GPU {uuid} reset and verified; {len(ids)} container(s) started", True
        except ResetFailed as exc:
            outcome, ok = f"GPU reset failed: {exc}", False
        except Exception as exc:  # a bug here must not leave the GPU marked "resetting" forever
            outcome, ok = f"GPU reset failed: {type(exc).__name__}: {exc}", False
        end = self.clock()
        for container_id in ids:
            self.own.close(container_id, started, end)
        if ok:
            self.book.release(uuid)
            logger.bind(gpu=uuid).warning(outcome)
            self.journal.record(EntryKind.GPU_RESET_OK, outcome, ts=end, gpus=(uuid,))
        else:
            self.book.put(GpuMark(uuid, None, GpuCondition.QUARANTINED, outcome, end))
            logger.bind(gpu=uuid).critical("ALERT: {}; GPU quarantined", outcome)
            self.journal.record(
                EntryKind.ALERT, outcome + "; GPU quarantined", ts=end, gpus=(uuid,), fault=ALERT_GPU_RESET
            )
        with self._lock:
            self.resetting.pop(uuid, None)
        self._wake()
