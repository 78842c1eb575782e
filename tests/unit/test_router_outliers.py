"""The proxy's outlier ejection (litellm/gpu_watchdog_outliers.py) and its hooks in the rotation filter."""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "litellm"))
outliers: Any = importlib.import_module("gpu_watchdog_outliers")
rotation: Any = importlib.import_module("gpu_watchdog_rotation")


class Timeout(Exception):  # the names LiteLLM's exceptions have (litellm/exceptions.py)
    status_code = 408


class APIConnectionError(Exception):
    status_code = 500


class InternalServerError(Exception):
    status_code = 500


class ServiceUnavailableError(Exception):
    status_code = 503


class RateLimitError(Exception):
    status_code = 429


class BadRequestError(Exception):
    status_code = 400


class ContextWindowExceededError(Exception):
    status_code = 400


class InternalContextWindowExceededError(Exception):  # a 5xx that is the request's fault
    status_code = 500


@pytest.mark.parametrize(
    ("exception", "kind"),
    [
        (Timeout(), "timeout"),
        (TimeoutError(), "timeout"),
        (APIConnectionError(), "connection"),
        (ConnectionRefusedError(), "connection"),
        (InternalServerError(), "5xx"),
        (ServiceUnavailableError(), "5xx"),
        (RateLimitError(), None),
        (BadRequestError(), None),
        (ContextWindowExceededError(), None),
        (InternalContextWindowExceededError(), None),
        (asyncio.CancelledError(), None),
        (None, None),
    ],
)
def test_only_timeouts_connection_errors_and_5xx_count(exception: Any, kind: str | None) -> None:
    assert outliers.failure_kind(exception) == kind


def book(size: int = 4, **settings: Any) -> Any:
    result = outliers.OutlierBook(outliers.OutlierSettings(**settings))
    result.see_group("qwen", [f"d{i}" for i in range(size)])
    return result


def test_three_failures_in_a_row_eject_for_the_base_time() -> None:
    b = book()
    assert not b.failure("d0", "qwen", "5xx", 100.0)
    assert not b.failure("d0", "qwen", "timeout", 100.1)
    assert b.failure("d0", "qwen", "connection", 100.2)
    assert b.ejected(100.3) == {"d0"}
    assert b.ejected(110.3) == set()  # 10 s base
    assert b.entries["d0"].ejections == 1


def test_a_success_or_an_uncounted_error_breaks_or_keeps_the_streak() -> None:
    b = book()
    b.failure("d0", "qwen", "5xx", 1.0)
    b.failure("d0", "qwen", "5xx", 2.0)
    b.success("d0", "qwen", 3.0, 0.05, None)
    assert not b.failure("d0", "qwen", "5xx", 4.0)
    assert not b.failure("d0", "qwen", None, 4.5)  # a 4xx / 429: neither counts nor resets
    assert not b.failure("d0", "qwen", "5xx", 5.0)
    assert b.entries["d0"].streak == 2
    assert b.failure("d0", "qwen", "5xx", 6.0)


def test_ejection_time_grows_with_repeats_up_to_the_cap() -> None:
    b = book(base_ejection=10.0, max_ejection=25.0)
    now = 0.0
    lengths = []
    for _ in range(4):
        for _ in range(3):
            now += 0.1
            b.failure("d0", "qwen", "5xx", now)
        lengths.append(round(b.entries["d0"].ejected_until - now, 3))
        now = b.entries["d0"].ejected_until + 1.0  # back after the ejection, well within a minute
    assert lengths == [10.0, 20.0, 25.0, 25.0]


def test_the_ejection_count_decays_by_one_a_minute_without_ejection() -> None:
    b = book()
    for t in (0.0, 0.1, 0.2):
        b.failure("d0", "qwen", "5xx", t)
    for t in (10.3, 10.4, 10.5):
        b.failure("d0", "qwen", "5xx", t)
    assert b.entries["d0"].ejections == 2  # 20 s, until 30.5
    for t in (30.5 + 60.1, 90.7, 90.8):  # one minute after the ejection ended: 2 -> 1, then this one: 2
        b.failure("d0", "qwen", "5xx", t)
    assert b.entries["d0"].ejections == 2
    assert b.entries["d0"].ejected_until == pytest.approx(90.8 + 20.0)
    doc = b.document(110.8 + 130.0, "host", 1)  # two minutes after: decayed to 0
    assert doc["deployments"]["d0"]["ejections"] == 0


def test_never_more_than_the_percent_cap_of_a_group() -> None:
    b = book(size=4)
    for ident in ("d0", "d1", "d2"):
        for t in (1.0, 1.1, 1.2):
            b.failure(ident, "qwen", "5xx", t)
    assert b.ejected(1.5) == {"d0", "d1"}  # 50 % of 4
    assert b.entries["d2"].streak == 3  # still reported, ejected when there is room


def test_never_the_last_deployment_of_a_group() -> None:
    b = book(size=1, max_percent=100.0)
    for t in (1.0, 1.1, 1.2, 1.3):
        assert not b.failure("d0", "qwen", "5xx", t)
    two = book(size=2, max_percent=100.0)
    for ident in ("d0", "d1"):
        for t in (1.0, 1.1, 1.2):
            two.failure(ident, "qwen", "5xx", t)
    assert two.ejected(1.5) == {"d0"}


def test_a_clear_ends_the_ejection_and_the_streak_it_saw_once() -> None:
    b = book()
    for t in (1.0, 1.1, 1.2):
        b.failure("d0", "qwen", "5xx", t)
    b.clear({"d0": 2.0}, 2.5)
    assert b.ejected(2.6) == set()
    assert b.entries["d0"].streak == 0
    assert b.entries["d0"].ejections == 1  # a repeat still ejects for longer
    for t in (3.0, 3.1, 3.2):
        b.failure("d0", "qwen", "5xx", t)
    b.clear({"d0": 2.0}, 3.5)  # the same clear again: changes nothing
    assert b.ejected(3.6) == {"d0"}
    assert b.entries["d0"].ejected_until == pytest.approx(3.2 + 20.0)


