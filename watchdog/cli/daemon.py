"""`gpu-watchdog --daemon` and `run [--once]`: the arguments are parsed here, the daemon runs in `watchdog.daemon`."""

from __future__ import annotations

import sys
from typing import NoReturn

import click

from watchdog.cli.context import EXIT_OK, EXIT_USAGE, Context, fail
from watchdog.config import ConfigError
from watchdog.daemon.loop import CycleResult
from watchdog.daemon.runtime import run_daemon, run_once


def start_daemon(obj: Context) -> NoReturn:
    """The healing loop until SIGTERM/SIGINT, then exit 0; a notify target that cannot be used is exit 2."""
    try:
        run_daemon(obj.config, obj.source)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    sys.exit(EXIT_OK)


def print_cycle(result: CycleResult) -> None:
    """`run --once`'s summary: the fleet in numbers, then one line per decision."""
    managed = sum(1 for c in result.containers if c.managed)
    click.echo(f"cycle: {managed} managed, {len(result.diagnosis.faults)} fault(s), {result.duration * 1000:.0f} ms")
    for decision in result.decisions:
        click.echo(f"  {decision.fault.container}: {decision.verdict.value}: {decision.reason}")


@click.command("run")
@click.option("--once", is_flag=True, help="Run one cycle, wait for the restarts it issues, and exit.")
@click.pass_obj
def run_command(obj: Context, once: bool) -> None:
    """Run the healing loop (same as --daemon), or a single cycle with --once."""
    if not once:
        start_daemon(obj)
    run_once(obj.config, print_cycle)
    sys.exit(EXIT_OK)
