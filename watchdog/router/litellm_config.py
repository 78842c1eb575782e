"""The LiteLLM router: its config file and its rotation, from the fleet and the capacity plan.

Pure. LiteLLM cannot change its backends without a database or a restart (an
~11 s outage), so the work is split in two:
- the config file lists every deployment the fleet should have (changes rarely:
  a container added or removed, a GPU quarantined, a container given up); the
  proxy is restarted only when that set changes;
- the rotation file says, as soon as it changes, which of those deployments are out right
  now (crashed, hung, restarting); the callback in litellm/ drops them from
  LiteLLM's candidates on every routing attempt.

LiteLLM drops unknown router_settings silently, so a template is checked against
the keys the pinned version really accepts (litellm_keys.yaml, generated from the
installed proxy and compared with it in a test). The plan reaches the proxy as
each deployment's `weight` only; a template key that would put back an in-flight
limit (a queue one stuck backend fills: capacity.NOT_RENDERED) is refused too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import yaml

from watchdog.model import ContainerSnapshot
from watchdog.router.capacity import NOT_RENDERED, CapacityPlan, proxy_params

CALLBACK_MODULE = "gpu_watchdog_rotation"
CALLBACK = f"{CALLBACK_MODULE}.rotation_filter"
ROTATION_FILE = "rotation.json"
ROTATION_VERSION = 1
Fallbacks = Sequence[Mapping[str, list[str]]]  # router_settings.fallbacks: [{group: [fallback group, ...]}]
TEMPLATE_SECTIONS = ("deployment", "router_settings", "general_settings", "litellm_settings", "environment_variables")
DEPLOYMENT_KEYS = ("model_name", "litellm_params", "model_info")
PLACEHOLDERS = ("{model}", "{container}", "{api_base}")
HEADER = (
    "# Rendered by gpu-watchdog from {template}: edit the template, not this file.\n"
    "# Deployments in rotation: {rotation} (rewritten as it changes; read by {module}.py).\n"
    "# The capacity plan gives each deployment its weight (its rpm share) and no in-flight limit:\n"
    "# max_parallel_requests, rpm and global_max_parallel_requests queue behind a stuck backend.\n"
)
# Template keys that would give LiteLLM back an in-flight limit (a queue one stuck backend fills), and why.
QUEUEING_KEYS = {
    "deployment.litellm_params.max_parallel_requests": NOT_RENDERED["max_parallel_requests"],
    "deployment.litellm_params.rpm": NOT_RENDERED["rpm"],
    "deployment.litellm_params.tpm": "without max_parallel_requests or rpm LiteLLM sizes the same semaphore from tpm",
    "router_settings.default_max_parallel_requests": NOT_RENDERED["max_parallel_requests"],
    "general_settings.global_max_parallel_requests": NOT_RENDERED["global_max_parallel_requests"],
}


class TemplateError(ValueError):
    """The template cannot be rendered; the message names the key and the fix."""


@dataclass(frozen=True)
class AcceptedKeys:
    """What the pinned LiteLLM really reads (anything else it would ignore without a word)."""

    version: str
    router_settings: frozenset[str]
    general_settings: frozenset[str]
    litellm_params: frozenset[str]
    litellm_settings: frozenset[str]


@cache
def accepted_keys() -> AcceptedKeys:
    data = yaml.safe_load(resources.files("watchdog.router").joinpath("litellm_keys.yaml").read_text(encoding="utf-8"))
    return AcceptedKeys(
        str(data["litellm_version"]),
        frozenset(data["router_settings"]),
        frozenset(data["general_settings"]),
        frozenset(data["litellm_params"]),
        frozenset(data["litellm_settings"]),
    )


@dataclass(frozen=True)
class RouterTemplate:
    deployment: Mapping[str, Any]
    router_settings: Mapping[str, Any]
    general_settings: Mapping[str, Any]
    litellm_settings: Mapping[str, Any]
    environment_variables: Mapping[str, Any]


@dataclass(frozen=True)
class RouterDeployment:
    """One model_list entry: a managed container serving a model."""

    id: str
    model: str
    container: str
    api_base: str
    gpus: tuple[str, ...]
    weight: int | None  # the plan's rpm share; None: no weight (a role that does not carry the target)


# -- the template -----------------------------------------------------------


def _unknown(section: str, data: Mapping[str, Any], known: frozenset[str], version: str, fix: str = "") -> None:
    for key in data:
        why = QUEUEING_KEYS.get(f"{section}.{key}")
        if why:
            raise TemplateError(
                f"litellm template: {section}.{key} would queue requests behind a stuck backend "
                f"({why}); remove it: gpu-watchdog gives each deployment its weight from the plan"
            )
        if section == "deployment.litellm_params" and key == "weight":
            raise TemplateError(
                "litellm template: deployment.litellm_params.weight is set by gpu-watchdog from "
                "the capacity plan (capacity.rpm_per_gpu); remove it"
            )
        if key not in known:
            hint = fix or f"remove it; keys LiteLLM {version} reads are listed in watchdog/router/litellm_keys.yaml"
            raise TemplateError(
                f"litellm template: {section}.{key} is not a key LiteLLM {version} accepts "
                f"(it would be dropped silently): {hint}"
            )


def _mapping(section: str, value: Any) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TemplateError(f"litellm template: {section} must be a mapping of keys, got {type(value).__name__}")
    return value


def parse_template(text: str, source: str, keys: AcceptedKeys | None = None) -> RouterTemplate:
    """Validate a template (YAML text); every problem is one line naming the key and the fix."""
    keys = keys or accepted_keys()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise TemplateError(f"litellm template {source}{where} is not valid YAML; fix the syntax there") from None
    data = _mapping(source, data)
    for key in data:
        if key == "model_list":
            raise TemplateError(
                f"litellm template {source}: model_list is generated from the fleet; "
                "remove it and put per-deployment defaults under 'deployment:'"
            )
        if key not in TEMPLATE_SECTIONS:
            raise TemplateError(
                f"litellm template {source}: unknown section '{key}'; known: {', '.join(TEMPLATE_SECTIONS)}"
            )
    deployment = _mapping("deployment", data.get("deployment"))
    for key in deployment:
        if key not in DEPLOYMENT_KEYS:
            raise TemplateError(
                f"litellm template {source}: deployment.{key} is not a deployment key; known: "
                f"{', '.join(DEPLOYMENT_KEYS)}"
            )
    params = _mapping("deployment.litellm_params", deployment.get("litellm_params"))
    _unknown("deployment.litellm_params", params, keys.litellm_params, keys.version)
    if "model" not in params:
        raise TemplateError(
            f"litellm template {source}: deployment.litellm_params.model is required, e.g. openai/{{model}}"
        )
    model_info = _mapping("deployment.model_info", deployment.get("model_info"))
    if "id" in model_info:
        raise TemplateError(
            f"litellm template {source}: deployment.model_info.id is set by gpu-watchdog (one stable id per "
            "container and GPU); remove it"
        )
    router = _mapping("router_settings", data.get("router_settings"))
    moved = {"health_check_interval", "enable_health_check", "max_parallel_requests"}
    for key in router:
        if key in moved and key not in keys.router_settings:
            raise TemplateError(
                f"litellm template {source}: router_settings.{key} is not read by LiteLLM {keys.version}'s Router "
                f"(it would be dropped silently); {_where_instead(key)}"
            )
    _unknown("router_settings", router, keys.router_settings, keys.version)
    if "model_list" in router:
        raise TemplateError(f"litellm template {source}: router_settings.model_list is generated; remove it")
    if any("fallbacks" in (data.get(section) or {}) for section in ("router_settings", "litellm_settings")):
        raise TemplateError(
            f"litellm template {source}: fallbacks are rendered by gpu-watchdog (the failover cap and the rotation "
            "follow them); move them to the config's litellm.fallbacks or the label gpu-watchdog.fallback"
        )
    general = _mapping("general_settings", data.get("general_settings"))
    _unknown("general_settings", general, keys.general_settings, keys.version)
    settings = _mapping("litellm_settings", data.get("litellm_settings"))
    _unknown("litellm_settings", settings, keys.litellm_settings, keys.version)
    callbacks = settings.get("callbacks", [])
    if not isinstance(callbacks, list) or not all(isinstance(c, str) for c in callbacks):
        raise TemplateError(
            f"litellm template {source}: litellm_settings.callbacks must be a list of 'module.instance' names"
        )
    env = _mapping("environment_variables", data.get("environment_variables"))
    return RouterTemplate(deployment, router, general, settings, env)


def _where_instead(key: str) -> str:
    if key == "health_check_interval":
        return "use general_settings.health_check_interval with general_settings.background_health_checks"
    if key == "max_parallel_requests":
        return "no in-flight limit is rendered (one stuck backend would fill its queue); the plan gives weights"
    return "health checks are general_settings.background_health_checks"


# -- deployments ------------------------------------------------------------


def deployment_id(container: str, gpus: Sequence[str]) -> str:
    """Stable across restarts and re-renders: the container's name and its GPUs."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", container).strip("-") or "container"
    if not gpus:
        return base
    refs = "+".join(re.sub(r"[^A-Za-z0-9_.-]+", "-", g) for g in gpus)
    return f"{base}.gpu{refs}" if all(g.isdigit() for g in gpus) else f"{base}.{refs}"


