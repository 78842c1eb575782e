"""A journal built from a known scenario, for the report's tests (unit, browser, benchmark checks).

Window: T0 .. T0 + 6 h. Hand-computed expectations live in tests/unit/test_report.py.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from watchdog.journal import Journal

T0 = float(int(time.time()) - 10 * 86400)  # window start, 10 days ago (the CLI reads back 30 days)
H = 3600.0
GPU1_UUID = "GPU-11111111-2222-3333-4444-555555555555"


def restart(journal: Journal, container: str, at: float, fault: str, gpu: str, recover_after: float | None) -> None:
    """One episode: detected at `at`, a restart, healthy `recover_after` s later (None: never)."""
    journal.record("detected", f"{fault}", ts=at, container=container, gpus=(gpu,), fault=fault)
    action = journal.begin_action("restart", container, f"id-{container}", fault, "test", ts=at)
    journal.finish_action(action, "ok", ts=at + 1)
    if recover_after is not None:
        journal.record(
            "recovered", "healthy", ts=at + recover_after, container=container, gpus=(gpu,), duration=recover_after
        )


def build_scenario(state_dir: Path, t0: float = T0) -> Journal:
    j = Journal.in_dir(state_dir)
    # llm-0 (GPU 0): 6 restarts within 50 minutes -> peak 6 in an hour > 5 -> UNSTABLE.
    for i in range(6):
        restart(j, "llm-0", t0 + 600 + i * 600, "stopped", "0", 10.0 + i)  # recover 10..15 s
    # llm-1 (GPU 1): 2 restarts, 2 h apart: one endpoint-failing (recover 30 s), one zero-vram (recover 90 s).
    restart(j, "llm-1", t0 + 1 * H, "endpoint-failing", "1", 30.0)
    restart(j, "llm-1", t0 + 3 * H, "zero-vram", "1", 90.0)
    # embed-1 (GPU 1 too): a crash loop given up, never recovered: down from t0+5h to the window's end (t0+6h).
    restart(j, "embed-1", t0 + 5 * H, "stopped", "1", None)
    j.record("give-up", "3 restarts", ts=t0 + 5 * H + 5, container="embed-1")
    # Outside the window: ignored as restarts.
    restart(j, "llm-0", t0 - 2 * H, "stopped", "0", 5.0)
    # A dry-run restart is not a restart.
    j.begin_action("restart", "llm-1", "id-llm-1", "stopped", "dry", ts=t0 + 2 * H, dry_run=True)
    # GPU and host events (no container): not restarts, but on the timeline.
    j.record("xid", "Xid 79: fallen off the bus", ts=t0 + 4 * H, gpus=(GPU1_UUID,), fault="xid-79")
    j.record("gpu-quarantined", "Xid 79", ts=t0 + 4 * H + 1, gpus=(GPU1_UUID,), fault="xid-79")
    j.record("alert", "NVML did not answer within 5 s", ts=t0 + 4.5 * H, fault="driver-hung")
    return j


def write_html_report(state_dir: Path, since: str, out: Path) -> None:
    """`gpu-watchdog report --format html` on that journal, as an operator runs it."""
    command = [sys.executable, "-m", "watchdog", "--state-dir", str(state_dir), "report", "--since", since]
    done = subprocess.run(
        [*command, "--format", "html", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
