"""The daemon: the loop (observe, diagnose, plan, act, record) and its runtime. I/O.

`loop` drives one cycle and the subsystems; the state that lives between cycles has a room
each, all at the edge, their decisions pure in `containers`: `event_intake` (engine events in,
operator stops journaled), `restarts` (restarts issued, settled, waited for at shutdown),
`fault_record` (a fault's detection and end, and the verdicts, journaled once),
`engine_health` (the engine down and back, with backoff), `status_writer` (the status file
and heartbeat). `lock` keeps one watchdog per state directory; `runtime` runs the loop (lock
and engine waits, the journal with its in-memory fallback, signals and config reload, systemd
notify, notifications) and `http_endpoint` wires the HTTP server to it.
Nothing outside this package and `cli` imports it: the rooms it drives never know the loop.
"""

# The modules here that do no I/O and read no clock (checked by tests/unit/test_purity.py).
PURE_MODULES: tuple[str, ...] = ()
