"""What the proxy's outlier reports mean to the watchdog: router suspects, and false alarms to clear.

Pure: time comes in as `now`; files are read by router_reports.py. The proxy's callback
(litellm/gpu_watchdog_outliers.py) ejects a deployment on its own after a streak of timeouts,
connection errors or 5xx on real traffic and reports it. Here a reported deployment becomes a
*router suspect*: out of rotation at once and probed fast, like any suspect. A probe that started
after the report's last failure and answered OK clears it (the ejection ends, the proxy routes
there again); one that fails counts towards the failure threshold, and the normal fault path
restarts it. A deployment the proxy reported again and again (`MAX_CLEARS` streaks within
`CLEARS_WINDOW`) while its probes answer fails in a way the probe cannot see (/health fine,
completions not): it is no longer cleared, and the proxy's growing ejection keeps it out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from watchdog.config import LitellmConfig
from watchdog.model import ProbeResult, ProbeStatus

REPORT_VERSION = 1
REPORT_PREFIX = "router-report-"
STALE_AFTER = 60.0  # s; an older report (a proxy gone or idle) is ignored
STREAK = 2  # failures in a row that make a deployment a router suspect before its ejection
MAX_CLEARS = 3  # reported streaks of one deployment within CLEARS_WINDOW from which on it is not cleared
CLEARS_WINDOW = 600.0


@dataclass(frozen=True)
class DeploymentReport:
    """One deployment as one proxy process saw it."""

    deployment: str
    source: str  # the report file's name
    consecutive: int = 0
    last_failure: str | None = None
    last_failure_at: float | None = None
    ejected_until: float | None = None
    ejections: int = 0
    latency: float | None = None
    ttft: float | None = None
    in_flight: int | None = None  # attempts sent to it and not ended yet (streams: until their end)


def outlier_settings(settings: LitellmConfig) -> dict[str, float]:
    """rotation.json's `outlier`: what the proxy's outlier book uses."""
    return {
        "consecutive": settings.outlier_consecutive,
        "base_ejection": settings.outlier_base_ejection,
        "max_ejection": settings.outlier_max_ejection,
        "max_percent": settings.outlier_max_percent,
    }


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def in_flight_of(reports: Sequence[DeploymentReport]) -> dict[str, int]:
    """Deployment -> attempts in flight, summed over the proxy processes that report it."""
    counts: dict[str, int] = {}
    for report in reports:
        if report.in_flight is not None:
            counts[report.deployment] = counts.get(report.deployment, 0) + report.in_flight
    return counts


def parse_report(text: str, source: str, now: float) -> tuple[list[DeploymentReport], str]:
    """The deployments of one report file, or none and why it is ignored."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        return [], f"not JSON ({exc})"
    if not isinstance(data, dict) or data.get("version") != REPORT_VERSION:
        return [], f"not a version-{REPORT_VERSION} router report"
    written = _float(data.get("written_at"))
    deployments = data.get("deployments")
    if written is None or not isinstance(deployments, dict):
        return [], "no written_at or deployments"
    if now - written > STALE_AFTER:
        return [], f"{now - written:.0f} s old (ignored after {STALE_AFTER:g} s)"
    reports = []
    for ident, row in deployments.items():
        if not isinstance(row, dict):
            continue
        consecutive = row.get("consecutive")
        ejections = row.get("ejections")
        kind = row.get("last_failure")
        reports.append(
            DeploymentReport(
                str(ident),
                source,
                consecutive if isinstance(consecutive, int) and not isinstance(consecutive, bool) else 0,
                kind if isinstance(kind, str) else None,
                _float(row.get("last_failure_at")),
                _float(row.get("ejected_until")),
                ejections if isinstance(ejections, int) and not isinstance(ejections, bool) else 0,
                _float(row.get("latency")),
                _float(row.get("ttft")),
                _count(row.get("in_flight")),
            )
        )
    return reports, "ok"


