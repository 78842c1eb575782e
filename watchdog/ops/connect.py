"""Reaching the Docker engine and the journal the way the CLI's commands and the daemon do. I/O.

When one cannot be reached, `CannotRun` carries the one line an operator reads (worded in `messages`).
"""

from __future__ import annotations

from typing import Any

import docker

from watchdog.config import Config
from watchdog.containers.engine import ENGINE_ERRORS, DockerProbe, EngineUnavailable
from watchdog.journal import Journal
from watchdog.ops.messages import engine_unreachable

ENGINE_TIMEOUT = 30  # s per engine call for the CLI, the HTTP endpoint and doctor


class CannotRun(Exception):
    """The engine, the journal or the instance lock is not there for us: the message is one line with the fix."""


def docker_client() -> docker.DockerClient:
    """The engine the usual way (DOCKER_HOST, else the default socket); API version negotiated."""
    return docker.from_env(timeout=ENGINE_TIMEOUT)


def connect_engine() -> docker.DockerClient:
    """A client whose engine answered a ping; CannotRun (the line with the fix) when it does not."""
    try:
        client = docker_client()
        client.ping()
        return client
    except ENGINE_ERRORS as exc:
        raise CannotRun(engine_unreachable(exc)) from exc


def fleet_snapshot(config: Config) -> list[Any]:
    """The labelled containers now, through a client of its own (closed after). ENGINE_ERRORS, EngineUnavailable."""
    client = docker_client()
    try:
        return DockerProbe(client, config.label_prefix).snapshot()
    finally:
        client.close()


def labelled_containers(client: docker.DockerClient, config: Config) -> list[Any]:
    """The labelled containers through `client`; CannotRun when the engine stops answering meanwhile."""
    try:
        return DockerProbe(client, config.label_prefix).snapshot()
    except EngineUnavailable as exc:
        raise CannotRun(engine_unreachable(exc)) from exc


def open_journal(config: Config) -> Journal:
    """The journal in the state directory; CannotRun when it cannot be opened (a command needs its record)."""
    state_dir = config.resolved_state_dir()
    try:
        return Journal.in_dir(state_dir)
    except Exception as exc:  # sqlite3.Error or a permission problem
        raise CannotRun(
            f"cannot open the journal in {state_dir}: {exc}; set state_dir or GPU_WATCHDOG_STATE_DIR"
        ) from exc
