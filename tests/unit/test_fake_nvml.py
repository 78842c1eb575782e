"""pynvml's real code (nvidia-ml-py) against the fake driver in tests/fake_nvml.

Each snippet runs in a fresh interpreter whose LD_LIBRARY_PATH names the fake's
build directory, so pynvml's own CDLL("libnvidia-ml.so.1") loads the fake and
every ctypes structure is marshalled exactly as against a real driver.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from tests.fake_nvml.harness import LIBRARY, FakeNvml

MIB = 1024 * 1024
XID_CRITICAL_ERROR = 0x8  # pynvml.nvmlEventTypeXidCriticalError

PRELUDE = """
import json, pynvml
pynvml.nvmlInit()
handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
def out(value):
    print(json.dumps(value))
"""


def run_json(fake: FakeNvml, body: str, timeout: float = 30) -> object:
    done = fake.run(PRELUDE + body, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_pynvml_loads_the_fake_library_by_its_soname(fake_nvml: FakeNvml) -> None:
    got = run_json(
        fake_nvml,
        """
maps = open("/proc/self/maps").read()
out({"driver": pynvml.nvmlSystemGetDriverVersion(), "loaded": [l.split()[-1] for l in maps.splitlines()
     if "libnvidia-ml" in l]})
""",
    )
    assert got["driver"] == "535.183.01"
    assert set(got["loaded"]) == {str(LIBRARY)}


def test_count_names_uuids_and_pci_bus_ids(fake_nvml: FakeNvml) -> None:
    got = run_json(
        fake_nvml,
        """
rows = []
for h in handles:
    pci = pynvml.nvmlDeviceGetPciInfo(h)
    rows.append([pynvml.nvmlDeviceGetName(h), pynvml.nvmlDeviceGetUUID(h), pci.busId, pci.busIdLegacy,
                 pci.domain, pci.bus, pci.device, pci.pciDeviceId, pynvml.nvmlDeviceGetIndex(h)])
by_uuid = pynvml.nvmlDeviceGetHandleByUUID(rows[5][1])
out({"rows": rows, "by_uuid": pynvml.nvmlDeviceGetIndex(by_uuid)})
""",
    )
    rows = got["rows"]
    assert len(rows) == 8
    assert {r[0] for r in rows} == {"P106-100"}
    assert rows[0][1] == "GPU-5f1c0b6e-1d2a-4c7e-9b3a-000000000100"
    assert len({r[1] for r in rows}) == 8
    assert [r[2] for r in rows] == [f"00000000:{i:02X}:00.0" for i in range(1, 9)]
    assert rows[2][3] == "0000:03:00.0"
    assert rows[2][4:8] == [0, 3, 0, 0x1C0710DE]
    assert [r[8] for r in rows] == list(range(8))
    assert got["by_uuid"] == 5


def test_unknown_uuid_is_not_found(fake_nvml: FakeNvml) -> None:
    got = run_json(
        fake_nvml,
        """
try:
    pynvml.nvmlDeviceGetHandleByUUID("GPU-nope")
    out("found")
except pynvml.NVMLError_NotFound as exc:
    out(str(exc))
""",
    )
    assert got == "Not Found"


def test_memory_v2_and_v1(fake_nvml: FakeNvml) -> None:
    fake_nvml.use("h100x8")
    got = run_json(
        fake_nvml,
        """
v2 = pynvml.nvmlDeviceGetMemoryInfo(handles[1], version=pynvml.nvmlMemory_v2)
v1 = pynvml.nvmlDeviceGetMemoryInfo(handles[1])
out({"v2": [v2.version, v2.total, v2.reserved, v2.used, v2.free], "v1": [v1.total, v1.used, v1.free]})
""",
    )
    assert got["v2"] == [0x02000028, 81559 * MIB, 570 * MIB, 60100 * MIB, (81559 - 570 - 60100) * MIB]
    # v1 counts the driver-reserved memory as used; free is the same
    assert got["v1"] == [81559 * MIB, (60100 + 570) * MIB, (81559 - 570 - 60100) * MIB]


def test_memory_v1_fallback_when_the_driver_lacks_v2(fake_nvml: FakeNvml) -> None:
    fake_nvml.write(fake_nvml.scenario_file.read_text() + "fail nvmlDeviceGetMemoryInfo_v2 13\n")
    got = run_json(
        fake_nvml,
        """
try:
    pynvml.nvmlDeviceGetMemoryInfo(handles[0], version=pynvml.nvmlMemory_v2)
    v2 = "ok"
