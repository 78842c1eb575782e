"""Command line: `gpu-watchdog --daemon`, `run --once`, `status`, `reset NAME`, and the rest.

The group parses the global options and loads the config; each command lives in the module of its
concern and calls the rooms that do the work. A command that cannot reach the engine or the journal
(`CannotRun`) ends here, in one place: one line with the fix, exit 1.
"""

from __future__ import annotations

from typing import Any

import click

from watchdog import __version__
from watchdog.cli.context import EXIT_RUNTIME, EXIT_USAGE, Context, fail
from watchdog.cli.daemon import run_command, start_daemon
from watchdog.cli.drain import drain_command
from watchdog.cli.fleet import doctor, healthcheck, plan_command, reset, status
from watchdog.cli.fleet_cluster import fleet_group
from watchdog.cli.gpu import gpu
from watchdog.cli.litellm import litellm
from watchdog.cli.notify import notify_command
from watchdog.cli.report import report
from watchdog.config import ConfigError, parse_listen
from watchdog.daemon.runtime import ConfigSource
from watchdog.logs import configure
from watchdog.ops.connect import CannotRun

SENDING_COMMANDS = ("run", "notify")  # they need the notify targets' secrets (url_env, headers_env)


class WatchdogGroup(click.Group):
    """The top-level group: CannotRun from any command is its one line and exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CannotRun as exc:
            fail(str(exc), EXIT_RUNTIME)


def _http_option(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        parse_listen(value)
    except ValueError as exc:
        fail(f"--http {exc}", EXIT_USAGE)
    return value


@click.group(cls=WatchdogGroup, invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    envvar="GPU_WATCHDOG_CONFIG",
    help="YAML config file (env GPU_WATCHDOG_CONFIG).",
)
@click.option("--daemon", is_flag=True, help="Run the healing loop until SIGTERM/SIGINT (SIGHUP reloads the config).")
@click.option(
    "--dry-run", is_flag=True, default=None, help="Detect and decide, but change nothing; log what would be done."
)
@click.option(
    "--state-dir", type=click.Path(file_okay=False), help="Where the journal lives (env GPU_WATCHDOG_STATE_DIR)."
)
@click.option(
    "--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False), default=None
)
@click.option("--log-format", type=click.Choice(["text", "json"]), default=None)
@click.option(
    "--http",
    "http",
    default=None,
    metavar="HOST:PORT",
    help="/metrics, /healthz, /status (default 127.0.0.1:9108; off).",
)
@click.version_option(__version__, prog_name="gpu-watchdog")
@click.pass_context
def cli(
    ctx: click.Context,
    *,
    config_path: str | None,
    daemon: bool,
    dry_run: bool | None,
    state_dir: str | None,
    log_level: str | None,
    log_format: str | None,
    http: str | None,
) -> None:
    """Heal a Docker fleet of GPU inference containers that opted in with the label gpu-watchdog.enable=true."""
    overrides = {
        "dry_run": dry_run,
        "state_dir": state_dir,
        "log_level": log_level.upper() if log_level else None,
        "log_format": log_format,
        "http": _http_option(http),
    }
    source = ConfigSource(config_path, overrides)
    # Notify secrets (url_env) must be set for the commands that send; `status` and the like work without.
    try:
        config = source.load(secrets=daemon or ctx.invoked_subcommand in SENDING_COMMANDS)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    configure(config.log_level, config.log_format)
    ctx.obj = Context(source, config)
    if daemon:
        if ctx.invoked_subcommand is not None:
            fail("--daemon runs the loop; do not combine it with a subcommand", EXIT_USAGE)
        start_daemon(ctx.obj)
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


for command in (
    run_command, status, reset, drain_command, plan_command, report, healthcheck, doctor, litellm, gpu,
    notify_command, fleet_group,
):  # fmt: skip
    cli.add_command(command)


def main() -> None:
    cli(prog_name="gpu-watchdog")


if __name__ == "__main__":  # pragma: no cover
    main()
