"""The GPU probe against pynvml's real code and the fake NVML driver (tests/fake_nvml)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.fake_nvml.harness import FakeNvml

READ = """
import json, dataclasses
from watchdog.gpu.nvml import GpuProbe
probe = GpuProbe(deadline={deadline})
reading = probe.read()
print(json.dumps(dataclasses.asdict(reading)))
"""


def read(fake: FakeNvml, deadline: float = 2.0, timeout: float = 30) -> dict:
    done = fake.run(READ.format(deadline=deadline), timeout=timeout)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_eight_p106_are_read_with_memory_processes_and_unsupported_fields(fake_nvml: FakeNvml) -> None:
    fake_nvml.use("p106x8")
    reading = read(fake_nvml)
    assert reading["state"] == "ok" and len(reading["gpus"]) == 8
    first = reading["gpus"][0]
    assert first["uuid"].startswith("GPU-") and first["bus_id"] == "00000000:01:00.0"
    assert first["memory_total"] == 6144 * 2**20 and first["memory_used"] == 4000 * 2**20
    assert first["processes"] == [{"pid": 41000, "used_memory": 3900 * 2**20}]
    assert first["temperature"] == 52 and first["health"] == "ok"
    assert "ecc" in first["unsupported"]  # a consumer card: unmonitored, not failed
    assert first["ecc_uncorrected"] is None


def test_a_lost_gpu_is_reported_lost_and_the_others_still_read(fake_nvml: FakeNvml) -> None:
    fake_nvml.use("gpu_lost")
    reading = read(fake_nvml)
    health = {g["index"]: g["health"] for g in reading["gpus"]}
    assert health[3] == "lost"
    assert [i for i, h in health.items() if h != "ok"] == [3]
    assert "GPU is lost" in reading["gpus"][3]["error"]


def test_a_hung_driver_costs_one_deadline_and_then_answers_hung_at_once(fake_nvml: FakeNvml) -> None:
    fake_nvml.use("hung")
    code = """
import json, time
from watchdog.gpu.nvml import GpuProbe
probe = GpuProbe(deadline=0.5)
t0 = time.monotonic(); first = probe.read(); t1 = time.monotonic(); second = probe.read(); t2 = time.monotonic()
print(json.dumps([first.state, t1 - t0, second.state, t2 - t1, second.detail]))
"""
    done = fake_nvml.run(code, timeout=20)
    assert done.returncode == 0, done.stderr
    first, first_wait, second, second_wait, detail = json.loads(done.stdout.splitlines()[-1])
    assert first == "driver-hung" and 0.5 <= first_wait < 1.5
    assert second == "driver-hung" and second_wait < 0.1 and "has not returned" in detail


def test_no_driver_turns_gpu_checks_off(fake_nvml: FakeNvml) -> None:
    fake_nvml.scenario_file.unlink()  # the fake answers like a machine whose driver is not loaded
    assert read(fake_nvml)["state"] == "no-driver"


def test_no_nvml_library_at_all_is_no_driver() -> None:
    done = subprocess.run(
        [sys.executable, "-c", READ.format(deadline=2.0)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "LD_LIBRARY_PATH": "/nonexistent"},
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    reading = json.loads(done.stdout.splitlines()[-1])
    assert reading["state"] == "no-driver" and "NVML unavailable" in reading["detail"]


def test_a_changed_scenario_is_seen_by_the_next_read(fake_nvml: FakeNvml) -> None:
    fake_nvml.use("p106x8")
    code = f"""
