"""watchdog.gpu.kernel_log: Xid lines from /dev/kmsg or a saved dmesg, read at start-up without raising."""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watchdog.gpu import kernel_log
from watchdog.gpu.kernel_log import (
    PERMISSION_HINT,
    XID_LINE,
    KernelLogScan,
    normalise_bus_id,
    parse_xid_line,
    read_boot_time,
    scan_kernel_log,
)
from watchdog.model import XidEvent

LINE_48 = "NVRM: Xid (PCI:0000:3b:00): 48, pid=1234, name=python3, Ch 00000010"
LINE_79 = "NVRM: Xid (PCI:0000:01:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus."
LINE_13_OLD = "NVRM: Xid (0000:03:00): 13, 0000 00000000 0000a1c0 000005b4 00000000 00000000"
KMSG_TEXT = (
    "cannot read /dev/kmsg: permission denied (run as root, or sysctl kernel.dmesg_restrict=0); "
    "Xids before start-up are not known"
)


# ---------------------------------------------------------------- one line


@pytest.mark.parametrize(
    ("line", "xid", "bus", "pid", "process"),
    [
        (LINE_48, 48, "0000:3b:00", 1234, "python3"),
        (LINE_79, 79, "0000:01:00", None, None),
        (LINE_13_OLD, 13, "0000:03:00", None, None),
        (
            "NVRM: Xid (PCI:0000:00:1e): 31, pid=2079, name=python, Ch 00000008, intr 10000000. "
            "MMU Fault: ENGINE GRAPHICS GPCCLIENT_T1_0 faulted @ 0x7f6f_22000000. Fault is of type FAULT_PDE",
            31,
            "0000:00:1e",
            2079,
            "python",
        ),
        (
            "NVRM: Xid (PCI:0000:3B:00): 13, Graphics SM Warp Exception on (GPC 0, TPC 0, SM 0): Out Of Range Address",
            13,
            "0000:3b:00",
            None,
            None,
        ),
        (
            "NVRM: Xid (PCI:0000:ca:00): 94, pid=3085711, name=pt_main_thread, Contained: SM (0x1). RST: No, D-RST: No",
            94,
            "0000:ca:00",
            3085711,
            "pt_main_thread",
        ),
        (
            "NVRM: Xid (PCI:0000:41:00): 119, Timeout after 6s of waiting for RPC response from GPU1 GSP!",
            119,
            "0000:41:00",
            None,
            None,
        ),
        (
            "Nov 20 12:52:01 gpu-host kernel: NVRM: Xid (PCI:0000:3b:00): 45, pid=99, name=llama-server, Ch 00000008",
            45,
            "0000:3b:00",
            99,
            "llama-server",
        ),
        ("NVRM: Xid (PCI:00000000:3b:00.0): 48, pid=\"77\", name='vllm'", 48, "0000:3b:00", 77, "vllm"),
    ],
)
def test_real_xid_lines_give_code_bus_pid_and_process(
    line: str, xid: int, bus: str, pid: int | None, process: str | None
) -> None:
    event = parse_xid_line(line + "\n", at=123.5)
    assert event == XidEvent(at=123.5, xid=xid, bus_id=bus, pid=pid, process=process, source="kernel-log")
    assert XID_LINE.search(line) is not None


@pytest.mark.parametrize(
    "line",
    [
        "",
        "eth0: renamed from veth95d8816",
        "NVRM: GPU at PCI:0000:01:00: GPU-5b1a8d3c-0000-0000-0000-000000000000",
        "NVRM: loading NVIDIA UNIX x86_64 Kernel Module  550.54.15",
        "NVRM: GPU 0000:3b:00.0: RmInitAdapter failed! (0x26:0x56:1474)",
        "NVRM: Xid (garbage): 48, pid=1",
        "NVRM: Xid (PCI:0000:3b:00): , pid=1",
        "nvidia-modeset: Xid 48 talk about it",
    ],
)
def test_lines_that_are_not_xids_give_none(line: str) -> None:
    assert parse_xid_line(line, at=0.0) is None


@settings(max_examples=300)
@given(st.text(max_size=200))
def test_parse_xid_line_never_raises(text: str) -> None:
    event = parse_xid_line(text, at=1.0)
    assert event is None or (event.source == "kernel-log" and event.bus_id is not None)


