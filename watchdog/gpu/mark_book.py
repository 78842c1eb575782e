"""The GPU marks in force, kept with the journal, and the alerts that go with them, said once.

What to mark is `marks`' (pure); this carries a response out. The journal is the
record: a mark is written there as it is made, and `reload` picks up releases an
operator made from another process (`gpu-watchdog gpu release`). An alert is said
once per GPU and topic until that GPU is released, so a storm of the same Xid, or
a lost GPU seen on every reading, alerts an operator once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from loguru import logger

from watchdog.entries import EntryKind, gpu_mark
from watchdog.gpu.marks import GpuMark, XidResponse

if TYPE_CHECKING:
    from watchdog.journal import Journal


class MarkBook:
    """GPU key -> its mark, and which (GPU, topic) alerts were already said."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.marks: dict[str, GpuMark] = journal.gpu_marks()
        self._alerted: set[tuple[str, str]] = set()

    def reload(self) -> None:
        """`gpu-watchdog gpu release` writes the journal from another process."""
        fresh = self.journal.gpu_marks()
        for uuid in set(self.marks) - set(fresh):
            logger.bind(gpu=uuid).info("GPU {} released", uuid)
            self._alerted = {said for said in self._alerted if said[0] != uuid}
        self.marks = fresh

    def apply(self, response: XidResponse, key: str, now: float, *, fault: str, topic: str) -> bool:
        """Carry out marks and alerts; an alert is said once per GPU and action (`topic`) until released.

        True: the response asks for the opt-in GPU reset and its mark was made, so the caller starts it.
        """
        if response.mark is not None:
            self.put(response.mark)
            self.journal.record(
                gpu_mark(response.mark.condition.value), response.mark.reason, ts=now, gpus=(key,), fault=fault
            )
        said = (key, topic)
        if response.alert is not None and (response.mark is not None or said not in self._alerted):
            self._alerted.add(said)
            logger.bind(gpu=key).critical("ALERT: {}", response.alert)
            # `marked`: the alert that goes with a mark (notifications say the mark once, not twice)
            marked = {"marked": response.mark.condition.value} if response.mark is not None else None
            self.journal.record(EntryKind.ALERT, response.alert, ts=now, gpus=(key,), fault=fault, detail=marked)
        return response.reset and response.mark is not None

    def put(self, mark: GpuMark) -> None:
        """Mark a GPU, in memory and in the journal."""
        self.marks[mark.uuid] = mark
        self.journal.mark_gpu(mark)

    def release(self, uuid: str) -> None:
        """The watchdog's own release (a verified reset), in the journal and in memory."""
        self.journal.release_gpu(uuid)
        self.marks.pop(uuid, None)
