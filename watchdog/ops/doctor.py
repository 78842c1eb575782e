"""`gpu-watchdog doctor`: what on this host and fleet would stop the watchdog from doing its job.

The judges are pure (data in, findings out) so each rule is tested on its own;
`collect()` at the bottom does the reading: the engine, NVML under its deadline,
/proc, the proxy. One line per finding, with the fix; exit 1 unless all is well.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from watchdog.config import Config, RamPreflightConfig
from watchdog.gpu.assignment import resolve
from watchdog.gpu.readings import GpuReading, NvmlState
from watchdog.model import ContainerSnapshot
from watchdog.ops.messages import ENGINE_FIX
from watchdog.units import format_bytes

ENV_SYSCTL_DIR = "GPU_WATCHDOG_SYSCTL_DIR"  # where doctor reads sysctls (default /proc/sys)
MIN_FREE_KBYTES = 1024 * 1024  # seed 004: a 1 GiB kernel reserve keeps a pinned-memory load from freezing the host
LLAMA_HINTS = ("llama.cpp", "llama-server", "llama_cpp", "llamacpp")


class Level(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Finding:
    level: Level
    check: str
    text: str
    fix: str = ""

    def line(self) -> str:
        tail = f"; fix: {self.fix}" if self.fix and self.level != Level.OK else ""
        return f"{self.level.value.upper():4}  {self.check}: {self.text}{tail}"


@dataclass(frozen=True)
class ContainerFacts:
    """What doctor reads from an inspect besides the snapshot: image, command, environment."""

    image: str = ""
    command: str = ""
    env: Mapping[str, str] | None = None


def all_well(findings: Sequence[Finding]) -> bool:
    return all(f.level == Level.OK for f in findings)


# -- the judges (pure) ---------------------------------------------------------


def judge_engine(version: Mapping[str, Any] | None, error: str | None) -> Finding:
    if version is None:
        return Finding(Level.FAIL, "docker", f"engine unreachable ({error})", ENGINE_FIX)
    return Finding(
        Level.OK, "docker", f"engine {version.get('Version', '?')}, API {version.get('ApiVersion', '?')} reachable"
    )


def judge_nvml(reading: GpuReading | None, gpus_wanted: bool) -> Finding:
    if reading is None:
        return Finding(Level.OK, "nvml", "GPU checks disabled in the config (gpu.enabled: false)")
    if reading.state == NvmlState.OK:
        names = sorted({g.name or "?" for g in reading.gpus})
        return Finding(Level.OK, "nvml", f"{len(reading.gpus)} GPU(s) visible ({', '.join(names) or 'none'})")
    if reading.state == NvmlState.NO_DRIVER:
        level = Level.FAIL if gpus_wanted else Level.WARN
        return Finding(
            level,
            "nvml",
            f"NVML does not load ({reading.detail}): zero-VRAM and Xid checks are off",
            "install the NVIDIA driver; in a container give it the GPUs (deploy.resources or --gpus all)",
        )
    return Finding(
        Level.FAIL,
        "nvml",
        f"NVML {reading.state.value}: {reading.detail}",
        "check `nvidia-smi`; a hung driver needs a reset or a reboot",
    )


def judge_containers(
    containers: Sequence[ContainerSnapshot],
    facts: Mapping[str, ContainerFacts],
    reading: GpuReading | None,
    label_prefix: str,
) -> list[Finding]:
    """Per managed container: health endpoint, GPU mapping, restart policy, GGML_CUDA_NO_PINNED."""
    findings: list[Finding] = []
    managed = [c for c in containers if c.managed]
    misconfigured = [c for c in containers if c.spec is None and c.problems]
    for c in misconfigured:
        findings.append(
            Finding(Level.FAIL, c.name, "; ".join(c.problems), "fix the label; it is left alone until then")
        )
    if not managed and not misconfigured:
        findings.append(
            Finding(
                Level.WARN,
                "fleet",
                f"no container carries {label_prefix}.enable=true: nothing is watched",
                f"add the label {label_prefix}.enable=true to the inference containers",
            )
        )
    gpus = reading.gpus if reading is not None and reading.state == NvmlState.OK else None
    for c in managed:
        problems: list[Finding] = []
        if not c.endpoint and c.healthcheck_start_period is None and c.health.value == "none":
            problems.append(
                Finding(
                    Level.WARN,
                    c.name,
                    "no health endpoint and no healthcheck: a hang is never seen",
                    f"set {label_prefix}.health-port (or health-url), or give it a HEALTHCHECK",
                )
            )
        if not c.gpus:
            problems.append(
                Finding(
                    Level.WARN,
                    c.name,
                    "no GPU mapping: zero-VRAM and Xid faults cannot be tied to it",
                    f"set {label_prefix}.gpu=<index or UUID>, or give it a device reservation",
                )
            )
        elif gpus is not None:
            assignment = resolve(c.gpus, gpus)
            if assignment.unresolved:
                problems.append(
                    Finding(
                        Level.WARN,
                        c.name,
                        f"GPU reference(s) not found: {', '.join(assignment.unresolved)}",
                        f"name the GPU by index or UUID in {label_prefix}.gpu",
                    )
                )
        if c.restart_policy == "always":
            problems.append(
                Finding(
                    Level.WARN,
                    c.name,
                    "restart policy 'always': the engine brings back a container an operator stopped, when it "
                    "restarts, and restarts crash loops behind the breaker's back",
                    "use 'unless-stopped' or 'no' and let the watchdog heal it",
                )
            )
        fact = facts.get(c.id, ContainerFacts())
        described = f"{fact.image} {fact.command}".lower()
        if any(hint in described for hint in LLAMA_HINTS) and (fact.env or {}).get("GGML_CUDA_NO_PINNED") != "1":
            problems.append(
                Finding(
                    Level.WARN,
                    c.name,
                    "llama.cpp without GGML_CUDA_NO_PINNED=1: a model load can freeze the host in cudaHostAlloc",
                    "set the environment variable GGML_CUDA_NO_PINNED=1 "
                    "(gpumod's host-stability guide: 0.28% throughput cost)",
                )
            )
        findings.extend(problems or [Finding(Level.OK, c.name, "health endpoint, GPU mapping and restart policy ok")])
    return findings


def judge_ram(
    containers: Sequence[ContainerSnapshot], mem_available: int | None, preflight: RamPreflightConfig
) -> Finding:
    """The RAM preflight's rule, for the largest model: could it be restarted right now?"""
    sizes = [
        (c.spec.model_size or c.memory_limit, c.name)
        for c in containers
        if c.managed and c.spec and (c.spec.model_size or c.memory_limit)
    ]
    if mem_available is None:
        return Finding(Level.WARN, "ram", "MemAvailable unknown (no /proc/meminfo)", "run doctor on the host")
    if not sizes:
        return Finding(
            Level.WARN,
            "ram",
            f"no model size known (MemAvailable {format_bytes(mem_available)}): the RAM preflight cannot judge",
            "set the label gpu-watchdog.model-size or a memory limit on the inference containers",
        )
    size, name = max(sizes)
    need = int(size * preflight.factor + preflight.reserve)
    text = (
        f"largest model {name} {format_bytes(size)}: needs {format_bytes(need)} "
        f"(x{preflight.factor:g} + {format_bytes(preflight.reserve)}), MemAvailable {format_bytes(mem_available)}"
    )
    if mem_available >= need:
        return Finding(Level.OK, "ram", text)
    return Finding(Level.FAIL, "ram", text, "free host RAM or lower the model's size; restarts are deferred until then")