@given(prefix=st.text(max_size=30).filter(lambda t: "\n" not in t and "\r" not in t), xid=st.integers(0, 999))
def test_any_prefix_before_nvrm_is_ignored(prefix: str, xid: int) -> None:
    event = parse_xid_line(f"{prefix}NVRM: Xid (PCI:0000:3b:00): {xid}, pid=5, name=x", at=2.0)
    assert event is not None and (event.xid, event.pid, event.bus_id) == (xid, 5, "0000:3b:00")


# ---------------------------------------------------------------- bus ids


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("0000:3b:00", "0000:3b:00"),
        ("00000000:3B:00.0", "0000:3b:00"),  # NVML's busId
        ("0000:3B:00.0", "0000:3b:00"),
        ("3b:00.0", "0000:3b:00"),
        ("3b:00", "0000:3b:00"),
        ("PCI:0000:3b:00", "0000:3b:00"),
        (" 0000:01:00 ", "0000:01:00"),
        ("0001:c1:00.0", "0001:c1:00"),
        ("00010000:01:00.0", "10000:01:00"),
        ("0:1:0", "0000:01:00"),
        ("not-a-bus", "not-a-bus"),
        ("  WEIRD ", "weird"),
    ],
)
def test_normalise_bus_id(text: str, canonical: str) -> None:
    assert normalise_bus_id(text) == canonical


@given(
    domain=st.integers(0, 0xFFFF),
    bus=st.integers(0, 0xFF),
    dev=st.integers(0, 0x1F),
    fn=st.integers(0, 7),
    upper=st.booleans(),
    wide=st.booleans(),
)
def test_every_spelling_of_one_address_normalises_to_the_same_string(
    domain: int, bus: int, dev: int, fn: int, upper: bool, wide: bool
) -> None:
    text = f"{domain:08x}:{bus:02x}:{dev:02x}.{fn}" if wide else f"{domain:04x}:{bus:02x}:{dev:02x}"
    text = text.upper() if upper else text
    canonical = normalise_bus_id(text)
    assert canonical == f"{domain:04x}:{bus:02x}:{dev:02x}"
    assert normalise_bus_id(canonical) == canonical


# ---------------------------------------------------------------- saved logs


def write(tmp_path: Path, text: str | bytes, name: str = "kern.log") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


KMSG_FILE = "\n".join(
    [
        "6,24156,7325254376,-;eth0: renamed from veth95d8816",
        f"4,24157,5000000,-;{LINE_48}",
        " SUBSYSTEM=pci",
        " DEVICE=+pci:0000:3b:00.0",
        "6,24158,6000000,-;NVRM: GPU at PCI:0000:01:00: GPU-5b1a8d3c",
        f"4,24159,9000000,-,caller=T12;{LINE_79}",
        "",
    ]
)


def test_a_kmsg_format_file_gives_boot_relative_timestamps(tmp_path: Path) -> None:
    scan = scan_kernel_log(write(tmp_path, KMSG_FILE), boot_time=1000.0)
    assert scan == KernelLogScan(
        events=(
            XidEvent(at=1005.0, xid=48, bus_id="0000:3b:00", pid=1234, process="python3", source="kernel-log"),
            XidEvent(at=1009.0, xid=79, bus_id="0000:01:00", source="kernel-log"),
        ),
        error=None,
        source=str(tmp_path / "kern.log"),
    )


@pytest.mark.parametrize(("since", "codes"), [(None, [48, 79]), (1005.0, [48, 79]), (1005.001, [79]), (1009.5, [])])
def test_since_drops_older_events_and_keeps_ones_exactly_at_it(
    tmp_path: Path, since: float | None, codes: list[int]
) -> None:
    scan = scan_kernel_log(write(tmp_path, KMSG_FILE), since=since, boot_time=1000.0)
    assert [event.xid for event in scan.events] == codes and scan.error is None


DMESG_FILE = (
    "[    0.000000] Linux version 6.8.0-45-generic\n"
    f"[ 1234.567890] {LINE_48}\n"
    "[ 1234.600000] NVRM: GPU 0000:3b:00.0: GPU has fallen off the bus.\n"
    f"[98765.000001]{LINE_13_OLD}\r\n"
    f"[ 2000.5] {LINE_79}\n"
)


