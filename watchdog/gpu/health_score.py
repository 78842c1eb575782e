"""A health score per GPU, 0 (unusable) to 1 (healthy), from what NVML and the Xid stream showed. Pure.

The score is the product of named contributions, each a factor in [0, 1] with the evidence that set
it, so one bad signal is enough to pull a GPU down and two bad signals pull it further:

- Xids by class: each Xid in `xid_window` multiplies by the factor of its class (the action the Xid
  table gives it: log, restart-container, alert, reset-gpu, quarantine).
- uncorrectable ECC: any volatile (since the driver loaded) uncorrectable error sets
  `ecc_uncorrected_factor`.
- correctable-ECC rate and PCIe replay rate (per minute, over `rate_window` of earlier readings):
  half / (half + rate), so the factor is 0.5 at the configured half rate and falls smoothly beyond.
- retired pages and remapped rows: half / (half + count) on the pages retired (double- and
  single-bit) or the rows remapped for uncorrectable errors; a pending retirement or remap (it takes
  effect at the next driver reload or GPU reset) also sets `pending_factor`; a failed remap (no
  spare rows left) sets `remap_failure_factor`.
- temperature against the GPU's own thresholds: 1 up to `temperature_margin` C below slowdown, then
  linear down to `slowdown_factor` at slowdown, then linear to 0 at shutdown.
- clock events: the lowest factor among the active reasons in `clock_event_factors` (HW slowdown,
  HW thermal slowdown, power brake; software caps and idle are not faults).

A field the GPU does not support (None in the reading) is unmonitored: listed, never a penalty. A
rate needs an earlier reading; until one exists the factor is 1 and the evidence says so. The
caller passes the history and `now`; this module reads no clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from watchdog.gpu.readings import CLOCK_EVENT_REASONS, GpuHealth, GpuReading, GpuSnapshot, normalise_bus_id
from watchdog.gpu.xid import XidTable
from watchdog.model import XidEvent

XID_CLASSES = ("log", "restart-container", "alert", "reset-gpu", "quarantine")  # the Xid table's actions

DEFAULT_XID_FACTORS: Mapping[str, float] = MappingProxyType(
    {"log": 1.0, "restart-container": 0.9, "alert": 0.8, "reset-gpu": 0.5, "quarantine": 0.0}
)
DEFAULT_CLOCK_EVENT_FACTORS: Mapping[str, float] = MappingProxyType(
    {"hw-slowdown": 0.5, "hw-thermal-slowdown": 0.5, "hw-power-brake-slowdown": 0.5, "sw-thermal-slowdown": 0.9}
)


@dataclass(frozen=True)
class HealthConfig:
    """The `gpu.health` section: what each signal costs. Factors are in [0, 1]; 1 means no penalty."""

    enabled: bool = True
    xid_window: float = 3600.0  # s: the Xids that count
    xid_factors: Mapping[str, float] = field(default_factory=lambda: DEFAULT_XID_FACTORS)
    ecc_uncorrected_factor: float = 0.0  # any volatile uncorrectable ECC error
    ecc_corrected_half_rate: float = 10.0  # correctable ECC errors per minute that give 0.5
    rate_window: float = 600.0  # s: the earliest reading in this window is the base of a rate
    retired_pages_half: float = 32.0  # retired pages that give 0.5
    remapped_rows_half: float = 8.0  # rows remapped for uncorrectable errors that give 0.5
    pending_factor: float = 0.5  # a page retirement or row remap waiting for a reload or reset
    remap_failure_factor: float = 0.0  # a row remap failed: no spare rows left
    temperature_margin: float = 10.0  # C below the slowdown threshold where the penalty starts
    slowdown_factor: float = 0.5  # at the slowdown threshold; linear to 0 at shutdown
    clock_event_factors: Mapping[str, float] = field(default_factory=lambda: DEFAULT_CLOCK_EVENT_FACTORS)
    pcie_replay_half_rate: float = 10.0  # PCIe replays per minute that give 0.5
    traffic: bool = True  # a deployment's share of its group's requests follows its GPU's score
    evict_below: float = 0.1  # a score under this gets no traffic (within the group's replica floor)
    readmit_above: float = 0.15  # an evicted GPU's deployments come back at this score or better


@dataclass(frozen=True)
class ClassedXid:
    """An Xid on this GPU, with the class (the Xid table's action) it was given."""

    at: float
    xid: int
    klass: str


@dataclass(frozen=True)
class Contribution:
    name: str
    factor: float
    evidence: str


@dataclass(frozen=True)
class HealthScore:
    """A GPU's score, the contributions that made it, and the signals it could not watch."""

    index: int
    uuid: str | None
    score: float
    contributions: tuple[Contribution, ...]
    unmonitored: tuple[str, ...]

    def view(self) -> dict[str, object]:
        """As status.json shows it."""
        return {
            "score": round(self.score, 3),
            "contributions": [
                {"name": c.name, "factor": round(c.factor, 3), "evidence": c.evidence} for c in self.contributions
            ],
            "unmonitored": list(self.unmonitored),
        }

    def summary(self) -> str:
        """The contributions that cost something, e.g. "0.25: uncorrectable ECC: 2 volatile errors -> 0.0"."""
        hits = [c.evidence for c in self.contributions if c.factor < 1.0]
        return f"{self.score:.2f}" + (": " + "; ".join(hits) if hits else "")


def _clamp(value: float) -> float:
    return min(1.0, max(0.0, value))


def _half(value: float, half: float) -> float:
    """half / (half + value): 1 at 0, 0.5 at half, falling towards 0; half <= 0 means any value is 0."""
    if value <= 0:
        return 1.0
    return half / (half + value) if half > 0 else 0.0


def _f(factor: float) -> str:
    """0.5, 0.25, 1.0, 0.0; a factor just under 1 is ">0.99", never a "1" that costs something."""
    if factor in (0.0, 1.0):
        return f"{factor:.1f}"
    text = f"{factor:.2f}".rstrip("0").rstrip(".")
    return ">0.99" if text == "1" else "<0.01" if text == "0" else text


def same_gpu(a: GpuSnapshot, b: GpuSnapshot) -> bool:
    """One GPU in two readings: by UUID when both have one, else by index."""
    return a.uuid == b.uuid if a.uuid and b.uuid else a.index == b.index


def _rate(gpu: GpuSnapshot, now: float, history: Sequence[GpuReading], attr: str, window: float) -> float | None:
    """Per minute, from the earliest reading within window that has the field; None without one.

    A counter that went down (the driver reloaded and reset its volatile counts) counts from 0.
    """
    current = getattr(gpu, attr)
    for reading in sorted(history, key=lambda r: r.at):
        if not now - window <= reading.at < now:
            continue
        for old in reading.gpus:
            previous = getattr(old, attr)
            if previous is None or not same_gpu(old, gpu):
                continue
            delta = current - previous if current >= previous else current
            return float(delta) * 60.0 / (now - reading.at)
    return None


def _rate_contribution(name: str, rate: float | None, half: float, what: str) -> Contribution:
    if rate is None:
        return Contribution(name, 1.0, f"{name}: no earlier reading yet -> 1.0")
    factor = _half(rate, half)
    return Contribution(name, factor, f"{name}: +{rate:.3g}/min {what} -> {_f(factor)}")


def _xids(xids: Sequence[ClassedXid], now: float, config: HealthConfig) -> Contribution:
    recent = [x for x in xids if now - config.xid_window <= x.at <= now]
    factor = 1.0
    by_class: dict[str, list[int]] = {}
    for x in recent:
        factor *= _clamp(config.xid_factors.get(x.klass, 1.0))
        by_class.setdefault(x.klass, []).append(x.xid)
    if not recent:
        return Contribution("xid", 1.0, f"Xid: none in the last {config.xid_window:g} s -> 1.0")
    parts = ", ".join(
        f"{len(codes)} {klass} ({', '.join(map(str, sorted(set(codes))))})" for klass, codes in sorted(by_class.items())
    )
    return Contribution("xid", factor, f"Xid: {parts} in the last {config.xid_window:g} s -> {_f(factor)}")


def _retired(gpu: GpuSnapshot, config: HealthConfig) -> Contribution | None:
    counts = [n for n in (gpu.retired_pages, gpu.retired_pages_single_bit) if n is not None]
    if not counts and gpu.retired_pages_pending is None:
        return None
    total = sum(counts)
    factor = _half(total, config.retired_pages_half)
    pending = bool(gpu.retired_pages_pending)
    if pending:
        factor *= _clamp(config.pending_factor)
    detail = f"{gpu.retired_pages or 0} double-bit, {gpu.retired_pages_single_bit or 0} single-bit"
    return Contribution(
        "retired pages", factor, f"retired pages: {detail}{', pending' if pending else ''} -> {_f(factor)}"
    )


def _remapped(gpu: GpuSnapshot, config: HealthConfig) -> Contribution | None:
    if gpu.remapped_rows_uncorrectable is None and gpu.remapped_rows_pending is None:
        return None
    rows = gpu.remapped_rows_uncorrectable or 0
    factor = _half(rows, config.remapped_rows_half)
    notes = [f"{rows} uncorrectable, {gpu.remapped_rows_correctable or 0} correctable"]
    if gpu.remapped_rows_pending:
        factor *= _clamp(config.pending_factor)
        notes.append("pending")
    if gpu.remapped_rows_failed:
        factor *= _clamp(config.remap_failure_factor)
        notes.append("remap failed")
    return Contribution("remapped rows", factor, f"remapped rows: {', '.join(notes)} -> {_f(factor)}")


def temperature_factor(temp: float, slowdown: float | None, shutdown: float | None, config: HealthConfig) -> float:
    """1 below slowdown - margin, linear to slowdown_factor at slowdown, linear to 0 at shutdown."""
    knee = slowdown if slowdown is not None else shutdown
    if knee is None:
        return 1.0
    at_knee = _clamp(config.slowdown_factor) if slowdown is not None else 0.0
    start = knee - max(config.temperature_margin, 0.0)
    if temp <= start:
        return 1.0
    if temp < knee:
        return 1.0 - (1.0 - at_knee) * (temp - start) / (knee - start)
    if shutdown is not None and shutdown > knee:
        return _clamp(at_knee * (shutdown - temp) / (shutdown - knee))
    return at_knee if shutdown is None or temp < shutdown else 0.0


def _temperature(gpu: GpuSnapshot, config: HealthConfig) -> Contribution | None:
    slowdown, shutdown = gpu.temperature_slowdown, gpu.temperature_shutdown
    if gpu.temperature is None or (slowdown is None and shutdown is None):
        return None
    factor = temperature_factor(gpu.temperature, slowdown, shutdown, config)
    limits = ", ".join(
        f"{name} at {value} C" for name, value in (("slowdown", slowdown), ("shutdown", shutdown)) if value is not None
    )
    return Contribution("temperature", factor, f"temperature {gpu.temperature} C, {limits} -> {_f(factor)}")


def _clock_events(gpu: GpuSnapshot, config: HealthConfig) -> Contribution | None:
    if gpu.clock_event_reasons is None:
        return None
    active = [name for bit, name in CLOCK_EVENT_REASONS.items() if gpu.clock_event_reasons & bit]
    costly = [name for name in active if name in config.clock_event_factors]
    factor = min((_clamp(config.clock_event_factors[name]) for name in costly), default=1.0)
    shown = ", ".join(costly) if costly else "none that slow the GPU" + (f" ({', '.join(active)})" if active else "")
    return Contribution("clock events", factor, f"clock events: {shown} -> {_f(factor)}")


def score_gpu(
    gpu: GpuSnapshot,
    now: float,
    *,
    history: Sequence[GpuReading] = (),
    xids: Sequence[ClassedXid] = (),
    config: HealthConfig | None = None,
) -> HealthScore:
    """The GPU's score now; history: earlier readings (any order), xids: this GPU's classed Xids."""
    config = config or HealthConfig()
    if gpu.health == GpuHealth.LOST:
        lost = Contribution("lost", 0.0, f"{gpu.error or 'GPU is lost'} -> 0.0")
        return HealthScore(gpu.index, gpu.uuid, 0.0, (lost,), ())
    contributions: list[Contribution] = [_xids(xids, now, config)]
    unmonitored: list[str] = []

    def add(name: str, contribution: Contribution | None) -> None:
        if contribution is None:
            unmonitored.append(name)
        else:
            contributions.append(contribution)

    if gpu.ecc_uncorrected is None:
        unmonitored.append("uncorrectable ECC")
    else:
        factor = _clamp(config.ecc_uncorrected_factor) if gpu.ecc_uncorrected > 0 else 1.0
        life = f" ({gpu.ecc_uncorrected_aggregate} over its life)" if gpu.ecc_uncorrected_aggregate else ""
        errors = "error" if gpu.ecc_uncorrected == 1 else "errors"
        contributions.append(
            Contribution(
                "uncorrectable ECC",
                factor,
                f"uncorrectable ECC: {gpu.ecc_uncorrected} volatile {errors}{life} -> {_f(factor)}",
            )
        )
    if gpu.ecc_corrected is None:
        unmonitored.append("correctable ECC rate")
    else:
        rate = _rate(gpu, now, history, "ecc_corrected", config.rate_window)
        contributions.append(
            _rate_contribution("correctable ECC", rate, config.ecc_corrected_half_rate, "correctable errors")
        )
    add("retired pages", _retired(gpu, config))
    add("remapped rows", _remapped(gpu, config))
    add("temperature", _temperature(gpu, config))
    add("clock events", _clock_events(gpu, config))
    if gpu.pcie_replays is None:
        unmonitored.append("PCIe replays")
    else:
        rate = _rate(gpu, now, history, "pcie_replays", config.rate_window)
        contributions.append(_rate_contribution("PCIe replays", rate, config.pcie_replay_half_rate, "replays"))
    score = 1.0
    for contribution in contributions:
        score *= _clamp(contribution.factor)
    return HealthScore(gpu.index, gpu.uuid, _clamp(score), tuple(contributions), tuple(unmonitored))


def classed_xids(gpu: GpuSnapshot, events: Sequence[XidEvent], table: XidTable) -> list[ClassedXid]:
    """The Xid events on this GPU (by UUID, else bus ID, else index), each with its class from the table."""
    return [ClassedXid(e.at, e.xid, table.rule(e.xid).action.value) for e in events if _on(gpu, e)]


def _on(gpu: GpuSnapshot, event: XidEvent) -> bool:
    if event.gpu_uuid and gpu.uuid:
        return event.gpu_uuid == gpu.uuid
    if event.bus_id and gpu.bus_id:
        return normalise_bus_id(event.bus_id) == normalise_bus_id(gpu.bus_id)
    return event.gpu_index is not None and event.gpu_index == gpu.index
