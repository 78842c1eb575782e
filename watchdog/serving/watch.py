"""The serving side as a subsystem of the loop: progress probes, canaries, wedged verdicts, suspects.

Runs before the diagnosis, like the GPU supervisor: its verdicts go in as data. It keeps the
progress probe's and the canary's targets in step with the fleet, and says once per container
life why a server's progress is unmonitored or why it gets no canary. Never raises.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from loguru import logger

from watchdog.config import Config
from watchdog.containers.http_probe import Prober
from watchdog.model import ContainerSnapshot, ContainerState
from watchdog.serving.canary import CanaryProbe, CanaryTarget
from watchdog.serving.canary_rules import proved_alive
from watchdog.serving.findings import ServingFindings
from watchdog.serving.probe import ProgressProbe, ProgressTarget
from watchdog.serving.progress import ServerKind, frozen_since
from watchdog.serving.suspect import suspect_reason
from watchdog.subsystem import CycleView, Services


def metrics_url(container: ContainerSnapshot, path: str = "/metrics") -> str | None:
    """The server's /metrics (or `path`): its health endpoint's origin (llama.cpp and vLLM serve all on one port)."""
    if not container.endpoint:
        return None
    scheme, _, rest = container.endpoint.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}{path}"


class ServingWatch:
    """One per daemon; `cycle(view, now)` before the diagnosis."""

    def __init__(
        self,
        config: Config,
        services: Services,
        prober: Prober,
        router_suspects: Callable[[CycleView, float, Mapping[str, float]], Mapping[str, str]] | None = None,
    ) -> None:
        self.config = config
        self.router_suspects = router_suspects  # the proxy's reports (router/feedback_watch.py)
        self.prober = prober
        prober.suspect_after = config.serving.suspect_after
        prober.on_overdue = lambda _target: services.wake()  # an overdue probe: judge the suspect now
        self.probe = ProgressProbe(
            prober,
            config.serving.progress_interval,
            config.probe_timeout,
            services.clock,
            on_wedged=services.wake,
            busy_interval=config.serving.progress_busy_interval,
        )
        self.canary = CanaryProbe(
            prober,
            config.serving.canary_timeout,
            services.clock,
            alive=lambda cid, interval, now: proved_alive(self.probe.track(cid), interval, now),
            on_wedged=services.wake,
        )
        self._said: dict[str, str] = {}
        self.errors = 0

    def apply_config(self, config: Config) -> None:
        self.config = config
        self.probe.interval = config.serving.progress_interval
        self.probe.busy_interval = min(config.serving.progress_busy_interval, config.serving.progress_interval)
        self.probe.timeout = config.probe_timeout
        self.canary.timeout = config.serving.canary_timeout
        self.prober.suspect_after = config.serving.suspect_after

    def _judged(self, view: CycleView) -> list[ContainerSnapshot]:
        return [
            c
            for c in view.containers
            if c.managed and c.spec is not None and c.endpoint and c.state == ContainerState.RUNNING and not c.is_self
        ]

    def cycle(self, view: CycleView, now: float) -> ServingFindings:
        try:
            return self._cycle(view, now)
        except Exception as exc:  # logged and counted; healing goes on without serving verdicts
            self.errors += 1
            logger.exception("serving watch failed ({} so far): {}", self.errors, exc)
            return ServingFindings()

    def _cycle(self, view: CycleView, now: float) -> ServingFindings:
        judged = self._judged(view)
        settings = self.config.serving
        suspects: dict[str, str] = {}
        for c in judged:
            history = view.histories.get(c.id)
            if history is None or history.first_ok_at is None:  # never served in this life: not a hang
                continue
            why = suspect_reason(
                history.results,
                history.in_flight_since,
                now,
                floor=settings.suspect_after,
                timeout=self.config.probe_timeout,
            )
            if why is not None:
                suspects[c.id] = why
        running = {c.id for c in judged}
        if self.router_suspects is not None:
            frozen = {c.id: t for c in judged if (t := frozen_since(self.probe.track(c.id))) is not None}
            for cid, why in self.router_suspects(view, now, frozen).items():
                if cid in running:
                    suspects.setdefault(cid, why)
        monitored = [c for c in judged if settings.progress and c.spec and c.spec.server != ServerKind.OPENAI.value]
        targets = []
        for c in monitored:
            url = metrics_url(c)
            if url is not None and c.spec is not None:
                kind = ServerKind(c.spec.server) if c.spec.server else None
                window = c.spec.stall_window or settings.stall_window
                targets.append(ProgressTarget(c.id, c.started_at, url, kind, window))
        self.probe.set_targets(targets)
        self.canary.set_targets(self._canary_targets(view, judged))
        unmonitored = self.probe.unmonitored()
        for cid, why in self.canary.unusable().items():
            unmonitored[cid] = f"{unmonitored[cid]}; {why}" if cid in unmonitored else why
        self._say_unmonitored(view, unmonitored)
        work = {
            c.id: (last.at, int(last.running + last.waiting))
            for c in monitored
            if (last := self.probe.track(c.id).last) is not None
        }
        return ServingFindings({**self.canary.verdicts(), **self.probe.verdicts(now)}, suspects, unmonitored, work)

    def _canary_targets(self, view: CycleView, judged: list[ContainerSnapshot]) -> list[CanaryTarget]:
        """Opted-in servers (label canary, or serving.canary_interval) that answered /health in this life."""
        targets = []
        for c in judged:
            history = view.histories.get(c.id)
            interval = c.spec.canary_interval if c.spec and c.spec.canary_interval is not None else None
            interval = self.config.serving.canary_interval if interval is None else interval
            url = metrics_url(c, "/v1/completions")
            if interval > 0 and url and history is not None and history.first_ok_at is not None:
                targets.append(CanaryTarget(c.id, c.started_at, url, interval))
        return targets

    def steer_probes(self, view: CycleView, restarting: set[str] | frozenset[str]) -> None:
        """After the plan: how often each endpoint is probed next.

        A suspect is probed every suspect_probe_interval with up to failure_threshold probes in
        flight: a hang reaches the threshold in about one probe timeout, an answer puts it back
        at once. With the router on, a backend out of rotation is probed every
        litellm.recovery_probe_interval: back in rotation the moment it answers.
        """
        suspects = set(view.serving.suspects) - set(restarting)
        self.prober.set_suspects(suspects, self.config.serving.suspect_probe_interval, self.config.failure_threshold)
        if self.config.litellm.enabled:
            ready = view.diagnosis.ready
            out = {c.id for c in view.containers if c.managed and c.spec and c.spec.model and c.id not in ready}
            self.prober.set_fast(out, self.config.litellm.recovery_probe_interval)

    def _say_unmonitored(self, view: CycleView, unmonitored: dict[str, str]) -> None:
        names = {c.id: c.name for c in view.containers}
        for cid, why in unmonitored.items():
            if self._said.get(cid) != why:
                logger.bind(container=names.get(cid, cid)).info("{}: {}", names.get(cid, cid), why)
        self._said = {cid: why for cid, why in unmonitored.items()}

    def stop(self) -> None:
        self.canary.close()
        self.probe.close()
