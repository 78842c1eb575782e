"""A planned GPU reset under streaming load: what clients see, with the drain and without it.

Setup per run (fresh): the fake NVML driver (tests/fake_nvml) with two 6 GB GPUs, one stand-in
backend on each (one model group, streaming at TOKEN_SECONDS a token, this checkout's server
mounted in), the config rendered by `gpu-watchdog litellm render` (per-attempt timeouts raised to
30 s so a long stream is not a timeout), the pinned LiteLLM proxy as a host process, and the
daemon at its default timings with the opt-in GPU reset on (gpu.reset, a reset_command that is a
harmless script: it logs its arguments and sleeps 1 s).

Load: a streaming chat completion every 0.5 s (2 req/s, each on its own thread) for --seconds
(default 40), each of 50-80 tokens (5-8 s at 0.1 s a token; seeded). At t=15 s GPU 1 reports
Xid 119 (GSP RPC timeout), which the Xid table answers with a GPU reset; it is not one of the
urgent Xids (containers/urgency.py), so with drains on the watchdog takes GPU 1's backend out of
rotation, waits for its streams to finish, then stops it, resets the GPU and starts it again.
Without drains (drain.enabled: false, the behaviour before) it stops the backend at once.

Measured, per run: client errors (HTTP status other than 200, or no answer), requests cut (a
200 stream that did not deliver every token before [DONE]: LiteLLM sends [DONE] after a cut too),
streams on GPU 1 in flight at the decision, and from the journal: the decision (the Xid entry)
to the drain's end and to the reset (the `gpu-reset` entry: its containers are stopped then),
and the reset's verified end.

Usage: .venv/bin/python bench/planned_reset.py [--mode drain|no-drain|both] [--seconds 40]
Writes bench/results/planned_reset.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from common import LITELLM_TEMPLATE, WatchdogProcess, daemon_defaults, new_fleet, save

from tests.fake_nvml.harness import build, environment
from tests.integration import litellm_proxy
from tests.integration.harness import free_port, wait_for

TOKEN_SECONDS = 0.1
RATE = 2.0  # requests a second
XID_AT = 15.0  # s into the load
UUID = "GPU-5f1c0b6e-1d2a-4c7e-9b3a-0000000001{:02d}"
GPU_LINE = (
    "gpu {i} uuid={uuid} bus=00000000:0{b}:00.0 name=P106-100 total_mib=6144 used_mib=4000 temp=50 ecc=notsupported"
)


def scenario() -> str:
    lines = ["driver 535.183.01", *(GPU_LINE.format(i=i, uuid=UUID.format(i), b=i + 1) for i in range(2))]
    return "\n".join(lines) + "\n"


def read_json(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def run(mode: str, seconds: float, seed: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="drain-planned-reset-"))
    fleet = new_fleet()
    proxy_pid: int | None = None
    daemon: WatchdogProcess | None = None
    try:
        build()
        scenario_file = work / "scenario.txt"
        scenario_file.write_text(scenario())
        script = work / "fake-reset"
        script.write_text(f'#!/bin/sh\necho "$@" >> {work / "reset.log"}\nsleep 1\n')
        os.chmod(script, 0o755)
        names = litellm_proxy.streaming_pair(fleet, TOKEN_SECONDS, 64, start_period="2")
        template = yaml.safe_load(LITELLM_TEMPLATE.read_text())
        template["deployment"]["litellm_params"].update(timeout=30, stream_timeout=30)
        template_path = work / "template.yaml"
        template_path.write_text(yaml.safe_dump(template))
        out = work / "litellm" / "config.yaml"
        config = daemon_defaults(fleet.prefix, work / "state", out)
        config["litellm"]["template"] = str(template_path)
        config["capacity"] = {"rpm_per_gpu": [300, 400]}  # not the bottleneck: 2 req/s is 120 rpm
        config["gpu"] = {
            "deadline": 1,
            "kernel_log": "off",
            "pid_mapping": False,
            "reset": True,
            "reset_command": [str(script), "-i", "{uuid}"],
        }
        config["drain"] = {"enabled": mode == "drain"}
        daemon = WatchdogProcess(work, config, env=environment(scenario_file))
        rendered = daemon.cli("litellm", "render")
        if rendered.returncode != 0:
            raise RuntimeError(f"litellm render failed: {rendered.stderr}")
        port = free_port()
        proxy_pid = litellm_proxy.start(out, port, work / "proxy.log")
        wait_for(lambda: litellm_proxy.live(port), 120, "the LiteLLM proxy")
        daemon.start()
        rotation = out.parent / "rotation.json"
        wait_for(lambda: len(read_json(rotation).get("in", [])) == 2, 60, "2 backends in rotation")
        rng = random.Random(seed)
        streams: list[litellm_proxy.Stream] = []
        started = time.time()
        xid_at: float | None = None
        for i in range(int(seconds * RATE)):
            at = started + i / RATE
            time.sleep(max(0.0, at - time.time()))
            if xid_at is None and time.time() - started >= XID_AT:
                with scenario_file.open("a") as file:
                    file.write("xid 1 119\n")
                xid_at = time.time()
            streams.append(litellm_proxy.Stream(port, rng.randint(50, 80)).start())
        for stream in streams:
            stream.wait(60)
        wait_for(lambda: [e for e in daemon.journal(started)[0] if e["kind"] == "gpu-reset-ok"], 90, "the reset done")
        entries, _ = daemon.journal(started)
        return summarize(mode, streams, entries, names, xid_at)
    finally:
        if daemon is not None:
            daemon.stop()
        if proxy_pid is not None:
            litellm_proxy.stop(proxy_pid)
        fleet.remove_all()
        shutil.rmtree(work, ignore_errors=True)


def first(entries: list[dict[str, Any]], kind: str, **match: str) -> dict[str, Any] | None:
    for entry in entries:
        if entry["kind"] == kind and all(entry.get(k) == v for k, v in match.items()):
            return entry
    return None


def summarize(
    mode: str,
    streams: list[litellm_proxy.Stream],
    entries: list[dict[str, Any]],
    names: dict[int, str],
    xid_at: float | None,
) -> dict[str, Any]:
    records = [s.record for s in streams]
    errors = [r for r in records if r.get("status") != 200 or (r["error"] and not r.get("chunks"))]
    cut = [r for r in records if r.get("status") == 200 and not r["complete"]]
    xid = first(entries, "xid")
    decision = xid["ts"] if xid else None
    on_gpu1 = f"{names[1]}.gpu1"
    in_flight = [
        r for r in records if r.get("deployment") == on_gpu1 and decision and r["start"] <= decision <= r.get("end", 0)
    ]
    drained = first(entries, "drained", container=names[1]) or first(entries, "drain-timed-out", container=names[1])
    reset = first(entries, "gpu-reset")
    reset_ok = first(entries, "gpu-reset-ok")

    def since(entry: dict[str, Any] | None) -> float | None:
        return round(entry["ts"] - decision, 2) if entry and decision else None

    result = {
        "mode": mode,
        "requests": len(records),
        "client_errors": len(errors),
        "requests_cut": len(cut),
        "complete": sum(1 for r in records if r["complete"]),
        "streams_on_gpu1_in_flight_at_decision": len(in_flight),
        "decision_to_drained_s": since(drained),
        "drain_end": f"{drained['kind']}: {drained['reason']}" if drained else None,
        "last_stream_end_to_drained_s": round(drained["ts"] - max(r["end"] for r in in_flight), 2)
        if drained and in_flight
        else None,
        "decision_to_reset_s": since(reset),
        "decision_to_reset_verified_s": since(reset_ok),
        "xid_written_to_decision_s": round(decision - xid_at, 2) if decision and xid_at else None,
        "error_samples": [r.get("error") for r in errors[:3]],
    }
    print(
        f"{mode}: {result['requests']} streams, {result['client_errors']} client errors, "
        f"{result['requests_cut']} cut; {result['streams_on_gpu1_in_flight_at_decision']} in flight on GPU 1 at the "
        f"decision; decision -> reset {result['decision_to_reset_s']} s (drained at {result['decision_to_drained_s']} s"
        f" {result['drain_end']})"
    )
    if decision:
        late = [r for r in records if r.get("deployment") == on_gpu1 and r.get("end", 0) > decision]
        result["streams_on_gpu1_after_decision"] = [
            [round(r["start"] - decision, 2), round(r["end"] - decision, 2)]
            for r in sorted(late, key=lambda r: r["end"])
        ]
        print(
            "  streams on GPU 1 that ended after it, [start, end] s from it:", result["streams_on_gpu1_after_decision"]
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("drain", "no-drain", "both"), default="both")
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--seed", type=int, default=15)
    args = parser.parse_args()
    if not XID_AT < args.seconds <= 120:
        parser.error(f"--seconds must be over {XID_AT:g} and at most 120")
    modes = ["drain", "no-drain"] if args.mode == "both" else [args.mode]
    runs = [run(mode, args.seconds, args.seed) for mode in modes]
    save(
        "planned_reset",
        {
            "load": f"{RATE:g} streaming req/s for {args.seconds:g} s, 50-80 tokens at {TOKEN_SECONDS} s a token",
            "fault": f"Xid 119 on GPU 1 at t={XID_AT:g} s (reset-gpu, not urgent)",
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