from pathlib import Path
import json
from watchdog.gpu.nvml import GpuProbe
probe = GpuProbe(deadline=2.0)
before = probe.read().gpus[0].memory_used
path = Path({str(fake_nvml.scenario_file)!r})
path.write_text(path.read_text().replace("used_mib=4000", "used_mib=0", 1))
after = probe.read().gpus[0].memory_used
print(json.dumps([before, after]))
"""
    done = fake_nvml.run(code)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == [4000 * 2**20, 0]


HEALTH_FIELDS = (
    "temperature_slowdown",
    "temperature_shutdown",
    "clock_event_reasons",
    "ecc_uncorrected",
    "ecc_corrected",
    "ecc_uncorrected_aggregate",
    "retired_pages",
    "retired_pages_single_bit",
    "retired_pages_pending",
    "remapped_rows_pending",
    "remapped_rows_correctable",
    "remapped_rows_uncorrectable",
    "remapped_rows_failed",
    "pcie_replays",
)


def health(fake: FakeNvml, scenario: str) -> list[dict]:
    fake.use(scenario)
    reading = read(fake)
    assert reading["state"] == "ok"
    for gpu in reading["gpus"]:
        assert gpu["health"] == "ok" and gpu["error"] is None, gpu  # NotSupported is never an error
    return [{k: gpu[k] for k in (*HEALTH_FIELDS, "unsupported")} for gpu in reading["gpus"]]


def test_ecc_counters_are_read_by_type_and_not_supported_is_none(fake_nvml: FakeNvml) -> None:
    gpus = health(fake_nvml, "ecc_errors")
    assert [(g["ecc_corrected"], g["ecc_uncorrected"], g["ecc_uncorrected_aggregate"]) for g in gpus] == [
        (0, 0, 0),
        (120, 2, 3),
        (None, None, None),
    ]
    assert {"ecc", "ecc_corrected", "ecc_aggregate", "remapped_rows"} <= set(gpus[2]["unsupported"])
    assert "ecc" not in gpus[1]["unsupported"]


def test_retired_pages_and_pending_are_read(fake_nvml: FakeNvml) -> None:
    gpus = health(fake_nvml, "retired_pages")
    assert [(g["retired_pages"], g["retired_pages_single_bit"], g["retired_pages_pending"]) for g in gpus] == [
        (0, 0, False),
        (2, 3, True),
        (None, None, None),
    ]
    assert {"retired_pages", "retired_pages_single_bit", "retired_pages_pending"} <= set(gpus[2]["unsupported"])


def test_remapped_rows_are_read_in_full(fake_nvml: FakeNvml) -> None:
    gpus = health(fake_nvml, "remapped_rows")
    keys = ("remapped_rows_correctable", "remapped_rows_uncorrectable", "remapped_rows_pending", "remapped_rows_failed")
    assert [tuple(g[k] for k in keys) for g in gpus] == [
        (0, 0, False, False),
        (2, 1, True, False),
        (0, 512, False, True),
        (None, None, None, None),
    ]
    assert "remapped_rows" in gpus[3]["unsupported"]


def test_temperature_thresholds_are_read_each_on_its_own(fake_nvml: FakeNvml) -> None:
    gpus = health(fake_nvml, "temp_thresholds")
    assert [(g["temperature_slowdown"], g["temperature_shutdown"]) for g in gpus] == [
        (90, 95),
        (90, 95),
        (90, 95),
        (None, None),
        (None, None),
    ]
    assert {"temperature_slowdown", "temperature_shutdown"} <= set(gpus[3]["unsupported"])
    assert "temperature_slowdown" not in gpus[0]["unsupported"]


def test_clock_events_and_pcie_replays_are_read(fake_nvml: FakeNvml) -> None:
    assert [g["clock_event_reasons"] for g in health(fake_nvml, "clock_events")] == [0x1, 0x8, 0xC8, 0x4, None]
    replays = health(fake_nvml, "pcie_replays")
    assert [g["pcie_replays"] for g in replays] == [0, 40, None]
    assert "pcie_replays" in replays[2]["unsupported"] and "pcie_replays" not in replays[1]["unsupported"]


def test_a_hung_new_call_still_costs_only_the_deadline(fake_nvml: FakeNvml) -> None:
    fake_nvml.use("pcie_replays")
    text = fake_nvml.scenario_file.read_text()
    fake_nvml.write(text + "hang nvmlDeviceGetPcieReplayCounter 1\n")
    reading = read(fake_nvml, deadline=0.5, timeout=20)
    assert reading["state"] == "driver-hung" and reading["duration"] <= 1.0
