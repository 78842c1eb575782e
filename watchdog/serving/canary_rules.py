"""Canary: when a 1-token completion is worth sending, and what two failed ones in a row mean.

Pure: time comes in as `now`. The progress check needs work waiting to see a wedge, and a
server whose counters it cannot read (`server: openai`) is never judged by it. A canary is
the direct question, "generate one token", asked only of a server that has not proved it can
generate lately: one whose token counters grew within the canary interval needs no canary
(real traffic did the asking), so a busy fleet costs nothing. Two failed canaries in a row
(a timeout, an error status, no answer) make the server *wedged*, with the same remedy as a
wedge the counters show.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from watchdog.serving.progress import ProgressTrack, Wedged

CANARY_FAILURES = 2  # failed canaries in a row that make a server wedged: one can be bad luck


@dataclass(frozen=True)
class CanaryResult:
    """One canary completion: when it ended, whether it generated, and how long it took."""

    at: float
    ok: bool
    detail: str
    duration: float


def proved_alive(track: ProgressTrack, interval: float, now: float) -> bool:
    """Did real traffic show this server generating within the last `interval`? Then no canary is due."""
    return track.grew_at is not None and now - track.grew_at < interval


def canary_wedged(results: Sequence[CanaryResult], life: float | None) -> Wedged | None:
    """Wedged when the last CANARY_FAILURES canaries of this container life all failed."""
    recent = [r for r in results if life is None or r.at >= life][-CANARY_FAILURES:]
    if len(recent) < CANARY_FAILURES or any(r.ok for r in recent):
        return None
    first, last = recent[0], recent[-1]
    reason = (
        f"canary: {len(recent)} 1-token completions in a row failed (last: {last.detail}); /health may still answer"
    )
    evidence: dict[str, float | str] = {
        "check": "canary",
        "failed_canaries": len(recent),
        "first_failed_at": first.at,
        "last_failed_at": last.at,
        "last_detail": last.detail,
    }
    return Wedged(first.at - first.duration, reason, evidence)
