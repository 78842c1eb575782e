"""Xid lines from the kernel log, read once at start-up.

NVML only reports Xids that happen while the watchdog listens; the kernel ring
buffer still holds the ones from before (a crash, a restart of the watchdog).
This is I/O at the edge: scan_kernel_log() never raises, a failure is a line
in KernelLogScan.error, and the loop carries on knowing less.

The driver writes lines such as
    NVRM: Xid (PCI:0000:3b:00): 48, pid=1234, name=python3, Ch 00000010
    NVRM: Xid (PCI:0000:01:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus.
    NVRM: Xid (0000:03:00): 13, 0000 00000000 ...            (older drivers)
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from watchdog.gpu.readings import normalise_bus_id
from watchdog.model import XidEvent

SOURCE = "kernel-log"
KMSG = Path("/dev/kmsg")
PERMISSION_HINT = (
    "permission denied (run as root, or sysctl kernel.dmesg_restrict=0); Xids before start-up are not known"
)

XID_LINE = re.compile(
    r"NVRM: Xid \((?:PCI:)?(?P<bus>[0-9a-fA-F]{1,8}:[0-9a-fA-F]{1,2}:[0-9a-fA-F]{1,2}(?:\.[0-7])?)\):"
    r"\s*(?P<xid>[0-9]{1,6})\b(?P<rest>.*)$"
)
_PID = re.compile(r"\bpid=(?P<q>['\"]?)(?P<pid>[0-9]{1,10}|<unknown>)(?P=q)")
_NAME = re.compile(r"\bname=(?P<name>[^,]*)")
# "PRI,SEQ,USEC_SINCE_BOOT,FLAGS[,...];MESSAGE": /dev/kmsg records, and `dmesg -r`-like saves of them.
_KMSG_RECORD = re.compile(r"^[0-9]{1,10},[0-9]{1,20},(?P<usec>[0-9]{1,20}),[^;]*;(?P<msg>.*)$", re.DOTALL)
# `dmesg`: "[ 1234.567890] message"
_DMESG = re.compile(r"^\[\s*(?P<sec>[0-9]{1,12}(?:\.[0-9]{1,9})?)\]\s?(?P<msg>.*)$")
# `dmesg -T`: "[Thu Nov 20 12:52:01 2025] message" (local time)
_DMESG_T = re.compile(r"^\[(?P<stamp>[A-Z][a-z]{2} [A-Z][a-z]{2} [ 0-9]?[0-9] [0-9:]{8} [0-9]{4})\]\s?(?P<msg>.*)$")


@dataclass(frozen=True)
class KernelLogScan:
    """The Xids found, and why the scan fell short when it did."""

    events: tuple[XidEvent, ...]
    error: str | None = None
    source: str = ""


def parse_xid_line(text: str, at: float) -> XidEvent | None:
    """An XidEvent from one kernel log message (any prefix before NVRM is ignored); None if it is not an Xid."""
    match = XID_LINE.search(text.rstrip("\r\n"))
    if match is None:
        return None
    rest = match.group("rest")
    pid_match = _PID.search(rest)
    pid = int(pid_match.group("pid")) if pid_match and pid_match.group("pid").isdigit() else None
    name_match = _NAME.search(rest)
    process = name_match.group("name").strip().strip("'\"") if name_match else None
    if not process or process == "<unknown>":
        process = None
    return XidEvent(
        at=at,
        xid=int(match.group("xid")),
        bus_id=normalise_bus_id(match.group("bus")),
        pid=pid,
        process=process,
        source=SOURCE,
    )


def read_boot_time(proc_stat: Path = Path("/proc/stat")) -> float | None:
    """The boot time (`btime`, seconds since the epoch) kernel timestamps count from."""
    try:
        with proc_stat.open(encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _boot_time(given: float | None) -> float:
    if given is not None:
        return given
    btime = read_boot_time()
    if btime is not None:
        return btime
    # No /proc/stat (not Linux, or a restricted sandbox): the monotonic clock counts from boot.
    return time.time() - time.monotonic()


def _parse_kmsg_record(record: str, boot_time: float) -> XidEvent | None:
    match = _KMSG_RECORD.match(record)
    if match is None:
        return None
    # The first line is the message; the following " KEY=value" lines are its dictionary.
    message = match.group("msg").split("\n", 1)[0]
    return parse_xid_line(message, boot_time + int(match.group("usec")) / 1e6)


def _parse_file_line(line: str, boot_time: float) -> XidEvent | None:
    """One line of a saved log: kmsg format, `dmesg`, `dmesg -T`, or plain (at = boot time)."""
    if "NVRM: Xid" not in line:
        return None  # most lines, and kmsg continuation lines (" KEY=value")
    if (kmsg := _KMSG_RECORD.match(line)) is not None:
        return parse_xid_line(kmsg.group("msg"), boot_time + int(kmsg.group("usec")) / 1e6)
    if (dmesg := _DMESG.match(line)) is not None:
        return parse_xid_line(dmesg.group("msg"), boot_time + float(dmesg.group("sec")))
    if (dmesg_t := _DMESG_T.match(line)) is not None:
        try:
            at = time.mktime(time.strptime(" ".join(dmesg_t.group("stamp").split()), "%a %b %d %H:%M:%S %Y"))
        except (ValueError, OverflowError):
            at = boot_time
        return parse_xid_line(dmesg_t.group("msg"), at)
    return parse_xid_line(line, boot_time)


def _keep(event: XidEvent | None, since: float | None) -> XidEvent | None:
    """The event unless it is older than `since`."""
    return event if event is not None and (since is None or event.at >= since) else None


def _os_error(path: Path, exc: OSError, kmsg: bool = False) -> str:
    if isinstance(exc, PermissionError):
        if kmsg:
            return f"cannot read {path}: {PERMISSION_HINT}"
        return f"cannot read {path}: permission denied; Xids before start-up are not known"
    if isinstance(exc, FileNotFoundError):
        return f"cannot read {path}: no such file; Xids before start-up are not known"
    reason = exc.strerror or errno.errorcode.get(exc.errno or 0, "") or type(exc).__name__
    return f"cannot read {path}: {reason}; Xids before start-up are not known"


def _scan_kmsg(path: Path, since: float | None, boot_time: float, max_records: int) -> KernelLogScan:
    """/dev/kmsg: every read() returns one record; EAGAIN is the end of the buffer."""
    events: list[XidEvent] = []
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        return KernelLogScan((), _os_error(path, exc, kmsg=True), str(path))
    error: str | None = None
    try:
        for _ in range(max_records):
            try:
                chunk = os.read(fd, 8192)
            except BlockingIOError:
                break  # read everything the ring buffer holds
            except BrokenPipeError:
                continue  # the record we were at was overwritten; the next read goes on
            except OSError as exc:
                error = _os_error(path, exc, kmsg=True)
                break
            if not chunk:
                break
            event = _keep(_parse_kmsg_record(chunk.decode("utf-8", errors="replace"), boot_time), since)
            if event is not None:
                events.append(event)
        else:
            error = f"stopped reading {path} after {max_records} records; later Xids were not read"
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    return KernelLogScan(tuple(events), error, str(path))


def _scan_file(path: Path, since: float | None, boot_time: float, max_records: int) -> KernelLogScan:
    """A saved log, line by line (tests, or an operator's `dmesg > file`)."""
    events: list[XidEvent] = []
    error: str | None = None
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            for count, line in enumerate(handle):
                if count >= max_records:
                    error = f"stopped reading {path} after {max_records} lines; later Xids were not read"
                    break
                event = _keep(_parse_file_line(line.rstrip("\r\n"), boot_time), since)
                if event is not None:
                    events.append(event)
    except OSError as exc:
        error = _os_error(path, exc)
    return KernelLogScan(tuple(events), error, str(path))


def scan_kernel_log(
    path: Path = KMSG,
    since: float | None = None,
    boot_time: float | None = None,
    max_records: int = 100_000,
) -> KernelLogScan:
    """The Xids in the kernel log (or a saved copy) at or after `since`; never raises.

    Timestamps are boot_time (default: btime from /proc/stat) plus the record's
    time since boot. A character device is read with the /dev/kmsg protocol, a
    regular file line by line.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        return KernelLogScan((), _os_error(path, exc), str(path))
    except ValueError as exc:  # e.g. a NUL byte in the path
        return KernelLogScan((), f"cannot read {str(path)!r}: {exc}", repr(str(path)))
    boot = _boot_time(boot_time)
    if stat.S_ISCHR(mode):
        return _scan_kmsg(path, since, boot, max(0, max_records))
    if not stat.S_ISREG(mode):
        what = "a directory" if stat.S_ISDIR(mode) else "neither a regular file nor a kernel log device"
        return KernelLogScan((), f"cannot read {path}: it is {what}; Xids before start-up are not known", str(path))
    return _scan_file(path, since, boot, max(0, max_records))
