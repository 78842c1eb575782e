"""The trend of a GPU error counter, and when it reaches its limit. Pure.

Predictive maintenance (`maintenance_watch`) keeps (time, value) samples of three cumulative
counters per GPU: correctable ECC errors, remapped rows and PCIe replays. This module judges one
counter's samples:

- The counter is turned into rates: the increase between two samples over the time between them.
  A counter that goes down was reset (a driver reload zeroes the volatile ECC count; a reboot the
  replay counter): the value after the reset is what accumulated since, never a negative rate.
- Rates are fitted with a weighted least-squares line, rate = a + b * t (weights: the interval's
  length, so a gap while the watchdog was down counts as one long interval, not as many). Fitting
  the rates, not the cumulative count, keeps the residuals independent: a quadratic fit to a random
  walk finds "curvature" in plain noise.
- flat: the mean rate is not significantly above zero (a t-test at `confidence`); accelerating: the
  slope b is significantly above zero (one-sided t-test on b, from the residuals, at `confidence`)
  AND the rates rise by rank too (Spearman's correlation of rate with time, one-sided, at
  `confidence`: one big burst of errors late in the window can tip the least-squares slope, not the
  ranks; in bench/ecc_trend.py the t-test alone raised a false alarm on a bursty steady history)
  AND the fitted rate at the latest sample is at least `min_growth` times the rate at the window's
  start (a slope that is "significant" but small beside the rate is not worth an alert); linear or
  noisy otherwise: noisy when the counts scatter around the line more than `NOISY_DISPERSION` times
  what errors arriving independently at that rate would (a Poisson count's variance is its mean;
  bursts of errors are far above it, a steady counter read at whole numbers is below).
- The prediction: hours until the counter reaches its limit, integrating the fitted rate (constant
  for linear and noisy, growing for accelerating); None when flat; 0 when already there.

The time unit is the second; the caller passes the samples and reads no clock here.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

SIGNALS = ("ecc_corrected", "remapped_rows", "pcie_replays")
NOISY_DISPERSION = 4.0  # residual variance over a Poisson count's: above this, the rate is noisy

# The count at which each signal's trend is "at its limit" (gpu.predict.limits); README: why these.
DEFAULT_LIMITS: Mapping[str, float] = MappingProxyType(
    {"ecc_corrected": 1000.0, "remapped_rows": 60.0, "pcie_replays": 10000.0}
)


@dataclass(frozen=True)
class PredictConfig:
    """The `gpu.predict` section: predictive maintenance from counter trends."""

    enabled: bool = True
    window: float = 7 * 86400.0  # s: samples older than this are pruned and not fitted
    sample_interval: float = 600.0  # s: at most one sample per GPU this often (kept in the journal)
    min_samples: int = 288  # fewer samples in the window: no verdict yet (288: two days at the default interval)
    confidence: float = 0.999  # one-sided t-test level for "rising" and "accelerating" (judged at every sample)
    min_growth: float = 2.0  # accelerating: the fitted rate now >= this x the rate at the window's start
    horizon_hours: float = 168.0  # alert only when the limit is predicted within this many hours
    limits: Mapping[str, float] = field(default_factory=lambda: DEFAULT_LIMITS)
    evict: bool = False  # opt-in: an alerting prediction also marks the GPU drained (within the cap)


class TrendVerdict(StrEnum):
    INSUFFICIENT = "insufficient"  # fewer than min_samples samples
    FLAT = "flat"
    LINEAR = "linear"
    NOISY = "noisy"
    ACCELERATING = "accelerating"


@dataclass(frozen=True)
class Trend:
    """One counter's verdict, its confidence, and the hours until it reaches `limit` (None: never)."""

    verdict: TrendVerdict
    confidence: float  # of the verdict: rising (linear/noisy), not rising (flat), accelerating
    acceleration: float  # one-sided confidence that the rate grows, the lower of the t and rank tests
    samples: int
    level: float  # the counter at the latest sample, resets carried over
    rate_per_hour: float  # the fitted rate at the latest sample
    limit: float
    hours: float | None

    def alerts(self, config: PredictConfig) -> bool:
        """Accelerating with enough confidence and predicted to reach the limit within the horizon."""
        return (
            self.verdict == TrendVerdict.ACCELERATING
            and self.confidence >= config.confidence
            and self.hours is not None
            and self.hours <= config.horizon_hours
        )

    def view(self) -> dict[str, object]:
        return {
            "verdict": self.verdict.value,
            "confidence": round(self.confidence, 4),
            "acceleration": round(self.acceleration, 4),
            "samples": self.samples,
            "level": self.level,
            "rate_per_hour": round(self.rate_per_hour, 3),
            "limit": self.limit,
            "predicted_hours": None if self.hours is None else round(self.hours, 2),
        }


