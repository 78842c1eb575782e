"""Which faults may wait for a drain, and how many replicas a model group keeps: one place each.

Pure. A planned disruption (a restart for a fault that can wait, a GPU reset the Xid table
plans) first takes the deployment out of rotation and waits for its in-flight requests
(watchdog/router/drain.py). An urgent fault does not wait: the server is not serving anyway,
or what it serves may be wrong.

| Fault                               | Urgent | Why                                                          |
|-------------------------------------|--------|--------------------------------------------------------------|
| stopped                             | yes    | dead: nothing is in flight on it                             |
| wedged                              | yes    | hung: its in-flight requests never finish                    |
| endpoint-failing                    | yes    | its probes fail (unanswered: hung; answered: errors)         |
| zero-vram                           | yes    | the model left GPU memory: it cannot generate                |
| gpu-xid (the container's own Xid)   | yes    | the app's GPU channel was reset: its CUDA context is gone    |
| unhealthy (engine healthcheck)      | no     | the healthcheck fails while the server may still answer      |
| reset Xid 48, 95 (uncorrectable ECC)| yes    | possible silent corruption: stop at once                     |
| reset Xid 64, 119, 120, others      | no     | the GPU needs a reset, what it answers now is still right    |

The floor: for a fault that can wait, a model group (containers with the same `model` label)
keeps at least `drain.min_replicas` replicas serving; `may_take_out` is the check, for the
planner and for any other code that takes a replica out.
"""

from __future__ import annotations

from collections.abc import Collection

from watchdog.model import Fault, FaultKind

NON_URGENT_FAULTS = frozenset({FaultKind.UNHEALTHY})
URGENT_RESET_XIDS = frozenset({48, 95})  # uncorrectable ECC: the GPU may return wrong results


def urgency(fault: Fault) -> tuple[bool, str]:
    """(urgent, why): an urgent fault is acted on at once; one that is not waits for a drain."""
    if fault.kind in NON_URGENT_FAULTS:
        return False, f"{fault.kind.value}: the server may still answer; its in-flight requests finish first"
    why = {
        FaultKind.STOPPED: "the container is not running",
        FaultKind.WEDGED: "its in-flight requests never finish",
        FaultKind.ENDPOINT_FAILING: "its endpoint fails its probes",
        FaultKind.ZERO_VRAM: "the model left GPU memory",
        FaultKind.GPU_XID: "its GPU channel was reset",
    }
    return True, f"{fault.kind.value}: {why.get(fault.kind, 'urgent')}"


def xid_urgency(xid: int | None) -> tuple[bool, str]:
    """(urgent, why) of a GPU reset the Xid table asked for."""
    if xid in URGENT_RESET_XIDS:
        return True, f"Xid {xid} is an uncorrectable ECC error (possible silent corruption): no drain"
    return False, f"Xid {xid}: a planned reset; in-flight requests finish first"


def may_take_out(
    serving: Collection[str], floor: int, *, name: str, group: str | None, size: int | None = None
) -> tuple[bool, str]:
    """May `name` be taken out of its group, whose members `serving` serve now (with or without it)?

    `group` None: not in a model group, no floor. `size`: the group's members, serving or not.
    The reason says what would be left.
    """
    if group is None or floor <= 0:
        return True, "no replica floor"
    left = len(set(serving) - {name})
    total = max(size or 0, len(set(serving) | {name}))
    if left >= floor:
        return True, f"leaves group {group} with {left} of {total} replicas serving (floor {floor})"
    return False, f"would leave group {group} with {left} of {total} replicas serving (floor {floor})"


def below_floor(serving: Collection[str], members: Collection[str], floor: int, group: str) -> str | None:
    """What to say when a group has fewer serving replicas than its floor anyway (None: it has enough)."""
    if floor <= 0 or len(serving) >= floor:
        return None
    return (
        f"cannot keep the replica floor of group {group}: {len(serving)} of {len(members)} replicas serving "
        f"(floor {floor}; drain.min_replicas)"
    )
