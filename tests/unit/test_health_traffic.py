"""Traffic follows GPU health: the pure shares, the callback's picker, and the rotation file the sync writes."""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from tests.unit.test_router import load_callback
from tests.unit.test_router_sync import make, ok_history, snapshot
from watchdog.config import ConfigError, parse_config
from watchdog.gpu.findings import GpuFindings
from watchdog.gpu.health_score import Contribution, HealthScore
from watchdog.model import Diagnosis
from watchdog.router.health_weights import Candidate, health_shares
from watchdog.subsystem import CycleView


def score(index: int, value: float) -> HealthScore:
    hit = () if value >= 1 else (Contribution("ecc-corrected", value, f"correctable ECC -> {value}"),)
    return HealthScore(index, f"GPU-{index}", value, hit, ())


def group(*gpus: int, name: str = "qwen") -> list[Candidate]:
    return [Candidate(f"d{g}", f"llm-{g}", name, (f"GPU-{g}",)) for g in gpus]


def shares(candidates: list[Candidate], scores: dict[int, float], **kw: object) -> dict[str, object]:
    table = {f"GPU-{i}": score(i, v) for i, v in scores.items()}
    settings: dict[str, object] = {"evict_below": 0.1, "readmit_above": 0.15, "floor": 1}
    settings.update(kw)
    return health_shares(candidates, table, **settings)  # type: ignore[arg-type,return-value]


def test_a_share_is_the_worst_score_of_its_gpus_and_healthy_ones_are_not_listed() -> None:
    result = shares(group(0, 1, 2), {0: 1.0, 1: 0.5, 2: 0.2})
    assert set(result) == {"d1", "d2"}
    assert result["d1"].factor == 0.5 and result["d2"].factor == 0.2  # type: ignore[attr-defined]
    assert "GPU 1 health 0.50" in result["d1"].reason  # type: ignore[attr-defined]
    split = [Candidate("big", "llm-big", "qwen", ("GPU-0", "GPU-1"))]
    assert shares(split, {0: 0.9, 1: 0.4})["big"].factor == 0.4  # type: ignore[attr-defined]


def test_an_unscored_gpu_is_unjudged_not_penalised() -> None:
    assert shares(group(0, 1), {}) == {}
    assert shares([Candidate("x", "llm-x", "qwen", ())], {0: 0.05}) == {}


def test_below_the_threshold_is_evicted_and_comes_back_only_above_readmit() -> None:
    first = shares(group(0, 1, 2), {0: 1.0, 1: 0.5, 2: 0.05})
    assert first["d2"].evicted and "below gpu.health.evict_below 0.1" in first["d2"].reason  # type: ignore[attr-defined]
    hovering = shares(group(0, 1, 2), {0: 1.0, 1: 0.5, 2: 0.12}, evicted_before={"d2"})
    assert hovering["d2"].evicted  # type: ignore[attr-defined]
    back = shares(group(0, 1, 2), {0: 1.0, 1: 0.5, 2: 0.16}, evicted_before={"d2"})
    assert not back["d2"].evicted and back["d2"].factor == 0.16  # type: ignore[attr-defined]
    fresh = shares(group(0, 1, 2), {0: 1.0, 1: 0.5, 2: 0.12})
    assert not fresh["d2"].evicted  # not evicted before: 0.12 is above evict_below


def test_an_eviction_never_takes_a_group_under_its_floor() -> None:
    both_bad = shares(group(0, 1), {0: 0.05, 1: 0.02})
    assert both_bad["d1"].evicted  # type: ignore[attr-defined]  # the worst goes first
    kept = both_bad["d0"]
    assert not kept.evicted and kept.kept and kept.factor == 0.05  # type: ignore[attr-defined]
    assert "would leave group qwen with 0 of 2 replicas serving (floor 1)" in kept.reason  # type: ignore[attr-defined]
    alone = shares(group(3), {3: 0.0})
    assert alone["d3"].kept and alone["d3"].factor == 0.01  # type: ignore[attr-defined]
    two = shares(group(0, 1, 2), {0: 0.05, 1: 0.05, 2: 1.0}, floor=2)
    assert sum(1 for s in two.values() if s.evicted) == 1  # type: ignore[attr-defined]
    other_group = shares(group(0) + group(1, name="llama"), {0: 0.05, 1: 1.0})
    assert other_group["d0"].kept  # type: ignore[attr-defined]  # another group's replica does not count


@pytest.mark.parametrize(
    ("section", "culprit"),
    [
        ({"evict_below": 2}, "gpu.health.evict_below"),
        ({"traffic": "yes please"}, "gpu.health.traffic"),
        ({"evict_below": 0.3, "readmit_above": 0.2}, "gpu.health.readmit_above"),
    ],
)
def test_bad_traffic_settings_name_the_key(section: dict[str, object], culprit: str) -> None:
    with pytest.raises(ConfigError, match=culprit.replace(".", r"\.")):
        parse_config({"gpu": {"health": section}})


# -- the callback's picker --------------------------------------------------------


