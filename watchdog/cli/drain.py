"""`gpu-watchdog drain NAME|GPU` and `drain --end NAME|GPU`: an operator's drain, through the journal."""

from __future__ import annotations

import time

import click

from watchdog.cli.context import EXIT_USAGE, Context, fail
from watchdog.cli.fleet import managed_or_none
from watchdog.ops.connect import open_journal
from watchdog.ops.operator_actions import NotFound, drain_target


@click.command("drain")
@click.argument("target")
@click.option("--end", is_flag=True, help="End the drain: back in rotation.")
@click.pass_obj
def drain_command(obj: Context, target: str, end: bool) -> None:
    """Take NAME (or every container on GPU, by UUID or index) out of rotation once its requests finish.

    The daemon takes it out of rotation at its next cycle, waits for its in-flight requests (up to
    drain.timeout) and journals when it is drained; it stays out until `gpu-watchdog drain --end`.
    """
    journal = open_journal(obj.config)
    containers = managed_or_none(obj, f"draining {target}")
    known = None if containers is None else {c.name: c.gpus for c in containers}
    try:
        click.echo(drain_target(journal, target, known, "`gpu-watchdog drain`", time.time(), end=end))
    except NotFound as exc:
        fail(str(exc), EXIT_USAGE)
    finally:
        journal.close()
