"""Restart report over a 30-day journal of 100k events: `gpu-watchdog report` end to end, per format.

Builds the journal with the daemon's own Journal class: 16 containers on 8 GPUs, fault
episodes (detected, restart action, restart outcome, recovered), crash loops given up,
Xids and GPU marks, router rotation entries, spread over 30 days up to now. Then runs the
real CLI (`python -m watchdog report --since 30d --format F --out FILE`) several times per
format and times it, start of the interpreter included, and times the stages in-process.
Target (issue 6): 2 s or less.
Usage: python bench/report_scale.py [--events 100000] [--days 30] [--runs 5]
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, save, summary

from watchdog.journal import Journal
from watchdog.reports.html import render_html
from watchdog.reports.restart_rates import Window, build, render
from watchdog.reports.timeline import build_timeline

FAULTS = ("stopped", "oom-killed", "unhealthy", "endpoint-failing", "zero-vram", "xid")
FORMATS = ("table", "json", "csv", "markdown", "html")
TARGET_S = 2.0


def fill(journal: Journal, events: int, days: float, seed: int = 6) -> dict[str, int]:
    """Write about `events` rows (entries + actions); return the counts by kind."""
    rng = random.Random(seed)
    now = time.time()
    start = now - days * 86400
    containers = [(f"llm-{i}", str(i // 2)) for i in range(16)]
    counts: dict[str, int] = {}
    written = 0

    def entry(kind: str, ts: float, **fields: object) -> None:
        nonlocal written
        journal.record(kind, kind, ts=ts, **fields)  # type: ignore[arg-type]
        counts[kind] = counts.get(kind, 0) + 1
        written += 1

    while written < events:
        ts = rng.uniform(start, now - 600)
        name, gpu = rng.choice(containers)
        roll = rng.random()
        if roll < 0.80:  # a fault episode healed by a restart: 5 rows
            fault = rng.choice(FAULTS)
            entry("detected", ts, container=name, gpus=(gpu,), fault=fault)
            action = journal.begin_action("restart", name, f"id-{name}", fault, "bench", ts=ts + 0.5)
            journal.finish_action(action, "ok", ts=ts + 1.5)
            counts["restart"] = counts.get("restart", 0) + 1
            written += 1
            took = rng.lognormvariate(2.5, 0.8)
            entry("restart-recovered", ts + took, container=name, gpus=(gpu,), fault=fault)
            entry("recovered", ts + took, container=name, gpus=(gpu,), fault=fault, duration=took)
            entry("rotation-in", ts + took + 1, container=name)
        elif roll < 0.83:  # a crash loop given up
            entry("detected", ts, container=name, gpus=(gpu,), fault="stopped")
            entry("give-up", ts + 30, container=name)
            entry("cleared", ts + 600, container=name, gpus=(gpu,), fault="stopped")
        elif roll < 0.93:  # an Xid on the GPU itself
            uuid = f"GPU-{int(gpu):08d}-0000-0000-0000-000000000000"
            entry("xid", ts, gpus=(uuid,), fault=f"xid-{rng.choice((13, 31, 43, 48, 79))}")
            if rng.random() < 0.1:
                entry("gpu-quarantined", ts + 1, gpus=(uuid,), fault="xid-79")
        else:  # routine router traffic the report must read past
            entry("rotation-out", ts, container=name)
    return counts


def run_cli(state_dir: Path, fmt: str, out: Path) -> float:
    command = [sys.executable, "-m", "watchdog", "--state-dir", str(state_dir), "report", "--since", "30d"]
    began = time.perf_counter()
    done = subprocess.run(
        [*command, "--format", fmt, "--out", str(out)], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    took = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"report --format {fmt} failed: {done.stderr.strip()}")
    return took


def stages(state_dir: Path, days: float) -> dict[str, float]:
    """Where the time goes, in-process: read, build, timeline, render."""
    now = time.time()
    window = Window(now - days * 86400, now)
    t = time.perf_counter()
    journal = Journal.in_dir(state_dir)
    entries = journal.entries(since=window.start - 86400)
    actions = journal.actions(since=window.start)
    journal.close()
    read = time.perf_counter()
    report = build(entries, actions, window)
    built = time.perf_counter()
    timeline = build_timeline(entries, actions, window)
    lanes = time.perf_counter()
    render(report, "table")
    table = time.perf_counter()
    render_html(report, timeline)
    page = time.perf_counter()
    return {
        "read_journal_s": read - t,
        "build_report_s": built - read,
        "build_timeline_s": lanes - built,
        "render_table_s": table - lanes,
        "render_html_s": page - table,
        "rows_read": float(len(entries) + len(actions)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--days", type=float, default=30)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        state_dir = Path(tmp)
        began = time.perf_counter()
        journal = Journal.in_dir(state_dir)
        counts = fill(journal, args.events, args.days)
        journal.close()
        print(f"journal: {sum(counts.values())} rows over {args.days:g} days in {time.perf_counter() - began:.1f} s")
        results: dict[str, dict[str, float]] = {}
        sizes: dict[str, int] = {}
        for fmt in FORMATS:
            out = state_dir / f"report.{fmt}"
            results[fmt] = summary([run_cli(state_dir, fmt, out) for _ in range(args.runs)])
            sizes[fmt] = out.stat().st_size
            print(
                f"report --format {fmt:<8}: median {results[fmt]['median']:.2f} s, max {results[fmt]['max']:.2f} s,"
                f" {sizes[fmt] / 1024:.0f} KiB"
            )
        breakdown = stages(state_dir, args.days)
        print("in-process: " + ", ".join(f"{k} {v:.3f}" for k, v in breakdown.items() if k.endswith("_s")))
        worst = max(r["median"] for r in results.values())
        verdict = "PASS" if worst <= TARGET_S else "FAIL"
        print(f"{verdict}: slowest format median {worst:.2f} s (target {TARGET_S:.0f} s)")
        path = save(
            "report_scale",
            {
                "events": sum(counts.values()),
                "by_kind": counts,
                "days": args.days,
                "runs": args.runs,
                "cli_seconds": results,
                "output_bytes": sizes,
                "in_process_seconds": breakdown,
                "target_s": TARGET_S,
                "verdict": verdict,
            },
        )
        print(f"saved {path}")
        if verdict != "PASS":
            raise SystemExit(1)


if __name__ == "__main__":
    main()
