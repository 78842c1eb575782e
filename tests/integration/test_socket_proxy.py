"""The watchdog through a least-privilege Docker socket proxy (issue 7): compose/socket-proxy/.

The real daemon, the real engine and the real HAProxy (Debian's package, scripts/ensure-haproxy.sh) running
compose/socket-proxy/haproxy.cfg, no mocks:

- the daemon heals a `docker kill` and an engine-unhealthy container, gives up a crash loop, and `status`,
  `doctor`, `reset` and `/status` work, with every request it sends forwarded (none refused); the opt-in
  features (memory limits enforce, the GPU reset) too;
- the proxy refuses (403) what the watchdog does not need, before the engine sees it, and forwards what it
  needs, the /events stream included (it stays open while quiet);
- the endpoint table in ENDPOINTS.md is exactly the proxy's allowlist, and every row is used;
- the compose example resolves, and `docker compose up` of it heals a fleet with no socket in the watchdog.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from tests.fake_nvml.harness import FakeNvml
from tests.fake_nvml.harness import environment as nvml_environment
from tests.integration.conftest import new_daemon
from tests.integration.harness import (
    ROOT,
    RUN_ID,
    RUN_LABEL,
    STANDIN_IMAGE,
    Daemon,
    Fleet,
    end_process,
    free_port,
    ok_restarts,
    started_at,
    wait_for,
)

pytestmark = pytest.mark.engine

PROXY_DIR = ROOT / "compose" / "socket-proxy"
CONFIG = PROXY_DIR / "haproxy.cfg"
ENDPOINTS = PROXY_DIR / "ENDPOINTS.md"
COMPOSE_FILE = PROXY_DIR / "docker-compose.socket-proxy.yml"
VERSION_PREFIX = r"^(/v1\.[0-9]+)?"
ID_PATTERN = "[a-zA-Z0-9][a-zA-Z0-9_.-]*"
LOG_LINE = re.compile(r"^socket-proxy (\S+) (\S+) (\S+) (-?\d+) (\S+)$")
MIB = 2**20

Endpoint = tuple[str, str]
# What the healing loop and the everyday CLI use, and what only the opt-in features add.
HEAL: set[Endpoint] = {
    ("GET", "/_ping"),
    ("GET", "/version"),
    ("GET", "/events"),
    ("GET", "/containers/json"),
    ("GET", "/containers/{id}/json"),
    ("POST", "/containers/{id}/restart"),
}
OPT_IN: set[Endpoint] = {
    ("GET", "/containers/{id}/stats"),  # capacity.memory_limits: report / enforce
    ("POST", "/containers/{id}/update"),  # capacity.memory_limits: enforce
    ("POST", "/containers/{id}/stop"),  # gpu.reset: true
    ("POST", "/containers/{id}/start"),  # gpu.reset: true
}
# Things the watchdog never does; the proxy must refuse every one ({id}: a real container). Path tricks too.
REFUSED: list[tuple[str, str]] = [
    ("POST", "/v1.41/containers/create?name={name}-evil"),
    ("DELETE", "/v1.41/containers/{id}?force=1"),
    ("POST", "/v1.41/containers/{id}/exec"),
    ("POST", "/v1.41/containers/{id}/kill"),
    ("POST", "/v1.41/containers/{id}/attach?stream=1&stdout=1"),
    ("GET", "/v1.41/containers/{id}/archive?path=/etc"),
    ("PUT", "/v1.41/containers/{id}/archive?path=/tmp"),
    ("GET", "/v1.41/containers/{id}/export"),
    ("GET", "/v1.41/containers/{id}/logs?stdout=1"),
    ("GET", "/v1.41/containers/{id}/top"),
    ("POST", "/v1.41/containers/{id}/rename?name=x"),
    ("POST", "/v1.41/containers/{id}/pause"),
    ("POST", "/v1.41/containers/prune"),
    ("POST", "/v1.41/images/create?fromImage=busybox"),
    ("GET", "/v1.41/images/json"),
    ("DELETE", "/v1.41/images/{image}"),
    ("POST", "/v1.41/build"),
    ("GET", "/v1.41/secrets"),
    ("GET", "/v1.41/configs"),
    ("GET", "/v1.41/info"),
    ("GET", "/v1.41/system/df"),
    ("POST", "/v1.41/volumes/create"),
    ("POST", "/v1.41/networks/create"),
    ("GET", "/v1.41/plugins"),
    ("POST", "/v1.41/swarm/init"),
    ("POST", "/v1.41/session"),
    ("POST", "/v1.41/exec/x/start"),
    ("POST", "/v1.41/auth"),
    # a needed path with the wrong method, and paths that try to reach another endpoint through an allowed one
    ("HEAD", "/_ping"),
    ("POST", "/v1.41/containers/json"),
    ("DELETE", "/v1.41/containers/{id}/json"),
    ("GET", "/v1.41/containers/{id}/restart"),
    ("GET", "/v1.41/containers/../info"),
    ("GET", "/v1.41/containers/{id}/../../info"),
    ("GET", "/v1.41/containers/%2e%2e/info/json"),
    ("POST", "/v1.41/containers/{id}%2Fexec/start"),
    ("GET", "/v1.41//containers/json"),
    ("GET", "/v1.41/containers/json/"),
    ("GET", "/v2.0/containers/json"),
]
HEALTHCHECK = {
    "test": ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/health"],
    "interval": 1_000_000_000,
    "timeout": 1_000_000_000,
    "retries": 2,
}
CRASH_LOOP = {"CRASH_ON_START": "1", "CRASH_DELAY": "0.3"}


# -- the proxy ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    status: int
    verdict: str  # "-" forwarded, "DENIED" refused by the proxy

    @property
    def endpoint(self) -> Endpoint:
        return endpoint(self.method, self.path)


def endpoint(method: str, path: str) -> Endpoint:
    """A logged request as an ENDPOINTS.md row: no version prefix, a container ID or name as {id}."""
    path = re.sub(r"^/v1\.[0-9]+(?=/)", "", path)
    path = re.sub(r"^/containers/[^/]+(/[^/]+)$", r"/containers/{id}\1", path)
    return method, path


def engine_socket() -> str:
    host = os.environ.get("DOCKER_HOST", "")
    return host.removeprefix("unix://") if host.startswith("unix://") else "/var/run/docker.sock"


class SocketProxy:
    """`haproxy -db -f compose/socket-proxy/haproxy.cfg` on a free port; its log lines parsed."""

    def __init__(self, binary: str, workdir: Path, config: Path = CONFIG) -> None:
        self.port = free_port()
        self.log_path = workdir / "haproxy.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "SOCKET_PROXY_LISTEN": f"127.0.0.1:{self.port}", "DOCKER_SOCKET": engine_socket()}
        self.proc = subprocess.Popen(
            [binary, "-db", "-f", str(config)], stdout=self._log, stderr=subprocess.STDOUT, env=env
        )
        wait_for(lambda: self._listening() or self.proc.poll() is not None, 10, "haproxy to listen")
        assert self.proc.poll() is None, f"haproxy exited {self.proc.returncode}:\n{self.log()}"
        self.url = f"http://127.0.0.1:{self.port}"
        self.docker_host = f"tcp://127.0.0.1:{self.port}"

    def _listening(self) -> bool:
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", self.port)) == 0

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def requests(self) -> list[Request]:
        found = []
        for line in self.log().splitlines():
            match = LOG_LINE.match(line.strip())
            if match:
                _client, method, path, status, verdict = match.groups()
                found.append(Request(method, path, int(status), verdict))
        return found

    def refused(self) -> list[Request]:
        """Every request the proxy did not forward: refused here (403) or unparseable (400)."""
        return [r for r in self.requests() if r.verdict != "-" or r.status in (400, 403) or r.method == "<BADREQ>"]

    def used(self) -> set[Endpoint]:
        return {r.endpoint for r in self.requests() if r.verdict == "-"}

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        return {**(base or {}), "DOCKER_HOST": self.docker_host}

    def stop(self) -> None:
        end_process(self.proc)
        self._log.close()


@pytest.fixture(scope="session")
def haproxy_binary() -> str:
    """Debian's haproxy; fails (never skips) naming the fix."""
    found = shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy",) if os.access(p, os.X_OK)), None)
    if found is None:
        pytest.fail("haproxy is not installed: run scripts/ensure-haproxy.sh (Debian's haproxy package)", pytrace=False)
    return found


