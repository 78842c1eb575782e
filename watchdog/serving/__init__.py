"""Serving: judge a server by whether it serves, not only by whether /health answers.

Judge (pure, time passed in): `progress` (a server's own work and token counters over time:
work waiting or running while the counters stand still for the stall window is *wedged*; a
server with nothing to do never is), `suspect` (a failed probe, or one in flight far longer
than this server usually takes, makes a server *suspect*: out of rotation at once, re-probed
fast), `canary_rules` (when a 1-token canary completion is due, and two failed in a row are
*wedged*). Observe (I/O): `counters` (the server's Prometheus text, read with prometheus-client's
parser, into one sample), `probe` (fetches /metrics on the HTTP prober's own asyncio thread),
`canary` (the opt-in 1-token completions, on the same thread). `watch` drives them each cycle.
"""

# The modules here that do no I/O and read no clock (checked by tests/unit/test_purity.py).
PURE_MODULES: tuple[str, ...] = ("progress", "suspect", "findings", "canary_rules")
