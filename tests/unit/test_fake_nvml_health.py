"""The fake driver's health fields, read through pynvml's real code (nvidia-ml-py).

One shipped scenario per signal (ECC counters by type, retired pages and their pending status,
remapped rows, temperature thresholds, clock-event reasons, the PCIe replay counter); each has a GPU
that answers NVML_ERROR_NOT_SUPPORTED. Scenarios are re-read on every call, so a rewrite is a step.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

from tests.fake_nvml.harness import FakeNvml

PRELUDE = """
import json, pynvml
pynvml.nvmlInit()
handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
def outcome(call):
    try:
        return call()
    except pynvml.NVMLError_NotSupported:
        return "NotSupported"
def per_gpu(call):
    print(json.dumps([outcome(lambda: call(h)) for h in handles]))
"""


def per_gpu(fake: FakeNvml, scenario: str, call: str) -> list[object]:
    fake.use(scenario)
    done = fake.run(PRELUDE + f"per_gpu(lambda h: {call})")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert isinstance(result, list)
    return result


def test_ecc_counters_by_error_type_and_counter_type(fake_nvml: FakeNvml) -> None:
    call = (
        "[pynvml.nvmlDeviceGetTotalEccErrors(h, e, c) for e, c in ("
        "(pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, pynvml.NVML_VOLATILE_ECC),"
        "(pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, pynvml.NVML_AGGREGATE_ECC),"
        "(pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, pynvml.NVML_VOLATILE_ECC),"
        "(pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, pynvml.NVML_AGGREGATE_ECC))]"
    )
    assert per_gpu(fake_nvml, "ecc_errors", call) == [[0, 0, 0, 0], [120, 5400, 2, 3], "NotSupported"]


def test_aggregate_ecc_defaults_to_the_volatile_count(fake_nvml: FakeNvml) -> None:
    fake_nvml.write("gpu 0 ecc_corrected=7 ecc_uncorrected=1\n")
    done = fake_nvml.run(PRELUDE + "per_gpu(lambda h: [pynvml.nvmlDeviceGetTotalEccErrors(h, e, 1) for e in (0, 1)])")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [[7, 1]]


def test_correctable_ecc_trends_from_the_moment_the_scenario_was_written(fake_nvml: FakeNvml) -> None:
    path = fake_nvml.use("ecc_trend")
    written = time.time() - 100.0  # as if written 100 s ago: t^2 = 10,000 accelerating, 5 x 100 linear
    os.utime(path, (written, written))
    done = fake_nvml.run(PRELUDE + "per_gpu(lambda h: [pynvml.nvmlDeviceGetTotalEccErrors(h, 0, c) for c in (0, 1)])")
    assert done.returncode == 0, done.stderr
    flat, accelerating, linear, off = json.loads(done.stdout.strip().splitlines()[-1])
    assert flat == [3, 3]
    assert 10_000 <= accelerating[0] == accelerating[1] < 12_000
    assert 500 <= linear[0] == linear[1] < 600
    assert off == "NotSupported"


def test_retired_pages_and_pending_status(fake_nvml: FakeNvml) -> None:
    call = (
        "[len(pynvml.nvmlDeviceGetRetiredPages(h, pynvml.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS)),"
        " len(pynvml.nvmlDeviceGetRetiredPages(h, pynvml.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR)),"
        " pynvml.nvmlDeviceGetRetiredPagesPendingStatus(h)]"
    )
    assert per_gpu(fake_nvml, "retired_pages", call) == [[0, 0, 0], [3, 2, 1], "NotSupported"]


def test_retired_pages_pending_alone_can_be_not_supported(fake_nvml: FakeNvml) -> None:
    fake_nvml.write("gpu 0 retired_dbe=1 retired_pending=1\nnotsupported nvmlDeviceGetRetiredPagesPendingStatus\n")
    done = fake_nvml.run(
        PRELUDE + "per_gpu(lambda h: [len(pynvml.nvmlDeviceGetRetiredPages(h, 1)),"
        " outcome(lambda: pynvml.nvmlDeviceGetRetiredPagesPendingStatus(h))])"
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [[1, "NotSupported"]]


def test_remapped_rows_correctable_uncorrectable_pending_failure(fake_nvml: FakeNvml) -> None:
    got = per_gpu(fake_nvml, "remapped_rows", "pynvml.nvmlDeviceGetRemappedRows(h)")
    assert got == [[0, 0, 0, 0], [2, 1, 1, 0], [0, 512, 0, 1], "NotSupported"]


def test_temperature_thresholds_slowdown_and_shutdown(fake_nvml: FakeNvml) -> None:
    call = (
        "[pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU),"
        " outcome(lambda: pynvml.nvmlDeviceGetTemperatureThreshold(h, pynvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN)),"
        " outcome(lambda: pynvml.nvmlDeviceGetTemperatureThreshold(h, pynvml.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN)),"
        " outcome(lambda: pynvml.nvmlDeviceGetTemperatureThreshold(h, pynvml.NVML_TEMPERATURE_THRESHOLD_GPU_MAX)),"
        " outcome(lambda: pynvml.nvmlDeviceGetTemperatureThreshold(h, pynvml.NVML_TEMPERATURE_THRESHOLD_MEM_MAX))]"
    )
    got = per_gpu(fake_nvml, "temp_thresholds", call)
    na = "NotSupported"
    assert got == [
        [40, 90, 95, 87, na],
        [86, 90, 95, 87, na],
        [93, 90, 95, 87, na],
        [60, na, na, na, na],
        [60, na, na, na, na],
    ]


def test_clock_event_reasons_by_both_names(fake_nvml: FakeNvml) -> None:
    call = "[pynvml.nvmlDeviceGetCurrentClocksEventReasons(h), pynvml.nvmlDeviceGetCurrentClocksThrottleReasons(h)]"
    got = per_gpu(fake_nvml, "clock_events", call)
    assert got == [[0x1, 0x1], [0x8, 0x8], [0xC8, 0xC8], [0x4, 0x4], "NotSupported"]


def test_pcie_replay_counter_steps_with_the_scenario(fake_nvml: FakeNvml) -> None:
    fake_nvml.use("pcie_replays")
    code = PRELUDE + (
        "import sys, time\n"
        "first = [outcome(lambda: pynvml.nvmlDeviceGetPcieReplayCounter(h)) for h in handles]\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()\n"
        "second = [outcome(lambda: pynvml.nvmlDeviceGetPcieReplayCounter(h)) for h in handles]\n"
        "print(json.dumps([first, second]), flush=True)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-u", "-c", textwrap.dedent(code)],
        env=fake_nvml.env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    assert proc.stdout.readline().strip() == "ready"
    fake_nvml.write(fake_nvml.scenario_file.read_text().replace("pcie_replays=40", "pcie_replays=100"))
    out, err = proc.communicate("\n", timeout=30)
    assert proc.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1]) == [[0, 40, "NotSupported"], [0, 100, "NotSupported"]]


def test_pcie_replays_zero_by_default_and_not_supported_by_rule(fake_nvml: FakeNvml) -> None:
    fake_nvml.write("gpu 0\ngpu 1\nnotsupported nvmlDeviceGetPcieReplayCounter 1\n")
    done = fake_nvml.run(PRELUDE + "per_gpu(lambda h: pynvml.nvmlDeviceGetPcieReplayCounter(h))")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [0, "NotSupported"]