def shown_confidence(confidence: float) -> str:
    """Three decimals, and never "1.000": a test gives near-certainty, not certainty."""
    return f"{confidence:.3f}" if confidence < 0.9995 else ">0.999"


def judge(samples: Sequence[tuple[float, float]], *, limit: float, config: PredictConfig) -> Trend:
    """The trend of one counter from its (time s, value) samples, in any order."""
    points = sorted({t: v for t, v in samples}.items())
    n = len(points)
    level = _levels(points)

    def trend(verdict: TrendVerdict, confidence: float, acceleration: float, rate: float, hours: float | None) -> Trend:
        return Trend(verdict, confidence, acceleration, n, level, rate * 3600.0, limit, hours)

    if n < max(config.min_samples, 4):
        return trend(TrendVerdict.INSUFFICIENT, 0.0, 0.0, 0.0, _hours_left(level, limit, 0.0, 0.0))
    end = points[-1][0]
    rates = [(((t0 + t1) / 2) - end, _increase(v0, v1) / (t1 - t0), t1 - t0) for (t0, v0), (t1, v1) in _pairs(points)]
    fit = _fit(rates)
    if fit.mean <= 0:
        return trend(TrendVerdict.FLAT, 1.0, 0.0, 0.0, _hours_left(level, limit, 0.0, 0.0))
    rising = _t_cdf(fit.mean_t, len(rates) - 1)
    acceleration = (
        min(_t_cdf(fit.slope_t, len(rates) - 2), _rank_rise([r for _, r, _ in rates])) if fit.slope > 0 else 0.0
    )
    if rising < config.confidence:
        return trend(TrendVerdict.FLAT, 1.0 - rising, acceleration, fit.mean, _hours_left(level, limit, 0.0, 0.0))
    start = rates[0][0] - rates[0][2] / 2  # the window's start, relative to the latest sample
    rate_now, rate_start = fit.intercept, fit.intercept + fit.slope * start
    grown = rate_now >= config.min_growth * max(rate_start, 0.0)
    if acceleration >= config.confidence and grown:
        return trend(
            TrendVerdict.ACCELERATING,
            acceleration,
            acceleration,
            rate_now,
            _hours_left(level, limit, rate_now, fit.slope),
        )
    verdict = TrendVerdict.NOISY if fit.dispersion > NOISY_DISPERSION else TrendVerdict.LINEAR
    return trend(verdict, rising, acceleration, fit.mean, _hours_left(level, limit, fit.mean, 0.0))


def _pairs(points: Sequence[tuple[float, float]]) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    return list(itertools.pairwise(points))


def _increase(before: float, after: float) -> float:
    """What the counter gained; a drop is a reset, and the value after it is what accumulated since."""
    return after - before if after >= before else after


def _levels(points: Sequence[tuple[float, float]]) -> float:
    """The counter at the latest sample with resets carried over (0 without samples)."""
    if not points:
        return 0.0
    return points[0][1] + sum(_increase(v0, v1) for (_, v0), (_, v1) in _pairs(points))


