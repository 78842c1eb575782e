"""watchdog.config: defaults, strict YAML loading, env overrides."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from watchdog.config import (
    BreakerConfig,
    Config,
    ConfigError,
    RamPreflightConfig,
    load_config,
    parse_config,
)

FULL_YAML = """\
poll_interval: 2s
probe_timeout: 1500ms
failure_threshold: 4
default_start_period: 3m
max_concurrent_restarts: 2
recovery_timeout: 10m
stop_settle: 0.5
label_prefix: acme.gw.
dry_run: yes
events: false
state_dir: /var/lib/gpu-watchdog
log_format: json
log_level: debug
breaker:
  max_restarts: 3
  window: 10m
  backoff_initial: 5
  backoff_max: 2m
  cooldown: 1h
ram_preflight:
  enabled: true
  factor: 1.25
  reserve: 2g
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "watchdog.yaml"
    path.write_text(text)
    return path


def test_defaults_match_the_seeds() -> None:
    config = Config()
    assert config.poll_interval == 5.0
    assert config.probe_timeout == 3.0
    assert config.failure_threshold == 3
    assert config.max_concurrent_restarts == 1
    assert config.breaker == BreakerConfig(max_restarts=5, window=300.0, backoff_initial=10.0, backoff_max=60.0)
    assert config.ram_preflight == RamPreflightConfig(enabled=True, factor=1.1, reserve=1024**3)
    assert config.label_prefix == "gpu-watchdog"
    assert config.dry_run is False


@pytest.mark.parametrize("data", [None, {}])
def test_empty_config_gives_defaults(data: dict[str, Any] | None) -> None:
    assert parse_config(data) == Config()


def test_no_file_and_no_env_gives_defaults() -> None:
    assert load_config(None, env={}) == Config()


def test_full_yaml_file_loads(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL_YAML), env={})
    assert config == Config(
        poll_interval=2.0,
        probe_timeout=1.5,
        failure_threshold=4,
        default_start_period=180.0,
        max_concurrent_restarts=2,
        recovery_timeout=600.0,
        stop_settle=0.5,
        label_prefix="acme.gw",
        dry_run=True,
        events=False,
        state_dir="/var/lib/gpu-watchdog",
        log_format="json",
        log_level="DEBUG",
        breaker=BreakerConfig(max_restarts=3, window=600.0, backoff_initial=5.0, backoff_max=120.0, cooldown=3600.0),
        ram_preflight=RamPreflightConfig(enabled=True, factor=1.25, reserve=2 * 1024**3),
    )


def test_config_path_from_env_is_used_when_none_is_given(tmp_path: Path) -> None:
    path = write(tmp_path, "failure_threshold: 7\n")
    assert load_config(None, env={"GPU_WATCHDOG_CONFIG": str(path)}).failure_threshold == 7


@pytest.mark.parametrize(
    ("data", "where", "hint"),
    [
        ({"breaker": {"max_restart": 3}}, "breaker.max_restart", "did you mean 'max_restarts'"),
        ({"poll_intervl": 5}, "poll_intervl", "did you mean 'poll_interval'"),
        ({"ram_preflight": {"reserv": "1g"}}, "ram_preflight.reserv", "did you mean 'reserve'"),
        ({"zzz": 1}, "zzz", "known keys: poll_interval"),
    ],
)
def test_unknown_key_is_an_error_naming_the_key_path_and_a_hint(data: dict[str, Any], where: str, hint: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    assert f"'{where}'" in str(caught.value)
    assert hint in str(caught.value)


@pytest.mark.parametrize(
    ("yaml_text", "key_path"),
    [
        ("poll_interval: fast\n", "poll_interval"),
        ("poll_interval: 0\n", "poll_interval"),
        ("failure_threshold: 0\n", "failure_threshold"),
        ("failure_threshold: 2.5\n", "failure_threshold"),
        ("max_concurrent_restarts: true\n", "max_concurrent_restarts"),
        ("dry_run: maybe\n", "dry_run"),
        ("log_format: xml\n", "log_format"),
        ("log_level: loud\n", "log_level"),
        ("label_prefix: 'has space'\n", "label_prefix"),
        ("state_dir: 5\n", "state_dir"),
        ("ram_preflight:\n  reserve: lots\n", "ram_preflight.reserve"),
        ("ram_preflight:\n  factor: big\n", "ram_preflight.factor"),
        ("ram_preflight:\n  enabled: sometimes\n", "ram_preflight.enabled"),
        ("breaker: 5\n", "breaker"),
        ("breaker:\n  max_restarts: 0\n", "breaker.max_restarts"),
        ("breaker:\n  window: a while\n", "breaker.window"),
    ],
)
def test_wrong_type_is_an_error_naming_the_key_path(tmp_path: Path, yaml_text: str, key_path: str) -> None:
    with pytest.raises(ConfigError, match=rf"\b{key_path}\b"):
        load_config(write(tmp_path, yaml_text), env={})


def test_probe_timeout_far_above_poll_interval_is_rejected() -> None:
    with pytest.raises(ConfigError, match="probe_timeout"):
        parse_config({"poll_interval": 1, "probe_timeout": 5})


def test_backoff_max_below_backoff_initial_is_rejected() -> None:
    with pytest.raises(ConfigError, match="backoff_max"):
        parse_config({"breaker": {"backoff_initial": 30, "backoff_max": 10}})


def test_invalid_yaml_is_an_error_with_the_line_number(tmp_path: Path) -> None:
    path = write(tmp_path, "poll_interval: 5\nfailure_threshold: 3\n  bad: indent\nevents: true\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    message = str(caught.value)
    assert str(path) in message
    assert "not valid YAML" in message
    assert " line 3 " in message


def test_yaml_that_is_not_a_mapping_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write(tmp_path, "- 1\n- 2\n"), env={})


def test_missing_file_is_an_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="cannot read") as caught:
        load_config(missing, env={})
    assert str(missing) in str(caught.value)


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("# café\npoll_interval: 5\n".encode("latin-1"))
    with pytest.raises(ConfigError):
        load_config(path, env={})