except pynvml.NVMLError_FunctionNotFound:
    v2 = "FunctionNotFound"
m = pynvml.nvmlDeviceGetMemoryInfo(handles[0])
out({"v2": v2, "v1": [m.total, m.used, m.free]})
""",
    )
    assert got == {"v2": "FunctionNotFound", "v1": [6144 * MIB, 4000 * MIB, 2144 * MIB]}


def test_processes_with_used_memory(fake_nvml: FakeNvml) -> None:
    fake_nvml.write(fake_nvml.scenario_file.read_text() + "proc 0 pid=777 used_mib=12\n")
    got = run_json(
        fake_nvml,
        """
res = []
for h in handles:
    res.append([[p.pid, p.usedGpuMemory, p.gpuInstanceId, p.computeInstanceId]
                for p in pynvml.nvmlDeviceGetComputeRunningProcesses(h)])
out(res)
""",
    )
    na = 0xFFFFFFFF
    assert got[0] == [[41000, 3900 * MIB, na, na], [777, 12 * MIB, na, na]]
    assert got[7] == [[41007, 3900 * MIB, na, na]]


def test_no_processes_is_an_empty_list(fake_nvml: FakeNvml) -> None:
    fake_nvml.write("gpu 0 total_mib=6144\n")
    assert run_json(fake_nvml, "out(pynvml.nvmlDeviceGetComputeRunningProcesses(handles[0]))") == []


def test_temperature_clocks_and_health_counters(fake_nvml: FakeNvml) -> None:
    fake_nvml.use("xid48")
    got = run_json(
        fake_nvml,
        """
h = handles[1]
out({
    "temp": pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU),
    # nvmlDeviceGetTemperatureV has a Python wrapper only in newer nvidia-ml-py releases
    "tempV": pynvml.nvmlDeviceGetTemperatureV(h, 0) if hasattr(pynvml, "nvmlDeviceGetTemperatureV") else 35,
    "reasons": pynvml.nvmlDeviceGetCurrentClocksEventReasons(h),
    "throttle": pynvml.nvmlDeviceGetCurrentClocksThrottleReasons(h),
    "dbe": pynvml.nvmlDeviceGetTotalEccErrors(h, pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
                                              pynvml.NVML_VOLATILE_ECC),
    "sbe": pynvml.nvmlDeviceGetTotalEccErrors(h, pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED,
                                              pynvml.NVML_AGGREGATE_ECC),
    "rows": pynvml.nvmlDeviceGetRemappedRows(h),
    "pages_dbe": pynvml.nvmlDeviceGetRetiredPages(h, pynvml.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR),
    "pages_sbe": pynvml.nvmlDeviceGetRetiredPages(h, pynvml.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS),
})
""",
    )
    assert got == {
        "temp": 35,
        "tempV": 35,
        "reasons": 1,
        "throttle": 1,
        "dbe": 1,
        "sbe": 0,
        "rows": [0, 1, 1, 0],
        "pages_dbe": [0x200000],
        "pages_sbe": [],
    }


NOT_SUPPORTED_CALLS = """
def outcome(call):
    try:
        call()
        return "ok"
    except pynvml.NVMLError_NotSupported:
        return "NotSupported"
h = handles[0]
out({
    "ecc": outcome(lambda: pynvml.nvmlDeviceGetTotalEccErrors(h, 1, 0)),
    "rows": outcome(lambda: pynvml.nvmlDeviceGetRemappedRows(h)),
    "pages": outcome(lambda: pynvml.nvmlDeviceGetRetiredPages(h, 1)),
    "temp": outcome(lambda: pynvml.nvmlDeviceGetTemperature(h, 0)),
    "tempV": outcome(lambda: pynvml.nvmlDeviceGetTemperatureV(h, 0))
    if hasattr(pynvml, "nvmlDeviceGetTemperatureV") else outcome(lambda: pynvml.nvmlDeviceGetTemperature(h, 0)),
    "memory": outcome(lambda: pynvml.nvmlDeviceGetMemoryInfo(h, version=pynvml.nvmlMemory_v2)),
})
"""


def test_consumer_card_answers_not_supported(fake_nvml: FakeNvml) -> None:
    fake_nvml.use("notsupported")
    got = run_json(fake_nvml, NOT_SUPPORTED_CALLS)
    assert got == {k: "NotSupported" for k in ("ecc", "rows", "pages", "temp", "tempV")} | {"memory": "ok"}


def test_ecc_notsupported_gpu_key_keeps_temperature(fake_nvml: FakeNvml) -> None:
    got = run_json(fake_nvml, NOT_SUPPORTED_CALLS)  # p106x8: gpu lines carry ecc=notsupported
    assert got == {"ecc": "NotSupported", "rows": "NotSupported", "pages": "NotSupported"} | {
        "temp": "ok",
        "tempV": "ok",
        "memory": "ok",
    }


def test_lost_gpu_raises_gpu_is_lost(fake_nvml: FakeNvml) -> None:
    fake_nvml.use("gpu_lost")
    done = fake_nvml.run(
        """
