"""The pure counter trend: flat, linear, accelerating, noisy, too few samples, resets; `gpu.predict` parsing."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from watchdog.config import ConfigError, parse_config
from watchdog.gpu.counter_trend import DEFAULT_LIMITS, PredictConfig, Trend, TrendVerdict, _t_cdf, judge

HOUR = 3600.0
STEP = 600.0  # the default sample interval
CONFIG = PredictConfig()


def history(count: Callable[[float], float], hours: float = 72.0) -> list[tuple[float, float]]:
    """A sample every 10 minutes of a counter that is count(hours since the start)."""
    return [(i * STEP, float(int(count(i * STEP / HOUR)))) for i in range(int(hours * HOUR / STEP))]


def bursty(seed: int, hours: float = 72.0, per_hour: float = 6.0) -> list[tuple[float, float]]:
    """Noisy but steady: bursts of errors at random moments, the same mean rate throughout."""
    rng = random.Random(seed)
    level, samples = 0.0, []
    for i in range(int(hours * HOUR / STEP)):
        if rng.random() < 0.15:
            level += rng.expovariate(0.15 / (per_hour * STEP / HOUR))
        samples.append((i * STEP, float(int(level))))
    return samples


def judged(samples: list[tuple[float, float]], limit: float = 1000.0) -> Trend:
    return judge(samples, limit=limit, config=CONFIG)


def test_a_counter_that_does_not_move_is_flat_and_never_reaches_its_limit() -> None:
    trend = judged(history(lambda h: 7))
    assert trend.verdict == TrendVerdict.FLAT and trend.hours is None and not trend.alerts(CONFIG)
    assert trend.level == 7


def test_a_steady_rate_is_linear_and_predicts_the_limit_at_that_rate() -> None:
    trend = judged(history(lambda h: 2 * h))  # 2 an hour
    assert trend.verdict == TrendVerdict.LINEAR and trend.confidence > 0.99
    assert trend.rate_per_hour == pytest.approx(2.0, rel=0.05)
    assert trend.hours == pytest.approx((1000 - trend.level) / 2, rel=0.05)
    assert not trend.alerts(CONFIG)


def test_an_accelerating_rate_alerts_with_the_time_its_quadratic_reaches_the_limit() -> None:
    trend = judged(history(lambda h: 0.1 * h * h))  # reaches 1000 at 100 h; the samples end near 72 h
    assert trend.verdict == TrendVerdict.ACCELERATING and trend.confidence > 0.999
    assert trend.hours == pytest.approx(100 - 72, abs=1.0)
    assert trend.alerts(CONFIG)


def test_an_acceleration_beyond_the_horizon_is_watched_not_alerted() -> None:
    trend = judge(history(lambda h: 0.1 * h * h), limit=1e6, config=PredictConfig(horizon_hours=24))
    assert trend.verdict == TrendVerdict.ACCELERATING and trend.hours is not None and trend.hours > 24
    assert not trend.alerts(PredictConfig(horizon_hours=24))


@pytest.mark.parametrize("seed", range(20))
def test_bursty_noise_at_a_steady_rate_is_never_accelerating(seed: int) -> None:
    trend = judged(bursty(seed))
    assert trend.verdict in (TrendVerdict.NOISY, TrendVerdict.LINEAR), trend
    assert not trend.alerts(CONFIG)


def test_rare_bursts_are_noisy() -> None:
    assert judged(bursty(3, per_hour=6.0)).verdict == TrendVerdict.NOISY


def test_a_few_stray_errors_are_flat() -> None:
    samples = history(lambda h: 0)
    samples = [(t, 1.0 if t >= 20 * HOUR else 0.0) for t, _ in samples]  # one error in three days
    trend = judged(samples)
    assert trend.verdict == TrendVerdict.FLAT and not trend.alerts(CONFIG)


def test_too_few_samples_give_no_verdict() -> None:
    trend = judged(history(lambda h: 0.1 * h * h)[:23])
    assert trend.verdict == TrendVerdict.INSUFFICIENT and trend.samples == 23 and not trend.alerts(CONFIG)


def test_a_counter_reset_after_a_reboot_is_not_a_fall_or_a_surge() -> None:
    steady = history(lambda h: 2 * h)
    reset_at = len(steady) // 2
    base = steady[reset_at - 1][1]
    samples = steady[:reset_at] + [(t, v - base) for t, v in steady[reset_at:]]  # zeroed by a driver reload
    trend = judged(samples)
    assert trend.verdict == TrendVerdict.LINEAR and not trend.alerts(CONFIG)
    assert trend.level == pytest.approx(steady[-1][1], abs=3)  # the reset is carried over
    assert trend.rate_per_hour == pytest.approx(2.0, rel=0.05)


def test_a_counter_already_past_its_limit_is_due_now() -> None:
    trend = judged(history(lambda h: 2000 + 0.1 * h * h))
    assert trend.hours == 0.0 and trend.alerts(CONFIG)


def test_a_gap_while_the_watchdog_was_down_counts_as_one_long_interval() -> None:
    samples = history(lambda h: 2 * h, hours=96)
    samples = samples[:150] + samples[350:]  # 33 hours without samples
    assert judged(samples).verdict == TrendVerdict.LINEAR


def test_students_t_matches_its_table() -> None:
    assert _t_cdf(2.228, 10) == pytest.approx(0.975, abs=1e-3)
    assert _t_cdf(-2.228, 10) == pytest.approx(0.025, abs=1e-3)
    assert _t_cdf(2.326, 100_000) == pytest.approx(0.99, abs=1e-3)
    assert _t_cdf(0.0, 5) == pytest.approx(0.5)


def test_gpu_predict_defaults_and_overrides() -> None:
    assert parse_config({}).gpu.predict == PredictConfig()
    predict = parse_config(
        {"gpu": {"predict": {"window": "2d", "sample_interval": "5m", "limits": {"pcie_replays": 500}, "evict": True}}}
    ).gpu.predict
    assert predict.window == 2 * 86400 and predict.sample_interval == 300 and predict.evict
    assert predict.limits == {**DEFAULT_LIMITS, "pcie_replays": 500.0}


@pytest.mark.parametrize(
    ("predict", "message"),
    [
        ({"confidence": 1.5}, "config: gpu.predict.confidence=1.5: must be a number from 0.5 to 0.999999"),
        ({"min_samples": 2}, "config: gpu.predict.min_samples=2: must be a whole number >= 4"),
        ({"window": "soon"}, "config: gpu.predict.window="),
        ({"sample_interval": 0}, "config: gpu.predict.sample_interval=0: must be > 0 seconds"),
        ({"horizon_hours": -1}, "config: gpu.predict.horizon_hours=-1: must be a number from 0.001"),
        ({"min_growth": 0.5}, "config: gpu.predict.min_growth=0.5: must be a number from 1.0"),
        ({"limits": {"xids": 3}}, "config: gpu.predict.limits: unknown signal 'xids'; known: ecc_corrected,"),
        ({"limits": {"ecc_corrected": "many"}}, "config: gpu.predict.limits.ecc_corrected='many': must be a number"),
        ({"evict": "perhaps"}, "config: gpu.predict.evict='perhaps': must be true or false"),
        ({"windw": "1d"}, "config: unknown key 'gpu.predict.windw' (did you mean 'window'?)"),
        ({"window": "1h", "sample_interval": "10m"}, "config: gpu.predict.window=3600s holds 7 samples at"),
        ("yes", "config: 'gpu.predict' must be a mapping of keys"),
    ],
)
def test_bad_gpu_predict_values_are_one_line_errors(predict: object, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"gpu": {"predict": predict}})
    text = str(caught.value)
    assert text.startswith(message) and "\n" not in text
