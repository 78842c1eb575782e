"""Traffic follows GPU health: each deployment's share factor from its GPUs' health scores. Pure.

A deployment on a degraded GPU gets a proportionally smaller share of its model group's requests:
its factor is the lowest health score of the GPUs it runs on (a model split over two GPUs is as
good as the worse one), rounded to 0.01 so a score that wobbles in the third digit does not
rewrite the rotation file. The callback in the proxy multiplies it into the plan's weight on
every routing attempt (litellm/gpu_watchdog_rotation.py): shares move within a second of a new
reading, with no proxy reload, which LiteLLM's own static `weight` would need.

Below `gpu.health.evict_below` the deployment gets no traffic at all (evicted: out of rotation),
and it comes back only at `readmit_above` or better, so a score hovering at the threshold does
not flap. An eviction never takes a model group under its floor of serving replicas
(`drain.min_replicas`, checked by containers/urgency.py's `may_take_out`, the planner's own check):
the worst of the group goes first, and the one that would break the floor stays in at its small
share, with the reason said. A GPU without a score (health off, NVML not answering, not mapped) is
unjudged: factor 1, as LiteLLM alone would route.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from watchdog.containers.urgency import may_take_out
from watchdog.gpu.health_score import HealthScore

MIN_SHARE = 0.01  # a replica kept in for the floor still gets picked when it is the only one


@dataclass(frozen=True)
class Candidate:
    """One deployment that is in rotation otherwise: its id, container, model group and GPU keys."""

    id: str
    container: str
    group: str
    gpus: tuple[str, ...]


@dataclass(frozen=True)
class HealthShare:
    """A deployment's share factor (0 to 1) from GPU health, and why."""

    id: str
    factor: float
    evicted: bool
    reason: str
    kept: bool = False  # should be evicted, but its group is at its replica floor


def _worst(gpus: Sequence[str], scores: Mapping[str, HealthScore]) -> HealthScore | None:
    known = [scores[g] for g in gpus if g in scores]
    return min(known, key=lambda s: s.score) if known else None


def _gpu_name(score: HealthScore) -> str:
    return f"GPU {score.index}"


def health_shares(
    candidates: Sequence[Candidate],
    scores: Mapping[str, HealthScore],
    *,
    evict_below: float,
    readmit_above: float,
    floor: int,
    evicted_before: Collection[str] = (),
) -> dict[str, HealthShare]:
    """Deployment id -> its share, for the candidates whose GPUs have a score below 1 (others: factor 1).

    `evicted_before`: the ids evicted at the last call (hysteresis). `floor`: serving replicas a
    group keeps; an eviction that would leave fewer is refused.
    """
    shares: dict[str, HealthShare] = {}
    worst = {c.id: _worst(c.gpus, scores) for c in candidates}
    wants_out: list[tuple[HealthScore, Candidate]] = []
    for c in candidates:
        score = worst[c.id]
        if score is None or score.score >= 1.0:
            continue
        limit = readmit_above if c.id in evicted_before else evict_below
        if score.score < limit:
            wants_out.append((score, c))
        factor = max(MIN_SHARE, round(score.score, 2))
        shares[c.id] = HealthShare(c.id, factor, False, f"{_gpu_name(score)} health {score.summary()}")
    serving: dict[str, set[str]] = {}
    for c in candidates:
        serving.setdefault(c.group, set()).add(c.id)
    sizes = {group: len(ids) for group, ids in serving.items()}
    for score, c in sorted(wants_out, key=lambda pair: (pair[0].score, pair[1].id)):
        threshold = readmit_above if c.id in evicted_before else evict_below
        what = "stays out until" if c.id in evicted_before else "below gpu.health.evict_below"
        allowed, why = may_take_out(serving[c.group], floor, name=c.id, group=c.group, size=sizes[c.group])
        if not allowed:
            shares[c.id] = HealthShare(
                c.id,
                shares[c.id].factor,
                False,
                f"{_gpu_name(score)} health {score.score:.2f} {what} {threshold:g}, but kept in: it {why}",
                kept=True,
            )
            continue
        serving[c.group].discard(c.id)
        shares[c.id] = HealthShare(
            c.id,
            0.0,
            True,
            f"evicted: {_gpu_name(score)} health {score.score:.2f} {what} {threshold:g} ({score.summary()})",
        )
    return shares
