"""Predictive maintenance on synthetic correctable-ECC histories: alerts only on the accelerating ones, and how early.

Each history is two weeks of a GPU's correctable-ECC counter, sampled every 10 minutes (the
gpu.predict defaults), errors arriving at random (Poisson) around the kind's rate:
- flat: a few stray errors (0.02 an hour);
- linear: a steady 2 to 4 an hour;
- noisy: the same steady mean, but in bursts (15% of intervals, exponential burst sizes);
- accelerating: a rate that doubles every 36 to 60 hours from 0.3 to 0.8 an hour.
At every sample the watchdog's own pure code (`watchdog.gpu.counter_trend.judge`, default
`gpu.predict`, limit 1000) judges the samples in the window, and an alert is said once per episode
as `maintenance_watch` does. Lead time: hours from the alert to the moment the history actually
reaches the limit. Fixed seeds: the same numbers on every run.
Usage: python bench/ecc_trend.py [--histories 20] [--days 14]
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
from collections.abc import Callable

from common import ROOT, save

sys.path.insert(0, str(ROOT))
from watchdog.gpu.counter_trend import DEFAULT_LIMITS, PredictConfig, judge
from watchdog.gpu.maintenance_watch import EPISODE_END

HOUR = 3600.0
KINDS = ("flat", "linear", "noisy", "accelerating")


def poisson(rng: random.Random, mean: float) -> int:
    if mean > 30:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, p = math.exp(-mean), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def rate_of(kind: str, rng: random.Random) -> Callable[[float], float]:
    """Errors an hour at hour h, for one history of this kind."""
    if kind == "flat":
        return lambda h: 0.02
    if kind in ("linear", "noisy"):
        steady = rng.uniform(2.0, 4.0)
        return lambda h: steady
    start, doubling = rng.uniform(0.3, 0.8), rng.uniform(36.0, 60.0)
    return lambda h: start * 2 ** (h / doubling)


def history(kind: str, seed: int, days: float, step: float) -> list[tuple[float, float]]:
    rng = random.Random(f"{kind}-{seed}")
    rate = rate_of(kind, rng)
    level, samples = float(rng.randint(0, 100)), []
    for i in range(int(days * 24 * HOUR / step)):
        mean = rate(i * step / HOUR) * step / HOUR
        if kind == "noisy":
            level += rng.expovariate(0.15 / mean) if rng.random() < 0.15 else 0.0
        else:
            level += poisson(rng, mean)
        samples.append((i * step, float(int(level))))
    return samples


def replay(samples: list[tuple[float, float]], config: PredictConfig, limit: float) -> dict[str, object]:
    """Judge at every sample as the watch does; the alerts said (once per episode) and the lead time."""
    alerts: list[dict[str, float]] = []
    episode = False
    for i in range(len(samples)):
        now = samples[i][0]
        window = [s for s in samples[max(0, i - 2000) : i + 1] if s[0] >= now - config.window]
        trend = judge(window, limit=limit, config=config)
        if episode and trend.acceleration < EPISODE_END:
            episode = False
        elif not episode and trend.alerts(config):
            episode = True
            alerts.append({"at_hours": now / HOUR, "predicted_hours": trend.hours or 0.0, "level": trend.level})
    reached = next((t / HOUR for t, v in samples if v >= limit), None)
    first = alerts[0] if alerts else None
    return {
        "alerts": len(alerts),
        "first_alert_hours": first["at_hours"] if first else None,
        "predicted_hours_at_alert": first["predicted_hours"] if first else None,
        "reaches_limit_hours": reached,
        "lead_hours": (reached - first["at_hours"]) if first and reached is not None else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--histories", type=int, default=20, help="per kind")
    parser.add_argument("--days", type=float, default=14.0)
    args = parser.parse_args()
    config = PredictConfig()
    limit = DEFAULT_LIMITS["ecc_corrected"]
    results: dict[str, object] = {}
    for kind in KINDS:
        runs = [
            replay(history(kind, seed, args.days, config.sample_interval), config, limit)
            for seed in range(args.histories)
        ]
        leads = [float(str(r["lead_hours"])) for r in runs if r["lead_hours"] is not None]
        said = sum(int(str(r["alerts"])) for r in runs)
        alerted = sum(1 for r in runs if r["alerts"])
        lead = {"median": statistics.median(leads), "min": min(leads), "max": max(leads)} if leads else None
        results[kind] = {"histories": len(runs), "alerts": said, "histories_alerted": alerted, "lead_hours": lead}
        results[kind + "_runs"] = runs
        line = f"{kind:13s} {len(runs)} histories: {said} alert(s), on {alerted} of them"
        if lead:
            line += f"; lead time median {lead['median']:.1f} h (min {lead['min']:.1f}, max {lead['max']:.1f})"
        print(line)
    settings = {
        "window_s": config.window,
        "sample_interval_s": config.sample_interval,
        "min_samples": config.min_samples,
        "confidence": config.confidence,
        "min_growth": config.min_growth,
        "horizon_hours": config.horizon_hours,
    }
    print("saved", save("ecc_trend", {"days": args.days, "limit": limit, "config": settings, "kinds": results}))


if __name__ == "__main__":
    main()
