"""OpenAI-compatible stand-in for an inference engine (llama.cpp / vLLM).

The watchdog has to be tested against real containers on a real Docker engine,
but CI machines have no GPU and no registry. This single standard-library file
behaves like an inference server from the outside -- a model-loading phase on
/health, /v1/models, /v1/chat/completions -- and offers fault switches
(POST /fault/<name>) that reproduce the failures the watchdog must handle:
crashes, hangs, unhealthy health checks, a slow server (POST /fault/slow?seconds=S&every=N:
every Nth health check answers S seconds late), a model silently dropped from GPU
memory, and what a real server cannot be made to do on demand: a wedged inference loop
(POST /fault/wedge: completions never answer, /health stays 200, the /metrics token counter
freezes while requests_processing > 0), slow generation (POST /fault/slow-tokens?per_token=S:
counters move, slowly) and failing completions (POST /fault/completions-5xx: HTTP 500, /health
ok). /metrics (llama.cpp's names: llamacpp:tokens_predicted_total, moving only when a completion
finishes as llama.cpp's does, :n_decode_total, moving with every token, :requests_processing,
:requests_deferred) and /slots count its completions' tokens, so the watchdog's progress probe
is tested against it. It also runs directly on the host for debugging:
``python3 compose/standin/server.py``.

Environment: PORT (8080), MODEL_NAME (standin), LOAD_SECONDS (0),
RESPONSE_DELAY (0), CRASH_ON_START (exit 3 after CRASH_DELAY, default 0.5 s),
IGNORE_SIGTERM, SLOTS (1: completions generated at once; more wait, counted as deferred),
TOKENS (8: tokens per completion unless the request's max_tokens says), TOKEN_SECONDS (0: time per
token). A request with "stream": true is answered as OpenAI's server-sent events, one chunk per token
(a long stream: max_tokens x TOKEN_SECONDS); requests_processing counts it until its last chunk.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any
from urllib.parse import parse_qs, urlsplit

FAULTS = ("crash", "hang", "unhealthy", "clear", "vram-lost", "slow", "wedge", "slow-tokens", "completions-5xx")
MAX_EXIT_CODE = 255


def env_float(name: str, default: float) -> float:
    """Read a non-negative float from the environment, exiting on garbage."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        sys.exit(f"standin: {name}={raw!r} is not a number")
    if value < 0:
        sys.exit(f"standin: {name}={raw!r} must not be negative")
    return value


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def parse_exit_code(query: dict[str, list[str]]) -> int | None:
    """The exit code of POST /fault/crash?code=N (default 1); None if invalid."""
    try:
        code = int(query.get("code", ["1"])[0])
    except ValueError:
        return None
    return code if 0 <= code <= MAX_EXIT_CODE else None


def parse_slow(query: dict[str, list[str]]) -> tuple[float, int] | None:
    """(seconds, every) of POST /fault/slow?seconds=S&every=N; None if invalid."""
    try:
        seconds, every = float(query.get("seconds", ["1"])[0]), int(query.get("every", ["1"])[0])
    except ValueError:
        return None
    return (seconds, every) if seconds >= 0 and every >= 1 else None


def parse_per_token(query: dict[str, list[str]]) -> float | None:
    """Seconds per token of POST /fault/slow-tokens?per_token=S; None if invalid."""
    try:
        seconds = float(query.get("per_token", ["0.5"])[0])
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


METRICS_TEMPLATE = """\
# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total {prompt}
# HELP llamacpp:tokens_predicted_total Number of generation tokens processed.
# TYPE llamacpp:tokens_predicted_total counter
llamacpp:tokens_predicted_total {predicted}
# HELP llamacpp:n_decode_total Total number of llama_decode() calls
# TYPE llamacpp:n_decode_total counter
llamacpp:n_decode_total {decoded}
# HELP llamacpp:requests_processing Number of requests processing.
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing {processing}
# HELP llamacpp:requests_deferred Number of requests deferred.
# TYPE llamacpp:requests_deferred gauge
llamacpp:requests_deferred {deferred}
"""


