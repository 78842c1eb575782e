"""watchdog.gpu.orphans: which GPU processes belong to no running container (pure, table-driven)."""

from __future__ import annotations

import pytest

from watchdog.gpu.assignment import GONE, HOST
from watchdog.gpu.orphans import Orphan, confirm, find_orphans, needs_engine, suspects
from watchdog.gpu.readings import GpuHealth, GpuProcess, GpuSnapshot

MIB = 1024**2
RUNNING = "a" * 64  # a managed container that runs
STOPPED = "b" * 64  # a container the snapshot shows, but not running
REMOVED = "c" * 64  # a container neither the snapshot nor the engine has any more
PID = 4242


def gpus(*pids: int) -> tuple[GpuSnapshot, ...]:
    processes = tuple(GpuProcess(pid, 500 * MIB) for pid in pids)
    return (GpuSnapshot(0, GpuHealth.OK, "GPU-orphan-0", memory_used=4000 * MIB, processes=processes),)


# (case, owners of the GPU's PIDs or None for PID mapping off, running in the snapshot, running per the engine,
#  the orphans' owners)
CASES = [
    ("a running managed container's process", {PID: RUNNING}, {RUNNING}, {RUNNING}, []),
    ("a container's process the snapshot missed but the engine runs", {PID: STOPPED}, set(), {STOPPED}, []),
    ("a process whose container is gone", {PID: REMOVED}, {RUNNING}, {RUNNING}, [REMOVED]),
    ("a process of a stopped container", {PID: STOPPED}, {RUNNING}, {RUNNING}, [STOPPED]),
    ("a gone process (dead context)", {PID: GONE}, {RUNNING}, {RUNNING}, [GONE]),
    ("a host process", {PID: HOST}, set(), set(), []),
    ("an unknown owner: the PID is not mapped", {}, set(), set(), []),
    ("an unknown owner: PID mapping is off", None, set(), set(), []),
    ("the engine did not answer: only the gone process", {PID: REMOVED, PID + 1: GONE}, set(), None, [GONE]),
]


@pytest.mark.parametrize(("owners", "running", "live", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_orphans_are_processes_nothing_running_owns(
    owners: dict[int, str] | None, running: set[str], live: set[str] | None, expected: list[str]
) -> None:
    found = find_orphans(gpus(PID, PID + 1), owners, running, live)
    assert [o.owner for o in found] == expected


def test_an_orphan_says_where_and_why_for_status() -> None:
    (orphan,) = find_orphans(gpus(PID), {PID: REMOVED}, set(), set())
    assert orphan.row() == {
        "gpu": "GPU-orphan-0",
        "index": 0,
        "pid": PID,
        "memory": 500 * MIB,
        "why": f"its container {REMOVED[:12]} is not running",
    }
    gone = Orphan("GPU-orphan-0", 0, PID, None, GONE)
    assert gone.process_gone and "reset the GPU" in gone.why


@pytest.mark.parametrize(
    ("owners", "asks"),
    [({PID: GONE}, False), ({PID: REMOVED}, True), ({PID: GONE, PID + 1: REMOVED}, True), ({PID: RUNNING}, False)],
    ids=["only gone processes", "a container's process", "both", "no suspect"],
)
def test_the_engine_is_asked_only_about_a_containers_process(owners: dict[int, str], asks: bool) -> None:
    candidates = suspects(gpus(PID, PID + 1), owners, {RUNNING})
    assert needs_engine(candidates) is asks
    assert [o.owner for o in confirm(candidates, None)] == [o.owner for o in candidates if o.owner == GONE]
