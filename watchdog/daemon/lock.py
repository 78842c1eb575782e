"""One watchdog per state directory: two must never fight over the same fleet.

An exclusive flock on `<state_dir>/gpu-watchdog.lock`; the holder writes who it
is into the file so the second instance can say what it waits for. The kernel
drops the lock when its holder dies, even by SIGKILL.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import IO

LOCK_FILE = "gpu-watchdog.lock"


class LockHeld(RuntimeError):
    """Another watchdog holds the lock; the message says which."""


class InstanceLock:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_FILE
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - held for the process lifetime
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            raise LockHeld(f"another gpu-watchdog holds {self.path} ({describe_holder(holder)})") from None
        try:  # who holds it, for the next instance's message; a full disk must not stop the watchdog
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}))
            handle.flush()
        except OSError:
            pass
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def describe_holder(text: str) -> str:
    try:
        info = json.loads(text)
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info["since"])))
        return f"pid {info['pid']} on {info['host']}, since {since}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown"