def test_a_dmesg_file_gives_boot_plus_seconds(tmp_path: Path) -> None:
    scan = scan_kernel_log(write(tmp_path, DMESG_FILE), boot_time=1_700_000_000.0)
    assert scan.error is None
    assert [(e.xid, e.bus_id, e.pid) for e in scan.events] == [
        (48, "0000:3b:00", 1234),
        (13, "0000:03:00", None),
        (79, "0000:01:00", None),
    ]
    assert [e.at for e in scan.events] == pytest.approx([1_700_001_234.56789, 1_700_098_765.000001, 1_700_002_000.5])


def test_since_filters_a_dmesg_file(tmp_path: Path) -> None:
    scan = scan_kernel_log(write(tmp_path, DMESG_FILE), since=1_700_001_500.0, boot_time=1_700_000_000.0)
    assert [e.xid for e in scan.events] == [13, 79]


def test_a_dmesg_dash_t_file_uses_its_wall_clock_times(tmp_path: Path) -> None:
    path = write(tmp_path, f"[Thu Nov 20 12:52:01 2025] {LINE_48}\n[Fri Nov  7 03:04:05 2025] {LINE_79}\n")
    scan = scan_kernel_log(path, boot_time=5.0)
    expected = [
        time.mktime(time.strptime("Thu Nov 20 12:52:01 2025", "%a %b %d %H:%M:%S %Y")),
        time.mktime(time.strptime("Fri Nov 7 03:04:05 2025", "%a %b %d %H:%M:%S %Y")),
    ]
    assert [e.at for e in scan.events] == expected and [e.xid for e in scan.events] == [48, 79]


def test_plain_lines_without_a_timestamp_are_dated_at_boot(tmp_path: Path) -> None:
    path = write(tmp_path, f"{LINE_48}\nsome other line\nNov 20 12:52:01 host kernel: {LINE_79}\n")
    scan = scan_kernel_log(path, boot_time=42.0)
    assert [(e.xid, e.at) for e in scan.events] == [(48, 42.0), (79, 42.0)]
    assert scan_kernel_log(path, boot_time=42.0, since=43.0).events == ()


def test_without_boot_time_the_file_is_dated_from_proc_stat_btime(tmp_path: Path) -> None:
    btime = read_boot_time()
    assert btime is not None and 1_000_000_000 < btime <= time.time()
    scan = scan_kernel_log(write(tmp_path, f"[ 10.0] {LINE_48}\n{LINE_79}\n"))
    assert [e.at for e in scan.events] == [btime + 10.0, btime]


def test_read_boot_time_from_a_given_proc_stat(tmp_path: Path) -> None:
    assert read_boot_time(write(tmp_path, "cpu  1 2 3\nbtime 1795424167\nprocesses 9\n", "stat")) == 1795424167.0
    assert read_boot_time(write(tmp_path, "cpu 1\n", "stat2")) is None
    assert read_boot_time(write(tmp_path, "btime soon\n", "stat3")) is None
    assert read_boot_time(tmp_path / "missing") is None


def test_a_file_with_broken_utf8_and_nul_bytes_is_still_scanned(tmp_path: Path) -> None:
    path = write(tmp_path, b"\xff\xfe\x00garbage\n[ 1.0] " + LINE_48.encode() + b"\n\x80\x81\n")
    scan = scan_kernel_log(path, boot_time=0.0)
    assert [e.xid for e in scan.events] == [48] and scan.error is None


def test_max_records_bounds_a_huge_file_and_says_so(tmp_path: Path) -> None:
    path = write(tmp_path, f"[ 1.0] {LINE_48}\n" * 50)
    scan = scan_kernel_log(path, boot_time=0.0, max_records=10)
    assert len(scan.events) == 10
    assert scan.error == f"stopped reading {path} after 10 lines; later Xids were not read"


