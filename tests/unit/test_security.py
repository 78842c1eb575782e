"""Security properties of the code itself: no shell ever, and hostile labels or config never crash or act.

- No module runs a shell: no `shell=True`, no `os.system`/`os.popen`, and every subprocess gets an argv
  list, never a string (checked on the syntax tree of every module, so a new call is checked too).
- The two commands the watchdog can run (the GPU reset, the LiteLLM restart command) keep label, config and
  NVML text as single arguments: a `$(...)` in them is a literal, run for real here.
- Labels and config fuzzed (hypothesis): never a crash; a problem is one line that names the label or key.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from watchdog.config import ConfigError, load_config, parse_config
from watchdog.containers.labels import KNOWN_LABELS, parse_spec
from watchdog.gpu.reset import reset_command

PACKAGE = Path(__file__).resolve().parents[2] / "watchdog"
P = "gpu-watchdog"
RUNNERS = {"run", "Popen", "call", "check_call", "check_output"}
SHELLS = {("os", "system"), ("os", "popen"), ("subprocess", "getoutput"), ("subprocess", "getstatusoutput")}


def calls(tree: ast.AST) -> list[ast.Call]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)]


def dotted(func: ast.expr) -> tuple[str, str] | None:
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        return func.value.id, func.attr
    return None


def test_no_module_runs_a_shell() -> None:
    checked = 0
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for call in calls(tree):
            where = f"{path.name}:{call.lineno}"
            name = dotted(call.func)
            assert name not in SHELLS, f"{where}: {name} runs a shell"
            for keyword in call.keywords:
                if keyword.arg == "shell":
                    assert isinstance(keyword.value, ast.Constant) and keyword.value.value is False, where
            if name and name[0] == "subprocess" and name[1] in RUNNERS:
                checked += 1
                argv = call.args[0] if call.args else next(k.value for k in call.keywords if k.arg == "args")
                assert not isinstance(argv, ast.Constant | ast.JoinedStr | ast.BinOp), f"{where}: argv is a string"
    assert checked >= 2  # the GPU reset and the LiteLLM restart command: the scan does see them


def test_the_gpu_reset_keeps_nvml_text_one_argument(tmp_path: Path) -> None:
    hostile = "GPU-1; touch pwned-by-semicolon $(touch pwned-by-subshell)"
    argv = reset_command(["touch", "{uuid}"], hostile)
    assert argv == ["touch", hostile]
    subprocess.run(argv, cwd=tmp_path, check=True, timeout=10)
    assert sorted(p.name for p in tmp_path.iterdir()) == [hostile]  # one file, literally named so


def test_the_litellm_restart_command_is_argv_not_a_shell_line(tmp_path: Path) -> None:
    config = parse_config({"litellm": {"enabled": True, "restart_command": ["touch", "a; touch b $(touch c)"]}})
    argv = list(config.litellm.restart_command)
    assert argv == ["touch", "a; touch b $(touch c)"]
    subprocess.run(argv, cwd=tmp_path, check=True, timeout=10)
    assert [p.name for p in tmp_path.iterdir()] == ["a; touch b $(touch c)"]


# -- labels -----------------------------------------------------------------------------------------

label_values = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["true", "TRUE ", "yes please", "-1", "1e400", "nan", "0x10", "$(reboot)", "`id`", "a;b"]),
    st.sampled_from(["http://127.0.0.1:1/$(id)", "file:///etc/passwd", "http://[::1", "99999", "-5s", "1.5.3g"]),
)
hostile_keys = st.one_of(
    st.sampled_from([f"{P}.{k}" for k in KNOWN_LABELS]),
    st.sampled_from([f"{P}x.enable", f"x{P}.enable", "GPU-WATCHDOG.enable", "gpu_watchdog.enable", f"{P}.Enable"]),
    st.text(min_size=1, max_size=20).map(lambda s: f"{P}.{s}"),
)


@given(st.dictionaries(hostile_keys, label_values, max_size=12))
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_hostile_labels_never_crash_and_every_problem_names_its_label(labels: dict[str, str]) -> None:
    labels = {k: v for k, v in labels.items()}
    spec, problems = parse_spec(labels, P)
    enable = labels.get(f"{P}.enable")
    if enable is None or enable.strip().lower() in ("false", "no", "0", "off"):
        assert spec is None and problems == ()  # not opted in: not even looked at
        return
    for problem in problems:
        assert "\n" not in problem and problem.startswith("label ")
        assert any(f"label {key}" in problem for key in labels), problem
    if spec is not None:
        assert problems == () and enable.strip().lower() in ("true", "yes", "1", "on")


def test_look_alike_prefixes_do_not_opt_in() -> None:
    for key in (f"{P}x.enable", f"x{P}.enable", "GPU-WATCHDOG.enable", "gpu_watchdog.enable", f"{P}.Enable"):
        assert parse_spec({key: "true"}, P) == (None, ()), key


# -- config -----------------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["5s", "-1", "0", "1e400", "off", "127.0.0.1:99999", "$(id)", "nan"]),
)
sections = ["breaker", "ram_preflight", "gpu", "capacity", "litellm", "notify", "http", "poll_interval", "labels"]
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
trees = st.dictionaries(st.sampled_from(sections) | st.text(max_size=15), values, max_size=6)


# Found by the fuzzer: a nested mapping under http was echoed in full, a 400-character "one line".
ECHOED_IN_FULL = {
    "http": {
        "": {
            "": None,
            "\x82YX\x8as": None,
            "\U00010e680\ufe1eN\tt\U0009402d": 1.2664061875417247e125,
            "\n\U0009517bh\x04F\U000b18a5\xab\xcac-\U000f3ba2\xe1": None,
        },
        "\xd3\U000da382\xe4bC\x9e\U00096c48\xa0\xe3\U00020a51\xa6\x0c": [
            None,
            None,
            {"0\U0002ebe1": None, "000\U00012544": None, "0000000": None, '000000000"\x1f\U00018d09': None},
        ],
    }
}


@given(trees)
@example(ECHOED_IN_FULL)
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_fuzzed_config_is_a_config_or_one_clear_line(data: dict[str, Any]) -> None:
    try:
        parse_config(data, env={}, secrets=False)
    except ConfigError as exc:
        text = str(exc)
        assert text.startswith("config: ") and "\n" not in text and len(text) < 400, text


@given(st.text(max_size=200))
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
def test_fuzzed_config_text_is_a_config_or_one_clear_line(tmp_path: Path, text: str) -> None:
    path = tmp_path / "watchdog.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_config(path, env={}, secrets=False)
    except ConfigError as exc:
        assert str(exc).startswith("config: ") and "\n" not in str(exc), str(exc)


@pytest.mark.parametrize(
    ("data", "culprit"),
    [
        ({"label_prefix": "a b" * 2000}, "label_prefix='a ba ba b"),
        ({"x\n" * 2000: 1}, "unknown key 'x\\nx\\n"),
        ({"capacity": {"memory": {"chat\n" * 500: {}}}}, "capacity.memory.chat\\n"),
        ({"http": {"nested": ["x" * 1000] * 10}}, "http="),
        ({"poll_interval": 10**5000}, "poll_interval=<int too long to show>"),
    ],
)
def test_a_long_value_or_key_is_echoed_short(data: dict[str, Any], culprit: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(data, env={}, secrets=False)
    text = str(raised.value)
    assert culprit in text and ("..." in text or "too long" in text), text
    assert "\n" not in text and len(text) < 400, text


@pytest.mark.parametrize("text", ["poll_interval: 2024-13-01", "poll_interval: " + "1" * 5000])
def test_yaml_python_cannot_convert_is_one_line(tmp_path: Path, text: str) -> None:
    path = tmp_path / "watchdog.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match="cannot convert") as raised:
        load_config(path, env={}, secrets=False)
    assert "\n" not in str(raised.value) and len(str(raised.value)) < 400


@pytest.mark.parametrize(
    ("content", "culprit"),
    [
        ({"breaker": {"max_restarts": "$(reboot)"}}, "breaker.max_restarts"),
        ({"http": "0.0.0.0:99999"}, "http"),
        ({"poll_interval": "-5s"}, "poll_interval"),
    ],
)
def test_bad_config_through_the_cli_is_one_line_exit_2(tmp_path: Path, content: dict[str, Any], culprit: str) -> None:
    path = tmp_path / "watchdog.yaml"
    path.write_text(yaml.safe_dump(content))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPU_WATCHDOG_")}
    done = subprocess.run(
        [sys.executable, "-m", "watchdog", "--config", str(path), "status"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and culprit in lines[0], done.stderr
