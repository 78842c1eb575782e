"""The daemon: the loop (observe, diagnose, plan, act, record) and its runtime. I/O.

`loop` drives one cycle and the subsystems; `lock` keeps one watchdog per state directory.
Nothing outside this package and `cli` imports it: the rooms it drives never know the loop.
"""

PURE_MODULES: tuple[str, ...] = ()  # no I/O, time passed in (tests/unit/test_purity.py)