@pytest.mark.parametrize(
    "yaml_text",
    [
        "poll_interval: .nan\n",
        "poll_interval: .inf\n",
        "ram_preflight:\n  factor: .nan\n",
        "ram_preflight:\n  reserve: .inf\n",
        "poll_interval: 1" + "0" * 400 + "\n",
        "ram_preflight:\n  factor: 1" + "0" * 400 + "\n",
    ],
    ids=["poll-nan", "poll-inf", "factor-nan", "reserve-inf", "poll-huge-int", "factor-huge-int"],
)
def test_non_finite_or_out_of_range_numbers_are_config_errors(tmp_path: Path, yaml_text: str) -> None:
    with pytest.raises(ConfigError):
        load_config(write(tmp_path, yaml_text), env={})


@pytest.mark.parametrize(
    ("env", "field", "expected"),
    [
        ({"GPU_WATCHDOG_STATE_DIR": "/srv/state"}, "state_dir", "/srv/state"),
        ({"GPU_WATCHDOG_DRY_RUN": "YES"}, "dry_run", True),
        ({"GPU_WATCHDOG_DRY_RUN": "0"}, "dry_run", False),
        ({"GPU_WATCHDOG_LOG_FORMAT": "json"}, "log_format", "json"),
        ({"GPU_WATCHDOG_LOG_LEVEL": "warning"}, "log_level", "WARNING"),
        ({"GPU_WATCHDOG_STATE_DIR": ""}, "state_dir", "/from/file"),
    ],
)
def test_env_overrides_win_over_the_file(tmp_path: Path, env: dict[str, str], field: str, expected: object) -> None:
    path = write(tmp_path, "state_dir: /from/file\ndry_run: true\nlog_format: text\n")
    config = load_config(path, env=env)
    assert getattr(config, field) == expected


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"GPU_WATCHDOG_DRY_RUN": "perhaps"}, "GPU_WATCHDOG_DRY_RUN"),
        ({"GPU_WATCHDOG_LOG_FORMAT": "xml"}, "GPU_WATCHDOG_LOG_FORMAT"),
        ({"GPU_WATCHDOG_LOG_LEVEL": "chatty"}, "GPU_WATCHDOG_LOG_LEVEL"),
    ],
)
def test_bad_env_override_is_an_error_naming_the_variable(env: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_config(None, env=env)


def test_state_dir_uses_xdg_state_home_when_set() -> None:
    assert Config().resolved_state_dir({"XDG_STATE_HOME": "/x/state"}) == Path("/x/state/gpu-watchdog")


def test_state_dir_falls_back_to_home_local_state() -> None:
    assert Config().resolved_state_dir({}) == Path.home() / ".local" / "state" / "gpu-watchdog"


def test_explicit_state_dir_wins_over_xdg_and_expands_user() -> None:
    config = Config(state_dir="~/wd")
    assert config.resolved_state_dir({"XDG_STATE_HOME": "/x/state"}) == Path.home() / "wd"


KEYS = [
    "poll_interval",
    "probe_timeout",
    "failure_threshold",
    "default_start_period",
    "max_concurrent_restarts",
    "recovery_timeout",
    "stop_settle",
    "label_prefix",
    "dry_run",
    "events",
    "state_dir",
    "log_format",
    "log_level",
    "breaker",
    "ram_preflight",
    "max_restarts",
    "window",
    "backoff_initial",
    "backoff_max",
    "cooldown",
    "enabled",
    "factor",
    "reserve",
]
# Finite, float-range numbers here: the non-finite/overflow cases have their own test above.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**6), max_value=10**15),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(["5s", "2m", "4g", "yes", "json", "debug", "-1", "0"]),
)
config_keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=8), st.integers(0, 3))
nested = st.recursive(
    scalars, lambda inner: st.dictionaries(config_keys, inner, max_size=5) | st.lists(inner, max_size=3), max_leaves=12
)


@given(st.dictionaries(config_keys, nested, max_size=8))
def test_parse_config_returns_a_config_or_raises_config_error(data: dict[Any, Any]) -> None:
    try:
        config = parse_config(data)
    except ConfigError as exc:
        assert str(exc).startswith("config: ")
    else:
        assert isinstance(config, Config)
        assert math.isfinite(config.poll_interval) and config.poll_interval > 0
