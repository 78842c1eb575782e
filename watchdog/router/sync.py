"""Keeps the capacity plan, the LiteLLM config, the rotation file and the proxy in step.

The router as a subsystem of the loop, called once per cycle after the plan. It composes one
part per job and keeps their order: the capacity watch (the plan, said when it changes), the
proxy sync (a finished restart settled first: it changes what the proxy has loaded), the
rotation writer, the config writer, then the proxy sync again (a restart when the config's set
of deployments changed) and its up/down watch. It never raises: a bad template, an unwritable
file or a proxy that will not come back is logged, journaled once (`Problems`) and retried, and
container healing goes on.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from loguru import logger

from watchdog.cluster.publisher import ClusterPublisher
from watchdog.config import Config
from watchdog.containers.host import mem_total
from watchdog.model import NoteKind
from watchdog.router.capacity import CapacityPlan, plan_capacity, planned_members
from watchdog.router.capacity_watch import CapacityWatch
from watchdog.router.config_writer import ConfigWriter
from watchdog.router.drain_watch import DrainWatch
from watchdog.router.feedback_watch import RouterFeedback
from watchdog.router.litellm_config import RouterTemplate, deployment_set
from watchdog.router.problems import Problems
from watchdog.router.proxy_sync import PROXY_HEALTH_PATH, PROXY_TARGET, ProxySync
from watchdog.router.rotation_writer import RotationWriter
from watchdog.router.wanted_config import given_up_names, wanted_config
from watchdog.subsystem import CycleView, Services

__all__ = ["PROXY_HEALTH_PATH", "PROXY_TARGET", "RouterSync"]  # the loop probes the proxy by these


class RouterSync:
    """One per daemon. `cycle()` after each diagnosis; `view()` for status."""

    def __init__(self, config: Config, services: Services, host_total: Callable[[], int | None] = mem_total) -> None:
        self.config = config
        self.host_total = host_total()
        self.problems = Problems(services.journal, services.clock)
        self.capacity = CapacityWatch(services.journal)
        self.config_writer = ConfigWriter(config, self.problems)
        self.feedback = RouterFeedback(config, services, lambda: self.rotation.path.parent)
        reader = self.feedback.reader
        self.drains = DrainWatch(config, services, reader.in_flight, lambda ids: setattr(reader, "watch", ids))
        self.rotation = RotationWriter(
            config, services.journal, self.problems, lambda: self.feedback.cleared, draining=services.drains.out
        )
        self.proxy = ProxySync(config, services, self.problems)
        self.cluster = ClusterPublisher(config, services)
        self.fallbacks: dict[str, list[str]] = {}  # the fallbacks rendered last cycle, for status
        self.errors = 0

    def apply_config(self, config: Config) -> None:
        self.config = config
        for part in (self.config_writer, self.rotation, self.proxy, self.feedback, self.cluster, self.drains):
            part.apply_config(config)

    def stop(self) -> None:
        """The threads: the proxy's reports reader and the cluster publisher."""
        self.feedback.stop()
        self.cluster.stop()

    @property
    def plan(self) -> CapacityPlan | None:
        """The capacity plan of the last cycle (stopped-on-purpose containers counted out)."""
        return self.capacity.plan

    @property
    def out_path(self) -> Path:
        return self.config_writer.out_path

    @property
    def rotation_path(self) -> Path:
        return self.rotation.path

    def load_template(self) -> RouterTemplate | None:
        return self.config_writer.load_template()

    def cycle(self, view: CycleView, now: float) -> None:
        """Never raises: the router must not stop the healing."""
        containers, marks = view.containers, view.gpu.marks
        try:
            self.drains.cycle(view, now)  # first: the rotation below takes out what drains
            stopped = {n.container_id for n in view.diagnosis.notes if n.kind == NoteKind.DELIBERATE_STOP}
            given_up = given_up_names(view.decisions)
            policy = self.config.capacity
            members = planned_members(containers, marks, given_up, stopped_on_purpose=stopped)
            capacity_plan = plan_capacity(members, policy, self.host_total)
            self.capacity.track(capacity_plan, now)
            if not self.config.litellm.enabled:
                return
            known = self.config_writer.known_api_bases()
            same_plan = None if stopped else capacity_plan  # stopped on purpose: still in the config's plan
            wanted = wanted_config(
                containers,
                marks,
                given_up,
                policy=policy,
                host_total=self.host_total,
                known=known,
                plan=same_plan,
                fallbacks=self.config.litellm.fallbacks,
                label_prefix=self.config.label_prefix,
            )
            self.config_writer.remember(wanted.deployments)
            self.fallbacks = wanted.fallbacks.as_dict()
            self.proxy.settle(now)
            self.rotation.write(wanted.deployments, view, self.proxy.loaded_ids(), now, fallbacks=wanted.fallbacks)
            written = self.config_writer.write(wanted)
            if written is not None:
                if written:
                    self.proxy.config_written({d.id for d in wanted.deployments})
                self.proxy.sync(deployment_set(wanted.deployments), written, now)
            self.proxy.watch(view.histories.get(PROXY_TARGET), now)
            self.cluster.offer(self.rotation.view, wanted.deployments, view.gpu.view.get("gpus") or [])
        except Exception as exc:  # logged and counted; the next cycle tries again
            self.errors += 1
            logger.exception("router sync failed ({} so far): {}", self.errors, exc)

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
                "rotation": self.rotation.view,
                "fallbacks": self.fallbacks,
                "outliers": self.feedback.view,
                "router_reports": self.feedback.reports_total,
                "proxy_up": self.proxy.up,
                "restarting_proxy": self.proxy.restart is not None,
                "problems": self.problems.messages(),
            },
            "cluster": self.cluster.view(),
            "drains": self.drains.board.view(),
        }
