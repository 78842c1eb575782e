"""The restart report as one self-contained HTML file: summary, an SVG timeline, the tables. Pure.

No script, no font, no stylesheet from elsewhere: the file opens the same from an e-mail
attachment, a ticket or an air-gapped host. The chart draws one lane per container, per
GPU and for the host: red bars are fault episodes (dark red: still open at the window's
end), marks are restarts, breaker trips, Xids, GPU marks and driver/engine events. Marks
closer than a few pixels merge into one whose tooltip gives the count, so a 30-day journal of
100k events stays a small file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from html import escape

from watchdog.reports.restart_rates import COLUMNS, HOUR, Report, Row, cells
from watchdog.reports.timeline import Episode, Lane, Mark, Timeline

LABEL_W = 190
PLOT_W = 960
ROW_H = 30
MARK_DY = 10  # marks ride in the upper part of a lane
BAR_DY, BAR_H = 19, 8  # fault bars in the lower part, so a restart never hides its own episode
AXIS_H = 30
RIGHT_PAD = 16
TICK_STEPS = (60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 2 * 86400, 7 * 86400, 14 * 86400)
MAX_TICKS = 12
MARK_BIN_PX = 6  # a mark is 12 px wide: marks closer than this merge into one (the tooltip counts)
EPISODE_GAP_PX = 3  # fault bars closer than this merge into one

# kind -> (fill, stroke, shape, legend)
MARK_STYLE: dict[str, tuple[str, str, str, str]] = {
    "restart": ("#1f77b4", "#1f77b4", "triangle-down", "restart"),
    "dry-run": ("#ffffff", "#1f77b4", "triangle-down", "dry run (would restart)"),
    "give-up": ("#111111", "#ffffff", "square", "gave up (crash-loop breaker)"),
    "xid": ("#9467bd", "#9467bd", "diamond", "Xid error"),
    "health": ("#bcbd22", "#bcbd22", "circle", "GPU health score moved"),
    "gpu-mark": ("#ff7f0e", "#ff7f0e", "square", "GPU quarantined / drained"),
    "gpu-reset": ("#17becf", "#17becf", "circle", "GPU reset / released"),
    "alert": ("#e377c2", "#e377c2", "triangle-up", "alert"),
    "driver": ("#8c564b", "#8c564b", "circle", "NVIDIA driver hung / back"),
    "engine": ("#7f7f7f", "#7f7f7f", "circle", "Docker engine down / back"),
}
ON_BAR = frozenset({"give-up"})  # the breaker trips during the episode: its mark sits on the bar, under the restart
DRAW_ORDER = {
    "gpu-mark": 0,
    "gpu-reset": 0,
    "health": 0,
    "driver": 0,
    "engine": 0,
    "alert": 1,
    "dry-run": 1,
    "xid": 2,
    "restart": 2,
    "give-up": 3,
}
EPISODE_FILL = {"open": "#7f0000", "closed": "#d62728"}

CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:24px 0 8px}
.meta{color:#555;margin-bottom:16px}
.cards{display:flex;gap:12px;flex-wrap:wrap}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 14px;min-width:120px}
.card b{display:block;font-size:22px} .card.bad b{color:#c00}
table{border-collapse:collapse;margin-bottom:8px} th,td{border:1px solid #ddd;padding:3px 8px;text-align:right}
th:first-child,td:first-child{text-align:left} th{background:#f4f4f4}
tr.unstable td{background:#fde8e8} tr.unstable td:first-child{color:#c00;font-weight:600}
.legend{display:flex;gap:16px;flex-wrap:wrap;margin:6px 0 0;color:#333}
.legend svg{vertical-align:middle;margin-right:4px}
svg text{font:12px system-ui,sans-serif;fill:#222} svg .tick{fill:#666;font-size:11px}
svg .grid{stroke:#eee} svg .lane-bg{fill:#fafafa} svg .unstable-label{fill:#c00;font-weight:600}
svg .section{font-weight:600;fill:#555}
"""


