"""`gpu-watchdog notify [--test]`: the notification targets, and a test message to each."""

from __future__ import annotations

import sys

import click

from watchdog.cli.context import EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, Context, fail
from watchdog.config import ConfigError


@click.command("notify")
@click.option("--test", "send", is_flag=True, help="Send one test message to each target now; exit 1 if any fails.")
@click.option("--target", default=None, metavar="NAME", help="Only the target of this name.")
@click.pass_obj
def notify_command(obj: Context, send: bool, target: str | None) -> None:
    """The notification targets (name, kind, events; never their URLs), or with --test a test message to each."""
    from watchdog.ops.notify import send_test

    config = obj.config.notify
    if not config.targets:
        fail("no notify targets configured; add notify.targets to the config file (see the README)", EXIT_USAGE)
    names = [t.name for t in config.targets]
    if target is not None and target not in names:
        fail(f"no notify target named {target!r}; configured: {', '.join(names)}", EXIT_USAGE)
    if not send:
        for item in config.targets:
            if target is None or item.name == target:
                click.echo(f"{item.describe()}: events {', '.join(item.events)}")
        return
    try:
        results = send_test(config, target)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    for item, why in results:
        click.echo(f"OK {item.name} ({item.kind})" if why is None else f"FAIL {item.name} ({item.kind}): {why}")
    sys.exit(EXIT_OK if all(why is None for _, why in results) else EXIT_RUNTIME)
