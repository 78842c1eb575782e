"""watchdog.containers.diagnose: faults and notes from snapshots, probes and remembered events."""

from __future__ import annotations

from dataclasses import replace

import pytest

from watchdog.config import Config
from watchdog.containers.diagnose import (
    ProbeHistory,
    Recovery,
    diagnose,
    recovery_of,
    recovery_timeout_of,
    remember_event,
)
from watchdog.model import (
    ContainerHistory,
    ContainerSnapshot,
    ContainerSpec,
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

CFG = Config()  # threshold 3, stop_settle 0.3 s
SPEC = ContainerSpec(priority=7, start_period=60.0)
STARTED, FINISHED = 1000.0, 2000.0
URL = "http://127.0.0.1:32768/health"


def exited(exit_code: int | None = 0, **kw: object) -> ContainerSnapshot:
    values: dict[str, object] = {
        "spec": SPEC,
        "exit_code": exit_code,
        "started_at": STARTED,
        "finished_at": FINISHED,
        "gpus": ("0",),
    }
    values.update(kw)
    return ContainerSnapshot(id="c1", name="llm", state=ContainerState.EXITED, **values)  # type: ignore[arg-type]


def running(**kw: object) -> ContainerSnapshot:
    values: dict[str, object] = {"spec": SPEC, "started_at": STARTED, "endpoint": URL}
    values.update(kw)
    return ContainerSnapshot(id="c1", name="llm", state=ContainerState.RUNNING, **values)  # type: ignore[arg-type]


def run(
    container: ContainerSnapshot,
    now: float,
    memory: ContainerHistory | None = None,
    history: ProbeHistory | None = None,
    restarting: tuple[str, ...] = (),
) -> Diagnosis:
    return diagnose(
        [container],
        {container.id: history} if history else {},
        {container.id: memory} if memory else {},
        CFG,
        now,
        restarting=restarting,
    )


def only_fault(d: Diagnosis) -> Fault:
    assert d.notes == () and len(d.faults) == 1, d
    return d.faults[0]


def only_note(d: Diagnosis) -> Note:
    assert d.faults == () and len(d.notes) == 1, d
    return d.notes[0]


def probes(*pairs: tuple[float, ProbeStatus], first_ok_at: float | None = None) -> ProbeHistory:
    return ProbeHistory(tuple(ProbeResult(at, status, f"{status} at {at}") for at, status in pairs), first_ok_at)


F, L, OK = ProbeStatus.FAILED, ProbeStatus.LOADING, ProbeStatus.OK

# -- stopped containers -------------------------------------------------------


def test_stop_event_means_left_stopped() -> None:
    memory = ContainerHistory(manual_stop_at=1999.0, last_kill_at=1998.0, last_kill_signal=15, last_die_at=1999.0)
    note = only_note(run(exited(143), now=2010.0, memory=memory))
    assert note.kind == NoteKind.DELIBERATE_STOP


def test_docker_kill_without_stop_event_is_a_fault() -> None:
    memory = ContainerHistory(last_kill_at=1999.9, last_kill_signal=9, last_die_at=2000.0)
    fault = only_fault(run(exited(137), now=2000.01, memory=memory))
    assert fault.kind == FaultKind.STOPPED
    assert "docker kill" in fault.reason
    assert fault.since == FINISHED
    assert (fault.container, fault.priority, fault.gpus) == ("llm", 7, ("0",))


def test_fault_belongs_to_the_container_life_it_was_seen_in() -> None:
    first = only_fault(run(exited(137), now=5000.0))
    again = only_fault(run(exited(137, started_at=STARTED + 500.0), now=5000.0))
    assert first.life == STARTED and again.life == STARTED + 500.0
    assert first.episode != again.episode


def test_crash_with_only_a_die_event_is_a_fault_called_a_crash() -> None:
    fault = only_fault(run(exited(1), now=2005.0, memory=ContainerHistory(last_die_at=2000.0)))
    assert fault.kind == FaultKind.STOPPED
    assert "crash" in fault.reason
    assert "exited with code 1" in fault.reason


def test_die_after_sigterm_within_stop_settle_is_settling_with_a_recheck() -> None:
    memory = ContainerHistory(last_kill_at=1999.9, last_kill_signal=15, last_die_at=2000.0)
    d = run(exited(143), now=2000.1, memory=memory)
    assert only_note(d).kind == NoteKind.SETTLING
    assert d.recheck_at == pytest.approx(2000.0 + CFG.stop_settle)


def test_die_after_sigterm_past_stop_settle_without_stop_event_is_a_fault() -> None:
    memory = ContainerHistory(last_kill_at=1999.9, last_kill_signal=15, last_die_at=2000.0)
    fault = only_fault(run(exited(143), now=2000.0 + CFG.stop_settle + 0.01, memory=memory))
    assert fault.kind == FaultKind.STOPPED
    assert "signal 15 with no stop event" in fault.reason


def test_stop_mark_older_than_the_last_start_does_not_count() -> None:
    # Stopped on purpose at 500, started again at 1000, crashed at 2000.
    memory = ContainerHistory(manual_stop_at=500.0, last_die_at=2000.0)
    fault = only_fault(run(exited(0), now=2005.0, memory=memory))
    assert fault.kind == FaultKind.STOPPED


@pytest.mark.parametrize("code", [0, 143])
def test_clean_exit_while_unobserved_is_presumed_deliberate(code: int) -> None:
    note = only_note(run(exited(code), now=5000.0))
    assert note.kind == NoteKind.DELIBERATE_STOP
    assert "presumed" in note.text


@pytest.mark.parametrize(
    ("snapshot", "words"),
    [
        (exited(137), "SIGKILL"),
        (exited(1), "exited with code 1"),
        (exited(0, oom_killed=True), "OOM-killed"),
        (replace(exited(0), state=ContainerState.DEAD), "exited with code 0"),
    ],
    ids=["exit-137", "exit-1", "oom-killed", "dead"],
)
def test_unclean_exit_while_unobserved_is_a_fault(snapshot: ContainerSnapshot, words: str) -> None:
    fault = only_fault(run(snapshot, now=5000.0))
    assert fault.kind == FaultKind.STOPPED
    assert words in fault.reason
    assert fault.since == FINISHED


def test_heal_requested_after_finish_overrides_a_deliberate_stop() -> None:
    memory = ContainerHistory(manual_stop_at=1999.0, last_die_at=2000.0, heal_requested_at=2100.0)
    fault = only_fault(run(exited(0), now=2101.0, memory=memory))
    assert fault.kind == FaultKind.STOPPED
    assert "heal requested" in fault.reason


def test_heal_requested_before_the_finish_does_not_override_a_later_stop() -> None:
    memory = ContainerHistory(manual_stop_at=1999.0, last_die_at=2000.0, heal_requested_at=1500.0)
    assert only_note(run(exited(0), now=2101.0, memory=memory)).kind == NoteKind.DELIBERATE_STOP


# -- running containers -------------------------------------------------------


def test_running_inside_start_period_is_starting_with_a_recheck_at_its_end() -> None:
    d = run(running(), now=STARTED + 30.0, history=probes((STARTED + 20.0, F)))
    assert only_note(d).kind == NoteKind.STARTING
    assert d.recheck_at == STARTED + 60.0
    assert d.ready == frozenset()


def test_engine_unhealthy_is_an_unhealthy_fault() -> None:
    fault = only_fault(run(running(health=Health.UNHEALTHY, endpoint=None), now=STARTED + 100.0))
    assert fault.kind == FaultKind.UNHEALTHY


def test_healthy_container_is_ready_and_has_no_fault() -> None:
    d = run(running(health=Health.HEALTHY), now=2000.0, history=probes((1990.0, OK), first_ok_at=1200.0))
    assert d.faults == () and d.notes == ()
    assert d.ready == frozenset({"c1"})


def test_endpoint_failures_below_threshold_are_not_a_fault() -> None:
    d = run(running(), now=2000.0, history=probes((1900.0, F), (1905.0, F)))
    assert d.faults == () and d.notes == ()
    assert d.ready == frozenset()


def test_endpoint_failures_at_threshold_are_endpoint_failing_since_the_first() -> None:
    fault = only_fault(run(running(), now=2000.0, history=probes((1900.0, F), (1905.0, F), (1910.0, F))))
    assert fault.kind == FaultKind.ENDPOINT_FAILING
    assert fault.since == 1900.0
    assert URL in fault.reason and "3 probes" in fault.reason


def test_a_streak_of_timeouts_is_unanswered_one_with_an_error_page_is_not() -> None:
    def streak(*details: str) -> Fault:
        results = tuple(ProbeResult(1900.0 + i, F, detail) for i, detail in enumerate(details))
        return only_fault(run(running(), now=2000.0, history=ProbeHistory(results, None)))

    hung = streak("timeout after 3 s", "timeout after 3 s", "timeout after 3 s")
    assert hung.evidence == {"failed_probes": 3, "unanswered": True}
    assert streak("timeout after 3 s", "HTTP 500", "timeout after 3 s").evidence == {
        "failed_probes": 3,
        "unanswered": False,
    }


def test_endpoint_failures_before_start_period_ended_do_not_count() -> None:
    history = probes((1040.0, F), (1050.0, F), (1070.0, F))  # start period ends at 1060
    d = run(running(), now=1075.0, history=history)
    assert d.faults == ()


def test_loading_503_inside_start_period_does_not_count() -> None:
    history = probes((1010.0, L), (1020.0, L), (1030.0, L), (1040.0, L))
    assert run(running(), now=1065.0, history=history).faults == ()


def test_loading_503_after_start_period_counts_as_failure() -> None:
    history = probes((1061.0, L), (1066.0, L), (1071.0, L))
    assert only_fault(run(running(), now=1072.0, history=history)).kind == FaultKind.ENDPOINT_FAILING


def test_an_ok_probe_breaks_the_failure_streak() -> None:
    history = probes((1900.0, F), (1905.0, F), (1910.0, F), (1915.0, OK), (1920.0, F), (1925.0, F), first_ok_at=1915.0)
    assert run(running(), now=1930.0, history=history).faults == ()


def test_container_seen_ready_leaves_its_start_period_early() -> None:
    slow = running(spec=replace(SPEC, start_period=600.0))
    fails = ((1020.0, F), (1030.0, F), (1040.0, F))
    seen_ready = probes((1010.0, OK), *fails, first_ok_at=1010.0)
    fault = only_fault(run(slow, now=1045.0, history=seen_ready))
    assert fault.kind == FaultKind.ENDPOINT_FAILING
    never_ready = probes(*fails)
    assert only_note(run(slow, now=1045.0, history=never_ready)).kind == NoteKind.STARTING


# -- containers that are not judged -------------------------------------------


@pytest.mark.parametrize("state", [ContainerState.RESTARTING, ContainerState.PAUSED, ContainerState.CREATED])
def test_transient_states_are_left_alone(state: ContainerState) -> None:
    note = only_note(run(replace(exited(137), state=state), now=5000.0))
    assert note.kind == NoteKind.LEFT_ALONE


@pytest.mark.parametrize("snapshot", [exited(137), running(health=Health.UNHEALTHY)], ids=["exited", "unhealthy"])
def test_own_container_is_a_self_note_never_a_fault(snapshot: ContainerSnapshot) -> None:
    note = only_note(run(replace(snapshot, is_self=True), now=5000.0))
    assert note.kind == NoteKind.SELF


def test_misconfigured_container_is_a_note_naming_the_problem_never_a_fault() -> None:
    problem = "label gpu-watchdog.priority='high': expected an integer"
    note = only_note(run(exited(137, spec=None, problems=(problem,)), now=5000.0))
    assert note.kind == NoteKind.MISCONFIGURED
    assert problem in note.text


def test_unmanaged_container_gets_neither_fault_nor_note() -> None:
    d = run(exited(137, spec=None), now=5000.0)
    assert d == Diagnosis()


def test_container_being_restarted_is_a_restarting_note_not_a_fault() -> None:
    memory = ContainerHistory(last_kill_at=1999.9, last_kill_signal=9, last_die_at=2000.0)
    note = only_note(run(exited(137), now=2001.0, memory=memory, restarting=("c1",)))
    assert note.kind == NoteKind.RESTARTING


def test_recheck_at_is_the_earliest_of_several() -> None:
    a = running()
    b = replace(running(), id="c2", name="b", started_at=STARTED + 10.0)
    d = diagnose([b, a], {}, {}, CFG, STARTED + 5.0)
    assert d.recheck_at == STARTED + 60.0


# -- memory of events -----------------------------------------------------------


def test_remember_event_folds_kill_die_stop_oom_and_start() -> None:
    memory = ContainerHistory()
    for action, at, signal in [("kill", 1.0, 15), ("die", 2.0, None), ("oom", 2.5, None), ("stop", 3.0, None)]:
        memory = remember_event(memory, EngineEvent(at, "c1", action, "llm", signal=signal))
    assert memory == ContainerHistory(
        manual_stop_at=3.0, last_kill_at=1.0, last_kill_signal=15, last_die_at=2.0, last_oom_at=2.5
    )
    restarted = remember_event(memory, EngineEvent(4.0, "c1", "start", "llm"))
    assert restarted == replace(memory, manual_stop_at=None)


def test_remember_event_ignores_other_actions() -> None:
    memory = ContainerHistory(last_die_at=2.0)
    assert remember_event(memory, EngineEvent(5.0, "c1", "health_status", "llm")) == memory


# -- recovery after a restart ---------------------------------------------------

ISSUED = 3000.0


@pytest.mark.parametrize(
    ("container", "ready", "now", "expected"),
    [
        (running(started_at=ISSUED + 2.0), True, ISSUED + 30.0, Recovery.RECOVERED),
        (running(started_at=ISSUED - 0.5), True, ISSUED + 30.0, Recovery.RECOVERED),
        (running(started_at=ISSUED + 2.0), False, ISSUED + 30.0, Recovery.PENDING),
        (running(started_at=ISSUED - 100.0), True, ISSUED + 30.0, Recovery.PENDING),
        (exited(137, started_at=ISSUED + 2.0), False, ISSUED + 30.0, Recovery.FAILED),
        (replace(exited(1, started_at=ISSUED + 2.0), state=ContainerState.DEAD), False, ISSUED + 9.0, Recovery.FAILED),
        (exited(137, started_at=ISSUED - 100.0), False, ISSUED + 30.0, Recovery.PENDING),
        (running(started_at=ISSUED + 2.0), False, ISSUED + 200.0, Recovery.TIMED_OUT),
        (None, False, ISSUED + 1.0, Recovery.GONE),
    ],
    ids=[
        "recovered",
        "recovered-clock-skew",
        "not-ready",
        "old-life",
        "died-again",
        "dead-again",
        "old-life-exited",
        "timed-out",
        "gone",
    ],
)
def test_recovery_of(container: ContainerSnapshot | None, ready: bool, now: float, expected: Recovery) -> None:
    assert recovery_of(container, ready, ISSUED, timeout=150.0, now=now) == expected


def test_recovery_timeout_is_start_period_plus_detection_time() -> None:
    assert recovery_timeout_of(running(), CFG) == 60.0 + 3 * 5.0 + 3.0
    assert recovery_timeout_of(None, CFG) == 120.0 + 3 * 5.0 + 3.0
    assert recovery_timeout_of(running(), replace(CFG, recovery_timeout=42.0)) == 42.0
