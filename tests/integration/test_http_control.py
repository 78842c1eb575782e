"""The daemon's state-changing HTTP endpoints: off without a token, 401 with a wrong one, and they work with it.

POST /reset/NAME does what `gpu-watchdog reset NAME` does (here: re-arms a breaker that gave up, and the
daemon heals again); POST /gpu/release/UUID what `gpu-watchdog gpu release` does. Reading stays open.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import new_daemon
from tests.integration.harness import Daemon, Fleet, free_port, wait_for
from watchdog.config import parse_config
from watchdog.gpu.marks import GpuCondition, GpuMark

pytestmark = pytest.mark.engine
TOKEN = "s3cret-token-for-the-test"


def post(base: str, path: str, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.post(f"{base}{path}", headers=headers, timeout=10, trust_env=False)


def test_the_endpoint_listens_on_loopback_by_default() -> None:
    assert parse_config({}).http == "127.0.0.1:9108"


def test_without_a_token_state_changing_endpoints_are_off(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str
) -> None:
    port = free_port()
    daemon = new_daemon(daemons, tmp_path, prefix, http=f"127.0.0.1:{port}").start()
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: "POST /reset/NAME" in daemon.log(), 10, "the endpoint")
    off = post(base, "/reset/anything", token="guess")
    assert off.status_code == 403 and "GPU_WATCHDOG_HTTP_TOKEN" in off.text
    assert httpx.get(f"{base}/reset/anything", timeout=5, trust_env=False).status_code == 405
    assert post(base, "/metrics").status_code == 405 and post(base, "/nowhere").status_code == 404
    assert httpx.put(f"{base}/status", timeout=5, trust_env=False).status_code == 405
    assert httpx.get(f"{base}/healthz", timeout=5, trust_env=False).status_code == 200  # reading stays open


def test_with_a_token_reset_re_arms_a_given_up_container(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str
) -> None:
    port = free_port()
    fleet.start("loop", env={"CRASH_ON_START": "1", "CRASH_DELAY": "0.3"}, endpoint=False)
    name = fleet.get("loop").name
    daemon = new_daemon(
        daemons, tmp_path, prefix, env={"GPU_WATCHDOG_HTTP_TOKEN": TOKEN}, http=f"127.0.0.1:{port}"
    ).start()
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: daemon.entries(kind="give-up", container=name), 40, "the breaker to give up")
    count = len(daemon.restarts(name))

    missing = post(base, f"/reset/{name}")
    assert missing.status_code == 401 and "Bearer" in missing.headers.get("WWW-Authenticate", "")
    assert post(base, f"/reset/{name}", token="wrong").status_code == 401
    assert len(daemon.restarts(name)) == count and daemon.entries(kind="reset") == []  # nothing changed

    unknown = post(base, "/reset/no-such-container", token=TOKEN)
    assert unknown.status_code == 404 and name in unknown.text  # the managed ones are listed

    done = post(base, f"/reset/{name}", token=TOKEN)
    assert done.status_code == 200 and "breaker re-armed" in done.text, done.text
    assert "POST /reset" in daemon.entries(kind="reset", container=name)[0]["reason"]
    wait_for(lambda: len(daemon.restarts(name)) > count, 15, "a restart after the reset")
    assert TOKEN not in daemon.log()  # the token is never logged

    release = post(base, "/gpu/release/GPU-not-marked", token=TOKEN)
    assert release.status_code == 404 and "not quarantined or drained" in release.text
    journal = daemon.journal()  # a GPU quarantined earlier (the GPU tests make real ones through the fake driver)
    journal.mark_gpu(GpuMark("GPU-1234", 1, GpuCondition.QUARANTINED, "Xid 79", since=1.0))
    journal.close()
    released = post(base, "/gpu/release/gpu-1234", token=TOKEN)
    assert released.status_code == 200 and "released (was quarantined)" in released.text, released.text
    assert "POST /gpu/release" in daemon.entries(kind="gpu-released")[0]["reason"]