def api_base_of(container: ContainerSnapshot) -> str | None:
    """The label gpu-watchdog.api-base, else the health endpoint's origin + /v1."""
    if container.spec is not None and container.spec.api_base:
        return container.spec.api_base.rstrip("/")
    if not container.endpoint:
        return None
    parts = urlsplit(container.endpoint)
    return f"{parts.scheme}://{parts.netloc}/v1"


def router_deployments(
    containers: Sequence[ContainerSnapshot], plan: CapacityPlan, known: Mapping[str, str] | None = None
) -> list[RouterDeployment]:
    """One deployment per planned container that serves a model and can be reached.

    `known`: deployment id -> the api_base last seen. A stopped container publishes no
    port, and a crash must not change the config (that would restart the proxy).
    """
    by_name = {c.name: c for c in containers}
    known = known or {}
    result = []
    for planned in plan.deployments:
        container = by_name.get(planned.name)
        ident = deployment_id(planned.name, planned.gpus)
        api_base = (api_base_of(container) if container is not None else None) or known.get(ident)
        if api_base is None:
            continue
        result.append(
            RouterDeployment(
                ident,
                planned.model,
                planned.name,
                api_base,
                planned.gpus,
                proxy_params(planned).get("weight"),
            )
        )
    return result


def unreachable(deployments: Sequence[RouterDeployment], plan: CapacityPlan) -> list[str]:
    """Planned deployments left out because the watchdog knows no URL for them."""
    rendered = {d.container for d in deployments}
    return [d.name for d in plan.deployments if d.name not in rendered]


