"""A real LiteLLM proxy for the tests: installed by scripts/ensure-litellm.sh, run on 127.0.0.1.

Also a restart command for the watchdog (`litellm.restart_command`), the way an
operator's `systemctl restart litellm` would be:
    python -m tests.integration.litellm_proxy restart PIDFILE CONFIG PORT LOG
It stops the proxy whose PID is in PIDFILE and starts a new one detached.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.integration.harness import free_port

ROOT = Path(__file__).resolve().parents[2]
LITELLM_VENV = ROOT / ".venv-litellm"
LITELLM_BIN = LITELLM_VENV / "bin" / "litellm"
MASTER_KEY = "sk-gpu-watchdog-change-me"  # the shipped template's


def ensure_installed() -> None:
    """The pinned proxy in its own venv; installed here if `make test` has not done it."""
    subprocess.run(["bash", str(ROOT / "scripts" / "ensure-litellm.sh")], check=True)


def start(config: Path, port: int, log: Path) -> int:
    """Start the proxy detached (own session); returns its PID."""
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONUNBUFFERED": "1"}
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [str(LITELLM_BIN), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            cwd=config.parent,
        )
    return proc.pid


def stop(pid: int, timeout: float = 15) -> None:
    """SIGTERM, then SIGKILL; only ever the PID this module started."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                finished, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # not our child (started by the restart command): poll its existence
                os.kill(pid, 0)
                finished = 0
            if finished == pid:
                return
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)


def client(port: int) -> httpx.Client:
    """An HTTP client for the proxy on 127.0.0.1:`port`, with the template's master key."""
    return httpx.Client(
        base_url=f"http://127.0.0.1:{port}",
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
        timeout=60,
        trust_env=False,
    )


# This checkout's stand-in server (it streams), mounted over the image's, whatever version the shared image holds.
STREAMING_STANDIN = {
    "volumes": {str(ROOT / "compose" / "standin" / "server.py"): {"bind": "/app/server.py", "mode": "ro"}}
}


def streaming_pair(fleet: Any, token_seconds: float, slots: int, **options: Any) -> dict[int, str]:
    """Stand-ins b0 and b1 on GPUs 0 and 1, one model group (qwen), streaming at `token_seconds` a token; ready.

    `options`: more of Fleet.start's (a healthcheck, a start period). Returns GPU -> container name.
    """
    names = {}
    for gpu in range(2):
        container = fleet.start(
            f"b{gpu}",
            gpu=str(gpu),
            role="chat",
            model="qwen",
            host_port=free_port(),
            env={"TOKEN_SECONDS": str(token_seconds), "SLOTS": str(slots)},
            run_options=STREAMING_STANDIN,
            **options,
        )
        names[gpu] = container.name
    for gpu in range(2):
        fleet.wait_ready(f"b{gpu}")
    return names


class Stream:
    """One streaming chat completion through the proxy, read on its own thread to its end.

    `record` says what the client saw: the deployment that answered (LiteLLM's x-litellm-model-id),
    HTTP status, chunks with content (the role chunk, then one a token), `complete` (not cut: [DONE]
    after every token),
    the error if any, and when it started, first answered and ended (wall clock).
    """

    def __init__(self, port: int, tokens: int, model: str = "qwen") -> None:
        self.port, self.tokens, self.model = port, tokens, model
        self.record: dict[str, Any] = {"tokens": tokens, "chunks": 0, "complete": False, "error": None}
        self.answered = threading.Event()  # headers in (the deployment known), or failed
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Stream:
        self.thread.start()
        return self

    def _run(self) -> None:
        record = self.record
        record["start"] = time.time()
        body = {
            "model": self.model,
            "stream": True,
            "max_tokens": self.tokens,
            "messages": [{"role": "user", "content": "hi"}],
        }
        try:
            with client(self.port) as http, http.stream("POST", "/v1/chat/completions", json=body) as response:
                record["status"] = response.status_code
                record["deployment"] = response.headers.get("x-litellm-model-id")
                record["answered"] = time.time()
                self.answered.set()
                for line in response.iter_lines():
                    if line.strip() == "data: [DONE]":  # LiteLLM sends it after a cut too: count the tokens
                        record["complete"] = response.status_code == 200 and record["chunks"] > self.tokens
                    elif line.startswith("data: ") and '"content"' in line:
                        record["chunks"] += 1
                if response.status_code != 200:
                    record["error"] = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            record["error"] = f"{type(exc).__name__}: {exc}"[:200]
        record["end"] = time.time()
        self.answered.set()

    def wait(self, timeout: float) -> dict[str, Any]:
        self.thread.join(timeout)
        return self.record


def live(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health/liveliness", timeout=1, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def restart(pidfile: Path, config: Path, port: int, log: Path) -> None:
    if pidfile.exists():
        stop(int(pidfile.read_text()))
    pidfile.write_text(str(start(config, port, log)))


if __name__ == "__main__":
    if len(sys.argv) != 6 or sys.argv[1] != "restart":
        sys.exit("usage: python -m tests.integration.litellm_proxy restart PIDFILE CONFIG PORT LOG")
    restart(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5]))
