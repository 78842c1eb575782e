"""Reads the proxy's outlier reports (router-report-HOST-PID.json beside rotation.json).

The I/O edge of router_feedback.py. A daemon thread stats the report files every `every` seconds
and parses one only when it changed; a report that shows a new failure streak or a new ejection
wakes the loop at once, so the watchdog hears of it within about a second. A file that is not a
report, or one older than a minute (its proxy gone or idle), is ignored, said once in the log.
Several proxy processes write several files; `reports()` merges them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from loguru import logger

from watchdog.router.router_feedback import (
    REPORT_PREFIX,
    STALE_AFTER,
    DeploymentReport,
    in_flight_of,
    merge_reports,
    news,
    parse_report,
)


class ReportReader:
    """`start()` once; `reports()` from the loop's thread; `seen` counts reports of new streaks."""

    def __init__(
        self, directory: Callable[[], Path], clock: Callable[[], float], wake: Callable[[], None], every: float = 0.5
    ) -> None:
        self.directory = directory
        self.clock = clock
        self.wake = wake
        self.every = every
        self._files: dict[str, tuple[tuple[int, int, int], list[DeploymentReport]]] = {}
        self._merged: dict[str, DeploymentReport] = {}
        self._said: dict[str, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.new_streaks = 0
        self.watch: set[str] = set()  # deployments draining: the loop is woken when their last request ends
        self._busy: set[str] = set()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="router-reports", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.scan()
            except Exception as exc:  # never let the reader die; the next scan tries again
                logger.warning("router reports: scan failed: {}", exc)

    def scan(self) -> list[str]:
        """One pass over the report files; the deployments with news (the loop was woken for them)."""
        now = self.clock()
        try:
            paths = sorted(self.directory().glob(f"{REPORT_PREFIX}*.json"))
        except OSError:
            paths = []
        files: dict[str, tuple[tuple[int, int, int], list[DeploymentReport]]] = {}
        for path in paths:
            reports: list[DeploymentReport]
            try:
                stat = path.stat()
                key = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
                held = self._files.get(path.name)
                if held is not None and held[0] == key and now - stat.st_mtime <= STALE_AFTER:
                    files[path.name] = held
                    continue
                if held is not None and held[0] == key:  # unchanged and now stale: not read again
                    reports, why = [], f"{now - stat.st_mtime:.0f} s old (ignored after {STALE_AFTER:g} s)"
                else:
                    reports, why = parse_report(path.read_text(encoding="utf-8"), path.name, now)
            except (OSError, UnicodeDecodeError) as exc:
                reports, why = [], f"unreadable ({exc})"
                key = (0, 0, 0)
            self._say(path.name, why)
            files[path.name] = (key, reports)
        merged = merge_reports([r for _, reports in files.values() for r in reports])
        with self._lock:
            fresh = news(self._merged, merged, now)
            self._files, self._merged = files, merged
            self.new_streaks += len(fresh)
        if fresh:
            logger.info("router reports: new failure streak or ejection of {}", ", ".join(fresh))
            self.wake()
        busy = {d for d, n in in_flight_of([r for _, rs in files.values() for r in rs]).items() if n > 0}
        if (self._busy - busy) & self.watch:  # a draining deployment's last request ended: its drain may end now
            self.wake()
        self._busy = busy
        return fresh

    def _say(self, name: str, why: str) -> None:
        """Once per file and kind of reason (a stale file is said once, not at every age)."""
        kind = "stale" if " s old " in why else why
        if why != "ok" and self._said.get(name) != kind:
            logger.info("router report {} ignored: {}", name, why)
        self._said[name] = kind

    def in_flight(self) -> dict[str, int]:
        """Deployment -> attempts in flight over every fresh report (the drains wait on these)."""
        with self._lock:
            return in_flight_of([r for _, reports in self._files.values() for r in reports])

    def reports(self) -> dict[str, DeploymentReport]:
        with self._lock:
            return dict(self._merged)
