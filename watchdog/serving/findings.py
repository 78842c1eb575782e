"""What the serving side found in one cycle, for the diagnosis, the rotation, status and metrics.

Pure data, like gpu/findings.py: the loop passes it to the diagnosis (wedged verdicts) and to
the later stages through the CycleView (suspects, for the rotation writer).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from watchdog.serving.progress import Wedged


@dataclass(frozen=True)
class ServingFindings:
    """Container ID -> verdict; `unmonitored`: why a server's progress is not judged."""

    wedged: Mapping[str, Wedged] = field(default_factory=dict)
    suspects: Mapping[str, str] = field(default_factory=dict)  # container ID -> why (out of rotation now)
    unmonitored: Mapping[str, str] = field(default_factory=dict)
    work: Mapping[str, tuple[float, int]] = field(default_factory=dict)  # ID -> (sample time, requests running+waiting)