class State:
    """Mutable server state shared by all handler threads."""

    def __init__(self, model: str, load_seconds: float, response_delay: float) -> None:
        self.model = model
        self.load_seconds = load_seconds
        self.response_delay = response_delay
        self.hostname = os.environ.get("HOSTNAME") or socket.gethostname()
        self.started_at = time.time()
        self._started_mono = time.monotonic()
        self._lock = threading.Lock()
        self.hang = threading.Event()
        self.unhealthy = False
        self.vram_lost = False
        self.requests = 0
        self.slow_seconds = 0.0
        self.slow_every = 1
        self.health_checks = 0
        self.slots = max(1, int(env_float("SLOTS", 1)))
        self.default_tokens = max(1, int(env_float("TOKENS", 8)))
        self.slot_free = threading.Semaphore(self.slots)
        self.wedged = threading.Event()
        self.per_token = 0.0
        self.token_seconds = env_float("TOKEN_SECONDS", 0.0)  # the normal pace (slow-tokens is a fault on top)
        self.completions_5xx = False
        self.tokens_predicted = 0  # as llama.cpp's: moves only when a completion finishes
        self.decode_calls = 0  # as llama.cpp's n_decode_total: moves with every decoded token
        self.prompt_tokens = 0
        self.processing = 0
        self.deferred = 0
        self.decoded: dict[int, int] = {}  # slot id -> tokens decoded in its current task

    def generate(self, tokens: int, on_token: Any = None) -> None:
        """The inference loop for one completion: wait for a slot, then decode `tokens`.

        A wedged server takes the request (it counts as processing or deferred) and never
        decodes: the counters freeze while work is waiting, as a hung llama.cpp's do.
        `on_token(i)` is called after each token (a stream sends it).
        """
        with self._lock:
            self.deferred += 1
        self.slot_free.acquire()
        with self._lock:
            self.deferred -= 1
            self.processing += 1
            slot = min(set(range(self.slots)) - set(self.decoded))
            self.decoded[slot] = 0
        try:
            for _ in range(tokens):
                if self.wedged.is_set():
                    threading.Event().wait()  # forever: this thread is a daemon
                if self.per_token or self.token_seconds:
                    time.sleep(self.per_token + self.token_seconds)
                with self._lock:
                    self.decode_calls += 1
                    self.decoded[slot] += 1
                if on_token is not None:
                    on_token(self.decoded[slot])
            with self._lock:
                self.tokens_predicted += tokens
        finally:
            with self._lock:
                self.processing -= 1
                del self.decoded[slot]
            self.slot_free.release()

    def metrics_text(self) -> str:
        with self._lock:
            return METRICS_TEMPLATE.format(
                prompt=self.prompt_tokens,
                predicted=self.tokens_predicted,
                decoded=self.decode_calls,
                processing=self.processing,
                deferred=self.deferred,
            )

    def slots_view(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {"id": i, "is_processing": i in self.decoded, "n_decoded": self.decoded.get(i, 0)}
                for i in range(self.slots)
            ]

    def health_delay(self) -> float:
        """How late this health check answers (POST /fault/slow)."""
        with self._lock:
            self.health_checks += 1
            late = self.slow_seconds and self.health_checks % self.slow_every == 0
            return self.slow_seconds if late else 0.0

    @property
    def loading(self) -> bool:
        return time.monotonic() - self._started_mono < self.load_seconds

    def count_request(self) -> None:
        with self._lock:
            self.requests += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "pid": os.getpid(),
                "started_at": self.started_at,
                "loading": self.loading,
                "unhealthy": self.unhealthy,
                "vram_lost": self.vram_lost,
                "requests": self.requests,
            }


