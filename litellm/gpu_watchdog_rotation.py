"""gpu-watchdog's rotation filter, loaded by the LiteLLM proxy (litellm_settings.callbacks).

LiteLLM calls `async_filter_deployments` on every routing attempt, retries
included, after its own cooldown filter. This drops the deployments the
watchdog has marked out in rotation.json (crashed, hung, restarting), so a dead
backend stops getting requests within a second of the watchdog noticing, and a
recovered one gets them again as soon as the watchdog sees it healthy.

Fails safe: if the rotation file is missing, unreadable, of another version or
older than its `stale_after` (the watchdog is gone), the proxy routes as LiteLLM
alone would. The file is a deny-list, so a deployment the watchdog does not know
is never dropped. When every candidate of a model is out, `all_down` decides:
"route-anyway" (default) hands LiteLLM the unfiltered list, so a wrong verdict
can never black-hole a model; "fail-fast" returns none, and the client gets an
immediate error instead of waiting on a dead backend's timeout. A model with a
fallback group that has a deployment in rotation gets none either way: LiteLLM
1.102.4 raises "No deployments available" (a 429) for an empty list, its
retries find none either (without a pause), and its fallback handler sends the
request to the fallback group: no attempt on a dead or hung primary. A failover
request goes to a fallback deployment only while it has taken fewer than its
`failover_rpm` of them in the last minute; none left is LiteLLM's 429, not a
queue on the small GPUs.

In flight too: LiteLLM's pre-call hook (once per attempt, just before it is sent) counts an attempt
in flight until its success event (a stream's comes at its end) or its failure; the counts per
deployment go into the report below, and the watchdog drains a deployment on them before a
planned restart or GPU reset.

Outcomes too (LiteLLM's success and failure hooks on the same callback): the outlier book
(gpu_watchdog_outliers.py) ejects a deployment after `outlier.consecutive` failures in a row on real
traffic, at once and on its own, within its bounds, whether or not the watchdog is there (it is the
proxy's own evidence: a stale rotation file still ejects). What it saw goes to the watchdog in
router-report-HOST-PID.json beside the rotation file (atomic, at most once a second, only when it
changed); the watchdog probes that server, and the deployments it finds serving come back in
rotation.json's `cleared` (their ejection ends).

Traffic follows GPU health: the candidates' shares in rotation.json `weights` are applied by
gpu_watchdog_picks.HealthPicker (one candidate per attempt, in proportion). Several hosts: with
GPU_WATCHDOG_CLUSTER_REDIS_URL set, the fleet's view in Redis (gpu_watchdog_cluster.py) takes the
file's place.

The file lives next to this module unless GPU_WATCHDOG_ROTATION_FILE says
otherwise. Standard library only besides LiteLLM itself (and redis-py for the cluster view).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

try:
    import gpu_watchdog_cluster as cluster_view
    import gpu_watchdog_outliers as outliers
    from gpu_watchdog_picks import FailoverCap, HealthPicker, deployment_id, failover_request, plan_weight
except ImportError:  # loaded by path (LiteLLM from the config's directory, the unit tests)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import gpu_watchdog_cluster as cluster_view
    import gpu_watchdog_outliers as outliers
    from gpu_watchdog_picks import FailoverCap, HealthPicker, deployment_id, failover_request, plan_weight

__all__ = ["FailoverCap", "HealthPicker", "deployment_id", "failover_request", "plan_weight"]  # used from here too

try:
    from litellm.integrations.custom_logger import CustomLogger
except ImportError:  # unit tests of the filter run without LiteLLM installed
    CustomLogger = object  # type: ignore[misc,assignment]

ROTATION_VERSION = 1
ENV_FILE = "GPU_WATCHDOG_ROTATION_FILE"
log = logging.getLogger("gpu_watchdog_rotation")


def rotation_path() -> Path:
    return Path(os.environ.get(ENV_FILE) or Path(__file__).with_name("rotation.json"))


class RotationState:
    """The parsed rotation file, or None with the reason it cannot be trusted."""

    def __init__(
        self,
        out: frozenset[str],
        written_at: float,
        stale_after: float,
        all_down: str,
        outlier: outliers.OutlierSettings | None = None,
        cleared: dict[str, float] | None = None,
        weights: dict[str, float] | None = None,
        fallbacks: dict[str, Any] | None = None,
    ) -> None:
        self.out = out
        self.written_at = written_at
        self.stale_after = stale_after
        self.all_down = all_down
        self.outlier = outlier or outliers.OutlierSettings()
        self.cleared = cleared or {}
        self.weights = weights or {}  # deployment id -> its share factor from GPU health (< 1 only)
        fallbacks = fallbacks or {}
        self.fallbacks: dict[str, list[str]] = {
            str(k): [str(g) for g in v] for k, v in (fallbacks.get("fallbacks") or {}).items()
        }
        self.groups: dict[str, list[str]] = {
            str(k): [str(i) for i in v] for k, v in (fallbacks.get("groups") or {}).items()
        }
        self.failover_rpm: dict[str, float] = {
            str(k): float(v) for k, v in (fallbacks.get("failover_rpm") or {}).items()
        }


def parse_rotation(text: str) -> tuple[RotationState | None, str]:
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("version") != ROTATION_VERSION:
            return None, f"not a version-{ROTATION_VERSION} rotation file"
        out = data.get("out") or {}
        cleared = data.get("cleared") or {}
        weights = data.get("weights") or {}
        return (
            RotationState(
                frozenset(str(k) for k in out),
                float(data["written_at"]),
                float(data.get("stale_after") or 15.0),
                str(data.get("all_down") or "route-anyway"),
                outliers.parse_settings(data.get("outlier")),
                {str(k): float(v) for k, v in cleared.items()} if isinstance(cleared, dict) else {},
                {str(k): min(1.0, max(0.0, float(v))) for k, v in weights.items()} if isinstance(weights, dict) else {},
                {k: data.get(k) or {} for k in ("fallbacks", "groups", "failover_rpm")},
            ),
            "ok",
        )
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        return None, f"unreadable ({type(exc).__name__}: {exc})"


def filter_deployments(
    deployments: list[Any], state: RotationState | None, now: float, model: str = ""
) -> tuple[list[Any], str]:
    """Pure: the candidates LiteLLM should pick from, and why (for the log)."""
    if state is None:
        return deployments, "no rotation state"
    if now - state.written_at > state.stale_after:
        return deployments, f"rotation state {now - state.written_at:.0f} s old (stale after {state.stale_after:g} s)"
    kept = [d for d in deployments if deployment_id(d) not in state.out]
    if kept or not deployments:
        return kept, "ok"
    serving = [g for g in state.fallbacks.get(model, []) if any(i not in state.out for i in state.groups.get(g, []))]
    if serving:  # an empty list is what makes LiteLLM fall back (its 429 "No deployments available")
        return [], f"every candidate is out of rotation: falling back to {', '.join(serving)}"
    if state.all_down == "fail-fast":
        return [], "every candidate is out of rotation: fail-fast"
    return deployments, "every candidate is out of rotation: route-anyway"


def call_deployment(kwargs: dict[str, Any]) -> tuple[str | None, str]:
    """(model_info.id, model group) of one attempt, from what LiteLLM hands its logging hooks."""
    params = kwargs.get("litellm_params") or {}
    metadata = params.get("metadata") or {}
    info = params.get("model_info") or kwargs.get("model_info") or metadata.get("model_info") or {}
    ident = info.get("id") if isinstance(info, dict) else None
    group = metadata.get("model_group") or ""
    return (str(ident) if ident is not None else None), str(group)


def call_id(kwargs: Any) -> str | None:
    """The attempt's litellm_call_id (the same in its pre-call and its success or failure event)."""
    if not isinstance(kwargs, dict):
        return None
    params = kwargs.get("litellm_params") or {}
    metadata = kwargs.get("metadata") or (params.get("metadata") if isinstance(params, dict) else None) or {}
    value = (
        kwargs.get("litellm_call_id")
        or (params.get("litellm_call_id") if isinstance(params, dict) else None)
        or (metadata.get("litellm_call_id") if isinstance(metadata, dict) else None)
    )
    return str(value) if value else None


