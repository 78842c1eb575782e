"""Crash-loop breaker: backoff between restarts, give up after too many.

Pure: the restart history comes in (from the journal), a verdict comes out.
First restart at once, then backoff_initial doubling up to backoff_max; at
most max_restarts attempts within `window` seconds, after which the container
is given up until `cooldown` has passed or an operator runs `gpu-watchdog reset`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from watchdog.config import BreakerConfig


class BreakerState(StrEnum):
    CLOSED = "closed"  # may restart now
    BACKOFF = "backoff"  # may restart at next_allowed_at
    TRIP = "trip"  # one attempt too many: give up now
    OPEN = "open"  # given up earlier; cooling down


@dataclass(frozen=True)
class BreakerHistory:
    """One container's restart attempts and breaker events, from the journal."""

    attempts: tuple[float, ...] = ()  # restart start times, oldest first
    given_up_at: float | None = None
    reset_at: float | None = None  # last `gpu-watchdog reset`


@dataclass(frozen=True)
class BreakerVerdict:
    state: BreakerState
    reason: str
    next_allowed_at: float | None = None
    recent_attempts: int = 0


def evaluate(
    history: BreakerHistory, policy: BreakerConfig, now: float, max_restarts: int | None = None
) -> BreakerVerdict:
    """Whether a container may be restarted now, and why (or why not)."""
    limit = max_restarts or policy.max_restarts
    rearm_at = history.reset_at or 0.0
    if history.given_up_at is not None and history.given_up_at >= rearm_at:
        until = history.given_up_at + policy.cooldown
        if now < until:
            return BreakerVerdict(
                BreakerState.OPEN,
                f"given up (crash loop); re-arms in {until - now:.0f} s or with `gpu-watchdog reset`",
                next_allowed_at=until,
            )
        rearm_at = until
    recent = [t for t in history.attempts if t > now - policy.window and t >= rearm_at]
    if len(recent) >= limit:
        return BreakerVerdict(
            BreakerState.TRIP,
            f"{len(recent)} restarts in the last {policy.window:.0f} s (limit {limit}): giving up",
            recent_attempts=len(recent),
        )
    if not recent:
        return BreakerVerdict(BreakerState.CLOSED, "no recent restarts", recent_attempts=0)
    delay = min(policy.backoff_initial * 2 ** (len(recent) - 1), policy.backoff_max)
    next_at = recent[-1] + delay
    if now < next_at:
        return BreakerVerdict(
            BreakerState.BACKOFF,
            f"backoff: restart {len(recent) + 1} allowed {delay:.0f} s after the last one ({next_at - now:.1f} s left)",
            next_allowed_at=next_at,
            recent_attempts=len(recent),
        )
    return BreakerVerdict(
        BreakerState.CLOSED, f"{len(recent)} restart(s) in the last {policy.window:.0f} s", recent_attempts=len(recent)
    )
