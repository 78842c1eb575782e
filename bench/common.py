"""Shared bits of the benchmark scripts: a fleet on the real engine, result files, statistics."""

from __future__ import annotations

import json
import math
import platform
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402
import httpx  # noqa: E402

from tests.integration.harness import Fleet  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def new_fleet() -> Fleet:
    client = docker.from_env(timeout=120)
    return Fleet(client, f"gwb{uuid.uuid4().hex[:6]}")


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "median": statistics.median(ordered),
        "p95": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))],
        "min": ordered[0],
        "max": ordered[-1],
    }


def save(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{platform.node()} {platform.machine()}",
        **data,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2))
    return path


def ms(value: float) -> str:
    return f"{value * 1000:.1f} ms"


def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..1); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def get_ok(url: str, timeout: float = 0.5) -> bool:
    """True when url answers 200 in time (loopback only, no proxy from the environment)."""
    try:
        return httpx.get(url, timeout=timeout, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False
