"""The canary: an opt-in 1-token completion per server at a slow cadence, on the HTTP prober's thread.

I/O. /health can answer while nothing is generated, and the progress check sees a wedge only
where work waits and the counters can be read. The canary asks the real question: POST
/v1/completions for one token (no model name: llama.cpp and vLLM answer with the model they
serve; /v1/completions, not chat, so a base model without a chat template answers too). It is
sent only to a server that has answered /health in this life and whose token counters did not
grow within its interval (real traffic proved it alive: canary_rules.proved_alive), with its own
timeout (`serving.canary_timeout`). A failed canary is retried a second later; two in a row are
wedged. A 4xx answer means the canary cannot be asked of this server (said once; no more
canaries for that life), never that the server is wedged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from loguru import logger

from watchdog.containers.http_get import BadAnswer, post_json
from watchdog.containers.http_probe import Prober
from watchdog.model import TIMEOUT_DETAIL
from watchdog.serving.canary_rules import CanaryResult, canary_wedged
from watchdog.serving.progress import Wedged

CANARY_BODY = json.dumps({"prompt": "Hi", "max_tokens": 1, "temperature": 0, "stream": False}).encode()
TICK = 0.5
RETRY_AFTER = 1.0  # s after a failed canary: the second one decides
KEPT = 4


@dataclass(frozen=True)
class CanaryTarget:
    """One container life's completion endpoint and its canary interval."""

    container_id: str
    life: float | None
    url: str
    interval: float


@dataclass(frozen=True)
class CanaryAnswer:
    """What one 1-token completion showed: ok (2xx), the detail for a reason, the HTTP status (None: no answer)."""

    ok: bool
    detail: str
    status: int | None = None


async def ask_one_token(url: str, timeout: float) -> CanaryAnswer:
    """POST one 1-token completion to `url` within `timeout`; never raises (the serving canary and verified return)."""
    started = time.monotonic()
    try:
        answer = await post_json(url, CANARY_BODY, timeout)
        took = time.monotonic() - started
        return CanaryAnswer(200 <= answer.status < 300, f"HTTP {answer.status} after {took:.2f} s", answer.status)
    except TimeoutError:
        return CanaryAnswer(False, f"{TIMEOUT_DETAIL} {timeout:g} s")
    except (OSError, BadAnswer) as exc:  # ssl.SSLError is an OSError
        return CanaryAnswer(False, f"failed after {time.monotonic() - started:.2f} s: {exc}")
    except Exception as exc:  # a canary must never take its caller down
        logger.exception("canary of {} crashed: {}", url, exc)
        return CanaryAnswer(False, f"canary error: {exc}")


class CanaryProbe:
    """Sends each target's canary when it is due; `verdicts()` and `unusable()` for the loop."""

    def __init__(
        self,
        prober: Prober,
        timeout: float,
        clock: Callable[[], float] = time.time,
        *,
        alive: Callable[[str, float, float], bool] | None = None,
        on_wedged: Callable[[], None] | None = None,
    ) -> None:
        self.timeout = timeout
        self._clock = clock
        self._alive = alive  # (container ID, interval, now) -> real traffic proved it generating
        self._on_wedged = on_wedged
        self._lock = threading.Lock()
        self._targets: dict[str, CanaryTarget] = {}
        self._results: dict[str, deque[CanaryResult]] = {}
        self._unusable: dict[str, str] = {}
        self._due: dict[str, float] = {}  # monotonic
        self._in_flight: set[str] = set()
        self.sent = 0
        self.skipped = 0  # due, but real traffic had proved the server alive
        self._task = asyncio.run_coroutine_threadsafe(self._schedule(), prober.loop)

    def set_targets(self, targets: Iterable[CanaryTarget]) -> None:
        """A new target's first canary comes one interval after it is first seen (past its warm-up)."""
        now = time.monotonic()
        with self._lock:
            wanted = {t.container_id: t for t in targets}
            for cid, target in wanted.items():
                if self._targets.get(cid) != target:
                    self._results.pop(cid, None)
                    self._unusable.pop(cid, None)
                    self._due[cid] = now + target.interval
            for cid in set(self._targets) - set(wanted):
                self._results.pop(cid, None)
                self._unusable.pop(cid, None)
                self._due.pop(cid, None)
            self._targets = wanted

    def verdicts(self) -> dict[str, Wedged]:
        with self._lock:
            found = {cid: canary_wedged(tuple(self._results.get(cid, ())), t.life) for cid, t in self._targets.items()}
        return {cid: verdict for cid, verdict in found.items() if verdict is not None}

    def unusable(self) -> dict[str, str]:
        """Container ID -> why no canary is sent to it (a 4xx answer)."""
        with self._lock:
            return dict(self._unusable)

    async def _schedule(self) -> None:
        while True:
            now = time.monotonic()
            launch: list[CanaryTarget] = []
            with self._lock:
                for cid, target in self._targets.items():
                    if cid in self._in_flight or cid in self._unusable or now < self._due.get(cid, 0.0):
                        continue
                    self._due[cid] = now + target.interval
                    if self._alive is not None and self._alive(cid, target.interval, self._clock()):
                        self.skipped += 1
                        continue
                    self._in_flight.add(cid)
                    launch.append(target)
            for target in launch:
                asyncio.get_running_loop().create_task(self._send(target))
            await asyncio.sleep(TICK)

    async def _send(self, target: CanaryTarget) -> None:
        started = time.monotonic()
        answer = await ask_one_token(target.url, self.timeout)
        ok, detail = answer.ok, answer.detail
        unusable: str | None = None
        if answer.status is not None and 400 <= answer.status < 500:
            unusable = f"{target.url} answered a canary with HTTP {answer.status}: no canary for it"
        result = CanaryResult(self._clock(), ok, detail, time.monotonic() - started)
        newly_wedged = False
        with self._lock:
            self._in_flight.discard(target.container_id)
            self.sent += 1
            if self._targets.get(target.container_id) != target:
                return
            if unusable is not None:
                self._unusable[target.container_id] = unusable
                return
            kept = self._results.setdefault(target.container_id, deque(maxlen=KEPT))
            kept.append(result)
            if not ok:
                self._due[target.container_id] = time.monotonic() + RETRY_AFTER
                newly_wedged = canary_wedged(tuple(kept), target.life) is not None
        if newly_wedged and self._on_wedged is not None:
            self._on_wedged()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._task.cancel()
