"""Zero-VRAM -> restart issued, and what a hung NVML driver costs the healing of a killed container.

The daemon runs with the default 5 s poll interval against real stand-in
containers mapped to fake GPUs (tests/fake_nvml). Three measurements, N each:
  at-start:  the model is never in GPU memory; restart issued minus (StartedAt + start period)
  while-up:  the GPU loses its memory while the container runs; restart issued minus the scenario write
  kill:      `docker kill` -> restart issued, with the driver answering and with it hung (ratio)
Usage: python bench/zero_vram.py [--runs 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import ROOT, new_fleet, save, summary

from tests.fake_nvml.harness import build, environment
from tests.integration.harness import Daemon, wait_for
from watchdog.containers.engine import parse_docker_time

POLL = 5.0
START_PERIOD = 5.0
UUID = "GPU-5f1c0b6e-1d2a-4c7e-9b3a-000000000100"


def scenario(used_mib: int, hang: bool = False) -> str:
    text = (
        "driver 535.183.01\n"
        f"gpu 0 uuid={UUID} bus=00000000:01:00.0 name=P106-100 total_mib=6144 used_mib={used_mib} temp=50\n"
    )
    return text + ("hang nvmlDeviceGetMemoryInfo_v2\nhang nvmlDeviceGetMemoryInfo\n" if hang else "")


def write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def first_restart(daemon: Daemon, name: str, timeout: float) -> float:
    action = wait_for(lambda: daemon.restarts(name), timeout, f"a restart of {name}")
    return float(action[0].started_at)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    build()
    fleet = new_fleet()
    work = Path(tempfile.mkdtemp(prefix="gwb-zero-vram-"))
    scenario_file = work / "scenario.txt"
    write(scenario_file, scenario(4000))
    daemon = Daemon(
        work,
        fleet.prefix,
        env=environment(scenario_file),
        poll_interval=POLL,
        probe_timeout=2,
        log_level="INFO",
        gpu={"kernel_log": "off", "pid_mapping": False, "deadline": 1},
        breaker={"max_restarts": 100},
    ).start()
    at_start: list[float] = []
    while_up: list[float] = []
    kill: dict[str, list[float]] = {"driver-ok": [], "driver-hung": []}
    try:
        for run in range(args.runs):
            # at-start: the model never loads (GPU 0 stays empty).
            write(scenario_file, scenario(5))
            time.sleep(POLL + 1)  # the monitor has read the empty GPU
            fleet.start(f"s{run}", gpu="0", start_period=str(START_PERIOD))
            name = fleet.get(f"s{run}").name
            started = parse_docker_time(fleet.state(f"s{run}")["StartedAt"]) or 0.0
            at_start.append(first_restart(daemon, name, START_PERIOD + 3 * POLL) - (started + START_PERIOD))
            fleet.get(f"s{run}").remove(force=True)

            # while-up: loaded, then lost.
            write(scenario_file, scenario(4000))
            fleet.start(f"u{run}", gpu="0", start_period=str(START_PERIOD))
            name = fleet.get(f"u{run}").name
            time.sleep(START_PERIOD + POLL + 1)
            assert not daemon.restarts(name), "restarted while its model was loaded"
            lost_at = time.time()
            write(scenario_file, scenario(5))
            while_up.append(first_restart(daemon, name, 3 * POLL) - lost_at)
            fleet.get(f"u{run}").remove(force=True)

            # kill, with the driver answering and hung.
            for state in ("driver-ok", "driver-hung"):
                write(scenario_file, scenario(4000, hang=state == "driver-hung"))
                fleet.start(f"k{run}{state[7]}", gpu="0", start_period="60")
                container = fleet.get(f"k{run}{state[7]}")
                fleet.wait_ready(f"k{run}{state[7]}")
                time.sleep(2.5)  # past the deadline: the reading is "driver-hung" by now
                killed_at = time.time()
                container.kill()
                kill[state].append(first_restart(daemon, container.name, 10) - killed_at)
                container.remove(force=True)
            print(
                f"run {run + 1}: at-start {at_start[-1]:.2f} s, while-up {while_up[-1]:.2f} s, "
                f"kill {kill['driver-ok'][-1] * 1000:.0f} ms / hung {kill['driver-hung'][-1] * 1000:.0f} ms"
            )
    finally:
        daemon.stop()
        fleet.remove_all()
    hung_alerts = [e for e in daemon.entries(kind="alert") if "driver hung" in e["reason"]]
    result = {
        "poll_interval_s": POLL,
        "start_period_s": START_PERIOD,
        "restart_after_start_period_s": summary(at_start),
        "restart_after_vram_lost_s": summary(while_up),
        "kill_to_restart_driver_ok_s": summary(kill["driver-ok"]),
        "kill_to_restart_driver_hung_s": summary(kill["driver-hung"]),
        "driver_hung_alerts": len(hung_alerts),
    }
    ok, hung = result["kill_to_restart_driver_ok_s"]["median"], result["kill_to_restart_driver_hung_s"]["median"]
    print(
        f"zero-VRAM at start: restart issued {result['restart_after_start_period_s']['median']:.2f} s "
        f"(max {result['restart_after_start_period_s']['max']:.2f}) after the start period; "
        f"lost while up: {result['restart_after_vram_lost_s']['median']:.2f} s "
        f"(max {result['restart_after_vram_lost_s']['max']:.2f}); poll interval {POLL:g} s"
    )
    print(f"kill -> restart issued: {ok * 1000:.0f} ms driver ok, {hung * 1000:.0f} ms driver hung (x{hung / ok:.2f})")
    print("saved", save("zero_vram", result), "from", ROOT)


if __name__ == "__main__":
    main()
