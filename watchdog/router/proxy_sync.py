"""Keeps the LiteLLM proxy serving the config's deployments, and watches it answer.

LiteLLM cannot change its backends without a restart (an ~11 s outage), so the proxy is
restarted only when the set of deployments it was last confirmed to serve (journal meta,
kept across watchdog restarts) differs from the config's. The restart runs on the loop's
worker pool; a failed one is said once and retried with backoff. Without a restart mechanism
the operator is told to restart it. The proxy going down or answering again is journaled.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx
from loguru import logger

from watchdog.config import Config, LitellmConfig
from watchdog.containers.diagnose import ProbeHistory
from watchdog.containers.own_actions import OwnActionWindows
from watchdog.entries import EntryKind
from watchdog.model import ProbeStatus
from watchdog.router.config_writer import api_bases_on_disk, config_out_path
from watchdog.router.problems import Problems
from watchdog.subsystem import Services

if TYPE_CHECKING:  # types only
    import docker

PROXY_TARGET = "litellm-proxy"  # the prober's key for the proxy's liveness endpoint
PROXY_HEALTH_PATH = "/health/liveliness"
META_PROXY_SET = "litellm_proxy_set"
RESTART_BACKOFF_INITIAL, RESTART_BACKOFF_MAX = 30.0, 300.0


@dataclass
class ProxyRestart:
    deployments: list[list[str]]
    started_at: float
    future: Future[str]


def restart_proxy(
    settings: LitellmConfig, client: docker.DockerClient, own: OwnActionWindows, clock: Callable[[], float]
) -> str:
    """On a worker thread: restart, then wait until the proxy answers (it re-reads its config).

    "ok ..." or "failed: why"; never raises."""
    started = time.monotonic()
    try:
        if settings.proxy_container:
            container_id = client.api.inspect_container(settings.proxy_container)["Id"]
            at = clock()
            own.open(container_id, at)
            try:
                client.api.restart(settings.proxy_container, timeout=10)
            finally:
                own.close(container_id, at, clock())
        elif settings.restart_command:
            done = subprocess.run(
                list(settings.restart_command), capture_output=True, text=True, timeout=settings.restart_timeout
            )
            if done.returncode != 0:
                tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
                return f"failed: {' '.join(settings.restart_command)} exited {done.returncode} {tail[0]}".strip()
    except Exception as exc:  # engine, OS or subprocess errors alike: reported, retried next cycle
        return f"failed: {type(exc).__name__}: {exc}"
    if settings.proxy_url is None:
        return "ok"
    deadline = started + settings.restart_timeout
    url = settings.proxy_url + PROXY_HEALTH_PATH
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2, trust_env=False).status_code == 200:
                return f"ok (answering after {time.monotonic() - started:.1f} s)"
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return f"failed: not answering at {url} {settings.restart_timeout:g} s after the restart"


class ProxySync:
    """What the proxy has loaded, the restart it is owed, and whether it answers."""

    def __init__(self, config: Config, services: Services, problems: Problems) -> None:
        self.config = config
        self.journal = services.journal
        self.client = services.client
        self.executor = services.executor
        self.own = services.own
        self.clock = services.clock
        self.problems = problems
        self._confirmed: list[list[str]] | None = None  # META_PROXY_SET, read once, then kept in step
        self._confirmed_read = False
        self._loaded: set[str] | None = None  # deployment ids the proxy has loaded (None: not read yet)
        self.restart: ProxyRestart | None = None  # the restart running now
        self.up: bool | None = None  # the proxy answered its last probe (None: not probed yet)
        self._restart_owed = False  # the proxy has not loaded the current set yet
        self._restart_retry_at = 0.0
        self._restart_backoff = RESTART_BACKOFF_INITIAL

    def apply_config(self, config: Config) -> None:
        self.config = config

    # -- what the proxy has loaded ------------------------------------------------

    def _confirmed_set(self) -> list[list[str]] | None:
        """The deployments the proxy was last confirmed to serve (journal meta, read once)."""
        if not self._confirmed_read:
            stored = self.journal.get_meta(META_PROXY_SET)
            self._confirmed = json.loads(stored) if stored else None
            self._confirmed_read = True
        return self._confirmed

    def loaded_ids(self) -> set[str]:
        """What the proxy may have loaded: the last confirmed set, plus every config written since."""
        if self._loaded is None:
            confirmed = {str(entry[0]) for entry in self._confirmed_set() or []}
            self._loaded = confirmed | set(api_bases_on_disk(config_out_path(self.config)))
        return self._loaded

    def config_written(self, deployment_ids: set[str]) -> None:
        """A config was written: an operator may restart the proxy any time, so it may have these too."""
        self.loaded_ids().update(deployment_ids)

    def _set_loaded(self, deployments: list[list[str]]) -> None:
        self.journal.set_meta(META_PROXY_SET, json.dumps(deployments))
        self._confirmed, self._confirmed_read = deployments, True
        self._loaded = {entry[0] for entry in deployments}

    # -- restarts --------------------------------------------------------------------

    def sync(self, wanted: list[list[str]], written: bool, now: float) -> None:
        """Restart the proxy only when its set of deployments really changes (a restart is an outage)."""
        if self.restart is not None:
            return
        stored = self._confirmed_set()
        if stored is not None and stored == wanted:
            self.problems.clear("proxy-restart-needed")
            return
        if stored is None and not written and not self._restart_owed:
            # First run with this state, file as it was: assume the proxy already serves it.
            self._set_loaded(wanted)
            return
        self._restart_owed = True
        if now < self._restart_retry_at:
            return  # a failed restart is retried with backoff: each attempt is an outage
        settings = self.config.litellm
        out_path = config_out_path(self.config)
        if not settings.proxy_container and not settings.restart_command:
            self.problems.say(
                "proxy-restart-needed",
                f"the fleet's deployments changed: restart the LiteLLM proxy to load {out_path} "
                "(or set litellm.proxy_container / litellm.restart_command)",
                level="WARNING",
                journal_kind=EntryKind.ROUTER_ERROR,
            )
            return
        logger.warning("the fleet's deployments changed: restarting the LiteLLM proxy to load {}", out_path)
        job = self.executor.submit(restart_proxy, settings, self.client, self.own, self.clock)
        self.restart = ProxyRestart(wanted, now, job)

    def settle(self, now: float) -> None:
        """A finished restart changes what the proxy has loaded: settled before the rotation is written."""
        if self.restart is not None and self.restart.future.done():
            self._finish_restart(self.restart, now)
            self.restart = None

    def _finish_restart(self, job: ProxyRestart, now: float) -> None:
        out_path = config_out_path(self.config)
        try:
            outcome = job.future.result()
        except Exception as exc:  # the worker's own bug: reported, retried next cycle
            outcome = f"failed: {type(exc).__name__}: {exc}"
        if outcome.startswith("ok"):
            self._restart_owed = False
            self._restart_backoff = RESTART_BACKOFF_INITIAL
            self._set_loaded(job.deployments)
            self.problems.clear("proxy-restart")
            logger.info("LiteLLM proxy restarted with {}: {}", out_path, outcome)
            self.journal.record(
                EntryKind.PROXY_RESTART, f"LiteLLM proxy restarted: {outcome}", ts=now, duration=now - job.started_at
            )
            return
        where = self.config.litellm.proxy_container or " ".join(self.config.litellm.restart_command or ())
        self._restart_retry_at = now + self._restart_backoff
        self.problems.say(
            "proxy-restart",
            f"LiteLLM proxy restart to load {out_path} {outcome}: it may reject the config (see its log: "
            f"{where}); the previous config is {out_path}.previous; retrying in {self._restart_backoff:.0f} s",
            journal_kind=EntryKind.PROXY_RESTART_FAILED,
        )
        self._restart_backoff = min(self._restart_backoff * 2, RESTART_BACKOFF_MAX)

    # -- up and down -------------------------------------------------------------------

    def watch(self, history: ProbeHistory | None, now: float) -> None:
        """The proxy's liveness probe: going down is an error, answering again (not at start) is news."""
        if history is None or not history.results:
            return
        latest = history.results[-1]
        up = latest.status == ProbeStatus.OK
        if up == self.up:
            return
        first = self.up is None
        self.up = up
        url = self.config.litellm.proxy_url
        if up:
            if not first:
                logger.info("LiteLLM proxy at {} answers again", url)
                self.journal.record(EntryKind.PROXY_UP, f"LiteLLM proxy at {url} answers again", ts=now)
            return
        message = (
            f"LiteLLM proxy at {url} is down ({latest.detail}): clients get no answers; the rotation file is "
            "still kept and containers are still healed"
        )
        logger.error(message)
        self.journal.record(EntryKind.PROXY_DOWN, message, ts=now)
