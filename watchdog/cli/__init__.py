"""The command line (click): each command parses its arguments and calls the rooms that do the work.

Nothing imports this package except `watchdog.__main__`.
"""

PURE_MODULES: tuple[str, ...] = ()  # no I/O, time passed in (tests/unit/test_purity.py)
