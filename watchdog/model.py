"""Plain, immutable data the loop passes between its steps.

observe -> diagnose -> plan -> act -> record: every step takes and returns
these types, so the pure steps (diagnose, plan) can be tested with literals.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

NOT_SENT = "not sent"  # outcome prefix of an action whose call never reached the engine: not an attempt


class ContainerState(StrEnum):
    """Docker's State.Status values."""

    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    RESTARTING = "restarting"
    REMOVING = "removing"
    EXITED = "exited"
    DEAD = "dead"
    UNKNOWN = "unknown"

    @classmethod
    def parse(cls, text: str) -> ContainerState:
        try:
            return cls(text.lower())
        except ValueError:
            return cls.UNKNOWN


class Health(StrEnum):
    """The engine's own healthcheck verdict; NONE when there is no healthcheck."""

    NONE = "none"
    STARTING = "starting"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"

    @classmethod
    def parse(cls, text: str | None) -> Health:
        try:
            return cls((text or "none").lower())
        except ValueError:
            return cls.NONE


class FaultKind(StrEnum):
    """What is wrong with a managed container. Order of severity is SEVERITY."""

    STOPPED = "stopped"
    ZERO_VRAM = "zero-vram"
    GPU_XID = "gpu-xid"  # an Xid the table says the container caused: restart it
    UNHEALTHY = "unhealthy"
    ENDPOINT_FAILING = "endpoint-failing"
    WEDGED = "wedged"  # /health may answer, but work waits while its token counters stand still


# The seed's detection order: stopped first, then VRAM, then health endpoints.
SEVERITY: dict[FaultKind, int] = {
    FaultKind.STOPPED: 0,
    FaultKind.ZERO_VRAM: 1,
    FaultKind.GPU_XID: 1,
    FaultKind.UNHEALTHY: 2,
    FaultKind.ENDPOINT_FAILING: 2,
    FaultKind.WEDGED: 2,
}


TIMEOUT_DETAIL = "timeout after"  # how a probe that got no answer in time begins its detail (diagnose reads it)


class ProbeStatus(StrEnum):
    """One HTTP probe's outcome."""

    OK = "ok"
    LOADING = "loading"  # 503: llama.cpp answers this while it loads the model
    FAILED = "failed"  # anything else: refused, timeout, 5xx, 4xx


@dataclass(frozen=True)
class ContainerSpec:
    """What the operator asked for, read from the container's labels."""

    priority: int = 0
    gpus: tuple[str, ...] = ()
    health_url: str | None = None
    health_port: int | None = None
    health_path: str = "/health"
    start_period: float | None = None
    stop_timeout: float | None = None
    max_restarts: int | None = None
    role: str | None = None
    model: str | None = None
    model_size: int | None = None
    api_base: str | None = None  # what LiteLLM calls; default: the endpoint's origin + /v1
    server: str | None = None  # llama.cpp | vllm | openai; None: detected from its /metrics
    stall_window: float | None = None  # progress stall that makes it wedged; None: serving.stall_window
    canary_interval: float | None = None  # s between 1-token canary completions; 0: off; None: serving.canary_interval
    fallback: tuple[str, ...] = ()  # model groups LiteLLM falls back to when every deployment of `model` is out
    drain_timeout: float | None = None  # s a drain waits for its in-flight requests; None: drain.timeout


@dataclass(frozen=True)
class ContainerSnapshot:
    """One managed (or would-be managed) container as the engine showed it."""

    id: str
    name: str
    state: ContainerState
    health: Health = Health.NONE
    spec: ContainerSpec | None = None  # None when misconfigured
    problems: tuple[str, ...] = ()  # misconfiguration, one line each
    warnings: tuple[str, ...] = ()  # e.g. an unknown label under the prefix
    exit_code: int | None = None
    oom_killed: bool = False
    started_at: float | None = None
    finished_at: float | None = None
    memory_limit: int = 0  # HostConfig.Memory (0: none)
    memory_swap: int = 0  # HostConfig.MemorySwap: RAM + swap (0: unset, -1: unlimited)
    healthcheck_start_period: float | None = None
    stop_timeout: float | None = None  # the container's own StopTimeout
    stop_signal: int | None = None  # the container's own StopSignal (None: the engine's default, SIGTERM)
    endpoint: str | None = None
    gpus: tuple[str, ...] = ()
    restart_policy: str = "no"
    is_self: bool = False
    compose_project: str | None = None
    compose_service: str | None = None

    @property
    def managed(self) -> bool:
        return self.spec is not None and not self.is_self


