"""The notify section: where notifications go, and the secrets (URLs, header values) they need.

A module of its own because its rules differ from the rest: a target's URL and header values
are secrets, so no error here ever echoes them (only names and keys), and they may come from
the environment (url_env, headers_env), which `env` supplies. Pure: no I/O; apprise is only
looked for, never imported.
"""

from __future__ import annotations

import difflib
import importlib.util
import re
from collections.abc import Mapping
from dataclasses import fields, replace
from typing import Any

from watchdog.config.fields import _check_keys, _int, _positive_seconds, _section, shown
from watchdog.config.model import ConfigError, NotifyConfig, NotifyTarget
from watchdog.ops.notices import NOTIFY_EVENTS, NOTIFY_KINDS, RESERVED_FIELDS

_TARGET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_TARGET_KEYS = ["name", "kind", "url", "url_env", "events", "key", "headers", "headers_env"]


def apprise_installed() -> bool:
    """Whether the optional apprise package can be imported (found, not imported: config stays pure)."""
    try:
        return importlib.util.find_spec("apprise") is not None
    except (ImportError, ValueError):
        return False


def _parse_notify(data: Mapping[str, Any], env: Mapping[str, str], secrets: bool = True) -> NotifyConfig:
    _check_keys("notify", data, [f.name for f in fields(NotifyConfig)])
    values: dict[str, Any] = {}
    for key, value in data.items():
        path = f"notify.{key}"
        if key == "dedup_window":
            values[key] = _positive_seconds(path, value, allow_zero=True)
        elif key == "timeout":
            values[key] = _positive_seconds(path, value)
            if values[key] > 60:
                raise ConfigError(f"config: {path}={shown(value)}: must be at most 60 s; a webhook answers in seconds")
        elif key == "rate_limit_per_minute":
            values[key] = _int(path, value, 1)
        elif key == "retries":
            values[key] = _int(path, value, 0)
            if values[key] > 5:
                raise ConfigError(f"config: {path}={shown(value)}: must be from 0 to 5")
        elif key == "host":
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigError(f"config: {path}={shown(value)}: must be the name messages give this host, or null")
            values[key] = value.strip() if isinstance(value, str) else None
        elif key == "targets":
            if value is None:
                value = []
            if not isinstance(value, list):
                raise ConfigError(
                    f"config: {path} must be a list of targets, e.g. [{{name: ops, kind: slack, url_env: SLACK_URL}}]"
                )
            targets = [_parse_target(f"{path}[{i}]", item, env, secrets) for i, item in enumerate(value)]
            names = [t.name for t in targets]
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ConfigError(
                    f"config: {path}: target name {shown(twice[0])} is used twice; give each its own name"
                )
            values[key] = tuple(targets)
    return replace(NotifyConfig(), **values)


def _parse_target(where: str, item: Any, env: Mapping[str, str], secrets: bool) -> NotifyTarget:
    """One target. Error messages name the target and the key, never the URL or a header value."""
    data = _section(where, item)
    _check_keys(where, data, _TARGET_KEYS)
    name = data.get("name")
    if not isinstance(name, str) or not _TARGET_NAME.match(name):
        raise ConfigError(
            f"config: {where}.name={shown(name)}: each target needs a name (letters, digits, . _ -), e.g. ops-slack"
        )
    who = f"{where} ({name})"
    kind = data.get("kind")
    if kind not in NOTIFY_KINDS:
        raise ConfigError(f"config: {who}.kind={shown(kind)}: must be one of {', '.join(NOTIFY_KINDS)}")
    url = _target_url(who, kind, data, env, secrets)
    events: tuple[str, ...] = NOTIFY_EVENTS
    if "events" in data:
        listed = data["events"]
        if listed == "all":
            listed = list(NOTIFY_EVENTS)
        if not isinstance(listed, list) or not listed or not all(isinstance(e, str) for e in listed):
            raise ConfigError(
                f"config: {who}.events={shown(listed)}: must be a list of events (or all), e.g. [fault, given-up]"
            )
        for event in listed:
            if event not in NOTIFY_EVENTS:
                close = difflib.get_close_matches(event, NOTIFY_EVENTS, n=1)
                hint = f"did you mean '{close[0]}'?" if close else f"known: {', '.join(NOTIFY_EVENTS)}"
                raise ConfigError(f"config: {who}.events: unknown event {shown(event)} ({hint})")
        events = tuple(e for e in NOTIFY_EVENTS if e in listed)
    key = "text"
    if "key" in data:
        if kind != "webhook":
            raise ConfigError(f"config: {who}.key: only webhook targets take a key; remove it")
        key = data["key"]
        if not isinstance(key, str) or not key.strip() or key in RESERVED_FIELDS:
            raise ConfigError(
                f"config: {who}.key={shown(key)}: must be the JSON key for the message text, e.g. text or message, "
                f"and none of {', '.join(RESERVED_FIELDS)}"
            )
    headers = _target_headers(who, kind, data, env, secrets)
    if kind == "apprise" and not apprise_installed():
        raise ConfigError(
            f"config: {who}: kind apprise needs the apprise package, which is not installed; "
            "pip install apprise (or install gpu-watchdog[apprise])"
        )
    return NotifyTarget(name, kind, url, data.get("url_env"), events, key, headers)


