"""The opt-in GPU reset: stop the GPU's containers, reset it, verify, start them.

Off by default (the watchdog drains and alerts instead): a reset needs every
process on the GPU gone and root. The command is an argument list run without
a shell; `{uuid}` is the only substitution.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence

import docker
from loguru import logger

from watchdog.containers.engine import ENGINE_ERRORS


class ResetFailed(RuntimeError):
    """One line: which step failed and why."""


def reset_command(template: Sequence[str], uuid: str) -> list[str]:
    return [part.replace("{uuid}", uuid) for part in template]


def run_reset(
    client: docker.DockerClient,
    uuid: str,
    container_ids: Sequence[str],
    template: Sequence[str],
    timeout: float,
    stop_timeout: float,
    verify: Callable[[], str | None],
) -> None:
    """Raises ResetFailed; the containers stay stopped then (the GPU is quarantined by the caller)."""
    for container_id in container_ids:
        try:
            client.api.stop(container_id, timeout=int(stop_timeout))
        except ENGINE_ERRORS as exc:
            raise ResetFailed(f"could not stop container {container_id[:12]}: {exc}") from exc
    argv = reset_command(template, uuid)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise ResetFailed(f"reset command not found: {argv[0]}; install it or set gpu.reset_command") from None
    except subprocess.TimeoutExpired:
        raise ResetFailed(f"reset command did not finish within {timeout:g} s: {' '.join(argv)}") from None
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip().splitlines()
        raise ResetFailed(f"{' '.join(argv)} exited {done.returncode}: {output[-1] if output else 'no output'}")
    problem = verify()
    if problem is not None:
        raise ResetFailed(f"GPU {uuid} not healthy after the reset: {problem}")
    for container_id in container_ids:
        try:
            client.api.start(container_id)
        except ENGINE_ERRORS as exc:
            raise ResetFailed(f"GPU reset, but container {container_id[:12]} did not start: {exc}") from exc
    logger.bind(gpu=uuid).info("GPU {} reset; {} container(s) started again", uuid, len(container_ids))
