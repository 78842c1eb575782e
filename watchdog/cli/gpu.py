"""`gpu-watchdog gpu list` and `gpu release UUID`: the GPUs as NVML shows them, and their quarantine marks."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from watchdog.cli.context import EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, Context, fail
from watchdog.ops.connect import open_journal
from watchdog.ops.operator_actions import NotFound, release_gpu


@click.group()
def gpu() -> None:
    """The GPUs as NVML shows them, and their quarantine marks."""


@gpu.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def gpu_list(obj: Context, as_json: bool) -> None:
    """Every GPU (read now, under the NVML deadline) with its mark, if any."""
    from watchdog.gpu.nvml import GpuProbe
    from watchdog.gpu.readings import NvmlState

    journal = open_journal(obj.config)
    marks = journal.gpu_marks()
    reading = GpuProbe(obj.config.gpu.deadline).read()
    doc: dict[str, Any] = {
        "nvml": reading.state.value,
        "detail": reading.detail,
        "driver": reading.driver_version,
        "gpus": [
            {
                "index": g.index,
                "uuid": g.uuid,
                "name": g.name,
                "health": g.health.value,
                "memory_used": g.memory_used,
                "memory_total": g.memory_total,
                "temperature": g.temperature,
                "mark": marks[g.uuid].condition.value if g.uuid in marks else None,
            }
            for g in reading.gpus
        ],
        "marks": {u: {"condition": m.condition.value, "reason": m.reason, "since": m.since} for u, m in marks.items()},
    }
    if as_json:
        click.echo(json.dumps(doc, indent=2))
    else:
        click.echo(f"NVML: {reading.state.value}{' (' + reading.detail + ')' if reading.detail else ''}")
        for row in doc["gpus"]:
            used, total = row["memory_used"], row["memory_total"]
            memory = f"{used // 2**20}/{total // 2**20} MiB" if used is not None and total is not None else "-"
            click.echo(
                f"  {row['index']}  {row['uuid'] or '-'}  {row['name'] or '-'}  {row['health']}  {memory}"
                f"{'  ' + str(row['mark']).upper() if row['mark'] else ''}"
            )
        for uuid, mark in marks.items():
            click.echo(f"  mark: {uuid}: {mark.condition.value} since {time.ctime(mark.since)}: {mark.reason}")
    journal.close()
    sys.exit(EXIT_OK if reading.state in (NvmlState.OK, NvmlState.NO_DRIVER) else EXIT_RUNTIME)


@gpu.command("release")
@click.argument("uuid")
@click.pass_obj
def gpu_release(obj: Context, uuid: str) -> None:
    """Put a quarantined or drained GPU back in service (after a reboot or reset)."""
    journal = open_journal(obj.config)
    try:
        click.echo(release_gpu(journal, uuid, "`gpu-watchdog gpu release`", time.time()))
    except NotFound as exc:
        fail(str(exc), EXIT_USAGE)
    finally:
        journal.close()