class Handler(BaseHTTPRequestHandler):
    server_version = "standin/1"
    protocol_version = "HTTP/1.1"
    state: State  # set by main() before serving

    # -- plumbing ---------------------------------------------------------

    def log_message(self, fmt: str, *args: object) -> None:
        sys.stderr.write(f"standin: {self.address_string()} {fmt % args}\n")

    def send_json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def hang_if_asked(self) -> None:
        """After POST /fault/hang every request is accepted and never answered."""
        if self.state.hang.is_set():
            threading.Event().wait()  # forever; the thread is a daemon

    def not_found(self) -> None:
        self.send_json(HTTPStatus.NOT_FOUND, {"error": {"message": f"no route {self.path}", "code": 404}})

    def loading_error(self) -> None:
        self.send_json(
            HTTPStatus.SERVICE_UNAVAILABLE,
            {"error": {"message": "Loading model", "type": "unavailable_error", "code": 503}},
        )

    # -- routes -----------------------------------------------------------

    def do_GET(self) -> None:
        self.hang_if_asked()
        path = urlsplit(self.path).path
        state = self.state
        if path == "/health":
            delay = state.health_delay()
            if delay:
                time.sleep(delay)
            if state.unhealthy:
                self.send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {"status": "error"})
            elif state.loading:
                self.send_json(HTTPStatus.SERVICE_UNAVAILABLE, {"status": "loading model"})
            else:
                self.send_json(HTTPStatus.OK, {"status": "ok"})
        elif path == "/v1/models":
            model = {"id": state.model, "object": "model", "owned_by": "standin"}
            self.send_json(HTTPStatus.OK, {"object": "list", "data": [model]})
        elif path == "/metrics":
            data = state.metrics_text().encode()
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        elif path == "/slots":
            self.send_json(HTTPStatus.OK, state.slots_view())
        elif path == "/debug/state":
            self.send_json(HTTPStatus.OK, state.snapshot())
        else:
            self.not_found()

    def do_POST(self) -> None:
        self.hang_if_asked()
        url = urlsplit(self.path)
        body = self.read_body()
        if url.path in ("/v1/chat/completions", "/v1/completions"):  # /v1/completions: the watchdog's canary
            self.chat_completion(body)
        elif url.path.startswith("/fault/"):
            self.fault(url.path.removeprefix("/fault/"), parse_qs(url.query))
        else:
            self.not_found()

    def chat_completion(self, body: bytes) -> None:
        state = self.state
        if state.loading:
            self.loading_error()
            return
        request: Any = {}
        if body:
            try:
                request = json.loads(body)
            except ValueError:
                self.send_json(
                    HTTPStatus.BAD_REQUEST,
                    {"error": {"message": "body is not JSON", "type": "invalid_request_error", "code": 400}},
                )
                return
        if state.completions_5xx:
            self.send_json(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                {"error": {"message": "completion failed (fault)", "type": "server_error", "code": 500}},
            )
            return
        if state.response_delay:
            time.sleep(state.response_delay)
        max_tokens = request.get("max_tokens") if isinstance(request, dict) else None
        tokens = max_tokens if isinstance(max_tokens, int) and 0 < max_tokens <= 4096 else state.default_tokens
        if isinstance(request, dict) and request.get("stream"):
            self.stream_completion(tokens)
            return
        state.generate(tokens)
        state.count_request()
        self.send_json(
            HTTPStatus.OK,
            {
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": state.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": f"ok from {state.model} on {state.hostname}",
                        },
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 0, "completion_tokens": tokens, "total_tokens": tokens},
            },
        )

    def stream_completion(self, tokens: int) -> None:
        """OpenAI's streaming answer: one chunk per token as it is decoded, then usage and [DONE]."""
        state = self.state
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

        def chunk(delta: dict[str, Any], finish: str | None = None, usage: Any = None) -> None:
            body: dict[str, Any] = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": state.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            if usage is not None:
                body["usage"] = usage
            self.wfile.write(f"data: {json.dumps(body)}\n\n".encode())
            self.wfile.flush()

        chunk({"role": "assistant", "content": ""})
        state.generate(tokens, lambda i: chunk({"content": f"t{i} "}))
        state.count_request()
        chunk({}, "stop", {"prompt_tokens": 0, "completion_tokens": tokens, "total_tokens": tokens})
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    def fault(self, name: str, query: dict[str, list[str]]) -> None:
        if name not in FAULTS:
            self.not_found()
            return
        code = parse_exit_code(query) if name == "crash" else 0
        if code is None:
            self.send_json(HTTPStatus.BAD_REQUEST, {"error": {"message": "code must be 0..255", "code": 400}})
            return
        per_token = parse_per_token(query) if name == "slow-tokens" else 0.0
        if per_token is None:
            self.send_json(HTTPStatus.BAD_REQUEST, {"error": {"message": "per_token must be >= 0", "code": 400}})
            return
        slow = parse_slow(query) if name == "slow" else (0.0, 1)
        if slow is None:
            self.send_json(
                HTTPStatus.BAD_REQUEST, {"error": {"message": "seconds must be >= 0 and every >= 1", "code": 400}}
            )
            return
        self.send_json(HTTPStatus.OK, {"fault": name})  # answer first, then act
        state = self.state
        if name == "crash":
            self.close_connection = True
            timer = threading.Timer(0.05, os._exit, args=(code,))
            timer.daemon = True
            timer.start()
        elif name == "hang":
            state.hang.set()
        elif name == "unhealthy":
            state.unhealthy = True
        elif name == "clear":
            state.unhealthy = False
            state.slow_seconds, state.slow_every = 0.0, 1
        elif name == "slow":
            state.slow_seconds, state.slow_every = slow
        elif name == "vram-lost":
            state.vram_lost = True
        elif name == "wedge":
            state.wedged.set()
        elif name == "slow-tokens":
            state.per_token = per_token
        elif name == "completions-5xx":
            state.completions_5xx = True


def main() -> int:
    port = int(os.environ.get("PORT") or 8080)
    state = State(
        model=os.environ.get("MODEL_NAME") or "standin",
        load_seconds=env_float("LOAD_SECONDS", 0.0),
        response_delay=env_float("RESPONSE_DELAY", 0.0),
    )
    crash_delay = env_float("CRASH_DELAY", 0.5)
    Handler.state = state
    server = ThreadingHTTPServer(("", port), Handler)  # "": all interfaces
    server.daemon_threads = True

    if env_flag("IGNORE_SIGTERM"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        # As PID 1, Python would ignore SIGTERM without a handler. shutdown()
        # blocks until serve_forever() returns, so call it from another thread.
        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            threading.Thread(target=server.shutdown, daemon=True).start()

        signal.signal(signal.SIGTERM, on_sigterm)

    if env_flag("CRASH_ON_START"):
        sys.stderr.write(f"standin: CRASH_ON_START set, exiting with 3 in {crash_delay}s\n")
        crasher = threading.Timer(crash_delay, os._exit, args=(3,))
        crasher.daemon = True
        crasher.start()

    sys.stderr.write(
        f"standin: model {state.model} on 0.0.0.0:{port}, pid {os.getpid()}, loading for {state.load_seconds}s\n"
    )
    try:
        server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    sys.stderr.write("standin: shut down\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
