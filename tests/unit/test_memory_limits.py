"""Memory limits: the pure planner and override, write_if_changed, and the sync against a fake engine."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import docker.errors
import pytest
import yaml

from watchdog.entries import EntryKind
from watchdog.files import write_if_changed
from watchdog.journal import Journal
from watchdog.model import ContainerSnapshot, ContainerSpec, ContainerState
from watchdog.router.capacity import GIB, MIB, CapacityPolicy, RoleMemory
from watchdog.router.memory_limit_plan import (
    Applied,
    LimitKind,
    Limits,
    docker_size,
    dump_applied,
    format_limits,
    load_applied,
    plan_memory_limits,
    render_compose_override,
)
from watchdog.router.memory_limits import META_KEY, MemoryLimitSync, Outcome

LIMITS = {"chat": RoleMemory(1536 * MIB, 2048 * MIB), "embed": RoleMemory(512 * MIB, 768 * MIB)}
CHAT = Limits(1536 * MIB, 2048 * MIB)


def snap(
    name: str,
    role: str | None = "chat",
    mem: int = 0,
    swap: int = 0,
    *,
    cid: str | None = None,
    service: str | None = None,
    project: str | None = "fleet",
    state: ContainerState = ContainerState.RUNNING,
    spec: bool = True,
    is_self: bool = False,
) -> ContainerSnapshot:
    return ContainerSnapshot(
        id=cid or f"id-{name}",
        name=name,
        state=state,
        spec=ContainerSpec(role=role) if spec else None,
        memory_limit=mem,
        memory_swap=swap,
        compose_service=service,
        compose_project=project if service else None,
        is_self=is_self,
    )


# -- planning ----------------------------------------------------------------


def test_a_container_with_the_planned_limits_needs_nothing() -> None:
    assert plan_memory_limits([snap("chat-0", mem=CHAT.mem, swap=CHAT.swap)], LIMITS, {}, {}) == []


def test_containers_without_a_planned_role_are_ignored() -> None:
    containers = [
        snap("norole", role=None),
        snap("other", role="rerank"),
        snap("misconfigured", spec=False),
        snap("self", is_self=True),
    ]
    assert plan_memory_limits(containers, LIMITS, {}, {}) == []
    assert plan_memory_limits([snap("zero")], {"chat": RoleMemory(0, 0)}, {}, {}) == []


def test_never_applied_is_not_applied_with_the_values_and_the_fix() -> None:
    (action,) = plan_memory_limits([snap("chat-0")], LIMITS, {}, {"id-chat-0": 100 * MIB})
    assert action.kind == LimitKind.NOT_APPLIED
    assert (action.current, action.planned, action.applied, action.role) == (Limits(0, 0), CHAT, None, "chat")
    assert action.reason.startswith("chat-0: memory limit none, planned 1.5 GiB (RAM+swap 2.0 GiB) for role chat")
    assert "`docker update --memory 1536m --memory-swap 2048m chat-0`" in action.reason
    assert "\n" not in action.reason


def test_a_limit_set_by_hand_but_never_by_us_is_not_applied_not_drift() -> None:
    (action,) = plan_memory_limits([snap("chat-0", mem=GIB, swap=2 * GIB)], LIMITS, {}, {"id-chat-0": 100 * MIB})
    assert action.kind == LimitKind.NOT_APPLIED
    assert "memory limit 1.0 GiB (RAM+swap 2.0 GiB), planned 1.5 GiB" in action.reason


def test_a_value_changed_after_we_applied_it_is_drift() -> None:
    container = snap("chat-0", mem=GIB, swap=GIB)
    (action,) = plan_memory_limits([container], LIMITS, {"chat-0": Applied("id-chat-0", CHAT)}, {"id-chat-0": MIB})
    assert action.kind == LimitKind.DRIFT and action.applied == CHAT
    assert "changed to 1.0 GiB (RAM+swap 1.0 GiB) since the watchdog set 1.5 GiB (RAM+swap 2.0 GiB)" in action.reason


def test_a_recreated_container_of_the_same_name_is_not_drift() -> None:
    container = snap("chat-0", mem=GIB, swap=GIB, cid="new-id")
    (action,) = plan_memory_limits([container], LIMITS, {"chat-0": Applied("old-id", CHAT)}, {"new-id": MIB})
    assert action.kind == LimitKind.NOT_APPLIED and action.applied is None


def test_our_own_older_plan_is_not_applied_not_drift() -> None:
    old = Limits(GIB, GIB)
    container = snap("chat-0", mem=old.mem, swap=old.swap)
    (action,) = plan_memory_limits([container], LIMITS, {"chat-0": Applied("id-chat-0", old)}, {})
    assert action.kind == LimitKind.NOT_APPLIED  # raising: usage not needed


def test_a_plan_below_usage_is_blocked_even_where_no_limit_was_set() -> None:
    for mem in (0, 4 * GIB):
        (action,) = plan_memory_limits([snap("chat-0", mem=mem, swap=mem)], LIMITS, {}, {"id-chat-0": 3 * GIB})
        assert action.kind == LimitKind.BLOCKED and action.usage == 3 * GIB
        assert "is below its usage 3.0 GiB" in action.reason and "capacity.memory.chat.mem_limit" in action.reason


def test_a_drift_that_cannot_be_set_back_is_blocked() -> None:
    container = snap("chat-0", mem=4 * GIB, swap=4 * GIB)
    applied = {"chat-0": Applied("id-chat-0", CHAT)}
    (action,) = plan_memory_limits([container], LIMITS, applied, {"id-chat-0": 2 * GIB})
    assert action.kind == LimitKind.BLOCKED and action.applied == CHAT


def test_unknown_usage_never_lowers_but_raises_and_sets() -> None:
    lower = snap("a", mem=4 * GIB, swap=4 * GIB)
    raise_ = snap("b", mem=GIB, swap=GIB)
    unset = snap("c")
    actions = plan_memory_limits([unset, lower, raise_], LIMITS, {}, {"id-a": None})
    assert [(a.container, a.kind) for a in actions] == [
        ("a", LimitKind.BLOCKED),
        ("b", LimitKind.NOT_APPLIED),
        ("c", LimitKind.NOT_APPLIED),
    ]
    assert "usage is unknown: not lowered" in actions[0].reason and "docker stats a" in actions[0].reason


def test_usage_at_the_limit_is_not_blocked_and_only_swap_may_differ() -> None:
    container = snap("chat-0", mem=CHAT.mem, swap=CHAT.mem)
    (action,) = plan_memory_limits([container], LIMITS, {}, {"id-chat-0": CHAT.mem})
    assert action.kind == LimitKind.NOT_APPLIED and action.planned == CHAT


def test_formatting() -> None:
    assert format_limits(Limits(0, 0)) == "none"
    assert format_limits(Limits(GIB, -1)) == "1.0 GiB (RAM+swap unlimited)"
    assert format_limits(Limits(GIB, 0)) == "1.0 GiB (RAM+swap unset)"
    assert [docker_size(v) for v in (1536 * MIB, 512 * 1024, 1000, -1)] == ["1536m", "512k", "1000", "-1"]


def test_applied_round_trips_and_garbage_is_dropped() -> None:
    applied = {"b": Applied("id-b", CHAT), "a": Applied("id-a", Limits(GIB, -1))}
    assert load_applied(dump_applied(applied)) == applied
    assert dump_applied(applied).index('"a"') < dump_applied(applied).index('"b"')
    for text in (None, "", "not json", "[1, 2]", '{"a": [1, 2]}', '{"a": {"id": "x", "mem": "1g", "swap": 0}}'):
        assert load_applied(text) == {}
    assert load_applied('{"a": {"id": "x", "mem": 1, "swap": 2}, "b": 3}') == {"a": Applied("x", Limits(1, 2))}


# -- compose override --------------------------------------------------------


def fleet_with_services() -> list[ContainerSnapshot]:
    return [
        snap("fleet-chat-1", service="chat"),
        snap("fleet-chat-2", service="chat"),
        snap("fleet-embed-1", role="embed", service="embed"),
        snap("loose", role="chat"),  # no compose service
        snap("fleet-proxy-1", role=None, service="proxy"),
        snap("fleet-rerank-1", role="rerank", service="rerank"),
    ]


def test_override_has_the_limits_per_service_and_says_how_to_use_it() -> None:
    text = render_compose_override(fleet_with_services(), LIMITS, filename="limits.yml")
    assert text.startswith("# Memory limits per role, written by gpu-watchdog")
    assert "docker compose -f compose.yaml -f limits.yml up" in text
    assert '  chat:\n    mem_limit: "1536m"\n    memswap_limit: "2048m"\n' in text
    assert yaml.safe_load(text) == {
        "services": {
            "chat": {"mem_limit": "1536m", "memswap_limit": "2048m"},
            "embed": {"mem_limit": "512m", "memswap_limit": "768m"},
        }
    }


def test_override_is_deterministic() -> None:
    containers = fleet_with_services()
    first = render_compose_override(containers, LIMITS)
    for seed in range(5):
        random.Random(seed).shuffle(containers)
        assert render_compose_override(containers, LIMITS) == first


def test_override_leaves_out_a_service_with_mixed_roles_and_handles_odd_values() -> None:
    containers = [snap("a", service="mixed"), snap("b", role="embed", service="mixed"), snap("c", service="x y")]
    text = render_compose_override(containers, {**LIMITS, "chat": RoleMemory(GIB, -1)})
    assert "# service mixed left out: its containers have different roles" in text
    assert yaml.safe_load(text) == {"services": {"x y": {"mem_limit": "1024m", "memswap_limit": -1}}}
    assert yaml.safe_load(render_compose_override([], LIMITS)) == {"services": {}}


# -- write_if_changed --------------------------------------------------------


def test_write_if_changed_writes_atomically_and_only_on_change(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "limits.yml"
    assert write_if_changed(path, "one\n") is True
    assert path.read_text() == "one\n" and oct(path.stat().st_mode & 0o777) == "0o644"
    os.utime(path, (1_000_000, 1_000_000))
    inode = path.stat().st_ino
    assert write_if_changed(path, "one\n") is False
    assert path.stat().st_mtime == 1_000_000 and path.stat().st_ino == inode
    assert write_if_changed(path, "two\n") is True
    assert path.read_text() == "two\n" and path.stat().st_ino != inode  # replaced, not rewritten in place
    assert sorted(p.name for p in path.parent.iterdir()) == ["limits.yml"]


def test_write_if_changed_leaves_no_temp_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "adir"
    target.mkdir()
    with pytest.raises(OSError):
        write_if_changed(target, "text")  # os.replace onto a directory fails
    assert [p.name for p in tmp_path.iterdir()] == ["adir"] and list(target.iterdir()) == []


# -- the sync, against a fake engine -----------------------------------------


class FakeApi:
    """The three engine calls the sync makes, on an in-memory table."""

    def __init__(self) -> None:
        self.limits: dict[str, Limits] = {}
        self.usage: dict[str, int] = {}
        self.updates: list[tuple[str, int, int]] = []
        self.refuse: str | None = None
        self.keep: Limits | None = None  # an engine that keeps other values than asked (no swap accounting)
        self.broken = False

    def inspect_container(self, cid: str) -> dict[str, Any]:
        if self.broken:
            raise RuntimeError("engine exploded")
        limits = self.limits[cid]
        return {"Id": cid, "HostConfig": {"Memory": limits.mem, "MemorySwap": limits.swap}}

    def stats(self, cid: str, stream: bool = True, one_shot: bool | None = None) -> dict[str, Any]:
        assert stream is False and one_shot is True
        if cid not in self.usage:
            raise docker.errors.APIError("no stats")
        return {"memory_stats": {"usage": self.usage[cid] + 10 * MIB, "stats": {"inactive_file": 10 * MIB}}}

    def update_container(self, cid: str, mem_limit: int, memswap_limit: int) -> dict[str, Any]:
        if self.refuse:
            raise docker.errors.APIError("update failed", explanation=self.refuse)
        self.updates.append((cid, mem_limit, memswap_limit))
        self.limits[cid] = self.keep or Limits(mem_limit, memswap_limit)
        return {"Warnings": ["swap ignored"] if self.keep else None}


class FakeClient:
    def __init__(self) -> None:
        self.api = FakeApi()


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal.in_dir(tmp_path / "state")
    yield j
    j.close()


def engine_with(client: FakeClient, *containers: ContainerSnapshot, usage: int = 100 * MIB) -> None:
    for c in containers:
        client.api.limits[c.id] = Limits(c.memory_limit, c.memory_swap)
        client.api.usage[c.id] = usage


def policy(mode: str, **changes: Any) -> CapacityPolicy:
    return replace(CapacityPolicy(memory=LIMITS, memory_limits=mode), **changes)


def kinds(journal: Journal) -> list[tuple[str, str | None]]:
    return [(e["kind"], e["container"]) for e in journal.entries()]


def test_off_does_nothing(journal: Journal) -> None:
    client = FakeClient()
    client.api.broken = True  # not even asked
    sync = MemoryLimitSync(client, journal, policy("off"))  # type: ignore[arg-type]
    assert sync.sync([snap("chat-0")], 1.0) == [] and journal.entries() == [] and sync.failures == 0


def test_report_journals_each_problem_once_and_changes_nothing(journal: Journal) -> None:
    client = FakeClient()
    containers = [snap("chat-0"), snap("embed-0", role="embed", mem=GIB, swap=GIB)]
    engine_with(client, *containers)
    sync = MemoryLimitSync(client, journal, policy("report"))  # type: ignore[arg-type]
    for cycle in range(3):
        results = sync.sync(containers, 10.0 + cycle)
        assert [r.outcome for r in results] == [Outcome.REPORTED, Outcome.REPORTED]
    assert client.api.updates == []
    assert kinds(journal) == [(EntryKind.MEMORY_LIMIT, "chat-0"), (EntryKind.MEMORY_LIMIT, "embed-0")]
    entry = journal.entries()[0]
    assert entry["fault"] == "not-applied" and entry["detail"]["planned"] == list(CHAT)
    assert entry["detail"]["mode"] == "report"


def test_report_journals_again_when_the_problem_comes_back(journal: Journal) -> None:
    client = FakeClient()
    container = snap("chat-0")
    engine_with(client, container)
    sync = MemoryLimitSync(client, journal, policy("report"))  # type: ignore[arg-type]
    sync.sync([container], 1.0)
    fixed = snap("chat-0", mem=CHAT.mem, swap=CHAT.swap)
    client.api.limits[container.id] = CHAT
    assert sync.sync([fixed], 2.0) == []
    client.api.limits[container.id] = Limits(0, 0)
    sync.sync([container], 3.0)
    assert kinds(journal) == [(EntryKind.MEMORY_LIMIT, "chat-0"), (EntryKind.MEMORY_LIMIT, "chat-0")]


def test_enforce_applies_remembers_and_then_corrects_drift(journal: Journal) -> None:
    client = FakeClient()
    container = snap("chat-0")
    engine_with(client, container)
    sync = MemoryLimitSync(client, journal, policy("enforce"))  # type: ignore[arg-type]
    (result,) = sync.sync([container], 1.0)
    assert result.outcome == Outcome.APPLIED and client.api.updates == [("id-chat-0", CHAT.mem, CHAT.swap)]
    assert load_applied(journal.get_meta(META_KEY)) == {"chat-0": Applied("id-chat-0", CHAT)}
    # the probe's cached snapshot still shows the old values: the sync reads the engine and does nothing
    assert sync.sync([container], 2.0) == [] and len(client.api.updates) == 1
    client.api.limits[container.id] = Limits(GIB, GIB)  # someone ran docker update by hand
    (result,) = sync.sync([snap("chat-0", mem=GIB, swap=GIB)], 3.0)
    assert result.outcome == Outcome.CORRECTED and client.api.limits[container.id] == CHAT
    assert kinds(journal) == [(EntryKind.MEMORY_LIMIT_APPLIED, "chat-0"), (EntryKind.MEMORY_LIMIT_DRIFT, "chat-0")]
    assert "changed by hand to 1.0 GiB (RAM+swap 1.0 GiB); set back to 1.5 GiB" in journal.entries()[1]["reason"]


def test_a_new_sync_reads_what_was_applied_from_the_journal(journal: Journal) -> None:
    journal.set_meta(META_KEY, dump_applied({"chat-0": Applied("id-chat-0", CHAT)}))
    client = FakeClient()
    container = snap("chat-0", mem=GIB, swap=GIB)
    engine_with(client, container)
    (result,) = MemoryLimitSync(client, journal, policy("enforce")).sync([container], 1.0)  # type: ignore[arg-type]
    assert result.action.kind == LimitKind.DRIFT and result.outcome == Outcome.CORRECTED


def test_enforce_never_lowers_below_usage(journal: Journal) -> None:
    client = FakeClient()
    container = snap("chat-0", mem=4 * GIB, swap=4 * GIB)
    engine_with(client, container, usage=3 * GIB)
    sync = MemoryLimitSync(client, journal, policy("enforce"))  # type: ignore[arg-type]
    for now in (1.0, 2.0):
        (result,) = sync.sync([container], now)
        assert result.outcome == Outcome.BLOCKED
    assert client.api.updates == [] and kinds(journal) == [(EntryKind.MEMORY_LIMIT_BLOCKED, "chat-0")]
    assert journal.get_meta(META_KEY) is None


def test_a_stopped_container_is_lowered_without_reading_usage(journal: Journal) -> None:
    client = FakeClient()
    container = snap("chat-0", mem=4 * GIB, swap=4 * GIB, state=ContainerState.EXITED)
    engine_with(client, container)
    del client.api.usage[container.id]  # stats would fail
    (result,) = MemoryLimitSync(client, journal, policy("enforce")).sync([container], 1.0)  # type: ignore[arg-type]
    assert result.outcome == Outcome.APPLIED


def test_a_refused_update_is_journaled_once_and_retried_later(journal: Journal) -> None:
    client = FakeClient()
    container = snap("chat-0")
    engine_with(client, container)
    client.api.refuse = "unable to set memory limit\n: unknown"
    sync = MemoryLimitSync(client, journal, policy("enforce"), retry_after=60)  # type: ignore[arg-type]
    assert [r.outcome for r in sync.sync([container], 0.0)] == [Outcome.FAILED]
    assert [r.outcome for r in sync.sync([container], 30.0)] == [Outcome.WAITING]
    client.api.refuse = None
    assert [r.outcome for r in sync.sync([container], 61.0)] == [Outcome.APPLIED]
    assert kinds(journal) == [(EntryKind.MEMORY_LIMIT_FAILED, "chat-0"), (EntryKind.MEMORY_LIMIT_APPLIED, "chat-0")]
    assert "`docker update` refused: unable to set memory limit : unknown;" in journal.entries()[0]["reason"]
    assert sync.failures == 1


def test_an_engine_that_keeps_other_values_is_a_failure_not_a_loop(journal: Journal) -> None:
    client = FakeClient()
    container = snap("chat-0")
    engine_with(client, container)
    client.api.keep = Limits(CHAT.mem, -1)
    sync = MemoryLimitSync(client, journal, policy("enforce"), retry_after=60)  # type: ignore[arg-type]
    (result,) = sync.sync([container], 0.0)
    assert result.outcome == Outcome.FAILED and "engine kept 1.5 GiB (RAM+swap unlimited)" in result.text
    assert "swap ignored" in result.text
    assert [r.outcome for r in sync.sync([container], 1.0)] == [Outcome.WAITING]
    assert len(client.api.updates) == 1


def test_dry_run_enforce_only_reports(journal: Journal) -> None:
    client = FakeClient()
    container = snap("chat-0")
    engine_with(client, container)
    sync = MemoryLimitSync(client, journal, policy("enforce"), dry_run=lambda: True)  # type: ignore[arg-type]
    (result,) = sync.sync([container], 1.0)
    assert result.outcome == Outcome.REPORTED and result.text.startswith("dry run: chat-0:")
    assert client.api.updates == [] and kinds(journal) == [(EntryKind.MEMORY_LIMIT, "chat-0")]


def test_sync_never_raises(journal: Journal) -> None:
    client = FakeClient()
    client.api.broken = True
    sync = MemoryLimitSync(client, journal, policy("enforce"))  # type: ignore[arg-type]
    assert sync.sync([snap("chat-0")], 1.0) == [] and sync.failures == 0  # no answer for it: skipped
    client.api.broken = False
    engine_with(client, snap("chat-0"))
    client.api.update_container = lambda *a, **k: 1 / 0  # type: ignore[method-assign]
    assert sync.sync([snap("chat-0")], 2.0) == [] and sync.failures == 1

    def broken_policy() -> CapacityPolicy:
        raise KeyError("config")

    assert MemoryLimitSync(client, journal, broken_policy).sync([snap("chat-0")], 3.0) == []  # type: ignore[arg-type]


def test_policy_getter_is_read_every_cycle_and_override_written_on_change(journal: Journal, tmp_path: Path) -> None:
    client = FakeClient()
    container = snap("chat-0", mem=CHAT.mem, swap=CHAT.swap, service="chat")
    engine_with(client, container)
    path = tmp_path / "limits.yml"
    current = {"policy": policy("off", compose_override=str(path))}
    sync = MemoryLimitSync(client, journal, lambda: current["policy"])
    sync.sync([container], 1.0)
    assert not path.exists()
    current["policy"] = policy("report", compose_override=str(path))
    sync.sync([container], 2.0)
    sync.sync([container], 3.0)
    assert yaml.safe_load(path.read_text())["services"]["chat"]["mem_limit"] == "1536m"
    assert kinds(journal) == [(EntryKind.MEMORY_LIMIT_OVERRIDE, None)]
    path.write_text("edited by hand\n")
    current["policy"] = policy("report", compose_override=str(path), memory={"chat": RoleMemory(GIB, GIB)})
    sync.sync([container], 4.0)
    assert yaml.safe_load(path.read_text())["services"]["chat"]["mem_limit"] == "1024m"


def test_an_unwritable_override_is_a_counted_failure(journal: Journal, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    client = FakeClient()
    sync = MemoryLimitSync(client, journal, policy("report", compose_override=str(blocker / "limits.yml")))  # type: ignore[arg-type]
    assert sync.sync([], 1.0) == [] and sync.failures == 1
