"""Fault injection (issue 7) on the real engine with the real daemon: what breaks around the watchdog.

The faults not covered elsewhere: a slow endpoint under load, the journal's disk full or read-only,
a container removed or recreated while its restart is in flight, and a restart storm against the
concurrency limit and the host-RAM preflight. (The engine restarted mid-run, a hung endpoint, the
watchdog SIGKILLed mid-restart, two watchdogs, the LiteLLM proxy down and NVML hung have their own
tests: README, "Fault injection".)
"""

from __future__ import annotations

import contextlib
import itertools
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import new_daemon
from tests.integration.harness import RUN_ID, Daemon, Fleet, ok_restarts, started_at, wait_for

pytestmark = pytest.mark.engine


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant."""
    points = sorted(itertools.chain(((s, 1) for s, _ in intervals), ((e, -1) for _, e in intervals)))
    best = running = 0
    for _, step in points:
        running += step
        best = max(best, running)
    return best


# -- a slow endpoint under load -------------------------------------------------------------------


def test_a_slow_endpoint_under_load_is_not_restarted_below_the_threshold(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str
) -> None:
    fleet.start("slow", env={"RESPONSE_DELAY": "0.5"})
    fleet.wait_ready("slow")
    name = fleet.get("slow").name
    daemon = new_daemon(daemons, tmp_path, prefix).start()  # probe timeout 1 s, 3 failures in a row
    # Every health check 0.6 s late (under the 1 s timeout), and every 3rd one 1.5 s late (a timeout):
    # at most one failure in a row, never three.
    httpx.post(fleet.url("slow", "/fault/slow?seconds=0.6&every=1"), timeout=2, trust_env=False)
    stop = threading.Event()
    answered: list[int] = []

    def load() -> None:  # chat requests in parallel, each held 0.5 s by the server
        with httpx.Client(timeout=10, trust_env=False) as http:
            while not stop.is_set() and len(answered) < 2000:
                answered.append(http.post(fleet.url("slow", "/v1/chat/completions"), json={}).status_code)

    workers = [threading.Thread(target=load, daemon=True) for _ in range(8)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(8)
        httpx.post(fleet.url("slow", "/fault/slow?seconds=1.5&every=3"), timeout=2, trust_env=False)
        time.sleep(10)
    finally:
        stop.set()
        for worker in workers:
            worker.join(15)
    assert answered and set(answered) == {200}
    assert daemon.restarts(name) == [] and daemon.entries(kind="detected", container=name) == []
    # The same server slow on every check past the timeout: now it is a fault, restarted after 3 probes.
    httpx.post(fleet.url("slow", "/fault/slow?seconds=1.5&every=1"), timeout=3, trust_env=False)
    wait_for(lambda: ok_restarts(daemon, name), 20, "the restart once every probe times out")
    (detected,) = daemon.entries(kind="detected", container=name)[:1]
    assert detected["fault"] == "endpoint-failing"


# -- the journal's disk ---------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 32 MiB ext4 file system on a loop device for the state dir, mounted errors=remount-ro.

    The test fills it, then makes the kernel remount it read-only under the open journal (ext4's
    trigger_fs_error: what a disk error does on a real host). Root is needed, as in CI.
    """
    image, mount = tmp_path / "state-disk.img", tmp_path / "state-disk"
    mount.mkdir()
    with open(image, "wb") as handle:
        handle.truncate(32 << 20)
    made = subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], capture_output=True, text=True)
    assert made.returncode == 0, f"mkfs.ext4 (e2fsprogs) failed: {made.stderr}"
    done = subprocess.run(
        ["mount", "-o", "loop,errors=remount-ro", str(image), str(mount)], capture_output=True, text=True
    )
    assert done.returncode == 0, f"cannot loop-mount the state disk (root needed, as in CI): {done.stderr}"
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], check=False, capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)  # a daemon still on it


def break_disk(mount: Path) -> None:
    """The kernel's own reaction to a disk error: the file system refuses writes, open files included."""
    device = subprocess.run(["findmnt", "-n", "-o", "SOURCE", str(mount)], capture_output=True, text=True).stdout
    Path(f"/sys/fs/ext4/{Path(device.strip()).name}/trigger_fs_error").write_text("1")

    def refused() -> bool:
        try:
            (mount / "probe").write_text("x")
        except OSError:
            return True
        return False

    wait_for(refused, 10, "the file system to refuse writes")


