"""The settings themselves: frozen dataclasses with their defaults, the error type, the env names.

Why a module of its own: every part of the daemon reads a Config, and most only need these
types, not the parsers. Defaults live here, beside each field, so the documented value and
the one used are the same line. Pure: no I/O and no parsing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from watchdog.gpu.counter_trend import PredictConfig
from watchdog.gpu.health_score import HealthConfig
from watchdog.gpu.probation import ProbationConfig
from watchdog.ops.notices import NOTIFY_EVENTS
from watchdog.router.capacity import CapacityPolicy

ENV_CONFIG = "GPU_WATCHDOG_CONFIG"
ENV_STATE_DIR = "GPU_WATCHDOG_STATE_DIR"
ENV_DRY_RUN = "GPU_WATCHDOG_DRY_RUN"
ENV_LOG_FORMAT = "GPU_WATCHDOG_LOG_FORMAT"
ENV_LOG_LEVEL = "GPU_WATCHDOG_LOG_LEVEL"


class ConfigError(ValueError):
    """Bad configuration; the message is one line naming the key and the fix."""


@dataclass(frozen=True)
class BreakerConfig:
    """Crash-loop breaker, after systemd's StartLimitBurst/IntervalSec."""

    max_restarts: int = 5
    window: float = 300.0
    backoff_initial: float = 10.0
    backoff_max: float = 60.0
    cooldown: float = 3600.0


@dataclass(frozen=True)
class RamPreflightConfig:
    """Refuse a (re)start unless MemAvailable >= need x factor + reserve (seed 004)."""

    enabled: bool = True
    factor: float = 1.1
    reserve: int = 1024**3


DEFAULT_RESET_COMMAND = ("nvidia-smi", "--gpu-reset", "-i", "{uuid}")


@dataclass(frozen=True)
class GpuConfig:
    """NVML checks: zero-VRAM, Xid faults, quarantine (issue 3). Off by itself when no driver loads."""

    enabled: bool = True
    deadline: float = 2.0  # an NVML read that takes longer means "driver hung"
    zero_vram_threshold: int = 100 * 1024**2  # GPU used memory under this = model gone (no PID mapping)
    pid_mapping: bool = True  # map NVML's host PIDs to containers when this process can see them
    xid_events: bool = True
    kernel_log: str | None = "/dev/kmsg"  # scanned once at start-up for earlier Xids; None: off
    xid_overrides: Mapping[Any, Any] = field(default_factory=dict)  # same format as the shipped table's xids
    reset: bool = False  # opt-in: stop its containers, run reset_command, verify, start them
    reset_command: tuple[str, ...] = DEFAULT_RESET_COMMAND
    reset_timeout: float = 120.0
    kill_orphans: bool = False  # opt-in: SIGKILL GPU processes of no live container (host PIDs only)
    max_quarantined_fraction: float = 0.5  # never quarantine more than this share of the GPUs automatically
    health: HealthConfig = field(default_factory=HealthConfig)  # the score per GPU (gpu.health)
    probation: ProbationConfig = field(default_factory=ProbationConfig)  # verified return (gpu.probation)
    predict: PredictConfig = field(default_factory=PredictConfig)  # predictive maintenance (gpu.predict)


ALL_DOWN_MODES = ("route-anyway", "fail-fast")


@dataclass(frozen=True)
class LitellmConfig:
    """The LiteLLM proxy in front of the fleet: its config file and its rotation (issue 4)."""

    enabled: bool = False  # render the config and keep the rotation file in step every cycle
    template: str = "litellm/config.template.yaml"
    out: str = "litellm/config.yaml"  # rotation.json and the callback module are written next to it
    proxy_url: str | None = None  # e.g. http://127.0.0.1:4000: watched, and checked after a restart
    proxy_container: str | None = None  # restarted (docker restart) when the deployment set changes
    restart_command: tuple[str, ...] | None = None  # or this argv (no shell), e.g. [systemctl, restart, litellm]
    restart_timeout: float = 60.0  # how long the proxy may take to answer again after a restart
    all_down: str = "route-anyway"  # every deployment of a model out: route-anyway (LiteLLM decides) | fail-fast
    stale_after: float = 15.0  # the callback ignores a rotation file older than this (watchdog gone)
    recovery_probe_interval: float = 0.5  # probe interval for a deployment out of rotation
    # The proxy's own outlier ejection (rendered into rotation.json): after this many timeouts,
    # connection errors or 5xx in a row on real traffic, a deployment is out for base x its recent
    # ejections (at most max), never more than max_percent of a model group.
    outlier_consecutive: int = 3
    outlier_base_ejection: float = 10.0
    outlier_max_ejection: float = 300.0
    outlier_max_percent: float = 50.0
    # Model group -> the groups LiteLLM falls back to, in order, when every deployment of it is out
    # (the label gpu-watchdog.fallback adds to it); rendered as router_settings.fallbacks.
    fallbacks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class ServingConfig:
    """Serving-level liveness: a server is judged by whether it serves, not only by /health."""

    progress: bool = True  # read llama.cpp/vLLM /metrics: work waiting while tokens stand still = wedged
    progress_interval: float = 2.0  # s between two /metrics reads of a server with nothing to do (about one probe)
    progress_busy_interval: float = 2.0  # the same while it has work: a wedge is out within stall_window + this
    stall_window: float = 30.0  # s of busy, frozen counters that make a server wedged (label stall-window)
    suspect_after: float = 1.0  # s; a probe in flight max(this, 5 x its slowest recent answer) makes it suspect
    suspect_probe_interval: float = 0.5  # s between probes of a suspect (up to failure_threshold in flight)
    hung_stop_timeout: float = 2.0  # s of SIGTERM grace, at most, for a server that no longer answers
    canary_interval: float = 0.0  # s between 1-token canary completions of an idle server; 0: off (label canary)
    canary_timeout: float = 30.0  # s a canary completion may take; 2 failed in a row: wedged