@dataclass(frozen=True)
class _Fit:
    mean: float  # weighted mean rate (total increase / total time)
    mean_t: float  # t statistic of the mean rate against 0
    intercept: float  # the fitted rate at the latest sample (t = 0)
    slope: float  # rate per s
    slope_t: float
    dispersion: float  # the residuals' variance over a Poisson count's (1: errors arriving independently)


def _fit(rates: Sequence[tuple[float, float, float]]) -> _Fit:
    """Weighted least squares of rate on time; (mid time, rate, weight) per interval."""
    weight = sum(w for _, _, w in rates)
    mean = sum(r * w for _, r, w in rates) / weight
    mid = sum(x * w for x, _, w in rates) / weight
    sxx = sum(w * (x - mid) ** 2 for x, _, w in rates)
    sxy = sum(w * (x - mid) * (r - mean) for x, r, w in rates)
    slope = sxy / sxx if sxx > 0 else 0.0
    intercept = mean - slope * mid
    m = len(rates)
    around_mean = sum(w * (r - mean) ** 2 for _, r, w in rates)
    residual = sum(w * (r - intercept - slope * x) ** 2 for x, r, w in rates)
    mean_se = math.sqrt(around_mean / (m - 1) / weight)
    slope_se = math.sqrt(residual / (m - 2) / sxx) if sxx > 0 else 0.0
    return _Fit(
        mean=mean,
        mean_t=_ratio(mean, mean_se, scale=abs(mean)),
        intercept=intercept,
        slope=slope,
        slope_t=_ratio(slope, slope_se, scale=abs(mean) / max(math.sqrt(sxx / weight), 1e-12)),
        dispersion=residual / (m * mean) if mean > 0 else 0.0,
    )


def _rank_rise(rates: Sequence[float]) -> float:
    """One-sided confidence that rates rise with time, by Spearman's rank correlation (ties averaged)."""
    n = len(rates)
    ranked = _ranks(rates)
    mean = (n + 1) / 2.0  # of 1..n, and of the averaged ranks too
    cov = sum((i + 1 - mean) * (r - mean) for i, r in enumerate(ranked))
    spread = sum((r - mean) ** 2 for r in ranked)
    if spread <= 0 or n < 3:
        return 0.0
    rho = cov / math.sqrt(spread * (n * n - 1) * n / 12.0)
    if rho >= 1.0:
        return 1.0
    return _t_cdf(rho * math.sqrt((n - 2) / (1.0 - rho * rho)), n - 2)


def _ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, equal values sharing their average rank."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for k in range(start, end + 1):
            ranks[order[k]] = (start + end) / 2.0 + 1.0
        start = end + 1
    return ranks


def _ratio(value: float, se: float, *, scale: float) -> float:
    """value / se; a perfect fit (se 0) is infinitely sure of a value that is not ~0 beside `scale`."""
    if se > 1e-12 * max(scale, 1e-300):
        return value / se
    if abs(value) <= 1e-9 * scale:
        return 0.0
    return math.inf if value > 0 else -math.inf


def _hours_left(level: float, limit: float, rate: float, growth: float) -> float | None:
    """Hours until level + rate h + growth h^2 / 2 reaches limit (h in s); None when it never does."""
    if level >= limit:
        return 0.0
    gap = limit - level
    if growth > 0:
        seconds = (-rate + math.sqrt(rate * rate + 2 * growth * gap)) / growth
    elif rate > 0:
        seconds = gap / rate
    else:
        return None
    return seconds / 3600.0


def _t_cdf(t: float, df: int) -> float:
    """P(T <= t) for Student's t with df degrees of freedom (through the regularized incomplete beta)."""
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    if df < 1:
        return 0.5
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta I_x(a, b) (continued fraction, modified Lentz)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - _betainc(b, a, 1.0 - x)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 300):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < 1e-14:
            break
    return front * result / a
