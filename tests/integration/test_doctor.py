"""`gpu-watchdog doctor` on a good and on a broken fleet, on the real engine, with the fake NVIDIA driver."""

from __future__ import annotations

import json
from pathlib import Path

import docker
import pytest

from tests.fake_nvml.harness import FakeNvml
from tests.integration.conftest import new_daemon
from tests.integration.harness import RUN_ID, RUN_LABEL, STANDIN_IMAGE, Daemon, Fleet, free_port

pytestmark = pytest.mark.engine


def sysctl_dir(tmp_path: Path, min_free_kbytes: int) -> Path:
    """A stand-in for /proc/sys: the test must not retune the host it runs on."""
    vm = tmp_path / "sys" / "vm"
    vm.mkdir(parents=True)
    (vm / "min_free_kbytes").write_text(f"{min_free_kbytes}\n")
    return tmp_path / "sys"


def test_doctor_good_fleet_exits_0(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str, fake_nvml: FakeNvml
) -> None:
    for gpu in range(2):
        fleet.start(f"g{gpu}", gpu=str(gpu), role="chat", model="qwen", model_size="100m")
    env = {**fake_nvml.env(), "GPU_WATCHDOG_SYSCTL_DIR": str(sysctl_dir(tmp_path, 1048576))}
    daemon = new_daemon(daemons, tmp_path, prefix, env=env)
    done = daemon.cli("doctor")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert all(line.startswith("OK") for line in lines), done.stdout
    assert any("8 GPU(s) visible" in line for line in lines)
    assert sum(fleet.get(f"g{i}").name in done.stdout for i in range(2)) == 2
    as_json = json.loads(daemon.cli("doctor", "--json").stdout)
    assert {f["level"] for f in as_json} == {"ok"}


def test_doctor_broken_fleet_names_each_problem_and_exits_1(
    fleet: Fleet, client: docker.DockerClient, daemons: list[Daemon], tmp_path: Path, prefix: str, fake_nvml: FakeNvml
) -> None:
    fleet.start("noprobe", endpoint=False)  # no health endpoint, no GPU
    fleet.start("always", gpu="1", restart_policy="always")
    fleet.start("ghost", gpu="9")
    fleet.start("badlabel", labels={**fleet.labels(), f"{prefix}.priority": "high"})
    llama = client.containers.run(
        STANDIN_IMAGE,
        ["python3", "/app/server.py", "--llama-server"],  # looks like llama.cpp to doctor; the stand-in ignores it
        detach=True,
        name=f"gwt-{RUN_ID}-llama",
        labels={**fleet.labels(gpu="2"), f"{prefix}.health-port": "8080", RUN_LABEL: RUN_ID},
        ports={"8080/tcp": ("127.0.0.1", None)},
    )
    fleet.names.append(llama.name)
    env = {**fake_nvml.env(), "GPU_WATCHDOG_SYSCTL_DIR": str(sysctl_dir(tmp_path, 67584))}
    proxy = f"http://127.0.0.1:{free_port()}"  # nothing listens
    daemon = new_daemon(
        daemons,
        tmp_path,
        prefix,
        env=env,
        litellm={"enabled": True, "proxy_url": proxy, "out": str(tmp_path / "missing" / "config.yaml")},
    )
    done = daemon.cli("doctor")
    assert done.returncode == 1
    out = done.stdout

    def line_for(name: str) -> str:
        found = [line for line in out.splitlines() if f"{fleet.get(name).name}:" in line]
        assert found, f"no finding for {name} in:\n{out}"
        return "\n".join(found)

    assert "a hang is never seen" in line_for("noprobe") and "no GPU mapping" in line_for("noprobe")
    assert "restart policy 'always'" in line_for("always")
    assert "9: no such GPU" in line_for("ghost")
    assert line_for("badlabel").startswith("FAIL") and "priority" in line_for("badlabel")
    assert "GGML_CUDA_NO_PINNED=1" in line_for("llama")
    assert "WARN  vm.min_free_kbytes: 67584 kB" in out
    assert f"FAIL  litellm: proxy at {proxy} does not answer" in out
    assert "no rendered config on disk; fix: run `gpu-watchdog litellm render`" in out
    assert all(line.split()[0] in ("OK", "WARN", "FAIL") for line in out.strip().splitlines())
