"""Diagnosis: from snapshots, probe histories and remembered events to faults.

Pure: no I/O, no clock reads (time comes in as `now`). This is where every
fault class is detected, and where a deliberate stop is told from a failure.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from watchdog.config import Config
from watchdog.gpu.vram import VramView
from watchdog.model import (
    TIMEOUT_DETAIL,
    ContainerHistory,
    ContainerSnapshot,
    ContainerState,
    Diagnosis,
    EngineEvent,
    Fault,
    FaultKind,
    Health,
    Note,
    NoteKind,
    ProbeResult,
    ProbeStatus,
)
from watchdog.serving.progress import Wedged

SIGKILL = 9
# Exit codes a container shows after `docker stop` that ends it cleanly (0) or
# by SIGTERM (128+15). Used only when no engine event of the stop was seen.
CLEAN_STOP_EXIT_CODES = (0, 143)


@dataclass(frozen=True)
class ProbeHistory:
    """The last probes of one container life's endpoint, oldest first."""

    results: tuple[ProbeResult, ...] = ()
    first_ok_at: float | None = None
    in_flight_since: float | None = None  # when the oldest probe still in flight started


class Recovery(StrEnum):
    PENDING = "pending"
    RECOVERED = "recovered"
    FAILED = "failed"  # started again, then died before it was healthy
    TIMED_OUT = "timed-out"
    GONE = "gone"


def remember_event(history: ContainerHistory, event: EngineEvent) -> ContainerHistory:
    """Fold one engine event (not caused by the watchdog itself) into the container's history."""
    action = event.action
    if action == "kill":
        return replace(history, last_kill_at=event.at, last_kill_signal=event.signal)
    if action == "die":
        return replace(history, last_die_at=event.at)
    if action == "oom":
        return replace(history, last_oom_at=event.at)
    if action == "stop":
        # `docker stop` / `docker compose stop`: kill + die + stop. A crash or
        # `docker kill` never emits stop.
        return replace(history, manual_stop_at=event.at)
    if action == "start":
        return replace(history, manual_stop_at=None)
    return history


def start_period_of(container: ContainerSnapshot, config: Config) -> float:
    """Label, else the container's healthcheck start_period, else the config default."""
    if container.spec is not None and container.spec.start_period is not None:
        return container.spec.start_period
    if container.healthcheck_start_period:
        return container.healthcheck_start_period
    return config.default_start_period


def _describe_exit(container: ContainerSnapshot) -> str:
    if container.oom_killed:
        return "OOM-killed"
    if container.exit_code == 128 + SIGKILL:
        return "killed (SIGKILL, exit 137)"
    if container.exit_code is None:
        return "stopped"
    return f"exited with code {container.exit_code}"


def _stopped(container: ContainerSnapshot, history: ContainerHistory, config: Config, now: float) -> Fault | Note:
    started = container.started_at or 0.0
    ended = container.finished_at or 0.0
    if history.heal_requested_at is not None and history.heal_requested_at >= ended:
        return _fault(
            container, FaultKind.STOPPED, ended or now, _describe_exit(container) + " (heal requested by reset)"
        )
    if history.manual_stop_at is not None and history.manual_stop_at >= started:
        return Note(
            container.id,
            NoteKind.DELIBERATE_STOP,
            "stopped by an operator (engine stop event): left stopped until someone starts it",
        )
    witnessed = history.last_die_at is not None and history.last_die_at >= started
    if witnessed:
        assert history.last_die_at is not None
        signalled = history.last_kill_at is not None and history.last_kill_at >= started
        politely_signalled = signalled and history.last_kill_signal not in (None, SIGKILL)
        if may_be_a_stop(container, history, signalled) and now - history.last_die_at < config.stop_settle:
            return Note(
                container.id, NoteKind.SETTLING, "died after a stop signal: waiting briefly for the engine's stop event"
            )
        cause = _describe_exit(container)
        if politely_signalled:
            cause += f" after signal {history.last_kill_signal} with no stop event (docker kill)"
        elif history.last_kill_at is not None and history.last_kill_at >= started:
            cause += " (docker kill)"
        else:
            cause += " (crash: no stop or kill from the API)"
        return _fault(container, FaultKind.STOPPED, container.finished_at or history.last_die_at, cause)
    if (
        container.exit_code in CLEAN_STOP_EXIT_CODES
        and not container.oom_killed
        and container.state != ContainerState.DEAD
    ):
        return Note(
            container.id,
            NoteKind.DELIBERATE_STOP,
            f"exited with code {container.exit_code} while unobserved: presumed stopped on purpose; "
            "start it, or `gpu-watchdog reset NAME` to have it healed",
        )
    return _fault(
        container, FaultKind.STOPPED, container.finished_at or now, _describe_exit(container) + " (seen at start-up)"
    )


