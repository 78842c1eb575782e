"""systemd's notify protocol (sd_notify), standard library only: readiness and the watchdog heartbeat.

Under `Type=notify` + `WatchdogSec=`, systemd sets NOTIFY_SOCKET and WATCHDOG_USEC.
The daemon says READY=1 after its first cycle and WATCHDOG=1 after each later cycle
(at most twice per interval), so a loop that stops cycling (a hung call, a
deadlock) stops the heartbeat and systemd restarts the service. Outside systemd
every call is a no-op.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping


class SystemdNotifier:
    """sd_notify datagrams to NOTIFY_SOCKET: READY, WATCHDOG heartbeats, RELOADING, STOPPING."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.address = env.get("NOTIFY_SOCKET") or None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        self.interval = int(usec) / 1e6 if usec.isdigit() and int(usec) > 0 and mine else None
        self._last_ping = 0.0

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, state: str) -> bool:
        """One datagram to systemd; False (never an exception) when it cannot be sent."""
        if self.address is None:
            return False
        address = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(address)
                sock.sendall(state.encode())
            return True
        except OSError:
            return False

    def ready(self, status: str) -> None:
        self.send(f"READY=1\nSTATUS={status}")

    def heartbeat(self, status: str | None = None) -> None:
        """WATCHDOG=1 at most twice per WatchdogSec; the caller calls it after every cycle."""
        if self.interval is None:
            return
        now = time.monotonic()
        if now - self._last_ping >= self.interval / 2:
            self._last_ping = now
            self.send("WATCHDOG=1" + (f"\nSTATUS={status}" if status else ""))

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def reloading(self) -> None:
        self.send("RELOADING=1")
