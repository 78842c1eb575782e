"""`gpu-watchdog doctor`'s judges: each rule on its own, with its fix."""

from __future__ import annotations

from typing import Any

from watchdog.config import RamPreflightConfig
from watchdog.gpu.readings import GpuReading, GpuSnapshot, NvmlState
from watchdog.model import ContainerSnapshot, ContainerSpec, ContainerState
from watchdog.ops.doctor import (
    MIN_FREE_KBYTES,
    ContainerFacts,
    Finding,
    Level,
    all_well,
    judge_containers,
    judge_engine,
    judge_min_free,
    judge_nvml,
    judge_ram,
    judge_router,
)

GIB = 1024**3


def snap(name: str, **kw: Any) -> ContainerSnapshot:
    spec = kw.pop("spec", ContainerSpec(role="chat", model="m"))
    kw.setdefault("endpoint", "http://127.0.0.1:1/health")
    kw.setdefault("gpus", ("0",))
    return ContainerSnapshot(id=f"id-{name}", name=name, state=ContainerState.RUNNING, spec=spec, **kw)


def reading(*indices: int) -> GpuReading:
    gpus = tuple(GpuSnapshot(index=i, uuid=f"GPU-{i:08d}-aaaa", name="H100") for i in indices)
    return GpuReading(NvmlState.OK, 0.0, 0.001, gpus)


def levels(findings: list[Finding]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for f in findings:
        out.setdefault(f.check, []).append(f.level.value)
    return out


def test_good_container_is_one_ok_line() -> None:
    findings = judge_containers([snap("llm-0")], {}, reading(0), "gpu-watchdog")
    assert [(f.level, f.check) for f in findings] == [(Level.OK, "llm-0")]
    assert all_well(findings)


def test_each_container_problem_has_its_fix() -> None:
    containers = [
        snap("no-endpoint", endpoint=None),
        snap("no-gpu", gpus=()),
        snap("ghost-gpu", gpus=("7",)),
        snap("always", restart_policy="always"),
        snap("llama", gpus=("1",)),
        snap("llama-ok", gpus=("1",)),
        ContainerSnapshot(id="x", name="broken", state=ContainerState.RUNNING, problems=("label bad",)),
    ]
    facts = {
        "id-llama": ContainerFacts("ghcr.io/ggml-org/llama.cpp:server", "/app/llama-server -m x", {}),
        "id-llama-ok": ContainerFacts("ghcr.io/ggml-org/llama.cpp:server", "", {"GGML_CUDA_NO_PINNED": "1"}),
    }
    findings = judge_containers(containers, facts, reading(0, 1), "gpu-watchdog")
    by_name = {f.check: f for f in findings}
    assert "a hang is never seen" in by_name["no-endpoint"].text and "health-port" in by_name["no-endpoint"].fix
    assert "no GPU mapping" in by_name["no-gpu"].text
    assert "7: no such GPU" in by_name["ghost-gpu"].text
    assert "'always'" in by_name["always"].text and "unless-stopped" in by_name["always"].fix
    assert "GGML_CUDA_NO_PINNED" in by_name["llama"].fix
    assert by_name["llama-ok"].level == Level.OK
    assert by_name["broken"].level == Level.FAIL and "label bad" in by_name["broken"].text
    assert not all_well(findings)
    assert all("\n" not in f.line() for f in findings)


def test_empty_fleet_warns() -> None:
    findings = judge_containers([], {}, None, "gpu-watchdog")
    assert findings[0].level == Level.WARN and "gpu-watchdog.enable=true" in findings[0].fix


def test_engine_and_nvml() -> None:
    assert judge_engine({"Version": "27.0", "ApiVersion": "1.46"}, None).level == Level.OK
    down = judge_engine(None, "connection refused")
    assert down.level == Level.FAIL and "DOCKER_HOST" in down.fix
    assert judge_nvml(reading(0, 1), True).text.startswith("2 GPU(s) visible")
    no_driver = GpuReading(NvmlState.NO_DRIVER, 0.0, 0.0, (), "library not found")
    assert judge_nvml(no_driver, gpus_wanted=True).level == Level.FAIL
    assert judge_nvml(no_driver, gpus_wanted=False).level == Level.WARN
    assert judge_nvml(GpuReading(NvmlState.HUNG, 0.0, 2.0, (), "deadline"), True).level == Level.FAIL
    assert judge_nvml(None, True).level == Level.OK


def test_ram_for_the_largest_model() -> None:
    preflight = RamPreflightConfig(factor=1.1, reserve=GIB)
    fleet = [snap("small", spec=ContainerSpec(model_size=2 * GIB)), snap("big", spec=ContainerSpec(model_size=8 * GIB))]
    ok = judge_ram(fleet, 20 * GIB, preflight)
    assert ok.level == Level.OK and "largest model big" in ok.text
    short = judge_ram(fleet, 9 * GIB, preflight)
    assert short.level == Level.FAIL and "9.8 GiB" in short.text  # 8 x 1.1 + 1
    assert judge_ram([snap("x", spec=ContainerSpec())], 9 * GIB, preflight).level == Level.WARN
    assert judge_ram(fleet, None, preflight).level == Level.WARN
    limited = judge_ram([snap("lim", spec=ContainerSpec(), memory_limit=4 * GIB)], 20 * GIB, preflight)
    assert limited.level == Level.OK and "4.0 GiB" in limited.text


def test_min_free_kbytes() -> None:
    assert judge_min_free(MIN_FREE_KBYTES).level == Level.OK
    low = judge_min_free(67584)
    assert low.level == Level.WARN and "sysctl -w vm.min_free_kbytes=1048576" in low.fix
    assert judge_min_free(None).level == Level.WARN


def test_router_findings() -> None:
    off = judge_router(False, None, None, rendered_set=None, on_disk_set=None, problem=None)
    assert off[0].level == Level.OK
    one = [["a", "m", "u"]]
    good = judge_router(True, "http://p", True, rendered_set=one, on_disk_set=one, problem=None)
    assert [f.level for f in good] == [Level.OK, Level.OK]
    two = [["a", "m", "u"], ["b", "m", "v"]]
    stale = judge_router(True, "http://p", False, rendered_set=two, on_disk_set=one, problem=None)
    assert levels(stale)["litellm"] == ["fail", "fail"]
    assert "the fleet needs 2" in stale[1].text and "litellm render" in stale[1].fix
    missing = judge_router(True, None, None, rendered_set=one, on_disk_set=None, problem="bad template")
    assert [f.level for f in missing] == [Level.FAIL, Level.WARN, Level.FAIL]
