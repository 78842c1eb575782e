"""The watchdog's side of the router feedback: reports parsed, suspects judged, clears written, config checked."""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from watchdog.config import Config, ConfigError, parse_config
from watchdog.containers.diagnose import ProbeHistory
from watchdog.containers.own_actions import OwnActionWindows
from watchdog.journal import Journal
from watchdog.model import ContainerSnapshot, ContainerSpec, ContainerState, ProbeResult, ProbeStatus
from watchdog.router.feedback_watch import RouterFeedback
from watchdog.router.router_feedback import (
    DeploymentReport,
    judge,
    merge_reports,
    news,
    outlier_settings,
    parse_report,
)
from watchdog.router.router_reports import ReportReader
from watchdog.subsystem import CycleView, Services

NOW = 1_000_000.0


def report_text(written_at: float = NOW, **rows: dict[str, Any]) -> str:
    return json.dumps({"version": 1, "host": "h", "pid": 1, "written_at": written_at, "deployments": rows})


def row(consecutive: int = 3, at: float = NOW - 1, until: float | None = NOW + 9, ejections: int = 1) -> dict[str, Any]:
    return {
        "group": "qwen",
        "consecutive": consecutive,
        "last_failure": "5xx",
        "last_failure_at": at,
        "ejected_until": until,
        "ejections": ejections,
        "latency": 0.02,
        "ttft": None,
    }


def test_a_report_parses_into_its_deployments() -> None:
    reports, why = parse_report(report_text(b0=row()), "r.json", NOW)
    assert why == "ok"
    assert reports == [DeploymentReport("b0", "r.json", 3, "5xx", NOW - 1, NOW + 9, 1, 0.02, None)]


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("{", "not JSON"),
        (json.dumps({"version": 2}), "not a version-1"),
        (json.dumps({"version": 1, "deployments": {}}), "no written_at"),
        (report_text(written_at=NOW - 61), "61 s old"),
    ],
)
def test_garbage_and_stale_reports_are_ignored(text: str, why: str) -> None:
    reports, said = parse_report(text, "r.json", NOW)
    assert reports == [] and said.startswith(why)


def test_bad_rows_are_read_as_nothing_wrong() -> None:
    reports, _ = parse_report(report_text(b0={"consecutive": "many", "ejections": True}, b1=[]), "r.json", NOW)
    assert reports == [DeploymentReport("b0", "r.json")]


def test_several_proxies_merge_on_the_latest_failure() -> None:
    older = DeploymentReport("b0", "a", 2, "5xx", NOW - 5)
    newer = DeploymentReport("b0", "b", 3, "timeout", NOW - 1)
    assert merge_reports([newer, older])["b0"] == newer
    assert merge_reports([older, newer])["b0"] == newer


def test_news_is_a_new_streak_or_a_new_ejection_only() -> None:
    one = DeploymentReport("b0", "a", 1, "5xx", NOW - 1)
    streak = replace(one, consecutive=2)
    ejected = replace(streak, consecutive=3, ejected_until=NOW + 10, ejections=1)
    assert news({}, {"b0": one}, NOW) == []
    assert news({"b0": one}, {"b0": streak}, NOW) == ["b0"]
    assert news({"b0": streak}, {"b0": replace(streak, last_failure_at=NOW)}, NOW) == []
    assert news({"b0": streak}, {"b0": ejected}, NOW) == ["b0"]
    assert news({"b0": ejected}, {"b0": ejected}, NOW) == []


def ok(at: float, duration: float = 0.01) -> ProbeResult:
    return ProbeResult(at, ProbeStatus.OK, "200", duration)


def test_a_reported_deployment_is_suspect_until_a_probe_started_after_its_failure_answers() -> None:
    report = DeploymentReport("b0", "a", 3, "5xx", NOW - 1, NOW + 9, 1)
    # This probe answered after the failure but started before it: no evidence either way.
    early = judge({"b0": report}, {"b0": [ok(NOW - 0.9, duration=0.5)]}, {}, {}, NOW)
    assert list(early.suspects) == ["b0"] and "3 failure(s) in a row" in early.suspects["b0"]
    cleared = judge({"b0": report}, {"b0": [ok(NOW - 0.5)]}, {}, {}, NOW)
    assert cleared.clear == {"b0": NOW - 0.5} and not cleared.suspects
    failed = judge({"b0": report}, {"b0": [ProbeResult(NOW, ProbeStatus.FAILED, "timed out", 1.0)]}, {}, {}, NOW)
    assert list(failed.suspects) == ["b0"]


