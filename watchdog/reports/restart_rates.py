"""Restart-rate report from the journal: per container, per GPU, fleet totals. Pure.

Inputs are the journal's entries and action rows; outputs are rows with restarts, the
peak hourly rate and the instability flag (seed 001: more than 5 restarts in an hour),
restarts by cause, time to recover (fault detected -> healthy again), availability and
breaker trips. Formats: table, json, csv, markdown.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from watchdog.entries import ActionKind, EntryKind
from watchdog.model import NOT_SENT

if TYPE_CHECKING:  # the journal is I/O; the report only reads its rows
    from watchdog.journal import ActionRow

HOUR = 3600.0
INSTABILITY_PER_HOUR = 5  # seed 001: alert above 5 restarts per hour
END_KINDS = (EntryKind.RECOVERED, EntryKind.CLEARED)
FORMATS = ("table", "json", "csv", "markdown")  # html: watchdog.reports.html (needs the timeline)


@dataclass(frozen=True)
class Window:
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return max(self.end - self.start, 1e-9)


@dataclass
class Row:
    """One container, one GPU, or the fleet."""

    name: str
    restarts: int = 0
    restarts_per_hour: float = 0.0
    peak_restarts_in_an_hour: int = 0
    unstable: bool = False
    by_cause: dict[str, int] = field(default_factory=dict)
    faults: int = 0
    recovery_p50_s: float | None = None
    recovery_p95_s: float | None = None
    availability_pct: float | None = None
    breaker_trips: int = 0
    gpus: list[str] = field(default_factory=list)
    health_low: float | None = None  # a GPU's lowest health score in the window (journaled when it moved)
    health_last: float | None = None  # and its score at the window's end


@dataclass(frozen=True)
class Report:
    window: Window
    threshold: int
    containers: list[Row]
    gpus: list[Row]
    fleet: Row

    def as_dict(self) -> dict[str, Any]:
        return {
            "since": self.window.start,
            "until": self.window.end,
            "instability_threshold_per_hour": self.threshold,
            "containers": [asdict(r) for r in self.containers],
            "gpus": [asdict(r) for r in self.gpus],
            "fleet": asdict(self.fleet),
        }


def is_restart(action: ActionRow) -> bool:
    """A restart that reached the engine: not a dry run, not a call that never got there (engine unreachable)."""
    return action.kind == ActionKind.RESTART and not action.dry_run and not (action.outcome or "").startswith(NOT_SENT)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (no interpolation: every figure is a real observation)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def peak_in_an_hour(times: Sequence[float]) -> int:
    """The most restarts inside any 60-minute span."""
    ordered = sorted(times)
    best, left = 0, 0
    for right, t in enumerate(ordered):
        while t - ordered[left] >= HOUR:
            left += 1
        best = max(best, right - left + 1)
    return best


def downtime(entries: Sequence[Mapping[str, Any]], window: Window) -> dict[str, float]:
    """Seconds each container spent in a fault episode (detected -> recovered/cleared), clipped to the window."""
    open_since: dict[str, float] = {}
    down: dict[str, float] = defaultdict(float)
    for entry in sorted(entries, key=lambda e: (e["ts"], e["id"])):
        name = entry.get("container")
        if not name:
            continue
        if entry["kind"] == EntryKind.DETECTED and name not in open_since:
            open_since[name] = entry["ts"]
        elif entry["kind"] in END_KINDS and name in open_since:
            down[name] += _overlap(open_since.pop(name), entry["ts"], window)
    for name, since in open_since.items():
        down[name] += _overlap(since, window.end, window)
    return dict(down)


def _overlap(start: float, end: float, window: Window) -> float:
    return max(0.0, min(end, window.end) - max(start, window.start))


def build(
    entries: Iterable[Mapping[str, Any]],
    actions: Iterable[ActionRow],
    window: Window,
    threshold: int = INSTABILITY_PER_HOUR,
) -> Report:
    """`entries` may start before the window (an episode open at its start); only restarts inside count."""
    entries = list(entries)
    restarts = [a for a in actions if is_restart(a) and window.start <= a.started_at <= window.end]
    in_window = [e for e in entries if window.start <= e["ts"] <= window.end]
    gpus_of: dict[str, set[str]] = defaultdict(set)
    for entry in entries:
        if entry.get("container") and entry.get("gpu"):
            gpus_of[entry["container"]].update(g for g in str(entry["gpu"]).split(",") if g)
    restarts_of: dict[str, list[ActionRow]] = defaultdict(list)
    for action in restarts:
        restarts_of[action.container].append(action)
    events_of: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for entry in in_window:
        if entry.get("container"):
            events_of[entry["container"]].append(entry)
    down = downtime(entries, window)
    rows = []
    for name in sorted(set(restarts_of) | set(events_of)):
        gpus = sorted(gpus_of.get(name, set()))
        rows.append(
            _row(
                name,
                restarts_of[name],
                events_of[name],
                window,
                threshold=threshold,
                down=down.get(name, 0.0),
                gpus=gpus,
            )
        )
    gpu_rows = []
    pinned = {g for r in rows for g in r.gpus}
    health = gpu_health(entries, window, pinned)
    for gpu in sorted(pinned | set(health), key=gpu_order):
        members = [r.name for r in rows if gpu in r.gpus]
        mine = [a for name in members for a in restarts_of[name]]
        events = [e for name in members for e in events_of[name]]
        row = _row(gpu, mine, events, window, threshold=threshold, down=None, gpus=[])
        row.health_low, row.health_last = health.get(gpu, (None, None))
        gpu_rows.append(row)
    fleet = _row(
        "fleet", restarts, [e for e in in_window if e.get("container")], window, threshold=threshold, down=None, gpus=[]
    )
    if rows:
        fleet.availability_pct = round(sum(r.availability_pct or 0.0 for r in rows) / len(rows), 3)
    return Report(window, threshold, rows, gpu_rows, fleet)


def gpu_health(
    entries: Iterable[Mapping[str, Any]], window: Window, pinned: set[str]
) -> dict[str, tuple[float, float]]:
    """GPU ref -> (lowest, last) health score in the window, from the journaled score moves.

    A GPU is named as the containers name it (`pinned`: its index or its UUID), else by its index.
    The score in force when the window opens (the last move before it) counts as its first value.
    """
    scores: dict[str, list[float]] = {}
    for entry in sorted((e for e in entries if e["kind"] == EntryKind.HEALTH_SCORE), key=lambda e: e["ts"]):
        detail = entry.get("detail") or {}
        if entry["ts"] > window.end or "score" not in detail:
            continue
        uuid, index = str(detail.get("uuid") or ""), str(detail.get("index"))
        ref = uuid if uuid in pinned and index not in pinned else index
        values = scores.setdefault(ref, [])
        if entry["ts"] < window.start:
            values[:] = [float(detail["score"])]  # the level when the window opens
        else:
            values.append(float(detail["score"]))
    return {ref: (min(values), values[-1]) for ref, values in scores.items() if values}


def gpu_order(ref: str) -> tuple[int, str]:
    return (int(ref), "") if ref.isdigit() else (1 << 30, ref)


def _row(
    name: str,
    restarts: Sequence[ActionRow],
    events: Sequence[Mapping[str, Any]],
    window: Window,
    *,
    threshold: int,
    down: float | None,
    gpus: list[str],
) -> Row:
    recoveries = [
        float(e["duration"]) for e in events if e["kind"] == EntryKind.RECOVERED and e.get("duration") is not None
    ]
    peak = peak_in_an_hour([a.started_at for a in restarts])
    return Row(
        name=name,
        restarts=len(restarts),
        restarts_per_hour=round(len(restarts) / (window.seconds / HOUR), 3),
        peak_restarts_in_an_hour=peak,
        unstable=peak > threshold,
        by_cause=dict(sorted(Counter(a.fault or "unknown" for a in restarts).items())),
        faults=sum(1 for e in events if e["kind"] == EntryKind.DETECTED),
        recovery_p50_s=_round(percentile(recoveries, 0.5)),
        recovery_p95_s=_round(percentile(recoveries, 0.95)),
        availability_pct=None if down is None else round(100.0 * (1 - down / window.seconds), 3),
        breaker_trips=sum(1 for e in events if e["kind"] == EntryKind.GIVE_UP),
        gpus=gpus,
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


# -- rendering --------------------------------------------------------------------

COLUMNS = (
    "name",
    "restarts",
    "per h",
    "peak/h",
    "causes",
    "faults",
    "recover p50/p95 s",
    "avail %",
    "gave up",
    "health low/last",
)


def cells(row: Row) -> list[str]:
    causes = ", ".join(f"{k} {v}" for k, v in row.by_cause.items()) or "-"
    p50 = "-" if row.recovery_p50_s is None else f"{row.recovery_p50_s:g}"
    p95 = "-" if row.recovery_p95_s is None else f"{row.recovery_p95_s:g}"
    avail = "-" if row.availability_pct is None else f"{row.availability_pct:.2f}"
    name = f"{row.name} UNSTABLE" if row.unstable else row.name
    return [
        name,
        str(row.restarts),
        f"{row.restarts_per_hour:.2f}",
        str(row.peak_restarts_in_an_hour),
        causes,
        str(row.faults),
        f"{p50}/{p95}",
        avail,
        str(row.breaker_trips),
        "-" if row.health_low is None else f"{row.health_low:.2f}/{row.health_last:.2f}",
    ]


def _sections(report: Report) -> list[tuple[str, list[Row]]]:
    return [("containers", report.containers), ("GPUs", report.gpus), ("fleet", [report.fleet])]


def render(report: Report, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(report.as_dict(), indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["scope", *COLUMNS])
        for scope, rows in _sections(report):
            for row in rows:
                writer.writerow([scope, *cells(row)])
        return out.getvalue()
    hours = report.window.seconds / HOUR
    head = (
        f"restart report: {hours:.1f} h window; UNSTABLE = more than {report.threshold} restarts in an hour "
        f"(the 8-GPU fleet's alert table)"
    )
    if fmt == "markdown":
        lines = [f"# {head}", ""]
        for scope, rows in _sections(report):
            lines += [f"## {scope}", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
            lines += ["| " + " | ".join(cells(r)) + " |" for r in rows]
            lines.append("")
        return "\n".join(lines)
    lines = [head]
    for scope, rows in _sections(report):
        table = [list(COLUMNS), *(cells(r) for r in rows)]
        widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS))]
        lines += ["", f"{scope}:"]
        lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table]
    return "\n".join(lines)
