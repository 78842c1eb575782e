"""What happened when, per container, per GPU and on the host: the data behind the HTML report's chart. Pure.

A lane holds fault episodes (detected -> recovered/cleared, or still open at the window's
end) and point marks (restarts, dry runs, breaker trips, Xids, GPU health scores, GPU marks, alerts). GPU lanes
carry the episodes and restarts of the containers pinned to them, plus what the GPU
supervisor journaled about the GPU itself; the host lane carries driver and engine events.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from watchdog.entries import ALERT_DRIVER_HUNG, ActionKind, EntryKind
from watchdog.reports.restart_rates import END_KINDS, Window, gpu_order, is_restart

if TYPE_CHECKING:  # the journal is I/O; the timeline only reads its rows
    from watchdog.journal import ActionRow

HOST_LANE = "host"
HOST_KINDS = frozenset(
    {EntryKind.ALERT, EntryKind.ENGINE_DOWN, EntryKind.ENGINE_UP, EntryKind.DRIVER_RECOVERED, EntryKind.GPU_ERROR}
)


@dataclass(frozen=True)
class Episode:
    """A fault from detection to recovery; `end` is the window's end while it is still open."""

    start: float
    end: float
    fault: str
    outcome: str  # recovered | cleared | open
    container: str


@dataclass(frozen=True)
class Mark:
    ts: float
    kind: str  # restart | dry-run | give-up | xid | health | gpu-mark | gpu-reset | alert | engine | driver
    label: str


@dataclass
class Lane:
    name: str
    scope: str  # container | gpu | host
    episodes: list[Episode] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)


@dataclass(frozen=True)
class Timeline:
    window: Window
    lanes: list[Lane]

    def lane(self, name: str, scope: str) -> Lane | None:
        return next((lane for lane in self.lanes if lane.name == name and lane.scope == scope), None)


def build_timeline(entries: Iterable[Mapping[str, Any]], actions: Iterable[ActionRow], window: Window) -> Timeline:
    """`entries` may start before the window: an episode open at its start is drawn from the left edge."""
    ordered = sorted(entries, key=lambda e: (e["ts"], e["id"]))
    containers: dict[str, Lane] = {}
    gpus_of: dict[str, set[str]] = defaultdict(set)
    for entry in ordered:
        name = entry.get("container")
        if name and entry.get("gpu"):
            gpus_of[name].update(g for g in str(entry["gpu"]).split(",") if g)

    def container_lane(name: str) -> Lane:
        return containers.setdefault(name, Lane(name, "container"))

    for episode in _episodes(ordered, window):
        container_lane(episode.container).episodes.append(episode)
    for action in actions:
        if action.kind != ActionKind.RESTART or not window.start <= action.started_at <= window.end:
            continue
        if not action.dry_run and not is_restart(action):
            continue  # never reached the engine
        kind = "dry-run" if action.dry_run else "restart"
        verb = "would restart" if action.dry_run else "restart"
        label = f"{verb} ({action.fault or 'unknown'}): {action.outcome or 'in flight'}"
        container_lane(action.container).marks.append(Mark(action.started_at, kind, label))

    gpu_lanes: dict[str, Lane] = {}
    host = Lane(HOST_LANE, "host")
    for entry in ordered:
        if not window.start <= entry["ts"] <= window.end:
            continue
        kind, name = entry["kind"], entry.get("container")
        if name and kind == EntryKind.GIVE_UP:
            container_lane(name).marks.append(Mark(entry["ts"], "give-up", f"gave up: {entry.get('reason') or ''}"))
        elif not name and entry.get("gpu") and _gpu_mark_kind(kind):
            for ref in str(entry["gpu"]).split(","):
                lane = gpu_lanes.setdefault(ref, Lane(ref, "gpu"))
                lane.marks.append(Mark(entry["ts"], _gpu_mark_kind(kind), f"{kind}: {entry.get('reason') or ''}"))
        elif not name and not entry.get("gpu") and kind in HOST_KINDS:
            host.marks.append(Mark(entry["ts"], _host_mark_kind(kind, entry), f"{kind}: {entry.get('reason') or ''}"))

    for name, lane in containers.items():
        for ref in gpus_of.get(name, ()):
            gpu = gpu_lanes.setdefault(ref, Lane(ref, "gpu"))
            gpu.episodes.extend(lane.episodes)
            gpu.marks.extend(m for m in lane.marks if m.kind in ("restart", "give-up"))
    lanes = sorted(containers.values(), key=lambda lane: lane.name)
    lanes += sorted(gpu_lanes.values(), key=lambda lane: gpu_order(lane.name))
    if host.marks:
        lanes.append(host)
    for lane in lanes:
        lane.episodes.sort(key=lambda e: (e.start, e.container))
        lane.marks.sort(key=lambda m: m.ts)
    return Timeline(window, lanes)


def _episodes(ordered: Sequence[Mapping[str, Any]], window: Window) -> list[Episode]:
    """Pair each container's detection with its recovery or clearing (as the report's downtime does)."""
    open_at: dict[str, Mapping[str, Any]] = {}
    found: list[Episode] = []
    for entry in ordered:
        name = entry.get("container")
        if not name:
            continue
        if entry["kind"] == EntryKind.DETECTED and name not in open_at:
            open_at[name] = entry
        elif entry["kind"] in END_KINDS and name in open_at:
            start = open_at.pop(name)
            found.append(Episode(start["ts"], entry["ts"], start.get("fault") or "unknown", entry["kind"], name))
    for name, start in open_at.items():
        found.append(Episode(start["ts"], window.end, start.get("fault") or "unknown", "open", name))
    return [
        Episode(max(e.start, window.start), min(e.end, window.end), e.fault, e.outcome, e.container)
        for e in found
        if e.end >= window.start and e.start <= window.end
    ]


def _gpu_mark_kind(kind: str) -> str:
    if kind == EntryKind.XID:
        return "xid"
    if kind == EntryKind.HEALTH_SCORE:
        return "health"
    if kind in (EntryKind.GPU_RESET, EntryKind.GPU_RESET_OK, EntryKind.GPU_RELEASED):
        return "gpu-reset"
    if kind == EntryKind.ALERT:
        return "alert"
    if kind.startswith("gpu-") and kind != EntryKind.GPU_ERROR:
        return "gpu-mark"  # GPU_MARK_KINDS, or a condition a newer version marks (read as a mark, like gpu_marks())
    return ""


def _host_mark_kind(kind: str, entry: Mapping[str, Any]) -> str:
    if kind.startswith("engine-"):
        return "engine"
    if kind in (EntryKind.DRIVER_RECOVERED, EntryKind.GPU_ERROR) or entry.get("fault") == ALERT_DRIVER_HUNG:
        return "driver"
    return "alert"
