"""The command line (click): each command parses its arguments and calls the rooms that do the work.

`main` holds the group, its global options and `main()`; `context` what every command shares (the
config, exit codes, the one-line failure); a module per concern holds its commands: `daemon`
(`--daemon`, `run`), `fleet` (status, reset, plan, healthcheck, doctor), `drain`, `report`, `gpu`, `litellm`,
`notify`. Running the daemon is `watchdog.daemon.runtime`'s job, not the CLI's.

Nothing imports this package except `watchdog.__main__`.
"""

# The modules here that do no I/O and read no clock (checked by tests/unit/test_purity.py).
PURE_MODULES: tuple[str, ...] = ()