def judge_min_free(kbytes: int | None) -> Finding:
    if kbytes is None:
        return Finding(Level.WARN, "vm.min_free_kbytes", "unreadable", "run doctor on the host")
    if kbytes >= MIN_FREE_KBYTES:
        return Finding(Level.OK, "vm.min_free_kbytes", f"{kbytes} kB (>= {MIN_FREE_KBYTES})")
    return Finding(
        Level.WARN,
        "vm.min_free_kbytes",
        f"{kbytes} kB, under the {MIN_FREE_KBYTES} kB that gpumod's host-stability guide recommends"
        " against load-time freezes",
        f"sysctl -w vm.min_free_kbytes={MIN_FREE_KBYTES} (and persist it in /etc/sysctl.d/)",
    )


def judge_router(
    enabled: bool,
    proxy_url: str | None,
    proxy_live: bool | None,
    *,
    rendered_set: list[list[str]] | None,
    on_disk_set: list[list[str]] | None,
    problem: str | None,
) -> list[Finding]:
    """LiteLLM reachable, and the config on disk the one the fleet needs now."""
    if not enabled:
        return [Finding(Level.OK, "litellm", "router sync off (litellm.enabled: false)")]
    findings = []
    if problem:
        findings.append(Finding(Level.FAIL, "litellm", problem, "fix the template (see the message)"))
    if proxy_url is None:
        findings.append(Finding(Level.WARN, "litellm", "litellm.proxy_url not set: the proxy is not watched", "set it"))
    elif proxy_live:
        findings.append(Finding(Level.OK, "litellm", f"proxy answers at {proxy_url}"))
    else:
        findings.append(
            Finding(Level.FAIL, "litellm", f"proxy at {proxy_url} does not answer", "start it or fix litellm.proxy_url")
        )
    if rendered_set is not None:
        if on_disk_set is None:
            findings.append(
                Finding(Level.FAIL, "litellm", "no rendered config on disk", "run `gpu-watchdog litellm render`")
            )
        elif on_disk_set != rendered_set:
            findings.append(
                Finding(
                    Level.FAIL,
                    "litellm",
                    f"config on disk lists {len(on_disk_set)} deployment(s), the fleet needs {len(rendered_set)}",
                    "run `gpu-watchdog litellm render` and restart the proxy (the daemon does both)",
                )
            )
        else:
            findings.append(
                Finding(Level.OK, "litellm", f"config in sync with the fleet ({len(rendered_set)} deployment(s))")
            )
    return findings


