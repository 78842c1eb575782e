"""Fallbacks between model groups: config, labels, the rendered config, the rotation and the callback's cap."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.unit.test_router import container, load_callback, plan_for
from watchdog.config import ConfigError, parse_config
from watchdog.containers.labels import parse_spec
from watchdog.router.capacity import CapacityPolicy
from watchdog.router.fallbacks import FallbackPlan, litellm_fallbacks, plan_fallbacks, rotation_fields
from watchdog.router.litellm_config import TemplateError, parse_template, render_config, router_deployments
from watchdog.router.wanted_config import wanted_config

TEMPLATE = "deployment:\n  litellm_params:\n    model: openai/{model}\n"


def two_groups(**label: str) -> list[Any]:
    """Two vLLM deployments of `big` (2 GPUs each), two llama.cpp deployments of `small` (1 GPU each)."""
    big = [container(f"vllm-{i}", str(i), 18100 + i, model="big", **label) for i in range(2)]
    small = [container(f"llama-{i}", str(i + 2), 18200 + i, model="small") for i in range(2)]
    return big + small


def test_config_fallbacks_reach_router_settings_for_groups_that_exist() -> None:
    fleet = two_groups()
    plan = plan_fallbacks({"big": ["small", "gone"]}, fleet, {"big", "small"})
    assert plan.routes == (("big", ("small",)),)
    assert plan.problems == (
        "fallback big -> gone (litellm.fallbacks.big) left out: no deployment serves the fallback group gone; "
        "start one or remove it",
    )
    deployments = router_deployments(fleet, plan_for(fleet))
    config = render_config(
        parse_template(TEMPLATE, "t"), deployments, plan_for(fleet), fallbacks=litellm_fallbacks(plan)
    )
    assert config["router_settings"]["fallbacks"] == [{"big": ["small"]}]


def test_no_fallbacks_render_nothing_and_leave_the_rotation_file_as_it_was() -> None:
    fleet = two_groups()
    deployments = router_deployments(fleet, plan_for(fleet))
    config = render_config(parse_template(TEMPLATE, "t"), deployments, plan_for(fleet))
    assert "fallbacks" not in config["router_settings"]
    assert rotation_fields(FallbackPlan(), deployments) == {}


def test_label_names_the_fallback_group_and_adds_to_the_config() -> None:
    fleet = two_groups(fallback=("small",))
    wanted = wanted_config(fleet, {}, set(), policy=CapacityPolicy(rpm_per_gpu=(20, 30)), host_total=None, known={})
    assert wanted.fallbacks.routes == (("big", ("small",)),)
    assert wanted.fallbacks.problems == ()


@pytest.mark.parametrize(
    ("configured", "culprit"),
    [
        ({"big": ["big"]}, "fallback big -> big (litellm.fallbacks.big) left out: big falls back to itself"),
        (
            {"small": ["big"], "big": ["small"]},
            "fallback small -> big (litellm.fallbacks.small) left out: small -> big",
        ),
        ({"huge": ["small"]}, "fallback huge -> small (litellm.fallbacks.huge) left out: no deployment serves huge"),
    ],
)
def test_bad_fallbacks_are_left_out_with_one_line_naming_them(configured: dict[str, list[str]], culprit: str) -> None:
    plan = plan_fallbacks(configured, two_groups(), {"big", "small"})
    assert len(plan.problems) == 1 and plan.problems[0].startswith(culprit), plan.problems
    assert "\n" not in plan.problems[0]
    assert all(primary != target for primary, targets in plan.routes for target in targets)


def test_a_label_that_would_close_a_cycle_is_left_out_naming_the_container() -> None:
    fleet = [container("llama-0", "2", 18200, model="small", fallback=("big",)), *two_groups()[:2]]
    plan = plan_fallbacks({"big": ["small"]}, fleet, {"big", "small"})
    assert plan.routes == (("big", ("small",)),)
    assert plan.problems[0].startswith("fallback small -> big (label gpu-watchdog.fallback on llama-0) left out")


def test_failover_caps_are_the_planned_rpm_of_the_fallback_deployments_only() -> None:
    fleet = two_groups()
    deployments = router_deployments(fleet, plan_for(fleet))
    fields = rotation_fields(plan_fallbacks({"big": ["small"]}, fleet, {"big", "small"}), deployments)
    small = sorted(d.id for d in deployments if d.model == "small")
    assert fields["fallbacks"] == {"big": ["small"]}
    assert fields["groups"]["small"] == small and len(fields["groups"]["big"]) == 2
    assert fields["failover_rpm"] == {ident: 30 for ident in small}  # rpm_per_gpu high x 1 GPU, as the weight


@pytest.mark.parametrize(
    ("value", "culprit"),
    [
        ({"big": ["big"]}, "litellm.fallbacks.big: big falls back to itself"),
        ({"a": ["b"], "b": "a"}, "litellm.fallbacks.a: a falls back to itself through other groups"),
        ({"big": []}, "litellm.fallbacks.big=[]: must be a list of model groups"),
        (["big"], "litellm.fallbacks=['big']: must map a model group"),
        ({"big": [3]}, "litellm.fallbacks.big=[3]: every fallback must be a model group name"),
    ],
)
def test_bad_config_fallbacks_are_one_line_errors(value: Any, culprit: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config({"litellm": {"fallbacks": value}})
    assert culprit in str(error.value) and "\n" not in str(error.value)


def test_config_fallbacks_parse_a_single_name_or_a_list() -> None:
    config = parse_config({"litellm": {"fallbacks": {"big": "small", "mid": ["small", "tiny", "small"]}}})
    assert config.litellm.fallbacks == {"big": ("small",), "mid": ("small", "tiny")}


@pytest.mark.parametrize(
    ("labels", "culprit"),
    [
        ({"model": "big", "fallback": "big"}, "label gpu-watchdog.fallback='big': a group cannot fall back to itself"),
        ({"model": "big", "fallback": " , "}, "label gpu-watchdog.fallback=' , ': expected model groups"),
        ({"fallback": "small"}, "label gpu-watchdog.fallback='small': expected model groups"),
    ],
)
def test_bad_fallback_labels_name_the_label_and_the_fix(labels: dict[str, str], culprit: str) -> None:
    spec, problems = parse_spec(
        {"gpu-watchdog.enable": "true", **{f"gpu-watchdog.{k}": v for k, v in labels.items()}}, "gpu-watchdog"
    )
    assert spec is None and problems[0].startswith(culprit), problems


def test_fallback_label_is_a_comma_list() -> None:
    spec, _ = parse_spec(
        {"gpu-watchdog.enable": "true", "gpu-watchdog.model": "big", "gpu-watchdog.fallback": "a, b"}, "gpu-watchdog"
    )
    assert spec is not None and spec.fallback == ("a", "b")


def test_a_template_cannot_set_fallbacks_of_its_own() -> None:
    for section in ("router_settings", "litellm_settings"):
        with pytest.raises(TemplateError, match=f"{section}.fallbacks|fallbacks are rendered by gpu-watchdog"):
            parse_template(TEMPLATE + f"{section}:\n  fallbacks: [{{big: [small]}}]\n", "t")


# -- the callback --------------------------------------------------------------


def rotation_state(out: list[str], all_down: str = "route-anyway", rpm: float = 2) -> Any:
    cb = load_callback()
    text = json.dumps(
        {
            "version": 1,
            "written_at": 1000.0,
            "stale_after": 15,
            "all_down": all_down,
            "out": {o: "x" for o in out},
            "fallbacks": {"big": ["small"]},
            "groups": {"big": ["p0", "p1"], "small": ["f0", "f1"]},
            "failover_rpm": {"f0": rpm, "f1": rpm},
        }
    )
    state, why = cb.parse_rotation(text)
    assert why == "ok"
    return state


def deps(*ids: str) -> list[dict[str, Any]]:
    return [{"model_info": {"id": i}} for i in ids]


@pytest.mark.parametrize("all_down", ["route-anyway", "fail-fast"])
def test_every_primary_out_returns_no_candidate_so_litellm_falls_back(all_down: str) -> None:
    cb = load_callback()
    kept, why = cb.filter_deployments(deps("p0", "p1"), rotation_state(["p0", "p1"], all_down), 1001.0, "big")
    assert kept == [] and why.endswith("falling back to small")


def test_fallback_group_out_too_keeps_the_all_down_mode() -> None:
    cb = load_callback()
    state = rotation_state(["p0", "p1", "f0", "f1"])
    kept, why = cb.filter_deployments(deps("p0", "p1"), state, 1001.0, "big")
    assert len(kept) == 2 and why.endswith("route-anyway")
    kept, _ = cb.filter_deployments(deps("f0", "f1"), state, 1001.0, "small")
    assert len(kept) == 2  # the last group of the chain: routed anyway, never black-holed


def test_failover_requests_are_capped_per_fallback_deployment_and_minute() -> None:
    cb = load_callback()
    state, cap = rotation_state(["p0", "p1"], rpm=2), cb.FailoverCap()
    picked = [cap.admit(deps("f0", "f1"), state, 1000.0 + i) for i in range(5)]
    assert [len(p) for p in picked] == [1, 1, 1, 1, 0]  # 2 per deployment and minute, then LiteLLM's 429
    assert sorted(p[0]["model_info"]["id"] for p in picked[:4]) == ["f0", "f0", "f1", "f1"]
    assert len(cap.admit(deps("f0", "f1"), state, 1061.0)) == 1  # the minute rolled on


def test_only_failover_requests_are_capped() -> None:
    cb = load_callback()
    assert cb.failover_request("small", {"fallback_depth": 1, "metadata": {"original_model_group": "big"}})
    assert cb.failover_request("small", {"metadata": {"original_model_group": "big"}})
    assert not cb.failover_request("small", {"metadata": {"original_model_group": "small"}})
    assert not cb.failover_request("small", None)
