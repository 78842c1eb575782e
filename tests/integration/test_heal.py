"""The heal cycle on a real engine: every scenario issue #2 names, end to end."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import new_daemon
from tests.integration.harness import Daemon, Fleet, ok_restarts, started_at, wait_for

pytestmark = pytest.mark.engine


def running(fleet: Fleet, name: str) -> bool:
    return fleet.state(name)["Status"] == "running"


@pytest.mark.parametrize("events", [True, False], ids=["events", "poll-only"])
def test_docker_kill_is_restarted(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str, events: bool
) -> None:
    fleet.start("a")
    fleet.wait_ready("a")
    daemon = new_daemon(daemons, tmp_path, prefix, events=events).start()
    before = started_at(fleet, "a")
    fleet.get("a").kill()
    wait_for(lambda: ok_restarts(daemon, fleet.get("a").name), 15, "a restart of the killed container")
    wait_for(lambda: running(fleet, "a") and started_at(fleet, "a") != before, 10, "the container running again")
    detected = daemon.entries(kind="detected", container=fleet.get("a").name)
    assert detected, "no fault was journaled for the killed container"
    reason = detected[0]["reason"]
    assert "SIGKILL, exit 137" in reason, reason
    if events:  # the engine's kill event without a stop event: an operator's `docker kill`, not a crash
        assert "(docker kill)" in reason, reason


def test_crash_inside_is_restarted(fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str) -> None:
    fleet.start("a")
    fleet.wait_ready("a")
    daemon = new_daemon(daemons, tmp_path, prefix).start()
    fleet.fault("a", "crash")
    name = fleet.get("a").name
    wait_for(lambda: ok_restarts(daemon, name), 15, "a restart after the crash")
    reason = daemon.entries(kind="detected", container=name)[0]["reason"]
    assert "exited with code 1" in reason and "crash" in reason
    fleet.wait_ready("a")


def test_hung_endpoint_is_restarted_after_n_failures(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str
) -> None:
    fleet.start("a", start_period="2")
    fleet.wait_ready("a")
    daemon = new_daemon(daemons, tmp_path, prefix).start()
    name = fleet.get("a").name
    time.sleep(1.5)  # the daemon has seen it healthy
    fleet.fault("a", "hang")
    hung_at = time.time()
    wait_for(lambda: ok_restarts(daemon, name), 25, "a restart of the hung container")
    detected = daemon.entries(kind="detected", container=name)
    assert detected[0]["fault"] == "endpoint-failing"
    assert "failed 3 probes in a row" in detected[0]["reason"] and "timeout" in detected[0]["reason"]
    # three failing probes at a 1 s interval with a 1 s timeout: no sooner than ~2 s, no later than ~8 s
    assert 1.5 <= detected[0]["ts"] - hung_at <= 10
    fleet.wait_ready("a")
    wait_for(lambda: daemon.entries(kind="recovered", container=name), 10, "the recovery to be journaled")


def test_engine_unhealthy_is_restarted(fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str) -> None:
    healthcheck = {
        "test": ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/health"],
        "interval": 1_000_000_000,
        "timeout": 1_000_000_000,
        "retries": 2,
    }
    fleet.start("a", healthcheck=healthcheck, endpoint=False, start_period="1")
    wait_for(lambda: fleet.state("a").get("Health", {}).get("Status") == "healthy", 20, "engine healthy")
    daemon = new_daemon(daemons, tmp_path, prefix).start()
    name = fleet.get("a").name
    fleet.fault("a", "unhealthy")
    wait_for(lambda: ok_restarts(daemon, name), 20, "a restart of the unhealthy container")
    assert daemon.entries(kind="detected", container=name)[0]["fault"] == "unhealthy"


def test_crash_loop_opens_breaker_and_stops(fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str) -> None:
    fleet.start("loop", env={"CRASH_ON_START": "1", "CRASH_DELAY": "0.3"}, endpoint=False)
    name = fleet.get("loop").name
    daemon = new_daemon(daemons, tmp_path, prefix).start()
    wait_for(lambda: daemon.entries(kind="give-up", container=name), 40, "the breaker to give up")
    count = len(daemon.restarts(name))
    assert count == 3  # breaker.max_restarts in the fast config
    time.sleep(4)  # several cycles: no further attempt
    assert len(daemon.restarts(name)) == count
    assert fleet.state("loop")["Status"] == "exited"
    status = daemon.cli("status", "--json")
    assert status.returncode == 0, status.stderr
    assert '"breaker": "open"' in status.stdout
    # an operator re-arms it: the watchdog tries again
    reset = daemon.cli("reset", name)
    assert reset.returncode == 0, reset.stderr
    wait_for(lambda: len(daemon.restarts(name)) > count, 15, "a restart after reset")


def test_docker_stop_is_left_stopped(fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str) -> None:
    fleet.start("a")
    fleet.wait_ready("a")
    daemon = new_daemon(daemons, tmp_path, prefix).start()
    name = fleet.get("a").name
    fleet.get("a").stop(timeout=5)
    wait_for(lambda: daemon.entries(kind="manual-stop", container=name), 10, "the stop to be journaled")
    time.sleep(4)
    assert fleet.state("a")["Status"] == "exited"
    assert daemon.restarts(name) == []
    assert daemon.entries(kind="detected", container=name) == []
    # also after a restart of the watchdog: the mark is in the journal
    daemon.stop()
    daemon.start()
    time.sleep(3)
    assert daemon.restarts(name) == [] and fleet.state("a")["Status"] == "exited"
    # someone starts it again, then it crashes: healed again
    fleet.get("a").start()
    fleet.wait_ready("a")
    fleet.fault("a", "crash")
    wait_for(lambda: ok_restarts(daemon, name), 15, "the restarted-then-crashed container healed")


def test_docker_stop_of_a_sigkill_container_is_left_stopped_and_its_kill_healed(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str
) -> None:
    """Its `docker stop` sends SIGKILL, as `docker kill` does: only the stop event after the die tells them apart."""
    fleet.start("a", stop_signal="SIGKILL")
    fleet.wait_ready("a")
    daemon = new_daemon(daemons, tmp_path, prefix).start()
    name = fleet.get("a").name
    for attempt in range(6):
        fleet.get("a").stop(timeout=5)
        wait_for(
            lambda n=attempt + 1: len(daemon.entries(kind="manual-stop", container=name)) >= n,
            10,
            f"stop {attempt + 1} to be journaled",
        )
        time.sleep(1.0)  # several polls and the settle wait, well past stop_settle
        assert fleet.state("a")["Status"] == "exited", f"restarted after stop {attempt + 1}"
        fleet.get("a").start()
        fleet.wait_ready("a")
    assert daemon.restarts(name) == []
    assert daemon.entries(kind="detected", container=name) == []
    fleet.get("a").kill()  # SIGKILL with no stop event: healed
    wait_for(lambda: ok_restarts(daemon, name), 15, "a restart of the killed container")
    assert "(docker kill)" in daemon.entries(kind="detected", container=name)[0]["reason"]


def test_unmanaged_and_lookalike_containers_are_untouched(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str
) -> None:
    fleet.start("nolabel", labels={})
    fleet.start("optout", labels={f"{prefix}.enable": "false"})
    fleet.start("lookalike", labels={f"{prefix}x.enable": "true", f"x{prefix}.enable": "true"})
    fleet.start("garbage", labels={f"{prefix}.enable": "true", f"{prefix}.priority": "high"})
    fleet.start("cased", labels={f"{prefix.upper()}.enable": "true", f"{prefix}.Enable": "true"})
    fleet.start("underscore", labels={f"{prefix}_enable": "true", f"{prefix}.enable ": "true"})
    fleet.start("maybe", labels={f"{prefix}.enable": "yes please"})
    fleet.start("shelly", labels={f"{prefix}.enable": "true", f"{prefix}.stop-timeout": "$(reboot)"})
    fleet.start("managed")
    daemon = new_daemon(daemons, tmp_path, prefix).start()
    hostile = ("nolabel", "optout", "lookalike", "garbage", "cased", "underscore", "maybe", "shelly")
    for name in (*hostile, "managed"):
        fleet.get(name).kill()
    managed = fleet.get("managed").name
    wait_for(lambda: ok_restarts(daemon, managed), 15, "the managed container restarted")
    time.sleep(3)
    for name in hostile:
        assert fleet.state(name)["Status"] == "exited", name
        assert daemon.restarts(fleet.get(name).name) == [], name
    status = daemon.cli("status")
    assert "MISCONFIGURED" in status.stdout and f"label {prefix}.priority='high'" in status.stdout
    assert f"label {prefix}.enable='yes please'" in status.stdout
    assert f"label {prefix}.stop-timeout='$(reboot)'" in status.stdout
    for name in ("nolabel", "optout", "lookalike", "cased", "underscore"):
        assert fleet.get(name).name not in status.stdout, name


def test_priorities_set_restart_order_one_at_a_time(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str
) -> None:
    project = f"gwt{prefix}"
    compose = tmp_path / "compose.yml"
    services = {}
    for name, priority in (("low", 1), ("high", 10), ("mid", 5)):
        services[name] = {
            "image": "gpu-watchdog/standin:dev",
            "environment": {"LOAD_SECONDS": "1"},
            "ports": ["127.0.0.1::8080"],
            "labels": {
                f"{prefix}.enable": "true",
                f"{prefix}.priority": str(priority),
                f"{prefix}.health-port": "8080",
                "gpu-watchdog-test.run": "compose",
            },
        }
    import yaml

    compose.write_text(yaml.safe_dump({"services": services}))
    base = ["docker", "compose", "-p", project, "-f", str(compose)]
    env = {"COMPOSE_BAKE": "false", "PATH": "/usr/local/bin:/usr/bin:/bin"}
    subprocess.run([*base, "up", "-d"], check=True, capture_output=True, env=env)
    try:
        names = {s: f"{project}-{s}-1" for s in services}
        for container in names.values():
            fleet.client.containers.get(container).kill()
        daemon = new_daemon(daemons, tmp_path, prefix).start()
        wait_for(lambda: all(ok_restarts(daemon, n) for n in names.values()), 40, "all three restarted")
        order = sorted(names, key=lambda s: daemon.restarts(names[s])[0].started_at)
        assert order == ["high", "mid", "low"]
        # one at a time: each restart began only after the previous one was back
        recovered = {e["container"]: e["ts"] for e in daemon.entries(kind="restart-recovered")}
        assert daemon.restarts(names["mid"])[0].started_at >= recovered[names["high"]]
        assert daemon.restarts(names["low"])[0].started_at >= recovered[names["mid"]]
    finally:
        subprocess.run([*base, "down", "-t", "1"], capture_output=True, env=env)


def test_dry_run_restarts_nothing(fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str) -> None:
    fleet.start("a")
    fleet.wait_ready("a")
    daemon = new_daemon(daemons, tmp_path, prefix, dry_run=True).start()
    name = fleet.get("a").name
    fleet.get("a").kill()
    wait_for(lambda: daemon.entries(kind="dry-run", container=name), 10, "the dry-run record")
    time.sleep(3)
    assert fleet.state("a")["Status"] == "exited"
    assert daemon.restarts(name) == []
    assert len(daemon.entries(kind="dry-run", container=name)) == 1  # said once, not every cycle
    assert "DRY-RUN: would restart" in daemon.log()


def test_watchdog_killed_mid_restart_is_reconciled(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str
) -> None:
    # SIGTERM is ignored, so `docker restart` takes the whole 4 s stop timeout: time to kill the watchdog.
    fleet.start("slow", env={"IGNORE_SIGTERM": "1"}, stop_timeout="4", start_period="1")
    fleet.wait_ready("slow")
    name = fleet.get("slow").name
    daemon = new_daemon(daemons, tmp_path, prefix).start()
    before = started_at(fleet, "slow")
    fleet.fault("slow", "unhealthy")

    def restart_in_flight() -> bool:
        return any(a.finished_at is None for a in daemon.restarts(name))

    faulted_at = time.time()
    wait_for(restart_in_flight, 15, "the restart to be in flight")

    def engine_stopping_it() -> bool:
        """The journal says "in flight" before the call reaches the engine: wait for the engine's kill event."""
        events = fleet.client.events(
            decode=True, since=faulted_at, until=time.time(), filters={"container": name, "event": "kill"}
        )
        return any(True for _ in events)

    wait_for(engine_stopping_it, 15, "the engine to begin the restart")
    daemon.stop(sig=9)
    wait_for(
        lambda: running(fleet, "slow") and started_at(fleet, "slow") != before, 15, "the engine to finish the restart"
    )
    after_engine = started_at(fleet, "slow")
    daemon.start()
    wait_for(lambda: daemon.entries(kind="reconciled", container=name), 10, "the reconciliation record")
    reconciled = daemon.entries(kind="reconciled", container=name)[0]
    assert "completed while the watchdog was down" in reconciled["reason"]
    fleet.wait_ready("slow")
    time.sleep(4)
    assert len(daemon.restarts(name)) == 1  # not repeated
    assert started_at(fleet, "slow") == after_engine  # restarted exactly once
    assert (
        daemon.entries(kind="manual-stop", container=name) == []
    )  # our own stop event was not taken for an operator's


def test_two_watchdogs_do_not_fight(fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str) -> None:
    first = new_daemon(daemons, tmp_path, prefix).start()
    second = Daemon(tmp_path, prefix)
    second.log_path = tmp_path / "second.log"
    second.config_path = first.config_path
    daemons.append(second)
    second._log = open(second.log_path, "ab")  # noqa: SIM115
    second.proc = subprocess.Popen(
        [sys.executable, "-m", "watchdog", "--config", str(first.config_path), "--daemon"],
        stdout=second._log,
        stderr=subprocess.STDOUT,
    )
    wait_for(lambda: "another gpu-watchdog holds" in second.log(), 10, "the second daemon to say why it waits")
    assert second.alive()
    once = first.cli("run", "--once")
    assert once.returncode == 1 and "another gpu-watchdog holds" in once.stderr
    first.stop()
    wait_for(lambda: "healing loop running" in second.log(), 15, "the second daemon to take over")
