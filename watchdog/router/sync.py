"""Keeps the capacity plan, the LiteLLM config, the rotation file and the proxy in step.

The I/O edge of watchdog/router/litellm_config.py, called once per cycle by the loop. It never
raises: a bad template, an unwritable file or a proxy that will not come back
is logged, journaled once and retried, and container healing goes on.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from loguru import logger

from watchdog.config import Config
from watchdog.containers.diagnose import ProbeHistory
from watchdog.containers.host import mem_total
from watchdog.entries import EntryKind
from watchdog.files import write_atomic, write_if_changed
from watchdog.gpu.marks import GpuMark
from watchdog.model import ContainerSnapshot, ContainerState, Decision, Diagnosis, NoteKind, ProbeStatus
from watchdog.model import Verdict as HealVerdict
from watchdog.router.capacity import CapacityPlan, CapacityPolicy, Verdict, plan_capacity, planned_members
from watchdog.router.litellm_config import (
    CALLBACK_MODULE,
    ROTATION_FILE,
    RotationEntry,
    RouterDeployment,
    RouterTemplate,
    TemplateError,
    api_bases_in,
    deployment_set,
    dump_config,
    parse_template,
    render_config,
    rotation,
    rotation_document,
    router_deployments,
    unreachable,
)
from watchdog.subsystem import CycleView, Services

PROXY_TARGET = "litellm-proxy"  # the prober's key for the proxy's liveness endpoint
PROXY_HEALTH_PATH = "/health/liveliness"
META_PROXY_SET = "litellm_proxy_set"
RESTART_BACKOFF_INITIAL, RESTART_BACKOFF_MAX = 30.0, 300.0
CALLBACK_SOURCE = Path(__file__).resolve().parents[2] / "litellm" / f"{CALLBACK_MODULE}.py"


def config_plan(
    containers: Sequence[ContainerSnapshot],
    marks: Mapping[str, GpuMark],
    given_up: set[str],
    policy: CapacityPolicy,
    host_total: int | None,
) -> CapacityPlan:
    """The plan the router config follows. A container stopped on purpose stays in it (out of rotation
    only): an operator's `docker stop` for maintenance must not cost a proxy restart (an ~11 s outage)."""
    return plan_capacity(planned_members(containers, marks, given_up, set()), policy, host_total)


def write_router_config(
    out_path: Path,
    template_path: Path,
    template: RouterTemplate,
    deployments: Sequence[RouterDeployment],
    plan: CapacityPlan,
) -> bool:
    """The proxy's config and, next to it, the callback module it loads; True when the config changed."""
    text = dump_config(render_config(template, deployments, plan), str(template_path), ROTATION_FILE)
    install_callback(out_path, template_path)
    return write_if_changed(out_path, text, keep_previous=True)


def install_callback(out_path: Path, template_path: Path) -> None:
    """LiteLLM loads `module.instance` callbacks from the directory of its config file."""
    target = out_path.with_name(f"{CALLBACK_MODULE}.py")
    source = template_path.with_name(f"{CALLBACK_MODULE}.py")
    if not source.is_file():
        source = CALLBACK_SOURCE
    if source.resolve() == target.resolve():
        return
    write_if_changed(target, source.read_text(encoding="utf-8"))


def given_up_names(decisions: Sequence[Decision]) -> set[str]:
    return {d.fault.container for d in decisions if d.verdict in (HealVerdict.GIVE_UP, HealVerdict.GIVEN_UP)}


def why_not_serving(diagnosis: Diagnosis, decisions: Sequence[Decision], held: Mapping[str, str]) -> dict[str, str]:
    """Container ID -> a short reason, for rotation log lines and status."""
    reasons: dict[str, str] = {}
    for note in diagnosis.notes:
        reasons[note.container_id] = note.kind.value
    for fault in diagnosis.faults:
        reasons[fault.container_id] = f"{fault.kind.value}: {fault.reason}"
    for decision in decisions:
        if decision.verdict in (HealVerdict.GIVE_UP, HealVerdict.GIVEN_UP):
            reasons[decision.fault.container_id] = "given up"
    for container_id, why in held.items():
        reasons[container_id] = f"held: {why}"
    return reasons


@dataclass
class ProxyRestart:
    deployments: list[list[str]]
    started_at: float
    future: Future[str]


