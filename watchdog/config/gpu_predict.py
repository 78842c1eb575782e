"""The `gpu.predict` section: predictive maintenance from GPU counter trends (watchdog/gpu/counter_trend).

Every bad value is one line naming the key and the fix; a window too short for `min_samples` at
`sample_interval` is refused too (it would never give a verdict). Pure.
"""

from __future__ import annotations

from dataclasses import fields, replace
from types import MappingProxyType
from typing import Any

from watchdog.config.fields import _bool, _check_keys, _int, _number, _positive_seconds, _section, shown
from watchdog.config.model import ConfigError
from watchdog.gpu.counter_trend import DEFAULT_LIMITS, SIGNALS, PredictConfig


def parse_predict(path: str, value: Any) -> PredictConfig:
    data = _section(path, value)
    _check_keys(path, data, [f.name for f in fields(PredictConfig)])
    values: dict[str, Any] = {}
    for key, item in data.items():
        where = f"{path}.{key}"
        if key in ("enabled", "evict"):
            values[key] = _bool(where, item)
        elif key in ("window", "sample_interval"):
            values[key] = _positive_seconds(where, item)
        elif key == "min_samples":
            values[key] = _int(where, item, 4)
        elif key == "confidence":
            values[key] = _number(where, item, 0.5, 0.999999)
        elif key == "min_growth":
            values[key] = _number(where, item, 1.0, 1000.0)
        elif key == "horizon_hours":
            values[key] = _number(where, item, 0.001, 1e6)
        elif key == "limits":
            values[key] = _limits(where, item)
    config = replace(PredictConfig(), **values)
    fits = int(config.window // config.sample_interval) + 1
    if fits < config.min_samples:
        raise ConfigError(
            f"config: {path}.window={config.window:g}s holds {fits} samples at sample_interval "
            f"{config.sample_interval:g}s, fewer than min_samples {config.min_samples}: "
            "raise window or lower min_samples"
        )
    return config


def _limits(path: str, value: Any) -> MappingProxyType[str, float]:
    """Overrides on the default limits: {signal: count}; an unknown signal is an error naming them."""
    merged = dict(DEFAULT_LIMITS)
    for signal, limit in _section(path, value).items():
        if signal not in SIGNALS:
            raise ConfigError(f"config: {path}: unknown signal {shown(signal)}; known: {', '.join(SIGNALS)}")
        merged[signal] = _number(f"{path}.{signal}", limit, 1.0, 1e12)
    return MappingProxyType(merged)
