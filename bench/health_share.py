"""Score -> share of traffic through the real LiteLLM proxy (issue 15's first figure).

Four stand-in backends on four fake GPUs (tests/fake_nvml) whose health scores are 1, 0.5, 0.2 and
0 (under gpu.health.evict_below 0.1; the signals and their prices are in
tests/integration/health_fleet.py), one model served by all four, the real proxy with the
rotation callback, the daemon writing the shares. Then --requests chat completions (default
1,000), one at a time or --concurrency at once, each counted by the proxy's own
x-litellm-model-id header. The target share
of each GPU is its score over the sum of the scores kept in (1 : 0.5 : 0.2 : 0 = 58.8 %, 29.4 %,
11.8 %, 0 %); the goal is every share within 5 points of its target, with 0 failed requests.

Usage: .venv/bin/python bench/health_share.py [--requests 1000] [--concurrency 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

import docker
from common import save

from tests.integration.harness import Fleet, wait_for
from tests.integration.health_fleet import expected_shares, health_fleet
from tests.integration.test_litellm import rotation

SCORES = [1.0, 0.5, 0.2, 0.0]
GOAL_POINTS = 5.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=1, help="clients sending at once")
    args = parser.parse_args()
    prefix = f"gwbh{uuid.uuid4().hex[:6]}"
    fleet = Fleet(docker.from_env(timeout=120), prefix)
    work = Path(tempfile.mkdtemp(prefix="gwb-health-share-"))
    try:
        with health_fleet(fleet, work, prefix, SCORES) as hf:
            wait_for(lambda: len(rotation(hf.rotation_file).get("weights") or {}) == 2, 60, "the shares")
            started = time.monotonic()
            served, failures = hf.count(args.requests, args.concurrency)
            seconds = time.monotonic() - started
    finally:
        fleet.remove_all()
    rows = []
    for gpu, (ident, score, target) in enumerate(zip(hf.ids, SCORES, expected_shares(SCORES), strict=True)):
        share = served[ident] / args.requests
        rows.append(
            {
                "gpu": gpu,
                "score": score,
                "requests": served[ident],
                "share_pct": round(100 * share, 2),
                "target_pct": round(100 * target, 2),
                "off_by_points": round(100 * abs(share - target), 2),
            }
        )
    worst = max(r["off_by_points"] for r in rows)
    result = {
        "requests": args.requests,
        "concurrency": args.concurrency,
        "failed": len(failures),
        "seconds": round(seconds, 1),
        "gpus": rows,
        "worst_off_by_points": worst,
        "goal": f"every share within {GOAL_POINTS:g} points of its target, 0 failed",
        "goal_met": worst <= GOAL_POINTS and not failures,
    }
    for r in rows:
        print(
            f"GPU {r['gpu']} score {r['score']:.1f}: {r['requests']:4d} requests = {r['share_pct']:5.1f} % "
            f"(target {r['target_pct']:5.1f} %, off by {r['off_by_points']:.1f} points)"
        )
    print(f"{args.requests} requests in {seconds:.0f} s, {len(failures)} failed; goal met: {result['goal_met']}")
    name = "health_share" if args.concurrency == 1 else f"health_share_c{args.concurrency}"
    print(f"saved {save(name, result)}")


if __name__ == "__main__":
    main()