@dataclass(frozen=True)
class Geometry:
    start: float
    span: float

    def x(self, ts: float) -> float:
        return LABEL_W + (ts - self.start) / self.span * PLOT_W


def render_html(report: Report, timeline: Timeline, generated_at: float | None = None) -> str:
    generated = _utc(generated_at if generated_at is not None else report.window.end, "%Y-%m-%d %H:%M:%S")
    window = report.window
    hours = window.seconds / HOUR
    unstable = {r.name for r in report.containers if r.unstable}
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>gpu-watchdog restart report, {escape(_utc(window.start))} to {escape(_utc(window.end))} UTC</title>",
        f"<style>{CSS}{_mark_css()}</style></head><body>",
        "<h1>gpu-watchdog restart report</h1>",
        f'<div class="meta">{escape(_utc(window.start))} to {escape(_utc(window.end))} UTC ({hours:.1f} h), '
        f"generated {escape(generated)} UTC. UNSTABLE: more than {report.threshold} restarts in an hour.</div>",
        _cards(report, len(unstable)),
        "<h2>Timeline</h2>",
        _svg(timeline, unstable),
        _legend(),
    ]
    for title, rows in (("Containers", report.containers), ("GPUs", report.gpus), ("Fleet", [report.fleet])):
        parts += [f"<h2>{title}</h2>", _table(rows)]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _mark_css() -> str:
    """Colours by kind in the stylesheet, not on each of thousands of shapes."""
    rules = [f'[data-kind="{kind}"]{{fill:{style[0]};stroke:{style[1]}}}' for kind, style in MARK_STYLE.items()]
    return "\n".join([".mark,.legend-mark{stroke-width:1.5;fill:#e377c2;stroke:#e377c2}", *rules]) + "\n"


def _utc(ts: float, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return time.strftime(fmt, time.gmtime(ts))


def _cards(report: Report, unstable: int) -> str:
    fleet = report.fleet
    avail = "-" if fleet.availability_pct is None else f"{fleet.availability_pct:.2f} %"
    cards = [
        ("restarts", str(fleet.restarts), fleet.restarts > 0),
        ("restarts per hour", f"{fleet.restarts_per_hour:.2f}", False),
        ("unstable containers", str(unstable), unstable > 0),
        ("faults", str(fleet.faults), False),
        ("availability", avail, False),
        ("gave up", str(fleet.breaker_trips), fleet.breaker_trips > 0),
    ]
    body = "".join(
        f'<div class="card{" bad" if bad else ""}" data-card="{escape(name)}">'
        f"<b>{escape(value)}</b>{escape(name)}</div>"
        for name, value, bad in cards
    )
    return f'<div class="cards">{body}</div>'


def _table(rows: list[Row]) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in COLUMNS)
    body = []
    for row in rows:
        cls = ' class="unstable"' if row.unstable else ""
        body.append(
            f'<tr{cls} data-row="{escape(row.name)}">' + "".join(f"<td>{escape(c)}</td>" for c in cells(row)) + "</tr>"
        )
    if not rows:
        body.append(f'<tr><td colspan="{len(COLUMNS)}">nothing in this window</td></tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _svg(timeline: Timeline, unstable: set[str]) -> str:
    window = timeline.window
    geo = Geometry(window.start, window.seconds)
    sections: list[tuple[str, list[Lane]]] = [
        ("containers", [lane for lane in timeline.lanes if lane.scope == "container"]),
        ("GPUs", [lane for lane in timeline.lanes if lane.scope == "gpu"]),
        ("host", [lane for lane in timeline.lanes if lane.scope == "host"]),
    ]
    rows = sum(len(lanes) + 1 for _, lanes in sections if lanes)
    height = AXIS_H + max(rows, 1) * ROW_H + 8
    width = LABEL_W + PLOT_W + RIGHT_PAD
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" id="timeline" width="{width}" height="{height}" '
        f'data-start="{window.start:.3f}" data-end="{window.end:.3f}" data-plot-x="{LABEL_W}" data-plot-w="{PLOT_W}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="faults and restarts over time">'
    ]
    out += _axis(geo, window.end, height)
    y = AXIS_H
    if rows == 0:
        out.append(f'<text x="{LABEL_W}" y="{y + 17}">no faults, restarts or GPU events in this window</text>')
    for title, lanes in sections:
        if not lanes:
            continue
        out.append(f'<text class="section" x="4" y="{y + 17}">{escape(title)}</text>')
        y += ROW_H
        for lane in lanes:
            out.append(_lane(lane, geo, y, lane.scope == "container" and lane.name in unstable))
            y += ROW_H
    out.append("</svg>")
    return "\n".join(out)


