"""The daemon: the loop (observe, diagnose, plan, act, record) and its runtime. I/O.

`loop` drives one cycle and the subsystems; `lock` keeps one watchdog per state directory;
`runtime` runs it (lock and engine waits, the journal with its in-memory fallback, signals and
config reload, systemd notify, notifications) and `http_endpoint` wires the HTTP server to it.
Nothing outside this package and `cli` imports it: the rooms it drives never know the loop.
"""
