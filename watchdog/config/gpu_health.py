"""The `gpu.health` section: what each GPU-health signal costs in the score (watchdog/gpu/health_score).

Factors are numbers from 0 to 1 (1: no penalty); half rates and half counts are where a signal's
factor reaches 0.5; the two factor tables are keyed by Xid class and clock-event reason. Every bad
value is one line naming the key and the fix. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields, replace
from types import MappingProxyType
from typing import Any

from watchdog.config.fields import _bool, _check_keys, _number, _positive_seconds, _section, shown
from watchdog.config.model import ConfigError
from watchdog.gpu.health_score import (
    DEFAULT_CLOCK_EVENT_FACTORS,
    DEFAULT_XID_FACTORS,
    XID_CLASSES,
    HealthConfig,
)
from watchdog.gpu.readings import CLOCK_EVENT_REASONS

_FACTORS = ("ecc_uncorrected_factor", "pending_factor", "remap_failure_factor", "slowdown_factor")
_HALVES = ("ecc_corrected_half_rate", "retired_pages_half", "remapped_rows_half", "pcie_replay_half_rate")


def parse_health(path: str, value: Any) -> HealthConfig:
    data = _section(path, value)
    _check_keys(path, data, [f.name for f in fields(HealthConfig)])
    values: dict[str, Any] = {}
    for key, item in data.items():
        where = f"{path}.{key}"
        if key in ("enabled", "traffic"):
            values[key] = _bool(where, item)
        elif key in ("xid_window", "rate_window"):
            values[key] = _positive_seconds(where, item)
        elif key in _FACTORS:
            values[key] = _number(where, item, 0.0, 1.0)
        elif key in _HALVES:
            values[key] = _number(where, item, 0.001, 1e9)
        elif key in ("evict_below", "readmit_above"):
            values[key] = _number(where, item, 0.0, 1.0)
        elif key == "temperature_margin":
            values[key] = _number(where, item, 0.0, 100.0)
        elif key == "xid_factors":
            values[key] = _table(where, item, DEFAULT_XID_FACTORS, XID_CLASSES)
        elif key == "clock_event_factors":
            values[key] = _table(where, item, DEFAULT_CLOCK_EVENT_FACTORS, tuple(CLOCK_EVENT_REASONS.values()))
    health = replace(HealthConfig(), **values)
    if health.readmit_above < health.evict_below:
        raise ConfigError(
            f"config: {path}.readmit_above ({health.readmit_above:g}) is below {path}.evict_below "
            f"({health.evict_below:g}); set it to evict_below or more"
        )
    return health


def _table(path: str, value: Any, defaults: Mapping[str, float], names: tuple[str, ...]) -> Mapping[str, float]:
    """Overrides on the defaults: {name: factor}; a name outside `names` is an error naming them."""
    data = _section(path, value)
    merged = dict(defaults)
    for name, factor in data.items():
        if name not in names:
            raise ConfigError(f"config: {path}: unknown name {shown(name)}; known: {', '.join(names)}")
        merged[name] = _number(f"{path}.{name}", factor, 0.0, 1.0)
    return MappingProxyType(merged)