def test_a_cleared_streak_is_not_judged_again_and_a_new_one_is() -> None:
    report = DeploymentReport("b0", "a", 3, "5xx", NOW - 1, NOW + 9, 1)
    assert judge({"b0": report}, {}, {"b0": NOW - 0.5}, {}, NOW) == judge({}, {}, {}, {}, NOW)
    again = replace(report, last_failure_at=NOW - 0.1)
    assert list(judge({"b0": again}, {}, {"b0": NOW - 0.5}, {}, NOW).suspects) == ["b0"]


def test_one_failure_or_an_old_ejection_is_no_suspect() -> None:
    one = DeploymentReport("b0", "a", 1, "timeout", NOW - 1)
    over = DeploymentReport("b0", "a", 1, "timeout", NOW - 30, NOW - 20, 1)
    assert judge({"b0": one, "b1": replace(over, deployment="b1")}, {}, {}, {}, NOW).suspects == {}


def test_three_recent_ejections_stop_the_clearing() -> None:
    report = DeploymentReport("b0", "a", 3, "5xx", NOW - 1, NOW + 30, 3)
    seen = {"b0": [NOW - 300, NOW - 100, NOW - 1]}
    verdict = judge({"b0": report}, {"b0": [ok(NOW - 0.5)]}, {}, seen, NOW)
    assert verdict.clear == {} and verdict.suspects == {} and "no longer cleared" in verdict.not_cleared["b0"]
    old = {"b0": [NOW - 700, NOW - 100, NOW - 1]}  # one of them outside the 10 minutes
    assert judge({"b0": report}, {"b0": [ok(NOW - 0.5)]}, {}, old, NOW).clear == {"b0": NOW - 0.5}


# -- config ------------------------------------------------------------------


def test_outlier_settings_come_from_the_config() -> None:
    config = parse_config(
        {"litellm": {"outlier_consecutive": 5, "outlier_base_ejection": "2s", "outlier_max_percent": 25}}
    )
    assert outlier_settings(config.litellm) == {
        "consecutive": 5,
        "base_ejection": 2.0,
        "max_ejection": 300.0,
        "max_percent": 25.0,
    }


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        ({"outlier_consecutive": 0}, "litellm.outlier_consecutive=0: must be a whole number >= 1"),
        ({"outlier_consecutive": 2.5}, "litellm.outlier_consecutive=2.5: must be a whole number >= 1"),
        ({"outlier_base_ejection": 0}, "litellm.outlier_base_ejection=0: must be > 0 seconds"),
        ({"outlier_max_ejection": "soon"}, "litellm.outlier_max_ejection="),
        ({"outlier_max_percent": 101}, "litellm.outlier_max_percent=101: must be a number from 0 to 100"),
        (
            {"outlier_max_ejection": 5},
            "litellm.outlier_max_ejection=5 must be at least litellm.outlier_base_ejection=10",
        ),
    ],
)
def test_bad_outlier_settings_are_one_line_errors(settings: dict[str, Any], said: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"litellm": settings})
    assert said in str(caught.value) and "\n" not in str(caught.value)


# -- the reader and the feedback, on real files and a real journal -----------


def write_report(directory: Path, name: str, text: str) -> Path:
    path = directory / f"router-report-{name}.json"
    path.write_text(text)
    return path


