"""Notifications, the sending part: a bounded queue and one worker thread, so the loop never waits.

The journal tells the `NotificationDispatcher` about every entry it writes (`Journal.subscribe`); the pure
`watchdog.ops.notices` says which are state transitions and shapes them. `observe()` only maps
and queues (`put_nowait`: a full queue drops and counts). The worker de-duplicates and
rate-limits per target (`notices.Gate`) and posts with a short timeout and a bounded retry;
a failure is logged and counted, then dropped.

Webhook URLs, tokens and header values are secrets: a log line names a target by its name
and kind, and an error by its type or HTTP status, never by its text (httpx puts the URL
in its exception messages).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import queue
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, Protocol

import httpx
from loguru import logger

from watchdog import __version__
from watchdog.config import ConfigError, NotifyConfig, NotifyTarget
from watchdog.ops.notices import Gate, Notice, notice_for_test, notice_from_entry, payload

QUEUE_SIZE = 256
RETRY_BACKOFF = 0.5  # s before the first retry, doubling
STOP_DEADLINE = 3.0  # s the daemon gives the queue at shutdown
OUTCOMES = ("sent", "failed", "suppressed", "dropped")


class SendFailed(Exception):
    """A notification that did not get through; the message is safe to log (no URL, no token)."""


class Sender(Protocol):
    target: NotifyTarget

    def send(self, notice: Notice, suppressed: int) -> None: ...

    def close(self) -> None: ...


def _why(exc: BaseException, timeout: float) -> str:
    """An httpx failure without its message (which carries the URL)."""
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out after {timeout:g} s"
    if isinstance(exc, httpx.ConnectError):
        return "connection failed (ConnectError)"
    return type(exc).__name__


class HttpSender:
    """webhook, slack and discord targets: one JSON POST, retried on a connection error, timeout, 429 or 5xx."""

    def __init__(self, target: NotifyTarget, timeout: float, retries: int, stopping: threading.Event) -> None:
        self.target = target
        self.timeout = timeout
        self.retries = retries
        self._stopping = stopping
        self._headers = {"User-Agent": f"gpu-watchdog/{__version__}", **dict(target.headers)}
        self._client = httpx.Client(timeout=timeout, follow_redirects=False)
        # httpx logs each request with its URL at INFO through `logging`: never let that reach a handler.
        logging.getLogger("httpx").setLevel(logging.WARNING)

    def send(self, notice: Notice, suppressed: int) -> None:
        body = payload(self.target.kind, notice, suppressed, self.target.key)
        why = "not sent"
        for attempt in range(1 + self.retries):
            if attempt and self._stopping.wait(RETRY_BACKOFF * 2 ** (attempt - 1)):
                break  # shutting down: no more retries
            try:
                response = self._client.post(self.target.url, json=body, headers=self._headers)
            except Exception as exc:  # httpx.HTTPError, InvalidURL, ...: only the type is safe to say
                why = _why(exc, self.timeout)
                continue
            if 200 <= response.status_code < 300:
                return
            why = f"HTTP {response.status_code}"
            if response.status_code != 429 and response.status_code < 500:
                break  # the target refuses it: retrying will not help
        raise SendFailed(why)

    def close(self) -> None:
        self._client.close()


class AppriseSender:
    """apprise targets (the optional `apprise` package): its URL schemes reach ~100 services."""

    def __init__(self, target: NotifyTarget, timeout: float) -> None:
        import apprise

        # apprise logs through `logging`, URLs included at debug level: keep it out of our output.
        quiet = logging.getLogger("apprise")
        quiet.setLevel(logging.CRITICAL + 1)
        quiet.propagate = False
        self.target = target
        self.timeout = timeout
        self._apprise = apprise.Apprise()
        self._takes_timeout = "timeout" in inspect.signature(self._apprise.notify).parameters
        if not self._apprise.add(target.url):
            raise ConfigError(
                f"config: notify target {target.name} (apprise): apprise does not accept its URL "
                "(value not shown); check the scheme against apprise's list of services"
            )

    def send(self, notice: Notice, suppressed: int) -> None:
        body = payload("apprise", notice, suppressed)
        extra: dict[str, Any] = {"timeout": self.timeout * 2} if self._takes_timeout else {}
        try:
            ok = self._apprise.notify(body=body["body"], title=body["title"], notify_type=body["type"], **extra)
        except Exception as exc:
            raise SendFailed(f"apprise raised {type(exc).__name__}") from None
        if not ok:
            raise SendFailed("apprise reported a failure")

    def close(self) -> None:
        return None


def build_senders(config: NotifyConfig, stopping: threading.Event | None = None) -> dict[str, Sender]:
    """One sender per target; ConfigError when apprise refuses a URL."""
    stopping = stopping or threading.Event()
    senders: dict[str, Sender] = {}
    try:
        for target in config.targets:
            if target.kind == "apprise":
                senders[target.name] = AppriseSender(target, config.timeout)
            else:
                senders[target.name] = HttpSender(target, config.timeout, config.retries, stopping)
    except ConfigError:
        for sender in senders.values():
            sender.close()
        raise
    return senders


class NotificationDispatcher:
    """The daemon's notifications: `observe` is the journal observer, a worker thread sends."""

    def __init__(
        self,
        config: NotifyConfig,
        senders: Mapping[str, Sender] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_outcome: Callable[[str, str], None] | None = None,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self._stopping = threading.Event()
        self.config = config
        self.host = config.host or socket.gethostname()
        self.clock = clock
        self.on_outcome = on_outcome
        self.counts: Counter[tuple[str, str]] = Counter()
        self.dropped = 0
        self.queue: queue.Queue[Notice | None] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._targets: list[tuple[NotifyTarget, Sender, Gate]] = []
        self._thread: threading.Thread | None = None
        self.reconfigure(config, senders)

    # -- set-up ----------------------------------------------------------------

    def reconfigure(self, config: NotifyConfig, senders: Mapping[str, Sender] | None = None) -> None:
        """New targets (SIGHUP). An unchanged target keeps its de-duplication and rate-limit memory."""
        fresh = dict(senders) if senders is not None else build_senders(config, self._stopping)
        with self._lock:
            old = {t.name: (t, s, g) for t, s, g in self._targets}
            targets = []
            limits = (config.dedup_window, config.rate_limit_per_minute)
            kept = limits == (self.config.dedup_window, self.config.rate_limit_per_minute)
            for target in config.targets:
                before = old.get(target.name)
                gate = before[2] if kept and before is not None and before[0] == target else Gate(*limits)
                targets.append((target, fresh[target.name], gate))
            self._targets, self.config = targets, config
            self.host = config.host or socket.gethostname()
        for _, sender, _ in old.values():
            sender.close()

    @property
    def targets(self) -> list[NotifyTarget]:
        return [t for t, _, _ in self._targets]

    def start(self) -> NotificationDispatcher:
        self._thread = threading.Thread(target=self._run, name="notify", daemon=True)
        self._thread.start()
        return self

    def stop(self, deadline: float = STOP_DEADLINE) -> None:
        """Send what is queued for up to `deadline` seconds (no retries now), then leave the rest."""
        self._stopping.set()
        if self._thread is None:
            return
        ends = time.monotonic() + deadline
        with contextlib.suppress(queue.Full):
            self.queue.put(None, timeout=deadline)
        self._thread.join(max(0.0, ends - time.monotonic()))
        if self._thread.is_alive():  # its connection is left to the process's exit
            logger.warning("notifications: a target is slow or hangs; stopping with what is queued unsent")
            return
        for _, sender, _ in self._targets:
            sender.close()

    # -- the loop's side: never blocks, never raises -------------------------

    def observe(self, entry: Mapping[str, Any]) -> None:
        """The journal observer: map the entry, queue the notice if it is one."""
        try:
            notice = notice_from_entry(entry, self.host)
            if notice is not None:
                self.submit(notice)
        except Exception as exc:
            logger.error("notifications: entry not mapped ({})", type(exc).__name__)

    def submit(self, notice: Notice) -> bool:
        if self._stopping.is_set():
            return False
        try:
            self.queue.put_nowait(notice)
            return True
        except queue.Full:
            self.dropped += 1
            for target in self._matching(notice):
                self._count(target, "dropped")
            if self.dropped == 1 or self.dropped % 100 == 0:
                logger.warning("notifications: queue full, {} notice(s) dropped so far", self.dropped)
            return False

    # -- the worker ------------------------------------------------------------

    def _matching(self, notice: Notice) -> list[NotifyTarget]:
        return [t for t, _, _ in self._targets if notice.event in t.events]

    def _count(self, target: NotifyTarget, outcome: str) -> None:
        with self._count_lock:  # the loop's thread counts drops, the worker the rest
            self.counts[(target.name, outcome)] += 1
        if self.on_outcome is not None:
            try:
                self.on_outcome(target.name, outcome)
            except Exception as exc:
                logger.error("notifications: outcome not counted ({})", type(exc).__name__)

    def deliver(self, notice: Notice) -> None:
        """Send one notice to every target that takes its event (the worker calls this; tests may too)."""
        with self._lock:
            targets = list(self._targets)
        for target, sender, gate in targets:
            if notice.event not in target.events:
                continue
            log = logger.bind(target=target.name, kind=target.kind, event=notice.event)
            admitted, suppressed = gate.admit(notice, self.clock())
            if not admitted:
                self._count(target, "suppressed")
                log.debug("notification {} about {} suppressed (duplicate or rate limit)", notice.event, notice.subject)
                continue
            try:
                sender.send(notice, suppressed)
            except SendFailed as exc:
                self._count(target, "failed")
                log.warning(
                    "notification {} about {} to {} ({}) failed: {}; dropped",
                    notice.event,
                    notice.subject,
                    target.name,
                    target.kind,
                    exc,
                )
                continue
            except Exception as exc:  # a sender bug: said by type only, the worker goes on
                self._count(target, "failed")
                log.error("notification to {} ({}) failed: {}; dropped", target.name, target.kind, type(exc).__name__)
                continue
            self._count(target, "sent")
            log.info("notification {} about {} sent to {} ({})", notice.event, notice.subject, target.name, target.kind)

    def _run(self) -> None:
        while True:
            notice = self.queue.get()
            if notice is None:
                return
            try:
                self.deliver(notice)
            except Exception as exc:
                logger.error("notifications: worker error ({})", type(exc).__name__)


def send_test(config: NotifyConfig, only: str | None = None) -> list[tuple[NotifyTarget, str | None]]:
    """`gpu-watchdog notify --test`: one test message to each target (or the one named), synchronously.

    Returns (target, None) when it got through, else (target, why); ConfigError for a bad target.
    """
    chosen = tuple(t for t in config.targets if only is None or t.name == only)
    senders = build_senders(replace(config, targets=chosen))
    host = config.host or socket.gethostname()
    results: list[tuple[NotifyTarget, str | None]] = []
    try:
        for target in chosen:
            try:
                senders[target.name].send(notice_for_test(host, time.time(), target.name), 0)
                results.append((target, None))
            except SendFailed as exc:
                results.append((target, str(exc)))
    finally:
        for sender in senders.values():
            sender.close()
    return results
