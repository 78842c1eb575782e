"""A real Redis for the tests: Debian's redis-server (scripts/ensure-redis.sh), on 127.0.0.1, no disk.

Each `RedisServer` is a child process of the test on a free port, stopped by its PID; `stop()` and
`start()` again on the same port let a test take Redis away and bring it back.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from pathlib import Path

import redis

from tests.integration.harness import ROOT, end_process, free_port


def ensure_installed() -> str:
    path = shutil.which("redis-server")
    if path is None:
        subprocess.run(["bash", str(ROOT / "scripts" / "ensure-redis.sh")], check=True)
        path = shutil.which("redis-server")
    assert path, "redis-server is missing after scripts/ensure-redis.sh"
    return path


class RedisServer:
    def __init__(self, workdir: Path, password: str | None = None) -> None:
        self.binary = ensure_installed()
        self.port = free_port()
        self.password = password
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=2)

    def start(self) -> RedisServer:
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        argv += ["--dir", str(self.workdir)]
        if self.password:
            argv += ["--requirepass", self.password]
        log = open(self.workdir / f"redis-{self.port}.log", "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:  # e.g. the port was taken meanwhile: another one
                self.port = free_port()
                return self.start()
            with contextlib.suppress(redis.RedisError, OSError):
                if int(self.client().info("server")["process_id"]) == self.proc.pid:  # ours, not a neighbour's
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not answer within 10 s")

    def stop(self) -> None:
        end_process(self.proc)
        self.proc = None
