"""`docker kill` -> fault recorded, with and without engine events; detection -> restart call issued.

Runs the real daemon (subprocess, default 5 s poll) against one stand-in on the
real engine and reads the times from its journal.
Usage: python bench/detect_latency.py [--runs 7]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import ms, new_fleet, save, summary

from tests.integration.harness import Daemon, wait_for


def measure(events: bool, runs: int) -> tuple[list[float], list[float]]:
    fleet = new_fleet()
    detect: list[float] = []
    to_call: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        daemon = Daemon(
            Path(tmp),
            fleet.prefix,
            poll_interval=5,
            probe_timeout=3,
            log_level="INFO",
            events=events,
            breaker={"max_restarts": 1000, "backoff_initial": 0, "backoff_max": 0},
        )
        try:
            fleet.start("victim")
            fleet.wait_ready("victim")
            daemon.start()
            name = fleet.get("victim").name
            for _ in range(runs):
                fleet.wait_ready("victim")
                time.sleep(1.0 + (len(detect) * 0.7) % 2.5)  # kill at varying points of the poll cycle
                seen = len(daemon.entries(kind="detected", container=name))
                killed_at = time.time()
                fleet.get("victim").kill()
                wait_for(lambda n=seen: len(daemon.entries(kind="detected", container=name)) > n, 15, "detection")
                entry = daemon.entries(kind="detected", container=name)[seen]
                detect.append(entry["ts"] - killed_at)
                wait_for(
                    lambda n=seen: len(daemon.entries(kind="restart-call", container=name)) > n, 15, "restart call"
                )
                call = daemon.entries(kind="restart-call", container=name)[seen]["detail"]
                to_call.append(call["call_started_at"] - call["detected_at"])
        finally:
            daemon.stop()
            fleet.remove_all()
    return detect, to_call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    results = {}
    for events in (True, False):
        detect, to_call = measure(events, args.runs)
        key = "events" if events else "poll_only"
        results[key] = {"kill_to_detected_s": summary(detect), "detected_to_restart_call_s": summary(to_call)}
        print(
            f"{key:9}: docker kill -> fault recorded median {ms(summary(detect)['median'])} "
            f"(max {ms(summary(detect)['max'])}); detection -> restart call median {ms(summary(to_call)['median'])} "
            f"(max {ms(summary(to_call)['max'])}); n={len(detect)}"
        )
    print("saved", save("detect_latency", {"poll_interval_s": 5, **results}))


if __name__ == "__main__":
    main()
