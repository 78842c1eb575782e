"""The LiteLLM router config, the rotation, and the proxy-side filter (pure parts)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from watchdog.config import ConfigError, parse_config
from watchdog.model import ContainerSnapshot, ContainerSpec, ContainerState
from watchdog.router.capacity import CapacityPolicy, Member, plan_capacity
from watchdog.router.litellm_config import (
    CALLBACK,
    TemplateError,
    api_base_of,
    api_bases_in,
    deployment_id,
    deployment_set,
    dump_config,
    parse_template,
    render_config,
    rotation,
    rotation_document,
    router_deployments,
    unreachable,
)

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = (ROOT / "litellm" / "config.template.yaml").read_text()


def load_callback() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gpu_watchdog_rotation", ROOT / "litellm" / "gpu_watchdog_rotation.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gpu_watchdog_rotation", module)
    spec.loader.exec_module(module)
    return module


def container(name: str, gpu: str, port: int, state: ContainerState = ContainerState.RUNNING, **spec: Any) -> Any:
    spec.setdefault("role", "chat")
    spec.setdefault("model", "qwen")
    return ContainerSnapshot(
        id=f"id-{name}",
        name=name,
        state=state,
        spec=ContainerSpec(**spec),
        endpoint=f"http://127.0.0.1:{port}/health" if port else None,
        gpus=(gpu,),
    )


def fleet() -> list[ContainerSnapshot]:
    return [container(f"llm-{i}", str(i), 18000 + i) for i in range(4)]


def plan_for(containers: list[ContainerSnapshot], policy: CapacityPolicy | None = None) -> Any:
    members = [Member(c.name, c.spec.role, c.spec.model, c.gpus, True) for c in containers if c.spec]
    return plan_capacity(members, policy or CapacityPolicy(rpm_per_gpu=(20, 30)), None)


# -- template ------------------------------------------------------------------


def test_shipped_template_is_valid() -> None:
    template = parse_template(TEMPLATE, "litellm/config.template.yaml")
    assert template.router_settings["routing_strategy"] == "simple-shuffle"


@pytest.mark.parametrize(
    ("text", "culprit"),
    [
        ("router_settings: {health_check_interval: 30}", "router_settings.health_check_interval"),
        ("router_settings: {enable_health_check: true}", "router_settings.enable_health_check"),
        ("router_settings: {max_parallel_requests: 4}", "router_settings.max_parallel_requests"),
        ("router_settings: {routing_stratgy: simple-shuffle}", "router_settings.routing_stratgy"),
        ("general_settings: {master_kye: x}", "general_settings.master_kye"),
        ("deployment: {litellm_params: {model: x, api_bsae: y}}", "deployment.litellm_params.api_bsae"),
        ("deployment: {litellm_params: {api_base: y}}", "deployment.litellm_params.model is required"),
        ("deployment: {litellm_params: {model: x}, model_info: {id: fixed}}", "deployment.model_info.id"),
        ("deployment: {litellm_params: {model: x}, rpm: 3}", "deployment.rpm"),
        ("deployment: {litellm_params: {model: x, weight: 3}}", "deployment.litellm_params.weight is set by"),
        ("model_list: []", "model_list is generated"),
        ("routers: {}", "unknown section 'routers'"),
        ("litellm_settings: {callbacks: oops}", "litellm_settings.callbacks must be a list"),
        ("litellm_settings: {not_a_setting_at_all: 1}", "litellm_settings.not_a_setting_at_all"),
        ("router_settings: [1, 2]", "router_settings must be a mapping"),
        ("router_settings: {a: [}", "is not valid YAML"),
    ],
)
def test_bad_template_is_one_line_naming_the_key(text: str, culprit: str) -> None:
    base = "deployment: {litellm_params: {model: openai/x}}\n" if not text.startswith("deployment") else ""
    with pytest.raises(TemplateError) as caught:
        parse_template(base + text, "t.yaml")
    message = str(caught.value)
    assert culprit in message and "\n" not in message


@pytest.mark.parametrize(
    "text",
    [
        "deployment: {litellm_params: {model: x, max_parallel_requests: 1}}",
        "deployment: {litellm_params: {model: x, rpm: 4}}",
        "deployment: {litellm_params: {model: x, tpm: 4000}}",
        "deployment: {litellm_params: {model: x}}\nrouter_settings: {default_max_parallel_requests: 4}",
        "deployment: {litellm_params: {model: x}}\ngeneral_settings: {global_max_parallel_requests: 12}",
    ],
)
def test_a_template_cannot_put_back_an_in_flight_limit(text: str) -> None:
    """Each of these is a queue one stuck backend fills (capacity.NOT_RENDERED): refused, saying so."""
    with pytest.raises(TemplateError, match="would queue requests behind a stuck backend") as caught:
        parse_template(text, "t.yaml")
    assert "\n" not in str(caught.value)


def test_render_weights_follow_the_plan_and_a_non_serving_role_gets_none() -> None:
    containers = [*fleet()[:2], container("emb-0", "5", 18005, role="embed", model="bge")]
    containers.append(ContainerSnapshot(**{**vars(container("llm-9", "8", 18009)), "gpus": ("8", "9")}))
    plan = plan_for(containers, CapacityPolicy(rpm_per_gpu=(3, 4)))
    config = render_config(parse_template(TEMPLATE, "t"), router_deployments(containers, plan), plan)
    params = {m["model_info"]["id"]: m["litellm_params"] for m in config["model_list"]}
    assert params["llm-0.gpu0"]["weight"] == 4 and params["llm-9.gpu8+9"]["weight"] == 8  # twice the GPUs
    assert "weight" not in params["emb-0.gpu5"]  # no share of the target: picked uniformly in its own group
    for entry in params.values():
        assert not {"rpm", "tpm", "max_parallel_requests"} & set(entry)
    assert "no in-flight limit" in dump_config(config, "t", "rotation.json")


def test_health_check_interval_points_to_the_real_key() -> None:
    with pytest.raises(TemplateError, match=r"general_settings\.health_check_interval"):
        parse_template("deployment: {litellm_params: {model: x}}\nrouter_settings: {health_check_interval: 30}", "t")


# -- rendering -----------------------------------------------------------------


def test_render_one_deployment_per_container_with_plan_numbers() -> None:
    containers = fleet()
    plan = plan_for(containers)
    deployments = router_deployments(containers, plan)
    config = render_config(parse_template(TEMPLATE, "t"), deployments, plan)
    models = config["model_list"]
    assert [m["model_info"]["id"] for m in models] == ["llm-0.gpu0", "llm-1.gpu1", "llm-2.gpu2", "llm-3.gpu3"]
    first = models[0]
    assert first["model_name"] == "qwen"
    assert first["litellm_params"]["model"] == "openai/qwen"
    assert first["litellm_params"]["api_base"] == "http://127.0.0.1:18000/v1"
    # The plan's share as weight; no in-flight limit (LiteLLM queues on it behind a stuck backend).
    assert first["litellm_params"]["weight"] == 30 and first["litellm_params"]["timeout"] == 10
    assert not {"rpm", "tpm", "max_parallel_requests"} & set(first["litellm_params"])
    assert "global_max_parallel_requests" not in config["general_settings"]
    assert config["litellm_settings"]["callbacks"] == [CALLBACK]
    assert config["router_settings"]["num_retries"] == 2
    text = dump_config(config, "litellm/config.template.yaml", "rotation.json")
    assert text.startswith("# Rendered by gpu-watchdog") and yaml.safe_load(text) == config


def test_render_is_deterministic_and_the_set_ignores_plan_numbers() -> None:
    containers = fleet()
    template = parse_template(TEMPLATE, "t")
    plan_a = plan_for(containers)
    plan_b = plan_for(containers, CapacityPolicy(rpm_per_gpu=(2, 3)))
    a = router_deployments(containers, plan_a)
    b = router_deployments(list(reversed(containers)), plan_b)
    assert dump_config(render_config(template, a, plan_a), "t", "r") == dump_config(
        render_config(template, router_deployments(containers, plan_a), plan_a), "t", "r"
    )
    assert deployment_set(a) == deployment_set(b)  # new rpm: the file changes, the proxy needs no restart
    moved = [*containers[:3], container("llm-3", "3", 18099)]
    assert deployment_set(router_deployments(moved, plan_a)) != deployment_set(a)


def test_ids_are_stable_per_container_and_gpu() -> None:
    assert deployment_id("llm-0", ("0",)) == "llm-0.gpu0"
    assert deployment_id("llm-0", ("0", "1")) == "llm-0.gpu0+1"
    assert deployment_id("a b/c", ("GPU-1234",)) == "a-b-c.GPU-1234"
    assert deployment_id("solo", ()) == "solo"


def test_api_base_label_wins_and_a_stopped_container_keeps_its_last_url() -> None:
    labelled = container("llm-0", "0", 18000, api_base="http://llm-0:8080/v1/")
    assert api_base_of(labelled) == "http://llm-0:8080/v1"
    stopped = container("llm-1", "1", 0, state=ContainerState.EXITED)
    assert api_base_of(stopped) is None
    plan = plan_for([labelled, stopped])
    assert [d.id for d in router_deployments([labelled, stopped], plan)] == ["llm-0.gpu0"]
    assert unreachable(router_deployments([labelled, stopped], plan), plan) == ["llm-1"]
    known = {"llm-1.gpu1": "http://127.0.0.1:18001/v1"}
    kept = router_deployments([labelled, stopped], plan, known)
    assert [d.api_base for d in kept] == ["http://llm-0:8080/v1", "http://127.0.0.1:18001/v1"]


def test_api_bases_read_back_from_a_rendered_config() -> None:
    containers = fleet()
    plan = plan_for(containers)
    text = dump_config(
        render_config(parse_template(TEMPLATE, "t"), router_deployments(containers, plan), plan), "t", "r"
    )
    assert api_bases_in(text)["llm-2.gpu2"] == "http://127.0.0.1:18002/v1"
    assert api_bases_in("not: [valid") == {} and api_bases_in("model_list: [{x: 1}]") == {}


# -- rotation ------------------------------------------------------------------


def test_rotation_in_only_when_ready_with_reasons() -> None:
    containers = fleet()
    plan = plan_for(containers)
    deployments = router_deployments(containers, plan)
    why = {"id-llm-1": "endpoint-failing: timeout", "id-llm-2": "starting"}
    entries = rotation(deployments, containers[:3], {"id-llm-0"}, why, benefit_of_doubt={"id-llm-2"})
    by_id = {e.id: e for e in entries}
    assert by_id["llm-0.gpu0"].in_rotation
    assert not by_id["llm-1.gpu1"].in_rotation and "timeout" in by_id["llm-1.gpu1"].reason
    assert not by_id["llm-2.gpu2"].in_rotation  # a note beats the benefit of the doubt
    assert not by_id["llm-3.gpu3"].in_rotation and by_id["llm-3.gpu3"].reason == "container not found"
    unjudged = rotation(deployments, containers, set(), {}, benefit_of_doubt={"id-llm-3"})
    assert [e.in_rotation for e in unjudged] == [False, False, False, True]
    document = rotation_document(entries, 100.0, 15.0, "route-anyway")
    assert document["in"] == ["llm-0.gpu0"] and set(document["out"]) == {"llm-1.gpu1", "llm-2.gpu2", "llm-3.gpu3"}
    assert document["written_at"] == 100.0 and document["version"] == 1


# -- the proxy-side filter -----------------------------------------------------


def deployments_for(*ids: str) -> list[dict[str, Any]]:
    return [{"model_name": "qwen", "model_info": {"id": i}} for i in ids]


def state_text(out: list[str], written_at: float, all_down: str = "route-anyway", stale_after: float = 15) -> str:
    return json.dumps(
        {
            "version": 1,
            "written_at": written_at,
            "stale_after": stale_after,
            "all_down": all_down,
            "out": {o: "x" for o in out},
        }
    )


def test_filter_drops_what_the_watchdog_marked_out() -> None:
    cb = load_callback()
    state, why = cb.parse_rotation(state_text(["b"], 1000.0))
    assert why == "ok"
    kept, _ = cb.filter_deployments(deployments_for("a", "b", "c"), state, 1001.0)
    assert [d["model_info"]["id"] for d in kept] == ["a", "c"]
    unknown, _ = cb.filter_deployments(deployments_for("z"), state, 1001.0)
    assert len(unknown) == 1  # a deny-list: what the watchdog does not know is routed


def test_filter_fails_safe_on_missing_stale_or_bad_state() -> None:
    cb = load_callback()
    candidates = deployments_for("a", "b")
    assert cb.filter_deployments(candidates, None, 1.0)[0] == candidates
    stale, _ = cb.parse_rotation(state_text(["a"], 1000.0, stale_after=5))
    kept, why = cb.filter_deployments(candidates, stale, 1006.0)
    assert kept == candidates and "stale" in why
    for bad in ("{", "[]", json.dumps({"version": 2, "written_at": 1}), json.dumps({"version": 1})):
        assert cb.parse_rotation(bad)[0] is None


def test_filter_all_down_modes() -> None:
    cb = load_callback()
    candidates = deployments_for("a", "b")
    anyway, _ = cb.parse_rotation(state_text(["a", "b"], 1000.0))
    assert cb.filter_deployments(candidates, anyway, 1000.5)[0] == candidates
    fast, _ = cb.parse_rotation(state_text(["a", "b"], 1000.0, all_down="fail-fast"))
    assert cb.filter_deployments(candidates, fast, 1000.5)[0] == []
    assert cb.filter_deployments([], fast, 1000.5)[0] == []


def test_filter_object_reads_the_file_and_never_raises(tmp_path: Path) -> None:
    cb = load_callback()
    path = tmp_path / "rotation.json"
    filt = cb.RotationFilter(path)
    candidates = deployments_for("a", "b")
    assert filt.select(candidates) == candidates  # missing file
    import time

    path.write_text(state_text(["a"], time.time()))
    assert [d["model_info"]["id"] for d in filt.select(candidates)] == ["b"]
    path.write_text("garbage")
    assert filt.select(candidates) == candidates
    assert filt.select(["not-a-dict"]) == ["not-a-dict"]


# -- config ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "culprit"),
    [
        ({"enabled": "maybe"}, "litellm.enabled"),
        ({"proxy_url": "localhost:4000"}, "litellm.proxy_url"),
        ({"all_down": "panic"}, "litellm.all_down"),
        ({"restart_command": "systemctl restart litellm"}, "litellm.restart_command"),
        ({"stale_after": -1}, "litellm.stale_after"),
        ({"proxy_container": "x", "restart_command": ["true"]}, "keep one"),
        ({"proxy": "x"}, "litellm.proxy"),
    ],
)
def test_litellm_config_errors(section: dict[str, Any], culprit: str) -> None:
    with pytest.raises(ConfigError, match=culprit.replace(".", r"\.")):
        parse_config({"litellm": section})


def test_stale_after_must_outlast_polls() -> None:
    with pytest.raises(ConfigError, match="stale_after"):
        parse_config({"poll_interval": 10, "litellm": {"stale_after": 15}})
