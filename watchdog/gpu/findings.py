"""What the GPU side found in one cycle: the input the diagnosis, the plan and the router take from it. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from watchdog.gpu.health_score import HealthScore
from watchdog.gpu.marks import GpuMark
from watchdog.gpu.vram import VramView


@dataclass
class GpuFindings:
    """The GPU side's contribution to one cycle (built by the GPU supervisor, read by everyone after it)."""

    vram: dict[str, VramView] | None = None  # None: no verdicts this cycle (off, hung, no reading)
    xids: dict[str, tuple[float, str]] = field(default_factory=dict)  # container ID -> (at, why): restart it
    held: dict[str, str] = field(default_factory=dict)  # container ID -> why: its GPU is marked, do not restart
    probation: dict[str, str] = field(default_factory=dict)  # container ID -> why: out of rotation, restartable
    busy: set[str] = field(default_factory=set)  # container IDs a GPU reset has stopped
    marks: Mapping[str, GpuMark] = field(default_factory=dict)  # the GPU marks in force this cycle
    view: dict[str, Any] = field(default_factory=dict)  # for status
    scores: Mapping[str, HealthScore] = field(default_factory=dict)  # GPU key -> score; empty: not judged now
    assigned: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # container ID -> its GPU keys