def deployments_in(config_text: str) -> list[list[str]]:
    """The deployment set ([id, model, api_base], as `deployment_set` gives it) of a config rendered earlier."""
    try:
        data = yaml.safe_load(config_text)
        return sorted(
            [str(e["model_info"]["id"]), str(e["model_name"]), str(e["litellm_params"]["api_base"])]
            for e in (data or {}).get("model_list") or []
        )
    except (yaml.YAMLError, KeyError, TypeError, AttributeError):
        return []


def api_bases_in(config_text: str) -> dict[str, str]:
    """Deployment id -> api_base from a config rendered earlier (what a stopped container had)."""
    return {ident: base for ident, _, base in deployments_in(config_text)}


def _fill(value: Any, values: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        for placeholder, text in values.items():
            value = value.replace(placeholder, text)
        return value
    if isinstance(value, Mapping):
        return {k: _fill(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, values) for v in value]
    return value


def render_config(
    template: RouterTemplate, deployments: Sequence[RouterDeployment], plan: CapacityPlan, *, fallbacks: Fallbacks = ()
) -> dict[str, Any]:
    """The proxy's config: the template's settings, the fleet's model_list, the plan's weights.

    No in-flight limit is written (capacity.NOT_RENDERED): a deployment's `timeout` bounds
    each attempt on a stuck backend, `num_retries` sends the request on to another one.
    """
    model_list = []
    for d in sorted(deployments, key=lambda d: d.id):
        values = {"{model}": d.model, "{container}": d.container, "{api_base}": d.api_base}
        entry = _fill(dict(template.deployment), values)
        entry.setdefault("model_name", d.model)
        params = dict(entry.get("litellm_params") or {})
        params.setdefault("api_base", d.api_base)
        if d.weight is not None:
            params["weight"] = d.weight
        entry["litellm_params"] = params
        entry["model_info"] = {**dict(entry.get("model_info") or {}), "id": d.id}
        model_list.append(entry)
    config: dict[str, Any] = {"model_list": model_list}
    config["router_settings"] = dict(template.router_settings)
    if fallbacks:  # router/fallbacks.py; LiteLLM 1.102.4 reads router_settings' or litellm_settings'
        config["router_settings"]["fallbacks"] = [dict(f) for f in fallbacks]
    config["general_settings"] = dict(template.general_settings)
    settings = dict(template.litellm_settings)
    callbacks = list(settings.get("callbacks") or [])
    if CALLBACK not in callbacks:
        callbacks.append(CALLBACK)
    settings["callbacks"] = callbacks
    config["litellm_settings"] = settings
    if template.environment_variables:
        config["environment_variables"] = dict(template.environment_variables)
    return config


def dump_config(config: Mapping[str, Any], template_path: str, rotation_path: str) -> str:
    header = HEADER.format(template=template_path, rotation=rotation_path, module=CALLBACK_MODULE)
    return header + yaml.safe_dump(dict(config), sort_keys=False, default_flow_style=False)


def deployment_set(deployments: Sequence[RouterDeployment]) -> list[list[str]]:
    """What a change of needs a proxy restart: ids, models and URLs (not the plan's numbers)."""
    return sorted([d.id, d.model, d.api_base] for d in deployments)


# -- rotation ---------------------------------------------------------------


@dataclass(frozen=True)
class RotationEntry:
    id: str
    container: str
    model: str
    in_rotation: bool
    reason: str


def rotation(
    deployments: Sequence[RouterDeployment],
    containers: Sequence[ContainerSnapshot],
    ready: set[str] | frozenset[str],
    why_not: Mapping[str, str],
    benefit_of_doubt: set[str] | frozenset[str] = frozenset(),
) -> list[RotationEntry]:
    """In rotation = the container is ready now (running, past its checks, latest probe OK).

    `why_not`: container ID -> why it is not serving (fault, restart, GPU mark); used for
    the reason only. `benefit_of_doubt`: container IDs kept in although not yet judged
    (running, no fault, no probe answer yet when the watchdog starts): a watchdog start
    must not pull a serving fleet out of rotation. A missing container is out.
    """
    by_name = {c.name: c for c in containers}
    entries = []
    for d in deployments:
        container = by_name.get(d.container)
        if container is None:
            entries.append(RotationEntry(d.id, d.container, d.model, False, "container not found"))
        elif container.id in ready:
            entries.append(RotationEntry(d.id, d.container, d.model, True, "ready"))
        elif container.id in benefit_of_doubt and container.id not in why_not:
            entries.append(RotationEntry(d.id, d.container, d.model, True, "not judged yet"))
        else:
            reason = why_not.get(container.id) or f"{container.state.value}, not ready"
            entries.append(RotationEntry(d.id, d.container, d.model, False, reason))
    return entries


def rotation_document(
    entries: Sequence[RotationEntry], now: float, stale_after: float, all_down: str
) -> dict[str, Any]:
    """What the callback reads. A deny-list: a deployment the watchdog does not know stays routed."""
    return {
        "version": ROTATION_VERSION,
        "written_at": now,
        "stale_after": stale_after,
        "all_down": all_down,
        "out": {e.id: f"{e.container}: {e.reason}" for e in entries if not e.in_rotation},
        "in": sorted(e.id for e in entries if e.in_rotation),
    }