import json, pynvml
pynvml.nvmlInit()
res = {"count": pynvml.nvmlDeviceGetCount()}
try:
    pynvml.nvmlDeviceGetHandleByIndex(3)
    res["handle3"] = "ok"
except pynvml.NVMLError_GpuIsLost as exc:
    res["handle3"] = str(exc)
h2 = pynvml.nvmlDeviceGetHandleByIndex(2)
res["mem2"] = pynvml.nvmlDeviceGetMemoryInfo(h2).used
# a GPU lost while a handle is held: every call on it answers GpuIsLost
open(__import__("os").environ["FAKE_NVML_SCENARIO"], "a").write("lost 2\\n")
lost = []
for call in (pynvml.nvmlDeviceGetMemoryInfo, pynvml.nvmlDeviceGetUUID, pynvml.nvmlDeviceGetComputeRunningProcesses,
             pynvml.nvmlDeviceGetPciInfo):
    try:
        call(h2)
    except pynvml.NVMLError_GpuIsLost:
        lost.append(call.__name__)
res["lost"] = lost
print(json.dumps(res))
"""
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["count"] == 8
    assert got["handle3"] == "GPU is lost"
    assert got["mem2"] == 4000 * MIB
    assert len(got["lost"]) == 4


EVENTS = """
es = pynvml.nvmlEventSetCreate()
for h in handles:
    pynvml.nvmlDeviceRegisterEvents(h, pynvml.nvmlEventTypeXidCriticalError, es)
events = []
while True:
    try:
        d = pynvml.nvmlEventSetWait(es, 200)
    except pynvml.NVMLError_Timeout:
        break
    events.append([pynvml.nvmlDeviceGetIndex(d.device), d.eventType, d.eventData])
pynvml.nvmlEventSetFree(es)
out(events)
"""


def test_xid48_event_through_event_set(fake_nvml: FakeNvml) -> None:
    fake_nvml.use("xid48")
    assert run_json(fake_nvml, EVENTS) == [[1, XID_CRITICAL_ERROR, 48]]


def test_event_wait_times_out_without_events(fake_nvml: FakeNvml) -> None:
    got = run_json(
        fake_nvml,
        """
import time
es = pynvml.nvmlEventSetCreate()
pynvml.nvmlDeviceRegisterEvents(handles[0], pynvml.nvmlEventTypeXidCriticalError, es)
t0 = time.monotonic()
try:
    pynvml.nvmlEventSetWait(es, 300)
    res = "event"
except pynvml.NVMLError_Timeout:
    res = "Timeout"
out([res, time.monotonic() - t0])
""",
    )
    assert got[0] == "Timeout"
    assert 0.25 <= got[1] < 5


def test_events_only_for_registered_devices_and_types(fake_nvml: FakeNvml) -> None:
    fake_nvml.use("xid_storm")
    got = run_json(
        fake_nvml,
        """
es = pynvml.nvmlEventSetCreate()
pynvml.nvmlDeviceRegisterEvents(handles[2], pynvml.nvmlEventTypeXidCriticalError, es)
pynvml.nvmlDeviceRegisterEvents(handles[1], pynvml.nvmlEventTypeSingleBitEccError, es)
events = []
while True:
    try:
        d = pynvml.nvmlEventSetWait(es, 50)
    except pynvml.NVMLError_Timeout:
        break
    events.append([pynvml.nvmlDeviceGetIndex(d.device), d.eventData])
out(events)
""",
    )
    assert len(got) == 51  # 50 storm events on GPU 2, then its Xid 79
    assert {e[0] for e in got} == {2}
    assert got[-1] == [2, 79]


def test_xid_storm_is_delivered_in_order(fake_nvml: FakeNvml) -> None:
    fake_nvml.use("xid_storm")
    got = run_json(fake_nvml, EVENTS)
    assert len(got) == 200
    assert got[:4] == [
        [0, XID_CRITICAL_ERROR, 13],
        [1, XID_CRITICAL_ERROR, 31],
        [2, XID_CRITICAL_ERROR, 43],
        [3, XID_CRITICAL_ERROR, 13],
    ]
    assert got[-1] == [2, XID_CRITICAL_ERROR, 79]


def test_running_process_sees_scenario_changes(fake_nvml: FakeNvml) -> None:
    # a long-lived process polls memory while the test edits the file
    proc = fake_nvml.popen(
        PRELUDE
        + """