def _target_url(who: str, kind: str, data: Mapping[str, Any], env: Mapping[str, str], secrets: bool) -> str:
    if "url" in data and "url_env" in data:
        raise ConfigError(
            f"config: {who}: both url and url_env set; keep one (url_env keeps the secret out of the file)"
        )
    if "url_env" in data:
        variable = data["url_env"]
        if not isinstance(variable, str) or not _ENV_NAME.match(variable):
            raise ConfigError(
                f"config: {who}.url_env={shown(variable)}: must be an environment variable name, e.g. SLACK_URL"
            )
        url = env.get(variable, "").strip()
        if not url and not secrets:
            return ""
        if not url:
            raise ConfigError(
                f"config: {who}.url_env: environment variable {variable} is not set; "
                "export it in the daemon's environment (systemd Environment=, compose environment:)"
            )
        source = f"the value of ${variable}"
    elif "url" in data:
        url = data["url"].strip() if isinstance(data["url"], str) else ""
        source = "url"
    else:
        raise ConfigError(f"config: {who}: url_env: NAME (the variable holding the webhook URL) or url: is required")
    if kind == "apprise":
        if "://" not in url or url.startswith("://"):
            raise ConfigError(f"config: {who}: {source} must be an apprise URL, e.g. json://host/path or slack://...")
    elif not re.match(r"^https?://[^/\s]+", url):
        raise ConfigError(f"config: {who}: {source} must be an http:// or https:// URL (value not shown: a secret)")
    return url


def _target_headers(
    who: str, kind: str, data: Mapping[str, Any], env: Mapping[str, str], secrets: bool
) -> tuple[tuple[str, str], ...]:
    headers: dict[str, str] = {}
    for key in ("headers", "headers_env"):
        if key not in data:
            continue
        if kind == "apprise":
            raise ConfigError(f"config: {who}.{key}: apprise targets take headers in their URL; remove {key}")
        section = _section(f"{who}.{key}", data[key])
        for header, value in section.items():
            if not isinstance(header, str) or not _HEADER_NAME.match(header):
                raise ConfigError(f"config: {who}.{key}: {shown(header)} is not a valid HTTP header name")
            if key == "headers":
                if not isinstance(value, str) or "\n" in value or "\r" in value:
                    raise ConfigError(f"config: {who}.headers.{header}: must be a one-line string (value not shown)")
                headers[header] = value
            else:
                if not isinstance(value, str) or not _ENV_NAME.match(value):
                    raise ConfigError(
                        f"config: {who}.headers_env.{header}={shown(value)}: must be an environment variable name"
                    )
                if not env.get(value, "").strip():
                    if not secrets:
                        continue
                    raise ConfigError(
                        f"config: {who}.headers_env.{header}: environment variable {value} is not set; "
                        "export it in the daemon's environment"
                    )
                headers[header] = env[value].strip()
    return tuple(headers.items())
