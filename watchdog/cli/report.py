"""`gpu-watchdog report`: restarts per container and GPU from the journal, as a table, JSON, CSV, Markdown or HTML."""

from __future__ import annotations

import time

import click

from watchdog.cli.context import EXIT_RUNTIME, EXIT_USAGE, Context, fail
from watchdog.ops.connect import open_journal


@click.command()
@click.option("--since", default="24h", show_default=True, help="How far back, e.g. 24h, 7d, 90m.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv", "markdown", "html"]), default="table")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write to FILE (atomically) instead.")
@click.option(
    "--threshold",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Restarts in an hour above which a container is UNSTABLE.",
)
@click.pass_obj
def report(obj: Context, since: str, fmt: str, out: str | None, threshold: int) -> None:
    """Restarts per container and GPU from the journal: rate, causes, time to recover, availability."""
    from watchdog.files import write_atomic
    from watchdog.reports.restart_rates import Window, build, render
    from watchdog.units import parse_duration

    try:
        seconds = parse_duration(since)
    except ValueError as exc:
        fail(f"--since {since!r}: {exc}; e.g. 24h, 7d, 90m", EXIT_USAGE)
    if seconds <= 0:
        fail(f"--since {since!r}: must be more than 0, e.g. 24h", EXIT_USAGE)
    now = time.time()
    window = Window(now - seconds, now)
    journal = open_journal(obj.config)
    try:
        # Entries from a day earlier too: an episode open when the window starts counts as downtime.
        entries = journal.entries(since=window.start - 86400)
        actions = journal.actions(since=window.start)
    finally:
        journal.close()
    result = build(entries, actions, window, threshold)
    if fmt == "html":
        from watchdog.reports.html import render_html
        from watchdog.reports.timeline import build_timeline

        text = render_html(result, build_timeline(entries, actions, window), generated_at=now)
    else:
        text = render(result, fmt)
    if out is None:
        click.echo(text)
        return
    try:
        write_atomic(out, text if text.endswith("\n") else text + "\n")
    except OSError as exc:
        fail(f"cannot write {out} ({exc.strerror}); pass --out FILE in a writable directory", EXIT_RUNTIME)
    click.echo(f"{out}: {len(result.containers)} container(s), {result.fleet.restarts} restart(s)")
