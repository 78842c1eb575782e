"""Predictive maintenance end to end: a real daemon on the fake NVML driver's ECC counters over time.

The `ecc_trend` scenario makes GPU 1's correctable-ECC count accelerate (t^2 after t seconds), GPU 2's
climb steadily and GPU 0's stay flat, counted from the moment the scenario file is written; the
daemon samples them every second (gpu.predict.sample_interval) into its journal.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.fake_nvml.harness import FakeNvml
from tests.integration.harness import Daemon, wait_for
from tests.integration.test_gpu import gpu_daemon, status

pytestmark = pytest.mark.engine

ACCELERATING = "GPU-00000000-0000-0000-0000-000000000001"
PREDICT: dict[str, Any] = {
    "sample_interval": 1,
    "window": 600,
    "min_samples": 8,
    "horizon_hours": 1,
    "limits": {"ecc_corrected": 5000},
}


def trends(daemon: Daemon) -> dict[int, dict[str, Any]]:
    """GPU index -> its ECC trend as status shows it ({} until it has one)."""
    rows = status(daemon)["gpu"].get("gpus") or []
    return {row["index"]: (row.get("maintenance") or {}).get("ecc_corrected") or {} for row in rows}


def alerts(daemon: Daemon) -> list[dict[str, Any]]:
    return [e for e in daemon.entries(kind="alert") if e["fault"] == "predicted-maintenance"]


def test_an_accelerating_ecc_count_alerts_once_and_flat_or_steady_ones_never(
    daemons: list[Daemon], tmp_path: Path, prefix: str, fake_nvml: FakeNvml
) -> None:
    fake_nvml.use("ecc_trend")
    daemon = gpu_daemon(daemons, tmp_path, prefix, fake_nvml, predict=PREDICT).start()
    wait_for(lambda: alerts(daemon), 60, "the schedule-maintenance alert")
    [alert] = alerts(daemon)
    assert alert["gpu"] == ACCELERATING
    assert alert["reason"].startswith(
        f"schedule maintenance: GPU 1 ({ACCELERATING}) is predicted to reach 5000 correctable ECC errors within"
    )
    wait_for(lambda: trends(daemon)[1].get("verdict") == "accelerating", 20, "the trend in status")
    seen = trends(daemon)
    assert seen[1]["alert"] is True and seen[1]["predicted_hours"] < 1
    assert seen[0]["verdict"] == "flat" and seen[0]["alert"] is False
    assert seen[2]["verdict"] == "linear" and seen[2]["alert"] is False
    assert seen[3] == {}  # ECC off: not watched, never a zero
    table = daemon.cli("status").stdout
    assert "GPU 1 ecc_corrected: accelerating" in table and "ALERT: schedule maintenance" in table, table

    # Restarted, the daemon keeps its samples and the episode: the alert is not said again.
    before = trends(daemon)[1]["samples"]
    daemon.stop()
    daemon.start()
    wait_for(lambda: trends(daemon).get(1, {}).get("samples", 0) > before + 3, 30, "samples kept across the restart")
    assert len(alerts(daemon)) == 1
    assert not daemon.entries(kind="gpu-drained")  # watch-only: gpu.predict.evict is off
