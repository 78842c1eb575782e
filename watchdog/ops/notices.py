"""Notifications, the pure part: which journal entries an operator hears about, and what is sent.

Only state transitions notify: a fault detected, a recovery, the crash-loop breaker giving
up, a GPU taken out of service, a GPU alert, a hung driver and their way back. Routine
entries (restart calls, rotation heartbeats, plan changes) never do. This module maps a
journal entry to a `Notice`, renders the payload each target kind expects, and decides
(with times passed in) what de-duplication and the per-target rate limit let through.
No I/O: `watchdog.ops.notify` sends.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from watchdog.entries import (
    ALERT_DRIVER_HUNG,
    ALERT_GPU_RESET,
    ALERT_HOST_SILENT,
    ALERT_MAINTENANCE,
    GPU_MARK_KINDS,
    EntryKind,
)

# Event kinds an operator can filter on (a target's `events:`), in the order the README lists them.
NOTIFY_EVENTS = (
    "fault",  # journal "detected": a managed container failed
    "recovered",  # journal "recovered": healthy again
    "given-up",  # journal "give-up": the crash-loop breaker opened
    "gpu-quarantined",  # journal "gpu-quarantined|drained|resetting", or the "alert" after a failed reset
    "gpu-alert",  # journal "alert" about a GPU with no mark (an Xid whose action is alert, the mark cap, a prediction)
    "gpu-recovered",  # journal "gpu-reset-ok" (the opt-in reset worked) or "gpu-proven" (its probation passed)
    "driver-hung",  # journal "alert" with fault driver-hung
    "driver-recovered",  # journal "driver-recovered": NVML answers again
    "cluster-down",  # journal "cluster-down": the fleet's Redis does not answer (healing goes on locally)
    "cluster-recovered",  # journal "cluster-up": it answers again
    "host-silent",  # journal "alert" with fault host-silent: another host of the fleet stopped publishing
    "host-back",  # journal "host-back": it publishes again
)
TEST_EVENT = "test"  # `gpu-watchdog notify --test`: passes every target's filter
NOTIFY_KINDS = ("webhook", "slack", "discord", "apprise")
DISCORD_LIMIT = 2000  # Discord refuses content longer than this
SLACK_COLOURS = {"critical": "#d00000", "warning": "#f2a900", "good": "#2eb886", "info": "#439fe0"}
APPRISE_TYPES = {"critical": "failure", "warning": "warning", "good": "success", "info": "info"}
RESERVED_FIELDS = ("event", "title", "severity", "container", "gpu", "fault", "ts", "host", "suppressed")
USERNAME = "gpu-watchdog"
RATE_WINDOW = 60.0  # the rate limit counts sends in the last minute


@dataclass(frozen=True)
class Notice:
    """One notification, before it is shaped for a target."""

    event: str
    title: str
    text: str
    severity: str  # critical | warning | good | info
    ts: float
    host: str
    container: str | None = None
    gpu: str | None = None
    fault: str | None = None

    @property
    def subject(self) -> str:
        """What it is about, for de-duplication: the container, else the GPU, else the host."""
        return self.container or self.gpu or self.host


def notice_from_entry(entry: Mapping[str, Any], host: str) -> Notice | None:
    """The notice for one journal entry (the fields `Journal.record` writes), or None when it is routine."""
    kind = str(entry.get("kind") or "")
    reason = str(entry.get("reason") or "")
    container = entry.get("container") or None
    gpu = entry.get("gpu") or None
    fault = entry.get("fault") or None
    ts = float(entry.get("ts") or 0.0)
    raw_detail = entry.get("detail")
    detail: Mapping[str, Any] = raw_detail if isinstance(raw_detail, Mapping) else {}

    def notice(event: str, title: str, text: str, severity: str) -> Notice:
        return Notice(event, title, text, severity, ts, host, container, gpu, fault)

    if kind == EntryKind.DETECTED:
        return notice("fault", f"FAULT {container}: {fault}", reason, "warning")
    if kind == EntryKind.RECOVERED:
        duration = entry.get("duration")
        after = f" after {float(duration):.1f} s" if isinstance(duration, (int, float)) else ""
        return notice("recovered", f"RECOVERED {container} ({fault}){after}", reason, "good")
    if kind == EntryKind.GIVE_UP:
        return notice(
            "given-up",
            f"GAVE UP on {container}: crash loop",
            f"{reason}. Fix it, then `gpu-watchdog reset {container}`",
            "critical",
        )
    if kind in GPU_MARK_KINDS:
        condition = kind.removeprefix("gpu-")
        fix = "" if condition == "resetting" else f"; once fixed: `gpu-watchdog gpu release {gpu}`"
        return notice("gpu-quarantined", f"GPU {gpu} {condition}", reason + fix, "critical")
    if kind == EntryKind.GPU_RESET_OK:
        return notice("gpu-recovered", f"GPU {gpu} reset and back in service", reason, "good")
    if kind == EntryKind.GPU_PROVEN:
        return notice("gpu-recovered", f"GPU {gpu} proven: back in rotation", reason, "good")
    if kind == EntryKind.DRIVER_RECOVERED:
        return notice("driver-recovered", "NVIDIA driver answers again", reason, "good")
    if kind == EntryKind.CLUSTER_DOWN:
        return notice("cluster-down", "fleet view unreachable (Redis)", reason, "warning")
    if kind == EntryKind.CLUSTER_UP:
        return notice("cluster-recovered", "fleet view reachable again (Redis)", reason, "good")
    if kind == EntryKind.HOST_BACK:
        return notice("host-back", f"host {detail.get('host', '?')} publishes again", reason, "good")
    if kind == EntryKind.ALERT:
        if fault == ALERT_HOST_SILENT:
            return notice("host-silent", f"HOST SILENT {detail.get('host', '?')}", reason, "critical")
        if fault == ALERT_DRIVER_HUNG:
            return notice("driver-hung", "NVIDIA driver hung", reason, "critical")
        if fault == ALERT_GPU_RESET:
            return notice("gpu-quarantined", f"GPU {gpu} quarantined (reset failed)", reason, "critical")
        if detail and detail.get("marked"):
            return None  # said with the mark itself (the gpu-<condition> entry just before it)
        if fault == ALERT_MAINTENANCE:  # a prediction (gpu.predict): plan it, nothing broke yet
            return notice("gpu-alert", f"GPU {gpu}: schedule maintenance", reason, "warning")
        return notice("gpu-alert", f"GPU ALERT {gpu or '(unknown GPU)'}", reason, "critical")
    return None


def notice_for_test(host: str, ts: float, target: str) -> Notice:
    """What `gpu-watchdog notify --test` sends."""
    return Notice(
        TEST_EVENT,
        "test notification",
        f"gpu-watchdog on {host} can reach the notify target {target}",
        "info",
        ts,
        host,
    )


def message_text(notice: Notice, suppressed: int = 0) -> str:
    """One line for people: `[host] TITLE: text (+N suppressed)`."""
    tail = f" (+{suppressed} suppressed)" if suppressed else ""
    return f"[{notice.host}] {notice.title}: {notice.text}{tail}"


def _fields(notice: Notice, suppressed: int) -> dict[str, Any]:
    return {
        "event": notice.event,
        "title": notice.title,
        "severity": notice.severity,
        "container": notice.container,
        "gpu": notice.gpu,
        "fault": notice.fault,
        "ts": notice.ts,
        "host": notice.host,
        "suppressed": suppressed,
    }


def cap(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def payload(kind: str, notice: Notice, suppressed: int = 0, key: str = "text") -> dict[str, Any]:
    """The JSON body for one target kind (apprise gets title, body and type instead)."""
    text = message_text(notice, suppressed)
    if kind == "webhook":
        return {key: text, **_fields(notice, suppressed)}
    if kind == "slack":
        facts = [("container", notice.container), ("gpu", notice.gpu), ("fault", notice.fault), ("host", notice.host)]
        return {
            "text": text,
            "attachments": [
                {
                    "color": SLACK_COLOURS.get(notice.severity, SLACK_COLOURS["info"]),
                    "fallback": text,
                    "title": notice.title,
                    "text": notice.text,
                    "fields": [{"title": name, "value": value, "short": True} for name, value in facts if value],
                    "ts": int(notice.ts),
                }
            ],
        }
    if kind == "discord":
        return {"content": cap(text, DISCORD_LIMIT), "username": USERNAME}
    if kind == "apprise":
        tail = f" (+{suppressed} suppressed)" if suppressed else ""
        return {
            "title": f"[{notice.host}] {notice.title}",
            "body": notice.text + tail,
            "type": APPRISE_TYPES.get(notice.severity, "info"),
        }
    raise ValueError(f"unknown notify kind {kind!r}; one of {', '.join(NOTIFY_KINDS)}")


class Gate:
    """De-duplication and the rate limit of one target. Times are passed in (monotonic seconds).

    A notice whose (event, subject) was let through less than `dedup_window` ago is suppressed;
    so is any notice once `per_minute` were let through in the last 60 s. Suppressed notices are
    counted, and the count rides on the next notice let through (`+N suppressed`).
    """

    def __init__(self, dedup_window: float, per_minute: int) -> None:
        self.dedup_window = dedup_window
        self.per_minute = per_minute
        self.last_sent: dict[tuple[str, str], float] = {}
        self.sent_at: deque[float] = deque()
        self.suppressed = 0

    def admit(self, notice: Notice, now: float) -> tuple[bool, int]:
        """(let it through, suppressed count to report with it); the count is reset when it goes out."""
        while self.sent_at and self.sent_at[0] <= now - RATE_WINDOW:
            self.sent_at.popleft()
        if len(self.last_sent) > 1024:  # bounded: forget what is out of the window anyway
            self.last_sent = {k: t for k, t in self.last_sent.items() if now - t < self.dedup_window}
        key = (notice.event, notice.subject)
        last = self.last_sent.get(key)
        if (last is not None and now - last < self.dedup_window) or len(self.sent_at) >= self.per_minute:
            self.suppressed += 1
            return False, 0
        self.last_sent[key] = now
        self.sent_at.append(now)
        carried, self.suppressed = self.suppressed, 0
        return True, carried
