"""gpu-watchdog: heals a Docker fleet of GPU inference containers.

Install it in its own environment: the import name `watchdog` is shared with an
unrelated filesystem-events library, and this project never depends on it.
"""

__version__ = "0.1.0"

# The modules here that do no I/O and read no clock (checked by tests/unit/test_purity.py).
PURE_MODULES: tuple[str, ...] = ("model", "units", "entries", "subsystem")