# -- reading (I/O) -------------------------------------------------------------


def collect(config: Config) -> list[Finding]:
    """Every check, read now. Never raises for what it reads: a failure is a finding."""
    import httpx

    from watchdog.containers.engine import DockerProbe
    from watchdog.containers.host import mem_available
    from watchdog.gpu.nvml import GpuProbe
    from watchdog.ops.connect import docker_client

    findings: list[Finding] = []
    containers: list[ContainerSnapshot] = []
    facts: dict[str, ContainerFacts] = {}
    try:
        client = docker_client()
        findings.append(judge_engine(client.version(), None))
        containers = DockerProbe(client, config.label_prefix).snapshot()
        for c in containers:
            if c.managed:
                facts[c.id] = _facts(client.api.inspect_container(c.id))
    except Exception as exc:  # any engine failure (unreachable, refused, timed out) is the finding
        findings.append(judge_engine(None, f"{type(exc).__name__}: {exc}"))
    reading = GpuProbe(config.gpu.deadline).read() if config.gpu.enabled else None
    findings.append(judge_nvml(reading, any(c.gpus for c in containers if c.managed)))
    findings.extend(judge_containers(containers, facts, reading, config.label_prefix))
    findings.append(judge_ram(containers, mem_available(), config.ram_preflight))
    sysctl = os.environ.get(ENV_SYSCTL_DIR) or "/proc/sys"
    findings.append(judge_min_free(_read_int(f"{sysctl}/vm/min_free_kbytes")))
    settings = config.litellm
    live = None
    if settings.enabled and settings.proxy_url:
        try:
            live = httpx.get(settings.proxy_url + "/health/liveliness", timeout=3, trust_env=False).status_code == 200
        except httpx.HTTPError:
            live = False
    rendered, on_disk, problem = _router_sets(config, containers) if settings.enabled else (None, None, None)
    findings.extend(
        judge_router(
            settings.enabled, settings.proxy_url, live, rendered_set=rendered, on_disk_set=on_disk, problem=problem
        )
    )
    return findings


def _facts(attrs: Mapping[str, Any]) -> ContainerFacts:
    cfg = attrs.get("Config") or {}
    env = dict(item.split("=", 1) for item in cfg.get("Env") or [] if "=" in item)
    command = " ".join(str(p) for p in [*(cfg.get("Entrypoint") or []), *(cfg.get("Cmd") or [])])
    return ContainerFacts(str(cfg.get("Image") or ""), command, env)


def _read_int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as handle:
            return int(handle.read().strip())
    except (OSError, ValueError):
        return None


def _router_sets(
    config: Config, containers: Sequence[ContainerSnapshot]
) -> tuple[list[list[str]] | None, list[list[str]] | None, str | None]:
    """The deployment set the fleet needs now, and the one in the config on disk."""
    from pathlib import Path

    from watchdog.router.litellm_config import (
        TemplateError,
        deployment_set,
        deployments_in,
        parse_template,
        router_deployments,
    )
    from watchdog.router.wanted_config import config_plan

    # Compared by id and URL: the template may name the model differently from the label.
    try:
        rendered = deployments_in(Path(config.litellm.out).read_text(encoding="utf-8"))
        on_disk: list[list[str]] | None = [[ident, base] for ident, _, base in rendered]
    except (OSError, UnicodeDecodeError):
        on_disk = None
    try:
        parse_template(Path(config.litellm.template).read_text(encoding="utf-8"), config.litellm.template)
    except (OSError, UnicodeDecodeError) as exc:
        return None, on_disk, f"cannot read the template {config.litellm.template}: {exc}"
    except TemplateError as exc:
        return None, on_disk, str(exc)
    plan = config_plan(containers, {}, set(), policy=config.capacity, host_total=None)
    known = {ident: base for ident, base in on_disk or []}
    wanted = [[ident, base] for ident, _, base in deployment_set(router_deployments(containers, plan, known))]
    return wanted, on_disk, None
