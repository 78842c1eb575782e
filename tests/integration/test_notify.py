"""Notifications end to end: the real daemon, real containers, a real HTTP receiver on 127.0.0.1.

The receiver records every POST and can be told to fail (HTTP 500) or to hang. The webhook URLs
carry a secret-looking token: it must never show in the daemon's log, `status` or the CLI's output.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.integration.conftest import new_daemon
from tests.integration.harness import Daemon, Fleet, free_port, wait_for
from watchdog.ops.status import STATUS_FILE

SECRET = "T0KEN-xoxb-7c1e55d2a9"
HANG_LIMIT = 30.0  # s a hanging request is held at most (the fixture releases it at the end)


class Receiver:
    """Records POST bodies as (path, JSON); `mode` ok | fail (HTTP 500) | hang."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.posts: list[tuple[str, Any]] = []
        self.hits = 0
        self.release = threading.Event()
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, fmt: str, *args: object) -> None:
                return

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with outer._lock:
                    outer.hits += 1
                    mode = outer.mode
                if mode == "hang":
                    outer.release.wait(HANG_LIMIT)
                    return  # no answer at all
                if mode == "fail":
                    self.send_response(500)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                with outer._lock:
                    outer.posts.append((self.path, json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def bodies(self, prefix: str) -> list[Any]:
        with self._lock:
            return [body for path, body in self.posts if path.startswith(prefix)]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.close()


def written_at(daemon: Daemon) -> float:
    try:
        return float(json.loads((daemon.state_dir / STATUS_FILE).read_text())["written_at"])
    except (OSError, ValueError, KeyError):
        return 0.0


@pytest.mark.engine
def test_a_killed_container_notifies_fault_then_recovered_and_nothing_routine(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str, receiver: Receiver
) -> None:
    fleet.start("a")
    fleet.wait_ready("a")
    port = free_port()
    targets = [
        {"name": "ops", "kind": "webhook", "url": receiver.url("/hook"), "key": "message"},
        {"name": "bridge", "kind": "apprise", "url": f"json://127.0.0.1:{receiver.port}/apprise"},
    ]
    notify = {"dedup_window": 0, "targets": targets}  # no de-duplication: a routine entry would show
    daemon = new_daemon(daemons, tmp_path, prefix, http=f"127.0.0.1:{port}", notify=notify).start()
    name = fleet.get("a").name
    fleet.get("a").kill()
    wait_for(lambda: [b for b in receiver.bodies("/hook") if b["event"] == "recovered"], 30, "the recovered notice")
    wait_for(lambda: len(receiver.bodies("/apprise")) >= 2, 10, "both notices through apprise")
    recovered_at = time.time()
    wait_for(lambda: written_at(daemon) > recovered_at + 3, 15, "three more seconds of cycles")
    hook = receiver.bodies("/hook")
    assert [(b["event"], b["container"]) for b in hook] == [("fault", name), ("recovered", name)], hook
    assert hook[0]["fault"] == "stopped" and hook[0]["message"].startswith(f"[{hook[0]['host']}] FAULT {name}: stopped")
    assert "RECOVERED" in hook[1]["message"] and hook[1]["ts"] >= hook[0]["ts"]
    bridged = receiver.bodies("/apprise")
    assert len(bridged) == 2 and f"FAULT {name}" in bridged[0]["title"] and bridged[1]["type"] == "success"
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5, trust_env=False).text
    assert 'gpu_watchdog_notifications_total{outcome="sent",target="ops"} 2.0' in metrics
    assert 'gpu_watchdog_notifications_total{outcome="sent",target="bridge"} 2.0' in metrics
    assert "notifications on state transitions to ops (webhook, url in the config file)" in daemon.log()


@pytest.mark.engine
def test_a_crash_loop_notifies_once_then_given_up_with_the_count(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str, receiver: Receiver
) -> None:
    fleet.start("loop", env={"CRASH_ON_START": "1", "CRASH_DELAY": "0.3"}, endpoint=False)
    name = fleet.get("loop").name
    targets = [{"name": "pager", "kind": "discord", "url": receiver.url("/discord"), "events": ["fault", "given-up"]}]
    daemon = new_daemon(daemons, tmp_path, prefix, notify={"targets": targets}).start()
    wait_for(lambda: daemon.entries(kind="give-up", container=name), 40, "the breaker to give up")
    wait_for(lambda: any("GAVE UP" in b["content"] for b in receiver.bodies("/discord")), 10, "the given-up notice")
    contents = [b["content"] for b in receiver.bodies("/discord")]
    faults = len(daemon.entries(kind="detected", container=name))
    assert faults >= 2, "the loop had several fault episodes"
    assert len(contents) == 2 and f"FAULT {name}" in contents[0], contents
    assert contents[1].endswith(f"(+{faults - 1} suppressed)"), "the repeated faults are counted, not sent"
    assert f"`gpu-watchdog reset {name}`" in contents[1]


@pytest.mark.engine
@pytest.mark.parametrize("mode", ["hang", "fail"])
def test_a_hanging_or_failing_target_never_slows_healing_nor_leaks_its_url(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str, receiver: Receiver, mode: str
) -> None:
    receiver.mode = mode
    fleet.start("a")
    fleet.wait_ready("a")
    notify = {"timeout": 2, "retries": 1, "targets": [{"name": "ops", "kind": "slack", "url_env": "OPS_HOOK"}]}
    daemon = new_daemon(
        daemons, tmp_path, prefix, env={"OPS_HOOK": receiver.url(f"/services/{SECRET}")}, notify=notify
    ).start()
    name = fleet.get("a").name
    before = fleet.state("a")["StartedAt"]
    fleet.get("a").kill()
    # Healed in the usual time (test_heal's bound), while the notifier waits on the target.
    wait_for(lambda: [a for a in daemon.restarts(name) if a.outcome == "ok"], 15, "the restart")
    wait_for(lambda: daemon.entries(kind="recovered", container=name), 15, "the recovery")
    assert fleet.state("a")["StartedAt"] != before
    why = "timed out after 2 s" if mode == "hang" else "HTTP 500"
    failed = f"notification fault about {name} to ops (slack) failed: {why}; dropped"
    wait_for(lambda: failed in daemon.log(), 20, "the failure to be logged")
    assert receiver.hits >= 2, "it was tried twice (retries: 1)"
    health = daemon.cli("healthcheck")
    assert health.returncode == 0, f"the loop cycles on: {health.stderr}"
    status = daemon.cli("status", "--json")
    assert status.returncode == 0, status.stderr
    assert SECRET not in status.stdout + status.stderr
    assert SECRET not in daemon.log() and f":{receiver.port}/" not in daemon.log()


@pytest.mark.engine
def test_sighup_adds_and_replaces_targets(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str, receiver: Receiver
) -> None:
    fleet.start("a")
    fleet.wait_ready("a")
    daemon = new_daemon(daemons, tmp_path, prefix).start()
    assert daemon.proc is not None and "notifications on" not in daemon.log()
    base = yaml.safe_load(daemon.config_path.read_text())
    name = fleet.get("a").name

    def reload(path: str, said: str) -> None:
        target = {"name": path, "kind": "webhook", "url": receiver.url(f"/{path}")}
        daemon.config_path.write_text(yaml.safe_dump({**base, "notify": {"targets": [target]}}))
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: said in daemon.log(), 10, f"the reload to {path}")

    def heal_once(seen: str) -> None:
        fleet.get("a").kill()
        wait_for(lambda: [b for b in receiver.bodies(seen) if b["event"] == "recovered"], 30, f"{seen}: recovered")
        fleet.wait_ready("a")

    reload("first", "notifications on state transitions to first (webhook")  # none before: one is created
    heal_once("/first")
    reload("second", "SIGHUP: notification targets now second (webhook")  # replaced
    heal_once("/second")
    assert [b["event"] for b in receiver.bodies("/first")] == ["fault", "recovered"], "the old target hears no more"
    assert [(b["event"], b["container"]) for b in receiver.bodies("/second")] == [("fault", name), ("recovered", name)]


