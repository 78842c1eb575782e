"""Memory limits on the real engine: `docker update` applied, drift set back, usage respected (issue 4)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml

from tests.integration.harness import RUN_ID, Fleet
from watchdog.containers.engine import DockerProbe
from watchdog.entries import EntryKind
from watchdog.journal import Journal
from watchdog.model import ContainerSnapshot
from watchdog.router.capacity import MIB, CapacityPolicy, RoleMemory
from watchdog.router.memory_limit_plan import LimitKind, load_applied
from watchdog.router.memory_limits import META_KEY, MemoryLimitSync, Outcome, read_usage

pytestmark = pytest.mark.engine

# Well above what the stand-in uses (~11 MiB without page cache), so applying them is safe.
LIMITS = {"chat": RoleMemory(96 * MIB, 160 * MIB), "embed": RoleMemory(64 * MIB, 64 * MIB)}


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal.in_dir(tmp_path / "state")
    yield j
    j.close()


def policy(mode: str, **changes: Any) -> CapacityPolicy:
    return replace(CapacityPolicy(memory=LIMITS, memory_limits=mode), **changes)


def snapshots(fleet: Fleet) -> list[ContainerSnapshot]:
    """What the loop would pass: every container with this test's enable label, freshly inspected."""
    return DockerProbe(fleet.client, fleet.prefix, self_ids=frozenset(), hostname="").snapshot()


def host_limits(fleet: Fleet, name: str) -> tuple[int, int]:
    host = fleet.client.api.inspect_container(fleet.get(name).id)["HostConfig"]
    return int(host["Memory"]), int(host["MemorySwap"])


def kinds(journal: Journal) -> list[tuple[str, str | None]]:
    return [(e["kind"], e["container"]) for e in journal.entries() if e["kind"].startswith("memory-limit")]


def test_enforce_applies_the_limits_and_sets_drift_back(
    client: docker.DockerClient, fleet: Fleet, journal: Journal
) -> None:
    chat = fleet.start("chat0", role="chat").name
    embed = fleet.start("embed0", role="embed").name
    sync = MemoryLimitSync(client, journal, policy("enforce"))
    results = sync.sync(snapshots(fleet), 100.0)
    assert sorted((r.action.container, r.action.kind, r.outcome) for r in results) == [
        (chat, LimitKind.NOT_APPLIED, Outcome.APPLIED),
        (embed, LimitKind.NOT_APPLIED, Outcome.APPLIED),
    ], [r.text for r in results]
    assert host_limits(fleet, "chat0") == (96 * MIB, 160 * MIB)
    assert host_limits(fleet, "embed0") == (64 * MIB, 64 * MIB)
    applied = load_applied(journal.get_meta(META_KEY))
    assert {name: tuple(a.limits) for name, a in applied.items()} == {
        chat: (96 * MIB, 160 * MIB),
        embed: (64 * MIB, 64 * MIB),
    }
    assert sync.sync(snapshots(fleet), 101.0) == []  # in step now: nothing to do, nothing journaled

    client.api.update_container(fleet.get("chat0").id, mem_limit=128 * MIB, memswap_limit=256 * MIB)  # by hand
    (result,) = sync.sync(snapshots(fleet), 102.0)
    assert (result.action.kind, result.outcome) == (LimitKind.DRIFT, Outcome.CORRECTED), result.text
    assert host_limits(fleet, "chat0") == (96 * MIB, 160 * MIB)
    assert sorted(kinds(journal)) == sorted(
        [
            (EntryKind.MEMORY_LIMIT_APPLIED, chat),
            (EntryKind.MEMORY_LIMIT_APPLIED, embed),
            (EntryKind.MEMORY_LIMIT_DRIFT, chat),
        ]
    )
    drift = journal.entries(kind=EntryKind.MEMORY_LIMIT_DRIFT)[0]
    assert "changed by hand to 128.0 MiB (RAM+swap 256.0 MiB); set back to 96.0 MiB" in drift["reason"]
    assert sync.failures == 0


