"""One poll cycle over 8, 32 and 64 managed stand-ins with endpoints probed.

Runs the watchdog's own Watchdog.cycle() in-process (dry-run, so nothing is
restarted) against real containers on the real engine; a probe round (every
endpoint, concurrently, with its timeout) is timed separately and together.
Usage: python bench/cycle_time.py [--sizes 8,32,64] [--cycles 20]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import tempfile
import time
from pathlib import Path

import docker
from common import ms, new_fleet, save, summary

from watchdog.config import Config
from watchdog.daemon.loop import Watchdog
from watchdog.journal import Journal

WARMUP_ROUNDS = 6


def measure(size: int, cycles: int) -> dict[str, object]:
    fleet = new_fleet()
    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: fleet.start(f"c{i:03d}", priority=str(i % 4)), range(size)))
        for i in range(size):
            fleet.wait_ready(f"c{i:03d}", timeout=60)
        with tempfile.TemporaryDirectory() as tmp:
            config = Config(label_prefix=fleet.prefix, dry_run=True, events=False, state_dir=tmp)
            journal = Journal.in_dir(Path(tmp))
            watchdog = Watchdog(config, journal, lambda: docker.from_env())
            try:
                cold = watchdog.cycle()
                assert sum(1 for c in cold.containers if c.managed) == size, "not every container was seen"
                targets = watchdog._probe_targets(cold.containers)
                for _ in range(WARMUP_ROUNDS):  # let 64 freshly started servers and docker-proxies settle
                    watchdog.cycle()
                    watchdog.prober.probe_round(targets)
                    time.sleep(0.5)
                cycle_times, probe_times, both = [], [], []
                for _ in range(cycles):
                    t0 = time.perf_counter()
                    result = watchdog.cycle()
                    t1 = time.perf_counter()
                    probes = watchdog.prober.probe_round(targets)
                    t2 = time.perf_counter()
                    assert not result.diagnosis.faults, result.diagnosis.faults
                    failed = [p.detail for p in probes.values() if p.status.value != "ok"]
                    assert not failed, failed
                    cycle_times.append(t1 - t0)
                    probe_times.append(t2 - t1)
                    both.append(t2 - t0)
                    time.sleep(0.2)
            finally:
                watchdog.shutdown()
                journal.close()
        return {
            "containers": size,
            "cold_cycle_s": cold.duration,
            "cycle_s": summary(cycle_times),
            "probe_round_s": summary(probe_times),
            "cycle_plus_probe_round_s": summary(both),
        }
    finally:
        fleet.remove_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="8,32,64")
    parser.add_argument("--cycles", type=int, default=20)
    args = parser.parse_args()
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        row = measure(size, args.cycles)
        rows.append(row)
        print(
            f"{size:3d} containers: cycle median {ms(row['cycle_s']['median'])} (p95 {ms(row['cycle_s']['p95'])}), "
            f"probe round median {ms(row['probe_round_s']['median'])}, cycle + probe round median "
            f"{ms(row['cycle_plus_probe_round_s']['median'])} (p95 {ms(row['cycle_plus_probe_round_s']['p95'])}); "
            f"first (cold) cycle {ms(row['cold_cycle_s'])}"
        )
    print("saved", save("cycle_time", {"rows": rows}))


if __name__ == "__main__":
    main()