def test_bad_outlier_settings_in_the_rotation_file_keep_the_defaults() -> None:
    settings = outliers.parse_settings({"consecutive": 0, "base_ejection": "x", "max_percent": 500, "max_ejection": 9})
    assert settings == outliers.OutlierSettings(max_percent=100.0, max_ejection=9.0)
    assert outliers.parse_settings(None) == outliers.OutlierSettings()


# -- the hooks in the rotation filter ---------------------------------------


def deployment(ident: str) -> dict[str, Any]:
    return {"model_name": "qwen", "model_info": {"id": ident}}


def call(ident: str, exception: Any = None) -> dict[str, Any]:
    """What LiteLLM hands its logging hooks (litellm_logging.py: litellm_params with model_info and metadata)."""
    return {
        "litellm_params": {"model_info": {"id": ident}, "metadata": {"model_group": "qwen"}},
        "exception": exception,
    }


def write_rotation(path: Path, now: float, **extra: Any) -> None:
    doc = {"version": 1, "written_at": now, "stale_after": 15, "all_down": "route-anyway", "out": {}, **extra}
    path.write_text(json.dumps(doc))


def test_the_filter_drops_ejected_deployments_and_reports_them(tmp_path: Path) -> None:
    path = tmp_path / "rotation.json"
    write_rotation(path, 0.0)  # stale at once: the deny-list is off, the ejection is not
    f = rotation.RotationFilter(path)
    group = [deployment(f"d{i}") for i in range(4)]
    assert len(f.select(group, "qwen")) == 4

    async def fail_three() -> None:
        for _ in range(3):
            await f.async_log_failure_event(call("d1", InternalServerError()), None, 0.0, 0.1)

    asyncio.run(fail_three())
    kept = f.select(group, "qwen")
    assert [d["model_info"]["id"] for d in kept] == ["d0", "d2", "d3"]
    reports = list(tmp_path.glob("router-report-*.json"))
    assert len(reports) == 1
    doc = json.loads(reports[0].read_text())
    assert doc["deployments"] == {}  # the first, at once; changes within a second wait for the next
    f.write_report(doc["written_at"] + 1)
    doc = json.loads(reports[0].read_text())
    assert doc["deployments"]["d1"]["consecutive"] == 3 and doc["deployments"]["d1"]["ejected_until"] > 0


def test_a_client_error_never_ejects_and_a_success_records_latency(tmp_path: Path) -> None:
    import datetime

    f = rotation.RotationFilter(tmp_path / "rotation.json")
    group = [deployment("d0"), deployment("d1")]
    f.select(group, "qwen")
    start = datetime.datetime(2026, 1, 1)

    async def run() -> None:
        for _ in range(5):
            await f.async_log_failure_event(call("d0", RateLimitError()), None, start, start)
        await f.async_log_success_event(call("d1"), None, start, start + datetime.timedelta(seconds=0.25))

    asyncio.run(run())
    assert len(f.select(group, "qwen")) == 2
    assert f.book.entries["d1"].latency == pytest.approx(0.25)
    assert "d0" not in f.book.entries  # uncounted errors leave no record


def test_a_cleared_deployment_is_routed_again(tmp_path: Path) -> None:
    path = tmp_path / "rotation.json"
    f = rotation.RotationFilter(path)
    group = [deployment(f"d{i}") for i in range(4)]
    f.select(group, "qwen")
    for _ in range(3):
        f.outcome(call("d2", Timeout()), 0.0, 0.0, failed=True)
    assert len(f.select(group, "qwen")) == 3
    import time

    write_rotation(path, time.time(), cleared={"d2": time.time()})
    assert len(f.select(group, "qwen")) == 4


def test_a_rotation_file_out_and_an_ejection_never_empty_the_candidates(tmp_path: Path) -> None:
    import time

    path = tmp_path / "rotation.json"
    write_rotation(path, time.time(), out={"d0": "b0: crashed"})
    f = rotation.RotationFilter(path)
    group = [deployment("d0"), deployment("d1")]
    f.select(group, "qwen")
    for _ in range(3):
        f.outcome(call("d1", Timeout()), 0.0, 0.0, failed=True)
    assert [d["model_info"]["id"] for d in f.select(group, "qwen")] == ["d1"]  # route-anyway rather than none


def test_the_rotation_file_sets_the_outlier_settings(tmp_path: Path) -> None:
    import time

    path = tmp_path / "rotation.json"
    write_rotation(path, time.time(), outlier={"consecutive": 1, "base_ejection": 5, "max_ejection": 9})
    f = rotation.RotationFilter(path)
    f.select([deployment("d0"), deployment("d1")], "qwen")
    f.outcome(call("d0", Timeout()), 0.0, 0.0, failed=True)
    assert f.book.ejected(time.time()) == {"d0"}


def test_changes_within_a_second_are_written_a_second_later(tmp_path: Path) -> None:
    f = rotation.RotationFilter(tmp_path / "rotation.json")
    f.select([deployment("d0"), deployment("d1")], "qwen")  # the first report, at once

    async def run() -> None:
        await f.async_log_failure_event(call("d0", Timeout()), None, 0.0, 0.0)
        await asyncio.sleep(1.2)

    asyncio.run(run())
    doc = json.loads(f.report_path().read_text())
    assert doc["deployments"]["d0"]["consecutive"] == 1 and doc["deployments"]["d0"]["last_failure"] == "timeout"
