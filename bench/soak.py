"""Chaos soak: the real daemon against a fleet on the real engine, faults injected at random for N minutes.

The fleet (all on 127.0.0.1): `--containers` stand-ins with health endpoints, of which `--controls` are
never touched, the rest are targets; plus one crash-looping container (CRASH_ON_START) that the daemon
must give up on. The daemon is the real one (harness `Daemon`: subprocess, 1 s poll, 1 s probe timeout,
3 failed probes, breaker 3 restarts in 120 s then given up for 600 s), left running throughout.

A seeded chaos driver injects faults as a Poisson process (`--faults-per-minute`), each on a random
eligible target, of a random kind:
- kill: `docker kill` (SIGKILL, exit 137);
- crash: the stand-in's POST /fault/crash (the process exits with code 1);
- hang: POST /fault/hang (every request accepted, never answered);
- unhealthy: POST /fault/unhealthy (/health answers 500 until the process restarts).
(The stand-in's other fault, vram-lost, needs the fake NVIDIA driver; bench/zero_vram.py covers it.)
A target is eligible when its previous fault is healed (a `recovered` journal entry after it and /health
answering 200 from a restarted process) and it had fewer than max_restarts - 1 faults in the breaker's
window: a healthy container must never be given up because the driver faulted it too often. The seed
fixes the arrival times and the n-th injected fault's kind; which targets are eligible at an arrival
depends on timing, so the targets (and skipped arrivals) can differ between two runs.

At the end the journal and the driver's record are checked (any failure is a violation, exit status 1):
- every injected fault healed: exactly one restart issued for it (after the injection, within 60 s),
  a `detected` entry before the restart, a `recovered` entry after it, the container answering /health
  from a restarted process within 90 s;
- zero false restarts: every restart of a target matches a fault injected on that container; no
  restart, detection or verdict at all on the controls;
- the crash looper given up correctly: at least one `give-up`, each after exactly max_restarts attempts
  within the window, no attempt while given up (cooldown), exited while given up, never `recovered`;
- journal consistent: per container, `detected` and `recovered`/`cleared` alternate (nothing left open
  but the looper's); every restart action finished with outcome ok, has its `restart-call` entry and a
  `restart-<outcome>` entry (`restart-recovered` for targets); no give-up on any target;
- the daemon still running, no "cycle failed", "journal write failed" or traceback in its log;
- daemon memory flat: RSS sampled every 10 s; after a warm-up (20% of the run, at most 120 s) the median
  of the last quarter of the samples may exceed the median of the first quarter by at most
  max(5 MiB, 10%). The least-squares slope (MiB/h) is reported too.

On a shared machine another test may restart the Docker engine (tests/integration/test_engine_restart.py):
the engine then stops every container. The driver notices (`manual-stop`/`engine-down` in the journal, or
the engine not answering), pauses the chaos, waits for the engine, starts what it stopped, waits until
all answer, and resumes. That window (from 3 s before the first stop to the resumption) is reported
under `disturbances` and not judged: restarts and control entries in it, and the faults it interrupted,
are left out; an `engine-down` or `manual-stop` outside every window is a violation.

Prints a summary, saves bench/results/soak.json.
Usage: python bench/soak.py [--minutes 30] [--faults-per-minute 6] [--seed 1] [--containers 16]
                            [--controls 4] [--keep DIR]
--keep DIR keeps the daemon's log and journal in DIR (default: a temporary directory, removed).
tests/integration/test_soak.py runs the same checks for 2 minutes through run_soak().
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import contextlib
import math
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import docker
import httpx
from common import new_fleet, save, summary
from idle_cost import rss_bytes

from tests.integration.harness import Daemon, Fleet
from watchdog.journal import Journal

KINDS = ("kill", "crash", "hang", "unhealthy")
BREAKER = {"max_restarts": 3, "window": 120, "backoff_initial": 1, "backoff_max": 2, "cooldown": 600}
HEAL_TIMEOUT = 90.0  # a fault not healed this long after its injection is a violation
MATCH_WINDOW = 60.0  # a restart belongs to a fault injected at most this long before it
SKEW = 0.5  # the driver's and the daemon's clocks are the same host clock; allow for rounding
SETTLE_AFTER_HEAL = 2.0  # a healed target is eligible again this long after the driver saw it healthy
RSS_INTERVAL = 10.0
MEMORY_SLACK_BYTES = 5 * 2**20
MEMORY_SLACK_RATIO = 0.10
TICK = 0.25
LOG_PROBLEMS = ("cycle failed", "journal write failed", "Traceback")
DISTURBANCES = ("manual-stop", "engine-down")  # nothing in the soak stops a container: the engine is going down
DISTURBANCE_LEAD = 3.0  # a disturbance window opens this long before the first stop seen
ENGINE_BACK_TIMEOUT = 180.0


@dataclass
class Fault:
    """One injected fault and what the driver saw of its healing (times: time.time())."""

    container: str
    kind: str
    at: float
    started_before: str
    recovered_at: float | None = None  # the daemon's `recovered` entry
    healed_at: float | None = None  # the driver saw /health 200 from a restarted process
    problem: str | None = None  # set when the driver gave up waiting
    interrupted: bool = False  # in a disturbance window (the engine restarted by someone else): not judged


@dataclass
class SoakResult:
    minutes: float
    seed: int
    faults_per_minute: float
    targets: list[str]
    controls: list[str]
    looper: str
    faults: list[Fault] = field(default_factory=list)
    skipped_arrivals: int = 0  # fault arrivals with no eligible target
    injection_errors: list[str] = field(default_factory=list)
    checks: dict[str, list[str]] = field(default_factory=dict)
    looper_give_ups: int = 0
    looper_restarts: int = 0
    restarts: int = 0
    rss: list[tuple[float, int]] = field(default_factory=list)  # (seconds since the daemon started, bytes)
    memory: dict[str, Any] = field(default_factory=dict)
    daemon_alive: bool = True
    log_problems: list[str] = field(default_factory=list)
    timings: dict[str, Any] = field(default_factory=dict)
    disturbances: list[dict[str, Any]] = field(default_factory=list)  # engine restarts by others: windows not judged
    wall_s: float = 0.0

    def violations(self, check_memory: bool = True) -> list[str]:
        found = [f"{name}: {item}" for name, items in self.checks.items() for item in items]
        found += [f"injection: {e}" for e in self.injection_errors]
        found += [f"daemon log: {line}" for line in self.log_problems]
        if not self.daemon_alive:
            found.append("daemon: not running at the end")
        if check_memory and not self.memory.get("flat", False):
            found.append(f"memory: not flat: {self.memory}")
        return found

    def by_kind(self) -> dict[str, int]:
        return dict(sorted(collections.Counter(f.kind for f in self.faults).items()))

    def healed(self) -> int:
        return sum(1 for f in self.faults if f.healed_at is not None and not f.interrupted)

    def interrupted(self) -> int:
        return sum(1 for f in self.faults if f.interrupted)

    def windows(self) -> list[tuple[float, float]]:
        return [(d["from"], d["to"]) for d in self.disturbances]

    def to_json(self, check_memory: bool = True) -> dict[str, Any]:
        data = asdict(self)
        data["faults_by_kind"] = self.by_kind()
        data["faults_injected"] = len(self.faults)
        data["faults_healed"] = self.healed()
        data["faults_interrupted"] = self.interrupted()
        data["false_restarts"] = len(self.checks.get("false restart", []))
        data["violations"] = self.violations(check_memory)
        return data


# -- the pure checks ------------------------------------------------------------------------------------


def inside(ts: float, windows: Sequence[tuple[float, float]]) -> bool:
    return any(a <= ts <= b for a, b in windows)


def match_restarts(faults: list[Fault], actions: list[dict[str, Any]], looper: str) -> tuple[dict[int, list], list]:
    """Each non-looper restart action to the latest fault on its container injected before it (within the window).

    Returns ({fault index: [actions]}, [actions that match no fault]).
    """
    matched: dict[int, list[dict[str, Any]]] = {i: [] for i in range(len(faults))}
    unmatched = []
    for action in sorted(actions, key=lambda a: a["started_at"]):
        if action["container"] == looper:
            continue
        candidates = [
            i
            for i, f in enumerate(faults)
            if f.container == action["container"] and f.at - SKEW <= action["started_at"] <= f.at + MATCH_WINDOW
        ]
        if not candidates:
            unmatched.append(action)
            continue
        matched[max(candidates, key=lambda i: faults[i].at)].append(action)
    return matched, unmatched


def check_faults(
    faults: list[Fault],
    entries: list[dict[str, Any]],
    actions: list[dict[str, Any]],
    looper: str,
    windows: Sequence[tuple[float, float]] = (),
) -> dict[str, list[str]]:
    """Every fault healed by exactly one restart; no restart without a fault (disturbance windows excepted)."""
    problems: dict[str, list[str]] = {"not healed": [], "false restart": [], "duplicate restart": []}
    matched, unmatched = match_restarts(faults, actions, looper)
    for action in unmatched:
        if inside(action["started_at"], windows):
            continue  # the engine stopped everything there: not a false restart by itself
        problems["false restart"].append(
            f"{action['container']}: restart #{action['id']} at {action['started_at']:.3f} ({action['reason']}) "
            "matches no injected fault"
        )
    for i, fault in enumerate(faults):
        if fault.interrupted:
            continue
        what = f"{fault.kind} on {fault.container} at {fault.at:.3f}"
        mine = matched[i]
        if len(mine) > 1:
            problems["duplicate restart"].append(f"{what}: {len(mine)} restarts (#{[a['id'] for a in mine]})")
        if fault.problem:
            problems["not healed"].append(f"{what}: {fault.problem}")
            continue
        if not mine:
            problems["not healed"].append(f"{what}: no restart issued")
            continue
        restart = mine[0]
        detected = [
            e
            for e in entries
            if e["kind"] == "detected"
            and e["container"] == fault.container
            and fault.at - SKEW <= e["ts"] <= restart["started_at"] + SKEW
        ]
        recovered = [
            e
            for e in entries
            if e["kind"] == "recovered" and e["container"] == fault.container and e["ts"] >= restart["started_at"]
        ]
        if not detected:
            problems["not healed"].append(f"{what}: no `detected` entry before its restart")
        if not recovered:
            problems["not healed"].append(f"{what}: no `recovered` entry after its restart")
        if fault.healed_at is None:
            problems["not healed"].append(f"{what}: never answered /health from a restarted process")
    return problems


def check_journal(
    entries: list[dict[str, Any]],
    actions: list[dict[str, Any]],
    looper: str,
    controls: list[str],
    windows: Sequence[tuple[float, float]] = (),
) -> list[str]:
    """detected/recovered alternate; every action finished and accounted for; verdicts where they belong.

    In a disturbance window (the engine restarted by someone else) the engine stops every container:
    stops, `cleared` faults and failed restarts are expected there and not judged; alternation is, always.
    """
    problems = []
    open_since: dict[str, float] = {}
    for e in entries:
        name = e["container"]
        if e["kind"] in ("engine-down", "manual-stop") and not inside(e["ts"], windows):
            problems.append(f"{name or 'engine'}: `{e['kind']}` at {e['ts']:.3f} outside any disturbance window")
        if name is None or name == looper:
            continue
        if e["kind"] == "detected":
            if name in open_since:
                problems.append(
                    f"{name}: `detected` at {e['ts']:.3f} while a fault since {open_since[name]:.3f} is open"
                )
            open_since[name] = e["ts"]
        elif e["kind"] in ("recovered", "cleared"):
            if name not in open_since:
                problems.append(f"{name}: `{e['kind']}` at {e['ts']:.3f} without an open fault")
            open_since.pop(name, None)
        elif e["kind"] in ("give-up", "given-up"):
            problems.append(f"{name}: `{e['kind']}` on a container that is not the crash looper: {e['reason']}")
        if name in controls and not inside(e["ts"], windows):
            problems.append(f"{name}: control container has a `{e['kind']}` entry: {e['reason']}")
    problems += [f"{name}: fault detected at {ts:.3f} never recovered" for name, ts in open_since.items()]
    by_action: dict[int, list[str]] = collections.defaultdict(list)
    for e in entries:
        if e["action_id"] is not None:
            by_action[e["action_id"]].append(e["kind"])
    for a in actions:
        label = f"{a['container']}: restart #{a['id']}"
        if a["finished_at"] is None:
            problems.append(f"{label} never finished")
        elif a["outcome"] != "ok":
            problems.append(f"{label} outcome {a['outcome']}")
        kinds = by_action.get(a["id"], [])
        if "restart-call" not in kinds:
            problems.append(f"{label} has no `restart-call` entry")
        outcomes = [k for k in kinds if k.startswith("restart-") and k != "restart-call"]
        if len(outcomes) != 1:
            problems.append(f"{label} has {len(outcomes)} outcome entries: {outcomes}")
        elif a["container"] != looper and outcomes[0] != "restart-recovered" and not inside(a["started_at"], windows):
            problems.append(f"{label} ended {outcomes[0]}")
    return problems


def check_looper(
    entries: list[dict[str, Any]], actions: list[dict[str, Any]], looper: str, end: float, exited: bool | None
) -> tuple[list[str], int, int]:
    """Given up after exactly max_restarts attempts in the window, never restarted while given up."""
    limit, window, cooldown = BREAKER["max_restarts"], BREAKER["window"], BREAKER["cooldown"]
    give_ups = [e["ts"] for e in entries if e["container"] == looper and e["kind"] == "give-up"]
    restarts = sorted(a["started_at"] for a in actions if a["container"] == looper)
    problems = []
    if not give_ups:
        problems.append(f"{looper}: never given up ({len(restarts)} restarts)")
    rearm = 0.0
    for g in give_ups:
        recent = [t for t in restarts if g - window < t <= g and t >= rearm]
        if len(recent) != limit:
            problems.append(f"{looper}: given up at {g:.3f} after {len(recent)} attempts in the window (limit {limit})")
        during = [t for t in restarts if g < t < g + cooldown - SKEW]
        if during:
            problems.append(f"{looper}: {len(during)} restart(s) while given up (after {g:.3f}): {during}")
        rearm = g + cooldown
    if [e for e in entries if e["container"] == looper and e["kind"] == "recovered"]:
        problems.append(f"{looper}: `recovered` entry for a container that cannot start")
    if give_ups and end < give_ups[-1] + cooldown and exited is False:
        problems.append(f"{looper}: running while given up")
    return problems, len(give_ups), len(restarts)


def memory_verdict(samples: list[tuple[float, int]], warmup: float) -> dict[str, Any]:
    """Median of the last quarter vs the first quarter, after the warm-up."""
    kept = [(t, b) for t, b in samples if t >= warmup]
    peak = max((b for _, b in samples), default=0) / 2**20
    if len(kept) < 8:
        why = f"only {len(kept)} samples after the {warmup:.0f} s warm-up (need 8)"
        return {"flat": False, "why": why, "peak_rss_mib": peak}
    quarter = len(kept) // 4
    first = statistics.median(b for _, b in kept[:quarter])
    last = statistics.median(b for _, b in kept[-quarter:])
    allowed = max(MEMORY_SLACK_BYTES, MEMORY_SLACK_RATIO * first)
    slope = statistics.linear_regression([t for t, _ in kept], [b for _, b in kept]).slope
    return {
        "flat": last - first <= allowed,
        "criterion": "last-quarter median - first-quarter median <= max(5 MiB, 10% of the first-quarter median)",
        "warmup_s": warmup,
        "samples": len(kept),
        "first_quarter_median_mib": first / 2**20,
        "last_quarter_median_mib": last / 2**20,
        "growth_mib": (last - first) / 2**20,
        "growth_pct": 100 * (last - first) / first,
        "allowed_mib": allowed / 2**20,
        "slope_mib_per_hour": slope * 3600 / 2**20,
        "peak_rss_mib": peak,
    }


# -- the driver -----------------------------------------------------------------------------------------


def engine_answers(fleet: Fleet) -> bool:
    try:
        return bool(fleet.client.ping())
    except Exception:  # any failure: not answering
        return False


def healthy(fleet: Fleet, name: str) -> bool:
    try:
        return httpx.get(fleet.url(name, "/health"), timeout=1, trust_env=False).status_code == 200
    except (httpx.HTTPError, KeyError, IndexError, TypeError, docker.errors.APIError):
        return False


def inject(fleet: Fleet, name: str, kind: str) -> None:
    if kind == "kill":
        fleet.get(name).kill()
    elif kind == "crash":
        fleet.fault(name, "crash")
    else:
        fleet.fault(name, kind)


def run_soak(
    minutes: float = 30,
    containers: int = 16,
    controls: int = 4,
    faults_per_minute: float = 6.0,
    seed: int = 1,
    workdir: Path | None = None,
    verbose: bool = True,
) -> SoakResult:
    """Run the soak and its checks; the fleet is removed and the daemon stopped before it returns."""
    if not 2 <= controls + 2 <= containers <= 64:
        raise ValueError("need 2..64 containers, at least 2 of them targets")
    say = print if verbose else (lambda *_: None)
    # Three streams, so that the n-th injected fault's kind does not depend on timing (eligibility).
    arrivals, kinds, picks = (random.Random(f"{seed}-{stream}") for stream in ("arrivals", "kinds", "picks"))
    began = time.monotonic()
    fleet = new_fleet()
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory()
        workdir = Path(tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
    daemon = Daemon(workdir, fleet.prefix, log_level="INFO", breaker=dict(BREAKER))
    journal: Journal | None = None
    try:
        short = [f"t{i:02d}" for i in range(containers - controls)] + [f"k{i:02d}" for i in range(controls)]
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda n: fleet.start(n), short))
            list(pool.map(lambda n: fleet.wait_ready(n, timeout=60), short))
        fleet.start("loop", env={"CRASH_ON_START": "1", "CRASH_DELAY": "0.3"}, endpoint=False)
        full = {n: fleet.get(n).name for n in [*short, "loop"]}
        targets = [full[n] for n in short if n.startswith("t")]
        result = SoakResult(
            minutes, seed, faults_per_minute, targets, [full[n] for n in short if n.startswith("k")], full["loop"]
        )
        daemon.start()
        assert daemon.proc is not None
        pid, daemon_t0 = daemon.proc.pid, time.monotonic()
        journal = daemon.journal()
        say(f"soak: {len(targets)} targets, {controls} controls, 1 crash looper; {minutes:g} min, seed {seed}")

        pending: dict[str, Fault] = {}
        history: dict[str, list[float]] = collections.defaultdict(list)  # injection times per target
        ready_at: dict[str, float] = {}
        next_rss = time.monotonic()
        end = time.monotonic() + minutes * 60
        next_fault = time.monotonic() + 5 + arrivals.expovariate(faults_per_minute / 60)
        last_report = time.monotonic()
        cursor = max((e["id"] for e in journal.entries()), default=0)  # journal entries already looked at

        def follow_up(now: float) -> None:
            for name, fault in list(pending.items()):
                if fault.recovered_at is None:
                    rows = journal.entries(since=fault.at - SKEW, container=name, kind="recovered") if journal else []
                    if rows:
                        fault.recovered_at = rows[0]["ts"]
                if (
                    fault.recovered_at is not None
                    and healthy(fleet, name)
                    and str(fleet.state(name).get("StartedAt")) != fault.started_before
                ):
                    fault.healed_at = time.time()
                    ready_at[name] = now + SETTLE_AFTER_HEAL
                    del pending[name]
                    continue
                if time.time() - fault.at > HEAL_TIMEOUT:
                    fault.problem = f"not healed within {HEAL_TIMEOUT:.0f} s (recovered entry: {fault.recovered_at})"
                    del pending[name]
                    ready_at[name] = math.inf  # never faulted again

        def sample_rss(now: float) -> None:
            nonlocal next_rss
            if now >= next_rss and daemon.alive():
                result.rss.append((now - daemon_t0, rss_bytes(pid)))
                next_rss = now + RSS_INTERVAL

        def maybe_inject(now: float) -> None:
            nonlocal next_fault
            if now < next_fault:
                return
            next_fault += arrivals.expovariate(faults_per_minute / 60)
            wall = time.time()
            eligible = [
                t
                for t in targets
                if t not in pending
                and ready_at.get(t, 0) <= now
                and sum(1 for at in history[t] if at > wall - BREAKER["window"] - 15) < BREAKER["max_restarts"] - 1
            ]
            if not eligible:
                result.skipped_arrivals += 1
                return
            name, kind = picks.choice(eligible), kinds.choice(KINDS)
            fault = Fault(name, kind, time.time(), str(fleet.state(name).get("StartedAt")))
            try:
                inject(fleet, name, kind)
            except (httpx.HTTPError, docker.errors.APIError) as exc:
                result.injection_errors.append(f"{kind} on {name}: {exc}")
                ready_at[name] = math.inf
                return
            result.faults.append(fault)
            pending[name] = fault
            history[name].append(fault.at)

        def disturbed() -> float | None:
            """When the engine began stopping our containers (someone else restarts it), if it did since last time."""
            nonlocal cursor
            fresh = [e for e in journal.entries(since=time.time() - 120) if e["id"] > cursor]
            cursor = max([cursor, *(e["id"] for e in fresh)])
            hits = [e["ts"] for e in fresh if e["kind"] in DISTURBANCES]
            return min(hits) if hits else None

        def sit_out_disturbance(began: float, why: str) -> None:
            """Wait for the engine, start what it stopped, wait until healthy; that window is not judged."""
            nonlocal cursor, next_fault
            say(f"soak: DISTURBANCE at {time.strftime('%H:%M:%S')}: {why}; chaos paused")
            deadline = time.monotonic() + ENGINE_BACK_TIMEOUT
            while not journal.entries(since=began - 1, kind="engine-up") or not engine_answers(fleet):
                if time.monotonic() > deadline or not daemon.alive():
                    raise RuntimeError(f"the engine did not come back within {ENGINE_BACK_TIMEOUT:.0f} s ({why})")
                time.sleep(1)
            time.sleep(2)
            for short_name in short:
                with contextlib.suppress(docker.errors.APIError):
                    container = fleet.get(short_name)
                    if container.status != "running":
                        container.start()
            for short_name in short:
                fleet.wait_ready(short_name, timeout=120)
            time.sleep(3)
            resumed = time.time()
            now = time.monotonic()
            window = (began - DISTURBANCE_LEAD, resumed + SETTLE_AFTER_HEAL)
            hit = [f for f in result.faults if f in pending.values() or window[0] <= f.at <= window[1]]
            for f in hit:
                f.interrupted = True
                ready_at[f.container] = now + SETTLE_AFTER_HEAL
            pending.clear()
            result.disturbances.append({"from": window[0], "to": window[1], "why": why, "interrupted_faults": len(hit)})
            cursor = max((e["id"] for e in journal.entries(since=began - 1)), default=cursor)
            next_fault = max(next_fault, now + 5)
            say(f"soak: resumed after {resumed - began:.0f} s; {len(hit)} fault(s) interrupted, not judged")

        def step(inject_more: bool) -> None:
            now = time.monotonic()
            began = disturbed()
            if began is not None:
                sit_out_disturbance(began, "the engine stopped our containers")
                return
            try:
                follow_up(now)
                if inject_more:
                    maybe_inject(now)
            except Exception as exc:  # the engine went away under us?
                time.sleep(3)  # let the daemon journal what it saw
                began = disturbed()
                if began is None and engine_answers(fleet):
                    raise
                sit_out_disturbance(began or time.time() - 3, f"{type(exc).__name__}: {exc}")
            sample_rss(now)

        while time.monotonic() < end and daemon.alive():
            step(inject_more=True)
            now = time.monotonic()
            if now - last_report >= 60:
                last_report = now
                say(
                    f"soak: {(now - daemon_t0) / 60:.1f} min, {len(result.faults)} faults "
                    f"({result.healed()} healed, {len(pending)} pending), RSS "
                    f"{result.rss[-1][1] / 2**20 if result.rss else 0:.1f} MiB"
                )
            time.sleep(TICK)
        # Drain: no new faults; wait for the pending ones (bounded by HEAL_TIMEOUT each).
        while pending and daemon.alive():
            step(inject_more=False)
            time.sleep(TICK)
        time.sleep(3)  # a few cycles: trailing entries (restart outcomes) written
        result.daemon_alive = daemon.alive()
        stop_wall = time.time()
        entries = journal.entries()
        actions = [asdict(a) for a in journal.actions()]
        exited = fleet.state("loop").get("Status") == "exited"
        daemon.stop()
        result.restarts = len(actions)
        windows = result.windows()
        result.checks = check_faults(result.faults, entries, actions, result.looper, windows)
        result.checks["journal"] = check_journal(entries, actions, result.looper, result.controls, windows)
        looper_problems, result.looper_give_ups, result.looper_restarts = check_looper(
            entries, actions, result.looper, stop_wall, exited
        )
        result.checks["crash looper"] = looper_problems
        for line in daemon.log().splitlines():
            if any(p in line for p in LOG_PROBLEMS):
                result.log_problems.append(line[:300])
        result.memory = memory_verdict(result.rss, warmup=min(120.0, 0.2 * minutes * 60))
        result.timings = fault_timings(result.faults, entries, actions)
        result.wall_s = time.monotonic() - began
        return result
    finally:
        if journal is not None:
            journal.close()
        daemon.stop()
        fleet.remove_all()
        if tmp is not None:
            tmp.cleanup()


def fault_timings(faults: list[Fault], entries: list[dict[str, Any]], actions: list[dict[str, Any]]) -> dict:
    """Per kind: injection -> detected, -> restart issued, -> `recovered` entry, -> /health 200 (seconds)."""
    steps: dict[str, dict[str, list[float]]] = collections.defaultdict(lambda: collections.defaultdict(list))
    for f in faults:
        if f.interrupted:
            continue
        detected = [e["ts"] for e in entries if e["kind"] == "detected" and e["container"] == f.container]
        restarted = [a["started_at"] for a in actions if a["container"] == f.container]
        after = [t - f.at for t in detected if t >= f.at - SKEW]
        if after:
            steps[f.kind]["detected_s"].append(min(after))
        after = [t - f.at for t in restarted if t >= f.at - SKEW]
        if after:
            steps[f.kind]["restart_issued_s"].append(min(after))
        if f.recovered_at is not None:
            steps[f.kind]["recovered_entry_s"].append(f.recovered_at - f.at)
        if f.healed_at is not None:
            steps[f.kind]["healthy_s"].append(f.healed_at - f.at)
    return {kind: {step: summary(values) for step, values in s.items()} for kind, s in sorted(steps.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--faults-per-minute", type=float, default=6.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--containers", type=int, default=16)
    parser.add_argument("--controls", type=int, default=4)
    parser.add_argument("--keep", type=Path, default=None, help="keep the daemon's log and journal in this folder")
    args = parser.parse_args()
    if not 0.5 <= args.minutes <= 240 or not 0.1 <= args.faults_per_minute <= 30:
        parser.error("minutes 0.5..240, faults per minute 0.1..30")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up in `finally`
    workdir = None
    if args.keep is not None:
        shutil.rmtree(args.keep / "state", ignore_errors=True)  # a fresh journal and log, not the last run's
        (args.keep / "daemon.log").unlink(missing_ok=True)
        workdir = args.keep
    result = run_soak(args.minutes, args.containers, args.controls, args.faults_per_minute, args.seed, workdir=workdir)
    violations = result.violations()
    m = result.memory
    print(
        f"soak: {result.minutes:g} min ({result.wall_s / 60:.1f} min wall), seed {result.seed}: "
        f"{len(result.faults)} faults {result.by_kind()}, {result.healed()} healed, "
        f"{result.interrupted()} interrupted by {len(result.disturbances)} disturbance(s), "
        f"{result.skipped_arrivals} arrivals skipped (no eligible target); "
        f"{result.restarts} restarts in all; crash looper given up {result.looper_give_ups}x after "
        f"{result.looper_restarts} attempts; false restarts {len(result.checks.get('false restart', []))}"
    )
    if "first_quarter_median_mib" in m:
        print(
            f"soak: RSS first quarter {m['first_quarter_median_mib']:.1f} MiB, last quarter "
            f"{m['last_quarter_median_mib']:.1f} MiB ({m['growth_mib']:+.2f} MiB, {m['growth_pct']:+.1f}%, allowed "
            f"{m['allowed_mib']:.1f} MiB), slope {m['slope_mib_per_hour']:+.2f} MiB/h, peak {m['peak_rss_mib']:.1f} MiB"
        )
    for kind, steps in result.timings.items():
        print(
            f"soak: {kind:9s} "
            + ", ".join(f"{step} median {s['median']:.2f} (max {s['max']:.2f})" for step, s in steps.items())
        )
    print("saved", save("soak", result.to_json()))
    if violations:
        print(f"soak: {len(violations)} violation(s):")
        for v in violations:
            print("  -", v)
        sys.exit(1)
    print("soak: all checks passed")


if __name__ == "__main__":
    main()
