"""How the rotation callback picks among the candidates it keeps: health shares and the failover cap.

Part of gpu-watchdog's rotation filter (gpu_watchdog_rotation.py), in the proxy, copied next to it.
`HealthPicker`: traffic follows GPU health, one candidate per attempt in proportion to the plan's
weight x the deployment's health share (rotation.json `weights`). `FailoverCap`: a request LiteLLM's
fallback handler sent from another group goes to a fallback deployment only within its planned rpm
(rotation.json `failover_rpm`). Pure apart from the state each keeps between attempts; standard
library only.
"""

from __future__ import annotations

from typing import Any


def deployment_id(deployment: Any) -> str | None:
    if not isinstance(deployment, dict):
        return None
    info = deployment.get("model_info") or {}
    value = info.get("id") if isinstance(info, dict) else None
    return str(value) if value is not None else None


def plan_weight(deployment: Any) -> float:
    """The capacity plan's weight of a deployment (its litellm_params.weight), 1 when it has none."""
    params = deployment.get("litellm_params") if isinstance(deployment, dict) else None
    try:
        value = float((params or {}).get("weight") or 1.0)
    except (TypeError, ValueError):
        return 1.0
    return value if value > 0 else 1.0


class HealthPicker:
    """Traffic follows GPU health: one candidate per attempt, in proportion to plan weight x health share.

    Smooth weighted round robin (nginx's): every candidate gains its weight, the richest is picked
    and pays the total. Over any run of attempts each one's share is its weight over the sum, to
    within one request, with no randomness to wait out. Only used when some candidate's share is
    under 1; with every GPU healthy the list goes to LiteLLM as it is (its own strategy picks).
    """

    def __init__(self) -> None:
        self.credit: dict[str, dict[str, float]] = {}  # model group -> deployment id -> credit

    def pick(self, group: str, deployments: list[Any], shares: dict[str, float]) -> list[Any]:
        ids = [deployment_id(d) for d in deployments]
        if not any(i in shares for i in ids) or None in ids:
            return deployments
        weights = [plan_weight(d) * shares.get(str(i), 1.0) for d, i in zip(deployments, ids, strict=True)]
        total = sum(weights)
        if total <= 0:
            return deployments
        credit = self.credit.setdefault(group, {})
        for key in list(credit):
            if key not in ids:
                del credit[key]
        for ident, weight in zip(ids, weights, strict=True):
            credit[str(ident)] = credit.get(str(ident), 0.0) + weight
        best = max(range(len(ids)), key=lambda n: (credit[str(ids[n])], -n))
        credit[str(ids[best])] -= total
        return [deployments[best]]


def failover_request(model: str, request_kwargs: dict[str, Any] | None) -> bool:
    """A request LiteLLM's fallback handler sent here from another group (fallback_depth >= 1)."""
    kwargs = request_kwargs or {}
    original = (kwargs.get("metadata") or {}).get("original_model_group")
    return bool(kwargs.get("fallback_depth")) or original not in (None, "", model)


class FailoverCap:
    """Failover requests per fallback deployment and rolling minute, at most its `failover_rpm`."""

    WINDOW = 60.0

    def __init__(self) -> None:
        self.sent: dict[str, list[float]] = {}

    def admit(self, candidates: list[Any], state: Any, now: float) -> list[Any]:
        """Uncapped candidates as they are; else the capped one with the most room (counted), or none."""
        if any(deployment_id(d) not in state.failover_rpm for d in candidates):
            return candidates
        best, room = None, 0.0
        for d in candidates:
            ident = str(deployment_id(d))
            recent = [t for t in self.sent.get(ident, []) if now - t < self.WINDOW]
            self.sent[ident] = recent
            left = 1 - len(recent) / state.failover_rpm[ident] if state.failover_rpm[ident] > 0 else 0.0
            if left > room:
                best, room = d, left
        if best is None:
            return []
        self.sent[str(deployment_id(best))].append(now)
        return [best]
