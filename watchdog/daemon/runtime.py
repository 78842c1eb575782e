"""Running the daemon: everything between `gpu-watchdog --daemon` (or `run --once`) and the loop. I/O.

The order matters and is kept here in one place: one watchdog per state directory (wait for the
lock), a journal even when the disk fails (in memory, said loudly), an engine that answers (wait,
said once), then the loop with its HTTP endpoint, notifications and systemd's notify protocol.
SIGTERM/SIGINT finish the current cycle and stop; SIGHUP reloads the config after a cycle. The
CLI parses the arguments and calls `run_daemon` or `run_once`; a failure that stops a start is
`CannotRun` (one line with the fix) or `ConfigError`.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from loguru import logger

from watchdog import __version__
from watchdog.config import Config, ConfigError, NotifyConfig, load_config
from watchdog.containers.engine import ENGINE_ERRORS
from watchdog.daemon.http_endpoint import start_http
from watchdog.daemon.lock import InstanceLock, LockHeld
from watchdog.daemon.loop import CycleResult, Watchdog
from watchdog.entries import EntryKind
from watchdog.journal import Journal
from watchdog.ops.connect import CannotRun, connect_engine, docker_client, open_journal
from watchdog.ops.messages import engine_unreachable
from watchdog.ops.notify import NotificationDispatcher
from watchdog.ops.systemd import SystemdNotifier

ENGINE_RETRY = 2.0  # s between pings while the daemon waits for the engine


@dataclass(frozen=True)
class ConfigSource:
    """Where the running config comes from (the file and the command line's overrides): SIGHUP reads it again."""

    path: str | None
    overrides: Mapping[str, Any]

    def load(self, *, secrets: bool = True) -> Config:
        """The file with the overrides that were given on top; ConfigError when the file is unusable."""
        config = load_config(self.path, secrets=secrets)
        return replace(config, **{k: v for k, v in self.overrides.items() if v is not None})


class StopSignals:
    """SIGTERM/SIGINT: finish the current cycle and stop. SIGHUP: reload the config after the cycle. Both wake it."""

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self.reload_requested = threading.Event()
        self.wake: Callable[[], None] | None = None  # the loop's, once it exists

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)

    def _on_stop(self, signum: int, _frame: object) -> None:
        logger.info("received {}: finishing the current cycle and stopping", signal.Signals(signum).name)
        self.stopping.set()
        if self.wake is not None:
            self.wake()

    def _on_hup(self, _signum: int, _frame: object) -> None:
        self.reload_requested.set()
        if self.wake is not None:
            self.wake()


def print_effective(config: Config) -> None:
    """The settings in force, in one line: at the start and after each reload."""
    logger.info(
        "gpu-watchdog {} starting: poll {} s, probe timeout {} s, failures {}, max concurrent restarts {}, "
        "breaker {} in {} s (backoff {}-{} s, cooldown {} s), RAM preflight {} (x{} + {} B), label prefix '{}', "
        "events {}, dry-run {}, state {}",
        __version__,
        config.poll_interval,
        config.probe_timeout,
        config.failure_threshold,
        config.max_concurrent_restarts,
        config.breaker.max_restarts,
        config.breaker.window,
        config.breaker.backoff_initial,
        config.breaker.backoff_max,
        config.breaker.cooldown,
        "on" if config.ram_preflight.enabled else "off",
        config.ram_preflight.factor,
        config.ram_preflight.reserve,
        config.label_prefix,
        "on" if config.events else "off",
        config.dry_run,
        config.resolved_state_dir(),
    )


def daemon_journal(config: Config) -> Journal:
    """The daemon heals even when its journal cannot be opened (full or read-only disk): in memory, said loudly."""
    state_dir = config.resolved_state_dir()
    try:
        return Journal.in_dir(state_dir)
    except Exception as exc:  # sqlite3.Error or OSError: the disk, not the fleet
        logger.critical(
            "cannot open the journal in {} ({}): healing WITHOUT a persistent record (kept in memory, lost at exit);"
            " free space or fix the disk, then restart gpu-watchdog",
            state_dir,
            exc,
        )
        return Journal.in_dir(state_dir, in_memory=True)


def wait_for_lock(lock: InstanceLock, stopping: threading.Event, poll: float) -> bool:
    """Hold the state directory's lock; while another watchdog holds it, wait (said once). False: stopped meanwhile."""
    said = False
    while not stopping.is_set():
        try:
            lock.acquire()
            return True
        except LockHeld as exc:
            if not said:
                logger.warning("{}; waiting for it to exit (two watchdogs must not fight over one fleet)", exc)
                said = True
            stopping.wait(poll)
    return False


def wait_for_engine(stopping: threading.Event) -> bool:
    """Until the engine answers a ping (said once while it does not). False: stopped meanwhile."""
    said = False
    while not stopping.is_set():
        try:
            client = docker_client()
            client.ping()
            client.close()
            return True
        except ENGINE_ERRORS as exc:
            if not said:
                logger.error("{}", engine_unreachable(exc, "retrying until it answers"))
                said = True
            stopping.wait(ENGINE_RETRY)
    return False


def notification_dispatcher(config: NotifyConfig) -> NotificationDispatcher | None:
    """The dispatcher for the configured targets, not started; None when there are none. ConfigError: unusable."""
    return NotificationDispatcher(config) if config.targets else None