def seconds_between(start: Any, end: Any) -> float | None:
    try:
        delta = end - start
        return float(delta.total_seconds() if hasattr(delta, "total_seconds") else delta)
    except (TypeError, ValueError):
        return None


class RotationFilter(CustomLogger):  # type: ignore[misc]
    """Reads the rotation file when it changes (a stat per routing attempt, a parse per change).

    Also LiteLLM's success and failure hooks: the outlier book, and its report to the watchdog.
    """

    REPORT_EVERY = 1.0  # s; at most one report write a second

    def __init__(self, path: Path | None = None, cluster: cluster_view.ClusterView | None = None) -> None:
        super().__init__()
        self.path = path
        self.cluster = cluster  # several hosts: the fleet's view from Redis instead of the file
        self._key: tuple[int, int, int] | None = None
        self._state: RotationState | None = None
        self._why = "not read yet"
        self._last_said = ""
        self.book = outliers.OutlierBook()
        self.picker = HealthPicker()
        self._reported = (-1, 0.0)  # (book version, when) of the last report written
        self._flush: asyncio.TimerHandle | None = None
        self._report_error = ""
        self.failover = FailoverCap()

    def _load(self) -> RotationState | None:
        if self.cluster is not None:
            return self._load_cluster(self.cluster)
        path = self.path or rotation_path()
        try:
            stat = path.stat()
        except OSError:
            self._key, self._state, self._why = None, None, f"{path} missing"
            return None
        key = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if key != self._key:
            try:
                self._state, self._why = parse_rotation(path.read_text(encoding="utf-8"))
            except OSError as exc:
                self._state, self._why = None, f"{path} unreadable: {exc}"
            self._key = key
        return self._state

    def _load_cluster(self, cluster: cluster_view.ClusterView) -> RotationState | None:
        """The fleet's view (read by its own thread): parsed once per refresh, never a Redis call here."""
        cluster.start()
        text, why = cluster.text(time.time())
        if text is None:
            self._key, self._state, self._why = None, None, why
            return None
        key = (cluster.version, -1, -1)
        if key != self._key:
            self._state, self._why = parse_rotation(text)
            self._key = key
        return self._state

    def _say(self, why: str) -> None:
        """Log transitions only: one line when the filter starts or stops trusting the file."""
        if why != self._last_said and (why != "ok" or self._last_said):
            if why == "ok":
                log.warning("gpu-watchdog rotation: following %s again", self.path or rotation_path())
            else:
                log.warning("gpu-watchdog rotation: %s; routing as LiteLLM alone would", why)
        self._last_said = why

    def select(self, deployments: list[Any], model: str = "", *, pick: bool = True) -> list[Any]:
        """The candidates for one attempt; `pick`: apply the health shares (one candidate when some are degraded)."""
        try:
            state = self._load()
            now = time.time()
            kept, why = filter_deployments(deployments, state, now, model)
            # All-down verdicts are per request; only trust or distrust of the file is logged.
            self._say(self._why if state is None else why if why.startswith("rotation state") else "ok")
        except Exception as exc:  # never take a request down with us
            log.warning("gpu-watchdog rotation: filter failed (%s); routing as LiteLLM alone would", exc)
            return deployments
        try:  # the outlier ejection: the proxy's own evidence, with or without a fresh rotation file
            if state is not None:
                self.book.settings = state.outlier
                self.book.clear(state.cleared, now)
            self.book.see_group(model, [i for i in map(deployment_id, deployments) if i is not None])
            ejected = self.book.ejected(now)
            rest = [d for d in kept if deployment_id(d) not in ejected] or kept  # never the last
            self._report(now)
        except Exception as exc:
            log.warning("gpu-watchdog outliers: filter failed (%s); not ejecting", exc)
            return kept
        try:  # traffic follows GPU health, only on a fresh rotation file (a stale one: as LiteLLM alone)
            if not pick or state is None or why != "ok" or not state.weights or len(rest) < 2:
                return rest
            return self.picker.pick(model, rest, state.weights)
        except Exception as exc:
            log.warning("gpu-watchdog rotation: health shares not applied (%s)", exc)
            return rest

    async def async_filter_deployments(
        self,
        model: str,
        healthy_deployments: list[Any],
        messages: Any,
        request_kwargs: dict[str, Any] | None = None,
        parent_otel_span: Any = None,
    ) -> list[Any]:
        failover = failover_request(model, request_kwargs)
        # A failover request is placed by the cap (the fallback deployment with the most room), not by shares.
        candidates = self.select(healthy_deployments, model, pick=not failover)
        state, now = self._state, time.time()
        if state is None or now - state.written_at > state.stale_after or not failover:
            return candidates  # the cap is the watchdog's plan: only while its file is fresh
        try:
            return self.failover.admit(candidates, state, now)
        except Exception as exc:  # never take a request down with us
            log.warning("gpu-watchdog rotation: failover cap failed (%s); not capping", exc)
            return candidates

    def log_pre_api_call(self, model: Any, messages: Any, kwargs: Any) -> None:
        """LiteLLM's pre-call hook, once per attempt just before it is sent: the attempt is in flight (never raises)."""
        try:
            ident, group = call_deployment(kwargs)
            call = call_id(kwargs)
            if ident is None or call is None:
                return
            now = time.time()
            self.book.started(call, ident, group, now)
            self._report(now)
        except Exception as exc:
            log.warning("gpu-watchdog in-flight: attempt not counted (%s)", exc)

    def outcome(self, kwargs: dict[str, Any], start_time: Any, end_time: Any, *, failed: bool) -> None:
        """One attempt's outcome into the book (never raises); it is no longer in flight."""
        try:
            ident, group = call_deployment(kwargs)
            if ident is None:
                return
            now = time.time()
            call = call_id(kwargs)
            if call is not None:
                self.book.ended(call, ident)
            if failed:
                kind = outliers.failure_kind(kwargs.get("exception"))
                if self.book.failure(ident, group, kind, now):
                    entry = self.book.entries[ident]
                    log.warning(
                        "gpu-watchdog outliers: %s ejected for %.0f s after %d consecutive failures (last: %s)",
                        ident,
                        entry.ejected_until - now,
                        entry.streak,
                        kind,
                    )
            else:
                ttft = None
                if kwargs.get("stream") and kwargs.get("completion_start_time") is not None:
                    ttft = seconds_between(start_time, kwargs["completion_start_time"])
                self.book.success(ident, group, now, seconds_between(start_time, end_time), ttft)
            self._report(now)
        except Exception as exc:
            log.warning("gpu-watchdog outliers: outcome not recorded (%s)", exc)

    async def async_log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self.outcome(kwargs, start_time, end_time, failed=False)

    async def async_log_failure_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self.outcome(kwargs, start_time, end_time, failed=True)

    async def async_post_call_failure_deployment_hook(
        self, request_data: Any, exception: Any, call_type: Any, fallback_depth: Any = None
    ) -> None:
        """Once per failed attempt, retries included (async_log_failure_event is once per client request)."""
        try:
            data = dict(request_data)
            ident, call = call_deployment(data)[0], call_id(data)
            if ident is not None and call is not None:
                self.book.ended(call, ident)
                self._report(time.time())
        except Exception as exc:
            log.warning("gpu-watchdog in-flight: attempt end not counted (%s)", exc)

    def report_path(self) -> Path:
        name = f"router-report-{socket.gethostname()}-{os.getpid()}.json"
        return (self.path or rotation_path()).with_name(name)

    def _report(self, now: float) -> None:
        """The report, when the book changed: at once, or a second after the last one."""
        version, at = self._reported
        if version == self.book.version:
            return
        wait = at + self.REPORT_EVERY - now
        if wait > 0:
            if self._flush is None:
                try:
                    loop = asyncio.get_running_loop()
                except RuntimeError:
                    return  # no loop (tests): the next call writes it
                self._flush = loop.call_later(wait, self._flushed)
            return
        self.write_report(now)

    def _flushed(self) -> None:
        self._flush = None
        self._report(time.time())

    def write_report(self, now: float) -> None:
        path = self.report_path()
        document = self.book.document(now, socket.gethostname(), os.getpid())
        self._reported = (self.book.version, now)
        try:
            temp = path.with_name(f".{path.name}.tmp")
            temp.write_text(json.dumps(document, indent=1), encoding="utf-8")
            os.replace(temp, path)
            self._report_error = ""
        except OSError as exc:
            if str(exc) != self._report_error:
                log.warning("gpu-watchdog outliers: cannot write %s (%s); ejecting on our own", path, exc)
            self._report_error = str(exc)


rotation_filter = RotationFilter(cluster=cluster_view.ClusterView.from_env())
