"""Verified return, carried out: probations started, canaries sent, outcomes journaled, a failing GPU marked again.

I/O. What to decide is `probation`'s (pure). A probation starts when a mark the last cycle saw
is gone (released by `gpu-watchdog gpu release` through the journal, or by a verified reset).
Each container on that GPU that is running and answers /health gets a 1-token completion
(the serving canary's request, `serving.canary.ask_one_token`) every `canary_interval` until
it answers; each is sent on its own short-lived thread, so a slow server never holds up the
loop or the restart pool. The probations in force and each GPU's strikes are kept in the
journal (meta `gpu-probation`), so a watchdog restart goes on where it stopped. Dry-run:
probations are watched, journaled and shown, but no container is held out of rotation and a
failing GPU is not marked again (the entry says what would have been done).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from loguru import logger

from watchdog.config import Config
from watchdog.entries import EntryKind
from watchdog.gpu.assignment import GpuAssignment, containers_on, gpu_key
from watchdog.gpu.health_score import classed_xids
from watchdog.gpu.mark_book import MarkBook
from watchdog.gpu.marks import GpuMark, mark_or_alert
from watchdog.gpu.probation import (
    CanaryState,
    Probation,
    ProbationJudgement,
    Step,
    Strikes,
    begin,
    book_document,
    failed_mark,
    hold_reason,
    judge,
    read_book,
    released,
    status_rows,
    trouble,
)
from watchdog.model import ContainerSnapshot, ContainerState, ProbeStatus, XidEvent
from watchdog.serving.canary import ask_one_token
from watchdog.serving.watch import metrics_url

if TYPE_CHECKING:
    from watchdog.containers.diagnose import ProbeHistory
    from watchdog.gpu.readings import GpuSnapshot
    from watchdog.gpu.xid import XidTable
    from watchdog.journal import Journal

META_KEY = "gpu-probation"
PROBATION_FAULT = "gpu-probation"  # the `fault` of its alerts and entries


class ReturnWatch:
    """GPU UUID -> its probation; container ID -> what its canaries showed."""

    def __init__(
        self,
        config: Config,
        journal: Journal,
        book: MarkBook,
        *,
        clock: Callable[[], float] = time.time,
        wake: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self._clock = clock
        self._gpu_count = 1
        self.journal = journal
        self.book = book
        self._wake = wake
        self._seen: dict[str, GpuMark] = dict(book.marks)  # the marks at the end of the last cycle
        self.active: dict[str, Probation] = {}
        self.strikes: dict[str, Strikes] = {}
        self._judged: dict[str, ProbationJudgement] = {}
        self._lock = threading.Lock()  # canary threads write these three, the loop reads them
        self._canaries: dict[str, CanaryState] = {}
        self._answers: dict[str, float] = {}
        self._in_flight: set[str] = set()
        self._due: dict[str, float] = {}  # monotonic
        self._saved = ""
        self._load()

    def apply_config(self, config: Config) -> None:
        self.config = config

    # -- the journal -------------------------------------------------------------

    def _load(self) -> None:
        raw = self.journal.get_meta(META_KEY)
        active, strikes, seen = read_book(raw)
        self.active, self.strikes = active, strikes
        if seen is not None:  # the marks the last cycle saw: a release made while the daemon was down counts
            self._seen = seen
        self._saved = raw or ""
        if self.active:
            logger.info("GPU probation goes on for {}", ", ".join(p.name for p in self.active.values()))

    def _save(self) -> None:
        document = book_document(self.active, self.strikes, self._seen)
        if document != self._saved:
            self.journal.set_meta(META_KEY, document)
            self._saved = document

    # -- the cycle -----------------------------------------------------------

    def cycle(
        self,
        containers: Sequence[ContainerSnapshot],
        histories: Mapping[str, ProbeHistory],
        *,
        assignments: Mapping[str, GpuAssignment],
        gpus: Sequence[GpuSnapshot],
        xids: Sequence[XidEvent],
        table: XidTable,
        now: float,
    ) -> dict[str, str]:
        """Container ID -> why it is out of rotation (its GPU is on probation); empty in dry-run.

        `gpus`: the latest reading's; `xids`: the recent Xids, classed by `table`.
        """
        self._gpu_count = len(gpus)
        by_key = {gpu_key(gpu): gpu for gpu in gpus}
        settings = self.config.gpu.probation
        marks = self.book.marks
        if settings.enabled:
            for mark in released(self._seen, marks):
                self._begin(mark, assignments, now)
        for uuid in [u for u in self.active if u in marks or not settings.enabled]:
            why = f"marked again: {marks[uuid].reason}" if uuid in marks else "probation turned off (gpu.probation)"
            self._end(uuid, Step.FAILED if uuid in marks else Step.PROVEN, why, now, mark=False)
        by_id = {c.id: c for c in containers}
        held: dict[str, str] = {}
        for uuid, probation in list(self.active.items()):
            if uuid not in by_key:  # no reading of it yet (a watchdog start): hold what was on it, judge nothing
                why = f"probation: proving {probation.name} after {probation.origin} (waiting for an NVML reading)"
                held.update({cid: why for cid in probation.containers if cid in by_id})
                continue
            on_gpu = [by_id[cid] for cid in containers_on(uuid, assignments) if cid in by_id]
            self._send_due(on_gpu, histories)
            with self._lock:
                canaries = {c.id: self._canaries.get(c.id, CanaryState()) for c in on_gpu}
                answers = {c.id: self._answers[c.id] for c in on_gpu if c.id in self._answers}
            problems = trouble(
                probation,
                containers=on_gpu,
                probes={cid: h.results for cid, h in histories.items()},
                canaries=canaries,
                xids=classed_xids(by_key[uuid], xids, table),
                config=settings,
            )
            judgement = judge(
                probation, containers=[c.id for c in on_gpu], answered=answers, problems=problems, now=now
            )
            if judgement.step == Step.WAITING:
                self.active[uuid] = judgement.probation
                self._judged[uuid] = judgement
                held.update({c.id: hold_reason(probation, judgement) for c in on_gpu})
            else:
                self._end(uuid, judgement.step, judgement.reason, now, mark=True)
        self._seen = dict(self.book.marks)
        self._save()
        return {} if self.config.dry_run else held

    def _begin(self, mark: GpuMark, assignments: Mapping[str, GpuAssignment], now: float) -> None:
        probation = begin(mark, self.strikes.get(mark.uuid), now, self.config.gpu.probation)
        self.active[mark.uuid] = probation
        self._forget(containers_on(mark.uuid, assignments))
        text = (
            f"{probation.name} on probation after {probation.origin}: out of rotation until each of its containers "
            f"answers a 1-token completion and stays clean for {probation.window:g} s"
            + (f" ({probation.strikes} earlier failure(s))" if probation.strikes else "")
            + (" (dry-run: left in rotation)" if self.config.dry_run else "")
        )
        logger.bind(gpu=mark.uuid).warning(text)
        self.journal.record(
            EntryKind.GPU_PROBATION,
            text,
            ts=now,
            gpus=(mark.uuid,),
            detail={"window": probation.window, "strikes": probation.strikes, "was": mark.condition.value},
        )

    def _end(self, uuid: str, step: Step, why: str, now: float, *, mark: bool) -> None:
        probation = self.active.pop(uuid)
        self._judged.pop(uuid, None)
        self._forget(probation.answered)
        log = logger.bind(gpu=uuid)
        if step == Step.PROVEN:
            text = f"{probation.name} proven after {probation.origin}: {why}; back in rotation"
            log.info(text)
            self.journal.record(EntryKind.GPU_PROVEN, text, ts=now, gpus=(uuid,), detail={"window": probation.window})
            return
        settings = self.config.gpu.probation
        again, strikes = failed_mark(probation, why, now, settings)
        self.strikes[uuid] = strikes
        text = f"{probation.name} failed its probation after {probation.origin}: {why}"
        if mark and self.config.dry_run:
            text += f" (dry-run: would mark it {again.condition.value} again)"
        log.warning(text)
        self.journal.record(
            EntryKind.GPU_PROBATION_FAILED,
            text,
            ts=now,
            gpus=(uuid,),
            fault=PROBATION_FAULT,
            detail={"strikes": strikes.count, "condition": again.condition.value},
        )
        if mark and not self.config.dry_run:
            response = mark_or_alert(
                uuid,
                probation.index,
                again.condition,
                again.reason,
                self.book.marks,
                gpu_count=self._gpu_count,
                fraction=self.config.gpu.max_quarantined_fraction,
                now=now,
            )
            self.book.apply(response, uuid, now, fault=PROBATION_FAULT, topic=PROBATION_FAULT)

    # -- the canaries ----------------------------------------------------------

    def _forget(self, container_ids: Iterable[str]) -> None:
        with self._lock:
            for cid in container_ids:
                self._canaries.pop(cid, None)
                self._answers.pop(cid, None)
                self._due.pop(cid, None)

    def _send_due(self, on_gpu: Sequence[ContainerSnapshot], histories: Mapping[str, ProbeHistory]) -> None:
        """A 1-token completion to each running container that answers /health, has not answered one yet, is due."""
        settings = self.config.gpu.probation
        clock = time.monotonic()
        for container in on_gpu:
            history = histories.get(container.id)
            url = metrics_url(container, "/v1/completions")
            if (
                url is None
                or container.state != ContainerState.RUNNING
                or history is None
                or not history.results
                or history.results[-1].status != ProbeStatus.OK
            ):
                continue
            with self._lock:
                if container.id in self._answers or container.id in self._in_flight:
                    continue
                if clock < self._due.get(container.id, 0.0):
                    continue
                self._due[container.id] = clock + settings.canary_interval
                self._in_flight.add(container.id)
            threading.Thread(
                target=self._ask,
                args=(container.id, url, settings.canary_timeout),
                name="probation-canary",
                daemon=True,
            ).start()

    def _ask(self, container_id: str, url: str, timeout: float) -> None:
        answer = asyncio.run(ask_one_token(url, timeout))
        # A 4xx: this server cannot be asked a completion (said by the serving canary too); its
        # /health answered, so it is not held for that.
        answered = answer.ok or (answer.status is not None and 400 <= answer.status < 500)
        with self._lock:
            self._in_flight.discard(container_id)
            state = self._canaries.get(container_id, CanaryState())
            if answered:
                self._answers[container_id] = self._clock()
                self._canaries[container_id] = replace(state, answered=True, failures=0, detail=answer.detail)
            else:
                self._canaries[container_id] = replace(state, failures=state.failures + 1, detail=answer.detail)
        if self._wake is not None:
            self._wake()

    # -- status ----------------------------------------------------------------

    def view(self) -> list[dict[str, Any]]:
        """The probations in force, for status."""
        reasons = {uuid: judged.reason for uuid, judged in self._judged.items()}
        return status_rows(self.active, reasons, dry_run=self.config.dry_run)