def _axis(geo: Geometry, end: float, height: int) -> list[str]:
    step = next((s for s in TICK_STEPS if geo.span / s <= MAX_TICKS), TICK_STEPS[-1])
    fmt = "%m-%d" if step >= 86400 else "%H:%M"
    first = (int(geo.start) // step + 1) * step
    out = []
    tick = float(first)
    while tick < end:
        x = geo.x(tick)
        label = _utc(tick, "%m-%d %H:%M" if fmt == "%H:%M" and int(tick) % 86400 == 0 else fmt)
        out.append(f'<line class="grid" x1="{x:.1f}" y1="{AXIS_H - 6}" x2="{x:.1f}" y2="{height}"/>')
        out.append(f'<text class="tick" x="{x:.1f}" y="{AXIS_H - 10}" text-anchor="middle">{label}</text>')
        tick += step
    return out


def _lane(lane: Lane, geo: Geometry, y: int, unstable: bool) -> str:
    label_cls = ' class="unstable-label"' if unstable else ""
    shown = f"GPU {lane.name}" if lane.scope == "gpu" else lane.name
    if unstable:
        shown += " UNSTABLE"
    out = [
        f'<g class="lane" data-lane="{escape(lane.name)}" data-scope="{lane.scope}" data-y="{y}">',
        f'<rect class="lane-bg" x="{LABEL_W}" y="{y + 2}" width="{PLOT_W}" height="{ROW_H - 4}"/>',
        f'<text{label_cls} x="8" y="{y + 17}">{escape(_fit(shown))}<title>{escape(shown)}</title></text>',
    ]
    out += [_episode_rect(group, geo, y) for group in _merge_episodes(lane.episodes, geo)]
    out += [_mark_shape(kind, x, marks, y) for kind, x, marks in _bin_marks(lane.marks, geo)]
    out.append("</g>")
    return "\n".join(out)


def _fit(text: str, limit: int = 24) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _merge_episodes(episodes: list[Episode], geo: Geometry) -> list[list[Episode]]:
    """Episodes that (nearly) touch on screen and share open/closed become one bar."""
    groups: list[list[Episode]] = []
    right = -1.0
    for episode in sorted(episodes, key=lambda e: e.start):
        x0, x1 = geo.x(episode.start), max(geo.x(episode.end), geo.x(episode.start) + 2)
        if groups and x0 <= right + EPISODE_GAP_PX and (groups[-1][0].outcome == "open") == (episode.outcome == "open"):
            groups[-1].append(episode)
            right = max(right, x1)
        else:
            groups.append([episode])
            right = x1
    return groups


def _episode_rect(group: list[Episode], geo: Geometry, y: int) -> str:
    start = min(e.start for e in group)
    end = max(e.end for e in group)
    x0 = geo.x(start)
    width = max(geo.x(end) - x0, 2.0)
    state = "open" if group[0].outcome == "open" else "closed"
    first = group[0]
    if len(group) == 1:
        tip = (
            f"{first.container}: {first.fault} from {_utc(start, '%m-%d %H:%M:%S')} "
            f"for {end - start:.0f} s ({'still open' if state == 'open' else first.outcome})"
        )
    else:
        faults = ", ".join(sorted({e.fault for e in group}))
        tip = f"{len(group)} fault episodes ({faults}) between {_utc(start)} and {_utc(end)}"
    return (
        f'<rect class="episode" data-state="{state}" data-fault="{escape(first.fault)}" data-count="{len(group)}" '
        f'data-start="{start:.3f}" data-end="{end:.3f}" x="{x0:.1f}" y="{y + BAR_DY}" width="{width:.1f}" '
        f'height="{BAR_H}" fill="{EPISODE_FILL[state]}"><title>{escape(tip)}</title></rect>'
    )


def _bin_marks(marks: list[Mark], geo: Geometry) -> list[tuple[str, float, list[Mark]]]:
    """One shape per kind per few pixels: a month of restarts stays a few thousand shapes."""
    bins: dict[tuple[str, int], list[Mark]] = {}
    for mark in marks:
        bins.setdefault((mark.kind, int(geo.x(mark.ts) // MARK_BIN_PX)), []).append(mark)
    shapes = [(kind, geo.x(group[0].ts), group) for (kind, _), group in bins.items()]
    # Big, background shapes first: an Xid drawn over its GPU's quarantine square leaves both visible.
    return sorted(shapes, key=lambda s: (DRAW_ORDER.get(s[0], 1), s[1]))


def _mark_shape(kind: str, x: float, marks: list[Mark], y: int, legend: bool = False) -> str:
    shape = MARK_STYLE[kind][2] if kind in MARK_STYLE else "triangle-up"
    cy = y + (BAR_DY + BAR_H / 2 if kind in ON_BAR and not legend else MARK_DY)
    if len(marks) == 1:
        tip = f"{_utc(marks[0].ts, '%m-%d %H:%M:%S')} {marks[0].label}"
    else:
        tip = f"{len(marks)} × {kind} around {_utc(marks[0].ts, '%m-%d %H:%M')}: {marks[0].label} …"
    attrs = (
        f'class="{"legend-mark" if legend else "mark"}" data-kind="{kind}" '
        f'data-ts="{marks[0].ts:.0f}" data-count="{len(marks)}"'
    )
    title = "" if legend else f"<title>{escape(tip)}</title>"
    if shape == "circle":
        return f'<circle {attrs} cx="{x:.1f}" cy="{cy:.1f}" r="5">{title}</circle>'
    if shape == "square":
        half = 6 if kind == "gpu-mark" else 5  # a GPU's quarantine square shows around an Xid drawn on it
        side = 2 * half
        return f'<rect {attrs} x="{x - half:.1f}" y="{cy - half:.1f}" width="{side}" height="{side}">{title}</rect>'
    return f'<path {attrs} d="{_path(shape, x, cy)}">{title}</path>'


def _path(shape: str, x: float, cy: float) -> str:
    if shape == "triangle-down":
        return f"M{x - 6:.1f},{cy - 6:.1f} L{x + 6:.1f},{cy - 6:.1f} L{x:.1f},{cy + 6:.1f} Z"
    if shape == "triangle-up":
        return f"M{x - 6:.1f},{cy + 6:.1f} L{x + 6:.1f},{cy + 6:.1f} L{x:.1f},{cy - 6:.1f} Z"
    return f"M{x:.1f},{cy - 7:.1f} L{x + 7:.1f},{cy:.1f} L{x:.1f},{cy + 7:.1f} L{x - 7:.1f},{cy:.1f} Z"  # diamond


def _legend() -> str:
    items = [
        f'<span><svg width="22" height="12"><rect width="22" height="12" fill="{EPISODE_FILL["closed"]}"/></svg>'
        "fault episode (detected to healthy)</span>",
        f'<span><svg width="22" height="12"><rect width="22" height="12" fill="{EPISODE_FILL["open"]}"/></svg>'
        "still down at the window's end</span>",
    ]
    for kind, (_, _, _, text) in MARK_STYLE.items():
        items.append(
            '<span><svg width="16" height="16" viewBox="0 0 16 16">'
            f"{_mark_shape(kind, 8, [Mark(0, kind, text)], 8 - MARK_DY, legend=True)}</svg>{escape(text)}</span>"
        )
    return f'<div class="legend">{"".join(items)}</div>'
