"""Operating the watchdog: what an operator and their tools see of it, and what they may change.

Pure: `notices` (which journal entries an operator hears about, and the payloads), `messages` (the
lines said in more than one place, worded once). I/O: `notify` (sends them from a worker thread),
`metrics` (Prometheus metrics and the HTTP endpoint), `systemd` (sd_notify readiness and
heartbeat), `status` (the daemon's view for `gpu-watchdog status`, and when it counts as stale),
`doctor` (what would stop the watchdog from doing its job), `operator_actions` (reset and release:
one implementation for the CLI and the HTTP endpoint), `connect` (the engine client, the journal
and the fleet snapshot the way the CLI and the daemon open them).
"""

# The modules here that do no I/O and read no clock (checked by tests/unit/test_purity.py).
PURE_MODULES: tuple[str, ...] = ("notices", "messages")
