"""The capacity plan as the fleet changes: kept for status, said when the capacity really changes.

The plan is recomputed every cycle (pure, cheap, watchdog/router/capacity.py); a change of its
verdict, its GPUs, its per-deployment numbers or whether the memory limits fit is logged, and
journaled (kind `capacity`) unless it is a healthy start.
"""

from __future__ import annotations

from typing import Any

from loguru import logger

from watchdog.entries import EntryKind
from watchdog.journal import Journal
from watchdog.router.capacity import CapacityPlan, CapacityVerdict


class CapacityWatch:
    """The plan in force (`plan`, None before the first cycle) and what was last said about it."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.plan: CapacityPlan | None = None
        self._plan_key: tuple[Any, ...] | None = None

    def track(self, plan: CapacityPlan, now: float) -> None:
        """Recomputed every cycle (pure, cheap); said when the capacity really changes."""
        key = (
            plan.verdict,
            plan.serving_gpus,
            tuple((d.name, d.rpm, d.max_parallel_requests) for d in plan.deployments),
            plan.global_max_parallel_requests,
            plan.memory.fits,
        )
        previous, self.plan = self._plan_key, plan
        if key == previous:
            return
        self._plan_key = key
        first = previous is None
        text = f"capacity plan{' (start)' if first else ' changed'}: {plan.text}"
        if plan.verdict != CapacityVerdict.OK or not plan.memory.fits:
            warning = text if plan.verdict != CapacityVerdict.OK else f"{text}; {plan.memory.text}"
            logger.bind(verdict=plan.verdict.value).warning("{}", warning)
        else:
            logger.bind(verdict=plan.verdict.value).info("{}", text)
        if first and plan.verdict == CapacityVerdict.OK and plan.memory.fits:
            return  # a healthy start needs no journal line
        self.journal.record(
            EntryKind.CAPACITY,
            text if plan.memory.fits else f"{text}; {plan.memory.text}",
            ts=now,
            detail={"verdict": plan.verdict.value, "serving_gpus": plan.serving_gpus},
        )
