"""The watchdog keeps a real LiteLLM proxy's rotation in step with a real fleet (issue 4).

4 stand-in backends on the real engine, the pinned proxy (installed by
scripts/ensure-litellm.sh, offline) and the daemon. A hung and a killed backend
leave the rotation and come back after the watchdog heals them; the proxy is
restarted only when the set of deployments changes; without the watchdog's state
the proxy routes as LiteLLM alone would.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.integration import litellm_proxy
from tests.integration.conftest import new_daemon
from tests.integration.harness import ROOT, Daemon, Fleet, free_port, wait_for

pytestmark = pytest.mark.engine
TEMPLATE = ROOT / "litellm" / "config.template.yaml"


@pytest.fixture(scope="module")
def proxy_installed() -> None:
    litellm_proxy.ensure_installed()


@pytest.fixture
def proxy_pids(tmp_path: Path) -> Iterator[Path]:
    """The pidfile of the proxy a test runs; whatever PID it holds at the end is stopped."""
    pidfile = tmp_path / "proxy.pid"
    yield pidfile
    if pidfile.exists():
        litellm_proxy.stop(int(pidfile.read_text()))


class Client:
    """Chat completions through the proxy, with what LiteLLM says about each."""

    def __init__(self, port: int) -> None:
        self.http = litellm_proxy.client(port)
        self.log: list[dict[str, Any]] = []

    def ask(self) -> dict[str, Any]:
        started = time.time()
        response = self.http.post(
            "/v1/chat/completions", json={"model": "qwen", "messages": [{"role": "user", "content": "hi"}]}
        )
        record = {
            "at": started,
            "seconds": time.time() - started,
            "status": response.status_code,
            "id": response.headers.get("x-litellm-model-id"),
            "retries": int(response.headers.get("x-litellm-attempted-retries") or 0),
        }
        self.log.append(record)
        return record

    def burst(self, count: int, gap: float = 0.05) -> list[dict[str, Any]]:
        result = []
        for _ in range(count):
            result.append(self.ask())
            time.sleep(gap)
        return result


def entry_time(daemon: Daemon, kind: str, container: str, after: float) -> float | None:
    times = [e["ts"] for e in daemon.entries(kind=kind, container=container) if e["ts"] >= after]
    return min(times) if times else None


def rotation(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def test_proxy_follows_the_watchdog_both_ways(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str, proxy_installed: None, proxy_pids: Path
) -> None:
    names = {}
    for gpu in range(4):
        container = fleet.start(f"b{gpu}", gpu=str(gpu), role="chat", model="qwen", host_port=free_port())
        names[gpu] = container.name
    for gpu in range(4):
        fleet.wait_ready(f"b{gpu}")
    port = free_port()
    out = tmp_path / "litellm" / "config.yaml"
    proxy_log = tmp_path / "proxy.log"
    restart_command = [
        sys.executable,
        "-m",
        "tests.integration.litellm_proxy",
        "restart",
        str(proxy_pids),
        str(out),
        str(port),
        str(proxy_log),
    ]
    daemon = new_daemon(
        daemons,
        tmp_path,
        prefix,
        env={"PYTHONPATH": str(ROOT)},
        capacity={"rpm_per_gpu": [20, 30]},
        litellm={
            "enabled": True,
            "template": str(TEMPLATE),
            "out": str(out),
            "proxy_url": f"http://127.0.0.1:{port}",
            "restart_command": restart_command,
            "stale_after": 3,
        },
    )
    rendered = daemon.cli("litellm", "render")
    assert rendered.returncode == 0, rendered.stderr
    config = yaml.safe_load(out.read_text())
    ids = {gpu: f"{names[gpu]}.gpu{gpu}" for gpu in range(4)}
    assert sorted(m["model_info"]["id"] for m in config["model_list"]) == sorted(ids.values())
    assert (out.parent / "gpu_watchdog_rotation.py").is_file()

    proxy_pids.write_text(str(litellm_proxy.start(out, port, proxy_log)))
    wait_for(lambda: litellm_proxy.live(port), 90, "the LiteLLM proxy to answer")
    first_pid = proxy_pids.read_text()
    daemon.start()
    rotation_file = out.parent / "rotation.json"
    wait_for(lambda: len(rotation(rotation_file).get("in", [])) == 4, 20, "all 4 backends in rotation")
    client = Client(port)
    warm = client.burst(16)
    assert all(r["status"] == 200 for r in warm), warm
    assert len({r["id"] for r in warm}) >= 2

    for gpu, fault in ((2, "hang"), (1, "kill")):
        name, ident = names[gpu], ids[gpu]
        faulted_at = time.time()
        if fault == "hang":
            fleet.fault(f"b{gpu}", "hang")
        else:
            fleet.get(f"b{gpu}").kill()
        out_at = wait_for(lambda n=name, t=faulted_at: entry_time(daemon, "rotation-out", n, t), 10, f"{name} out")
        during = client.burst(10)
        in_at = wait_for(lambda n=name, t=out_at: entry_time(daemon, "rotation-in", n, t), 40, f"{name} back in")
        # Out of rotation: no request went to it (a hung attempt would cost a 10 s timeout and a retry).
        while_out = [r for r in during if out_at + 0.2 < r["at"] and r["at"] + r["seconds"] < in_at]
        assert while_out, f"no request of the burst was sent while {name} was out: nothing checked ({during})"
        assert all(r["status"] == 200 and r["id"] != ident and r["retries"] == 0 for r in while_out), during
        assert all(r["seconds"] < 5 for r in while_out), while_out
        # Healed and back in rotation: it serves again within seconds.
        back = wait_for(
            lambda i=ident: any(r["id"] == i for r in client.burst(4)), 15, f"{ident} to serve again", interval=0
        )
        assert back
        served = [r for r in client.log if r["id"] == ident and r["at"] > out_at]
        assert served and min(r["at"] for r in served) - in_at < 5
        assert daemon.restarts(name), f"{name} was not restarted by the watchdog"

    # An operator's stop: out of rotation at once, left stopped, the config and the proxy untouched.
    config_before = out.read_text()
    stopped_at = time.time()
    fleet.get("b3").stop(timeout=2)
    wait_for(lambda: entry_time(daemon, "rotation-out", names[3], stopped_at), 10, "b3 out after docker stop")
    during_stop = client.burst(12)
    assert all(r["status"] == 200 and r["id"] != ids[3] and r["retries"] == 0 for r in during_stop), during_stop
    assert out.read_text() == config_before and not daemon.restarts(names[3])
    fleet.get("b3").start()
    wait_for(lambda: entry_time(daemon, "rotation-in", names[3], stopped_at), 20, "b3 back in after docker start")

    # Faults and stops do not change the deployment set: the proxy was never restarted for them.
    assert proxy_pids.read_text() == first_pid
    assert daemon.entries(kind="proxy-restart") == []

    # A new backend does: the config is rewritten and the proxy restarted once to load it.
    fleet.start("b4", gpu="4", role="chat", model="qwen", host_port=free_port())
    new_id = f"{fleet.get('b4').name}.gpu4"
    wait_for(lambda: daemon.entries(kind="proxy-restart"), 90, "the proxy restart for the new backend")
    assert proxy_pids.read_text() != first_pid
    assert new_id in {m["model_info"]["id"] for m in yaml.safe_load(out.read_text())["model_list"]}
    wait_for(lambda: litellm_proxy.live(port), 30, "the restarted proxy")
    wait_for(lambda: any(r["id"] == new_id for r in client.burst(4)), 30, "the new backend to serve", interval=0)
    assert len(daemon.entries(kind="proxy-restart")) == 1

    # Without the watchdog's state (stopped: the file goes stale) the proxy routes as LiteLLM alone.
    daemon.stop()
    document = rotation(rotation_file)
    document.update(written_at=time.time() + 30, out={ids[0]: "test: marked out by hand"})
    rotation_file.write_text(json.dumps(document))
    assert all(r["status"] == 200 and r["id"] != ids[0] for r in client.burst(16))
    document.update(written_at=time.time() - 60)
    rotation_file.write_text(json.dumps(document))
    wait_for(lambda: any(r["id"] == ids[0] for r in client.burst(4)), 20, "routing without the watchdog", interval=0)
    rotation_file.unlink()
    assert all(r["status"] == 200 for r in client.burst(8))


def test_one_stuck_backend_does_not_starve_the_model_group(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str, proxy_installed: None, proxy_pids: Path
) -> None:
    """The issue's outage, bounded: LiteLLM alone (no watchdog) with the config as rendered, one of 4 backends hung.

    With the old rendering (max_parallel_requests 1 per deployment) about a quarter of the
    requests queued behind the hung backend's semaphore, 10 s each, and never got an answer
    within 60 s. Now each waits at most the deployment timeout per attempt and is retried.
    """
    for gpu in range(4):
        fleet.start(f"s{gpu}", gpu=str(gpu), role="chat", model="qwen", host_port=free_port())
    for gpu in range(4):
        fleet.wait_ready(f"s{gpu}")
    out, port = tmp_path / "litellm" / "config.yaml", free_port()
    daemon = new_daemon(
        daemons, tmp_path, prefix, litellm={"enabled": True, "template": str(TEMPLATE), "out": str(out)}
    )
    rendered = daemon.cli("litellm", "render")
    assert rendered.returncode == 0, rendered.stderr
    params = [m["litellm_params"] for m in yaml.safe_load(out.read_text())["model_list"]]
    assert len(params) == 4 and all(p["weight"] == 4 and "max_parallel_requests" not in p for p in params)
    proxy_pids.write_text(str(litellm_proxy.start(out, port, tmp_path / "proxy.log")))
    wait_for(lambda: litellm_proxy.live(port), 90, "the LiteLLM proxy to answer")
    client = Client(port)
    assert all(r["status"] == 200 for r in client.burst(4))
    fleet.fault("s1", "hang")

    results: list[dict[str, Any]] = []

    def ask() -> None:
        try:
            results.append(client.ask())
        except httpx.HTTPError as exc:  # the client's 60 s timeout: no answer at all
            results.append({"status": None, "seconds": 60.0, "error": type(exc).__name__})

    threads = []
    for _ in range(40):  # 4 requests/s for 10 s, each on its own: ~10 of them are first sent to the hung one
        threads.append(threading.Thread(target=ask, daemon=True))
        threads[-1].start()
        time.sleep(0.25)
    for thread in threads:
        thread.join(70)
    assert len(results) == 40
    late = [r for r in results if r["status"] is None or r["seconds"] > 35]
    assert not late, f"{len(late)} of 40 not answered within 35 s: {late}"
    # A timeout does not exclude the hung backend from the retries (LiteLLM skips only non-retryable errors), so
    # before its cooldown a request may meet it three times (1 in 64) and get an error after 30 s: an answer.
    failed = [r for r in results if r["status"] != 200]
    assert len(failed) <= 2, failed


def test_keys_file_matches_the_installed_litellm(proxy_installed: None) -> None:
    done = subprocess.run(
        [str(litellm_proxy.LITELLM_VENV / "bin" / "python"), str(ROOT / "scripts" / "litellm_keys.py")],
        capture_output=True,
        text=True,
        timeout=120,
        env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    installed = yaml.safe_load(done.stdout)
    shipped = yaml.safe_load((ROOT / "watchdog" / "router" / "litellm_keys.yaml").read_text())
    assert installed == shipped, (
        "regenerate: .venv-litellm/bin/python scripts/litellm_keys.py > watchdog/router/litellm_keys.yaml"
    )
    # The per-deployment keys the renderer writes are among them.
    for key in ("api_base", "timeout", "stream_timeout"):
        assert key in installed["litellm_params"]
    # `weight` is not a LiteLLM_Params field but an extra one simple-shuffle reads (the renderer's, not the template's).
    for key in ("max_parallel_requests", "rpm", "tpm"):  # refused in a template: each sizes a semaphore
        assert key in installed["litellm_params"]
    assert "global_max_parallel_requests" in installed["general_settings"]
    assert "health_check_interval" not in installed["router_settings"]


def test_bad_template_proxy_down_and_failed_restart_do_not_stop_healing(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str
) -> None:
    bad = tmp_path / "bad.template.yaml"
    bad.write_text(TEMPLATE.read_text() + "\nrouter_settings:\n  health_check_interval: 30\n")
    fleet.start("a0", gpu="0", role="chat", model="qwen", host_port=free_port())
    fleet.wait_ready("a0")
    out = tmp_path / "litellm" / "config.yaml"
    daemon = new_daemon(
        daemons,
        tmp_path,
        prefix,
        litellm={
            "enabled": True,
            "template": str(bad),
            "out": str(out),
            "proxy_url": f"http://127.0.0.1:{free_port()}",  # nothing listens: the proxy is down
            "restart_command": ["false"],
        },
    )
    done = daemon.cli("litellm", "render")
    assert done.returncode == 2 and not out.exists()
    assert "router_settings.health_check_interval" in done.stderr and len(done.stderr.strip().splitlines()) == 1

    daemon.start()
    wait_for(lambda: daemon.entries(kind="proxy-down"), 15, "the proxy-down entry")
    wait_for(lambda: daemon.entries(kind="router-error"), 15, "the bad template reported")
    assert "health_check_interval" in daemon.entries(kind="router-error")[0]["reason"]
    assert (out.parent / "rotation.json").exists()  # the rotation works without a valid template

    def status_with_router() -> str | None:
        text = daemon.cli("status").stdout
        return text if "proxy DOWN" in text and "1/1 deployment(s) in rotation" in text else None

    status = wait_for(status_with_router, 15, "the router in status: proxy down, a0 in rotation")
    assert "problem: litellm template" in status

    # Fix the template; a new backend changes the set; the restart command fails: said once, healing goes on.
    bad.write_text(TEMPLATE.read_text())
    fleet.start("a1", gpu="1", role="chat", model="qwen", host_port=free_port())
    wait_for(lambda: daemon.entries(kind="proxy-restart-failed"), 30, "the failed proxy restart")
    assert "exited 1" in daemon.entries(kind="proxy-restart-failed")[0]["reason"]
    killed_at = time.time()
    fleet.get("a0").kill()
    wait_for(lambda: daemon.restarts(fleet.get("a0").name), 15, "a0 restarted despite the router problems")
    wait_for(lambda: entry_time(daemon, "rotation-in", fleet.get("a0").name, killed_at), 20, "a0 back in rotation")
    assert daemon.alive()
