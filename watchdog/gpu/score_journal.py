"""A GPU's health score into the journal when it moves, so the report and its timeline can show it.

Every reading scores every GPU (gpu/health_score.py); journaling each score would write a row per GPU
every poll. An entry is written when a GPU's score first drops under 1, moves by `STEP` or more from
the last one written, crosses `gpu.health.evict_below`, or is back at 1: the history an operator
reads ("GPU 2 went 1 -> 0.5 at 02:10, under the eviction threshold at 02:40") at a few rows a day.
`worth_recording` is the pure rule; `ScoreJournal` holds the last score written per GPU.
"""

from __future__ import annotations

from collections.abc import Mapping

from watchdog.entries import EntryKind
from watchdog.gpu.health_score import HealthScore
from watchdog.journal import Journal

STEP = 0.1


def worth_recording(last: float | None, score: float, evict_below: float) -> bool:
    """Pure: whether a score is news against the last one journaled (None: none yet, taken as healthy)."""
    before = 1.0 if last is None else last
    if round(score, 3) == round(before, 3):
        return False
    crossed = (before < evict_below) != (score < evict_below)
    return crossed or score >= 1.0 or before >= 1.0 or abs(score - before) >= STEP - 1e-9


class ScoreJournal:
    """The last score journaled per GPU key; `see` journals the scores of one reading that are news."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.last: dict[str, float] = {}

    def see(self, scores: Mapping[str, HealthScore], evict_below: float, now: float) -> None:
        for key, score in scores.items():
            if not worth_recording(self.last.get(key), score.score, evict_below):
                continue
            self.last[key] = score.score
            self.journal.record(
                EntryKind.HEALTH_SCORE,
                f"GPU {score.index} health {score.summary()}",
                ts=now,
                gpus=(key,),
                detail={"index": score.index, "uuid": score.uuid, **score.view()},
            )