def merge_reports(reports: Sequence[DeploymentReport]) -> dict[str, DeploymentReport]:
    """One view per deployment over several proxy processes: the one with the latest failure."""
    merged: dict[str, DeploymentReport] = {}
    for report in reports:
        held = merged.get(report.deployment)
        if held is None or (report.last_failure_at or 0.0) > (held.last_failure_at or 0.0):
            merged[report.deployment] = report
    return merged


def alarming(report: DeploymentReport, now: float) -> bool:
    """A streak in progress or an ejection in force."""
    return report.last_failure_at is not None and (report.consecutive >= STREAK or (report.ejected_until or 0.0) > now)


def news(before: Mapping[str, DeploymentReport], after: Mapping[str, DeploymentReport], now: float) -> list[str]:
    """Deployments whose report shows a new streak or a new ejection (the loop is woken for them)."""
    fresh = []
    for ident, report in after.items():
        old = before.get(ident)
        if not alarming(report, now):
            continue
        newer = report.ejections > old.ejections if old else True
        later = (report.ejected_until or 0.0) > (old.ejected_until or 0.0) if old else True
        if old is None or not alarming(old, now) or newer or later:
            fresh.append(ident)
    return sorted(fresh)


def evidence(report: DeploymentReport, now: float) -> str:
    """The proxy's evidence, in one line."""
    text = f"{report.consecutive} failure(s) in a row on real traffic (last: {report.last_failure})"
    if (report.ejected_until or 0.0) > now:
        text += f", ejected by the proxy for {(report.ejected_until or 0.0) - now:.0f} s more"
    return text


def answered_since(results: Sequence[ProbeResult], since: float) -> ProbeResult | None:
    """The first OK probe that started after `since` (a probe finished at `at`, after `duration`)."""
    for result in results:
        if result.status == ProbeStatus.OK and result.at - result.duration > since:
            return result
    return None


@dataclass(frozen=True)
class Judgement:
    suspects: dict[str, str] = field(default_factory=dict)  # deployment -> why (out of rotation, probed fast)
    clear: dict[str, float] = field(default_factory=dict)  # deployment -> when its probe answered
    not_cleared: dict[str, str] = field(default_factory=dict)  # deployment -> why it is no longer cleared


def judge(
    reports: Mapping[str, DeploymentReport],
    probes: Mapping[str, Sequence[ProbeResult]],
    cleared: Mapping[str, float],
    streaks: Mapping[str, Sequence[float]],
    now: float,
    *,
    frozen: Mapping[str, float] | None = None,
) -> Judgement:
    """`probes`: deployment -> its container's probe results; `cleared`: deployment -> when it was
    cleared; `streaks`: deployment -> when each of its reported streaks began, this one included;
    `frozen`: deployment -> when the tokens of a server with work to do last moved (its latest
    reading showed none). An answering probe does not clear a server whose counters have stood
    still since before the proxy's last failure: that is a wedge taking shape (the progress check
    restarts it when its stall window is full), not a false alarm."""
    frozen = frozen or {}
    verdict = Judgement()
    for ident, report in sorted(reports.items()):
        last = report.last_failure_at
        if last is None or not alarming(report, now) or cleared.get(ident, float("-inf")) >= last:
            continue
        recent = [t for t in streaks.get(ident, ()) if now - t <= CLEARS_WINDOW]
        if len(recent) >= MAX_CLEARS:
            verdict.not_cleared[ident] = (
                f"reported {len(recent)} times in {CLEARS_WINDOW / 60:.0f} min while its probes answer: "
                "failing in a way /health does not show; no longer cleared (the proxy's ejection grows)"
            )
            continue
        answer = answered_since(probes.get(ident, ()), last)
        stalled = ident in frozen and frozen[ident] <= last
        if answer is not None and not stalled:
            verdict.clear[ident] = answer.at
        else:
            why = f"router: {evidence(report, now)}"
            verdict.suspects[ident] = why + (f"; no token generated for {now - frozen[ident]:.0f} s" if stalled else "")
    return verdict
