"""Journal entry kinds: one enum that every writer and every reader of the journal shares.

The values are the strings the journal has always stored, so journals written before this
enum read the same. A StrEnum member equals its string, so a reader may compare a row's kind
(a plain str from SQLite) with a member directly. Pure.
"""

from __future__ import annotations

from enum import StrEnum, unique


@unique
class EntryKind(StrEnum):
    """What a journal entry records. Grouped by the room that writes it."""

    # containers: a fault's life (the loop's fault bookkeeping)
    DETECTED = "detected"  # a managed container is faulty; fault = FaultKind
    RECOVERED = "recovered"  # healthy again; duration = time since detected
    CLEARED = "cleared"  # the fault ended without a recovery: removed, or stopped on purpose
    MANUAL_STOP = "manual-stop"  # an operator stopped it (engine stop event): left stopped
    # containers: the planner's decisions other than a restart (a restart is an action row)
    DEFER = "defer"
    BACKOFF = "backoff"
    GIVE_UP = "give-up"  # the crash-loop breaker opens
    GIVEN_UP = "given-up"
    IN_PROGRESS = "in-progress"
    HELD = "held"
    DRAIN = "drain"  # draining before an action (the planner's verdict, a planned GPU reset, an operator's drain)
    DRY_RUN = "dry-run"  # would restart (dry-run mode)
    # containers: a restart's life (the loop's restart tracker)
    RESTART_CALL = "restart-call"  # the `docker restart` call returned; detail has its timing
    RESTART_RECOVERED = "restart-recovered"
    RESTART_FAILED = "restart-failed"  # started, then died before it was healthy
    RESTART_TIMED_OUT = "restart-timed-out"
    RESTART_GONE = "restart-gone"
    RECONCILED = "reconciled"  # a restart a killed watchdog left in flight, settled at start
    RESET = "reset"  # an operator reset the breaker (`gpu-watchdog reset NAME`)
    # drains (router/drain.py, router/drain_watch.py)
    DRAINED = "drained"  # its in-flight requests finished; the action goes ahead
    DRAIN_TIMED_OUT = "drain-timed-out"  # drain.timeout passed with requests in flight; the action goes ahead
    DRAIN_REQUESTED = "drain-requested"  # an operator's `gpu-watchdog drain NAME|GPU`
    DRAIN_ENDED = "drain-ended"  # an operator's `gpu-watchdog drain --end NAME|GPU`
    REPLICA_FLOOR = (
        "replica-floor"  # a model group is under drain.min_replicas, or kept a replica out of a health eviction
    )
    # the engine and the daemon
    ENGINE_DOWN = "engine-down"
    ENGINE_UP = "engine-up"
    DAEMON_START = "daemon-start"
    DAEMON_STOP = "daemon-stop"
    # GPUs
    XID = "xid"  # fault = "xid-N"; detail has the table's action
    GPU_QUARANTINED = "gpu-quarantined"  # the GpuCondition marks, as "gpu-" + condition
    GPU_DRAINED = "gpu-drained"
    GPU_RESETTING = "gpu-resetting"
    GPU_RESET = "gpu-reset"  # the opt-in reset starts
    GPU_RESET_OK = "gpu-reset-ok"
    GPU_RELEASED = "gpu-released"  # an operator released a marked GPU
    GPU_PROBATION = "gpu-probation"  # a released GPU's probation starts (verified return)
    GPU_PROVEN = "gpu-proven"  # its containers answered and stayed clean through the window: back in rotation
    GPU_PROBATION_FAILED = "gpu-probation-failed"  # it failed inside its probation: marked again
    GPU_ERROR = "gpu-error"  # NVML answered with an error
    ALERT = "alert"  # needs a human; fault says about what (driver-hung, gpu-reset, xid-N)
    DRIVER_RECOVERED = "driver-recovered"
    ORPHAN = "orphan"  # GPU memory held by a process of no running container
    HEALTH_SCORE = "health-score"  # a GPU's health score moved a step (or crossed the eviction threshold)
    # the router
    CAPACITY = "capacity"  # the capacity plan changed
    ROTATION_IN = "rotation-in"
    ROTATION_OUT = "rotation-out"
    ROUTER_ERROR = "router-error"
    PROXY_RESTART = "proxy-restart"
    PROXY_RESTART_FAILED = "proxy-restart-failed"
    PROXY_UP = "proxy-up"
    PROXY_DOWN = "proxy-down"
    ROUTER_REPORT = "router-report"  # the proxy's outlier report of a failure streak (its evidence), once per streak
    ROUTER_CLEARED = "router-cleared"  # a reported deployment answered its probe: a false alarm, ejection ended
    # the cluster (several hosts, one router view on Redis)
    CLUSTER_DOWN = "cluster-down"  # the fleet's Redis does not answer: healing goes on locally
    CLUSTER_UP = "cluster-up"  # it answers again: this host's view is published again
    HOST_BACK = "host-back"  # another host of the fleet publishes again (its silence was an alert)
    # memory limits
    MEMORY_LIMIT = "memory-limit"  # report mode (and dry run): limits differ from the plan; fault = LimitKind
    MEMORY_LIMIT_APPLIED = "memory-limit-applied"
    MEMORY_LIMIT_DRIFT = "memory-limit-drift"  # changed by hand after the watchdog set it; set back
    MEMORY_LIMIT_BLOCKED = "memory-limit-blocked"
    MEMORY_LIMIT_FAILED = "memory-limit-failed"
    MEMORY_LIMIT_OVERRIDE = "memory-limit-override"  # the compose override file was (re)written


class ActionKind(StrEnum):
    """What an action row (the journal's `actions` table) did: the breaker and reports count these."""

    RESTART = "restart"


# Fault kinds of an ALERT entry that are not a container's FaultKind.
ALERT_DRIVER_HUNG = "driver-hung"
ALERT_GPU_RESET = "gpu-reset"
ALERT_HOST_SILENT = "host-silent"  # another host of the fleet stopped publishing its view
ALERT_MAINTENANCE = "predicted-maintenance"  # a GPU counter's trend: schedule maintenance (gpu.predict)

# The entries of a GPU mark ("gpu-" + a GpuCondition value).
GPU_MARK_KINDS = frozenset({EntryKind.GPU_QUARANTINED, EntryKind.GPU_DRAINED, EntryKind.GPU_RESETTING})

# The planner's verdicts that the loop journals as they are (a restart is journaled as an action).
VERDICT_KINDS = frozenset(
    {
        EntryKind.DEFER,
        EntryKind.BACKOFF,
        EntryKind.GIVE_UP,
        EntryKind.GIVEN_UP,
        EntryKind.IN_PROGRESS,
        EntryKind.HELD,
        EntryKind.DRAIN,
    }
)


def restart_outcome(state: str) -> EntryKind:
    """The entry for a settled restart (`Recovery` value: recovered, failed, timed-out, gone)."""
    return EntryKind(f"restart-{state}")


def gpu_mark(condition: str) -> EntryKind:
    """The entry for a GPU mark (`GpuCondition` value: quarantined, drained, resetting)."""
    return EntryKind(f"gpu-{condition}")


def verdict(value: str) -> EntryKind:
    """The entry for a planner verdict other than restart (`Verdict` value)."""
    kind = EntryKind(value)
    if kind not in VERDICT_KINDS:
        raise ValueError(f"verdict {value!r} is not journaled as an entry")
    return kind
