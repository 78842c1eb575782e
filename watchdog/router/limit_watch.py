"""The memory limits as a subsystem of the loop: when to run a pass, on its own thread.

A pass (MemoryLimitSync) inspects the containers whose limits differ from the plan and may read
`docker stats`, which takes about a second per container, so it runs off the loop's thread,
one at a time, and only when the fleet's limits or states change (an `update` event refreshes
the snapshot, so drift shows at once), and otherwise once a minute, not every cycle.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

from watchdog.config import Config
from watchdog.router.memory_limits import MemoryLimitSync
from watchdog.subsystem import CycleView, Services

LIMITS_RESYNC = 60.0  # s between memory-limit passes when nothing about the limits changed


class MemoryLimitWatch:
    """Runs a memory-limit pass when the limits may have changed; never blocks or raises into the loop."""

    def __init__(self, config: Config, services: Services) -> None:
        self.config = config
        self.sync = MemoryLimitSync(
            services.client, services.journal, lambda: self.config.capacity, dry_run=lambda: self.config.dry_run
        )
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="limits")
        self._job: Future[object] | None = None
        self._signature: object = None
        self._synced_at = 0.0

    def apply_config(self, config: Config) -> None:
        self.config = config

    def cycle(self, view: CycleView, now: float) -> None:
        if self.config.capacity.memory_limits == "off":
            return
        if self._job is not None and not self._job.done():
            return
        signature = (
            self.config.capacity,
            tuple((c.id, c.state, c.memory_limit, c.memory_swap) for c in view.containers if c.managed),
        )
        if signature == self._signature and now - self._synced_at < LIMITS_RESYNC:
            return
        self._signature, self._synced_at = signature, now
        self._job = self._executor.submit(self.sync.sync, list(view.containers), now)

    def stop(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
