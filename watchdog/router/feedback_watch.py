"""The router's feedback, both ways: the proxy's outlier reports in, router suspects and clears out.

Called by the serving watch while it builds its suspects (`suspects(view, now)`), so a deployment
the proxy reports failing is out of rotation at once and probed every suspect_probe_interval until
it answers (a false alarm: cleared, written into rotation.json's `cleared`, and the proxy's
ejection ends) or reaches failure_threshold (a fault: the normal fault path restarts it). The
decisions are router_feedback.judge's (pure); the journal gets `router-report` once per streak,
with the proxy's evidence, and `router-cleared` once per clear.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from loguru import logger

from watchdog.config import Config
from watchdog.entries import EntryKind
from watchdog.router.litellm_config import deployment_id
from watchdog.router.router_feedback import CLEARS_WINDOW, DeploymentReport, alarming, evidence, judge
from watchdog.router.router_reports import ReportReader
from watchdog.subsystem import CycleView, Services


class RouterFeedback:
    """One per daemon, owned by the router sync; its reader thread starts with the first cycle."""

    def __init__(self, config: Config, services: Services, directory: Callable[[], Path]) -> None:
        self.config = config
        self.journal = services.journal
        self.reader = ReportReader(directory, services.clock, services.wake)
        self.cleared: dict[str, float] = {}  # deployment -> when a probe showed it serving (rotation.json)
        self._streaks: dict[str, list[float]] = {}  # deployment -> when each reported streak began
        self._open: set[str] = set()  # deployments whose streak is journaled and not yet over
        self._not_cleared: set[str] = set()
        self.reports_total = 0
        self.ejected = 0
        self.view: dict[str, dict[str, Any]] = {}

    def apply_config(self, config: Config) -> None:
        self.config = config

    def stop(self) -> None:
        self.reader.stop()

    def suspects(self, view: CycleView, now: float, frozen: Mapping[str, float] | None = None) -> dict[str, str]:
        """Container ID -> why the router says it is suspect. Never raises: the probes' suspects go on.

        `frozen`: container ID -> when the tokens of a busy server last moved (see router_feedback.judge)."""
        try:
            return self._suspects(view, now, frozen or {})
        except Exception as exc:
            logger.exception("router feedback failed: {}", exc)
            return {}

    def _suspects(self, view: CycleView, now: float, frozen: Mapping[str, float]) -> dict[str, str]:
        if not self.config.litellm.enabled:
            return {}
        self.reader.start()
        reports = self.reader.reports()
        by_deployment = {deployment_id(c.name, c.gpus): c for c in view.containers if c.managed}
        names = {ident: c.name for ident, c in by_deployment.items()}
        fresh = [i for i, r in sorted(reports.items()) if i not in self._open and self._alarm(r, now)]
        for ident in fresh:  # a new streak: counted before it is judged (the third is not cleared)
            self._open.add(ident)
            self._streaks.setdefault(ident, []).append(now)
        self._streaks = {i: [t for t in ts if now - t <= CLEARS_WINDOW] for i, ts in self._streaks.items()}
        probes = {ident: view.histories[c.id].results for ident, c in by_deployment.items() if c.id in view.histories}
        stood = {ident: frozen[c.id] for ident, c in by_deployment.items() if c.id in frozen}
        verdict = judge(reports, probes, self.cleared, self._streaks, now, frozen=stood)
        for ident in fresh:
            self.reports_total += 1
            message = f"{ident}: the proxy reports {evidence(reports[ident], now)}"
            if ident not in verdict.not_cleared:
                message += "; probing it now"
            logger.bind(container=names.get(ident, ident), deployment=ident).warning("{}", message)
            self.journal.record(EntryKind.ROUTER_REPORT, message, ts=now, container=names.get(ident))
        for ident, at in verdict.clear.items():
            self.cleared[ident] = at
            self._open.discard(ident)
            message = f"{ident}: a false alarm: its probe answered at {at:.1f} after the proxy's report; ejection ended"
            logger.bind(container=names.get(ident, ident), deployment=ident).info("{}", message)
            self.journal.record(EntryKind.ROUTER_CLEARED, message, ts=now, container=names.get(ident))
        for ident, why in verdict.not_cleared.items():
            if ident not in self._not_cleared:
                self._not_cleared.add(ident)
                logger.bind(container=names.get(ident, ident), deployment=ident).warning("{}: {}", ident, why)
                self.journal.record(EntryKind.ROUTER_REPORT, f"{ident}: {why}", ts=now, container=names.get(ident))
        self._open &= {i for i, r in reports.items() if alarming(r, now)}
        self._not_cleared &= {i for i, times in self._streaks.items() if times}
        self.cleared = {i: t for i, t in self.cleared.items() if now - t <= CLEARS_WINDOW}
        self._keep_view(reports, names, now)
        return {by_deployment[i].id: why for i, why in verdict.suspects.items() if i in by_deployment}

    def _alarm(self, report: DeploymentReport, now: float) -> bool:
        """A streak or ejection the watchdog has not cleared."""
        last = report.last_failure_at
        return last is not None and alarming(report, now) and self.cleared.get(report.deployment, float("-inf")) < last

    def _keep_view(self, reports: Mapping[str, DeploymentReport], names: Mapping[str, str], now: float) -> None:
        """For status and /metrics: each reported deployment as the router sees it."""
        self.view = {
            ident: {
                "container": names.get(ident),
                "failures": r.consecutive,
                "last_failure": r.last_failure,
                "ejected": (r.ejected_until or 0.0) > now,
                "ejected_until": r.ejected_until,
                "ejections": r.ejections,
                "latency": r.latency,
                "ttft": r.ttft,
                "cleared_at": self.cleared.get(ident),
            }
            for ident, r in sorted(reports.items())
        }
        self.ejected = sum(1 for row in self.view.values() if row["ejected"])
