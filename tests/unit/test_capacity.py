"""The capacity planner against seed 001's fleet, and its edges."""

from __future__ import annotations

from dataclasses import replace

import pytest

from watchdog.config import ConfigError, parse_config
from watchdog.gpu.marks import GpuCondition, GpuMark
from watchdog.model import ContainerSnapshot, ContainerSpec, ContainerState, Health
from watchdog.router.capacity import (
    GIB,
    MIB,
    NOT_RENDERED,
    CapacityPolicy,
    CapacityVerdict,
    Member,
    RoleMemory,
    members_from_fleet,
    plan_capacity,
    proxy_params,
    render,
)

SEED = CapacityPolicy()  # seed 001: 3-4 rpm per GPU, 30 rpm, 90% margin, 1 in flight per GPU, 30% headroom


def seed_fleet(out_of_service: int = 0) -> list[Member]:
    """8 GPUs, one chat and one embed container each (seed 001); the last `out_of_service` chats are down."""
    members = []
    for gpu in range(8):
        members.append(Member(f"chat-{gpu}", "chat", "qwen-chat", (str(gpu),), gpu < 8 - out_of_service))
        members.append(Member(f"embed-{gpu}", "embed", "bge-embed", (str(gpu),), True))
    return members


def test_seed_001_numbers_are_reproduced() -> None:
    plan = plan_capacity(seed_fleet(), SEED, host_total=24 * GIB)
    assert plan.serving_gpus == 8
    assert plan.capacity_rpm == (24.0, 32.0)
    assert plan.share == pytest.approx(30 / 32)
    assert plan.verdict == CapacityVerdict.ABOVE_MARGIN
    assert plan.text.startswith("30 rpm = 94% of 32 rpm capacity (8 GPU(s) at 24-32 rpm) — above the 90% safety margin")
    assert plan.global_max_parallel_requests == 12  # 8 in flight / (1 - 30% headroom) = 11.4 -> 12
    chat = [d for d in plan.deployments if d.role == "chat"]
    assert len(chat) == 8 and {(d.rpm, d.max_parallel_requests) for d in chat} == {(4, 1)}
    assert {d.rpm for d in plan.deployments if d.role == "embed"} == {None}
    assert plan.memory.limits["chat"] == RoleMemory(1536 * MIB, 2048 * MIB)
    assert plan.memory.limits["embed"] == RoleMemory(512 * MIB, 768 * MIB)
    assert plan.memory.total_limits == 8 * 1536 * MIB + 8 * 512 * MIB == 16 * GIB
    assert plan.memory.fits and "= 18.0 GiB: fits in 24.0 GiB" in plan.memory.text


def test_losing_a_gpu_pushes_the_target_over_capacity_and_warns() -> None:
    plan = plan_capacity(seed_fleet(out_of_service=1), SEED, host_total=24 * GIB)
    assert plan.capacity_rpm == (21.0, 28.0) and plan.verdict == CapacityVerdict.OVER_CAPACITY
    assert "30 rpm = 107% of 28 rpm capacity" in plan.text and plan.warnings[0] == plan.text
    assert plan.global_max_parallel_requests == 10  # 7 / 0.7


def test_only_the_shares_reach_the_proxy_and_the_json_says_what_not_and_why() -> None:
    plan = plan_capacity(seed_fleet(), SEED, host_total=24 * GIB)
    chat = next(d for d in plan.deployments if d.role == "chat")
    embed = next(d for d in plan.deployments if d.role == "embed")
    assert proxy_params(chat) == {"weight": 4} and proxy_params(embed) == {}
    data = plan.as_dict()
    rows = {d["name"]: d for d in data["deployments"]}
    assert rows["chat-0"]["litellm_params"] == {"weight": 4} and rows["embed-0"]["litellm_params"] == {}
    assert (
        set(data["not_rendered"])
        == set(NOT_RENDERED)
        == {
            "max_parallel_requests",
            "rpm",
            "global_max_parallel_requests",
        }
    )


