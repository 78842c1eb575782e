"""Act: the only code that changes containers. Thin, so the rest stays testable."""

from __future__ import annotations

import docker
import requests

from watchdog.containers.engine import ENGINE_ERRORS


class ActionFailed(RuntimeError):
    """The engine refused or failed the action; the message says why."""


class EngineUnreachable(ActionFailed):
    """The call never reached the engine (its socket gone, connection refused): not an attempt at all."""


def restart_container(client: docker.DockerClient, container_id: str, stop_timeout: float) -> None:
    """`docker restart`: stops a running container (SIGTERM, then SIGKILL after the timeout) and starts it."""
    try:
        client.api.restart(container_id, timeout=max(0, round(stop_timeout)))
    except docker.errors.NotFound as exc:
        raise ActionFailed("container is gone") from exc
    except (requests.exceptions.ConnectionError, ConnectionError, FileNotFoundError) as exc:
        raise EngineUnreachable(str(exc)) from exc
    except ENGINE_ERRORS as exc:
        raise ActionFailed(str(exc)) from exc
