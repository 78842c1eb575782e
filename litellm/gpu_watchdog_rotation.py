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
immediate error instead of waiting on a dead backend's timeout.

The file lives next to this module unless GPU_WATCHDOG_ROTATION_FILE says
otherwise. Standard library only besides LiteLLM itself.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

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

    def __init__(self, out: frozenset[str], written_at: float, stale_after: float, all_down: str) -> None:
        self.out = out
        self.written_at = written_at
        self.stale_after = stale_after
        self.all_down = all_down


def parse_rotation(text: str) -> tuple[RotationState | None, str]:
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("version") != ROTATION_VERSION:
            return None, f"not a version-{ROTATION_VERSION} rotation file"
        out = data.get("out") or {}
        return (
            RotationState(
                frozenset(str(k) for k in out),
                float(data["written_at"]),
                float(data.get("stale_after") or 15.0),
                str(data.get("all_down") or "route-anyway"),
            ),
            "ok",
        )
    except (ValueError, TypeError, KeyError) as exc:
        return None, f"unreadable ({type(exc).__name__}: {exc})"


def deployment_id(deployment: Any) -> str | None:
    if not isinstance(deployment, dict):
        return None
    info = deployment.get("model_info") or {}
    value = info.get("id") if isinstance(info, dict) else None
    return str(value) if value is not None else None


def filter_deployments(deployments: list[Any], state: RotationState | None, now: float) -> tuple[list[Any], str]:
    """Pure: the candidates LiteLLM should pick from, and why (for the log)."""
    if state is None:
        return deployments, "no rotation state"
    if now - state.written_at > state.stale_after:
        return deployments, f"rotation state {now - state.written_at:.0f} s old (stale after {state.stale_after:g} s)"
    kept = [d for d in deployments if deployment_id(d) not in state.out]
    if kept or not deployments:
        return kept, "ok"
    if state.all_down == "fail-fast":
        return [], "every candidate is out of rotation: fail-fast"
    return deployments, "every candidate is out of rotation: route-anyway"


class RotationFilter(CustomLogger):  # type: ignore[misc]
    """Reads the rotation file when it changes (a stat per routing attempt, a parse per change)."""

    def __init__(self, path: Path | None = None) -> None:
        super().__init__()
        self.path = path
        self._key: tuple[int, int, int] | None = None
        self._state: RotationState | None = None
        self._why = "not read yet"
        self._last_said = ""

    def _load(self) -> RotationState | None:
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

    def _say(self, why: str) -> None:
        """Log transitions only: one line when the filter starts or stops trusting the file."""
        if why != self._last_said and (why != "ok" or self._last_said):
            if why == "ok":
                log.warning("gpu-watchdog rotation: following %s again", self.path or rotation_path())
            else:
                log.warning("gpu-watchdog rotation: %s; routing as LiteLLM alone would", why)
        self._last_said = why

    def select(self, deployments: list[Any]) -> list[Any]:
        try:
            state = self._load()
            kept, why = filter_deployments(deployments, state, time.time())
            # All-down verdicts are per request; only trust or distrust of the file is logged.
            self._say(self._why if state is None else why if why.startswith("rotation state") else "ok")
            return kept
        except Exception as exc:  # never take a request down with us
            log.warning("gpu-watchdog rotation: filter failed (%s); routing as LiteLLM alone would", exc)
            return deployments

    async def async_filter_deployments(
        self,
        model: str,
        healthy_deployments: list[Any],
        messages: Any,
        request_kwargs: dict[str, Any] | None = None,
        parent_otel_span: Any = None,
    ) -> list[Any]:
        return self.select(healthy_deployments)


rotation_filter = RotationFilter()