def test_the_reader_wakes_the_loop_on_a_new_ejection_and_ignores_garbage(tmp_path: Path) -> None:
    woken: list[int] = []
    clock = [time.time()]
    reader = ReportReader(lambda: tmp_path, lambda: clock[0], lambda: woken.append(1))
    write_report(tmp_path, "h-1", report_text(clock[0], b0=row(at=clock[0] - 1, until=clock[0] + 9)))
    write_report(tmp_path, "h-2", "garbage")
    assert reader.scan() == ["b0"] and woken == [1]
    assert reader.scan() == [] and woken == [1]  # unchanged: no news
    assert set(reader.reports()) == {"b0"}
    clock[0] += 61  # the file now is stale: its deployments are dropped
    os.utime(tmp_path / "router-report-h-1.json", (clock[0] - 61, clock[0] - 61))
    reader.scan()
    assert reader.reports() == {}


def backend(name: str, gpu: str) -> ContainerSnapshot:
    return ContainerSnapshot(
        id=f"id-{name}",
        name=name,
        state=ContainerState.RUNNING,
        spec=ContainerSpec(role="chat", model="qwen"),
        endpoint="http://127.0.0.1:1/health",
        gpus=(gpu,),
    )


@pytest.fixture
def feedback(tmp_path: Path) -> Any:
    journal = Journal.in_dir(tmp_path / "state")
    executor = ThreadPoolExecutor(1)
    services = Services(journal, None, executor, OwnActionWindows(), time.time, lambda: None)  # type: ignore[arg-type]
    config = replace(Config(), litellm=replace(Config().litellm, enabled=True))
    watch = RouterFeedback(config, services, lambda: tmp_path)
    watch.reader.every = 3600.0  # the test scans by hand
    yield watch, journal
    watch.stop()
    executor.shutdown()
    journal.close()


def test_a_report_makes_a_suspect_then_its_answer_a_journaled_clear(feedback: Any, tmp_path: Path) -> None:
    watch, journal = feedback
    now = time.time()
    b0 = backend("b0", "0")
    write_report(tmp_path, "h-1", report_text(now, **{"b0.gpu0": row(at=now - 1, until=now + 9)}))
    watch.reader.scan()
    failing = CycleView((b0,), {b0.id: ProbeHistory((ProbeResult(now - 2, ProbeStatus.OK, "200", 0.01),), now - 9)})
    assert list(watch.suspects(failing, now)) == [b0.id]
    assert list(watch.suspects(failing, now + 0.5)) == [b0.id]  # journaled once per streak
    reports = journal.entries(kind="router-report")
    assert len(reports) == 1 and "the proxy reports 3 failure(s) in a row" in reports[0]["reason"]
    assert reports[0]["container"] == "b0" and watch.view["b0.gpu0"]["ejected"] and watch.ejected == 1
    answered = CycleView((b0,), {b0.id: ProbeHistory((ok(now + 0.8),), now - 9)})
    assert watch.suspects(answered, now + 1) == {}
    assert watch.cleared == {"b0.gpu0": now + 0.8}
    assert len(journal.entries(kind="router-cleared")) == 1
    assert watch.reports_total == 1


def test_disabled_router_reads_no_reports(feedback: Any, tmp_path: Path) -> None:
    watch, _ = feedback
    watch.apply_config(Config())
    write_report(tmp_path, "h-1", report_text(time.time(), **{"b0.gpu0": row(at=time.time() - 1)}))
    watch.reader.scan()
    assert watch.suspects(CycleView((backend("b0", "0"),)), time.time()) == {}


def test_the_rotation_file_carries_the_outlier_settings_and_the_clears(tmp_path: Path) -> None:
    from watchdog.router.problems import Problems
    from watchdog.router.rotation_writer import RotationWriter

    journal = Journal.in_dir(tmp_path / "state")
    config = replace(
        Config(),
        litellm=replace(Config().litellm, enabled=True, out=str(tmp_path / "config.yaml"), outlier_consecutive=4),
    )
    writer = RotationWriter(config, journal, Problems(journal, time.time), lambda: {"b0.gpu0": 12.5})
    writer.write([], CycleView(()), set(), time.time())
    doc = json.loads((tmp_path / "rotation.json").read_text())
    journal.close()
    assert doc["version"] == 1 and doc["cleared"] == {"b0.gpu0": 12.5}
    assert doc["outlier"] == {"consecutive": 4, "base_ejection": 10.0, "max_ejection": 300.0, "max_percent": 50.0}


