"""Outlier ejection inside the LiteLLM proxy: what real traffic says about each deployment.

The rotation callback (gpu_watchdog_rotation.py) feeds this book from LiteLLM's success and
failure hooks. A deployment that fails `consecutive` times in a row on real requests (a timeout, a
connection error or an HTTP 5xx; never a 4xx, a 429, a context-window error or a client that went
away) is ejected at once, without waiting for the watchdog, as Envoy's outlier detection does:
for `base_ejection` x its recent ejections (capped at `max_ejection`), the count decaying by one
per minute without an ejection; never more than `max_percent` of a model group at once, never its
last deployment. A deployment the watchdog cleared (a probe that started after the failures
answered) is back at once, its streak reset.

Pure: time comes in as `now`. Standard library only.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

REPORT_VERSION = 1
DECAY_SECONDS = 60.0
COUNTED_KINDS = ("timeout", "connection", "5xx")
IN_FLIGHT_MAX = 3600.0  # s: an attempt with no end event after this is forgotten (a lost event must not pin a drain)


@dataclass(frozen=True)
class OutlierSettings:
    consecutive: int = 3
    base_ejection: float = 10.0
    max_ejection: float = 300.0
    max_percent: float = 50.0


def parse_settings(data: Any) -> OutlierSettings:
    """rotation.json's `outlier` key; a missing or bad value keeps its default (the proxy never fails on it)."""
    if not isinstance(data, dict):
        return OutlierSettings()
    default = OutlierSettings()

    def number(key: str, fallback: float, low: float) -> float:
        value = data.get(key)
        ok = isinstance(value, int | float) and not isinstance(value, bool) and value >= low
        return float(value) if ok else fallback

    return OutlierSettings(
        consecutive=int(number("consecutive", default.consecutive, 1)),
        base_ejection=number("base_ejection", default.base_ejection, 0.0),
        max_ejection=number("max_ejection", default.max_ejection, 0.0),
        max_percent=min(100.0, number("max_percent", default.max_percent, 0.0)),
    )


def failure_kind(exception: Any) -> str | None:
    """timeout | connection | 5xx, or None for what says nothing about the backend's health."""
    if exception is None or isinstance(exception, asyncio.CancelledError):
        return None
    name = type(exception).__name__
    if "ContextWindow" in name or "ContentPolicy" in name:
        return None
    if "Timeout" in name or isinstance(exception, TimeoutError):
        return "timeout"
    if name == "APIConnectionError" or isinstance(exception, ConnectionError):
        return "connection"
    status = getattr(exception, "status_code", None)
    if isinstance(status, int) and 500 <= status <= 599:
        return "5xx"
    return None


@dataclass
class Outlier:
    """One deployment as real traffic sees it."""

    group: str = ""
    streak: int = 0  # consecutive counted failures since the last success (or clear)
    pending: int = 0  # of those, since the last ejection: `consecutive` of them eject
    last_failure: str | None = None
    last_failure_at: float | None = None
    ejected_until: float = 0.0
    ejections: int = 0  # recent ejections (decays by one a minute without one)
    decay_from: float = 0.0
    cleared_at: float = 0.0
    latency: float | None = None  # seconds, last success
    ttft: float | None = None  # seconds to the first token, last streamed success
    last_success_at: float | None = None


