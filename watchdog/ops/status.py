"""`gpu-watchdog status`: what the engine shows, what the journal remembers, what the daemon sees.

Works whether or not the daemon runs: engine state and journal are always
read; the daemon's own view (endpoint probes, current verdicts) is added when
its status file is fresh.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from watchdog.config import Config
from watchdog.containers.breaker import BreakerState, evaluate
from watchdog.containers.diagnose import ProbeHistory
from watchdog.entries import ActionKind, EntryKind
from watchdog.gpu.counter_trend import shown_confidence
from watchdog.journal import Journal
from watchdog.model import ContainerSnapshot, Decision, Diagnosis, ProbeStatus

STATUS_FILE = "status.json"
STALE_POLLS = 3  # a daemon whose last cycle is older than this many polls is not running (or hung)
STALE_FLOOR = 15.0  # s: never less, so a short poll interval does not make a busy cycle look dead


def daemon_max_age(poll_interval: float) -> float:
    """How old the daemon's last cycle may be before `status`, `healthcheck`, `plan` and /healthz call it not
    running: its status file and heartbeat are rewritten every cycle, so a hung loop goes stale, not just a dead one.
    """
    return max(STALE_POLLS * poll_interval, STALE_FLOOR)


def daemon_view(
    containers: Sequence[ContainerSnapshot],
    diagnosis: Diagnosis,
    decisions: Sequence[Decision],
    histories: Mapping[str, ProbeHistory],
    restarting: Collection[str],
    *,
    now: float,
    dry_run: bool,
    engine_up: bool,
    journal_write_failures: int,
) -> dict[str, Any]:
    """What the daemon sees now, written to STATUS_FILE for `gpu-watchdog status`. Pure."""
    faults = {f.container_id: f for f in diagnosis.faults}
    notes: dict[str, list[str]] = {}
    for note in diagnosis.notes:
        notes.setdefault(note.container_id, []).append(note.text)
    verdicts = {d.fault.container_id: f"{d.verdict.value}: {d.reason}" for d in decisions}
    return {
        "written_at": now,
        "pid": os.getpid(),
        "dry_run": dry_run,
        "engine_up": engine_up,
        "journal_write_failures": journal_write_failures,
        "containers": {
            c.id: {
                "fault": faults[c.id].reason if c.id in faults else None,
                "fault_kind": faults[c.id].kind.value if c.id in faults else None,
                "notes": notes.get(c.id, []),
                "decision": verdicts.get(c.id),
                "endpoint": last_probe(histories.get(c.id)),
                "restart_in_progress": c.name in restarting,
            }
            for c in containers
        },
    }


def last_probe(history: ProbeHistory | None) -> dict[str, object] | None:
    """The latest probe of a container's endpoint and how many failed in a row."""
    results = history.results if history else ()
    if not results:
        return None
    last = results[-1]
    streak = 0
    for item in reversed(results):
        if item.status == ProbeStatus.OK:
            break
        streak += 1
    return {"status": last.status.value, "detail": last.detail, "at": last.at, "failing_streak": streak}


