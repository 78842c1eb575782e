"""watchdog.containers.breaker: backoff between restarts, give up on a crash loop, re-arm."""

from __future__ import annotations

import pytest

from watchdog.config import BreakerConfig
from watchdog.containers.breaker import BreakerHistory, BreakerState, evaluate

POLICY = BreakerConfig()  # 5 in 300 s, backoff 10 s doubling to 60 s, cooldown 3600 s


def test_first_restart_is_allowed_at_once() -> None:
    verdict = evaluate(BreakerHistory(), POLICY, now=1000.0)
    assert verdict.state == BreakerState.CLOSED
    assert verdict.recent_attempts == 0
    assert verdict.next_allowed_at is None


@pytest.mark.parametrize(
    ("attempts", "delay"),
    [
        ((1000.0,), 10.0),
        ((1000.0, 1010.0), 20.0),
        ((1000.0, 1010.0, 1030.0), 40.0),
        ((1000.0, 1010.0, 1030.0, 1070.0), 60.0),  # 80 capped at backoff_max
    ],
)
def test_backoff_doubles_from_initial_and_is_capped_at_max(attempts: tuple[float, ...], delay: float) -> None:
    history = BreakerHistory(attempts)
    last = attempts[-1]
    just_before = evaluate(history, POLICY, now=last + delay - 0.5)
    assert just_before.state == BreakerState.BACKOFF
    assert just_before.next_allowed_at == pytest.approx(last + delay)
    assert just_before.recent_attempts == len(attempts)
    assert evaluate(history, POLICY, now=last + delay).state == BreakerState.CLOSED


def test_backoff_uses_the_policy_values() -> None:
    policy = BreakerConfig(backoff_initial=1.0, backoff_max=3.0, max_restarts=10)
    history = BreakerHistory((0.0, 1.0, 3.0, 7.0))  # next delays: 1, 2, 4 -> 3 (cap)
    verdict = evaluate(history, policy, now=8.0)
    assert verdict.state == BreakerState.BACKOFF
    assert verdict.next_allowed_at == pytest.approx(10.0)


def test_trips_when_max_restarts_attempts_are_within_the_window() -> None:
    history = BreakerHistory((1000.0, 1010.0, 1030.0, 1070.0, 1130.0))
    verdict = evaluate(history, POLICY, now=1200.0)
    assert verdict.state == BreakerState.TRIP
    assert verdict.recent_attempts == 5
    assert "limit 5" in verdict.reason


def test_attempts_older_than_the_window_do_not_count() -> None:
    # Five attempts, but the first is 301 s old at `now`: four recent, no trip.
    history = BreakerHistory((899.0, 1010.0, 1030.0, 1070.0, 1130.0))
    verdict = evaluate(history, POLICY, now=1200.0)
    assert verdict.state == BreakerState.CLOSED
    assert verdict.recent_attempts == 4


def test_open_during_cooldown_after_given_up() -> None:
    history = BreakerHistory((1000.0, 1010.0, 1030.0, 1070.0, 1130.0), given_up_at=1200.0)
    verdict = evaluate(history, POLICY, now=1200.0 + 3599.0)
    assert verdict.state == BreakerState.OPEN
    assert verdict.next_allowed_at == pytest.approx(1200.0 + 3600.0)
    assert "gpu-watchdog reset" in verdict.reason


def test_rearmed_after_cooldown_forgets_attempts_before_it() -> None:
    policy = BreakerConfig(window=10_000.0)  # attempts still inside the window after cooldown
    history = BreakerHistory((1000.0, 1010.0, 1030.0, 1070.0, 1130.0), given_up_at=1200.0)
    verdict = evaluate(history, policy, now=1200.0 + 3600.0)
    assert verdict.state == BreakerState.CLOSED
    assert verdict.recent_attempts == 0


def test_reset_after_given_up_rearms_at_once_and_forgets_older_attempts() -> None:
    history = BreakerHistory((1000.0, 1010.0, 1030.0, 1070.0, 1130.0), given_up_at=1200.0, reset_at=1250.0)
    verdict = evaluate(history, POLICY, now=1251.0)
    assert verdict.state == BreakerState.CLOSED
    assert verdict.recent_attempts == 0


def test_attempts_after_a_reset_count_again() -> None:
    history = BreakerHistory((1000.0, 1260.0), given_up_at=1200.0, reset_at=1250.0)
    verdict = evaluate(history, POLICY, now=1265.0)
    assert verdict.state == BreakerState.BACKOFF
    assert verdict.recent_attempts == 1
    assert verdict.next_allowed_at == pytest.approx(1270.0)


def test_given_up_after_an_older_reset_is_still_open() -> None:
    history = BreakerHistory((), given_up_at=1200.0, reset_at=1100.0)
    assert evaluate(history, POLICY, now=1300.0).state == BreakerState.OPEN


def test_per_container_max_restarts_overrides_the_policy() -> None:
    history = BreakerHistory((1000.0, 1010.0))
    assert evaluate(history, POLICY, now=1100.0, max_restarts=2).state == BreakerState.TRIP
    assert evaluate(history, POLICY, now=1100.0).state == BreakerState.CLOSED
    assert evaluate(BreakerHistory((1000.0,) * 5), POLICY, now=1100.0, max_restarts=8).state != BreakerState.TRIP


def test_crash_loop_with_default_policy_restarts_five_times_then_trips() -> None:
    # By hand: restart at 0, then backoff 10, 20, 40, 80->60 after each one.
    expected = [0.0, 10.0, 30.0, 70.0, 130.0]
    attempts: list[float] = []
    tripped_at = None
    for tick in range(0, 400):
        now = float(tick)
        verdict = evaluate(BreakerHistory(tuple(attempts)), POLICY, now)
        if verdict.state == BreakerState.TRIP:
            tripped_at = now
            break
        if verdict.state == BreakerState.CLOSED:
            attempts.append(now)  # restart; the container crashes right away
        else:
            assert verdict.state == BreakerState.BACKOFF
    assert attempts == expected
    assert tripped_at == 131.0  # the first moment after the 5th restart it is asked again
