"""What every command shares: the loaded config, the exit codes, the one-line failure, the fleet as commands read it.

Exit codes: 0 ok, 1 runtime failure (engine unreachable, lock held), 2 usage or configuration
error. Every error is one line naming the culprit and the fix.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any, NoReturn

import click

from watchdog.config import Config
from watchdog.containers.breaker import BreakerState, evaluate
from watchdog.daemon.runtime import ConfigSource
from watchdog.journal import Journal
from watchdog.ops.connect import connect_engine, labelled_containers, open_journal

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2


@dataclass
class Context:
    """The click context object: the config in force and where it came from (the daemon reloads from there)."""

    source: ConfigSource
    config: Config


def fail(message: str, code: int) -> NoReturn:
    click.echo(f"gpu-watchdog: {message}", err=True)
    sys.exit(code)


def fleet_now(config: Config) -> tuple[list[Any], Journal, set[str]]:
    """Managed containers now, the journal, and the names the crash-loop breaker has given up on. CannotRun."""
    client = connect_engine()
    journal = open_journal(config)
    containers = labelled_containers(client, config)
    now = time.time()
    given_up = {
        c.name
        for c in containers
        if c.spec is not None
        and evaluate(
            journal.breaker_history(c.name, since=now - config.breaker.window - config.breaker.cooldown),
            config.breaker,
            now,
            c.spec.max_restarts,
        ).state
        == BreakerState.OPEN
    }
    return containers, journal, given_up
