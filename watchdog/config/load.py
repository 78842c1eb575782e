"""Config from a file and the environment: the one place the config package does I/O.

load_config reads the YAML file (and nothing else) and hands the mapping to parse_config;
apply_env then lets the GPU_WATCHDOG_* variables win over the file, as the README documents.
Read errors, bad UTF-8 and bad YAML become one-line ConfigErrors naming the file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from watchdog.config.fields import shown
from watchdog.config.model import (
    _LOG_FORMATS,
    _LOG_LEVELS,
    ENV_CONFIG,
    ENV_DRY_RUN,
    ENV_LOG_FORMAT,
    ENV_LOG_LEVEL,
    ENV_STATE_DIR,
    Config,
    ConfigError,
)
from watchdog.config.parse import parse_config
from watchdog.units import parse_bool


def load_config(path: str | Path | None, env: Mapping[str, str] | None = None, secrets: bool = True) -> Config:
    """Config from the file at `path` (or $GPU_WATCHDOG_CONFIG), then env overrides (`secrets`: parse_config)."""
    env = os.environ if env is None else env
    path = path or env.get(ENV_CONFIG) or None
    data: Any = None
    if path:
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"config: {file} is not UTF-8 text; save it as UTF-8 YAML") from None
        except OSError as exc:
            raise ConfigError(f"config: cannot read {file}: {exc.strerror}; check --config / {ENV_CONFIG}") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"config: {file}{where} is not valid YAML; fix the syntax there") from None
        except ValueError as exc:  # valid syntax Python cannot convert: 2024-13-01, a 5000-digit number
            raise ConfigError(
                f"config: {file} holds a value YAML reads as a date or number but cannot convert "
                f"({shown(str(exc))}); fix it, or quote it if it is text"
            ) from None
        if data is not None and not isinstance(data, Mapping):
            raise ConfigError(f"config: {file} must hold a mapping of settings, got {type(data).__name__}")
    config = parse_config(data, env, secrets)
    return apply_env(config, env)


def apply_env(config: Config, env: Mapping[str, str]) -> Config:
    """Environment variables win over the file (documented in the README)."""
    values: dict[str, Any] = {}
    if env.get(ENV_STATE_DIR):
        values["state_dir"] = env[ENV_STATE_DIR]
    if env.get(ENV_DRY_RUN):
        try:
            values["dry_run"] = parse_bool(env[ENV_DRY_RUN])
        except ValueError:
            raise ConfigError(f"env {ENV_DRY_RUN}={shown(env[ENV_DRY_RUN])}: must be true or false") from None
    if env.get(ENV_LOG_FORMAT):
        if env[ENV_LOG_FORMAT] not in _LOG_FORMATS:
            raise ConfigError(f"env {ENV_LOG_FORMAT}={shown(env[ENV_LOG_FORMAT])}: must be text or json")
        values["log_format"] = env[ENV_LOG_FORMAT]
    if env.get(ENV_LOG_LEVEL):
        if env[ENV_LOG_LEVEL].upper() not in _LOG_LEVELS:
            raise ConfigError(
                f"env {ENV_LOG_LEVEL}={shown(env[ENV_LOG_LEVEL])}: must be one of {', '.join(_LOG_LEVELS)}"
            )
        values["log_level"] = env[ENV_LOG_LEVEL].upper()
    return replace(config, **values)