def test_the_third_report_in_ten_minutes_is_no_longer_cleared(feedback: Any, tmp_path: Path) -> None:
    watch, journal = feedback
    b0 = backend("b0", "0")
    now = time.time()
    for streak in range(3):
        failed_at = now + streak * 20
        write_report(tmp_path, "h-1", report_text(failed_at, **{"b0.gpu0": row(at=failed_at, until=failed_at + 10)}))
        watch.reader.scan()
        answered = CycleView((b0,), {b0.id: ProbeHistory((ok(failed_at + 0.5),), now - 9)})
        watch.suspects(answered, failed_at + 1)
    assert len(journal.entries(kind="router-cleared")) == 2
    reports = [e["reason"] for e in journal.entries(kind="router-report")]
    assert len(reports) == 4 and sum("no longer cleared" in r for r in reports) == 1, reports
    assert watch.suspects(answered, now + 41) == {}  # not a suspect either: the failure threshold decides


def router_view(reports: int, ejected: bool) -> dict[str, Any]:
    row = {"container": "b0", "failures": 3, "last_failure": "5xx", "ejected": ejected}
    return {
        "plan": "ok",
        "litellm": {"config": "c.yaml", "rotation": {}, "outliers": {"b0.gpu0": row}, "router_reports": reports},
    }


def test_metrics_count_reports_and_ejected_deployments() -> None:
    from watchdog.model import Diagnosis
    from watchdog.ops.metrics import Metrics

    metrics = Metrics("host")
    metrics.observe([], Diagnosis(), [], {}, router_view(1, True), engine_up=True)
    metrics.observe([], Diagnosis(), [], {}, router_view(3, True), engine_up=True)
    text = metrics.exposition().decode()
    assert "gpu_watchdog_router_reports_total 3.0" in text
    assert "gpu_watchdog_router_ejected_deployments 1.0" in text
    metrics.observe([], Diagnosis(), [], {}, router_view(3, False), engine_up=True)
    assert "gpu_watchdog_router_ejected_deployments 0.0" in metrics.exposition().decode()


def test_status_shows_the_routers_view_of_a_failing_deployment() -> None:
    from watchdog.ops.status import render_router

    lines = render_router(router_view(1, True))
    assert "  router: b0.gpu0: 3 failure(s) in a row (last: 5xx), EJECTED by the proxy" in lines


def test_an_answering_probe_does_not_clear_a_server_whose_counters_stood_still_since_the_failure() -> None:
    report = DeploymentReport("b0", "a", 3, "timeout", NOW - 1, NOW + 9, 1)  # last failure 1 s ago
    answered = {"b0": [ok(NOW - 0.5)]}
    # Tokens last moved before the proxy's failure, and the latest reading shows work and no growth: a wedge forming.
    held = judge({"b0": report}, answered, {}, {}, NOW, frozen={"b0": NOW - 20.0})
    assert held.clear == {} and "no token generated for 20 s" in held.suspects["b0"], held
    # Tokens moved after the failure: it serves; the report was a false alarm.
    assert judge({"b0": report}, answered, {}, {}, NOW, frozen={"b0": NOW - 0.2}).clear == {"b0": NOW - 0.5}


def test_frozen_since_is_a_busy_server_whose_latest_reading_showed_no_growth() -> None:
    from watchdog.serving.progress import CounterSample, ProgressTrack, ServerKind, advance, frozen_since

    def track(*samples: tuple[float, float, float]) -> ProgressTrack:
        t = ProgressTrack()
        for at, tokens, running in samples:
            t = advance(t, CounterSample(at, ServerKind.LLAMA_CPP, tokens, running, 0))
        return t

    assert frozen_since(track((1.0, 5, 1), (3.0, 9, 1))) is None  # moving
    assert frozen_since(track((1.0, 5, 0), (3.0, 5, 0))) is None  # idle
    assert frozen_since(track((1.0, 5, 1), (3.0, 9, 1), (5.0, 9, 1))) == 3.0  # work, no growth since 3 s