@dataclass(frozen=True)
class ProbeResult:
    """One HTTP probe of one container's endpoint."""

    at: float
    status: ProbeStatus
    detail: str
    duration: float = 0.0


@dataclass(frozen=True)
class ProbeTarget:
    """A container life's endpoint: a restart gives it a new key, a fresh history."""

    container_id: str
    started_at: float | None
    url: str

    @property
    def key(self) -> str:
        return f"{self.container_id}@{self.started_at}@{self.url}"


@dataclass(frozen=True)
class EngineEvent:
    """The part of a Docker event the watchdog reads (Action and Actor, not status)."""

    at: float
    container_id: str
    action: str  # die, kill, oom, stop, start, health_status: unhealthy, ...
    name: str = ""
    signal: int | None = None
    exit_code: int | None = None


@dataclass(frozen=True)
class ContainerHistory:
    """What the watchdog remembers of one container between cycles: its recent engine events.

    Built from engine events (and their replay at start-up); the journal keeps
    deliberate stops across restarts of the watchdog. Not its memory limit (that
    is `router.memory_limits`).
    """

    manual_stop_at: float | None = None
    last_kill_at: float | None = None
    last_kill_signal: int | None = None
    last_die_at: float | None = None
    last_oom_at: float | None = None
    heal_requested_at: float | None = None  # `gpu-watchdog reset`: heal even if it looked deliberate


@dataclass(frozen=True)
class Fault:
    """A diagnosed problem with a managed container, with a human reason."""

    container_id: str
    container: str
    kind: FaultKind
    since: float
    reason: str
    priority: int = 0
    gpus: tuple[str, ...] = ()
    life: float | None = None  # StartedAt of the container life it belongs to
    evidence: Mapping[str, Any] | None = field(default=None, compare=False)  # for the journal's detail

    @property
    def severity(self) -> int:
        return SEVERITY[self.kind]

    @property
    def episode(self) -> tuple[FaultKind, float | None]:
        """Same kind in the same container life: one episode, journaled once."""
        return (self.kind, self.life)


class Verdict(StrEnum):
    """What the planner decided for one fault."""

    RESTART = "restart"
    DEFER = "defer"  # no slot, or not enough host RAM
    BACKOFF = "backoff"  # crash-loop breaker: too soon after the last attempt
    GIVE_UP = "give-up"  # crash-loop breaker trips now
    GIVEN_UP = "given-up"  # tripped earlier, still cooling down
    IN_PROGRESS = "in-progress"  # a restart of it is already running
    HELD = "held"  # its GPU is quarantined, draining or resetting: restarting it would not help
    DRAIN = "drain"  # a fault that can wait: out of rotation until its in-flight requests finish, then restarted


@dataclass(frozen=True)
class Decision:
    """The planner's answer for one fault: a verdict and why."""

    fault: Fault
    verdict: Verdict
    reason: str
    ram_needed: int = 0
    stop_timeout: float = 10.0
    retry_at: float | None = None  # when a deferred decision may change (backoff expiry)


class NoteKind(StrEnum):
    """Why a container has no fault even though it may not be serving."""

    DELIBERATE_STOP = "deliberate-stop"
    SETTLING = "settling"  # died after a stop signal; waiting for the stop event
    STARTING = "starting"  # inside its start period
    RESTARTING = "restarting"  # the watchdog is restarting it
    LEFT_ALONE = "left-alone"  # restarting, paused, created: not ours to judge
    MISCONFIGURED = "misconfigured"
    SELF = "self"


@dataclass(frozen=True)
class Note:
    """Something worth showing in status that is not a fault (e.g. a deliberate stop)."""

    container_id: str
    kind: NoteKind
    text: str


@dataclass(frozen=True)
class Diagnosis:
    """diagnose()'s output: faults to heal, notes to show."""

    faults: tuple[Fault, ...] = ()
    notes: tuple[Note, ...] = ()
    ready: frozenset[str] = field(default_factory=frozenset)  # ids healthy now
    recheck_at: float | None = None  # earliest time a verdict may change without an event


@dataclass(frozen=True)
class XidEvent:
    """One GPU Xid error, from NVML's event set or from the kernel log.

    NVML events name the GPU but no process; kernel log lines name the PCI bus
    and often the process (pid, name) that caused it.
    """

    at: float
    xid: int
    gpu_index: int | None = None
    gpu_uuid: str | None = None
    bus_id: str | None = None  # canonical form "0000:3b:00" (see kernel_log.normalise_bus_id)
    pid: int | None = None
    process: str | None = None
    source: str = "nvml"  # "nvml" or "kernel-log"