@pytest.fixture
def proxy(haproxy_binary: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[SocketProxy]:
    started = SocketProxy(haproxy_binary, tmp_path)
    yield started
    started.stop()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(f"---- haproxy log {started.log_path} ----\n{started.log()[-20000:]}")


def refused_text(requests: list[Request]) -> str:
    return "; ".join(f"{r.method} {r.path} -> {r.status} {r.verdict}" for r in requests)


# -- the allowlist, the docs -----------------------------------------------------------------------------


ALLOW_RULE = re.compile(
    r"^http-request allow if \{ method ([A-Z]+) \} \{ path_reg " + re.escape(VERSION_PREFIX) + r"(/\S*)\$ \}$"
)


def allowlist() -> list[Endpoint]:
    """haproxy.cfg's `http-request allow` lines as (method, path) rows; anything else there fails."""
    rules: list[Endpoint] = []
    lines = [line.split("#", 1)[0].strip() for line in CONFIG.read_text().splitlines()]
    for line in (line for line in lines if line.startswith("http-request allow")):
        match = ALLOW_RULE.match(line)
        assert match, f"haproxy.cfg: an allow rule not of the checked form: {line}"
        method, pattern = match.groups()
        path = pattern.replace(ID_PATTERN, "{id}")
        assert re.fullmatch(r"[/a-z_{}]+", path), f"haproxy.cfg: a path pattern with more than an {{id}}: {line}"
        rules.append((method, path.replace(r"\.", ".")))
    return rules


def config_sections() -> dict[str, list[str]]:
    """haproxy.cfg by section ("frontend docker_api": its lines), comments and blank lines left out."""
    sections: dict[str, list[str]] = {}
    current: list[str] = []
    for raw in CONFIG.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if re.match(r"^(global|defaults|frontend|backend|listen)\b", raw):
            current = sections.setdefault(line, [])
        else:
            current.append(line)
    return sections


def documented() -> dict[Endpoint, str]:
    """ENDPOINTS.md's table: (method, path) -> the Needed column."""
    rows: dict[Endpoint, str] = {}
    for line in ENDPOINTS.read_text().splitlines():
        match = re.match(r"^\| (GET|POST|PUT|DELETE|HEAD) \| (\S+) \| .+ \| (.+) \|$", line)
        if match:
            method, path, needed = match.groups()
            assert (method, path) not in rows, f"ENDPOINTS.md lists {method} {path} twice"
            rows[(method, path)] = needed.strip()
    return rows


def test_the_documented_endpoints_are_exactly_the_proxys_allowlist(haproxy_binary: str) -> None:
    rules = allowlist()
    assert len(rules) == len(set(rules)), f"haproxy.cfg allows an endpoint twice: {rules}"
    docs = documented()
    assert set(rules) == set(docs), (
        f"ENDPOINTS.md and haproxy.cfg differ: only in the docs {sorted(set(docs) - set(rules))}, "
        f"only in haproxy.cfg {sorted(set(rules) - set(docs))}"
    )
    assert set(docs) == HEAL | OPT_IN, "the live tests below must use every row: update HEAL / OPT_IN with the docs"
    assert {e for e, needed in docs.items() if needed != "always"} >= OPT_IN, "the opt-in rows say their setting"
    # Everything not allowed is refused: one frontend, its http-request rules are the allows, then the deny.
    sections = config_sections()
    assert [name.split()[0] for name in sections] == ["global", "defaults", "frontend", "backend"], list(sections)
    frontend = next(lines for name, lines in sections.items() if name.startswith("frontend"))
    in_order = [line for line in frontend if line.startswith("http-request")]
    assert all(line.startswith("http-request allow if ") for line in in_order[: len(rules)]), in_order
    last = ["http-request set-var(txn.verdict) str(DENIED)", "http-request deny deny_status 403"]
    assert in_order[len(rules) :] == last, in_order
    elsewhere = [line for name, lines in sections.items() if lines is not frontend for line in lines]
    assert not [line for line in elsewhere if line.startswith(("http-request", "http-response", "use_backend"))]
    check = subprocess.run([haproxy_binary, "-c", "-f", str(CONFIG)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_id_pattern_cannot_reach_another_endpoint() -> None:
    rule = re.compile(VERSION_PREFIX + "/containers/" + ID_PATTERN + "/json$")
    for path in ("/containers/abc123/json", "/v1.41/containers/gwt-x_y.z/json"):
        assert rule.match(path), path
    for path in (
        "/containers/../json",
        "/containers/a/../json",
        "/containers/a%2F..%2Fx/json",
        "/containers/.x/json",
        "/v1.41//containers/a/json",
        "/containers//json",
        "/v1.41/containers/a/json/",
    ):
        assert not rule.match(path), path


# -- the daemon through the proxy -------------------------------------------------------------------------


def test_the_daemon_heals_gives_up_and_reports_through_the_proxy_with_nothing_refused(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str, proxy: SocketProxy
) -> None:
    fleet.start("killed", start_period="2")
    fleet.start("sick", healthcheck=HEALTHCHECK, endpoint=False, start_period="1")
    fleet.start("loop", env=CRASH_LOOP, endpoint=False)
    killed, sick, loop = (fleet.get(n).name for n in ("killed", "sick", "loop"))
    fleet.wait_ready("killed")
    wait_for(lambda: fleet.state("sick").get("Health", {}).get("Status") == "healthy", 20, "sick healthy first")
    http_port = free_port()
    daemon = new_daemon(daemons, tmp_path, prefix, env=proxy.env(), http=f"127.0.0.1:{http_port}").start()

    # a crash loop is given up after breaker.max_restarts, through the proxy
    wait_for(lambda: daemon.entries(kind="give-up", container=loop), 40, "the breaker to give up the crash loop")
    assert len(daemon.restarts(loop)) == 3
    # docker kill: healed
    before = started_at(fleet, "killed")
    fleet.get("killed").kill()
    wait_for(lambda: ok_restarts(daemon, killed), 20, "a restart of the killed container")
    wait_for(lambda: fleet.state("killed")["Running"] and started_at(fleet, "killed") != before, 10, "killed up")
    # the engine's healthcheck says unhealthy: healed
    fleet.fault("sick", "unhealthy")
    wait_for(lambda: ok_restarts(daemon, sick), 25, "a restart of the unhealthy container")
    assert daemon.entries(kind="detected", container=sick)[0]["fault"] == "unhealthy"
    streams = [r for r in proxy.requests() if r.endpoint == ("GET", "/events")]
    assert streams and streams[0].status == 200, "the /events stream did not open through the proxy"

    # status, doctor, /status and reset: the CLI through the same proxy (DOCKER_HOST in their environment)
    status = daemon.cli("status", "--json")
    assert status.returncode == 0, status.stderr
    rows = {c["name"]: c for c in json.loads(status.stdout)["containers"]}
    assert rows[loop]["breaker"] == "open" and {killed, sick} <= set(rows), status.stdout
    assert daemon.cli("status").returncode == 0
    doctor = daemon.cli("doctor", "--json")
    findings = json.loads(doctor.stdout)
    engine = next(f for f in findings if f["check"] == "docker")
    assert engine["level"] == "ok" and "reachable" in engine["text"], engine
    assert not [f for f in findings if f["level"] == "fail" and f["check"] in (killed, sick, loop)], findings
    served = httpx.get(f"http://127.0.0.1:{http_port}/status", timeout=10, trust_env=False)
    assert served.status_code == 200 and loop in served.text
    reset = daemon.cli("reset", loop)
    assert reset.returncode == 0, reset.stderr
    wait_for(lambda: len(daemon.restarts(loop)) > 3, 15, "a restart of the crash loop after `reset`")
    daemon.stop()

    assert not proxy.refused(), f"the proxy refused requests the watchdog sent: {refused_text(proxy.refused())}"
    assert proxy.used() == HEAL, f"endpoints used: {sorted(proxy.used())}"


def test_memory_limits_enforce_and_the_gpu_reset_through_the_proxy(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str, proxy: SocketProxy, fake_nvml: FakeNvml
) -> None:
    uuid_1 = "GPU-5f1c0b6e-1d2a-4c7e-9b3a-000000000101"
    gpu = "gpu {} uuid=GPU-5f1c0b6e-1d2a-4c7e-9b3a-00000000010{} bus=00000000:0{}:00.0 name=P106-100 total_mib=6144"
    tail = " used_mib=4000 temp=50 ecc=notsupported\n"
    fake_nvml.write("driver 535.183.01\n" + gpu.format(0, 0, 1) + tail + gpu.format(1, 1, 2) + tail)
    record = tmp_path / "reset-args"
    script = tmp_path / "fake-reset"
    script.write_text(f'#!/bin/sh\necho "$@" > {record}\n')
    script.chmod(0o755)
    fleet.start("chat", role="chat", gpu="0", start_period="2")
    fleet.start("ongpu1", gpu="1", start_period="2")
    fleet.wait_ready("chat")
    fleet.wait_ready("ongpu1")
    chat = fleet.get("chat").name
    daemon = new_daemon(
        daemons,
        tmp_path,
        prefix,
        env=proxy.env(nvml_environment(fake_nvml.scenario_file)),
        capacity={"memory_limits": "enforce", "memory": {"chat": {"mem_limit": "96m", "memswap_limit": "160m"}}},
        gpu={
            "deadline": 1,
            "kernel_log": "off",
            "pid_mapping": False,
            "reset": True,
            "reset_command": [str(script), "-i", "{uuid}"],
        },
    ).start()

    # memory limits enforce: `docker update` through the proxy, after reading the usage (stats)
    wait_for(lambda: daemon.entries(kind="memory-limit-applied", container=chat), 20, "the chat limits applied")
    host = fleet.get("chat").attrs["HostConfig"]
    assert (host["Memory"], host["MemorySwap"]) == (96 * MIB, 160 * MIB)
    # the opt-in GPU reset: its containers stopped, the GPU reset, the containers started again
    before = started_at(fleet, "ongpu1")
    with fake_nvml.scenario_file.open("a") as file:
        file.write("xid 1 48\n")
    wait_for(lambda: daemon.entries(kind="gpu-reset-ok"), 25, "the GPU reset done")
    assert record.read_text().split() == ["-i", uuid_1]
    wait_for(lambda: fleet.state("ongpu1")["Running"], 10, "the GPU's container started again")
    assert started_at(fleet, "ongpu1") != before
    daemon.stop()

    assert not proxy.refused(), f"the proxy refused requests the watchdog sent: {refused_text(proxy.refused())}"
    assert OPT_IN <= proxy.used() <= HEAL | OPT_IN, f"endpoints used: {sorted(proxy.used())}"


# -- the proxy on its own ---------------------------------------------------------------------------------


def through(proxy: SocketProxy, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, proxy.url + path, timeout=30, trust_env=False, **kwargs)


def test_the_proxy_refuses_what_the_watchdog_does_not_need(
    client: docker.DockerClient, fleet: Fleet, proxy: SocketProxy
) -> None:
    target = fleet.start("target")
    image = client.images.get(STANDIN_IMAGE).id
    ours = {"label": f"{RUN_LABEL}={RUN_ID}"}  # other fleets may share this engine
    before = {c.id for c in client.containers.list(all=True, filters=ours)}
    answered = []
    for method, template in REFUSED:
        path = template.format(id=target.id, name=target.name, image=image)
        body = json.dumps({"Image": STANDIN_IMAGE, "Cmd": ["true"]}) if method in ("POST", "PUT") else None
        # http.client sends the path as it is (no dot-segment or percent normalisation, as httpx would do)
        connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
        try:
            connection.request(method, path, body=body, headers={"Content-Type": "application/json"})
            status = connection.getresponse().status
        finally:
            connection.close()
        if status != 403:
            answered.append(f"{method} {path} -> {status}")
    assert not answered, f"the proxy forwarded what it must refuse: {answered}"
    # refused by the proxy, not by the engine: each one logged DENIED, and the engine changed nothing
    denied = [r for r in proxy.requests() if r.verdict == "DENIED"]
    assert len(denied) == len(REFUSED), refused_text(proxy.requests())
    target.reload()
    assert target.status == "running"
    assert {c.id for c in client.containers.list(all=True, filters=ours)} == before
    with contextlib.suppress(docker.errors.NotFound):
        pytest.fail(f"a container was created through the proxy: {client.containers.get(target.name + '-evil')}")


def test_the_proxy_forwards_every_endpoint_the_watchdog_needs(
    client: docker.DockerClient, fleet: Fleet, proxy: SocketProxy
) -> None:
    target = fleet.start("target", role="chat")
    fleet.wait_ready("target")
    api = "/v" + str(client.version()["ApiVersion"])
    ping = through(proxy, "GET", "/_ping")
    assert (ping.status_code, ping.text) == (200, "OK")
    assert through(proxy, "GET", "/version").json()["ApiVersion"] == api[2:]  # unversioned: the SDK negotiates
    filters = json.dumps({"label": [f"{RUN_LABEL}={RUN_ID}"]})
    listed = through(proxy, "GET", f"{api}/containers/json", params={"all": "1", "filters": filters})
    assert target.id in {c["Id"] for c in listed.json()}
    by_name = through(proxy, "GET", f"{api}/containers/{target.name}/json")  # litellm.proxy_container is a name
    assert by_name.status_code == 200 and by_name.json()["Id"] == target.id
    stats = through(proxy, "GET", f"{api}/containers/{target.id}/stats", params={"stream": "0", "one-shot": "1"})
    assert stats.status_code == 200 and stats.json()["memory_stats"]["usage"] > 0
    update = through(
        proxy, "POST", f"{api}/containers/{target.id}/update", json={"Memory": 96 * MIB, "MemorySwap": 160 * MIB}
    )
    assert update.status_code == 200, update.text
    started = time.time()
    for action, status in (("restart", 204), ("stop", 204), ("start", 204)):
        done = through(proxy, "POST", f"{api}/containers/{target.id}/{action}", params={"t": "1"})
        assert done.status_code == status, f"{action}: {done.status_code} {done.text}"
    events = through(
        proxy,
        "GET",
        f"{api}/events",
        params={"since": str(started - 1), "until": str(time.time() + 1), "filters": filters},
    )
    actions = [json.loads(line)["Action"] for line in events.text.splitlines() if line.strip()]
    assert {"update", "restart", "stop", "start"} <= set(actions), actions
    assert not proxy.refused(), refused_text(proxy.refused())
    assert proxy.used() == HEAL | OPT_IN


def test_a_quiet_events_stream_stays_open_through_the_proxy(fleet: Fleet, proxy: SocketProxy) -> None:
    """Longer than the proxy's short timeouts (http-request, keep-alive: 10 s), then an event still arrives."""
    target = fleet.start("target")
    filters = json.dumps({"label": [f"{RUN_LABEL}={RUN_ID}"], "event": ["restart"]})
    got: list[dict[str, Any]] = []

    def read() -> None:
        with httpx.stream(
            "GET",
            f"{proxy.url}/events",
            params={"filters": filters},
            timeout=httpx.Timeout(5, read=60),
            trust_env=False,
        ) as stream:
            for line in stream.iter_lines():
                if line.strip():
                    got.append(json.loads(line))
                    return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(12)
    assert reader.is_alive() and not got, "the events stream ended while quiet"
    target.restart(timeout=1)
    reader.join(20)
    assert got and got[0]["Action"] == "restart" and got[0]["id"] == target.id, got


# -- the compose example -----------------------------------------------------------------------------------

COMPOSE = ["-f", str(ROOT / "compose" / "docker-compose.yml"), "-f", str(COMPOSE_FILE)]
NO_GPU = ["-f", str(ROOT / "tests" / "integration" / "compose" / "nogpu.override.yml")]
LOCAL_HAPROXY_IMAGE = "gpu-watchdog/socket-proxy-test:dev"


def compose_env(image: str | None) -> dict[str, str]:
    env = {**os.environ, "DOCKER_GID": str(os.stat(engine_socket()).st_gid), "COMPOSE_BAKE": "false"}
    env.pop("HAPROXY_IMAGE", None)
    if image:
        env["HAPROXY_IMAGE"] = image
    return env


def test_the_compose_example_gives_the_socket_to_the_proxy_only() -> None:
    done = subprocess.run(
        ["docker", "compose", *COMPOSE, "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=compose_env("haproxy:test"),
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    resolved = json.loads(done.stdout)
    proxy, watchdog = resolved["services"]["socket-proxy"], resolved["services"]["gpu-watchdog"]
    mounts = {v["target"]: v for v in proxy["volumes"]}
    assert mounts["/var/run/docker.sock"]["source"] == "/var/run/docker.sock"
    assert mounts["/usr/local/etc/haproxy/haproxy.cfg"]["source"] == str(CONFIG)
    assert mounts["/usr/local/etc/haproxy/haproxy.cfg"]["read_only"] is True
    assert "ports" not in proxy and set(proxy["networks"]) == {"docker-api"}
    assert proxy["read_only"] is True and proxy["cap_drop"] == ["ALL"]
    assert watchdog["environment"]["DOCKER_HOST"] == "tcp://socket-proxy:2375"
    assert "/var/run/docker.sock" not in {v["target"] for v in watchdog["volumes"]}
    assert not watchdog.get("group_add"), "the watchdog needs no docker group without the socket"
    assert set(watchdog["networks"]) == {"default", "docker-api"}
    assert resolved["networks"]["docker-api"]["internal"] is True

    missing = subprocess.run(
        ["docker", "compose", *COMPOSE, "config"], capture_output=True, text=True, timeout=60, env=compose_env(None)
    )
    assert missing.returncode != 0 and "set HAPROXY_IMAGE" in missing.stderr


def local_haproxy_image(binary: str, workdir: Path) -> str:
    """No registry here: an image of this host's haproxy and the shared libraries it loads (ldd), FROM scratch."""
    rootfs = workdir / "rootfs"
    listed = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    for source in [binary, *re.findall(r"(/\S+) \(0x", listed)]:
        target = rootfs / source.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)  # follows symlinks: the file itself
    (workdir / "Dockerfile").write_text("FROM scratch\nCOPY rootfs/ /\n")
    subprocess.run(["docker", "build", "-q", "-t", LOCAL_HAPROXY_IMAGE, str(workdir)], check=True, capture_output=True)
    return LOCAL_HAPROXY_IMAGE


def test_compose_up_the_watchdog_heals_through_the_socket_proxy(
    client: docker.DockerClient, haproxy_binary: str, tmp_path: Path
) -> None:
    subprocess.run(["bash", str(ROOT / "scripts" / "build-images.sh")], check=True, capture_output=True)
    env = compose_env(local_haproxy_image(haproxy_binary, tmp_path / "image"))
    project = f"gwtproxy{uuid.uuid4().hex[:6]}"
    base = ["docker", "compose", "-p", project, *COMPOSE, *NO_GPU]
    up = subprocess.run([*base, "up", "-d"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    try:
        assert up.returncode == 0, up.stderr
        watchdog = client.containers.get(f"{project}-gpu-watchdog-1")
        proxy = client.containers.get(f"{project}-socket-proxy-1")
        assert "/var/run/docker.sock" not in {m["Destination"] for m in watchdog.attrs["Mounts"]}
        wait_for(lambda: "healing loop running: 1 managed container(s)" in watchdog.logs().decode(), 60, "first cycle")
        target = client.containers.get(f"{project}-llm-0-1")
        before = target.attrs["State"]["StartedAt"]
        target.kill()

        def restarted() -> bool:
            target.reload()
            return bool(target.attrs["State"]["Running"] and target.attrs["State"]["StartedAt"] != before)

        wait_for(restarted, 30, "llm-0 restarted by the watchdog through the proxy")
        status = subprocess.run(
            ["docker", "exec", watchdog.name, "python3", "-m", "watchdog", "status"], capture_output=True, text=True
        )
        assert status.returncode == 0 and f"{project}-llm-0-1" in status.stdout, status.stdout + status.stderr
        log = proxy.logs().decode()
        assert re.search(rf"POST /v1\.[0-9]+/containers/{target.id}/restart 204 -", log), log[-3000:]
        assert "DENIED" not in log, [line for line in log.splitlines() if "DENIED" in line]
        # the watchdog cannot do more than the allowlist either: its engine is the proxy
        info = subprocess.run(
            ["docker", "exec", watchdog.name, "python3", "-c", "import docker; docker.from_env().info()"],
            capture_output=True,
            text=True,
        )
        assert info.returncode != 0 and "403" in info.stderr, info.stderr[-2000:]
    finally:
        subprocess.run([*base, "down", "-v", "--timeout", "2"], capture_output=True, env=env, cwd=ROOT, timeout=120)


def test_a_proxy_that_refuses_events_is_said_and_polling_heals(
    haproxy_binary: str, fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str
) -> None:
    """An allowlist without GET /events: the daemon says the stream is refused (not "connected") and polls."""
    narrowed = tmp_path / "no-events.cfg"
    lines = CONFIG.read_text().splitlines()
    kept = [line for line in lines if not ("http-request allow" in line and "/events" in line)]
    assert len(kept) == len(lines) - 1
    narrowed.write_text("\n".join(kept) + "\n")
    proxy = SocketProxy(haproxy_binary, tmp_path, narrowed)
    try:
        fleet.start("a")
        fleet.wait_ready("a")
        daemon = new_daemon(daemons, tmp_path, prefix, env=proxy.env()).start()
        wait_for(lambda: "event stream refused: HTTP 403" in daemon.log(), 15, "the refusal said")
        assert "engine event stream connected" not in daemon.log()
        name = fleet.get("a").name
        fleet.get("a").kill()
        wait_for(lambda: ok_restarts(daemon, name), 20, "healed by polling")
    finally:
        proxy.stop()