def fill(disk: Path) -> None:
    """Every last block: 1 MiB writes, then 4 KiB, then single bytes, until the disk says no."""
    with open(disk / "filler", "wb", buffering=0) as out:
        for chunk in (1 << 20, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    out.write(b"\0" * chunk)
    assert (
        subprocess.run(["df", "--output=avail", "-B1", str(disk)], capture_output=True, text=True).stdout.split()[-1]
        == "0"
    ), "the disk still has room"


def test_a_journal_disk_that_turns_read_only_under_the_daemon(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str, small_disk: Path
) -> None:
    fleet.start("a")
    fleet.start("b")
    fleet.wait_ready("a")
    fleet.wait_ready("b")
    daemon = Daemon(tmp_path, prefix, state_dir=str(small_disk / "state"))
    daemon.state_dir = small_disk / "state"
    daemons.append(daemon)
    daemon.start()
    a = fleet.get("a").name
    fleet.get("a").kill()
    wait_for(lambda: ok_restarts(daemon, a), 20, "a healed and journaled while the disk is fine")
    fleet.wait_ready("a")

    break_disk(small_disk)  # the kernel remounts it read-only under the open journal
    wait_for(lambda: "journal cannot be written" in daemon.log(), 15, "the daemon to say the journal is gone")
    for short in ("b", "a"):  # still healing, fault after fault
        before = started_at(fleet, short)
        fleet.get(short).kill()
        wait_for(
            lambda short=short, before=before: (  # type: ignore[misc]
                fleet.state(short)["Status"] == "running" and started_at(fleet, short) != before
            ),
            20,
            f"{short} healed with the journal read-only",
        )
        fleet.wait_ready(short)
    assert daemon.alive()
    lines = [line for line in daemon.log().splitlines() if "journal cannot be written" in line]
    assert len(lines) == 1 and '"CRITICAL"' in lines[0] and "free space or fix the disk" in lines[0]  # once
    assert daemon.stop() == 0  # a clean stop, even with the journal gone read-only


def test_a_full_journal_disk_at_start_heals_without_a_record_and_says_so(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str, small_disk: Path
) -> None:
    fleet.start("a")
    fleet.wait_ready("a")
    daemon = Daemon(tmp_path, prefix, state_dir=str(small_disk / "state"))
    daemon.state_dir = small_disk / "state"
    daemons.append(daemon)
    daemon.start()  # creates the journal and the lock file, then a clean stop
    assert daemon.stop() == 0
    fill(small_disk)  # e.g. logs filled the disk overnight; then the host rebooted
    daemon.start()
    # Said loudly: the journal cannot be opened (in memory then), or opened but not written.
    wait_for(
        lambda: "cannot open the journal" in daemon.log() or "journal cannot be written" in daemon.log(),
        15,
        "the daemon to say the journal is unusable",
    )
    assert any(
        '"CRITICAL"' in line and ("WITHOUT a persistent record" in line or "WITHOUT a record" in line)
        for line in daemon.log().splitlines()
    )
    before = started_at(fleet, "a")
    fleet.get("a").kill()
    wait_for(
        lambda: fleet.state("a")["Status"] == "running" and started_at(fleet, "a") != before, 20, "a healed anyway"
    )
    fleet.wait_ready("a")
    assert daemon.alive()
    assert daemon.stop() == 0
    assert not (Path.cwd() / "status.json").exists()  # the in-memory journal does not move the state dir


# -- removed or recreated while being restarted ------------------------------------------------------


def slow_restart_in_flight(fleet: Fleet, daemon: Daemon, short: str) -> str:
    """Fault `short` (which ignores SIGTERM) and wait until the engine is stopping it for the restart."""
    name = fleet.get(short).name
    faulted_at = time.time()
    fleet.fault(short, "unhealthy")
    wait_for(lambda: any(a.finished_at is None for a in daemon.restarts(name)), 15, "the restart in flight")

    def engine_stopping() -> bool:
        events = fleet.client.events(
            decode=True, since=faulted_at, until=time.time(), filters={"container": name, "event": "kill"}
        )
        return any(True for _ in events)

    wait_for(engine_stopping, 15, "the engine to begin the restart")
    return name


def test_a_container_removed_while_being_restarted(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str
) -> None:
    fleet.start("gone", env={"IGNORE_SIGTERM": "1"}, stop_timeout="5", start_period="1")
    fleet.start("other")
    fleet.wait_ready("gone")
    fleet.wait_ready("other")
    daemon = new_daemon(daemons, tmp_path, prefix).start()
    name = slow_restart_in_flight(fleet, daemon, "gone")
    fleet.get("gone").remove(force=True)
    wait_for(lambda: all(a.finished_at is not None for a in daemon.restarts(name)), 20, "the restart settled")
    wait_for(lambda: daemon.entries(kind="cleared", container=name), 15, "the fault cleared: container removed")
    assert "removed" in daemon.entries(kind="cleared", container=name)[0]["reason"]
    assert len(daemon.restarts(name)) == 1  # no retry of a container that no longer exists
    # The loop goes on: another container is still healed.
    other = fleet.get("other").name
    fleet.get("other").kill()
    wait_for(lambda: ok_restarts(daemon, other), 15, "another container still healed")
    assert daemon.alive()


def test_a_container_recreated_by_compose_while_being_restarted(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str
) -> None:
    fleet.start("svc", env={"IGNORE_SIGTERM": "1"}, stop_timeout="5", start_period="1")
    fleet.wait_ready("svc")
    daemon = new_daemon(daemons, tmp_path, prefix).start()
    name = slow_restart_in_flight(fleet, daemon, "svc")
    old_id = fleet.get("svc").id
    # What `docker compose up --force-recreate` does: remove, then create and start one of the same name.
    fleet.get("svc").remove(force=True)
    fleet.start("svc", start_period="1")
    fleet.wait_ready("svc")
    new_id = fleet.get("svc").id
    assert new_id != old_id
    wait_for(lambda: all(a.finished_at is not None for a in daemon.restarts(name)), 20, "the old restart settled")
    recreated_at = started_at(fleet, "svc")
    time.sleep(6)  # several cycles
    assert started_at(fleet, "svc") == recreated_at  # the new container was not restarted by mistake
    assert len(daemon.restarts(name)) == 1
    assert fleet.state("svc")["Status"] == "running" and daemon.alive()
    # And the new one is managed: a fault on it is healed.
    fleet.get("svc").kill()
    wait_for(lambda: [a.outcome for a in daemon.restarts(name)][1:] == ["ok"], 20, "the new one healed")
    assert started_at(fleet, "svc") != recreated_at


# -- a restart storm ----------------------------------------------------------------------------------


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no MemAvailable in /proc/meminfo")


@pytest.mark.parametrize("limit", ["slots", "ram"])
def test_a_restart_storm_holds_the_concurrency_limit_and_the_ram_preflight(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str, limit: str
) -> None:
    count = 6
    reserve = 1 << 30
    if limit == "slots":
        max_concurrent, size = 2, "64m"
    else:  # two models fit in MemAvailable at once, three do not; the slot limit (4) is not what binds
        max_concurrent, size = 4, str(int((mem_available() - reserve) / 2.5))
    names = []
    for i in range(count):
        fleet.start(f"s{i}", env={"IGNORE_SIGTERM": "1"}, stop_timeout="2", start_period="1", model_size=size)
        names.append(fleet.get(f"s{i}").name)
    for i in range(count):
        fleet.wait_ready(f"s{i}")
    daemon = new_daemon(
        daemons,
        tmp_path,
        prefix,
        max_concurrent_restarts=max_concurrent,
        ram_preflight={"enabled": True, "factor": 1.1, "reserve": reserve},
    ).start()
    for i in range(count):
        fleet.fault(f"s{i}", "unhealthy")  # every restart takes the 2 s stop timeout: they overlap if allowed
    wait_for(lambda: all(ok_restarts(daemon, n) for n in names), 90, "every container restarted")
    for i in range(count):
        fleet.wait_ready(f"s{i}", timeout=30)
    restarts = [a for n in names for a in daemon.restarts(n)]
    assert all(a.finished_at is not None for a in restarts)
    overlap = max_overlap([(a.started_at, a.finished_at) for a in restarts])
    assert overlap == 2, f"{overlap} restarts ran at once; the {limit} limit allows 2"
    defers = [e for n in names for e in daemon.entries(kind="defer", container=n)]
    assert defers, "nothing was deferred: the storm did not reach the limit"
    wanted = "waiting for a restart slot" if limit == "slots" else "host RAM preflight"
    assert any(wanted in e["reason"] for e in defers), [e["reason"] for e in defers]
    assert len(restarts) == count  # one restart each: none repeated, none lost


# -- a clean exit right after each restart ----------------------------------------------------------------


def test_a_container_that_exits_0_right_after_each_restart_is_a_crash_loop_not_a_stop(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str
) -> None:
    """Its exit 0.3 s after our restart is its own doing, not part of our restart (found by the soak's author)."""
    daemon = new_daemon(daemons, tmp_path, prefix).start()
    name = f"gwt-{RUN_ID}-quitter"
    fleet.client.containers.run(
        "local/busybox",
        ["sh", "-c", "sleep 0.3; exit 0"],
        detach=True,
        name=name,
        labels=fleet.labels(start_period="0"),
    )
    wait_for(lambda: daemon.entries(kind="give-up", container=name), 40, "the breaker to give up")
    assert len(daemon.restarts(name)) == 3  # breaker.max_restarts in the fast config: every exit counted
    reasons = [e["reason"] for e in daemon.entries(container=name)]
    assert not any("stopped on purpose" in r for r in reasons), reasons
    assert daemon.entries(kind="manual-stop", container=name) == []
