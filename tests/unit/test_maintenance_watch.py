"""MaintenanceWatch: counter samples kept in a real journal, the "schedule maintenance" alert said once."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from watchdog.config import Config
from watchdog.entries import ALERT_MAINTENANCE, EntryKind
from watchdog.gpu.counter_trend import PredictConfig
from watchdog.gpu.maintenance_watch import MaintenanceWatch, counters
from watchdog.gpu.mark_book import MarkBook
from watchdog.gpu.marks import GpuCondition
from watchdog.gpu.readings import GpuReading, GpuSnapshot, NvmlState
from watchdog.journal import Journal

HOUR = 3600.0
STEP = 600.0
START = 1_700_000_000.0


def config(**predict: object) -> Config:
    base = Config()
    return replace(base, gpu=replace(base.gpu, predict=replace(PredictConfig(), **predict)))  # type: ignore[arg-type]


def gpus(count: Callable[[float], float], hours: float, n: int = 2) -> tuple[GpuSnapshot, ...]:
    """GPU 0 with `count` correctable errors after `hours`; the others flat."""
    return tuple(
        GpuSnapshot(
            i,
            uuid=f"GPU-pm-{i}",
            ecc_corrected=0,
            ecc_corrected_aggregate=int(count(hours)) if i == 0 else 5,
            remapped_rows_correctable=1,
            remapped_rows_uncorrectable=0,
            pcie_replays=10,
        )
        for i in range(n)
    )


def accelerating(h: float) -> float:
    return 0.1 * h * h  # 1000 at 100 h


def feed(watch: MaintenanceWatch, count: Callable[[float], float], hours: tuple[float, float], n: int = 2) -> None:
    """Readings every sample interval from hours[0] to hours[1]."""
    step = 0
    while hours[0] + step * STEP / HOUR < hours[1]:
        h = hours[0] + step * STEP / HOUR
        at = START + h * HOUR
        watch.observe(GpuReading(NvmlState.OK, at, 0.001, gpus(count, h, n)), now=at)
        step += 1


def alerts(journal: Journal) -> list[dict[str, object]]:
    return [e for e in journal.entries() if e["kind"] == EntryKind.ALERT and e["fault"] == ALERT_MAINTENANCE]


def watch_on(path: Path, cfg: Config | None = None) -> tuple[MaintenanceWatch, Journal]:
    journal = Journal.in_dir(path)
    cfg = cfg or config()
    return MaintenanceWatch(cfg, journal, MarkBook(journal)), journal


def test_an_accelerating_gpu_alerts_once_and_a_flat_one_never(tmp_path: Path) -> None:
    watch, journal = watch_on(tmp_path)
    feed(watch, accelerating, (0, 72))
    said = alerts(journal)
    assert len(said) == 1
    text = str(said[0]["reason"])
    assert text.startswith("schedule maintenance: GPU 0 (GPU-pm-0) is predicted to reach 1000 correctable ECC errors")
    assert "hours (confidence >0.999; " in text
    views = watch.views()
    assert views["GPU-pm-0"]["ecc_corrected"]["verdict"] == "accelerating"
    assert views["GPU-pm-0"]["ecc_corrected"]["alert"] is True
    assert views["GPU-pm-1"]["ecc_corrected"]["verdict"] == "flat"
    assert not journal.gpu_marks()  # watch-only by default
    journal.close()


def test_samples_and_the_episode_outlive_a_restart(tmp_path: Path) -> None:
    watch, journal = watch_on(tmp_path)
    feed(watch, accelerating, (0, 60))
    assert len(alerts(journal)) == 1
    journal.close()
    watch, journal = watch_on(tmp_path)  # the watchdog restarted: same file
    at = START + 60 * HOUR - STEP + 10  # 10 s after the last sample: not due
    watch.observe(GpuReading(NvmlState.OK, at, 0.001, gpus(accelerating, 60)), now=at)
    assert watch.views() == {}
    feed(watch, accelerating, (60, 72))
    assert watch.views()["GPU-pm-0"]["ecc_corrected"]["samples"] == 72 * 6
    assert len(alerts(journal)) == 1  # the same episode: not said again
    journal.close()


def test_a_new_episode_is_said_again_after_the_acceleration_stopped(tmp_path: Path) -> None:
    watch, journal = watch_on(tmp_path, config(window=24 * HOUR, min_samples=100))
    feed(watch, accelerating, (0, 24))
    assert len(alerts(journal)) == 1
    feed(watch, lambda h: 58, (24, 50))  # the errors stop: the episode ends
    assert watch.views()["GPU-pm-0"]["ecc_corrected"]["verdict"] == "flat"
    feed(watch, lambda h: 58 + 0.5 * (h - 50) ** 2, (50, 74))
    assert len(alerts(journal)) == 2
    journal.close()


def test_samples_past_the_window_are_pruned_from_the_journal(tmp_path: Path) -> None:
    watch, journal = watch_on(tmp_path, config(window=24 * HOUR))
    feed(watch, accelerating, (0, 48))
    kept = journal.counter_samples("GPU-pm-0", since=0)
    assert {len(v) for v in kept.values()} == {24 * 6 + 1}
    assert min(t for t, _ in kept["ecc_corrected"]) >= START + 24 * HOUR - STEP
    journal.close()


def test_evict_on_drains_the_gpu_with_the_prediction_as_reason(tmp_path: Path) -> None:
    watch, journal = watch_on(tmp_path, config(evict=True))
    feed(watch, accelerating, (0, 72))
    mark = journal.gpu_marks()["GPU-pm-0"]
    assert mark.condition == GpuCondition.DRAINED and mark.reason.startswith("schedule maintenance: GPU 0")
    assert "GPU-pm-1" not in journal.gpu_marks()
    journal.close()


def test_evict_respects_max_quarantined_fraction(tmp_path: Path) -> None:
    watch, journal = watch_on(tmp_path, config(evict=True))
    feed(watch, accelerating, (0, 72), n=1)  # one GPU, fraction 0.5: none may be marked automatically
    assert journal.gpu_marks() == {}
    [said] = alerts(journal)
    assert "would mark GPU GPU-pm-0 drained, but 0 of 1 GPU(s) already marked, cap 0" in str(said["reason"])
    journal.close()


def test_off_with_gpu_predict_enabled_false(tmp_path: Path) -> None:
    watch, journal = watch_on(tmp_path, config(enabled=False))
    feed(watch, accelerating, (0, 72))
    assert watch.views() == {} and alerts(journal) == []
    assert journal.counter_samples("GPU-pm-0", since=0) == {}
    journal.close()


def test_unsupported_counters_are_left_out_and_volatile_ecc_stands_in_for_aggregate() -> None:
    assert counters(GpuSnapshot(0, uuid="GPU-x")) == {}
    assert counters(GpuSnapshot(0, uuid="GPU-x", ecc_corrected=4)) == {"ecc_corrected": 4.0}
    rows = GpuSnapshot(0, remapped_rows_correctable=3, remapped_rows_uncorrectable=2)
    assert counters(rows) == {"remapped_rows": 5.0}


def test_a_journal_from_before_the_samples_table_opens_and_stores_them(tmp_path: Path) -> None:
    old = sqlite3.connect(tmp_path / "journal.sqlite3")
    old.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "INSERT INTO meta VALUES ('kernel_log_until', '12.5');"
    )
    old.commit()
    old.close()
    journal = Journal.in_dir(tmp_path)
    journal.add_counter_samples("GPU-a", 10.0, {"pcie_replays": 3.0}, keep_since=0.0)
    assert journal.counter_samples("GPU-a", since=0) == {"pcie_replays": [(10.0, 3.0)]}
    assert journal.get_meta("kernel_log_until") == "12.5"
    journal.close()


@pytest.mark.parametrize("signal", ["pcie_replays", "remapped_rows"])
def test_every_signal_has_its_trend_in_status(tmp_path: Path, signal: str) -> None:
    watch, journal = watch_on(tmp_path)
    feed(watch, accelerating, (0, 50))
    assert watch.views()["GPU-pm-0"][signal]["verdict"] == "flat"
    journal.close()


def test_the_supervisor_shows_the_trend_in_status_metrics_and_the_cli(supervisor: Any) -> None:
    from watchdog.model import Diagnosis
    from watchdog.ops.metrics import Metrics
    from watchdog.ops.status import render_gpus
    from watchdog.subsystem import CycleView

    for step in range(72 * 6):
        h = step * STEP / HOUR
        at = START + h * HOUR
        supervisor.monitor.reading = GpuReading(NvmlState.OK, at, 0.001, gpus(accelerating, h))
        view = supervisor.cycle(CycleView(()), now=at).view
    row = view["gpus"][0]
    assert row["maintenance"]["ecc_corrected"]["verdict"] == "accelerating"
    assert view["gpus"][1]["maintenance"]["ecc_corrected"]["verdict"] == "flat"
    metrics = Metrics("host-a")
    metrics.observe([], Diagnosis(), [], view, {}, engine_up=True)
    text = metrics.exposition().decode()
    hours = row["maintenance"]["ecc_corrected"]["predicted_hours"]
    assert (
        'gpu_watchdog_gpu_maintenance_predicted_hours{Hostname="host-a",UUID="GPU-pm-0",gpu="0",modelName="",'
        f'signal="ecc_corrected"}} {hours}' in text
    )
    assert 'UUID="GPU-pm-1",gpu="1",modelName="",signal="ecc_corrected"' not in text  # flat: no prediction
    lines = render_gpus(view, now=at)
    assert any(
        line.startswith("  GPU 0 ecc_corrected: accelerating (confidence >0.999)") and "ALERT" in line for line in lines
    )
