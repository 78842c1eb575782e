"""Parsers for the values operators write in labels and config files.

Pure functions. Each raises ValueError with a message that says what is
accepted, so callers can name the culprit (label or key) and the fix.
"""

from __future__ import annotations

import math
import re
import signal

MAX_BYTES = 1024**5  # 1 PiB: anything larger is a typo, not a model
MAX_SECONDS = 365 * 24 * 3600.0
_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
    "gib": 1024**3,
    "t": 1024**4,
    "tb": 1024**4,
    "tib": 1024**4,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {None: 1.0, "s": 1.0, "ms": 0.001, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_bool(text: str) -> bool:
    """Case-insensitive true/yes/1/on or false/no/0/off (docker-autoheal #153)."""
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError("expected true/yes/1/on or false/no/0/off")


def parse_bytes(text: str | int | float) -> int:
    """Sizes as Docker writes them: 1536m, 4g, 4GiB, or plain bytes."""
    if isinstance(text, bool):
        raise ValueError("expected a size such as 4g, 1536m or 4GiB")
    if isinstance(text, (int, float)):
        if not 0 <= text <= MAX_BYTES or (isinstance(text, float) and not math.isfinite(text)):
            raise ValueError("expected a size >= 0 and below 1 PiB")
        return int(text)
    match = _SIZE_RE.match(text)
    if not match or match.group(2).lower() not in _SIZE_UNITS or len(match.group(1)) > 30:
        raise ValueError("expected a size such as 4g, 1536m or 4GiB")
    size = float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
    if size > MAX_BYTES:
        raise ValueError("expected a size below 1 PiB")
    return int(size)


def parse_duration(text: str | int | float) -> float:
    """Seconds: 120, 120s, 2m, 500ms, 1h, 7d."""
    if isinstance(text, bool):
        raise ValueError("expected seconds such as 120, 120s, 2m or 500ms")
    if isinstance(text, (int, float)):
        if not 0 <= text <= MAX_SECONDS or (isinstance(text, float) and not math.isfinite(text)):
            raise ValueError("expected a duration >= 0 and below one year")
        return float(text)
    match = _DURATION_RE.match(text)
    if not match or len(match.group(1)) > 30:
        raise ValueError("expected seconds such as 120, 120s, 2m or 500ms")
    seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds > MAX_SECONDS:
        raise ValueError("expected a duration below one year")
    return seconds


def format_bytes(size: int) -> str:
    """Human-readable size for log lines and status (binary units)."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def parse_signal(text: str | None) -> int | None:
    """A container's StopSignal as the engine stores it ("SIGKILL", "KILL", "9") to its number; None if unknown.

    None (and anything unreadable, e.g. "SIGRTMIN+3") means "not known": callers then treat the
    stop signal as the engine's default, SIGTERM.
    """
    if not text:
        return None
    value = text.strip().upper()
    if value.isdigit():
        return int(value)
    name = value if value.startswith("SIG") else "SIG" + value
    found = getattr(signal.Signals, name, None) if name.isidentifier() else None
    return int(found) if found is not None else None