def notify_cli(tmp_path: Path, targets: list[dict[str, Any]], *args: str, env: dict[str, str] | None = None) -> Any:
    daemon = Daemon(tmp_path, "gwt-notify", env=env, notify={"targets": targets})  # never started: the CLI only
    return daemon.cli("notify", "--test", *args)


def test_notify_test_reaches_a_webhook_slack_and_discord_target(tmp_path: Path, receiver: Receiver) -> None:
    targets = [
        {"name": "generic", "kind": "webhook", "url": receiver.url(f"/generic/{SECRET}")},
        {"name": "ops-slack", "kind": "slack", "url_env": "SLACK_WEBHOOK_URL"},
        {"name": "chat", "kind": "discord", "url": receiver.url(f"/discord/{SECRET}"), "events": ["driver-hung"]},
    ]
    done = notify_cli(tmp_path, targets, env={"SLACK_WEBHOOK_URL": receiver.url(f"/slack/{SECRET}")})
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == ["OK generic (webhook)", "OK ops-slack (slack)", "OK chat (discord)"]
    (generic,) = receiver.bodies("/generic/")
    assert generic["event"] == "test" and "test notification" in generic["text"] and generic["host"]
    (slack,) = receiver.bodies("/slack/")
    assert "can reach the notify target ops-slack" in slack["text"] and slack["attachments"][0]["color"]
    (discord,) = receiver.bodies("/discord/")
    assert discord["username"] == "gpu-watchdog" and "chat" in discord["content"], "a test passes every filter"
    one = notify_cli(tmp_path, targets, "--target", "chat", env={"SLACK_WEBHOOK_URL": receiver.url("/slack/x")})
    assert one.returncode == 0 and one.stdout.splitlines() == ["OK chat (discord)"]
    assert len(receiver.bodies("/discord/")) == 2 and len(receiver.bodies("/generic/")) == 1
    assert SECRET not in done.stdout + done.stderr


