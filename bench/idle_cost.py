"""Daemon idle cost: CPU share of one core and RSS with 16 healthy managed containers, 5 s poll.

Runs the real daemon as a subprocess with the default config (events on) and
reads its CPU time and memory from /proc. --probe-interval and --progress-interval
set the two probe cadences (default: the config's defaults) to price them.
Usage: python bench/idle_cost.py [--containers 16] [--seconds 60] [--probe-interval S] [--progress-interval S]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from common import new_fleet, save

from tests.integration.harness import Daemon

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--containers", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--probe-interval", type=float, default=None, help="s between /health probes")
    parser.add_argument("--progress-interval", type=float, default=None, help="s between /metrics reads")
    parser.add_argument("--name", default="idle_cost", help="results file name under bench/results")
    args = parser.parse_args()
    cadence: dict[str, object] = {}
    if args.probe_interval is not None:
        cadence["probe_interval"] = args.probe_interval
    if args.progress_interval is not None:
        cadence["serving"] = {"progress_interval": args.progress_interval}
    fleet = new_fleet()
    try:
        for i in range(args.containers):
            fleet.start(f"c{i:02d}")
        for i in range(args.containers):
            fleet.wait_ready(f"c{i:02d}", timeout=60)
        with tempfile.TemporaryDirectory() as tmp:
            daemon = Daemon(Path(tmp), fleet.prefix, poll_interval=5, probe_timeout=3, log_level="INFO", **cadence)
            daemon.start()
            try:
                assert daemon.proc is not None
                pid = daemon.proc.pid
                time.sleep(10)  # past start-up imports and the first probes
                cpu0, t0 = cpu_seconds(pid), time.monotonic()
                peak = 0
                while time.monotonic() - t0 < args.seconds:
                    time.sleep(1)
                    peak = max(peak, rss_bytes(pid))
                cpu1, t1 = cpu_seconds(pid), time.monotonic()
                restarts = daemon.entries(kind="restart-call")
            finally:
                daemon.stop()
        share = (cpu1 - cpu0) / (t1 - t0)
        print(
            f"{args.containers} containers, 5 s poll, {cadence or 'default probing'}, {t1 - t0:.0f} s: "
            f"CPU {share * 100:.2f}% of one core, "
            f"peak RSS {peak / 2**20:.1f} MiB, restarts {len(restarts)} (must be 0)"
        )
        print(
            "saved",
            save(
                args.name,
                {
                    "containers": args.containers,
                    "probing": cadence or "defaults",
                    "seconds": t1 - t0,
                    "cpu_share_of_one_core": share,
                    "peak_rss_bytes": peak,
                    "restarts": len(restarts),
                },
            ),
        )
    finally:
        fleet.remove_all()


if __name__ == "__main__":
    main()
