"""Poll cycle time, memory and CPU of the real daemon at 8, 64 and 256 managed containers.

For each size: start that many stand-ins on the real engine (the harness's `Fleet.start`: the stand-in
server with its /health endpoint, port published on 127.0.0.1, so every container is probed as in
production), in parallel from a bounded thread pool; run the real daemon as a subprocess (the harness's
`Daemon`, 5 s poll, 3 s probe timeout, events on, as bench/idle_cost.py), let it warm up, then for
`--seconds`:
- cycle durations: the daemon's own figure (`Watchdog.cycle()`'s `duration`, the one bench/cycle_time.py
  reads in-process), read out of the subprocess from its /metrics histogram
  (`gpu_watchdog_loop_duration_seconds` sum and count), scraped once a second: a scrape that saw exactly
  one new cycle gives that cycle's duration;
- RSS from /proc/PID/status once a second (peak and median), CPU time from /proc/PID/stat over the window
  (share of one core; also given without the scrapes' own cost, measured after the window).
It also checks that the daemon sees every container, finds all of them healthy and restarts none.
The daemon caches each container's inspect for 60 s (INSPECT_MAX_AGE in watchdog/containers/engine.py); all of
them were inspected in the same first cycle, so one cycle a minute re-inspects the whole fleet: those
cycles (every 12th at a 5 s poll; `cycle_values_s` keeps the order) are the p95 and max.

The stand-in is the harness's only one: the Python stand-in (about 11 MiB per container, plus the
engine's shim and docker-proxy, about 16 MiB more; 256 of them need about 7 GiB). Engine limits that
matter here: a Linux bridge takes at most 1024 ports, the default bridge network is a /16, dockerd's
open-file limit was 20000: 256 is well inside all three.
All containers are removed at the end, also on failure or SIGTERM.
Usage: python bench/scale.py [--sizes 8,64,256] [--seconds 120] [--poll 5] [--threads 8]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import re
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import docker
import httpx
from common import ms, new_fleet, save, summary
from idle_cost import cpu_seconds, rss_bytes

from tests.integration.harness import RUN_ID, RUN_LABEL, Daemon, Fleet, free_port

WARMUP_S = 10.0  # past start-up imports and the first probe rounds
SCRAPE_COST_SAMPLES = 20
METRIC = "gpu_watchdog_loop_duration_seconds"


def metric_value(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    if match is None:
        raise AssertionError(f"{name} not in /metrics")
    return float(match.group(1))


def healthy_count(text: str) -> int:
    return len(re.findall(r"^gpu_watchdog_container_healthy\{[^}]*\} 1\.0$", text, re.MULTILINE))


def start_fleet(fleet: Fleet, size: int, threads: int) -> tuple[float, float]:
    """Start `size` stand-ins from a bounded pool; (seconds to create+start, seconds until all answer)."""
    names = [f"c{i:03d}" for i in range(size)]
    pool = concurrent.futures.ThreadPoolExecutor(threads)
    try:
        t0 = time.monotonic()
        list(pool.map(lambda n: fleet.start(n, priority=str(int(n[1:]) % 4)), names))
        t1 = time.monotonic()
        list(pool.map(lambda n: fleet.wait_ready(n, timeout=120), names))
        return t1 - t0, time.monotonic() - t1
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # nothing starts after the clean-up below


def remove_fleet(client: docker.DockerClient, threads: int) -> None:
    """Remove every container this process started (the harness's run label), in parallel."""
    containers = client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={RUN_ID}"})

    def remove(container: Any) -> None:
        with contextlib.suppress(docker.errors.APIError):  # gone already; the sweep after this retries the rest
            container.remove(force=True)

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(remove, containers))