def test_within_margin_and_no_capacity() -> None:
    assert plan_capacity(seed_fleet(), replace(SEED, target_rpm=20), None).verdict == CapacityVerdict.OK
    empty = plan_capacity([], SEED, None)
    assert empty.verdict == CapacityVerdict.NO_CAPACITY and empty.share is None
    assert empty.global_max_parallel_requests == 0


def test_a_plan_that_cannot_fit_the_host_says_so_with_the_fix() -> None:
    plan = plan_capacity(seed_fleet(), SEED, host_total=16 * GIB)
    assert not plan.memory.fits
    assert "does NOT fit in 16.0 GiB" in plan.memory.text and "capacity.memory" in plan.memory.text
    assert plan.memory.text in plan.warnings


def test_members_from_the_fleet_leave_out_faulty_given_up_and_marked_gpus() -> None:
    def snap(name: str, gpu: str, **kw: object) -> ContainerSnapshot:
        values: dict[str, object] = {"state": ContainerState.RUNNING, "health": Health.HEALTHY}
        values.update(kw)
        return ContainerSnapshot(f"id-{name}", name, spec=ContainerSpec(role="chat", model="m"), gpus=(gpu,), **values)

    fleet = [
        snap("ok", "0"),
        snap("faulty", "1"),
        snap("gave-up", "2"),
        snap("on-lost-gpu", "3"),
        snap("on-lost-uuid", "GPU-lost"),
        snap("stopped", "4", state=ContainerState.EXITED),
        snap("unhealthy", "5", health=Health.UNHEALTHY),
    ]
    marks = {"GPU-lost": GpuMark("GPU-lost", 3, GpuCondition.QUARANTINED, "lost", 1.0)}
    members = members_from_fleet(fleet, {"id-faulty"}, marks, {"gave-up"})
    assert [m.name for m in members if m.in_service] == ["ok"]
    assert len(members) == len(fleet), "out-of-service members still count for memory limits"


def test_render_names_the_verdict_and_the_numbers() -> None:
    text = render(plan_capacity(seed_fleet(), SEED, 24 * GIB))
    assert text.splitlines()[0].startswith("30 rpm = 94%")
    assert "in flight: 12 with headroom" in text and "chat: mem_limit 1536m, memswap_limit 2048m" in text
    # What LiteLLM gets, and what not and why: no in-flight limit reaches the proxy.
    assert "  chat-0   model qwen-chat  role chat  GPU 0  rpm 4  weight 4  in flight 1" in text
    for key in ("max_parallel_requests", "rpm", "global_max_parallel_requests"):
        assert f"  {key} not rendered: " in text


def test_capacity_config_is_validated() -> None:
    policy = parse_config(
        {
            "capacity": {
                "rpm_per_gpu": [3, 4],
                "target_rpm": 30,
                "memory": {"chat": {"mem_limit": "1536m", "memswap_limit": "2g"}},
            }
        }
    ).capacity
    assert policy.rpm_per_gpu == (3.0, 4.0) and policy.memory == {"chat": RoleMemory(1536 * MIB, 2 * GIB)}
    assert parse_config({"capacity": {"rpm_per_gpu": 5}}).capacity.rpm_per_gpu == (5.0, 5.0)
    for bad, culprit in [
        ({"rpm_per_gpu": [4, 3]}, "low must be <= high"),
        ({"headroom": 1.5}, "capacity.headroom"),
        ({"memory": {"chat": {"memswap_limit": "1g"}}}, "mem_limit is required"),
        ({"memory": {"chat": {"mem_limit": "2g", "memswap_limit": "1g"}}}, "memswap_limit must be >= mem_limit"),
        ({"memory": {"chat": {"mem_limt": "2g"}}}, "did you mean 'mem_limit'"),
        ({"targt_rpm": 3}, "did you mean 'target_rpm'"),
    ]:
        with pytest.raises(ConfigError, match=culprit) as caught:
            parse_config({"capacity": bad})
        assert "\n" not in str(caught.value)
