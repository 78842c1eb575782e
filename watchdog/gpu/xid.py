"""What to do about a GPU Xid error: the classification table and the verdict.

Pure: no clock reads and no I/O, except default_table() reading the packaged
watchdog/gpu/xid_table.yaml. The loop passes the event and the Xid history it keeps;
classify() says which action the table asks for, escalated when the same code
keeps hitting the same GPU (a reset that did not help calls for quarantine).

Loading is strict, as for the config: a wrong table is an XidTableError whose
message is one line naming the source, the key path, the bad value and the fix,
because a GPU action silently ignored or misread is worse than none.
"""

from __future__ import annotations

import difflib
import importlib.resources
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from types import MappingProxyType
from typing import Any

import yaml

from watchdog.gpu.readings import normalise_bus_id
from watchdog.model import XidEvent
from watchdog.units import parse_duration

MAX_XID = 999
DEFAULT_WINDOW = 3600.0
PACKAGED_SOURCE = "watchdog/gpu/xid_table.yaml"


class XidAction(StrEnum):
    """What the watchdog does about an Xid, mildest first."""

    LOG = "log"
    RESTART_CONTAINER = "restart-container"
    ALERT = "alert"
    RESET_GPU = "reset-gpu"
    QUARANTINE = "quarantine"


# Severity order: escalation moves up this ranking, never down.
ACTION_RANK: dict[XidAction, int] = {
    XidAction.LOG: 0,
    XidAction.RESTART_CONTAINER: 1,
    XidAction.ALERT: 2,
    XidAction.RESET_GPU: 3,
    XidAction.QUARANTINE: 4,
}

_ACTIONS = [action.value for action in XidAction]
_TOP_KEYS = ["unknown", "xids"]
_RULE_KEYS = ["action", "description", "escalate_after", "escalate_window", "escalate_to"]


class XidTableError(ValueError):
    """Bad Xid table or override; the message is one line naming the key path and the fix."""


@dataclass(frozen=True)
class XidRule:
    """One code's action, and when repeats on the same GPU escalate it."""

    action: XidAction
    description: str
    escalate_after: int | None = None
    escalate_window: float = DEFAULT_WINDOW
    escalate_to: XidAction | None = None


@dataclass(frozen=True)
class XidTable:
    """Rules by Xid code; `unknown` covers every code the table does not list."""

    rules: Mapping[int, XidRule]
    unknown: XidRule

    def rule(self, xid: int) -> XidRule:
        """The rule for this code, or the unknown rule (new drivers add codes)."""
        return self.rules.get(xid, self.unknown)


@dataclass(frozen=True)
class XidVerdict:
    """The action for one event, with the rule and a human line saying why."""

    event: XidEvent
    action: XidAction
    rule: XidRule
    reason: str
    escalated: bool = False
    repeats: int = 1


# ---------------------------------------------------------------- loading


def _one_line(text: str) -> str:
    return " ".join(text.split())