def read_daemon_view(state_dir: Path, now: float, max_age: float) -> dict[str, Any] | None:
    """The daemon's view from its status file, or None when there is none or it is older than `max_age`."""
    try:
        view = json.loads((state_dir / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(view, dict) or now - float(view.get("written_at", 0)) > max_age:
        return None
    return view


def build_status(
    containers: Sequence[ContainerSnapshot], journal: Journal, config: Config, now: float, state_dir: Path
) -> dict[str, Any]:
    """A JSON-able document; the table view prints the same data."""
    heartbeat = journal.get_meta("heartbeat")
    daemon = read_daemon_view(state_dir, now, max_age=daemon_max_age(config.poll_interval))
    daemon_containers = (daemon or {}).get("containers", {})
    stop_marks = journal.stop_marks()
    rows = []
    shown = [c for c in containers if c.spec is not None or c.problems or c.is_self]  # not the opted-out
    for c in sorted(shown, key=lambda c: (-(c.spec.priority if c.spec else 0), c.name)):
        last_fault = journal.last_entry(c.name, EntryKind.DETECTED)
        restarts = [
            a
            for a in journal.actions(since=now - 3600, container=c.name)
            if a.kind == ActionKind.RESTART and not a.dry_run
        ]
        history = journal.breaker_history(c.name, since=now - config.breaker.window - config.breaker.cooldown)
        verdict = evaluate(history, config.breaker, now, c.spec.max_restarts if c.spec else None)
        seen = daemon_containers.get(c.id, {})
        breaker_state, breaker_reason = verdict.state.value, verdict.reason
        if verdict.state in (BreakerState.BACKOFF, BreakerState.TRIP) and not seen.get("fault"):
            # Backoff only matters for a new fault; a healthy container's breaker is closed.
            breaker_state = BreakerState.CLOSED.value
            breaker_reason = (
                f"{verdict.recent_attempts} restart(s) in the breaker window; a new fault waits for backoff"
            )
        rows.append(
            {
                "name": c.name,
                "id": c.id[:12],
                "managed": c.managed,
                "self": c.is_self,
                "misconfigured": list(c.problems),
                "warnings": list(c.warnings),
                "priority": c.spec.priority if c.spec else None,
                "gpus": list(c.gpus),
                "role": c.spec.role if c.spec else None,
                "model": c.spec.model if c.spec else None,
                "state": c.state.value,
                "health": c.health.value,
                "endpoint": c.endpoint,
                "endpoint_probe": seen.get("endpoint"),
                "fault_now": seen.get("fault"),
                "decision": seen.get("decision"),
                "notes": seen.get("notes", []),
                "stopped_on_purpose": c.id in stop_marks,
                "last_fault": (
                    {"at": last_fault["ts"], "kind": last_fault["fault"], "reason": last_fault["reason"]}
                    if last_fault
                    else None
                ),
                "restarts_last_hour": len(restarts),
                "breaker": breaker_state,
                "breaker_reason": breaker_reason,
            }
        )
    marks = journal.gpu_marks()
    gpu_view = (daemon or {}).get("gpu") or {}
    return {
        "now": now,
        "router": (daemon or {}).get("router"),
        "gpu": {
            "nvml": gpu_view.get("nvml", "unknown (daemon not running)"),
            "detail": gpu_view.get("detail", ""),
            "driver": gpu_view.get("driver"),
            "pid_mapping": gpu_view.get("pid_mapping"),
            "gpus": gpu_view.get("gpus", []),
            "orphans": gpu_view.get("orphans", []),
            "unresolved": gpu_view.get("unresolved", {}),
            "probation": gpu_view.get("probation", []),
            "marks": {
                uuid: {"condition": m.condition.value, "reason": m.reason, "since": m.since, "index": m.index}
                for uuid, m in marks.items()
            },
        },
        "daemon": {
            "running": daemon is not None,
            "pid": (daemon or {}).get("pid"),
            "dry_run": (daemon or {}).get("dry_run"),
            "last_heartbeat": float(heartbeat) if heartbeat else None,
        },
        "journal": str(journal.path),
        "containers": rows,
    }


def _age(now: float, then: float | None) -> str:
    if then is None:
        return "never"
    seconds = now - then
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def render_table(doc: dict[str, Any]) -> str:
    now = doc["now"]
    daemon = doc["daemon"]
    if daemon["running"]:
        head = f"daemon: running (pid {daemon['pid']}{', DRY-RUN' if daemon['dry_run'] else ''})"
    else:
        head = f"daemon: not running (last heartbeat {_age(now, daemon['last_heartbeat'])})"
    lines = [head, f"journal: {doc['journal']}", ""]
    header = ("CONTAINER", "PRIO", "GPU", "STATE", "HEALTH", "LAST FAULT", "RESTARTS/1H", "BREAKER")
    table = [header]
    details: list[str] = []
    for row in doc["containers"]:
        if row["self"]:
            table.append((row["name"], "-", "-", row["state"], "-", "-", "-", "(the watchdog itself)"))
            continue
        if row["misconfigured"]:
            table.append((row["name"], "-", "-", row["state"], "-", "-", "-", "MISCONFIGURED"))
            details.extend(f"  {row['name']}: {p}" for p in row["misconfigured"])
            continue
        health = row["health"]
        probe = row["endpoint_probe"]
        if probe:
            health += f", endpoint {probe['status']}"
            if probe.get("failing_streak"):
                health += f" x{probe['failing_streak']}"
        last = row["last_fault"]
        last_text = f"{last['kind']} {_age(now, last['at'])}" if last else "-"
        breaker = row["breaker"]
        if row["stopped_on_purpose"]:
            breaker += " (stopped on purpose)"
        table.append(
            (
                row["name"],
                str(row["priority"]),
                ",".join(row["gpus"]) or "-",
                row["state"],
                health,
                last_text,
                str(row["restarts_last_hour"]),
                breaker,
            )
        )
        if row["fault_now"]:
            details.append(f"  {row['name']}: fault: {row['fault_now']}")
        if row["decision"]:
            details.append(f"  {row['name']}: {row['decision']}")
        if row["breaker"] != "closed" or row["fault_now"]:
            details.append(f"  {row['name']}: breaker: {row['breaker_reason']}")
        details.extend(f"  {row['name']}: {n}" for n in row["notes"])
        details.extend(f"  {row['name']}: warning: {w}" for w in row["warnings"])
    lines.extend(_columns(table))
    if len(table) == 1:
        lines.append("(no container carries the enable label)")
    if details:
        lines += ["", *details]
    lines += ["", *render_gpus(doc.get("gpu") or {}, now)]
    lines += render_router(doc.get("router"))
    return "\n".join(lines)


def render_router(router: dict[str, Any] | None) -> list[str]:
    """The capacity verdict and, with the LiteLLM sync on, what is out of rotation and why."""
    if not router:
        return []
    lines = ["", f"capacity: {router.get('plan')}"]
    litellm = router.get("litellm")
    if litellm:
        rotation: dict[str, Any] = litellm.get("rotation") or {}
        out = {k: v for k, v in rotation.items() if not v.get("in")}
        proxy = {True: "up", False: "DOWN", None: "not watched"}[litellm.get("proxy_up")]
        lines.append(
            f"router: {litellm.get('config')}, {len(rotation) - len(out)}/{len(rotation)} deployment(s) in rotation, "
            f"proxy {proxy}"
        )
        lines.extend(f"  out: {ident}: {entry.get('reason')}" for ident, entry in sorted(out.items()))
        lines.extend(
            f"  share: {ident}: {entry['share']:.2f} of its weight ({entry.get('health')})"
            for ident, entry in sorted(rotation.items())
            if entry.get("in") and (entry.get("share") if entry.get("share") is not None else 1) < 1
        )
        lines.extend(render_outliers(litellm.get("outliers") or {}))
        lines.extend(f"  problem: {problem}" for problem in litellm.get("problems") or [])
    for name, drain in sorted((router.get("drains") or {}).items()):
        seen = "?" if drain.get("in_flight") is None else drain["in_flight"]
        lines.append(
            f"  drain: {name}: {drain.get('state')} ({drain.get('why')}), {seen} in flight"
            + (f"; {drain['ended']}" if drain.get("ended") else f", at most {drain.get('timeout'):g} s")
        )
    return lines


def render_outliers(outliers: dict[str, Any]) -> list[str]:
    """The proxy's view of each deployment with failures (its outlier reports)."""
    lines = []
    for ident, row in sorted(outliers.items()):
        if not row.get("failures") and not row.get("ejected"):
            continue
        state = "EJECTED by the proxy" if row.get("ejected") else "routed"
        lines.append(
            f"  router: {ident}: {row.get('failures')} failure(s) in a row (last: {row.get('last_failure')}), {state}"
        )
    return lines


def _columns(table: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in table) for i in range(len(table[0]))]
    return ["  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in table]


def _mib(value: int | None) -> str:
    return "?" if value is None else f"{value // 2**20}"


def render_gpus(gpu: dict[str, Any], now: float) -> list[str]:
    """Per-GPU lines: UUID, index, memory, temperature, throttle, health, score, mark, containers; what cost score."""
    lines = [f"GPUs: NVML {gpu.get('nvml', 'unknown')}" + (f" ({gpu['detail']})" if gpu.get("detail") else "")]
    marks: dict[str, Any] = gpu.get("marks") or {}
    rows: list[dict[str, Any]] = gpu.get("gpus") or []
    on_probation = {p["uuid"] for p in gpu.get("probation") or []}
    if rows:
        table: list[tuple[str, ...]] = [
            ("IDX", "UUID", "MEMORY MiB", "TEMP", "THROTTLE", "HEALTH", "SCORE", "MARK", "CONTAINERS")
        ]
        for row in rows:
            mark = marks.get(row["uuid"] or "") or row.get("mark")
            throttle = row.get("throttle")
            table.append(
                (
                    str(row["index"]),
                    row["uuid"] or "?",
                    f"{_mib(row['memory_used'])}/{_mib(row['memory_total'])}",
                    "?" if row.get("temperature") is None else f"{row['temperature']}C",
                    "n/a" if throttle is None else ",".join(t for t in throttle if t != "gpu-idle") or "-",
                    row["health"],
                    "-" if not row.get("health_score") else f"{row['health_score']['score']:.2f}",
                    mark["condition"].upper() if mark else "PROBATION" if row["uuid"] in on_probation else "-",
                    ",".join(row.get("containers") or []) or "-",
                )
            )
        lines.extend(_columns(table))
    for row in rows:
        score = row.get("health_score") or {}
        costs = [c["evidence"] for c in score.get("contributions") or [] if c["factor"] < 1]
        if costs:
            lines.append(f"  GPU {row['index']} health {score['score']:.2f}: {'; '.join(costs)}")
        for signal, trend in (row.get("maintenance") or {}).items():
            if trend["verdict"] in ("linear", "noisy", "accelerating"):
                hours = trend["predicted_hours"]
                when = "?" if hours is None else f"{hours:.1f} h"
                sure = shown_confidence(trend["confidence"])
                lines.append(
                    f"  GPU {row['index']} {signal}: {trend['verdict']} (confidence {sure}), "
                    f"{trend['level']:g} of {trend['limit']:g} in {when}"
                    + (" (ALERT: schedule maintenance)" if trend["alert"] else "")
                )
    for uuid, mark in marks.items():
        hint = "reboot the host" if mark["condition"] == "quarantined" else "reset the GPU"
        lines.append(
            f"  {uuid}: {mark['condition']} {_age(now, mark['since'])}: {mark['reason']} "
            f"({hint}, then `gpu-watchdog gpu release {uuid}`)"
        )
    for row in gpu.get("probation") or []:
        name = f"GPU {row['index']}" if row.get("index") is not None else row["uuid"]
        lines.append(
            f"  {row['uuid']}: PROBATION {_age(now, row['since'])} after {row['after']}, window {row['window']:g} s"
            f"{', ' + str(row['strikes']) + ' earlier failure(s)' if row['strikes'] else ''}: {row['state']}"
            f" ({name}'s containers out of rotation until proven{'; dry-run: left in' if row.get('dry_run') else ''})"
        )
    for orphan in gpu.get("orphans") or []:
        lines.append(f"  orphaned GPU memory on GPU {orphan['index']}: PID {orphan['pid']}: {orphan['why']}")
    for name, problems in (gpu.get("unresolved") or {}).items():
        lines.append(f"  {name}: GPU not mapped: {'; '.join(problems)}")
    return lines
