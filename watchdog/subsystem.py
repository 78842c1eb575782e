"""The one shape of every subsystem the loop drives (GPU supervision, router sync, memory limits, ...).

Each is built once with the loop's `Services`, takes new settings through `apply_config(config)`
(at start and on SIGHUP: config reaches every subsystem one way), and does its part of a cycle
in `cycle(view, now)` with a frozen `CycleView` of what this cycle saw and decided. A subsystem
never raises out of `cycle`: a failure is its own to log once and retry next cycle.

The view fills up as the cycle goes: the GPU side runs before the diagnosis (its findings feed
it) and sees the containers and probe histories; the router and the memory limits run after the
plan and see the diagnosis, the decisions and the GPU findings too. No I/O here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from watchdog.config import Config
from watchdog.containers.diagnose import ProbeHistory
from watchdog.containers.own_actions import OwnActionWindows
from watchdog.gpu.findings import GpuFindings
from watchdog.model import ContainerSnapshot, Decision, Diagnosis
from watchdog.router.drain import DrainBoard
from watchdog.serving.findings import ServingFindings

if TYPE_CHECKING:  # types only: importing this module opens no client or database
    import docker

    from watchdog.journal import Journal


@dataclass(frozen=True)
class Services:
    """What the loop shares with its subsystems, built once: passed in, never looked up."""

    journal: Journal
    client: docker.DockerClient
    executor: Executor  # the loop's worker pool for actions that take seconds (restarts, resets)
    own: OwnActionWindows  # the watchdog's own actions in time, so their engine events are not an operator's
    clock: Callable[[], float]
    wake: Callable[[], None]  # wakes the loop early (an action finished, a reading changed)
    drains: DrainBoard = field(default_factory=DrainBoard)  # the drains in force (router/drain.py): shared by all


@dataclass(frozen=True)
class CycleView:
    """One cycle's picture, frozen: what it observed, and (for later stages) what it diagnosed and decided."""

    containers: tuple[ContainerSnapshot, ...]
    histories: Mapping[str, ProbeHistory] = field(default_factory=dict)
    diagnosis: Diagnosis = field(default_factory=Diagnosis)
    decisions: tuple[Decision, ...] = ()
    gpu: GpuFindings = field(default_factory=GpuFindings)
    serving: ServingFindings = field(default_factory=ServingFindings)


class Subsystem(Protocol):
    """What the loop calls on each subsystem."""

    def apply_config(self, config: Config) -> None:
        """New settings from the start or a SIGHUP; they take effect in the next cycle."""

    def cycle(self, view: CycleView, now: float) -> object:
        """This subsystem's part of one cycle; never raises."""
