"""The small value parsers every section shares, and the one way an error shows a value.

Why one module: each parser raises the same kind of ConfigError (`config: PATH=VALUE: fix`),
so a rule about those lines (one line, short) is kept in one place rather than in every
section. Pure: no I/O.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from typing import Any

from watchdog.config.model import ConfigError
from watchdog.units import parse_bool, parse_bytes, parse_duration

SHOWN_LIMIT = 60  # characters of a value or key path an error echoes; the line stays short with its fix


def shown(value: Any, limit: int = SHOWN_LIMIT) -> str:
    """`value` as an error echoes it: its repr on one line, at most `limit` characters.

    Why: an error is one line naming the culprit and the fix. A nested mapping or a pasted
    blob echoed in full buries the fix (the config fuzz test found 400-character lines), so
    long values end in "..." and anything unprintable is escaped.
    """
    try:
        text = repr(value)
    except ValueError:  # an int with more digits than Python converts to text
        text = f"<{type(value).__name__} too long to show>"
    return _cut(_escaped(text), limit)  # repr escapes str, but a type's own repr might not


def shown_path(where: str, limit: int = SHOWN_LIMIT) -> str:
    """A key path as an error names it: as written when short and printable, else escaped and cut.

    Why: keys come from the file too; a line break or a wall of text in one must not break the
    one-line error. No quotes are added (the caller's message quotes the path), and a path made of
    shown parts is not escaped twice.
    """
    return _cut(_escaped(where), limit)


def _escaped(text: str) -> str:
    """Unprintable characters (line breaks, controls) as escapes; the rest, and so an escaped text, unchanged."""
    return text if text.isprintable() else "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _positive_seconds(path: str, value: Any, allow_zero: bool = False) -> float:
    try:
        seconds = parse_duration(value)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"config: {path}={shown(value)}: {exc}") from None
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise ConfigError(f"config: {path}={shown(value)}: must be {'>= 0' if allow_zero else '> 0'} seconds")
    return seconds


def _int(path: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"config: {path}={shown(value)}: must be a whole number >= {minimum}")
    return value


def _bool(path: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    try:
        return parse_bool(str(value))
    except ValueError:
        raise ConfigError(f"config: {path}={shown(value)}: must be true or false") from None


def _number(path: str, value: Any, minimum: float, maximum: float = 1000.0) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not minimum <= value <= maximum
        or (isinstance(value, float) and not math.isfinite(value))
    ):
        raise ConfigError(f"config: {path}={shown(value)}: must be a number from {minimum} to {maximum}")
    return float(value)


def _size(path: str, value: Any) -> int:
    try:
        return parse_bytes(value)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"config: {path}={shown(value)}: {exc}") from None


def _check_keys(path: str, data: Mapping[str, Any], allowed: list[str]) -> None:
    for key in data:
        if key not in allowed:
            where = shown_path(f"{path}.{key}" if path else str(key))
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f"; known keys: {', '.join(allowed)}"
            raise ConfigError(f"config: unknown key '{where}'{hint}")


def _section(path: str, value: Any) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"config: '{path}' must be a mapping of keys, got {type(value).__name__}")
    return value


def parse_listen(text: str) -> tuple[str, int] | None:
    """`HOST:PORT`, or `off` (None). Raises ValueError with the fix."""
    if text.strip().lower() == "off":
        return None
    host, sep, port = text.rpartition(":")
    digits = port.isascii() and port.isdigit() and len(port.lstrip("0")) <= 5  # int() of others fails or is huge
    if not sep or not host or not digits or not 0 < int(port) < 65536:
        raise ValueError(f"{shown(text)}: expected HOST:PORT such as 127.0.0.1:9108, or off")
    return host.strip("[]"), int(port)


def _listen(path: str, value: Any) -> str:
    if value is False:
        return "off"
    try:
        parse_listen(str(value))
    except ValueError as exc:
        raise ConfigError(f"config: {path}={exc}") from None
    return str(value)