def may_be_a_stop(container: ContainerSnapshot, history: ContainerHistory, signalled: bool) -> bool:
    """Could this kill + die be a `docker stop` whose stop event has not arrived yet?

    `docker stop` sends the container's stop signal, then the engine emits die and, just after,
    stop; the die can be handled first. Any signal other than SIGKILL is one an operator's stop
    may send. SIGKILL is one only for a container whose own stop signal is SIGKILL (STOPSIGNAL in
    its image, or --stop-signal): for the others it is `docker kill`, healed without waiting.
    """
    if not signalled or history.last_kill_signal is None:
        return False
    return history.last_kill_signal != SIGKILL or container.stop_signal == SIGKILL


def _fault(
    container: ContainerSnapshot,
    kind: FaultKind,
    since: float,
    reason: str,
    evidence: Mapping[str, object] | None = None,
) -> Fault:
    priority = container.spec.priority if container.spec else 0
    return Fault(
        container.id, container.name, kind, since, reason, priority, container.gpus, container.started_at, evidence
    )


def _failing_streak(history: ProbeHistory, counts_from: float) -> tuple[int, ProbeResult | None]:
    streak = 0
    last: ProbeResult | None = None
    for result in reversed(history.results):
        if result.status == ProbeStatus.OK or result.at < counts_from:
            break
        streak += 1
        last = last or result
    return streak, last


def _running(
    container: ContainerSnapshot,
    history: ProbeHistory | None,
    config: Config,
    now: float,
    *,
    vram: VramView | None = None,
    xid: tuple[float, str] | None = None,
    wedged: Wedged | None = None,
) -> tuple[Fault | Note | None, bool]:
    """A running container's fault or note, and whether it is ready now."""
    started = container.started_at or now
    grace_end = started + start_period_of(container, config)
    if xid is not None and xid[0] >= started:
        return _fault(container, FaultKind.GPU_XID, xid[0], xid[1]), False
    first_ok = history.first_ok_at if history else None
    seen_ready = first_ok is not None or container.health == Health.HEALTHY
    if now < grace_end and not seen_ready:
        return Note(container.id, NoteKind.STARTING, f"starting: start period ends in {grace_end - now:.0f} s"), False
    if vram is not None and vram.empty and now >= grace_end:
        # Checked before health: a vLLM whose model is gone may still answer /health.
        return _fault(container, FaultKind.ZERO_VRAM, now, f"model no longer in GPU memory: {vram.detail}"), False
    if wedged is not None and wedged.since >= started:
        # Checked before health too: a wedged engine's /health still answers 200.
        return _fault(container, FaultKind.WEDGED, wedged.since, wedged.reason, wedged.evidence), False
    if container.health == Health.UNHEALTHY:
        return _fault(container, FaultKind.UNHEALTHY, now, "the engine's healthcheck reports unhealthy"), False
    if container.endpoint and history is not None:
        counts_from = grace_end if first_ok is None else first_ok
        streak, last = _failing_streak(history, counts_from)
        if streak >= config.failure_threshold and last is not None:
            since = history.results[-streak].at
            reason = f"{container.endpoint} failed {streak} probes in a row (last: {last.detail})"
            # Every probe of the streak timed out: the server does not answer at all (a hang), not an error page.
            unanswered = all(r.detail.startswith(TIMEOUT_DETAIL) for r in history.results[-streak:])
            evidence = {"failed_probes": streak, "unanswered": unanswered}
            return _fault(container, FaultKind.ENDPOINT_FAILING, since, reason, evidence), False
        latest = history.results[-1] if history.results else None
        endpoint_ok = latest is not None and latest.status == ProbeStatus.OK
    else:
        endpoint_ok = True
    health_ok = container.health in (Health.HEALTHY, Health.NONE)
    return None, endpoint_ok and health_ok


