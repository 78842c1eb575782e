"""`gpu-watchdog litellm render`: the LiteLLM proxy's config from the template, the fleet and the capacity plan."""

from __future__ import annotations

from pathlib import Path

import click

from watchdog.cli.context import EXIT_RUNTIME, EXIT_USAGE, Context, fail
from watchdog.cli.context import fleet_now as _fleet_now  # the name litellm_render's body has always called


@click.group()
def litellm() -> None:
    """The LiteLLM proxy's config, rendered from litellm/config.template.yaml, the fleet and the plan."""


@litellm.command("render")
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Where to write the config (default: litellm.out, litellm/config.yaml).",
)
@click.option("--template", type=click.Path(dir_okay=False), default=None, help="Default: litellm.template.")
@click.pass_obj
def litellm_render(obj: Context, out: str | None, template: str | None) -> None:
    """Write the proxy config (atomically; not rewritten when unchanged) and the callback module next to it."""

    from watchdog.containers.host import mem_total
    from watchdog.router.config_writer import api_bases_on_disk, write_router_config
    from watchdog.router.litellm_config import TemplateError, parse_template
    from watchdog.router.wanted_config import wanted_config

    config = obj.config
    out_path = Path(out or config.litellm.out)
    template_path = Path(template or config.litellm.template)
    try:
        text = template_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
        fail(f"cannot read the LiteLLM template {template_path} ({why}); pass --template FILE", EXIT_USAGE)
    try:
        parsed = parse_template(text, str(template_path))
    except TemplateError as exc:
        fail(str(exc), EXIT_USAGE)
    containers, journal, given_up = _fleet_now(config)
    marks = journal.gpu_marks()
    journal.close()
    # What the daemon writes, the same way: a stopped container keeps the URL the file on disk has.
    wanted = wanted_config(
        containers,
        marks,
        given_up,
        policy=config.capacity,
        host_total=mem_total(),
        known=api_bases_on_disk(out_path),
        fallbacks=config.litellm.fallbacks,
        label_prefix=config.label_prefix,
    )
    try:
        changed = write_router_config(wanted, parsed, out_path=out_path, template_path=template_path)
    except OSError as exc:
        fail(f"cannot write {out_path} ({exc.strerror}); pass --out FILE in a writable directory", EXIT_RUNTIME)
    for name in wanted.unreachable:
        click.echo(
            f"gpu-watchdog: warning: no URL for {name}: left out; publish its port or set the label "
            f"{config.label_prefix}.api-base",
            err=True,
        )
    for problem in wanted.fallbacks.problems:
        click.echo(f"gpu-watchdog: warning: {problem}", err=True)
    state = "written" if changed else "unchanged"
    click.echo(f"{out_path}: {state}, {len(wanted.deployments)} deployment(s); {wanted.plan.text}")