def attach_notifications(dispatcher: NotificationDispatcher, watchdog: Watchdog, journal: Journal) -> None:
    """Every journal entry goes to the dispatcher (it picks the transitions); outcomes are counted in the metrics."""
    dispatcher.on_outcome = watchdog.metrics.notification
    journal.subscribe(dispatcher.observe)
    dispatcher.start()
    logger.info(
        "notifications on state transitions to {}", ", ".join(t.describe() for t in dispatcher.targets) or "no target"
    )


def reload_notifications(
    dispatcher: NotificationDispatcher | None, fresh: NotifyConfig, watchdog: Watchdog, journal: Journal
) -> NotificationDispatcher | None:
    """SIGHUP: the new targets replace the old (ConfigError, nothing changed, when one is unusable)."""
    if fresh == watchdog.config.notify:
        return dispatcher
    if dispatcher is None:
        created = notification_dispatcher(fresh)
        if created is not None:
            attach_notifications(created, watchdog, journal)
        return created
    dispatcher.reconfigure(fresh)
    logger.info(
        "SIGHUP: notification targets now {}", ", ".join(t.describe() for t in dispatcher.targets) or "none (off)"
    )
    return dispatcher


class AfterCycle:
    """What the daemon does between cycles: tell systemd it lives, and apply a SIGHUP's config reload."""

    def __init__(
        self,
        watchdog: Watchdog,
        journal: Journal,
        source: ConfigSource,
        *,
        reload_requested: threading.Event,
        dispatcher: NotificationDispatcher | None,
    ) -> None:
        self.watchdog = watchdog
        self.journal = journal
        self.source = source
        self.reload_requested = reload_requested
        self.dispatcher = dispatcher
        self.systemd = SystemdNotifier()

    def __call__(self, result: CycleResult) -> None:
        managed = sum(1 for c in result.containers if c.managed)
        if self.watchdog.cycles == 1:
            logger.info(
                "healing loop running: {} managed container(s), {} fault(s), events {}",
                managed,
                len(result.diagnosis.faults),
                "on" if self.watchdog.config.events else "off (polling only)",
            )
            self.systemd.ready(f"watching {managed} container(s)")
        self.systemd.heartbeat(f"{managed} container(s), {len(result.diagnosis.faults)} fault(s)")
        if self.reload_requested.is_set():
            self.reload_requested.clear()
            self.reload()

    def reload(self) -> None:
        """SIGHUP: the file read again; a config that does not load changes nothing and is said once."""
        self.systemd.reloading()
        try:
            fresh = self.source.load()
            self.dispatcher = reload_notifications(self.dispatcher, fresh.notify, self.watchdog, self.journal)
        except ConfigError as exc:
            logger.error("SIGHUP: config not reloaded, keeping the running one: {}", exc)
            self.systemd.ready("config reload refused; running config kept")
            return
        self.watchdog.apply_config(fresh)
        self.systemd.ready("config reloaded")
        logger.info("SIGHUP: config reloaded")
        print_effective(self.watchdog.config)


def run_daemon(config: Config, source: ConfigSource) -> None:
    """The healing loop until SIGTERM/SIGINT. ConfigError: a notify target is unusable (nothing started)."""
    dispatcher = notification_dispatcher(config.notify)  # a target apprise refuses is a config error before anything
    signals = StopSignals()
    signals.install()
    print_effective(config)
    lock = InstanceLock(config.resolved_state_dir())
    if not wait_for_lock(lock, signals.stopping, config.poll_interval):
        return
    journal = daemon_journal(config)
    if not wait_for_engine(signals.stopping):
        journal.close()
        lock.release()
        return

    watchdog = Watchdog(config, journal, docker_client)
    signals.wake = watchdog.wake.set
    journal.record(
        EntryKind.DAEMON_START, f"gpu-watchdog {__version__} started (dry-run {config.dry_run})", ts=time.time()
    )
    watchdog.reconcile()
    watchdog.start_events()
    watchdog.start_gpu()
    http_server = start_http(watchdog, journal)
    if dispatcher is not None:
        attach_notifications(dispatcher, watchdog, journal)
    after_cycle = AfterCycle(
        watchdog, journal, source, reload_requested=signals.reload_requested, dispatcher=dispatcher
    )
    try:
        watchdog.run_forever(signals.stopping, on_cycle=after_cycle)
    finally:
        after_cycle.systemd.stopping()
        if http_server is not None:
            http_server.stop()
        watchdog.shutdown()
        if after_cycle.dispatcher is not None:
            after_cycle.dispatcher.stop()  # what is queued gets a few seconds
            journal.unsubscribe(after_cycle.dispatcher.observe)
        journal.record(EntryKind.DAEMON_STOP, "gpu-watchdog stopped", ts=time.time())
        journal.close()
        lock.release()
    logger.info("stopped")


def run_once(config: Config, report: Callable[[CycleResult], None]) -> None:
    """One cycle, the restarts it issues waited for; `report` is told the result before that wait. CannotRun."""
    client = connect_engine()
    journal = open_journal(config)
    lock = InstanceLock(config.resolved_state_dir())
    try:
        lock.acquire()
    except LockHeld as exc:
        journal.close()
        raise CannotRun(f"{exc}; a daemon is already healing this fleet") from exc
    watchdog = Watchdog(config, journal, lambda: client)
    try:
        watchdog.reconcile()
        watchdog.replay_events()
        watchdog.start_gpu()
        watchdog.gpu.wait_first_reading(config.gpu.deadline + 1.0)
        watchdog.gpu.drain_pending_xids()
        result = watchdog.cycle()
        if not result.engine_up:
            raise CannotRun(engine_unreachable("it stopped answering during the cycle"))
        report(result)
    finally:
        watchdog.shutdown()
        lock.release()
        journal.close()
