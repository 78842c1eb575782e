"""Suspect: the first sign of a hang, long before the failure threshold.

Pure: time comes in as `now`. A hang looks to the prober like a probe that does not come back.
Waiting out the timeout (3 s) three times before acting leaves a hung backend in rotation for
most of that; but a probe in flight far longer than this server usually takes to answer is
evidence already. A suspect is taken out of rotation at once and re-probed fast (the restart
still needs `failure_threshold` failed probes: a suspect that answers is back in, unharmed).
"""

from __future__ import annotations

from collections.abc import Sequence

from watchdog.model import ProbeResult, ProbeStatus

OVERDUE_FACTOR = 5.0  # a probe in flight this many times this server's slowest recent answer is overdue
RECENT_ANSWERS = 8


def overdue_after(results: Sequence[ProbeResult], floor: float, timeout: float) -> float:
    """Seconds after which a probe in flight is evidence: max(floor, 5 x the slowest recent OK answer).

    A server that answers /health in 1 s under load is given 5 s (past the timeout: never suspect
    until it fails), one that answers in 2 ms gets the floor.
    """
    recent = [r.duration for r in list(results)[-RECENT_ANSWERS:] if r.status == ProbeStatus.OK]
    usual = max(recent, default=0.0)
    return min(max(floor, OVERDUE_FACTOR * usual), timeout + 1.0)


def suspect_reason(
    results: Sequence[ProbeResult],
    in_flight_since: float | None,
    now: float,
    *,
    floor: float,
    timeout: float,
) -> str | None:
    """Why this server is suspect now, or None: its latest probe failed, or one is in flight overdue."""
    latest = results[-1] if results else None
    if latest is not None and latest.status == ProbeStatus.FAILED:
        return f"suspect: last probe failed ({latest.detail})"
    if in_flight_since is not None:
        waited = now - in_flight_since
        limit = overdue_after(results, floor, timeout)
        if waited >= limit:
            usual = max((r.duration for r in results if r.status == ProbeStatus.OK), default=None)
            usually = f"usually answers in {usual * 1000:.0f} ms" if usual is not None else "no answer yet"
            return f"suspect: probe unanswered for {waited:.1f} s ({usually})"
    return None