def test_a_missing_path_is_an_error_line_not_an_exception(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "kern.log"
    scan = scan_kernel_log(missing)
    assert scan == KernelLogScan(
        events=(),
        error=f"cannot read {missing}: no such file; Xids before start-up are not known",
        source=str(missing),
    )


def test_a_directory_or_a_bad_path_is_an_error_line_not_an_exception(tmp_path: Path) -> None:
    scan = scan_kernel_log(tmp_path)
    assert (
        scan.events == ()
        and scan.error == f"cannot read {tmp_path}: it is a directory; Xids before start-up are not known"
    )
    bad = scan_kernel_log(Path("kern\0.log"))
    assert bad.events == () and bad.error is not None and "cannot read" in bad.error


def test_a_fifo_is_refused_rather_than_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    scan = scan_kernel_log(fifo)
    assert (
        scan.events == () and scan.error is not None and "neither a regular file nor a kernel log device" in scan.error
    )


def test_an_unreadable_file_is_an_error_line(tmp_path: Path) -> None:
    path = write(tmp_path, LINE_48)
    path.chmod(0)
    try:
        if os.geteuid() == 0:
            # root reads it anyway: then the scan must find the event.
            assert [e.xid for e in scan_kernel_log(path, boot_time=0.0).events] == [48]
        else:
            scan = scan_kernel_log(path)
            assert scan.error == f"cannot read {path}: permission denied; Xids before start-up are not known"
    finally:
        path.chmod(0o600)


@settings(max_examples=100)
@given(st.binary(max_size=2000))
def test_scanning_arbitrary_bytes_never_raises(data: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "log"
        path.write_bytes(data)
        scan = scan_kernel_log(path, boot_time=0.0)
    assert isinstance(scan, KernelLogScan) and scan.error is None


# ---------------------------------------------------------------- the /dev/kmsg protocol, faked


class FakeKmsg:
    """os.open/os.read/os.close as /dev/kmsg answers them: one record per read, then EAGAIN."""

    O_RDONLY = os.O_RDONLY
    O_NONBLOCK = os.O_NONBLOCK

    def __init__(self, reads: list[bytes | OSError], open_error: OSError | None = None) -> None:
        self.reads: Iterator[bytes | OSError] = iter(reads)
        self.open_error = open_error
        self.opened: list[tuple[str, int]] = []
        self.closed: list[int] = []

    def open(self, path: Any, flags: int) -> int:
        if self.open_error is not None:
            raise self.open_error
        self.opened.append((str(path), flags))
        return 99

    def read(self, fd: int, size: int) -> bytes:
        assert (fd, size) == (99, 8192)
        item = next(self.reads, BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable"))
        if isinstance(item, OSError):
            raise item
        return item

    def close(self, fd: int) -> None:
        self.closed.append(fd)


@pytest.fixture
def char_device() -> Path:
    """Any character device makes scan_kernel_log use the kmsg protocol; /dev/null is always there."""
    return Path("/dev/null")


def fake(monkeypatch: pytest.MonkeyPatch, reads: list[bytes | OSError], open_error: OSError | None = None) -> FakeKmsg:
    kmsg = FakeKmsg(reads, open_error)
    monkeypatch.setattr(
        kernel_log,
        "os",
        SimpleNamespace(
            open=kmsg.open, read=kmsg.read, close=kmsg.close, O_RDONLY=kmsg.O_RDONLY, O_NONBLOCK=kmsg.O_NONBLOCK
        ),
    )
    return kmsg


def test_kmsg_reads_one_record_per_read_until_eagain(monkeypatch: pytest.MonkeyPatch, char_device: Path) -> None:
    kmsg = fake(
        monkeypatch,
        [
            b"6,1,1000000,-;eth0: renamed from veth95d8816\n",
            f"4,2,2500000,-;{LINE_48}\n SUBSYSTEM=pci\n DEVICE=+pci:0000:3b:00.0\n".encode(),
            BrokenPipeError(errno.EPIPE, "Broken pipe"),  # a record was overwritten: go on
            f"3,9,4000000,c;{LINE_79}\n".encode(),
            b"\xff\xfe;not utf-8\n",
        ],
    )
    scan = scan_kernel_log(char_device, boot_time=100.0)
    assert scan == KernelLogScan(
        events=(
            XidEvent(at=102.5, xid=48, bus_id="0000:3b:00", pid=1234, process="python3", source="kernel-log"),
            XidEvent(at=104.0, xid=79, bus_id="0000:01:00", source="kernel-log"),
        ),
        source="/dev/null",
    )
    assert kmsg.opened == [("/dev/null", os.O_RDONLY | os.O_NONBLOCK)] and kmsg.closed == [99]


def test_kmsg_since_drops_older_records(monkeypatch: pytest.MonkeyPatch, char_device: Path) -> None:
    fake(monkeypatch, [f"4,1,{usec},-;{LINE_48}\n".encode() for usec in (1_000_000, 2_000_000, 3_000_000)])
    scan = scan_kernel_log(char_device, since=102.0, boot_time=100.0)
    assert [e.at for e in scan.events] == [102.0, 103.0]


def test_kmsg_permission_denied_on_open_says_how_to_fix_it(monkeypatch: pytest.MonkeyPatch, char_device: Path) -> None:
    kmsg = fake(monkeypatch, [], open_error=PermissionError(errno.EPERM, "Operation not permitted"))
    scan = scan_kernel_log(char_device, boot_time=0.0)
    assert scan == KernelLogScan(events=(), error=f"cannot read /dev/null: {PERMISSION_HINT}", source="/dev/null")
    assert kmsg.closed == []


def test_kmsg_permission_denied_on_read_keeps_what_was_read(monkeypatch: pytest.MonkeyPatch, char_device: Path) -> None:
    kmsg = fake(monkeypatch, [f"4,1,0,-;{LINE_48}\n".encode(), PermissionError(errno.EPERM, "nope")])
    scan = scan_kernel_log(char_device, boot_time=0.0)
    assert [e.xid for e in scan.events] == [48] and scan.error == f"cannot read /dev/null: {PERMISSION_HINT}"
    assert kmsg.closed == [99]


def test_kmsg_other_read_errors_end_the_scan_with_a_line(monkeypatch: pytest.MonkeyPatch, char_device: Path) -> None:
    fake(monkeypatch, [OSError(errno.EIO, "Input/output error")])
    scan = scan_kernel_log(char_device, boot_time=0.0)
    assert scan.error == "cannot read /dev/null: Input/output error; Xids before start-up are not known"


def test_kmsg_an_endless_stream_stops_at_max_records(monkeypatch: pytest.MonkeyPatch, char_device: Path) -> None:
    fake(monkeypatch, [f"4,{i},{i},-;{LINE_48}\n".encode() for i in range(100)])
    scan = scan_kernel_log(char_device, boot_time=0.0, max_records=7)
    assert len(scan.events) == 7
    assert scan.error == "stopped reading /dev/null after 7 records; later Xids were not read"


def test_kmsg_an_empty_read_ends_the_scan(monkeypatch: pytest.MonkeyPatch, char_device: Path) -> None:
    fake(monkeypatch, [b"", f"4,1,0,-;{LINE_48}\n".encode()])
    assert scan_kernel_log(char_device, boot_time=0.0) == KernelLogScan((), None, "/dev/null")


# ---------------------------------------------------------------- the real /dev/kmsg


def test_the_real_dev_kmsg_is_read_or_the_error_says_why() -> None:
    scan = scan_kernel_log()
    assert scan.source == "/dev/kmsg"
    if not Path("/dev/kmsg").exists():
        assert scan == KernelLogScan(
            (), "cannot read /dev/kmsg: no such file; Xids before start-up are not known", "/dev/kmsg"
        )
        return
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    except PermissionError:
        assert scan == KernelLogScan((), KMSG_TEXT, "/dev/kmsg")
        return
    os.close(fd)
    assert scan.error is None, scan.error
    btime = read_boot_time()
    assert btime is not None
    for event in scan.events:  # most hosts have none; any found must be well formed
        assert event.source == "kernel-log" and event.bus_id is not None
        assert btime <= event.at <= time.time() + 1
    assert scan_kernel_log(since=time.time() + 3600).events == ()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to an unprivileged user")
def test_an_unprivileged_reader_of_dev_kmsg_gets_the_fix_in_the_error() -> None:
    """Root reads /dev/kmsg; with kernel.dmesg_restrict=1 an ordinary user must be told how to fix it."""
    restrict = Path("/proc/sys/kernel/dmesg_restrict")
    if not Path("/dev/kmsg").exists() or not restrict.exists() or restrict.read_text().strip() != "1":
        pytest.skip("needs /dev/kmsg and kernel.dmesg_restrict=1")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            os.write(write_end, (scan_kernel_log().error or "<none>").encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        message = pipe.read().decode()
    os.waitpid(pid, 0)
    assert message == KMSG_TEXT