def test_notify_test_against_a_closed_port_or_a_failing_target_exits_1(tmp_path: Path, receiver: Receiver) -> None:
    port = free_port()
    targets = [
        {"name": "pager", "kind": "webhook", "url": f"http://127.0.0.1:{port}/hooks/{SECRET}"},
        {"name": "ok", "kind": "webhook", "url": receiver.url("/ok")},
    ]
    done = notify_cli(tmp_path, targets)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.splitlines() == ["FAIL pager (webhook): connection failed (ConnectError)", "OK ok (webhook)"]
    assert SECRET not in done.stdout + done.stderr and str(port) not in done.stdout + done.stderr
    receiver.mode = "fail"
    refused = notify_cli(tmp_path, targets, "--target", "ok")
    assert refused.returncode == 1 and refused.stdout.strip() == "FAIL ok (webhook): HTTP 500"


def test_notify_test_through_an_apprise_target(tmp_path: Path, receiver: Receiver) -> None:
    targets = [{"name": "bridge", "kind": "apprise", "url": f"json://127.0.0.1:{receiver.port}/apprise/{SECRET}"}]
    done = notify_cli(tmp_path, targets)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "OK bridge (apprise)"
    (body,) = receiver.bodies("/apprise/")
    assert body["title"].endswith("test notification") and "bridge" in body["message"] and body["type"] == "info"
    refused = notify_cli(tmp_path, [{"name": "bridge", "kind": "apprise", "url": f"nosuchscheme://{SECRET}"}])
    assert refused.returncode == 2 and "apprise does not accept its URL" in refused.stderr
    assert SECRET not in refused.stdout + refused.stderr