class RouterSync:
    """One per daemon. `cycle()` after each diagnosis; `view()` for status."""

    def __init__(self, config: Config, services: Services, host_total: Callable[[], int | None] = mem_total) -> None:
        self.config = config
        self.journal = services.journal
        self.client = services.client
        self.executor = services.executor
        self.own = services.own
        self.clock = services.clock
        self.host_total = host_total()
        self.plan: CapacityPlan | None = None
        self._plan_key: tuple[Any, ...] | None = None
        self._template: RouterTemplate | None = None
        self._template_key: tuple[int, int] | None = None
        self._said: dict[str, str] = {}  # topic -> last message logged (each problem once)
        self._rotation: dict[str, bool] = {}
        self._api_bases: dict[str, str] | None = None  # deployment id -> api_base last seen (None: not read)
        self._rendered_key: tuple[Any, ...] | None = None  # inputs of the config last written or found unchanged
        self._rotation_written: tuple[str, float] | None = None  # (rotation without its time, when written)
        self._confirmed: list[list[str]] | None = None  # META_PROXY_SET, read once, then kept in step
        self._confirmed_read = False
        self._names: dict[str, str] = {}  # deployment id -> container name
        self._loaded: set[str] | None = None  # deployment ids the proxy has loaded (None: not read yet)
        self._rotation_view: dict[str, dict[str, Any]] = {}
        self._restart: ProxyRestart | None = None
        self._proxy_up: bool | None = None
        self._restart_owed = False  # the proxy has not loaded the current set yet
        self._restart_retry_at = 0.0
        self._restart_backoff = RESTART_BACKOFF_INITIAL
        self.errors = 0

    def apply_config(self, config: Config) -> None:
        self.config = config
        self._template_key = None  # re-read: the path may have changed

    # -- paths ---------------------------------------------------------------

    @property
    def out_path(self) -> Path:
        return Path(self.config.litellm.out)

    @property
    def rotation_path(self) -> Path:
        return self.out_path.with_name(ROTATION_FILE)

    # -- the cycle -------------------------------------------------------------

    def cycle(self, view: CycleView, now: float) -> None:
        """Never raises: the router must not stop the healing."""
        containers, diagnosis, decisions, histories = view.containers, view.diagnosis, view.decisions, view.histories
        held, marks = view.gpu.held, view.gpu.marks
        try:
            stopped = {n.container_id for n in diagnosis.notes if n.kind == NoteKind.DELIBERATE_STOP}
            given_up = given_up_names(decisions)
            policy = self.config.capacity
            plan = plan_capacity(planned_members(containers, marks, given_up, stopped), policy, self.host_total)
            self._track_plan(plan, now)
            if not self.config.litellm.enabled:
                return
            plan_for_config = config_plan(containers, marks, given_up, policy, self.host_total) if stopped else plan
            if self._api_bases is None:
                self._api_bases = self._api_bases_on_disk()
            deployments = router_deployments(containers, plan_for_config, self._api_bases)
            self._api_bases.update({d.id: d.api_base for d in deployments})
            self._names.update({d.id: d.container for d in deployments})
            self._settle_restart(now)
            self._write_rotation(deployments, containers, diagnosis, decisions, held, histories, now)
            self._write_config(deployments, plan_for_config, now)
            self._watch_proxy(histories.get(PROXY_TARGET), now)
        except Exception as exc:  # logged and counted; the next cycle tries again
            self.errors += 1
            logger.exception("router sync failed ({} so far): {}", self.errors, exc)

    def _say(self, topic: str, message: str, level: str = "ERROR", journal_kind: EntryKind | None = None) -> None:
        """Log (and journal) a problem once until it changes or clears."""
        if self._said.get(topic) == message:
            return
        self._said[topic] = message
        logger.log(level, message)
        if journal_kind:
            self.journal.record(journal_kind, message, ts=self.clock())

    def _clear(self, topic: str, message: str | None = None) -> None:
        if self._said.pop(topic, None) is not None and message:
            logger.info(message)

    def _track_plan(self, plan: CapacityPlan, now: float) -> None:
        """Recomputed every cycle (pure, cheap); said when the capacity really changes."""
        key = (
            plan.verdict,
            plan.serving_gpus,
            tuple((d.name, d.rpm, d.max_parallel_requests) for d in plan.deployments),
            plan.global_max_parallel_requests,
            plan.memory.fits,
        )
        previous, self.plan = self._plan_key, plan
        if key == previous:
            return
        self._plan_key = key
        first = previous is None
        text = f"capacity plan{' (start)' if first else ' changed'}: {plan.text}"
        if plan.verdict != Verdict.OK or not plan.memory.fits:
            warning = text if plan.verdict != Verdict.OK else f"{text}; {plan.memory.text}"
            logger.bind(verdict=plan.verdict.value).warning("{}", warning)
        else:
            logger.bind(verdict=plan.verdict.value).info("{}", text)
        if first and plan.verdict == Verdict.OK and plan.memory.fits:
            return  # a healthy start needs no journal line
        self.journal.record(
            EntryKind.CAPACITY,
            text if plan.memory.fits else f"{text}; {plan.memory.text}",
            ts=now,
            detail={"verdict": plan.verdict.value, "serving_gpus": plan.serving_gpus},
        )

    # -- rotation --------------------------------------------------------------

    def _write_rotation(
        self,
        deployments: Sequence[RouterDeployment],
        containers: Sequence[ContainerSnapshot],
        diagnosis: Diagnosis,
        decisions: Sequence[Decision],
        held: Mapping[str, str],
        histories: Mapping[str, ProbeHistory],
        now: float,
    ) -> None:
        ready = set(diagnosis.ready) - set(held)
        # Not probed yet in this life, no fault, no note (a watchdog start, not a restart, which
        # is "starting"): keep what it was, and in at first sight, as LiteLLM alone would route it.
        was_out = {d.container for d in deployments if self._rotation.get(d.id) is False}
        unjudged = {
            c.id
            for c in containers
            if c.name not in was_out
            and c.state == ContainerState.RUNNING
            and not (histories.get(c.id) and histories[c.id].results)
        }
        why_not = why_not_serving(diagnosis, decisions, held)
        for container in containers:  # a hang shows first as one failed probe, before it is a fault
            results = histories[container.id].results if container.id in histories else ()
            if container.id not in why_not and results and results[-1].status != ProbeStatus.OK:
                why_not[container.id] = f"last probe {results[-1].status.value}: {results[-1].detail}"
        entries = rotation(deployments, containers, ready, why_not, unjudged)
        # Removed from the config (given up, GPU quarantined) but still loaded in the proxy until it
        # restarts, or forever without a restart mechanism: denied until then.
        for ident in sorted(self._loaded_ids() - {d.id for d in deployments}):
            name = self._names.get(ident, ident)
            entries.append(RotationEntry(ident, name, "", False, "removed from the config; the proxy still has it"))
        document = rotation_document(entries, now, self.config.litellm.stale_after, self.config.litellm.all_down)
        try:
            self._write_rotation_file(document, now)
            self._clear("rotation-write", f"rotation file {self.rotation_path} writable again")
        except OSError as exc:
            self._say(
                "rotation-write",
                f"cannot write the rotation file {self.rotation_path} ({exc.strerror}): the proxy falls back to "
                f"LiteLLM's own routing after {self.config.litellm.stale_after:g} s; fix litellm.out's directory",
                journal_kind=EntryKind.ROUTER_ERROR,
            )
        current = {e.id: e.in_rotation for e in entries}
        for entry in entries:
            before = self._rotation.get(entry.id)
            if before == entry.in_rotation or (before is None and entry.in_rotation):
                continue
            log = logger.bind(container=entry.container, deployment=entry.id)
            if entry.in_rotation:
                log.info("{} back in rotation", entry.id)
                self.journal.record(
                    EntryKind.ROTATION_IN, f"{entry.id} back in rotation", ts=now, container=entry.container
                )
            else:
                log.warning("{} out of rotation: {}", entry.id, entry.reason)
                self.journal.record(
                    EntryKind.ROTATION_OUT,
                    f"{entry.id} out of rotation: {entry.reason}",
                    ts=now,
                    container=entry.container,
                )
        self._rotation = current
        self._rotation_view = {
            e.id: {"container": e.container, "in": e.in_rotation, "reason": e.reason} for e in entries
        }

    def _write_rotation_file(self, document: dict[str, Any], now: float) -> None:
        """At once when it changes; otherwise often enough to stay fresh (it is the callback's heartbeat).

        Cycles can come many times a second on an event storm: an unchanged rotation is
        rewritten only every stale_after / 5.
        """
        content = json.dumps({k: v for k, v in document.items() if k != "written_at"}, sort_keys=True)
        last = self._rotation_written
        if last is not None and last[0] == content and now - last[1] < self.config.litellm.stale_after / 5:
            return
        write_atomic(self.rotation_path, json.dumps(document, indent=1), durable=False)
        self._rotation_written = (content, now)

    # -- config and proxy --------------------------------------------------------

    def load_template(self) -> RouterTemplate | None:
        """Re-read when the file changes; a bad template is said once, the last good one kept."""
        path = Path(self.config.litellm.template)
        try:
            stat = path.stat()
            key = (stat.st_mtime_ns, stat.st_size)
            if key == self._template_key:
                return self._template
            self._template_key = key
            self._template = parse_template(path.read_text(encoding="utf-8"), str(path))
            self._clear("template", f"litellm template {path} is valid again")
        except TemplateError as exc:
            self._say(
                "template",
                f"{exc} (config not re-rendered; the rotation still works)",
                journal_kind=EntryKind.ROUTER_ERROR,
            )
        except (OSError, UnicodeDecodeError) as exc:
            self._template_key = None
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
            self._say(
                "template",
                f"cannot read litellm template {path} ({why}); set litellm.template (config not re-rendered)",
                journal_kind=EntryKind.ROUTER_ERROR,
            )
        return self._template

    def _confirmed_set(self) -> list[list[str]] | None:
        """The deployments the proxy was last confirmed to serve (journal meta, read once)."""
        if not self._confirmed_read:
            stored = self.journal.get_meta(META_PROXY_SET)
            self._confirmed = json.loads(stored) if stored else None
            self._confirmed_read = True
        return self._confirmed

    def _loaded_ids(self) -> set[str]:
        """What the proxy may have loaded: the last confirmed set, plus every config written since."""
        if self._loaded is None:
            confirmed = {str(entry[0]) for entry in self._confirmed_set() or []}
            self._loaded = confirmed | set(self._api_bases_on_disk())
        return self._loaded

    def _set_loaded(self, deployments: list[list[str]]) -> None:
        self.journal.set_meta(META_PROXY_SET, json.dumps(deployments))
        self._confirmed, self._confirmed_read = deployments, True
        self._loaded = {entry[0] for entry in deployments}

    def _api_bases_on_disk(self) -> dict[str, str]:
        try:
            return api_bases_in(self.out_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            return {}

    def _write_config(self, deployments: Sequence[RouterDeployment], plan: CapacityPlan, now: float) -> None:
        template = self.load_template()
        if template is None:
            return
        written = False
        key = (self._template_key, tuple(deployments), plan.global_max_parallel_requests, self._out_stat())
        if key != self._rendered_key:  # render and compare only when an input changed, not every cycle
            outcome = self._render(template, deployments, plan)
            if outcome is None:
                return
            written = outcome
            self._rendered_key = (*key[:3], self._out_stat())
        self._sync_proxy(deployment_set(deployments), written, now)

    def _out_stat(self) -> tuple[int, int] | None:
        """Someone editing or removing the rendered file makes it be rewritten."""
        try:
            stat = self.out_path.stat()
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size)

    def _render(
        self, template: RouterTemplate, deployments: Sequence[RouterDeployment], plan: CapacityPlan
    ) -> bool | None:
        """Write the config if its text changed; None when it cannot be written (said once)."""
        missing = unreachable(deployments, plan)
        if missing:
            self._say(
                "unreachable",
                f"no URL for {', '.join(missing)}: not in the LiteLLM config; publish its port or set the label "
                f"{self.config.label_prefix}.api-base",
                level="WARNING",
            )
        else:
            self._clear("unreachable")
        try:
            written = write_router_config(
                self.out_path, Path(self.config.litellm.template), template, deployments, plan
            )
        except OSError as exc:
            self._say(
                "config-write",
                f"cannot write the LiteLLM config {self.out_path} ({exc.strerror}); fix litellm.out",
                journal_kind=EntryKind.ROUTER_ERROR,
            )
            return None
        self._clear("config-write")
        if written:
            self._loaded_ids().update(d.id for d in deployments)  # an operator may restart the proxy any time
            logger.info("LiteLLM config {} rewritten ({} deployment(s))", self.out_path, len(deployments))
        return written

    def _sync_proxy(self, wanted: list[list[str]], written: bool, now: float) -> None:
        """Restart the proxy only when its set of deployments really changes (a restart is an outage)."""
        if self._restart is not None:
            return
        stored = self._confirmed_set()
        if stored is not None and stored == wanted:
            self._clear("proxy-restart-needed")
            return
        if stored is None and not written and not self._restart_owed:
            # First run with this state, file as it was: assume the proxy already serves it.
            self._set_loaded(wanted)
            return
        self._restart_owed = True
        if now < self._restart_retry_at:
            return  # a failed restart is retried with backoff: each attempt is an outage
        settings = self.config.litellm
        if not settings.proxy_container and not settings.restart_command:
            self._say(
                "proxy-restart-needed",
                f"the fleet's deployments changed: restart the LiteLLM proxy to load {self.out_path} "
                "(or set litellm.proxy_container / litellm.restart_command)",
                level="WARNING",
                journal_kind=EntryKind.ROUTER_ERROR,
            )
            return
        logger.warning("the fleet's deployments changed: restarting the LiteLLM proxy to load {}", self.out_path)
        self._restart = ProxyRestart(wanted, now, self.executor.submit(self._restart_proxy))

    def _settle_restart(self, now: float) -> None:
        """A finished restart changes what the proxy has loaded: settled before the rotation is written."""
        if self._restart is not None and self._restart.future.done():
            self._finish_restart(self._restart, now)
            self._restart = None

    def _restart_proxy(self) -> str:
        """On a worker thread: restart, then wait until the proxy answers (it re-reads its config)."""
        settings = self.config.litellm
        started = time.monotonic()
        try:
            if settings.proxy_container:
                container_id = self.client.api.inspect_container(settings.proxy_container)["Id"]
                at = self.clock()
                self.own.open(container_id, at)
                try:
                    self.client.api.restart(settings.proxy_container, timeout=10)
                finally:
                    self.own.close(container_id, at, self.clock())
            elif settings.restart_command:
                done = subprocess.run(
                    list(settings.restart_command), capture_output=True, text=True, timeout=settings.restart_timeout
                )
                if done.returncode != 0:
                    tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
                    return f"failed: {' '.join(settings.restart_command)} exited {done.returncode} {tail[0]}".strip()
        except Exception as exc:  # engine, OS or subprocess errors alike: reported, retried next cycle
            return f"failed: {type(exc).__name__}: {exc}"
        if settings.proxy_url is None:
            return "ok"
        deadline = started + settings.restart_timeout
        url = settings.proxy_url + PROXY_HEALTH_PATH
        while time.monotonic() < deadline:
            try:
                if httpx.get(url, timeout=2, trust_env=False).status_code == 200:
                    return f"ok (answering after {time.monotonic() - started:.1f} s)"
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        return f"failed: not answering at {url} {settings.restart_timeout:g} s after the restart"

    def _finish_restart(self, job: ProxyRestart, now: float) -> None:
        try:
            outcome = job.future.result()
        except Exception as exc:  # the worker's own bug: reported, retried next cycle
            outcome = f"failed: {type(exc).__name__}: {exc}"
        if outcome.startswith("ok"):
            self._restart_owed = False
            self._restart_backoff = RESTART_BACKOFF_INITIAL
            self._set_loaded(job.deployments)
            self._clear("proxy-restart")
            logger.info("LiteLLM proxy restarted with {}: {}", self.out_path, outcome)
            self.journal.record(
                EntryKind.PROXY_RESTART, f"LiteLLM proxy restarted: {outcome}", ts=now, duration=now - job.started_at
            )
            return
        where = self.config.litellm.proxy_container or " ".join(self.config.litellm.restart_command or ())
        self._restart_retry_at = now + self._restart_backoff
        self._say(
            "proxy-restart",
            f"LiteLLM proxy restart to load {self.out_path} {outcome}: it may reject the config (see its log: "
            f"{where}); the previous config is {self.out_path}.previous; retrying in {self._restart_backoff:.0f} s",
            journal_kind=EntryKind.PROXY_RESTART_FAILED,
        )
        self._restart_backoff = min(self._restart_backoff * 2, RESTART_BACKOFF_MAX)

    def _watch_proxy(self, history: ProbeHistory | None, now: float) -> None:
        if history is None or not history.results:
            return
        latest = history.results[-1]
        up = latest.status == ProbeStatus.OK
        if up == self._proxy_up:
            return
        first = self._proxy_up is None
        self._proxy_up = up
        url = self.config.litellm.proxy_url
        if up:
            if not first:
                logger.info("LiteLLM proxy at {} answers again", url)
                self.journal.record(EntryKind.PROXY_UP, f"LiteLLM proxy at {url} answers again", ts=now)
            return
        message = (
            f"LiteLLM proxy at {url} is down ({latest.detail}): clients get no answers; the rotation file is "
            "still kept and containers are still healed"
        )
        logger.error(message)
        self.journal.record(EntryKind.PROXY_DOWN, message, ts=now)

    def view(self) -> dict[str, Any]:
        """For `gpu-watchdog status`."""
        plan = self.plan
        return {
            "plan": plan.text if plan else None,
            "verdict": plan.verdict.value if plan else None,
            "memory": plan.memory.text if plan else None,
            "litellm": None
            if not self.config.litellm.enabled
            else {
                "config": str(self.out_path),
                "rotation": self._rotation_view,
                "proxy_up": self._proxy_up,
                "restarting_proxy": self._restart is not None,
                "problems": sorted(self._said.values()),
            },
        }
