"""`gpu-watchdog fleet status`: every host of a fleet sharing one router view, from Redis alone."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from watchdog.cli.context import EXIT_RUNTIME, EXIT_USAGE, Context, fail
from watchdog.cluster.fleet_view import FleetView, summary
from watchdog.ops.status import _age as age_text


@click.group("fleet")
def fleet_group() -> None:
    """Several hosts, one router view (the `cluster` section): what Redis holds."""


@fleet_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def fleet_status(obj: Context, as_json: bool) -> None:
    """Every host: its heartbeat, its engine, its deployments in and out, its GPUs; the hosts gone silent."""
    from watchdog.cluster.fleet_reader import read_fleet
    from watchdog.cluster.redis_link import error_text, redis_errors, where

    cluster = obj.config.cluster
    if not cluster.enabled:
        fail("cluster.redis_url is not set: this host keeps its rotation in a file; set it to read a fleet", EXIT_USAGE)
    now = time.time()
    try:
        view = read_fleet(cluster, now)
    except redis_errors() as exc:
        fail(
            f"Redis {where(cluster)} unreachable ({error_text(exc)}); check cluster.redis_url and the password",
            EXIT_RUNTIME,
        )
    doc = fleet_document(view, now, cluster.key_prefix)
    click.echo(json.dumps(doc, indent=2) if as_json else render_fleet(doc, now))


@fleet_group.command("render")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Where the router host's config goes.")
@click.option("--template", type=click.Path(dir_okay=False), default=None, help="Default: litellm.template.")
@click.pass_obj
def fleet_render(obj: Context, out: str, template: str | None) -> None:
    """The router host's LiteLLM config: every host's deployments from Redis (run its proxies with
    GPU_WATCHDOG_CLUSTER_REDIS_URL set, so they route by the fleet's view)."""
    from watchdog.cluster.fleet_config import fleet_deployments
    from watchdog.cluster.fleet_reader import read_fleet
    from watchdog.cluster.redis_link import error_text, redis_errors, where
    from watchdog.files import write_if_changed
    from watchdog.router.capacity import plan_capacity
    from watchdog.router.config_writer import install_callback
    from watchdog.router.litellm_config import ROTATION_FILE, TemplateError, dump_config, parse_template, render_config

    cluster = obj.config.cluster
    if not cluster.enabled:
        fail("cluster.redis_url is not set: `fleet render` reads the fleet from Redis; set it", EXIT_USAGE)
    template_path = Path(template or obj.config.litellm.template)
    try:
        parsed = parse_template(template_path.read_text(encoding="utf-8"), str(template_path))
    except (OSError, UnicodeDecodeError):
        fail(f"cannot read the LiteLLM template {template_path}; pass --template FILE", EXIT_USAGE)
    except TemplateError as exc:
        fail(str(exc), EXIT_USAGE)
    try:
        view = read_fleet(cluster, time.time())
    except redis_errors() as exc:
        fail(
            f"Redis {where(cluster)} unreachable ({error_text(exc)}); check cluster.redis_url and the password",
            EXIT_RUNTIME,
        )
    deployments = fleet_deployments(view)
    config = render_config(parsed, deployments, plan_capacity([], obj.config.capacity, None))
    out_path = Path(out)
    try:
        install_callback(out_path, template_path)
        changed = write_if_changed(out_path, dump_config(config, str(template_path), ROTATION_FILE), keep_previous=True)
    except OSError as exc:
        fail(f"cannot write {out_path} ({exc.strerror}); pass --out FILE in a writable directory", EXIT_RUNTIME)
    state = "written" if changed else "unchanged"
    click.echo(f"{out_path}: {state}, {len(deployments)} deployment(s) from {len(view.hosts)} host(s)")


def fleet_document(view: FleetView, now: float, prefix: str) -> dict[str, Any]:
    rows = summary(view.hosts, now)
    for row, host in zip(rows, view.hosts, strict=True):
        row["out"] = {d.id: d.reason for d in host.deployments if d.state != "in"}
        row["states"] = {d.id: d.state for d in host.deployments}
        row["gpus"] = list(host.gpus)
    return {
        "prefix": prefix,
        "hosts": rows,
        "silent": {h: {"last_heartbeat": at, "age": round(now - at, 1)} for h, at in view.silent.items()},
        "ignored": dict(view.rejected),
    }


def render_fleet(doc: dict[str, Any], now: float) -> str:
    lines = [f"fleet {doc['prefix']}: {len(doc['hosts'])} host(s) publishing, {len(doc['silent'])} silent"]
    for row in doc["hosts"]:
        gpus = " ".join(
            f"{g.get('index')}:{'-' if g.get('score') is None else format(g['score'], '.2f')}" for g in row["gpus"]
        )
        lines.append(
            f"  {row['host']}: heartbeat {row['heartbeat_age']:.1f} s ago, engine {row['engine']}, "
            f"{row['in']}/{row['deployments']} deployment(s) in rotation" + (f", GPUs {gpus}" if gpus else "")
        )
        lines.extend(f"    out: {ident}: {why}" for ident, why in sorted(row["out"].items()))
    for host, silent in doc["silent"].items():
        lines.append(
            f"  {host}: SILENT, last heartbeat {age_text(now, silent['last_heartbeat'])}: "
            "its deployments are routed as LiteLLM alone would"
        )
    lines.extend(f"  ignored {key}: {why}" for key, why in doc["ignored"].items())
    return "\n".join(lines)