import time
es = pynvml.nvmlEventSetCreate()
pynvml.nvmlDeviceRegisterEvents(handles[0], pynvml.nvmlEventTypeXidCriticalError, es)
out(["used", pynvml.nvmlDeviceGetMemoryInfo(handles[0]).used])
deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    used = pynvml.nvmlDeviceGetMemoryInfo(handles[0]).used
    if used != 4000 * 1024 * 1024:
        out(["used", used])
        break
    time.sleep(0.02)
out(["xid", int(pynvml.nvmlEventSetWait(es, 20000).eventData)])
"""
    )
    try:
        assert proc.stdout is not None
        assert json.loads(proc.stdout.readline()) == ["used", 4000 * MIB]
        fake_nvml.write(fake_nvml.scenario_file.read_text().replace("used_mib=4000", "used_mib=5900", 1))
        assert json.loads(proc.stdout.readline()) == ["used", 5900 * MIB]
        with fake_nvml.scenario_file.open("a") as f:
            f.write("xid 0 31\n")
        assert json.loads(proc.stdout.readline()) == ["xid", 31]
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("version", ["None", "pynvml.nvmlMemory_v2"])
def test_hung_call_really_hangs(fake_nvml: FakeNvml, version: str) -> None:
    fake_nvml.use("hung")
    code = (
        PRELUDE
        + f"""
out(pynvml.nvmlDeviceGetUUID(handles[0]))  # other calls still answer
pynvml.nvmlDeviceGetMemoryInfo(handles[0], version={version})
out("returned")
"""
    )
    start = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired) as hung:
        fake_nvml.run(code, timeout=2)
    assert time.monotonic() - start >= 2
    out = hung.value.stdout or b""
    text = out.decode() if isinstance(out, bytes) else out
    assert "GPU-5f1c0b6e" in text
    assert "returned" not in text


def test_hang_ends_when_the_line_is_removed(fake_nvml: FakeNvml) -> None:
    fake_nvml.use("hung")
    proc = fake_nvml.popen(PRELUDE + "out(pynvml.nvmlDeviceGetMemoryInfo(handles[1]).total)\n")
    try:
        time.sleep(0.5)
        assert proc.poll() is None
        fake_nvml.write(fake_nvml.scenario_file.read_text().replace("hang ", "# hang "))
        stdout, stderr = proc.communicate(timeout=10)
        assert proc.returncode == 0, stderr
        assert json.loads(stdout) == 6144 * MIB
    finally:
        proc.kill()
        proc.wait()


def test_uninitialised_and_missing_scenario(fake_nvml: FakeNvml) -> None:
    fake_nvml.scenario_file.unlink()
    done = fake_nvml.run(
        """
import pynvml
try:
    pynvml.nvmlInit()
    print("ok")
except pynvml.NVMLError_DriverNotLoaded as exc:
    print(exc)
"""
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Driver Not Loaded"


def test_injected_failure_code(fake_nvml: FakeNvml) -> None:
    fake_nvml.write(fake_nvml.scenario_file.read_text() + "fail nvmlDeviceGetUUID 999 4\n")
    got = run_json(
        fake_nvml,
        """
res = []
for h in handles[3:6]:
    try:
        res.append(pynvml.nvmlDeviceGetUUID(h)[-3:])
    except pynvml.NVMLError_Unknown:
        res.append("Unknown")
out(res)
""",
    )
    assert got == ["103", "Unknown", "105"]


def test_a_hung_call_blocks_only_its_own_thread(fake_nvml: FakeNvml) -> None:
    """ctypes drops the GIL around driver calls: a thread stuck in NVML leaves the others running."""
    fake_nvml.use("hung")
    got = run_json(
        fake_nvml,
        """
import threading
stuck = threading.Thread(target=pynvml.nvmlDeviceGetMemoryInfo, args=(handles[0],), daemon=True)
stuck.start()
stuck.join(0.5)
procs = pynvml.nvmlDeviceGetComputeRunningProcesses(handles[1])
out([stuck.is_alive(), pynvml.nvmlDeviceGetUUID(handles[1]), len(procs)])
""",
        timeout=10,
    )
    assert got == [True, "GPU-5f1c0b6e-1d2a-4c7e-9b3a-000000000101", 1]
