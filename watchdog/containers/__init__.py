"""Containers: where a container fault is detected and where its remedy is chosen.

Observe (I/O): `engine` (the engine's snapshot of managed containers), `events` (the engine's
event stream), `http_probe` (health endpoints), `host` (MemAvailable for the RAM preflight).
Judge (pure, time passed in): `labels` (a container's opt-in and settings), `diagnose` (snapshots
and remembered events to faults), `plan` (faults and policy to ordered decisions, within a
restart budget, staggered within a model group), `urgency` (which faults may wait for a drain,
and the replica floor of a model group), `breaker` (backoff and give-up), `event_memory` (each container's event
history, and what an event means: ours, an operator's stop, a start, a destroy), `fault_book`
(which faults are new, which ended and how, which verdicts are news), `in_flight` (what a
restart in flight holds and when it lets go). Act (I/O): `restart` (the only code that
restarts a container), `reconcile` (restarts a killed watchdog left in flight). `own_actions`
remembers when the watchdog itself acted, so its own kill/die/start events are never taken
for an operator's.
"""

# The modules here that do no I/O and read no clock (checked by tests/unit/test_purity.py).
PURE_MODULES: tuple[str, ...] = (
    "labels",
    "diagnose",
    "plan",
    "breaker",
    "own_actions",
    "fault_book",
    "in_flight",
    "event_memory",
    "urgency",
)
