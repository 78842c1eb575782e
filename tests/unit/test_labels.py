"""watchdog.containers.labels: `gpu-watchdog.*` labels into a ContainerSpec, or a misconfiguration."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from watchdog.containers.labels import KNOWN_LABELS, gpus_from_engine, parse_spec, unknown_labels
from watchdog.model import ContainerSpec

P = "gpu-watchdog"


def labels(**values: str) -> dict[str, str]:
    """Labels under the default prefix, enabled; keyword names use _ for -."""
    return {f"{P}.enable": "true", **{f"{P}.{k.replace('_', '-')}": v for k, v in values.items()}}


def test_container_without_enable_label_is_not_managed() -> None:
    assert parse_spec({"com.example.x": "1", f"{P}.priority": "5"}, P) == (None, ())


@pytest.mark.parametrize("value", ["false", "FALSE", "Off", "no", "0"])
def test_enable_false_in_any_spelling_means_not_managed(value: str) -> None:
    assert parse_spec({f"{P}.enable": value, f"{P}.priority": "high"}, P) == (None, ())


@pytest.mark.parametrize("value", ["true", "TRUE", "Yes", "1", "on"])
def test_enable_true_in_any_spelling_means_managed_with_defaults(value: str) -> None:
    assert parse_spec({f"{P}.enable": value}, P) == (ContainerSpec(), ())


def test_unparsable_enable_is_misconfigured_naming_label_value_and_fix() -> None:
    spec, problems = parse_spec({f"{P}.enable": "maybe"}, P)
    assert spec is None
    assert len(problems) == 1
    assert f"{P}.enable" in problems[0]
    assert "'maybe'" in problems[0]
    assert "set it to true or false" in problems[0]


def test_every_optional_label_is_parsed() -> None:
    spec, problems = parse_spec(
        labels(
            priority="10",
            gpu="0, 1",
            health_url="http://10.0.0.5:8080/v1/health",
            health_port="8080",
            health_path="/ready",
            start_period="2m",
            stop_timeout="30s",
            max_restarts="3",
            role="chat",
            model="llama-3-8b",
            model_size="4g",
        ),
        P,
    )
    assert problems == ()
    assert spec == ContainerSpec(
        priority=10,
        gpus=("0", "1"),
        health_url="http://10.0.0.5:8080/v1/health",
        health_port=8080,
        health_path="/ready",
        start_period=120.0,
        stop_timeout=30.0,
        max_restarts=3,
        role="chat",
        model="llama-3-8b",
        model_size=4 * 1024**3,
    )


def test_health_port_alone_gets_the_default_health_path() -> None:
    spec, problems = parse_spec(labels(health_port="8080"), P)
    assert problems == ()
    assert spec is not None
    assert spec.health_port == 8080
    assert spec.health_path == "/health"
    assert spec.health_url is None


def test_negative_priority_is_allowed() -> None:
    spec, _ = parse_spec(labels(priority="-3"), P)
    assert spec is not None and spec.priority == -3


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("priority", "high"),
        ("health-port", "99999"),
        ("health-port", "0"),
        ("health-port", "http"),
        ("health-url", "ftp://x"),
        ("health-url", "localhost:8080/health"),
        ("health-path", "health"),
        ("start-period", "soon"),
        ("stop-timeout", "forever"),
        ("max-restarts", "0"),
        ("max-restarts", "many"),
        ("model-size", "huge"),
        ("gpu", " , "),
    ],
)
def test_bad_label_value_makes_container_misconfigured_with_one_problem_naming_it(name: str, value: str) -> None:
    spec, problems = parse_spec({f"{P}.enable": "true", f"{P}.{name}": value}, P)
    assert spec is None
    assert len(problems) == 1
    assert f"{P}.{name}={value!r}" in problems[0]


def test_every_bad_label_is_reported_not_just_the_first() -> None:
    spec, problems = parse_spec(labels(priority="high", max_restarts="0", model_size="huge"), P)
    assert spec is None
    assert len(problems) == 3
    assert [p.split("=")[0] for p in problems] == [
        f"label {P}.priority",
        f"label {P}.max-restarts",
        f"label {P}.model-size",
    ]


@pytest.mark.parametrize("url", ["http://[::1/health", "http://::1]:8080/health"])
def test_health_url_with_broken_ipv6_brackets_is_a_problem_not_an_exception(url: str) -> None:
    spec, problems = parse_spec(labels(health_url=url), P)
    assert spec is None
    assert len(problems) == 1 and f"{P}.health-url" in problems[0]


def test_absurdly_large_model_size_is_a_problem_not_an_exception() -> None:
    spec, problems = parse_spec(labels(model_size="1" + "0" * 400), P)
    assert spec is None
    assert len(problems) == 1 and f"{P}.model-size" in problems[0]


def test_unknown_label_under_prefix_is_warned_about() -> None:
    warnings = unknown_labels({f"{P}.enable": "true", f"{P}.priorty": "5"}, P)
    assert len(warnings) == 1
    assert f"{P}.priorty" in warnings[0]
    assert f"{P}.priority" in warnings[0]  # the list of known labels points at the fix


@pytest.mark.parametrize(
    "key", ["gpu-watchdog-other.enable", "com.example.x", "gpu-watchdog", "com.docker.compose.service"]
)
def test_labels_outside_the_prefix_are_not_warned_about(key: str) -> None:
    assert unknown_labels({key: "1"}, P) == ()


def test_known_labels_are_not_warned_about() -> None:
    assert unknown_labels({f"{P}.{name}": "x" for name in KNOWN_LABELS}, P) == ()


def test_custom_prefix_is_used_instead_of_the_default() -> None:
    found = {"acme.gw.enable": "yes", "acme.gw.priority": "3", "gpu-watchdog.priority": "high"}
    spec, problems = parse_spec(found, "acme.gw")
    assert problems == ()
    assert spec is not None and spec.priority == 3
    assert parse_spec({"gpu-watchdog.enable": "true"}, "acme.gw") == (None, ())
    assert unknown_labels({"acme.gw.prio": "1", "gpu-watchdog.prio": "1"}, "acme.gw") == (
        unknown_labels({"acme.gw.prio": "1"}, "acme.gw")
    )
    assert len(unknown_labels({"acme.gw.prio": "1"}, "acme.gw")) == 1


@pytest.mark.parametrize(
    ("requests", "env", "expected"),
    [
        ([{"Driver": "nvidia", "DeviceIDs": ["0", "2"], "Capabilities": [["gpu"]]}], None, ("0", "2")),
        ([{"Driver": "", "DeviceIDs": ["GPU-1a2b"], "Capabilities": [["gpu", "utility"]]}], None, ("GPU-1a2b",)),
        ([{"Driver": "nvidia", "Count": -1, "DeviceIDs": None, "Capabilities": [["gpu"]]}], None, ("all",)),
        ([{"Driver": "nvidia", "Count": 2, "Capabilities": [["gpu"]]}], None, ("count=2",)),
        ([{"Driver": "other", "DeviceIDs": ["x"], "Capabilities": [["tpu"]]}], None, ()),
        (None, ["PATH=/bin", "NVIDIA_VISIBLE_DEVICES=1,3"], ("1", "3")),
        ([], ["NVIDIA_VISIBLE_DEVICES=all"], ("all",)),
        (None, ["NVIDIA_VISIBLE_DEVICES=void"], ()),
        (None, ["NVIDIA_VISIBLE_DEVICES=none"], ()),
        (None, ["NVIDIA_VISIBLE_DEVICES="], ()),
        (None, None, ()),
        ([{"Driver": "nvidia", "DeviceIDs": ["0"]}], ["NVIDIA_VISIBLE_DEVICES=1"], ("0",)),
    ],
)
def test_gpus_from_engine(
    requests: list[dict[str, object]] | None, env: list[str] | None, expected: tuple[str, ...]
) -> None:
    assert gpus_from_engine(requests, env) == expected


label_keys = st.one_of(
    st.sampled_from([f"{P}.{name}" for name in KNOWN_LABELS]),
    st.text(max_size=12).map(lambda s: f"{P}.{s}"),
    st.text(max_size=20),
)
# Brackets are left out here: unbalanced ones have their own test above.
label_values = st.one_of(
    st.sampled_from(["true", "false", "yes", "0", "8080", "2m", "4g", "/health", "http://h:1/x", "-1", ""]),
    st.text(alphabet=st.characters(blacklist_characters="[]"), max_size=30),
)


@given(st.dictionaries(label_keys, label_values, max_size=15))
def test_parse_spec_never_raises_and_returns_a_consistent_shape(found: dict[str, str]) -> None:
    spec, problems = parse_spec(found, P)
    if spec is not None:
        assert problems == ()
    else:
        assert all(isinstance(p, str) and p for p in problems)
    if f"{P}.enable" not in found:
        assert (spec, problems) == (None, ())
