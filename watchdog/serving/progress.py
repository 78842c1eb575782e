"""Progress: is a server with work to do generating tokens?

Pure: no I/O, no clock (every sample carries its time). A hung engine can keep answering
/health while its inference loop no longer runs (vLLM #39863, llama.cpp #13281): only the
server's own counters show it. The rule: work running or waiting, and the token counters
(generated + prompt tokens) frozen for the stall window, is *wedged*. A server with nothing to
do is never wedged; a busy one whose counters move is busy, not wedged; a counter that goes
down is a restarted server (a fresh track); no counters at all is unmonitored, never a fault.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class ServerKind(StrEnum):
    """What serves behind an endpoint; the label gpu-watchdog.server, else detected from /metrics."""

    LLAMA_CPP = "llama.cpp"
    VLLM = "vllm"
    OPENAI = "openai"  # OpenAI-compatible with no counters the watchdog knows: progress unmonitored


@dataclass(frozen=True)
class CounterSample:
    """One reading of a server's counters."""

    at: float
    kind: ServerKind
    tokens: float  # tokens processed so far (generated + prompt): a counter
    running: float  # requests being generated now
    waiting: float  # requests queued (llama.cpp: deferred)

    @property
    def busy(self) -> bool:
        return self.running > 0 or self.waiting > 0


@dataclass(frozen=True)
class ProgressTrack:
    """What the samples of one container life showed so far."""

    last: CounterSample | None = None
    moved_at: float | None = None  # the sample at which the tokens last grew (or the first sample)
    busy_since: float | None = None  # the first sample of the current unbroken run of busy samples
    resets: int = 0  # counters that went down: the server restarted inside the container
    grew_at: float | None = None  # the sample at which the tokens last grew (None: not seen growing yet)


def advance(track: ProgressTrack, sample: CounterSample) -> ProgressTrack:
    """Fold one sample in; an older or repeated sample changes nothing."""
    last = track.last
    if last is not None and sample.at <= last.at:
        return track
    if last is None or sample.tokens < last.tokens:
        return ProgressTrack(sample, sample.at, sample.at if sample.busy else None, track.resets + (last is not None))
    grew = sample.tokens > last.tokens
    moved_at = sample.at if grew else track.moved_at
    busy_since = (track.busy_since if track.busy_since is not None else sample.at) if sample.busy else None
    return ProgressTrack(sample, moved_at, busy_since, track.resets, sample.at if grew else track.grew_at)


def reading_interval(track: ProgressTrack, idle_interval: float, busy_interval: float) -> float:
    """Seconds from one /metrics reading of a server to its next: short while it has work, long while it has none.

    A stall is timed from the last reading that saw the tokens move (the server has certainly made
    no progress since), so a wedge is called at most one reading interval after its window has
    truly passed: busy servers are read every `busy_interval` to keep that margin small. A server
    with nothing to do cannot be wedged; reading it every `idle_interval` only notices work arriving.
    """
    last = track.last
    return busy_interval if last is not None and last.busy else idle_interval


def frozen_since(track: ProgressTrack) -> float | None:
    """When the tokens of a server that has work last moved, if its latest reading showed no growth; else None."""
    last = track.last
    if last is None or not last.busy or track.moved_at is None or track.moved_at >= last.at:
        return None
    return max(track.moved_at, track.busy_since or track.moved_at)


@dataclass(frozen=True)
class Wedged:
    """A wedged verdict with its evidence (for the fault's reason and the journal's detail)."""

    since: float
    reason: str
    evidence: Mapping[str, float | str] = field(default_factory=dict)


def wedged(track: ProgressTrack, stall_window: float, now: float, max_age: float) -> Wedged | None:
    """Wedged when the latest sample (at most `max_age` old) is busy and the counters stood still

    for `stall_window` of busy samples. A stale sample gives no verdict: the /metrics probe
    failing is the health probe's to judge, not evidence of a stall.
    """
    last = track.last
    if last is None or not last.busy or track.busy_since is None or track.moved_at is None:
        return None
    if now - last.at > max_age:
        return None
    still_since = max(track.moved_at, track.busy_since)
    stalled = last.at - still_since
    if stalled < stall_window:
        return None
    reason = (
        f"no progress for {stalled:.0f} s with work to do ({last.running:g} running, {last.waiting:g} waiting; "
        f"token counter stuck at {last.tokens:g}); stall window {stall_window:g} s"
    )
    evidence: dict[str, float | str] = {
        "server": last.kind.value,
        "tokens": last.tokens,
        "running": last.running,
        "waiting": last.waiting,
        "tokens_last_moved_at": track.moved_at,
        "busy_since": track.busy_since,
        "last_sample_at": last.at,
        "stalled_seconds": round(stalled, 3),
        "stall_window": stall_window,
    }
    return Wedged(still_since, reason, evidence)


class ProgressBook:
    """One track per container life. The progress probe folds each sample in as it arrives
    (so a wedge is seen the moment the evidence is complete, not at the next cycle); the loop
    reads the verdicts."""

    def __init__(self) -> None:
        self._tracks: dict[str, tuple[float | None, ProgressTrack]] = {}

    def keep_only(self, lives: Mapping[str, float | None]) -> None:
        """`lives`: container ID -> its StartedAt; a new life starts a fresh track, a gone container is dropped."""
        self._tracks = {cid: held for cid, held in self._tracks.items() if cid in lives and held[0] == lives[cid]}

    def fold(self, container_id: str, life: float | None, sample: CounterSample) -> ProgressTrack:
        """Fold one sample of this life in (a sample from before the life began is ignored); the new track."""
        held = self._tracks.get(container_id)
        track = held[1] if held is not None and held[0] == life else ProgressTrack()
        if life is None or sample.at >= life:
            track = advance(track, sample)
        self._tracks[container_id] = (life, track)
        return track

    def observe(self, samples: Mapping[str, CounterSample], lives: Mapping[str, float | None]) -> None:
        """Keep only `lives`, then fold each one's sample in (one batch at a time)."""
        self.keep_only(lives)
        for container_id, life in lives.items():
            sample = samples.get(container_id)
            if sample is not None:
                self.fold(container_id, life, sample)

    def track(self, container_id: str) -> ProgressTrack:
        held = self._tracks.get(container_id)
        return held[1] if held is not None else ProgressTrack()

    def verdicts(self, stall_windows: Mapping[str, float], now: float, max_age: float) -> dict[str, Wedged]:
        """Container ID -> Wedged, for the containers in `stall_windows` (those judged by progress)."""
        found: dict[str, Wedged] = {}
        for container_id, window in stall_windows.items():
            verdict = wedged(self.track(container_id), window, now, max_age)
            if verdict is not None:
                found[container_id] = verdict
        return found