@dataclass
class OutlierBook:
    """Every deployment's record, plus which deployments make up each model group."""

    settings: OutlierSettings = field(default_factory=OutlierSettings)
    entries: dict[str, Outlier] = field(default_factory=dict)
    groups: dict[str, set[str]] = field(default_factory=dict)
    version: int = 0  # bumped on every change the report shows
    calls: dict[tuple[str, str], tuple[str, float]] = field(default_factory=dict)  # (call, deployment) -> group, start

    def started(self, call: str, ident: str, group: str, now: float) -> None:
        """An attempt sent to `ident` (LiteLLM's pre-call hook): in flight until its success or failure."""
        self._entry(ident, group)
        if (call, ident) not in self.calls:
            self.calls[(call, ident)] = (group, now)
            self.version += 1

    def ended(self, call: str, ident: str) -> None:
        """The attempt's success or failure event (a stream's comes at its end)."""
        if self.calls.pop((call, ident), None) is not None:
            self.version += 1

    def in_flight(self, now: float) -> dict[str, int]:
        """Deployment -> attempts in flight; one older than IN_FLIGHT_MAX (its end event lost) no longer counts."""
        for key, (_, at) in list(self.calls.items()):
            if now - at > IN_FLIGHT_MAX:
                del self.calls[key]
        counts = dict.fromkeys(self.entries, 0)
        for _, ident in self.calls:
            counts[ident] = counts.get(ident, 0) + 1
        return counts

    def _entry(self, ident: str, group: str) -> Outlier:
        entry = self.entries.setdefault(ident, Outlier(group=group))
        if group and entry.group != group:
            entry.group = group
        if group:
            self.groups.setdefault(group, set()).add(ident)
        return entry

    def see_group(self, group: str, idents: list[str]) -> None:
        """The candidates LiteLLM offers for a model: the group the percent cap is taken of."""
        known = self.groups.setdefault(group, set())
        known.update(idents)

    def _decay(self, entry: Outlier, now: float) -> None:
        if entry.ejections and now >= entry.ejected_until:
            steps = int((now - entry.decay_from) // DECAY_SECONDS)
            if steps > 0:
                entry.ejections = max(0, entry.ejections - steps)
                entry.decay_from += steps * DECAY_SECONDS

    def success(self, ident: str, group: str, now: float, latency: float | None, ttft: float | None) -> None:
        entry = self._entry(ident, group)
        changed = entry.streak != 0 or entry.last_success_at is None
        entry.streak = entry.pending = 0
        entry.latency, entry.ttft, entry.last_success_at = latency, ttft, now
        if changed:
            self.version += 1

    def failure(self, ident: str, group: str, kind: str | None, now: float) -> bool:
        """One failed attempt; True if it ejected the deployment. Uncounted kinds change nothing."""
        if kind not in COUNTED_KINDS:
            return False
        entry = self._entry(ident, group)
        entry.streak += 1
        entry.pending += 1
        entry.last_failure, entry.last_failure_at = kind, now
        self.version += 1
        if entry.pending < self.settings.consecutive or now < entry.ejected_until:
            return False
        if not self._room_to_eject(ident, entry.group, now):
            return False
        self._decay(entry, now)
        entry.ejections += 1
        seconds = min(self.settings.max_ejection, self.settings.base_ejection * entry.ejections)
        entry.ejected_until = now + seconds
        entry.decay_from = entry.ejected_until
        entry.pending = 0
        return True

    def _room_to_eject(self, ident: str, group: str, now: float) -> bool:
        """Never the last of a group, never more than max_percent of it."""
        members = self.groups.get(group, set()) | {ident}
        out = sum(1 for m in members if m != ident and m in self.entries and self.entries[m].ejected_until > now)
        return out + 1 < len(members) and (out + 1) * 100 <= self.settings.max_percent * len(members)

    def ejected(self, now: float) -> set[str]:
        return {ident for ident, entry in self.entries.items() if entry.ejected_until > now}

    def clear(self, cleared: dict[str, float], now: float) -> None:
        """The watchdog's false alarms: each clear (a time) ends the ejection and the streak it saw."""
        for ident, at in cleared.items():
            entry = self.entries.get(ident)
            if entry is None or at <= entry.cleared_at:
                continue
            entry.cleared_at = at
            if entry.last_failure_at is None or entry.last_failure_at <= at:
                entry.streak = entry.pending = 0
            if entry.ejected_until > now:
                entry.ejected_until = now
                entry.decay_from = now
            self.version += 1

    def document(self, now: float, host: str, pid: int) -> dict[str, Any]:
        """The report the watchdog reads (router-report-HOST-PID.json)."""
        for entry in self.entries.values():
            self._decay(entry, now)
        in_flight = self.in_flight(now)
        return {
            "version": REPORT_VERSION,
            "host": host,
            "pid": pid,
            "written_at": now,
            "deployments": {
                ident: {
                    "group": e.group,
                    "consecutive": e.streak,
                    "last_failure": e.last_failure,
                    "last_failure_at": e.last_failure_at,
                    "ejected_until": e.ejected_until or None,
                    "ejections": e.ejections,
                    "latency": e.latency,
                    "ttft": e.ttft,
                    "last_success_at": e.last_success_at,
                    "in_flight": in_flight.get(ident, 0),
                }
                for ident, e in sorted(self.entries.items())
            },
        }
