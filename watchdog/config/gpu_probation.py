"""The `gpu.probation` section: how a released GPU proves itself before it serves again (watchdog/gpu/probation).

Every bad value is one line naming the key and the fix. Pure.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

from watchdog.config.fields import _bool, _check_keys, _int, _positive_seconds, _section
from watchdog.gpu.probation import ProbationConfig


def parse_probation(path: str, value: Any) -> ProbationConfig:
    data = _section(path, value)
    _check_keys(path, data, [f.name for f in fields(ProbationConfig)])
    values: dict[str, Any] = {}
    for key, item in data.items():
        where = f"{path}.{key}"
        if key == "enabled":
            values[key] = _bool(where, item)
        elif key == "canary_failures":
            values[key] = _int(where, item, 1)
        else:
            values[key] = _positive_seconds(where, item, allow_zero=key == "window")
    return replace(ProbationConfig(), **values)