@dataclass(frozen=True)
class ClusterConfig:
    """Where the fleet's shared view lives, and this host's name in it."""

    redis_url: str | None = None  # redis://HOST:PORT/DB or rediss:// (TLS); None: single host, the rotation file
    host: str | None = None  # this host's name in the fleet; None: its host name
    key_prefix: str = "gpu-watchdog"  # one per fleet: keys are PREFIX:host:NAME and PREFIX:hosts
    ttl: float | None = None  # s a host's published view lives without a refresh; None: 3 x poll_interval
    password_env: str = "GPU_WATCHDOG_REDIS_PASSWORD"  # the environment variable with the password (if any)
    username_env: str = "GPU_WATCHDOG_REDIS_USERNAME"  # the ACL user's, likewise

    @property
    def enabled(self) -> bool:
        return self.redis_url is not None

    def ttl_for(self, poll_interval: float) -> float:
        return self.ttl if self.ttl is not None else 3 * poll_interval


@dataclass(frozen=True)
class DrainConfig:
    """Drain before a planned disruption; a floor of serving replicas per model group (router/drain.py)."""

    enabled: bool = True  # off: non-urgent restarts and planned resets act at once, as before
    timeout: float = 60.0  # s a drain waits for in-flight requests, then the action goes ahead (label drain-timeout)
    min_replicas: int = 1  # serving replicas a model group keeps through non-urgent restarts; 0: no floor


@dataclass(frozen=True)
class NotifyTarget:
    """One place notifications go. `url` and header values are secrets: never in a repr, a log or an error."""

    name: str
    kind: str  # webhook | slack | discord | apprise
    url: str = field(repr=False)
    url_env: str | None = None  # where the URL came from, when from the environment
    events: tuple[str, ...] = NOTIFY_EVENTS
    key: str = "text"  # webhook: the JSON key of the message text
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    def describe(self) -> str:
        """Name, kind and where the URL comes from; no secret."""
        source = f"url from ${self.url_env}" if self.url_env else "url in the config file"
        return f"{self.name} ({self.kind}, {source})"


@dataclass(frozen=True)
class NotifyConfig:
    """Webhook notifications on state transitions; no targets: off."""

    targets: tuple[NotifyTarget, ...] = ()
    dedup_window: float = 300.0  # the same event about the same container/GPU is sent once per window
    rate_limit_per_minute: int = 10  # per target; the rest are counted and reported with the next one
    timeout: float = 5.0  # per HTTP request
    retries: int = 1  # further attempts after a failed send (connection error, timeout, HTTP 429 or 5xx)
    host: str | None = None  # the name messages give this machine; None: its host name


@dataclass(frozen=True)
class Config:
    """The daemon's settings: top-level knobs, then one section per concern; frozen, shared by every part."""

    poll_interval: float = 5.0
    probe_interval: float = 2.0  # s between two /health probes of one endpoint (suspects: faster): bench/idle_cost.py
    probe_timeout: float = 3.0
    failure_threshold: int = 3
    default_start_period: float = 120.0
    max_concurrent_restarts: int = 1
    recovery_timeout: float | None = None
    stop_settle: float = 0.3
    label_prefix: str = "gpu-watchdog"
    dry_run: bool = False
    events: bool = True
    state_dir: str | None = None
    log_format: str = "text"
    log_level: str = "INFO"
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    ram_preflight: RamPreflightConfig = field(default_factory=RamPreflightConfig)
    gpu: GpuConfig = field(default_factory=GpuConfig)
    capacity: CapacityPolicy = field(default_factory=CapacityPolicy)
    litellm: LitellmConfig = field(default_factory=LitellmConfig)
    http: str = "127.0.0.1:9108"  # /metrics, /healthz, /status; "off" disables it
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)  # several hosts, one router view (Redis)
    drain: DrainConfig = field(default_factory=DrainConfig)

    def resolved_state_dir(self, env: Mapping[str, str] | None = None) -> Path:
        """state_dir, else $XDG_STATE_HOME/gpu-watchdog, else ~/.local/state/gpu-watchdog."""
        env = os.environ if env is None else env
        if self.state_dir:
            return Path(self.state_dir).expanduser()
        base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        return Path(base) / "gpu-watchdog"


_LOG_FORMATS = ("text", "json")
MEMORY_LIMIT_MODES = ("off", "report", "enforce")
_LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")