class _Ctx:
    """The source a table came from, so every error names it."""

    def __init__(self, source: str) -> None:
        self.source = _one_line(source) or "<unnamed>"

    def fail(self, path: str, value: Any, fix: str) -> XidTableError:
        return XidTableError(_one_line(f"xid table {self.source}: {path}={_short_repr(value)}: {fix}"))

    def fail_key(self, path: str, key: Any, allowed: list[str]) -> XidTableError:
        where = f"{path}.{key}" if path else str(key)
        close = difflib.get_close_matches(str(key), allowed, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f"; known keys: {', '.join(allowed)}"
        return XidTableError(_one_line(f"xid table {self.source}: unknown key {_short_repr(where)}{hint}"))


def _short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _mapping(ctx: _Ctx, path: str, value: Any, what: str) -> Mapping[Any, Any]:
    if not isinstance(value, Mapping):
        raise ctx.fail(path or "<top>", value, f"must be a mapping of {what}, got {type(value).__name__}")
    return value


def _check_keys(ctx: _Ctx, path: str, data: Mapping[Any, Any], allowed: list[str]) -> None:
    for key in data:
        if not isinstance(key, str) or key not in allowed:
            raise ctx.fail_key(path, key, allowed)


def _action(ctx: _Ctx, path: str, value: Any) -> XidAction:
    if isinstance(value, str) and value in _ACTIONS:
        return XidAction(value)
    close = difflib.get_close_matches(str(value).lower().replace("_", "-"), _ACTIONS, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise ctx.fail(path, value, f"must be one of {', '.join(_ACTIONS)}{hint}")


def _xid_key(ctx: _Ctx, path: str, key: Any) -> int:
    """Xid codes as YAML gives them: ints, or digit strings from JSON or env."""
    if isinstance(key, int) and not isinstance(key, bool):
        code = key
    elif isinstance(key, str) and key.strip().isascii() and key.strip().isdigit() and len(key.strip()) <= 6:
        code = int(key.strip())
    else:
        code = -1
    if not 0 <= code <= MAX_XID:
        raise XidTableError(
            _one_line(
                f"xid table {ctx.source}: {path} key {_short_repr(key)}: "
                f"must be an Xid code, a whole number from 0 to {MAX_XID} (e.g. 48)"
            )
        )
    return code


def _parse_rule(ctx: _Ctx, path: str, data: Any, inherit: XidRule | None = None) -> XidRule:
    """One rule mapping; a bare action string is shorthand for {action: ...}."""
    if isinstance(data, str):
        data = {"action": data}
    rule = _mapping(ctx, path, data, f"rule keys ({', '.join(_RULE_KEYS)})")
    _check_keys(ctx, path, rule, _RULE_KEYS)
    if "action" not in rule:
        raise ctx.fail(path, dict(rule), f"missing key 'action': set it to one of {', '.join(_ACTIONS)}")
    action = _action(ctx, f"{path}.action", rule["action"])

    description = rule.get("description", inherit.description if inherit is not None else "")
    if not isinstance(description, str):
        raise ctx.fail(f"{path}.description", description, "must be text (quote it in YAML)")

    after_raw = rule.get("escalate_after")
    if after_raw is None:
        for key in ("escalate_to", "escalate_window"):
            if rule.get(key) is not None:
                raise ctx.fail(
                    f"{path}.{key}", rule[key], "needs escalate_after (how many repeats escalate, e.g. 3); add it"
                )
        return XidRule(action=action, description=description)

    if isinstance(after_raw, bool) or not isinstance(after_raw, int) or after_raw < 1:
        raise ctx.fail(f"{path}.escalate_after", after_raw, "must be a whole number >= 1 (repeats that escalate)")

    window_raw = rule.get("escalate_window", DEFAULT_WINDOW)
    if not isinstance(window_raw, (str, int, float)):
        raise ctx.fail(f"{path}.escalate_window", window_raw, "must be a duration such as 1h, 30m or 3600")
    try:
        window = parse_duration(window_raw)
    except ValueError as exc:
        raise ctx.fail(f"{path}.escalate_window", window_raw, str(exc)) from None
    if window <= 0:
        raise ctx.fail(f"{path}.escalate_window", window_raw, "must be > 0 seconds, e.g. 1h")

    above = [a.value for a in XidAction if ACTION_RANK[a] > ACTION_RANK[action]]
    if not above:
        raise ctx.fail(
            f"{path}.escalate_after",
            after_raw,
            f"action '{action}' is already the strongest; remove the escalate_ keys",
        )
    if rule.get("escalate_to") is None:
        raise ctx.fail(
            f"{path}.escalate_to", None, f"required with escalate_after: one of {', '.join(above)} (above '{action}')"
        )
    escalate_to = _action(ctx, f"{path}.escalate_to", rule["escalate_to"])
    if ACTION_RANK[escalate_to] <= ACTION_RANK[action]:
        raise ctx.fail(
            f"{path}.escalate_to", rule["escalate_to"], f"must rank above action '{action}': one of {', '.join(above)}"
        )
    return XidRule(
        action=action,
        description=description,
        escalate_after=after_raw,
        escalate_window=window,
        escalate_to=escalate_to,
    )


def _parse_rules(
    ctx: _Ctx, path: str, data: Mapping[Any, Any], base: Mapping[int, XidRule] | None = None
) -> dict[int, XidRule]:
    rules: dict[int, XidRule] = {}
    for key, value in data.items():
        code = _xid_key(ctx, path or "<top>", key)
        where = f"{path}.{code}" if path else str(code)
        if code in rules:
            raise ctx.fail(where, value, f"Xid {code} is given twice (as {key!r} too); keep one")
        rules[code] = _parse_rule(ctx, where, value, inherit=(base or {}).get(code))
    return rules


def parse_table(data: Any, source: str) -> XidTable:
    """A whole table: {unknown: rule, xids: {code: rule}}; unknown defaults to alert."""
    ctx = _Ctx(source)
    top = _mapping(ctx, "", data, "keys (unknown, xids)")
    _check_keys(ctx, "", top, _TOP_KEYS)
    unknown = XidRule(action=XidAction.ALERT, description="Xid not in this table")
    if top.get("unknown") is not None:
        unknown = _parse_rule(ctx, "unknown", top["unknown"])
    xids = top.get("xids")
    rules = {} if xids is None else _parse_rules(ctx, "xids", _mapping(ctx, "xids", xids, "Xid code: rule"))
    return XidTable(rules=MappingProxyType(rules), unknown=unknown)


def default_table() -> XidTable:
    """The shipped table (watchdog/gpu/xid_table.yaml), read from the installed package."""
    text = importlib.resources.files("watchdog.gpu").joinpath("xid_table.yaml").read_text(encoding="utf-8")
    return parse_table(yaml.safe_load(text), PACKAGED_SOURCE)


def with_overrides(table: XidTable, data: Any, source: str) -> XidTable:
    """The table with the operator's rules for some codes: {code: rule, unknown: rule}.

    Each given rule replaces the table's rule for that code whole; only a missing
    description is kept from the rule it replaces, so reasons stay readable.
    """
    if data is None:
        return table
    ctx = _Ctx(source)
    given = _mapping(ctx, "", data, "Xid code: rule (and optionally unknown: rule)")
    unknown = table.unknown
    codes: dict[Any, Any] = {}
    for key, value in given.items():
        if key == "unknown":
            unknown = _parse_rule(ctx, "unknown", value, inherit=table.unknown)
        elif isinstance(key, str) and not key.strip().isdigit() and difflib.get_close_matches(key, ["unknown"], n=1):
            raise ctx.fail_key("", key, ["unknown"])
        else:
            codes[key] = value
    rules = dict(table.rules)
    rules.update(_parse_rules(ctx, "", codes, base=table.rules))
    return replace(table, rules=MappingProxyType(rules), unknown=unknown)


# ---------------------------------------------------------------- classifying


def _bus(event: XidEvent) -> str | None:
    return normalise_bus_id(event.bus_id) if event.bus_id else None


def same_gpu(a: XidEvent, b: XidEvent) -> bool:
    """By UUID when both have one, else PCI bus id, else index; no common id: not the same."""
    if a.gpu_uuid and b.gpu_uuid:
        return a.gpu_uuid.strip().lower() == b.gpu_uuid.strip().lower()
    bus_a, bus_b = _bus(a), _bus(b)
    if bus_a and bus_b:
        return bus_a == bus_b
    if a.gpu_index is not None and b.gpu_index is not None:
        return a.gpu_index == b.gpu_index
    return False


def count_repeats(event: XidEvent, history: Sequence[XidEvent], window: float) -> int:
    """Distinct events with this code on this GPU in (event.at - window, event.at], this one included.

    Records equal in every field are one event, so passing a history that already
    holds `event` (or holds it twice) does not count it again.
    """
    seen = {event}
    for earlier in history:
        if (
            earlier.xid == event.xid
            and event.at - window < earlier.at <= event.at
            and earlier not in seen
            and same_gpu(earlier, event)
        ):
            seen.add(earlier)
    return len(seen)


def describe_gpu(event: XidEvent) -> str:
    """The GPU as a human reads it: index, else UUID, else PCI bus."""
    if event.gpu_index is not None:
        return f"GPU {event.gpu_index}"
    if event.gpu_uuid:
        return f"GPU {event.gpu_uuid}"
    if event.bus_id:
        return f"GPU at PCI {_bus(event)}"
    return "an unidentified GPU"


def format_window(seconds: float) -> str:
    """1h, 24h, 5m, 90s: the way the table writes windows."""
    for unit, size in (("h", 3600.0), ("m", 60.0)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:g}s"


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th, 11th, 22nd."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def classify(event: XidEvent, table: XidTable, history: Sequence[XidEvent]) -> XidVerdict:
    """The table's action for this event, escalated if it repeats on the same GPU."""
    rule = table.rule(event.xid)
    repeats = count_repeats(event, history, rule.escalate_window)
    head = f"Xid {event.xid} ({rule.description or 'no description'}) on {describe_gpu(event)}"
    if event.pid is not None or event.process:
        head += f", process {event.process or '?'}" + (f" pid {event.pid}" if event.pid is not None else "")
    action = rule.action
    escalated = False
    if (
        rule.escalate_after is not None
        and rule.escalate_to is not None
        and repeats >= rule.escalate_after
        and ACTION_RANK[rule.escalate_to] > ACTION_RANK[rule.action]
    ):
        action, escalated = rule.escalate_to, True
    window = format_window(rule.escalate_window)
    if escalated:
        reason = f"{head}: {ordinal(repeats)} in {window}: escalated from {rule.action} to {action}"
    elif repeats > 1:
        reason = f"{head}: {action} ({ordinal(repeats)} in {window})"
    else:
        reason = f"{head}: {action}"
    return XidVerdict(event=event, action=action, rule=rule, reason=reason, escalated=escalated, repeats=repeats)
