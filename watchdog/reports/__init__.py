"""Reports read from the journal's rows, never from the daemon's memory. Every module here is pure.

`restart_rates` (per container, GPU and fleet: rates, causes, recovery times, availability),
`timeline` (what happened when, per lane: the data behind the chart), `html` (one self-contained
HTML file). The CLI reads the journal and writes the file; these only compute.
"""

# The modules here that do no I/O and read no clock (checked by tests/unit/test_purity.py).
PURE_MODULES: tuple[str, ...] = ("restart_rates", "timeline", "html")
