"""Predictive maintenance: each GPU's error counters sampled into the journal, their trend, the alert.

On a new reading, each GPU is sampled at most every `gpu.predict.sample_interval`: its correctable
ECC count (aggregate, over the GPU's life, where NVML gives it; else volatile, whose resets at a
driver reload the trend carries over), its remapped rows (correctable + uncorrectable: the spare
rows used) and its PCIe replay counter. Samples go to the journal (pruned past the window), so a
restart of the watchdog keeps the history. Each signal's trend is judged by the pure
`counter_trend`; an accelerating one predicted to reach its limit within the horizon raises
"schedule maintenance: ..." once per episode (the episode is kept in the journal's meta too, so a
restart does not say it again; it ends when no sign of acceleration is left). Watch-only unless
`gpu.predict.evict` is on: then the GPU is also marked drained through the mark book, within
`max_quarantined_fraction`. I/O (the journal).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from loguru import logger

from watchdog.config import Config
from watchdog.entries import ALERT_MAINTENANCE, EntryKind
from watchdog.gpu.assignment import gpu_key
from watchdog.gpu.counter_trend import SIGNALS, Trend, judge, shown_confidence
from watchdog.gpu.mark_book import MarkBook
from watchdog.gpu.marks import GpuCondition, mark_or_alert
from watchdog.gpu.readings import GpuHealth, GpuReading, GpuSnapshot

if TYPE_CHECKING:
    from watchdog.journal import Journal

EPISODE_END = 0.5  # an episode ends when the acceleration's confidence falls under this (hysteresis)
NAMES = {"ecc_corrected": "correctable ECC errors", "remapped_rows": "remapped rows", "pcie_replays": "PCIe replays"}


def counters(gpu: GpuSnapshot) -> dict[str, float]:
    """The signals this GPU gives (NotSupported: left out, never a zero)."""
    values: dict[str, float] = {}
    ecc = gpu.ecc_corrected_aggregate if gpu.ecc_corrected_aggregate is not None else gpu.ecc_corrected
    if ecc is not None:
        values["ecc_corrected"] = float(ecc)
    if gpu.remapped_rows_correctable is not None:
        values["remapped_rows"] = float(gpu.remapped_rows_correctable + (gpu.remapped_rows_uncorrectable or 0))
    if gpu.pcie_replays is not None:
        values["pcie_replays"] = float(gpu.pcie_replays)
    return values


def alert_text(gpu: GpuSnapshot, signal: str, trend: Trend) -> str:
    hours = trend.hours or 0.0
    return (
        f"schedule maintenance: GPU {gpu.index} ({gpu.uuid or '?'}) is predicted to reach {trend.limit:g} "
        f"{NAMES[signal]} within {hours:.1f} hours (confidence {shown_confidence(trend.confidence)}; "
        f"{trend.level:g} now, {trend.rate_per_hour:.3g} an hour and accelerating)"
    )


class MaintenanceWatch:
    """GPU key -> its counter samples (mirrored in the journal) and the trend of each signal."""

    def __init__(self, config: Config, journal: Journal, book: MarkBook) -> None:
        self.config = config
        self.journal = journal
        self.book = book
        self._samples: dict[str, dict[str, list[tuple[float, float]]]] = {}  # loaded from the journal
        self.trends: dict[str, dict[str, Trend]] = {}

    def apply_config(self, config: Config) -> None:
        self.config = config

    def views(self) -> dict[str, dict[str, object]]:
        """GPU key -> signal -> its trend, as status shows it (with whether it alerts)."""
        predict = self.config.gpu.predict
        return {
            key: {signal: {**t.view(), "alert": t.alerts(predict)} for signal, t in trends.items()}
            for key, trends in self.trends.items()
        }

    def observe(self, reading: GpuReading, now: float) -> None:
        """Sample the GPUs that are due, judge their trends, alert on a new episode."""
        predict = self.config.gpu.predict
        if not predict.enabled:
            self.trends.clear()
            return
        for gpu in reading.gpus:
            if gpu.health != GpuHealth.OK or gpu.uuid is None:
                continue
            key = gpu_key(gpu)
            samples = self._loaded(key, now)
            last = max((s[-1][0] for s in samples.values() if s), default=None)
            if last is not None and reading.at - last < predict.sample_interval:
                continue
            values = counters(gpu)
            if not values:
                continue
            keep = reading.at - predict.window
            self.journal.add_counter_samples(key, reading.at, values, keep_since=keep)
            for signal, value in values.items():
                history = [s for s in samples.get(signal, []) if s[0] >= keep]
                history.append((reading.at, value))
                samples[signal] = history
            self._judge(gpu, key, len(reading.gpus), now)

    def _loaded(self, key: str, now: float) -> dict[str, list[tuple[float, float]]]:
        if key not in self._samples:
            self._samples[key] = self.journal.counter_samples(key, since=now - self.config.gpu.predict.window)
        return self._samples[key]

    def _judge(self, gpu: GpuSnapshot, key: str, gpu_count: int, now: float) -> None:
        predict = self.config.gpu.predict
        trends = {
            signal: judge(history, limit=predict.limits[signal], config=predict)
            for signal, history in self._samples[key].items()
            if signal in SIGNALS
        }
        self.trends[key] = trends
        for signal, trend in trends.items():
            episode = f"predict_alert:{key}:{signal}"
            open_since = self.journal.get_meta(episode)
            if open_since is not None and trend.acceleration < EPISODE_END:
                self.journal.delete_meta(episode)
                logger.bind(gpu=key).info("GPU {} {}: no longer accelerating", gpu.index, NAMES[signal])
            elif open_since is None and trend.alerts(predict):
                self.journal.set_meta(episode, repr(now))
                self._alert(gpu, key, signal, trend, gpu_count=gpu_count, now=now)

    def _alert(self, gpu: GpuSnapshot, key: str, signal: str, trend: Trend, *, gpu_count: int, now: float) -> None:
        text = alert_text(gpu, signal, trend)
        detail: Mapping[str, object] = {"signal": signal, **trend.view()}
        if self.config.gpu.predict.evict:
            fraction = self.config.gpu.max_quarantined_fraction
            response = mark_or_alert(
                key,
                gpu.index,
                GpuCondition.DRAINED,
                text,
                self.book.marks,
                gpu_count=gpu_count,
                fraction=fraction,
                now=now,
            )
            if response.mark is not None:
                self.book.apply(response, key, now, fault=ALERT_MAINTENANCE, topic=f"predict-{signal}")
                return
            text = response.alert or f"{text} ({response.note})"
        logger.bind(gpu=key).critical("ALERT: {}", text)
        self.journal.record(EntryKind.ALERT, text, ts=now, gpus=(key,), fault=ALERT_MAINTENANCE, detail=dict(detail))