def measure(size: int, seconds: float, poll: float, threads: int) -> dict[str, Any]:
    fleet = new_fleet()
    try:
        start_s, ready_s = start_fleet(fleet, size, threads)
        print(f"{size:3d} containers: started in {start_s:.1f} s, all answering /health {ready_s:.1f} s later")
        with tempfile.TemporaryDirectory() as tmp:
            port = free_port()
            daemon = Daemon(
                Path(tmp), fleet.prefix, poll_interval=poll, probe_timeout=3, log_level="INFO", http=f"127.0.0.1:{port}"
            )
            daemon.start()
            try:
                assert daemon.proc is not None
                pid = daemon.proc.pid
                seen = re.search(r"healing loop running: (\d+) managed", daemon.log())
                assert seen and int(seen.group(1)) == size, f"daemon saw {seen and seen.group(1)} of {size}"
                url = f"http://127.0.0.1:{port}/metrics"
                http = httpx.Client(timeout=10, trust_env=False)
                time.sleep(WARMUP_S)
                text = http.get(url).text
                last_sum, last_count = metric_value(text, f"{METRIC}_sum"), metric_value(text, f"{METRIC}_count")
                first_count = last_count
                cycles: list[float] = []
                rss: list[int] = []
                merged = 0  # scrapes that saw more than one new cycle (not split, left out)
                cpu0, t0 = cpu_seconds(pid), time.monotonic()
                while time.monotonic() - t0 < seconds:
                    time.sleep(1.0)
                    rss.append(rss_bytes(pid))
                    text = http.get(url).text
                    total, count = metric_value(text, f"{METRIC}_sum"), metric_value(text, f"{METRIC}_count")
                    if count == last_count + 1:
                        cycles.append(total - last_sum)
                    elif count > last_count + 1:
                        merged += 1
                    last_sum, last_count = total, count
                cpu1, t1 = cpu_seconds(pid), time.monotonic()
                window_cycles = int(last_count - first_count)
                scrapes = len(rss)
                healthy = healthy_count(text)
                errors = metric_value(text, "gpu_watchdog_cycle_errors")
                # What one scrape costs the daemon (the exposition grows with the fleet): measured apart.
                c0 = cpu_seconds(pid)
                for _ in range(SCRAPE_COST_SAMPLES):
                    http.get(url)
                scrape_cpu = (cpu_seconds(pid) - c0) / SCRAPE_COST_SAMPLES
                http.close()
                restarts = daemon.entries(kind="restart-call")
                detected = daemon.entries(kind="detected")
                engine_down = daemon.entries(kind="engine-down")  # someone restarted the engine: figures invalid
            finally:
                daemon.stop()
        assert cycles, "no cycle was timed"
        share = (cpu1 - cpu0) / (t1 - t0)
        share_quiet = max(0.0, (cpu1 - cpu0 - scrapes * scrape_cpu) / (t1 - t0))
        return {
            "containers": size,
            "start_s": start_s,
            "ready_s": ready_s,
            "poll_interval_s": poll,
            "window_s": t1 - t0,
            "cycles_in_window": window_cycles,
            "cycles_timed": len(cycles),
            "cycles_merged_scrapes": merged,
            "cycle_s": summary(cycles),
            "cycle_mean_s": statistics.fmean(cycles),
            "cycle_values_s": [round(c, 5) for c in cycles],  # in order: the once-a-minute re-inspects show
            "peak_rss_bytes": max(rss),
            "median_rss_bytes": int(statistics.median(rss)),
            "cpu_share_of_one_core": share,
            "cpu_share_without_scrapes": share_quiet,
            "scrape_cpu_s": scrape_cpu,
            "healthy_at_end": healthy,
            "cycle_errors": errors,
            "restarts": len(restarts),
            "faults_detected": len(detected),
            "engine_down": len(engine_down),
        }
    finally:
        remove_fleet(fleet.client, threads)
        fleet.remove_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="8,64,256")
    parser.add_argument("--seconds", type=float, default=120, help="measured window per size (default 120)")
    parser.add_argument("--poll", type=float, default=5, help="the daemon's poll_interval (default 5)")
    parser.add_argument("--threads", type=int, default=8, help="parallel container starts/removals (default 8)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if not all(1 <= s <= 512 for s in sizes) or not 10 <= args.seconds <= 3600 or not 1 <= args.threads <= 32:
        parser.error("sizes 1..512, seconds 10..3600, threads 1..32")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up in `finally`
    rows = []
    problems = []
    for size in sizes:
        row = measure(size, args.seconds, args.poll, args.threads)
        rows.append(row)
        c = row["cycle_s"]
        print(
            f"{size:3d} containers: cycle median {ms(c['median'])} (p95 {ms(c['p95'])}, max {ms(c['max'])}, "
            f"n={c['n']}), RSS peak {row['peak_rss_bytes'] / 2**20:.1f} MiB (median "
            f"{row['median_rss_bytes'] / 2**20:.1f}), CPU {row['cpu_share_of_one_core'] * 100:.2f}% of one core "
            f"({row['cpu_share_without_scrapes'] * 100:.2f}% without the 1/s scrapes), healthy "
            f"{row['healthy_at_end']}/{size}, restarts {row['restarts']}, cycle errors {row['cycle_errors']:.0f}"
        )
        if row["restarts"] or row["healthy_at_end"] != size or row["cycle_errors"] or row["engine_down"]:
            problems.append(
                f"{size}: restarts {row['restarts']}, healthy {row['healthy_at_end']}/{size}, "
                f"engine down {row['engine_down']}x (another test restarted it: rerun)"
            )
    print("saved", save("scale", {"rows": rows, "problems": problems}))
    if problems:
        sys.exit(f"problems: {problems}")


if __name__ == "__main__":
    main()
