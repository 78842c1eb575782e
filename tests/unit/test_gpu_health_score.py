"""The health score per GPU (watchdog/gpu/health_score) and its config section (gpu.health)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watchdog.config import Config, ConfigError, parse_config
from watchdog.gpu.health_score import (
    ClassedXid,
    HealthConfig,
    HealthScore,
    classed_xids,
    score_gpu,
    temperature_factor,
)
from watchdog.gpu.readings import GpuReading, GpuSnapshot, NvmlState
from watchdog.gpu.xid import default_table
from watchdog.model import XidEvent

NOW = 10_000.0
UUID = "GPU-a3e8d1c2-7b64-4f0e-8d21-000000000200"

# A healthy data-centre GPU: every signal monitored, nothing wrong.
HEALTHY = GpuSnapshot(
    index=0,
    uuid=UUID,
    bus_id="00000000:18:00.0",
    temperature=40,
    temperature_slowdown=90,
    temperature_shutdown=95,
    clock_event_reasons=0x1,
    ecc_uncorrected=0,
    ecc_corrected=0,
    ecc_uncorrected_aggregate=0,
    retired_pages=0,
    retired_pages_single_bit=0,
    retired_pages_pending=False,
    remapped_rows_pending=False,
    remapped_rows_correctable=0,
    remapped_rows_uncorrectable=0,
    remapped_rows_failed=False,
    pcie_replays=0,
)
# A consumer card: only the temperature answers, no thresholds.
CONSUMER = GpuSnapshot(index=0, uuid=UUID, temperature=52)


def earlier(gpu: GpuSnapshot, ago: float) -> GpuReading:
    return GpuReading(NvmlState.OK, NOW - ago, 0.01, (gpu,))


def factor(score: HealthScore, name: str) -> float:
    return next(c.factor for c in score.contributions if c.name == name)


def evidence(score: HealthScore, name: str) -> str:
    return next(c.evidence for c in score.contributions if c.name == name)


def test_a_healthy_gpu_scores_one_with_every_signal_monitored() -> None:
    score = score_gpu(HEALTHY, NOW, history=[earlier(HEALTHY, 60)])
    assert score.score == 1.0
    assert score.unmonitored == ()
    assert {c.name for c in score.contributions} == {
        "xid",
        "uncorrectable ECC",
        "correctable ECC",
        "retired pages",
        "remapped rows",
        "temperature",
        "clock events",
        "PCIe replays",
    }
    assert score.summary() == "1.00"


def test_not_supported_fields_are_unmonitored_never_a_penalty() -> None:
    score = score_gpu(CONSUMER, NOW)
    assert score.score == 1.0
    assert set(score.unmonitored) == {
        "uncorrectable ECC",
        "correctable ECC rate",
        "retired pages",
        "remapped rows",
        "temperature",
        "clock events",
        "PCIe replays",
    }
    assert [c.name for c in score.contributions] == ["xid"]


@pytest.mark.parametrize(
    ("change", "name", "expected", "text"),
    [
        ({"ecc_uncorrected": 2}, "uncorrectable ECC", 0.0, "uncorrectable ECC: 2 volatile errors -> 0.0"),
        (
            {"ecc_uncorrected": 1, "ecc_uncorrected_aggregate": 3},
            "uncorrectable ECC",
            0.0,
            "uncorrectable ECC: 1 volatile error (3 over its life) -> 0.0",
        ),
        ({"temperature": 86}, "temperature", 0.7, "temperature 86 C, slowdown at 90 C, shutdown at 95 C -> 0.7"),
        ({"temperature": 90}, "temperature", 0.5, "temperature 90 C, slowdown at 90 C, shutdown at 95 C -> 0.5"),
        ({"temperature": 95}, "temperature", 0.0, "temperature 95 C, slowdown at 90 C, shutdown at 95 C -> 0.0"),
        ({"temperature": 80}, "temperature", 1.0, "temperature 80 C, slowdown at 90 C, shutdown at 95 C -> 1.0"),
        ({"clock_event_reasons": 0x8}, "clock events", 0.5, "clock events: hw-slowdown -> 0.5"),
        (
            {"clock_event_reasons": 0xC8},
            "clock events",
            0.5,
            "clock events: hw-slowdown, hw-thermal-slowdown, hw-power-brake-slowdown -> 0.5",
        ),
        ({"clock_event_reasons": 0x20}, "clock events", 0.9, "clock events: sw-thermal-slowdown -> 0.9"),
        (
            {"clock_event_reasons": 0x5},
            "clock events",
            1.0,
            "clock events: none that slow the GPU (gpu-idle, sw-power-cap) -> 1.0",
        ),
        (
            {"retired_pages": 2, "retired_pages_single_bit": 30, "retired_pages_pending": True},
            "retired pages",
            0.25,
            "retired pages: 2 double-bit, 30 single-bit, pending -> 0.25",
        ),
        (
            {"remapped_rows_uncorrectable": 8, "remapped_rows_correctable": 2},
            "remapped rows",
            0.5,
            "remapped rows: 8 uncorrectable, 2 correctable -> 0.5",
        ),
        (
            {"remapped_rows_uncorrectable": 0, "remapped_rows_pending": True},
            "remapped rows",
            0.5,
            "remapped rows: 0 uncorrectable, 0 correctable, pending -> 0.5",
        ),
        (
            {"remapped_rows_uncorrectable": 512, "remapped_rows_failed": True},
            "remapped rows",
            0.0,
            "remapped rows: 512 uncorrectable, 0 correctable, remap failed -> 0.0",
        ),
    ],
)
def test_each_contribution_with_its_evidence(change: dict, name: str, expected: float, text: str) -> None:
    score = score_gpu(replace(HEALTHY, **change), NOW)
    assert factor(score, name) == pytest.approx(expected)
    assert evidence(score, name) == text
    assert score.score == pytest.approx(expected)  # every other contribution is 1


def test_rates_come_from_the_earliest_reading_in_the_window() -> None:
    history = [
        earlier(replace(HEALTHY, pcie_replays=0, ecc_corrected=0), 120),  # the base: 2 minutes ago
        earlier(replace(HEALTHY, pcie_replays=30, ecc_corrected=5), 60),
        earlier(replace(HEALTHY, pcie_replays=0, ecc_corrected=0), 5000),  # outside the 600 s window
    ]
    score = score_gpu(replace(HEALTHY, pcie_replays=20, ecc_corrected=40), NOW, history=history)
    assert evidence(score, "PCIe replays") == "PCIe replays: +10/min replays -> 0.5"
    assert evidence(score, "correctable ECC") == "correctable ECC: +20/min correctable errors -> 0.33"
    assert score.score == pytest.approx(0.5 * 10 / 30)


def test_a_rate_without_an_earlier_reading_is_no_penalty_and_says_so() -> None:
    score = score_gpu(replace(HEALTHY, pcie_replays=10_000, ecc_corrected=10_000), NOW)
    assert score.score == 1.0
    assert evidence(score, "PCIe replays") == "PCIe replays: no earlier reading yet -> 1.0"


def test_a_counter_that_went_down_counts_from_zero() -> None:
    history = [earlier(replace(HEALTHY, ecc_corrected=1000), 60)]  # the driver reloaded since
    score = score_gpu(replace(HEALTHY, ecc_corrected=10), NOW, history=history)
    assert evidence(score, "correctable ECC") == "correctable ECC: +10/min correctable errors -> 0.5"


def test_history_of_another_gpu_is_not_a_base() -> None:
    other = replace(HEALTHY, index=1, uuid="GPU-other", pcie_replays=0)
    score = score_gpu(replace(HEALTHY, pcie_replays=500), NOW, history=[earlier(other, 60)])
    assert factor(score, "PCIe replays") == 1.0


def test_xids_by_class_in_the_window() -> None:
    xids = [
        ClassedXid(NOW - 100, 48, "reset-gpu"),
        ClassedXid(NOW - 50, 48, "reset-gpu"),
        ClassedXid(NOW - 10, 13, "restart-container"),
        ClassedXid(NOW - 7200, 79, "quarantine"),  # outside the hour
    ]
    score = score_gpu(HEALTHY, NOW, xids=xids)
    assert factor(score, "xid") == pytest.approx(0.5 * 0.5 * 0.9)
    assert evidence(score, "xid") == "Xid: 2 reset-gpu (48), 1 restart-container (13) in the last 3600 s -> 0.23"
    assert evidence(score_gpu(HEALTHY, NOW), "xid") == "Xid: none in the last 3600 s -> 1.0"


def test_classed_xids_match_the_gpu_and_take_the_table_class() -> None:
    table = default_table()
    events = [
        XidEvent(NOW, 79, gpu_uuid=UUID),
        XidEvent(NOW, 79, gpu_uuid="GPU-other"),
        XidEvent(NOW, 48, bus_id="0000:18:00"),  # from the kernel log: by bus
        XidEvent(NOW, 48, gpu_index=0),
        XidEvent(NOW, 48, gpu_index=1),
    ]
    got = classed_xids(HEALTHY, events, table)
    assert [(x.xid, x.klass) for x in got] == [
        (79, table.rule(79).action.value),
        (48, table.rule(48).action.value),
        (48, table.rule(48).action.value),
    ]


def test_contributions_multiply() -> None:
    gpu = replace(HEALTHY, temperature=86, clock_event_reasons=0x8)
    assert score_gpu(gpu, NOW).score == pytest.approx(0.7 * 0.5)


def test_thresholds_are_configurable() -> None:
    config = HealthConfig(slowdown_factor=0.9, temperature_margin=4, clock_event_factors={"hw-slowdown": 0.1})
    gpu = replace(HEALTHY, temperature=86, clock_event_reasons=0x8)
    score = score_gpu(gpu, NOW, config=config)
    assert factor(score, "temperature") == 1.0
    assert factor(score, "clock events") == pytest.approx(0.1)
    assert score_gpu(
        replace(HEALTHY, ecc_uncorrected=1), NOW, config=HealthConfig(ecc_uncorrected_factor=0.3)
    ).score == (pytest.approx(0.3))


def test_temperature_with_only_one_threshold() -> None:
    config = HealthConfig()
    assert temperature_factor(93, 90, None, config) == 0.5  # past slowdown, no shutdown known
    assert temperature_factor(90, None, 95, config) == pytest.approx(0.5)  # margin ramps to 0 at shutdown
    assert temperature_factor(95, None, 95, config) == 0.0
    assert temperature_factor(99, None, None, config) == 1.0


def test_a_temperature_without_thresholds_is_unmonitored() -> None:
    score = score_gpu(replace(HEALTHY, temperature=99, temperature_slowdown=None, temperature_shutdown=None), NOW)
    assert "temperature" in score.unmonitored and score.score == 1.0


SIGNALS = st.fixed_dictionaries(
    {
        "temperature": st.none() | st.integers(0, 120),
        "clock_event_reasons": st.none() | st.integers(0, 0x1FF),
        "ecc_uncorrected": st.none() | st.integers(0, 10),
        "ecc_corrected": st.none() | st.integers(0, 10_000),
        "retired_pages": st.none() | st.integers(0, 200),
        "retired_pages_single_bit": st.none() | st.integers(0, 200),
        "retired_pages_pending": st.none() | st.booleans(),
        "remapped_rows_uncorrectable": st.none() | st.integers(0, 600),
        "remapped_rows_pending": st.none() | st.booleans(),
        "remapped_rows_failed": st.none() | st.booleans(),
        "pcie_replays": st.none() | st.integers(0, 10_000),
    }
)


@settings(max_examples=200, deadline=None)
@given(SIGNALS, st.integers(0, 3))
def test_the_score_is_in_0_1_and_is_the_product(signals: dict, xid_count: int) -> None:
    gpu = replace(HEALTHY, **signals)
    xids = [ClassedXid(NOW - 1, 48, "reset-gpu")] * xid_count
    score = score_gpu(gpu, NOW, history=[earlier(HEALTHY, 60)], xids=xids)
    assert 0.0 <= score.score <= 1.0
    product = 1.0
    for c in score.contributions:
        assert 0.0 <= c.factor <= 1.0 and " -> " in c.evidence
        product *= c.factor
    assert score.score == pytest.approx(product)
    monitored = {c.name for c in score.contributions}
    assert not monitored & set(score.unmonitored)


@settings(max_examples=200, deadline=None)
@given(
    SIGNALS,
    st.sampled_from(
        [
            "ecc_uncorrected",
            "ecc_corrected",
            "retired_pages",
            "retired_pages_single_bit",
            "remapped_rows_uncorrectable",
            "pcie_replays",
            "temperature",
        ]
    ),
    st.integers(1, 50),
)
def test_the_score_never_rises_when_a_penalty_grows(signals: dict, key: str, more: int) -> None:
    gpu = replace(HEALTHY, **signals)
    if getattr(gpu, key) is None:
        gpu = replace(gpu, **{key: 0})
    worse = replace(gpu, **{key: getattr(gpu, key) + more})
    history = [earlier(HEALTHY, 60)]
    assert score_gpu(worse, NOW, history=history).score <= score_gpu(gpu, NOW, history=history).score + 1e-12


@settings(max_examples=100, deadline=None)
@given(SIGNALS, st.sampled_from(["retired_pages_pending", "remapped_rows_pending", "remapped_rows_failed"]))
def test_a_pending_or_failed_flag_never_raises_the_score(signals: dict, key: str) -> None:
    gpu = replace(HEALTHY, **signals)
    off, on = replace(gpu, **{key: False}), replace(gpu, **{key: True})
    assert score_gpu(on, NOW).score <= score_gpu(off, NOW).score


@settings(max_examples=200, deadline=None)
@given(SIGNALS)
def test_not_supported_is_never_worse_than_a_healthy_value(signals: dict) -> None:
    """A signal the GPU does not support (None) never scores below the same GPU reporting it healthy."""
    gpu = replace(HEALTHY, **signals)
    for key, value in signals.items():
        if value is None:
            reported = replace(gpu, **{key: getattr(HEALTHY, key)})
            assert score_gpu(gpu, NOW).score >= score_gpu(reported, NOW).score - 1e-12


# ---------------------------------------------------------------- config


def test_gpu_health_defaults() -> None:
    assert Config().gpu.health == HealthConfig()
    assert parse_config({"gpu": {"health": None}}).gpu.health == HealthConfig()


def test_gpu_health_keys_parse_and_tables_merge_over_the_defaults() -> None:
    health = parse_config(
        {
            "gpu": {
                "health": {
                    "enabled": False,
                    "xid_window": "30m",
                    "rate_window": 120,
                    "slowdown_factor": 0.7,
                    "pcie_replay_half_rate": 50,
                    "xid_factors": {"alert": 0.5},
                    "clock_event_factors": {"sw-power-cap": 0.95},
                }
            }
        }
    ).gpu.health
    assert not health.enabled and health.xid_window == 1800 and health.rate_window == 120
    assert health.slowdown_factor == 0.7 and health.pcie_replay_half_rate == 50
    assert health.xid_factors["alert"] == 0.5 and health.xid_factors["reset-gpu"] == 0.5
    assert health.clock_event_factors["sw-power-cap"] == 0.95 and health.clock_event_factors["hw-slowdown"] == 0.5


@pytest.mark.parametrize(
    ("health", "message"),
    [
        ({"slowdown_factor": 1.5}, "config: gpu.health.slowdown_factor=1.5: must be a number from 0.0 to 1.0"),
        ({"pcie_replay_half_rate": 0}, "config: gpu.health.pcie_replay_half_rate=0: must be a number from 0.001"),
        ({"xid_window": "soon"}, "config: gpu.health.xid_window="),
        ({"xid_factors": {"reboot": 0.1}}, "config: gpu.health.xid_factors: unknown name 'reboot'; known: log,"),
        ({"clock_event_factors": {"hw-slowdown": "half"}}, "config: gpu.health.clock_event_factors.hw-slowdown="),
        ({"slowdown": 0.5}, "config: unknown key 'gpu.health.slowdown' (did you mean 'slowdown_factor'?)"),
        ("yes", "config: 'gpu.health' must be a mapping of keys"),
    ],
)
def test_bad_gpu_health_values_are_one_line_errors(health: object, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"gpu": {"health": health}})
    text = str(caught.value)
    assert text.startswith(message) and "\n" not in text


def test_a_tiny_penalty_is_never_shown_as_1_or_0() -> None:
    history = [earlier(replace(HEALTHY, pcie_replays=0), 600)]
    config = HealthConfig(pcie_replay_half_rate=1000)
    tiny = score_gpu(replace(HEALTHY, pcie_replays=1), NOW, history=history, config=config)  # 0.1/min: 0.9999
    assert evidence(tiny, "PCIe replays").endswith("-> >0.99") and tiny.score < 1.0
    huge = score_gpu(replace(HEALTHY, pcie_replays=10**8), NOW, history=history)
    assert evidence(huge, "PCIe replays").endswith("-> <0.01") and huge.score > 0.0


def test_status_json_shows_the_new_fields() -> None:
    from watchdog.gpu.status_view import status_view

    gpu = replace(HEALTHY, pcie_replays=7, ecc_corrected=3, remapped_rows_failed=True)
    reading = GpuReading(NvmlState.OK, NOW, 0.01, (gpu,))
    view = status_view(reading, [], assignments={}, marks={}, xid_counts={}, vram={}, orphans=[], pid_mapping=False)
    row = view["gpus"][0]
    assert (row["pcie_replays"], row["ecc_corrected"], row["remapped_rows_failed"]) == (7, 3, True)
    assert (row["temperature_slowdown"], row["temperature_shutdown"]) == (90, 95)
    assert row["health_score"] is None  # no score passed: none shown
