"""One GPU probe (every NVML field, all GPUs) over 8 fake GPUs, through pynvml's real code.

Runs under the fake NVML driver (tests/fake_nvml) in a child interpreter.
Usage: python bench/gpu_probe.py [--scenario p106x8] [--reads 50]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from common import ROOT, ms, save, summary

sys.path.insert(0, str(ROOT))
from tests.fake_nvml.harness import build, environment, scenario

CHILD = """
import json, time
from watchdog.gpu.nvml import GpuProbe
probe = GpuProbe(deadline=2.0)
probe.read()  # nvmlInit and imports
times = []
for _ in range({reads}):
    t0 = time.perf_counter(); reading = probe.read(); times.append(time.perf_counter() - t0)
    assert reading.state == "ok" and len(reading.gpus) == {gpus}, reading
print(json.dumps(times))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scenario", default="p106x8")
    parser.add_argument("--reads", type=int, default=50)
    args = parser.parse_args()
    build()
    path = scenario(args.scenario)
    gpus = sum(1 for line in path.read_text().splitlines() if line.startswith("gpu "))
    done = subprocess.run(
        [sys.executable, "-c", CHILD.format(reads=args.reads, gpus=gpus)],
        env=environment(path),
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    times = json.loads(done.stdout.splitlines()[-1])
    stats = summary(times)
    print(f"GPU probe over {gpus} fake GPUs ({args.scenario}): median {ms(stats['median'])}, p95 {ms(stats['p95'])}")
    print("saved", save(f"gpu_probe_{args.scenario}", {"scenario": args.scenario, "gpus": gpus, "read_s": stats}))


if __name__ == "__main__":
    main()