def test_report_changes_nothing_and_journals_each_problem_once(
    client: docker.DockerClient, fleet: Fleet, journal: Journal
) -> None:
    chat = fleet.start("chat0", role="chat").name
    fleet.start("other", role="rerank")  # no limits for its role: left alone
    sync = MemoryLimitSync(client, journal, policy("report"))
    for cycle in range(3):
        (result,) = sync.sync(snapshots(fleet), 100.0 + cycle)
        assert (result.action.container, result.outcome) == (chat, Outcome.REPORTED)
    assert host_limits(fleet, "chat0") == (0, 0) and host_limits(fleet, "other") == (0, 0)
    assert kinds(journal) == [(EntryKind.MEMORY_LIMIT, chat)]
    entry = journal.entries(kind=EntryKind.MEMORY_LIMIT)[0]
    assert entry["fault"] == "not-applied" and "--memory 96m --memory-swap 160m" in entry["reason"]
    assert journal.get_meta(META_KEY) is None


def test_a_limit_below_usage_is_blocked_not_applied(
    client: docker.DockerClient, fleet: Fleet, journal: Journal
) -> None:
    name = fleet.start("chat0", role="chat").name
    fleet.wait_ready("chat0")  # the model (stand-in) is loaded: its memory is in use
    usage = read_usage(client, fleet.get("chat0").id)
    assert usage is not None and usage > 6 * MIB, usage
    tight = policy("enforce", memory={"chat": RoleMemory(6 * MIB, 6 * MIB)})  # docker's minimum, below usage
    sync = MemoryLimitSync(client, journal, tight)
    for cycle in range(2):
        (result,) = sync.sync(snapshots(fleet), 100.0 + cycle)
        assert (result.action.kind, result.outcome) == (LimitKind.BLOCKED, Outcome.BLOCKED), result.text
    assert host_limits(fleet, "chat0") == (0, 0)
    assert fleet.state("chat0")["Running"] is True
    assert kinds(journal) == [(EntryKind.MEMORY_LIMIT_BLOCKED, name)]
    assert "is below its usage" in journal.entries(kind=EntryKind.MEMORY_LIMIT_BLOCKED)[0]["reason"]


def test_the_compose_override_is_valid_for_docker_compose(
    client: docker.DockerClient, fleet: Fleet, journal: Journal, tmp_path: Path
) -> None:
    project = f"gwt{RUN_ID}"
    for service, role in (("chat", "chat"), ("embed", "embed")):
        labels = fleet.labels(role=role)
        labels.update({"com.docker.compose.project": project, "com.docker.compose.service": service})
        fleet.start(f"{service}1", labels=labels)
    override = tmp_path / "compose.memory.yml"
    sync = MemoryLimitSync(client, journal, policy("report", compose_override=str(override)))
    sync.sync(snapshots(fleet), 100.0)
    assert yaml.safe_load(override.read_text())["services"]["chat"] == {"mem_limit": "96m", "memswap_limit": "160m"}
    base = tmp_path / "compose.yaml"
    base.write_text(yaml.safe_dump({"services": {s: {"image": "gpu-watchdog/standin:dev"} for s in ("chat", "embed")}}))
    done = subprocess.run(
        ["docker", "compose", "-p", project, "-f", str(base), "-f", str(override), "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    services = json.loads(done.stdout)["services"]
    assert [int(services["chat"][k]) for k in ("mem_limit", "memswap_limit")] == [96 * MIB, 160 * MIB]
    assert [int(services["embed"][k]) for k in ("mem_limit", "memswap_limit")] == [64 * MIB, 64 * MIB]
    mtime = override.stat().st_mtime_ns
    sync.sync(snapshots(fleet), 101.0)
    assert override.stat().st_mtime_ns == mtime  # unchanged: not rewritten
