"""The pure GPU core: mapping containers to GPUs, zero-VRAM views, marks and the Xid response."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from watchdog.config import Config, ConfigError, GpuConfig, parse_config
from watchdog.containers.diagnose import diagnose
from watchdog.containers.plan import RestartBudget, plan
from watchdog.gpu.assignment import GONE, HOST, GpuAssignment, resolve
from watchdog.gpu.marks import (
    GpuCondition,
    GpuMark,
    cap,
    held_containers,
    mark_or_alert,
    may_mark,
    respond_to_xid,
)
from watchdog.gpu.pid_map import container_of_cgroup, owner_of, sees_host_pids
from watchdog.gpu.readings import GpuHealth, GpuProcess, GpuSnapshot, clock_reason_names
from watchdog.gpu.vram import VramMode, vram_views
from watchdog.gpu.xid import XidAction, classify, default_table
from watchdog.journal import Journal
from watchdog.model import ContainerSnapshot, ContainerSpec, ContainerState, FaultKind, Verdict, XidEvent
from watchdog.ops.status import render_gpus

MIB = 1024**2
U0, U1, U2 = "GPU-aaaa0000-0000", "GPU-bbbb1111-1111", "GPU-cccc2222-2222"
CID_A, CID_B = "a" * 64, "b" * 64
THRESHOLD = 100 * MIB


def gpu(
    index: int, uuid: str, used_mib: int | None = 4000, procs: tuple[tuple[int, int | None], ...] = ()
) -> GpuSnapshot:
    return GpuSnapshot(
        index=index,
        uuid=uuid,
        memory_total=6144 * MIB,
        memory_used=None if used_mib is None else used_mib * MIB,
        processes=tuple(GpuProcess(pid, None if m is None else m * MIB) for pid, m in procs),
    )


GPUS = (gpu(0, U0), gpu(1, U1))


def container(
    cid: str = CID_A, gpus: tuple[str, ...] = ("0",), state: ContainerState = ContainerState.RUNNING, **kw: object
) -> ContainerSnapshot:
    return ContainerSnapshot(
        id=cid,
        name=f"llm-{cid[0]}",
        state=state,
        spec=ContainerSpec(start_period=60.0),
        gpus=gpus,
        started_at=1000.0,
        **kw,  # type: ignore[arg-type]
    )


# -- mapping ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("refs", "uuids", "unresolved"),
    [
        (("0",), (U0,), ()),
        (("1", "0"), (U1, U0), ()),
        ((U1.lower(),), (U1,), ()),
        (("GPU-bbbb",), (U1,), ()),  # a unique UUID prefix, as nvidia-container-runtime accepts
        (("all",), (U0, U1), ()),
        (("0", "0"), (U0,), ()),
        (("7",), (), ("7: no such GPU",)),
        (("count=1",), (), ("count=1: the engine picks the GPU; name it with the gpu label",)),
        (("MIG-1234",), (), ("MIG-1234: MIG instances are not mapped",)),
        (("GPU-zzzz9999",), (), ("GPU-zzzz9999: no such GPU",)),
    ],
)
def test_container_gpu_references_resolve_to_uuids(
    refs: tuple[str, ...], uuids: tuple[str, ...], unresolved: tuple[str, ...]
) -> None:
    assert resolve(refs, GPUS) == GpuAssignment(uuids, unresolved)


def test_an_ambiguous_uuid_prefix_is_not_guessed() -> None:
    gpus = (gpu(0, "GPU-abcd0000-1"), gpu(1, "GPU-abcd0000-2"))
    assert resolve(("GPU-abcd0000",), gpus).unresolved == ("GPU-abcd0000: ambiguous",)


def test_a_lost_gpu_without_uuid_is_keyed_by_index() -> None:
    lost = GpuSnapshot(index=3, health=GpuHealth.LOST)
    assert resolve(("3",), (lost,)).uuids == ("index:3",)


# -- PID mapping ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"12:memory:/docker/{CID_A}\n0::/\n", CID_A),  # cgroup v1, cgroupfs driver
        (f"0::/system.slice/docker-{CID_B}.scope\n", CID_B),  # cgroup v2, systemd driver
        ("0::/user.slice/user-1000.slice/session-2.scope\n", None),  # a host process
        (f"0::/init.scope/{CID_A}\n", None),  # 64 hex but not under a container runtime
    ],
)
def test_container_id_from_a_cgroup_file(text: str, expected: str | None) -> None:
    assert container_of_cgroup(text) == expected


def test_owner_of_a_pid_reads_its_cgroup(tmp_path: Path) -> None:
    (tmp_path / "10").mkdir()
    (tmp_path / "10" / "cgroup").write_text(f"0::/docker/{CID_A}\n")
    (tmp_path / "11").mkdir()
    (tmp_path / "11" / "cgroup").write_text("0::/user.slice\n")
    assert owner_of(10, tmp_path) == CID_A
    assert owner_of(11, tmp_path) == HOST
    assert owner_of(12, tmp_path) == GONE


def fake_proc(tmp_path: Path, nspid: str, init_comm: str = "systemd", init_cgroup: str = "0::/init.scope") -> Path:
    (tmp_path / "self").mkdir(parents=True)
    (tmp_path / "self" / "status").write_text("Name:\tpython\n" + nspid)
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "comm").write_text(init_comm + "\n")
    (tmp_path / "1" / "cgroup").write_text(init_cgroup + "\n")
    return tmp_path


@pytest.mark.parametrize(
    ("nspid", "comm", "cgroup", "my_pid", "host"),
    [
        ("NSpid:\t4242\n", "systemd", "0::/init.scope", 4242, True),  # a host install
        ("NSpid:\t4242\n", "bash", "0::/", 4242, True),  # a host without systemd
        ("NSpid:\t4242\t17\n", "systemd", "0::/init.scope", 17, False),  # nested namespace, host /proc
        ("NSpid:\t1\n", "python3", "0::/", 1, False),  # a container: the watchdog is PID 1
        ("NSpid:\t7\n", "docker-init", "0::/", 7, False),  # a container with `init: true`
        ("NSpid:\t7\n", "sh", f"0::/system.slice/docker-{CID_A}.scope", 7, False),  # PID 1 in a container
        ("", "systemd", "0::/init.scope", 4242, False),  # no NSpid: do not guess
    ],
)
def test_host_pid_namespace(tmp_path: Path, nspid: str, comm: str, cgroup: str, my_pid: int, host: bool) -> None:
    assert sees_host_pids(fake_proc(tmp_path, nspid, comm, cgroup), my_pid) is host
    assert sees_host_pids(tmp_path / "missing", my_pid) is False


# -- zero-VRAM views -------------------------------------------------------------


def views(
    gpus: tuple[GpuSnapshot, ...], owners: dict[int, str] | None, *cs: ContainerSnapshot, **kw: object
) -> dict[str, object]:
    containers = cs or (container(),)
    assignments = {c.id: resolve(c.gpus, gpus) for c in containers}
    return vram_views(containers, gpus, assignments, owners, THRESHOLD, **kw)  # type: ignore[arg-type, return-value]


def test_threshold_mode_judges_the_gpus_used_memory() -> None:
    full = views((gpu(0, U0, 4000),), None)[CID_A]
    empty = views((gpu(0, U0, 12),), None)[CID_A]
    assert full.mode == VramMode.GPU_TOTAL and not full.empty  # type: ignore[attr-defined]
    assert empty.empty and "12.0 MiB" in empty.detail and "PID mapping off" in empty.detail  # type: ignore[attr-defined]


def test_threshold_edge_is_strictly_below() -> None:
    assert not views((gpu(0, U0, 100),), None)[CID_A].empty  # type: ignore[attr-defined]
    assert views((gpu(0, U0, 99),), None)[CID_A].empty  # type: ignore[attr-defined]


def test_process_mode_counts_only_the_containers_own_processes() -> None:
    shared = (gpu(0, U0, 4200, ((10, 40), (11, 3900))),)
    owners = {10: CID_A, 11: CID_B}
    result = views(shared, owners, container(CID_A), container(CID_B))
    assert result[CID_A].empty and "40.0 MiB" in result[CID_A].detail  # type: ignore[attr-defined]
    assert not result[CID_B].empty  # type: ignore[attr-defined]


def test_process_mode_with_no_process_at_all_is_empty_and_unknown_memory_is_not() -> None:
    assert views((gpu(0, U0, 4000, ((11, 3900),)),), {11: HOST})[CID_A].empty  # type: ignore[attr-defined]
    assert not views((gpu(0, U0, 4000, ((10, None),)),), {10: CID_A})[CID_A].empty  # type: ignore[attr-defined]


def test_processes_on_other_gpus_do_not_count() -> None:
    gpus = (gpu(0, U0, 10), gpu(1, U1, 4000, ((10, 3900),)))
    assert views(gpus, {10: CID_A})[CID_A].empty  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("gpus", "kw"),
    [
        ((GpuSnapshot(index=0, uuid=U0, health=GpuHealth.LOST),), {}),
        ((gpu(0, U0, None),), {}),
        ((gpu(0, U0, 5),), {"unusable": {U0: "quarantined"}}),
    ],
    ids=["lost", "memory-unreadable", "quarantined"],
)
def test_no_zero_vram_verdict_on_an_unusable_gpu(gpus: tuple[GpuSnapshot, ...], kw: dict[str, object]) -> None:
    view = views(gpus, None, **kw)[CID_A]
    assert view.mode == VramMode.UNKNOWN and not view.empty  # type: ignore[attr-defined]


def test_stopped_unmanaged_and_gpu_less_containers_get_no_view() -> None:
    stopped = container(CID_A, state=ContainerState.EXITED)
    gpu_less = container(CID_B, gpus=())
    unmanaged = replace(container("c" * 64), spec=None)
    assert views((gpu(0, U0, 5),), None, stopped, gpu_less, unmanaged) == {}


def test_unresolved_gpu_uses_the_containers_processes_when_mapped() -> None:
    c = container(gpus=("count=1",))
    assert views((gpu(0, U0, 4000, ((10, 3900),)),), {10: CID_A}, c)[CID_A].empty is False  # type: ignore[attr-defined]
    assert views((gpu(0, U0, 4000),), None, c) == {}


# -- diagnosis -------------------------------------------------------------------


def test_zero_vram_is_a_fault_only_after_the_start_period_and_before_health() -> None:
    c = container(endpoint="http://127.0.0.1:1/health")
    empty = views((gpu(0, U0, 5),), None, c)
    inside = diagnose([c], {}, {}, Config(), now=1030.0, vram=empty)  # type: ignore[arg-type]
    assert not inside.faults and inside.recheck_at == 1060.0
    after = diagnose([c], {}, {}, Config(), now=1061.0, vram=empty)  # type: ignore[arg-type]
    assert [f.kind for f in after.faults] == [FaultKind.ZERO_VRAM]
    assert "model no longer in GPU memory" in after.faults[0].reason


def test_an_xid_after_the_container_started_is_a_fault_and_one_before_is_not() -> None:
    c = container()
    now = 1100.0
    fresh = diagnose([c], {}, {}, Config(), now, xids={CID_A: (1050.0, "Xid 13")})
    stale = diagnose([c], {}, {}, Config(), now, xids={CID_A: (999.0, "Xid 13")})
    assert [f.kind for f in fresh.faults] == [FaultKind.GPU_XID] and fresh.faults[0].since == 1050.0
    assert not stale.faults


def test_plan_holds_faults_of_containers_on_a_marked_gpu() -> None:
    c = container(state=ContainerState.EXITED)
    fault = diagnose([c], {}, {}, Config(), 5000.0).faults
    decisions = plan(
        fault, {c.id: c}, {}, set(), RestartBudget(), config=Config(), now=5000.0, held={CID_A: "GPU 0 is quarantined"}
    )
    assert [(d.verdict, d.reason) for d in decisions] == [(Verdict.HELD, "not restarted: GPU 0 is quarantined")]


# -- marks, cap and the Xid response ---------------------------------------------------


def mark(uuid: str, auto: bool = True) -> GpuMark:
    return GpuMark(uuid, 0, GpuCondition.QUARANTINED, "lost", 1.0, auto)


@pytest.mark.parametrize(("count", "allowed"), [(1, 0), (2, 1), (3, 1), (8, 4)])
def test_cap_is_half_of_the_gpus_rounded_down(count: int, allowed: int) -> None:
    assert cap(count, 0.5) == allowed


def test_cap_counts_only_automatic_marks_and_never_more_than_half() -> None:
    assert may_mark({}, U0, 2, 0.5)
    assert not may_mark({U1: mark(U1)}, U0, 2, 0.5)
    assert may_mark({U1: mark(U1, auto=False)}, U0, 2, 0.5)
    capped = mark_or_alert(
        U0, 0, GpuCondition.QUARANTINED, "Xid 79", {U1: mark(U1)}, gpu_count=2, fraction=0.5, now=5.0
    )
    assert capped.mark is None and capped.alert and "cap 1" in capped.alert and "left in service" in capped.alert


def test_a_graver_mark_replaces_a_lighter_one_but_not_the_reverse() -> None:
    drained = {U0: GpuMark(U0, 0, GpuCondition.DRAINED, "Xid 48", 1.0)}
    upgraded = mark_or_alert(U0, 0, GpuCondition.QUARANTINED, "Xid 79", drained, gpu_count=8, fraction=0.5, now=5.0)
    assert upgraded.mark is not None and upgraded.mark.condition == GpuCondition.QUARANTINED
    kept = mark_or_alert(U0, 0, GpuCondition.DRAINED, "Xid 48", {U0: mark(U0)}, gpu_count=8, fraction=0.5, now=5.0)
    assert kept.mark is None and kept.alert is None


def xid_response(
    code: int,
    culprit: str | None = None,
    reset: bool = False,
    marks: dict[str, GpuMark] | None = None,
    uuid: str | None = U0,
) -> object:
    event = XidEvent(at=10.0, xid=code, gpu_index=0, gpu_uuid=uuid)
    verdict = classify(event, default_table(), [event])
    assignments = {CID_A: GpuAssignment((U0,)), CID_B: GpuAssignment((U0,))}
    return respond_to_xid(
        verdict,
        uuid,
        0,
        marks or {},
        gpu_count=8,
        assignments=assignments,
        culprit=culprit,
        reset_enabled=reset,
        fraction=0.5,
        now=10.0,
    )


def test_xid_13_restarts_the_culprit_else_every_container_on_the_gpu() -> None:
    assert xid_response(13, culprit=CID_A).restart == (CID_A,)  # type: ignore[attr-defined]
    assert xid_response(13).restart == (CID_A, CID_B)  # type: ignore[attr-defined]


def test_xid_48_drains_by_default_and_resets_only_when_opted_in() -> None:
    drained = xid_response(48)
    assert drained.mark.condition == GpuCondition.DRAINED and not drained.reset  # type: ignore[attr-defined]
    assert "nvidia-smi --gpu-reset -i " + U0 in drained.alert  # type: ignore[attr-defined]
    resetting = xid_response(48, reset=True)
    assert resetting.mark.condition == GpuCondition.RESETTING and resetting.reset  # type: ignore[attr-defined]


def test_xid_79_quarantines_and_45_only_logs_and_unknown_alerts() -> None:
    assert xid_response(79).mark.condition == GpuCondition.QUARANTINED  # type: ignore[attr-defined]
    logged = xid_response(45)
    assert logged.mark is None and logged.alert is None and not logged.restart  # type: ignore[attr-defined]
    assert xid_response(999).alert  # type: ignore[attr-defined]


def test_an_xid_on_a_marked_gpu_changes_nothing_and_an_unknown_gpu_alerts() -> None:
    assert xid_response(13, marks={U0: mark(U0)}).restart == ()  # type: ignore[attr-defined]
    unknown = xid_response(48, uuid=None)
    assert unknown.mark is None and "could not be identified" in unknown.alert  # type: ignore[attr-defined]


def test_held_containers_name_the_gpu_and_its_condition() -> None:
    held = held_containers({CID_A: GpuAssignment((U0,)), CID_B: GpuAssignment((U1,))}, {U0: mark(U0)})
    assert held == {CID_A: "GPU 0 is quarantined (lost)"}


def test_escalation_turns_repeated_xid_13_into_a_reset() -> None:
    events = [XidEvent(at=float(t), xid=13, gpu_uuid=U0) for t in (0, 60, 120)]
    verdict = classify(events[-1], default_table(), events)
    assert verdict.action == XidAction.RESET_GPU and verdict.escalated


# -- config, journal, status ----------------------------------------------------------


def test_gpu_config_defaults_and_validation() -> None:
    assert parse_config({}).gpu == GpuConfig()
    parsed = parse_config(
        {
            "gpu": {
                "zero_vram_threshold": "256m",
                "kernel_log": "off",
                "xid_overrides": {45: {"action": "alert", "description": "ours"}},
            }
        }
    )
    assert parsed.gpu.zero_vram_threshold == 256 * MIB and parsed.gpu.kernel_log is None
    for bad, culprit in [
        ({"zero_vram_thresold": 1}, "did you mean 'zero_vram_threshold'"),
        ({"max_quarantined_fraction": 0.9}, "gpu.max_quarantined_fraction"),
        ({"reset_command": "nvidia-smi --gpu-reset"}, "gpu.reset_command"),
        ({"reset_command": ["nvidia-smi", "--gpu-reset"]}, "containing {uuid}"),
        ({"deadline": 0}, "gpu.deadline"),
        ({"xid_overrides": {48: {"action": "rebot"}}}, "48"),
    ]:
        with pytest.raises(ConfigError, match=culprit.replace("{", r"\{").replace("}", r"\}")) as caught:
            parse_config({"gpu": bad})
        assert "\n" not in str(caught.value)


def test_journal_keeps_marks_and_releases_them(tmp_path: Path) -> None:
    journal = Journal.in_dir(tmp_path)
    journal.mark_gpu(GpuMark(U0, 0, GpuCondition.DRAINED, "Xid 48", 5.0))
    journal.close()
    again = Journal.in_dir(tmp_path)
    assert again.gpu_marks() == {U0: GpuMark(U0, 0, GpuCondition.DRAINED, "Xid 48", 5.0)}
    assert again.release_gpu(U0) is True and again.release_gpu(U0) is False
    assert again.gpu_marks() == {}


def test_status_renders_one_line_per_gpu_with_mark_and_containers() -> None:
    doc = {
        "nvml": "ok",
        "gpus": [
            {
                "index": 0,
                "uuid": U0,
                "memory_used": 4000 * MIB,
                "memory_total": 6144 * MIB,
                "temperature": 52,
                "throttle": ["gpu-idle", "sw-thermal-slowdown"],
                "health": "ok",
                "containers": ["llm-a"],
            },
            {
                "index": 1,
                "uuid": U1,
                "memory_used": None,
                "memory_total": None,
                "temperature": None,
                "throttle": None,
                "health": "lost",
                "containers": [],
            },
        ],
        "marks": {U1: {"condition": "quarantined", "reason": "lost", "since": 90.0}},
        "orphans": [{"index": 0, "pid": 77, "why": "its process is gone"}],
    }
    text = "\n".join(render_gpus(doc, now=100.0))
    line0 = next(line for line in text.splitlines() if line.startswith("0 "))
    assert (
        U0 in line0 and "4000/6144" in line0 and "52C" in line0 and "sw-thermal-slowdown" in line0 and "llm-a" in line0
    )
    line1 = next(line for line in text.splitlines() if line.startswith("1 "))
    assert "QUARANTINED" in line1 and "lost" in line1 and "?/?" in line1
    assert f"gpu-watchdog gpu release {U1}" in text and "PID 77" in text


def test_throttle_reasons_are_decoded() -> None:
    assert clock_reason_names(None) is None
    assert clock_reason_names(0) == []
    assert clock_reason_names(0x1 | 0x40 | 0x10000) == ["gpu-idle", "hw-thermal-slowdown", "0x10000"]
