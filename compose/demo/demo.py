"""The no-GPU demo: a simulated 8-GPU fleet, the real LiteLLM proxy, the watchdog, and some chaos.

    python3 compose/demo/demo.py up       # start everything (make demo runs up, chaos, report)
    python3 compose/demo/demo.py chaos    # kill, crash, hang, model lost from VRAM, crash loop
    python3 compose/demo/demo.py report   # what the watchdog did, from its journal
    python3 compose/demo/demo.py down     # remove everything `up` started (make demo-down)

THE GPUs ARE SIMULATED: a fake libnvidia-ml (tests/fake_nvml) driven by compose/demo/simgpu.py
from the stand-in servers. Everything else is real: the Docker engine and containers, the
watchdog daemon, the LiteLLM proxy and the HTTP between them, all on 127.0.0.1. Processes it
starts are recorded in .demo/pids and ended by PID; containers are removed by compose.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from watchdog.journal import Journal  # noqa: E402

RUN = ROOT / ".demo"
PIDS = RUN / "pids.json"
COMPOSE = ["docker", "compose", "-f", str(ROOT / "compose" / "demo" / "docker-compose.yml")]
CONFIG = ROOT / "compose" / "demo" / "watchdog.yaml"
PREFIX = "gpu-watchdog-demo"
PROXY_PORT = 14000
PROXY = f"http://127.0.0.1:{PROXY_PORT}"
MASTER_KEY = "sk-gpu-watchdog-change-me"
BANNER = "[SIMULATED GPUs]"
PY = str(ROOT / ".venv" / "bin" / "python")


def say(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {BANNER} {text}", flush=True)


def port(name: str) -> int:
    return 18180 + int(name.rsplit("-", 1)[1])


def watchdog_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "watchdog", "--config", str(CONFIG), "--state-dir", str(RUN / "state"), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def fake_nvml_env() -> dict[str, str]:
    from tests.fake_nvml.harness import environment

    return environment(RUN / "gpus.txt")


def spawn(name: str, args: list[str], env: dict[str, str] | None = None) -> int:
    log = open(RUN / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
    proc = subprocess.Popen(
        args, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, **(env or {})}, start_new_session=True
    )
    pids = json.loads(PIDS.read_text()) if PIDS.exists() else {}
    pids[name] = proc.pid
    PIDS.write_text(json.dumps(pids))
    return proc.pid


def wait(what: str, predicate: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise SystemExit(f"demo: timed out after {timeout:g} s waiting for {what}; see {RUN}/*.log")


def rotation() -> dict[str, Any]:
    try:
        return dict(json.loads((RUN / "litellm" / "rotation.json").read_text()))
    except (OSError, ValueError):
        return {}


def healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


# -- up / down ------------------------------------------------------------------


def up() -> None:
    if PIDS.exists():
        raise SystemExit("demo: already up (.demo/pids.json); run `make demo-down` first")
    for old in ("state", "litellm"):  # each demo starts from a clean journal
        shutil.rmtree(RUN / old, ignore_errors=True)
    RUN.mkdir(exist_ok=True)
    (RUN / "litellm").mkdir(exist_ok=True)
    say("starting 8 stand-in inference servers, one per SIMULATED GPU (docker compose)")
    subprocess.run([*COMPOSE, "up", "-d", "--quiet-pull"], check=True, cwd=ROOT, capture_output=True)
    for i in range(8):
        wait(f"llm-{i}", lambda i=i: healthy(f"http://127.0.0.1:{18180 + i}/health"), 60)
    say("simulated GPUs: compose/demo/simgpu.py mirrors the servers into a fake NVML driver")
    subprocess.run(
        [PY, "compose/demo/simgpu.py", "--scenario", str(RUN / "gpus.txt"), "--prefix", PREFIX, "--once"],
        check=True,
        cwd=ROOT,
    )
    spawn("simgpu", [PY, "compose/demo/simgpu.py", "--scenario", str(RUN / "gpus.txt"), "--prefix", PREFIX])
    rendered = watchdog_cli("litellm", "render")
    if rendered.returncode != 0:
        raise SystemExit(f"demo: litellm render failed: {rendered.stderr.strip()}")
    say(f"LiteLLM proxy (real, {ROOT / '.venv-litellm'}) on {PROXY} with the rendered config")
    spawn(
        "litellm",
        [
            str(ROOT / ".venv-litellm" / "bin" / "litellm"),
            "--config",
            str(RUN / "litellm" / "config.yaml"),
            "--host",
            "127.0.0.1",
            "--port",
            str(PROXY_PORT),
        ],
        env={"LITELLM_LOCAL_MODEL_COST_MAP": "True"},
    )
    wait("the LiteLLM proxy", lambda: healthy(f"{PROXY}/health/liveliness"), 120)
    say("gpu-watchdog --daemon (real), reading the SIMULATED GPUs through pynvml")
    spawn(
        "watchdog",
        [PY, "-m", "watchdog", "--config", str(CONFIG), "--state-dir", str(RUN / "state"), "--daemon"],
        env=fake_nvml_env(),
    )
    wait("the watchdog's first cycle", lambda: watchdog_cli("healthcheck").returncode == 0, 30)
    wait("all 8 servers in the proxy's rotation", lambda: len(rotation().get("in", [])) == 8, 60)
    say(f"up. Status: {PY} -m watchdog --config {CONFIG} --state-dir {RUN / 'state'} status")
    print(watchdog_cli("status", env=fake_nvml_env()).stdout)


def down() -> None:
    pids = json.loads(PIDS.read_text()) if PIDS.exists() else {}
    for name, pid in pids.items():
        try:
            os.kill(pid, signal.SIGTERM)
            say(f"stopped {name} (pid {pid})")
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 20
    for pid in pids.values():
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.2)
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)
    PIDS.unlink(missing_ok=True)
    subprocess.run([*COMPOSE, "down", "--remove-orphans", "--timeout", "2"], cwd=ROOT, capture_output=True)
    say("demo removed (containers, processes); its journal stays in .demo/state")


# -- chaos ------------------------------------------------------------------------


class Load(threading.Thread):
    """Two requests a second through the proxy while the chaos runs."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.results: Counter[str] = Counter()
        self.stopping = threading.Event()

    def run(self) -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=30, trust_env=False) as http:
            while not self.stopping.is_set():
                try:
                    answer = http.post(
                        f"{PROXY}/v1/chat/completions",
                        json={"model": "demo-chat", "messages": [{"role": "user", "content": "hi"}]},
                    )
                    self.results["ok" if answer.status_code == 200 else f"http {answer.status_code}"] += 1
                except httpx.HTTPError as exc:
                    self.results[type(exc).__name__] += 1
                self.stopping.wait(0.5)


