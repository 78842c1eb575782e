"""Bench-only LiteLLM callback: one JSON line per routing attempt (bench/litellm_failover.py).

LiteLLM's retries hide failed attempts from the client; this logs every attempt the
proxy makes (start and end time, deployment id, ok or the error class) to the file in
$BENCH_ATTEMPT_LOG. Copied next to the proxy's config and listed in
litellm_settings.callbacks as "attempt_log.attempt_logger". Standard library only
besides LiteLLM itself.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

from litellm.integrations.custom_logger import CustomLogger


def deployment_of(kwargs: dict[str, Any]) -> str | None:
    """The router's model_info.id, wherever this LiteLLM version puts it."""
    params = kwargs.get("litellm_params") or {}
    candidates = [
        params.get("model_info"),
        (params.get("metadata") or {}).get("model_info"),
        kwargs.get("model_info"),
    ]
    for info in candidates:
        if isinstance(info, dict) and info.get("id"):
            return str(info["id"])
    logged = kwargs.get("standard_logging_object") or {}
    return str(logged["model_id"]) if logged.get("model_id") else None


def call_key(data: Any) -> str:
    """One request's attempts run one after the other and share its litellm_call_id."""
    return str(data.get("litellm_call_id") or (data.get("metadata") or {}).get("litellm_call_id") or "")


class AttemptLogger(CustomLogger):
    """LiteLLM's deployment-level hooks fire once per attempt, retries included.

    (async_log_failure_event does not: it is deduplicated per client request.)
    """

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._started: dict[tuple[str, str | None], float] = {}

    def _write(self, data: Any, ok: bool, exc: BaseException | None) -> None:
        now = time.time()
        deployment = deployment_of(dict(data))
        with self._lock:
            start = self._started.pop((call_key(data), deployment), None)
        path = os.environ.get("BENCH_ATTEMPT_LOG")
        if not path:
            return
        line = {
            "start": start,
            "end": now,
            "deployment": deployment,
            "ok": ok,
            "error": None if ok else type(exc).__name__,
            "detail": None if ok else str(exc)[:160],
        }
        with self._lock, open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(line) + "\n")

    async def async_pre_call_deployment_hook(self, kwargs: dict[str, Any], call_type: Any) -> dict[str, Any] | None:
        with self._lock:
            self._started[(call_key(kwargs), deployment_of(kwargs))] = time.time()
        return None

    async def async_post_call_success_deployment_hook(self, request_data: Any, response: Any, call_type: Any) -> Any:
        self._write(request_data, True, None)
        return None

    async def async_post_call_failure_deployment_hook(
        self, request_data: Any, exception: Exception, call_type: Any, fallback_depth: int | None = None
    ) -> None:
        self._write(request_data, False, exception)


attempt_logger = AttemptLogger()
