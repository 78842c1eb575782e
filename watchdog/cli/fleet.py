"""The fleet as an operator asks about it: `status`, `reset NAME`, `plan`, `healthcheck`, `doctor`."""

from __future__ import annotations

import json
import sys
import time

import click
from loguru import logger

from watchdog.cli.context import EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, Context, fail, fleet_now
from watchdog.containers.engine import ENGINE_ERRORS, EngineUnavailable
from watchdog.model import ContainerSnapshot
from watchdog.ops.connect import connect_engine, fleet_snapshot, labelled_containers, open_journal
from watchdog.ops.messages import engine_unreachable
from watchdog.ops.operator_actions import NotFound, reset_container
from watchdog.ops.status import STATUS_FILE, build_status, daemon_max_age, read_daemon_view, render_table

RESET_ERRORS: tuple[type[BaseException], ...] = (EngineUnavailable, *ENGINE_ERRORS)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def status(obj: Context, as_json: bool) -> None:
    """Every managed container: GPU(s), state, health, last fault, restarts in the last hour, breaker."""
    client = connect_engine()
    journal = open_journal(obj.config)
    containers = labelled_containers(client, obj.config)
    doc = build_status(containers, journal, obj.config, time.time(), obj.config.resolved_state_dir())
    click.echo(json.dumps(doc, indent=2) if as_json else render_table(doc))


def managed_or_none(obj: Context, doing: str) -> list[ContainerSnapshot] | None:
    """The managed containers, or None (said in the log) when the engine is unreachable: for an operator's action."""
    try:
        return [c for c in fleet_snapshot(obj.config) if c.managed]
    except RESET_ERRORS as exc:
        logger.warning("{}", engine_unreachable(exc, f"{doing} without checking that it exists"))
        return None


@click.command()
@click.argument("name")
@click.pass_obj
def reset(obj: Context, name: str) -> None:
    """Re-arm the crash-loop breaker of NAME and forget that it was stopped on purpose: it is healed again."""
    journal = open_journal(obj.config)
    containers = managed_or_none(obj, f"resetting {name}")
    managed = None if containers is None else [c.name for c in containers]
    try:
        click.echo(reset_container(journal, name, managed, "`gpu-watchdog reset`", time.time()))
    except NotFound as exc:
        fail(str(exc), EXIT_USAGE)
    finally:
        journal.close()


@click.command("plan")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def plan_command(obj: Context, as_json: bool) -> None:
    """The capacity plan for the fleet in service: rpm, parallel limits, memory limits, and the verdict."""
    from watchdog.containers.host import mem_total
    from watchdog.router.capacity import members_from_fleet, plan_capacity, render

    config = obj.config
    containers, journal, given_up = fleet_now(config)
    now = time.time()
    view = read_daemon_view(config.resolved_state_dir(), now, max_age=daemon_max_age(config.poll_interval)) or {}
    faulty = {cid for cid, seen in (view.get("containers") or {}).items() if seen.get("fault")}
    members = members_from_fleet(containers, faulty, journal.gpu_marks(), given_up)
    journal.close()
    result = plan_capacity(members, config.capacity, mem_total())
    click.echo(json.dumps(result.as_dict(), indent=2) if as_json else render(result))
    sys.exit(EXIT_OK if result.memory.fits else EXIT_RUNTIME)


@click.command()
@click.pass_obj
def healthcheck(obj: Context) -> None:
    """Exit 0 if this state dir's daemon finished a cycle recently (for a container HEALTHCHECK), else 1.

    It reads the status file the loop rewrites every cycle: a hung loop, not just a dead
    process, turns the check red. No engine call, no journal lock.
    """
    config = obj.config
    state_dir = config.resolved_state_dir()
    max_age = daemon_max_age(config.poll_interval)
    view = read_daemon_view(state_dir, time.time(), max_age)
    if view is None:
        fail(
            f"no cycle in the last {max_age:g} s ({state_dir / STATUS_FILE} missing or stale): loop down or hung",
            EXIT_RUNTIME,
        )
    click.echo(f"ok: last cycle {time.time() - float(view['written_at']):.1f} s ago")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def doctor(obj: Context, as_json: bool) -> None:
    """Check the host and the fleet: one line per finding with the fix; exit 0 only when all is well."""
    from watchdog.ops.doctor import all_well, collect

    findings = collect(obj.config)
    if as_json:
        click.echo(json.dumps([vars(f) | {"level": f.level.value} for f in findings], indent=2))
    else:
        for finding in findings:
            click.echo(finding.line())
    sys.exit(EXIT_OK if all_well(findings) else EXIT_RUNTIME)