def diagnose(
    containers: Sequence[ContainerSnapshot],
    probes: Mapping[str, ProbeHistory],
    remembered: Mapping[str, ContainerHistory],
    config: Config,
    now: float,
    *,
    restarting: Collection[str] = (),
    vram: Mapping[str, VramView] | None = None,
    xids: Mapping[str, tuple[float, str]] | None = None,
    wedged: Mapping[str, Wedged] | None = None,
) -> Diagnosis:
    """Faults of the managed containers, and notes on the rest.

    `restarting`: IDs the watchdog is restarting right now; their transient
    states (exited mid-restart) are neither faults nor deliberate stops.
    `vram`: zero-VRAM views by container ID (None: GPU checks off).
    `xids`: container ID -> (when, why) for Xids that call for its restart.
    `wedged`: container ID -> the progress verdict of a server with work and frozen counters.
    """
    vram = vram or {}
    xids = xids or {}
    wedged = wedged or {}
    faults: list[Fault] = []
    notes: list[Note] = []
    ready: set[str] = set()
    rechecks: list[float] = []
    for container in containers:
        if container.is_self:
            notes.append(Note(container.id, NoteKind.SELF, "this is the watchdog's own container: never acted on"))
            continue
        if container.spec is None:
            if container.problems:
                notes.append(
                    Note(
                        container.id,
                        NoteKind.MISCONFIGURED,
                        "misconfigured, left alone: " + "; ".join(container.problems),
                    )
                )
            continue
        state = container.state
        outcome: Fault | Note | None
        if container.id in restarting:
            notes.append(Note(container.id, NoteKind.RESTARTING, "being restarted by the watchdog"))
            continue
        if state in (ContainerState.EXITED, ContainerState.DEAD):
            history = remembered.get(container.id, ContainerHistory())
            outcome = _stopped(container, history, config, now)
            if isinstance(outcome, Note) and history.last_die_at is not None and outcome.kind == NoteKind.SETTLING:
                rechecks.append(history.last_die_at + config.stop_settle)
        elif state == ContainerState.RUNNING:
            view = vram.get(container.id)
            outcome, is_ready = _running(
                container,
                probes.get(container.id),
                config,
                now,
                vram=view,
                xid=xids.get(container.id),
                wedged=wedged.get(container.id),
            )
            if is_ready:
                ready.add(container.id)
            grace_end = (container.started_at or now) + start_period_of(container, config)
            starting = isinstance(outcome, Note) and outcome.kind == NoteKind.STARTING
            if container.started_at is not None and grace_end > now and (starting or view is not None):
                rechecks.append(grace_end)
        else:
            outcome = Note(container.id, NoteKind.LEFT_ALONE, f"{state.value}: left alone")
        if isinstance(outcome, Fault):
            faults.append(outcome)
        elif isinstance(outcome, Note):
            notes.append(outcome)
    return Diagnosis(tuple(faults), tuple(notes), frozenset(ready), min(rechecks, default=None))


def recovery_of(
    container: ContainerSnapshot | None,
    ready: bool,
    issued_at: float,
    *,
    timeout: float,
    now: float,
) -> Recovery:
    """Whether a restarted container is back: it holds a restart slot until then."""
    if container is None:
        return Recovery.GONE
    restarted = container.started_at is not None and container.started_at >= issued_at - 1.0
    if container.state == ContainerState.RUNNING and restarted and ready:
        return Recovery.RECOVERED
    if restarted and container.state in (ContainerState.EXITED, ContainerState.DEAD):
        return Recovery.FAILED
    if now - issued_at > timeout:
        return Recovery.TIMED_OUT
    return Recovery.PENDING


def recovery_timeout_of(container: ContainerSnapshot | None, config: Config) -> float:
    """How long a restart holds its slot: start period plus the failures it takes to notice."""
    if config.recovery_timeout is not None:
        return config.recovery_timeout
    start_period = start_period_of(container, config) if container else config.default_start_period
    return start_period + config.failure_threshold * config.poll_interval + config.probe_timeout
