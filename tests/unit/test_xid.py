"""watchdog.gpu.xid: the shipped Xid table, escalation on repeats, overrides, strict loading."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from watchdog.gpu import xid as xid_module
from watchdog.gpu.xid import (
    ACTION_RANK,
    XidAction,
    XidRule,
    XidTable,
    XidTableError,
    XidVerdict,
    classify,
    count_repeats,
    default_table,
    format_window,
    ordinal,
    parse_table,
    same_gpu,
    with_overrides,
)
from watchdog.model import XidEvent

HOUR = 3600.0
DAY = 24 * HOUR
A = XidAction
SRC = "config gpu.xid_overrides"


def ev(xid: int, at: float = 10_000.0, **gpu: Any) -> XidEvent:
    """An event on GPU 0 unless told otherwise."""
    if not {"gpu_index", "gpu_uuid", "bus_id"} & gpu.keys():
        gpu["gpu_index"] = 0
    return XidEvent(at=at, xid=xid, **gpu)


# ---------------------------------------------------------------- the shipped table

DEFAULTS: list[tuple[int, XidAction, int | None, float, XidAction | None]] = [
    (13, A.RESTART_CONTAINER, 3, HOUR, A.RESET_GPU),
    (31, A.RESTART_CONTAINER, 3, HOUR, A.RESET_GPU),
    (43, A.RESTART_CONTAINER, 3, HOUR, A.RESET_GPU),
    (68, A.RESTART_CONTAINER, 3, HOUR, A.RESET_GPU),
    (45, A.LOG, None, HOUR, None),
    (48, A.RESET_GPU, 2, DAY, A.QUARANTINE),
    (64, A.RESET_GPU, 2, DAY, A.QUARANTINE),
    (95, A.RESET_GPU, 2, DAY, A.QUARANTINE),
    (119, A.RESET_GPU, 2, DAY, A.QUARANTINE),
    (120, A.RESET_GPU, 2, DAY, A.QUARANTINE),
    (63, A.LOG, 5, HOUR, A.ALERT),
    (92, A.LOG, 5, HOUR, A.ALERT),
    (94, A.LOG, 5, HOUR, A.ALERT),
    (74, A.ALERT, None, HOUR, None),
    (79, A.QUARANTINE, None, HOUR, None),
]


@pytest.mark.parametrize(("code", "action", "after", "window", "to"), DEFAULTS)
def test_every_shipped_code_maps_to_its_documented_action_and_escalation(
    code: int, action: XidAction, after: int | None, window: float, to: XidAction | None
) -> None:
    rule = default_table().rule(code)
    assert (rule.action, rule.escalate_after, rule.escalate_window, rule.escalate_to) == (action, after, window, to)
    assert rule.description and rule is not default_table().unknown


def test_the_shipped_table_lists_exactly_the_documented_codes() -> None:
    assert sorted(default_table().rules) == sorted(code for code, *_ in DEFAULTS)


@pytest.mark.parametrize("code", [0, 1, 8, 62, 999, 154])
def test_codes_not_in_the_table_alert(code: int) -> None:
    table = default_table()
    assert table.rule(code) is table.unknown
    assert table.unknown == XidRule(action=A.ALERT, description="Xid not in this table")
    assert classify(ev(code), table, []).action is A.ALERT


def test_the_table_ships_inside_the_package_and_parses_as_written() -> None:
    text = resources.files("watchdog.gpu").joinpath("xid_table.yaml").read_text(encoding="utf-8")
    assert parse_table(yaml.safe_load(text), "test") == default_table()
    assert "NVSentinel" in text and "gpud" in text  # says where the defaults come from


def test_action_rank_orders_the_actions_mildest_first() -> None:
    assert sorted(ACTION_RANK, key=ACTION_RANK.__getitem__) == [
        A.LOG,
        A.RESTART_CONTAINER,
        A.ALERT,
        A.RESET_GPU,
        A.QUARANTINE,
    ]
    assert [a.value for a in XidAction] == ["log", "restart-container", "alert", "reset-gpu", "quarantine"]


def test_the_table_cannot_be_changed_in_place() -> None:
    table = default_table()
    with pytest.raises(TypeError):
        table.rules[13] = XidRule(A.LOG, "x")  # type: ignore[index]


# ---------------------------------------------------------------- escalation


def test_a_single_event_takes_the_rules_action_with_a_readable_reason() -> None:
    verdict = classify(ev(48, gpu_index=1), default_table(), [])
    assert isinstance(verdict, XidVerdict)
    assert (verdict.action, verdict.escalated, verdict.repeats) == (A.RESET_GPU, False, 1)
    assert verdict.reason == "Xid 48 (Double-bit ECC error, an uncorrectable memory error) on GPU 1: reset-gpu"
    assert verdict.rule == default_table().rule(48)


@pytest.mark.parametrize(
    ("code", "needed", "window", "before", "after"),
    [
        (13, 3, HOUR, A.RESTART_CONTAINER, A.RESET_GPU),
        (31, 3, HOUR, A.RESTART_CONTAINER, A.RESET_GPU),
        (48, 2, DAY, A.RESET_GPU, A.QUARANTINE),
        (120, 2, DAY, A.RESET_GPU, A.QUARANTINE),
        (63, 5, HOUR, A.LOG, A.ALERT),
        (94, 5, HOUR, A.LOG, A.ALERT),
    ],
)
def test_repeats_on_one_gpu_within_the_window_escalate_at_exactly_escalate_after(
    code: int, needed: int, window: float, before: XidAction, after: XidAction
) -> None:
    table = default_table()
    step = window / needed  # all of them inside one window
    events = [ev(code, at=1_000_000.0 + i * step) for i in range(needed)]
    for i, event in enumerate(events):
        verdict = classify(event, table, events[:i])
        assert verdict.repeats == i + 1
        assert verdict.action is (after if i + 1 >= needed else before)
        assert verdict.escalated is (i + 1 >= needed)
    last = classify(events[-1], table, events)
    assert f"{ordinal(needed)} in {format_window(window)}: escalated from {before} to {after}" in last.reason


def test_the_third_13_in_an_hour_reads_as_escalated() -> None:
    events = [ev(13, at=t) for t in (0.0, 600.0, 1200.0)]
    verdict = classify(events[2], default_table(), events[:2])
    assert verdict.reason == (
        "Xid 13 (Graphics engine exception) on GPU 0: 3rd in 1h: escalated from restart-container to reset-gpu"
    )
    second = classify(events[1], default_table(), events[:1])
    assert second.reason == "Xid 13 (Graphics engine exception) on GPU 0: restart-container (2nd in 1h)"


def test_window_edges_an_event_exactly_one_window_old_has_left_it() -> None:
    table = default_table()
    now = 50_000.0
    exactly_old = [ev(13, at=now - HOUR), ev(13, at=now - 10)]
    assert classify(ev(13, at=now), table, exactly_old).repeats == 2
    assert classify(ev(13, at=now), table, exactly_old).action is A.RESTART_CONTAINER
    just_inside = [ev(13, at=now - HOUR + 0.001), ev(13, at=now - 10)]
    verdict = classify(ev(13, at=now), table, just_inside)
    assert (verdict.repeats, verdict.action, verdict.escalated) == (3, A.RESET_GPU, True)


def test_events_after_this_one_do_not_count() -> None:
    later = [ev(48, at=200.0), ev(48, at=300.0)]
    verdict = classify(ev(48, at=100.0), default_table(), later)
    assert (verdict.repeats, verdict.action) == (1, A.RESET_GPU)


def test_48_a_day_and_a_bit_apart_resets_again_rather_than_quarantining() -> None:
    table = default_table()
    assert classify(ev(48, at=DAY + 1), table, [ev(48, at=0.0)]).action is A.RESET_GPU
    assert classify(ev(48, at=DAY - 1), table, [ev(48, at=0.0)]).action is A.QUARANTINE


@pytest.mark.parametrize(
    ("mine", "other"),
    [
        ({"gpu_index": 0}, {"gpu_index": 1}),
        ({"gpu_uuid": "GPU-aaaa", "gpu_index": 0}, {"gpu_uuid": "GPU-bbbb", "gpu_index": 0}),
        ({"bus_id": "0000:3b:00", "gpu_index": 0}, {"bus_id": "0000:3c:00", "gpu_index": 0}),
    ],
)
def test_the_same_code_on_another_gpu_does_not_count(mine: dict[str, Any], other: dict[str, Any]) -> None:
    history = [XidEvent(at=float(t), xid=13, **other) for t in range(10)]
    verdict = classify(XidEvent(at=20.0, xid=13, **mine), default_table(), history)
    assert (verdict.repeats, verdict.action, verdict.escalated) == (1, A.RESTART_CONTAINER, False)
    assert classify(XidEvent(at=20.0, xid=13, **other), default_table(), history).escalated


def test_other_codes_on_the_same_gpu_do_not_count() -> None:
    history = [ev(code, at=float(i)) for i, code in enumerate([31, 43, 68, 45, 31, 43, 48])]
    verdict = classify(ev(13, at=100.0), default_table(), history)
    assert (verdict.repeats, verdict.action) == (1, A.RESTART_CONTAINER)


def test_the_event_itself_in_the_history_counts_once() -> None:
    table = default_table()
    first, second = ev(13, at=0.0), ev(13, at=10.0)
    verdict = classify(second, table, [first, second, second, first])
    assert (verdict.repeats, verdict.action) == (2, A.RESTART_CONTAINER)
    alone = classify(second, table, [second])
    assert alone.repeats == 1


def test_a_kernel_log_event_and_an_nvml_event_on_the_same_bus_are_the_same_gpu() -> None:
    from_kernel = XidEvent(at=0.0, xid=48, bus_id="0000:3b:00", pid=7, process="python3", source="kernel-log")
    from_nvml = XidEvent(at=60.0, xid=48, gpu_index=2, gpu_uuid="GPU-x", bus_id="00000000:3B:00.0")
    verdict = classify(from_nvml, default_table(), [from_kernel])
    assert (verdict.repeats, verdict.action, verdict.escalated) == (2, A.QUARANTINE, True)


def test_escalation_never_lowers_the_action_even_for_a_hand_built_rule() -> None:
    odd = XidRule(action=A.QUARANTINE, description="odd", escalate_after=1, escalate_to=A.LOG)
    table = XidTable(rules={5: odd}, unknown=XidRule(A.ALERT, "?"))
    verdict = classify(ev(5), table, [ev(5, at=1.0)])
    assert (verdict.action, verdict.escalated) == (A.QUARANTINE, False)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    code=st.sampled_from([c for c, *_ in DEFAULTS] + [7, 500]),
    times=st.lists(st.floats(min_value=0, max_value=3 * DAY, allow_nan=False), max_size=30),
    gpus=st.lists(st.integers(min_value=0, max_value=2), min_size=30, max_size=30),
    codes=st.lists(st.sampled_from([13, 48, 63, 79, 500]), min_size=30, max_size=30),
    now=st.floats(min_value=0, max_value=3 * DAY, allow_nan=False),
)
def test_verdicts_are_never_milder_than_the_rule_and_repeats_are_bounded(
    code: int, times: list[float], gpus: list[int], codes: list[int], now: float
) -> None:
    table = default_table()
    history = [XidEvent(at=t, xid=c, gpu_index=g) for t, g, c in zip(times, gpus, codes, strict=False)]
    event = XidEvent(at=now, xid=code, gpu_index=0)
    verdict = classify(event, table, history)
    rule = table.rule(code)
    assert ACTION_RANK[verdict.action] >= ACTION_RANK[rule.action]
    same = {h for h in history if h.xid == code and h.gpu_index == 0 and now - rule.escalate_window < h.at <= now}
    assert verdict.repeats == len(same | {event})
    assert verdict.escalated == (verdict.action != rule.action)
    assert "\n" not in verdict.reason and verdict.reason.startswith(f"Xid {code} (")


def test_the_reason_names_the_process_when_the_kernel_log_gave_one() -> None:
    event = XidEvent(at=0.0, xid=31, bus_id="0000:3b:00", pid=1234, process="python3", source="kernel-log")
    reason = classify(event, default_table(), []).reason
    assert reason.startswith(
        "Xid 31 ("
    ) and "on GPU at PCI 0000:3b:00, process python3 pid 1234: restart-container" in (reason)


# ---------------------------------------------------------------- same_gpu


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ({"gpu_uuid": "GPU-1", "gpu_index": 0}, {"gpu_uuid": "GPU-1", "gpu_index": 3}, True),  # index reordered
        ({"gpu_uuid": "GPU-1", "bus_id": "0000:3b:00"}, {"gpu_uuid": "GPU-2", "bus_id": "0000:3b:00"}, False),
        ({"gpu_uuid": "gpu-abc"}, {"gpu_uuid": "GPU-ABC"}, True),
        ({"gpu_uuid": "GPU-1", "bus_id": "0000:3b:00"}, {"bus_id": "00000000:3B:00.0"}, True),
        ({"bus_id": "0000:3b:00", "gpu_index": 0}, {"bus_id": "0000:3c:00", "gpu_index": 0}, False),
        ({"gpu_index": 1}, {"gpu_index": 1}, True),
        ({"gpu_index": 1}, {"gpu_index": 2}, False),
        ({"gpu_uuid": "GPU-1"}, {"bus_id": "0000:3b:00"}, False),  # nothing in common: cannot tell
        ({}, {}, False),
    ],
)
def test_same_gpu_prefers_uuid_then_bus_then_index(a: dict[str, Any], b: dict[str, Any], same: bool) -> None:
    left, right = XidEvent(at=0.0, xid=13, **a), XidEvent(at=0.0, xid=13, **b)
    assert same_gpu(left, right) is same
    assert same_gpu(right, left) is same


def test_count_repeats_uses_the_window_it_is_given() -> None:
    history = [ev(13, at=t) for t in (0.0, 50.0, 90.0)]
    assert count_repeats(ev(13, at=100.0), history, 60.0) == 3
    assert count_repeats(ev(13, at=100.0), history, 1000.0) == 4


@pytest.mark.parametrize(("seconds", "text"), [(3600.0, "1h"), (86400.0, "24h"), (300.0, "5m"), (90.0, "90s")])
def test_format_window(seconds: float, text: str) -> None:
    assert format_window(seconds) == text


@pytest.mark.parametrize(("n", "text"), [(1, "1st"), (2, "2nd"), (3, "3rd"), (4, "4th"), (11, "11th"), (22, "22nd")])
def test_ordinal(n: int, text: str) -> None:
    assert ordinal(n) == text


# ---------------------------------------------------------------- overrides


def test_overrides_replace_only_the_codes_given() -> None:
    base = default_table()
    table = with_overrides(base, {13: {"action": "log"}, "74": {"action": "reset-gpu", "description": "NVLink"}}, SRC)
    assert table.rule(13) == XidRule(A.LOG, "Graphics engine exception")  # description kept, escalation gone
    assert table.rule(74) == XidRule(A.RESET_GPU, "NVLink")
    assert {code: table.rule(code) for code in base.rules if code not in (13, 74)} == {
        code: rule for code, rule in base.rules.items() if code not in (13, 74)
    }
    assert base.rule(13).action is A.RESTART_CONTAINER  # the original is untouched


def test_overrides_add_codes_and_change_the_unknown_rule() -> None:
    table = with_overrides(
        default_table(),
        {154: {"action": "reset-gpu", "description": "GPU recovery action changed"}, "unknown": {"action": "log"}},
        SRC,
    )
    assert table.rule(154).action is A.RESET_GPU
    assert table.unknown == XidRule(A.LOG, "Xid not in this table")
    assert classify(ev(7), table, []).action is A.LOG


def test_an_override_may_be_just_the_action_and_may_bring_its_own_escalation() -> None:
    table = with_overrides(
        default_table(),
        {45: "log", 74: {"action": "alert", "escalate_after": 2, "escalate_window": "10m", "escalate_to": "reset-gpu"}},
        SRC,
    )
    assert table.rule(45).action is A.LOG
    assert table.rule(74) == XidRule(A.ALERT, "NVLink error", 2, 600.0, A.RESET_GPU)
    assert classify(ev(74, at=500.0), table, [ev(74, at=0.0)]).action is A.RESET_GPU


@pytest.mark.parametrize("empty", [None, {}])
def test_no_overrides_leave_the_table_as_it_was(empty: Any) -> None:
    assert with_overrides(default_table(), empty, SRC) == default_table()


def test_an_override_error_names_the_source_and_the_code() -> None:
    with pytest.raises(XidTableError) as info:
        with_overrides(default_table(), {48: {"action": "rebot"}}, SRC)
    assert str(info.value) == (
        "xid table config gpu.xid_overrides: 48.action='rebot': "
        "must be one of log, restart-container, alert, reset-gpu, quarantine"
    )


# ---------------------------------------------------------------- validation


def table_with(rule: Any, code: Any = 48) -> dict[str, Any]:
    return {"xids": {code: rule}}


BAD_TABLES: list[tuple[Any, str]] = [
    (table_with({"action": "rebot"}), r"xids\.48\.action='rebot': must be one of log, restart-container, alert, "),
    (
        table_with({"action": "reset_gpu"}),
        r"xids\.48\.action='reset_gpu': must be one of .* \(did you mean 'reset-gpu'",
    ),
    (table_with({"action": None}), r"xids\.48\.action=None: must be one of"),
    (table_with({"description": "x"}), r"xids\.48=\{'description': 'x'\}: missing key 'action': set it to one of"),
    (
        table_with({"action": "log", "escalate_afer": 2}),
        r"unknown key 'xids\.48\.escalate_afer' \(did you mean 'escalate_after'",
    ),
    (table_with({"action": "log", "colour": 2}), r"unknown key 'xids\.48\.colour'; known keys: action, description"),
    (table_with({"action": "log", 5: 2}), r"unknown key 'xids\.48\.5'"),
    ({"xid": {}}, r"unknown key 'xid' \(did you mean 'xids'\?\)"),
    ({"unkown": {"action": "log"}}, r"unknown key 'unkown' \(did you mean 'unknown'\?\)"),
    (table_with({"action": "log"}, code="abc"), r"xids key 'abc': must be an Xid code, a whole number from 0 to 999"),
    (table_with({"action": "log"}, code=-1), r"xids key -1: must be an Xid code"),
    (table_with({"action": "log"}, code=1000), r"xids key 1000: must be an Xid code"),
    (table_with({"action": "log"}, code=True), r"xids key True: must be an Xid code"),
    (table_with({"action": "log"}, code=4.5), r"xids key 4\.5: must be an Xid code"),
    (table_with({"action": "log"}, code="٤٨"), r"must be an Xid code"),
    (
        table_with({"action": "log"}, code="9" * 5000),
        r"xids key '9999.*\.\.\.: must be an Xid code",
    ),  # int() would refuse it
    (table_with({"action": "log"}, code="0001000"), r"xids key '0001000': must be an Xid code"),
    ({"xids": {48: "log", "48": "alert"}}, r"xids\.48='alert': Xid 48 is given twice \(as '48' too\); keep one"),
    (table_with({"action": "log", "description": 5}), r"xids\.48\.description=5: must be text"),
    (table_with(["log"]), r"xids\.48=\['log'\]: must be a mapping of rule keys"),
    (table_with(None), r"xids\.48=None: must be a mapping of rule keys"),
    (
        table_with({"action": "log", "escalate_after": 0, "escalate_to": "alert"}),
        r"xids\.48\.escalate_after=0: must be a whole number >= 1",
    ),
    (
        table_with({"action": "log", "escalate_after": "3", "escalate_to": "alert"}),
        r"escalate_after='3': must be a whole number >= 1",
    ),
    (
        table_with({"action": "log", "escalate_after": True, "escalate_to": "alert"}),
        r"escalate_after=True: must be a whole number",
    ),
    (
        table_with({"action": "log", "escalate_after": 2}),
        r"xids\.48\.escalate_to=None: required with escalate_after: one of restart-container, alert, reset-gpu, "
        r"quarantine \(above 'log'\)",
    ),
    (
        table_with({"action": "log", "escalate_to": "alert"}),
        r"xids\.48\.escalate_to='alert': needs escalate_after .*; add it",
    ),
    (table_with({"action": "log", "escalate_window": "1h"}), r"xids\.48\.escalate_window='1h': needs escalate_after"),
    (
        table_with({"action": "reset-gpu", "escalate_after": 2, "escalate_to": "alert"}),
        r"xids\.48\.escalate_to='alert': must rank above action 'reset-gpu': one of quarantine",
    ),
    (
        table_with({"action": "alert", "escalate_after": 2, "escalate_to": "alert"}),
        r"escalate_to='alert': must rank above action 'alert': one of reset-gpu, quarantine",
    ),
    (
        table_with({"action": "quarantine", "escalate_after": 2, "escalate_to": "quarantine"}),
        r"xids\.48\.escalate_after=2: action 'quarantine' is already the strongest; remove the escalate_ keys",
    ),
    (
        table_with({"action": "log", "escalate_after": 2, "escalate_to": "alrt"}),
        r"escalate_to='alrt': must be one of .* \(did you mean 'alert'\?\)",
    ),
    (
        table_with({"action": "log", "escalate_after": 2, "escalate_to": "alert", "escalate_window": "1 fortnight"}),
        r"escalate_window='1 fortnight': expected seconds such as 120, 120s, 2m or 500ms",
    ),
    (
        table_with({"action": "log", "escalate_after": 2, "escalate_to": "alert", "escalate_window": 0}),
        r"escalate_window=0: must be > 0 seconds",
    ),
    (
        table_with({"action": "log", "escalate_after": 2, "escalate_to": "alert", "escalate_window": -5}),
        r"escalate_window=-5: expected a duration >= 0",
    ),
    (
        table_with({"action": "log", "escalate_after": 2, "escalate_to": "alert", "escalate_window": [1]}),
        r"escalate_window=\[1\]: must be a duration such as 1h",
    ),
    ({"unknown": {"action": "panic"}}, r"unknown\.action='panic': must be one of"),
    ({"xids": ["48"]}, r"xids=\['48'\]: must be a mapping of Xid code: rule, got list"),
    (None, r"<top>=None: must be a mapping of keys \(unknown, xids\), got NoneType"),
    ("xids: {}", r"<top>='xids: \{\}': must be a mapping"),
]


@pytest.mark.parametrize(("data", "match"), BAD_TABLES)
def test_every_bad_table_is_one_line_naming_source_path_and_fix(data: Any, match: str) -> None:
    with pytest.raises(XidTableError, match=match) as info:
        parse_table(data, "/etc/gpu-watchdog/xids.yaml")
    message = str(info.value)
    assert message.startswith("xid table /etc/gpu-watchdog/xids.yaml: ")
    assert "\n" not in message and len(message) < 400


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({48: {"action": "rebot"}}, r"^xid table config gpu\.xid_overrides: 48\.action='rebot': must be one of"),
        ({"unknown": {"action": "nope"}}, r"unknown\.action='nope'"),
        ({"unknwn": {"action": "log"}}, r"unknown key 'unknwn' \(did you mean 'unknown'\?\)"),
        ({"thirteen": {"action": "log"}}, r"<top> key 'thirteen': must be an Xid code, a whole number from 0 to 999"),
        ({13: {"action": "log", "escalate_after": 1}}, r"13\.escalate_to=None: required with escalate_after"),
        ([13], r"<top>=\[13\]: must be a mapping of Xid code: rule \(and optionally unknown: rule\)"),
        ({13: "logg"}, r"13\.action='logg': must be one of .* \(did you mean 'log'\?\)"),
    ],
)
def test_every_bad_override_is_one_line_naming_the_code(data: Any, match: str) -> None:
    with pytest.raises(XidTableError, match=match) as info:
        with_overrides(default_table(), data, SRC)
    assert "\n" not in str(info.value)


def test_a_source_or_value_with_newlines_still_gives_one_line() -> None:
    with pytest.raises(XidTableError) as info:
        parse_table({"xids": {48: {"action": "re\nboot"}}}, "file\nwith newline.yaml")
    assert "\n" not in str(info.value) and "file with newline.yaml" in str(info.value)


def test_a_huge_bad_value_is_shortened_in_the_message() -> None:
    with pytest.raises(XidTableError) as info:
        parse_table({"xids": {48: {"action": "x" * 10_000}}}, "t")
    assert len(str(info.value)) < 300


def test_a_table_without_unknown_or_xids_alerts_on_everything() -> None:
    table = parse_table({}, "t")
    assert table.rules == {} and table.unknown.action is A.ALERT


def test_a_digit_string_code_and_a_numeric_duration_are_accepted() -> None:
    table = parse_table(
        {
            "xids": {
                "48": {"action": "reset-gpu", "escalate_after": 2, "escalate_window": 7200, "escalate_to": "quarantine"}
            }
        },
        "t",
    )
    assert table.rule(48) == XidRule(A.RESET_GPU, "", 2, 7200.0, A.QUARANTINE)


def test_a_code_written_with_leading_zeros_is_that_code() -> None:
    assert parse_table({"xids": {"0048": "log"}}, "t").rule(48).action is A.LOG
    with pytest.raises(XidTableError, match=r"xids\.48=.*given twice"):
        parse_table({"xids": {48: "log", "0048": "log"}}, "t")


def test_the_default_window_is_an_hour() -> None:
    table = parse_table({"xids": {1: {"action": "log", "escalate_after": 2, "escalate_to": "alert"}}}, "t")
    assert table.rule(1).escalate_window == HOUR


# ---------------------------------------------------------------- fuzz

_KEYS = st.one_of(
    st.sampled_from(["xids", "unknown", "action", "description", "escalate_after", "escalate_window", "escalate_to"]),
    st.sampled_from(["13", "48", "-1", "1000", "", " 7 "]),
    st.integers(min_value=-5, max_value=1200),
    st.text(max_size=8),
    st.booleans(),
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([a.value for a in XidAction] + ["1h", "24h", "0", "10m", "1e309", "reset_gpu"]),
    st.text(max_size=20),
)
_YAMLISH = st.recursive(
    _SCALARS,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(_KEYS, children, max_size=5)),
    max_leaves=25,
)
_RULE = st.fixed_dictionaries(
    {"action": st.sampled_from([a.value for a in XidAction])},
    optional={
        "description": st.one_of(st.text(max_size=10), st.integers()),
        "escalate_after": st.one_of(st.integers(min_value=-2, max_value=6), st.text(max_size=3)),
        "escalate_window": st.one_of(st.sampled_from(["1h", "30m", "0", "bad", "5s"]), st.floats(), st.integers()),
        "escalate_to": st.sampled_from([*(a.value for a in XidAction), "nope"]),
    },
)
_TABLE_LIKE = st.fixed_dictionaries(
    {},
    optional={
        "unknown": st.one_of(_RULE, _YAMLISH),
        "xids": st.dictionaries(st.one_of(st.integers(-2, 1001), st.text(max_size=4)), st.one_of(_RULE, _YAMLISH)),
    },
)


def _check_result(result: XidTable) -> None:
    """A parsed table is usable: every escalation ranks above its action and has a positive window."""
    for rule in [*result.rules.values(), result.unknown]:
        assert isinstance(rule.action, XidAction)
        if rule.escalate_after is not None:
            assert rule.escalate_to is not None and ACTION_RANK[rule.escalate_to] > ACTION_RANK[rule.action]
            assert rule.escalate_window > 0 and rule.escalate_after >= 1
    assert all(isinstance(code, int) and 0 <= code <= 999 for code in result.rules)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(_YAMLISH, _TABLE_LIKE))
def test_parse_table_on_arbitrary_data_returns_a_table_or_raises_xid_table_error(data: Any) -> None:
    try:
        result = parse_table(data, "fuzz")
    except XidTableError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("xid table fuzz: ")
    else:
        _check_result(result)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(_YAMLISH, st.dictionaries(st.one_of(_KEYS, st.just("unknown")), st.one_of(_RULE, _YAMLISH))))
def test_with_overrides_on_arbitrary_data_returns_a_table_or_raises_xid_table_error(data: Any) -> None:
    try:
        result = with_overrides(default_table(), data, "fuzz")
    except XidTableError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("xid table fuzz: ")
    else:
        _check_result(result)


# ---------------------------------------------------------------- purity


def test_xid_reads_no_clock_and_does_no_io_beyond_the_packaged_table() -> None:
    tree = ast.parse(Path(xid_module.__file__).read_text(encoding="utf-8"))
    imported = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    imported |= {
        node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    assert imported <= {
        "__future__",
        "difflib",
        "importlib",
        "collections",
        "dataclasses",
        "enum",
        "types",
        "typing",
        "yaml",
        "watchdog",
    }
    called = {node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    assert "open" not in called


def test_importing_xid_pulls_in_no_client_socket_or_database_module() -> None:
    code = "import json, sys; import watchdog.gpu.xid; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True, timeout=60)
    loaded = set(json.loads(out.stdout))
    assert not loaded & {"docker", "httpx", "sqlite3", "socket", "requests", "ssl", "pynvml"}
