"""The document each host publishes to Redis, and the strict reading of what the fleet published. Pure.

Keys, under the fleet's `cluster.key_prefix` (P):
- `P:host:NAME`: one JSON document per host (below), written only by that host's watchdog, with a TTL
  of a few poll intervals: a silent host's view expires on its own.
- `P:hosts`: a sorted set, host name -> the heartbeat of its last publish (no TTL): who is in the
  fleet, so a host whose view expired can be named ("host B silent since 02:10").

A host's deployments are named `NAME/ID` (ID as its own rotation names it), so two hosts with a
container of the same name never collide, and a host can speak only for its own: a document whose
deployments are not all under its own name, whose key and body disagree on the host, of another
version, from the future, or of the wrong shape is ignored whole, with the reason, never trusted.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

VIEW_VERSION = 1  # of the host document (the fleet rotation has the rotation file's own)
STATES = ("in", "out", "suspect", "draining")
HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
MAX_DEPLOYMENTS = 4096  # per host: more is not a real host
MAX_TEXT = 500  # a reason, a container name, an api_base
CLOCK_SKEW = 60.0  # s a heartbeat may be ahead of the reader's clock


def host_key(prefix: str, host: str) -> str:
    return f"{prefix}:host:{host}"


def hosts_key(prefix: str) -> str:
    return f"{prefix}:hosts"


def qualified(host: str, local_id: str) -> str:
    """A deployment's fleet-wide name: its host's name, a slash, its id on that host."""
    return f"{host}/{local_id}"


@dataclass(frozen=True)
class PublishedDeployment:
    """One deployment as its host sees it now."""

    id: str  # HOST/local id
    container: str
    group: str  # the model group (LiteLLM model_name)
    state: str  # in | out | suspect | draining
    reason: str
    share: float = 1.0  # of its weight, from its GPUs' health
    api_base: str | None = None
    weight: int | None = None  # the host's capacity plan's weight (its rpm share), as its own config renders it


@dataclass(frozen=True)
class HostView:
    """What one host published: its heartbeat, whether its engine answers, its deployments and GPUs."""

    host: str
    heartbeat: float
    ttl: float
    engine: str  # up | down
    deployments: tuple[PublishedDeployment, ...] = ()
    gpus: tuple[Mapping[str, Any], ...] = ()  # index, uuid, score, mark
    capacity: Mapping[str, Any] = field(default_factory=dict)  # the host's plan: rpm, target share

    def fresh(self, now: float) -> bool:
        return now - self.heartbeat <= self.ttl


def state_of(in_rotation: bool, reason: str) -> str:
    """A rotation entry's state in the fleet's words: in, suspect, draining or out."""
    if in_rotation:
        return "in"
    text = reason.lower()
    if text.startswith("suspect") or "suspect:" in text:
        return "suspect"
    if text.startswith("draining") or "draining" in text.split(":", 1)[0]:
        return "draining"
    return "out"


def host_document(view: HostView) -> dict[str, Any]:
    """The JSON body of P:host:NAME."""
    return {
        "version": VIEW_VERSION,
        "host": view.host,
        "heartbeat": view.heartbeat,
        "ttl": view.ttl,
        "engine": view.engine,
        "deployments": {
            d.id: {
                "container": d.container,
                "group": d.group,
                "state": d.state,
                "reason": d.reason,
                "share": d.share,
                "api_base": d.api_base,
                "weight": d.weight,
            }
            for d in view.deployments
        },
        "gpus": [dict(g) for g in view.gpus],
        "capacity": dict(view.capacity),
    }


class Rejected(ValueError):
    """A published document that is not trusted, with why (one line)."""


def _text(value: Any, what: str, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise Rejected(f"{what} is not a short string")
    return value


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise Rejected(f"{what} is not a number")
    return float(value)


def _deployment(host: str, ident: Any, body: Any) -> PublishedDeployment:
    if not isinstance(ident, str) or not ident.startswith(f"{host}/") or len(ident) > MAX_TEXT:
        raise Rejected(f"deployment {str(ident)[:80]!r} is not under the host's own name {host}/")
    if not isinstance(body, Mapping):
        raise Rejected(f"deployment {ident} is not an object")
    state = body.get("state")
    if state not in STATES:
        raise Rejected(f"deployment {ident} has state {str(state)[:40]!r}, not one of {', '.join(STATES)}")
    share = _number(body.get("share", 1.0), f"deployment {ident} share")
    if not 0.0 <= share <= 1.0:
        raise Rejected(f"deployment {ident} share {share} is outside 0..1")
    weight = body.get("weight")
    if weight is not None and (isinstance(weight, bool) or not isinstance(weight, int) or weight < 0):
        raise Rejected(f"deployment {ident} weight is not a whole number")
    return PublishedDeployment(
        ident,
        _text(body.get("container"), f"deployment {ident} container") or "",
        _text(body.get("group"), f"deployment {ident} group") or "",
        str(state),
        _text(body.get("reason", ""), f"deployment {ident} reason") or "",
        share,
        _text(body.get("api_base"), f"deployment {ident} api_base", optional=True),
        weight,
    )


def parse_host(key: str, raw: bytes | str | None, *, prefix: str, now: float) -> HostView:
    """The document at `key`, checked whole; raises Rejected with the reason."""
    want = host_key(prefix, "")
    if not key.startswith(want) or not HOST_NAME.fullmatch(key[len(want) :]):
        raise Rejected(f"key {key[:120]!r} is not {want}NAME")
    host = key[len(want) :]
    if raw is None:
        raise Rejected(f"{key} is gone (expired)")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise Rejected(f"{key} is not JSON") from None
    if not isinstance(data, Mapping) or data.get("version") != VIEW_VERSION:
        raise Rejected(f"{key} is not a version-{VIEW_VERSION} host view")
    if data.get("host") != host:
        raise Rejected(f"{key} says it is host {str(data.get('host'))[:64]!r}")
    heartbeat, ttl = _number(data.get("heartbeat"), "heartbeat"), _number(data.get("ttl"), "ttl")
    if heartbeat > now + CLOCK_SKEW or ttl <= 0:
        raise Rejected(f"{key}: heartbeat in the future or no TTL (clock skew over {CLOCK_SKEW:g} s?)")
    engine = data.get("engine")
    if engine not in ("up", "down"):
        raise Rejected(f"{key}: engine {str(engine)[:20]!r} is not up or down")
    deployments = data.get("deployments")
    if not isinstance(deployments, Mapping) or len(deployments) > MAX_DEPLOYMENTS:
        raise Rejected(f"{key}: deployments is not an object of at most {MAX_DEPLOYMENTS}")
    gpus, capacity = data.get("gpus") or [], data.get("capacity") or {}
    if not isinstance(gpus, list) or not all(isinstance(g, Mapping) for g in gpus) or not isinstance(capacity, Mapping):
        raise Rejected(f"{key}: gpus or capacity of the wrong shape")
    return HostView(
        host,
        heartbeat,
        ttl,
        str(engine),
        tuple(_deployment(host, ident, body) for ident, body in sorted(deployments.items())),
        tuple(dict(g) for g in gpus),
        dict(capacity),
    )


@dataclass(frozen=True)
class FleetView:
    """Every host the fleet knows of: the views that are fresh, the ones rejected, the hosts gone silent."""

    hosts: tuple[HostView, ...] = ()
    rejected: Mapping[str, str] = field(default_factory=dict)  # key -> why
    silent: Mapping[str, float] = field(default_factory=dict)  # host -> its last heartbeat (view expired)


def fleet_view(
    documents: Mapping[str, bytes | str | None], heartbeats: Mapping[str, float], *, prefix: str, now: float
) -> FleetView:
    """From the host keys read and the P:hosts set: who is fresh, who was rejected, who went silent."""
    hosts: list[HostView] = []
    rejected: dict[str, str] = {}
    for key, raw in sorted(documents.items()):
        try:
            view = parse_host(key, raw, prefix=prefix, now=now)
        except Rejected as exc:
            if raw is not None:
                rejected[key] = str(exc)
            continue
        if view.fresh(now):
            hosts.append(view)
    seen = {h.host for h in hosts}
    silent = {h: at for h, at in sorted(heartbeats.items()) if h not in seen and HOST_NAME.fullmatch(h)}
    return FleetView(tuple(hosts), rejected, silent)


def silent_hosts(
    heartbeats: Mapping[str, float], *, me: str, now: float, after: float, forget_after: float
) -> dict[str, float]:
    """Hosts of the fleet (P:hosts) with no heartbeat for `after` s, but within `forget_after` s: host -> last one.

    A host gone longer than `forget_after` was taken out of the fleet for good, not lost: not said again.
    """
    return {
        host: at
        for host, at in sorted(heartbeats.items())
        if host != me and HOST_NAME.fullmatch(host) and after < now - at <= forget_after
    }


def summary(hosts: Sequence[HostView], now: float) -> list[dict[str, Any]]:
    """Per host, for `fleet status`: heartbeat age, engine, deployments in and out."""
    return [
        {
            "host": h.host,
            "heartbeat_age": round(now - h.heartbeat, 1),
            "engine": h.engine,
            "in": sum(1 for d in h.deployments if d.state == "in"),
            "deployments": len(h.deployments),
        }
        for h in hosts
    ]