def candidates(*ids: str, weight: int | None = None) -> list[dict[str, object]]:
    params = {} if weight is None else {"weight": weight}
    return [{"model_name": "qwen", "model_info": {"id": i}, "litellm_params": dict(params)} for i in ids]


def test_the_picker_gives_each_candidate_its_share_exactly() -> None:
    cb = load_callback()
    picker = cb.HealthPicker()
    pool = candidates("a", "b", "c")
    shares_ = {"b": 0.5, "c": 0.2}
    picks = Counter(picker.pick("qwen", pool, shares_)[0]["model_info"]["id"] for _ in range(1700))
    assert picks == {"a": 1000, "b": 500, "c": 200}


def test_the_picker_multiplies_the_plan_weight_and_leaves_healthy_groups_to_litellm() -> None:
    cb = load_callback()
    picker = cb.HealthPicker()
    pool = candidates("a", "b", weight=30)
    pool[1]["litellm_params"] = {"weight": 10}
    picks = Counter(picker.pick("qwen", pool, {"a": 0.5})[0]["model_info"]["id"] for _ in range(250))
    assert picks == {"a": 150, "b": 100}  # 30 x 0.5 against 10 x 1
    assert picker.pick("qwen", pool, {"z": 0.5}) == pool  # no candidate is degraded: LiteLLM picks


def rotation_with(weights: dict[str, float], written_at: float, out: tuple[str, ...] = ()) -> str:
    return json.dumps(
        {"version": 1, "written_at": written_at, "stale_after": 15, "out": {o: "x" for o in out}, "weights": weights}
    )


def test_the_filter_applies_shares_only_from_a_fresh_file(tmp_path: Path) -> None:
    cb = load_callback()
    path = tmp_path / "rotation.json"
    filt = cb.RotationFilter(path)
    pool = candidates("a", "b", "c")
    path.write_text(rotation_with({"b": 0.5}, time.time(), out=("c",)))
    picks = Counter(filt.select(pool, "qwen")[0]["model_info"]["id"] for _ in range(300))
    assert picks == {"a": 200, "b": 100}
    path.write_text(rotation_with({"b": 0.5}, time.time() - 60))  # stale: the watchdog is gone
    assert filt.select(pool, "qwen") == pool
    path.write_text(rotation_with({"b": "half"}, time.time()))  # type: ignore[dict-item]
    assert filt.select(pool, "qwen") == pool  # unreadable: as LiteLLM alone would


# -- the rotation file the sync writes -----------------------------------------------------


def test_the_rotation_file_carries_shares_and_evictions(tmp_path: Path) -> None:
    sync, journal, _ = make(tmp_path, restart_command=["true"])
    fleet = [snapshot(i) for i in range(3)]
    histories = {c.id: ok_history() for c in fleet}
    ready = Diagnosis(ready=frozenset(c.id for c in fleet))
    assigned = {c.id: (f"GPU-{i}",) for i, c in enumerate(fleet)}

    def cycle(values: dict[int, float], now: float) -> dict[str, object]:
        scores = {f"GPU-{i}": score(i, v) for i, v in values.items()}
        gpu = GpuFindings(scores=scores, assigned=assigned)
        sync.cycle(CycleView(tuple(fleet), histories, ready, (), gpu), now)
        return json.loads((tmp_path / "out" / "rotation.json").read_text())  # type: ignore[no-any-return]

    doc = cycle({0: 1.0, 1: 0.5, 2: 0.05}, 1000.0)
    assert doc["weights"] == {"llm-1.gpu1": 0.5}
    assert "evicted: GPU 2 health 0.05" in doc["out"]["llm-2.gpu2"]  # type: ignore[index]
    assert journal.entries(kind="rotation-out")
    doc = cycle({0: 0.02, 1: 0.5, 2: 0.05}, 1001.0)
    assert set(doc["out"]) == {"llm-0.gpu0", "llm-2.gpu2"}  # type: ignore[arg-type]  # one serving is left
    doc = cycle({0: 0.02, 1: 0.03, 2: 0.05}, 1002.0)
    assert set(doc["out"]) == {"llm-0.gpu0", "llm-1.gpu1"}  # type: ignore[arg-type]  # the best one stays
    assert doc["weights"] == {"llm-2.gpu2": 0.05}  # at its small share
    floor_said = journal.entries(kind="replica-floor")
    assert len(floor_said) == 1 and floor_said[0]["reason"].startswith("llm-2: ")
    assert "floor of 1" in floor_said[0]["reason"]
    cycle({0: 0.02, 1: 0.03, 2: 0.05}, 1003.0)
    assert len(journal.entries(kind="replica-floor")) == 1  # said once
    doc = cycle({0: 1.0, 1: 1.0, 2: 1.0}, 1004.0)
    assert doc["out"] == {} and doc["weights"] == {}
    health = replace(sync.config.gpu.health, traffic=False)
    sync.apply_config(replace(sync.config, gpu=replace(sync.config.gpu, health=health)))
    doc = cycle({0: 1.0, 1: 0.5, 2: 0.05}, 1005.0)
    assert doc["out"] == {} and doc["weights"] == {}  # traffic off: scores shown, traffic as before