def entries_since(since: float, container: str | None = None) -> list[dict[str, Any]]:
    journal = Journal.in_dir(RUN / "state")
    try:
        return journal.entries(since=since, container=container)
    finally:
        journal.close()


def show(since: float, container: str) -> None:
    for entry in entries_since(since, container):
        say(f"  watchdog: {entry['kind']:<18} {entry['reason']}")


def fault(name: str, what: str) -> None:
    httpx.post(f"http://127.0.0.1:{port(name)}/fault/{what}", timeout=2, trust_env=False)


def container_name(name: str) -> str:
    return f"gpu-watchdog-demo-{name}-1"


def healed(name: str, since: float) -> bool:
    kinds = {e["kind"] for e in entries_since(since, container_name(name))}
    return "rotation-in" in kinds and ("recovered" in kinds or "restart-recovered" in kinds)


def chaos() -> dict[str, Any]:
    load = Load()
    load.start()
    outcomes: dict[str, str] = {}
    steps = [
        ("llm-0", "docker kill", lambda: subprocess.run(["docker", "kill", container_name("llm-0")], check=True)),
        ("llm-1", "crash inside (exit 1)", lambda: fault("llm-1", "crash")),
        ("llm-2", "hang (accepts, never answers)", lambda: fault("llm-2", "hang")),
        ("llm-3", "model lost from (SIMULATED) GPU memory, /health still 200", lambda: fault("llm-3", "vram-lost")),
    ]
    for name, what, act in steps:
        since = time.time()
        say(f"chaos: {name}: {what}")
        act()
        wait(f"{name} healed", lambda n=name, s=since: healed(n, s), 60)
        show(since, container_name(name))
        outcomes[name] = f"{what}: healed in {time.time() - since:.1f} s"
    since = time.time()
    say("chaos: llm-4: crash loop (crashes again each time it comes back)")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if any(e["kind"] == "give-up" for e in entries_since(since, container_name("llm-4"))):
            break
        if healthy(f"http://127.0.0.1:{port('llm-4')}/health"):
            fault("llm-4", "crash")
        time.sleep(0.3)
    show(since, container_name("llm-4"))
    given_up = any(e["kind"] == "give-up" for e in entries_since(since, container_name("llm-4")))
    outcomes["llm-4"] = "crash loop: given up by the breaker" if given_up else "crash loop: NOT given up"
    load.stopping.set()
    load.join(35)
    say(f"requests through the LiteLLM proxy during the chaos: {dict(load.results)}")
    result = {"outcomes": outcomes, "requests": dict(load.results)}
    (RUN / "chaos.json").write_text(json.dumps(result, indent=2))
    return result


def report() -> None:
    """The restart-rate report (`gpu-watchdog report`) over the demo's hour, then status."""
    say("gpu-watchdog report --since 1h (GPUs SIMULATED):")
    print(watchdog_cli("report", "--since", "1h").stdout)
    html = RUN / "report.html"
    written = watchdog_cli("report", "--since", "1h", "--format", "html", "--out", str(html))
    say(f"the same as one HTML file with a timeline: {html}" if written.returncode == 0 else written.stderr.strip())
    print(watchdog_cli("status", env=fake_nvml_env()).stdout)


def main() -> int:
    command = sys.argv[1] if len(sys.argv) > 1 else "help"
    if command == "up":
        up()
    elif command == "down":
        down()
    elif command == "chaos":
        chaos()
    elif command == "report":
        report()
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
