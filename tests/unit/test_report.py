"""The restart report against a journal built from a known scenario, with hand-computed expectations."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.report_scenario import T0, H, build_scenario
from watchdog.journal import Journal
from watchdog.reports.restart_rates import Window, build, peak_in_an_hour, percentile, render


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    return build_scenario(tmp_path)


def test_report_numbers_match_the_hand_computed_ones(journal: Journal) -> None:
    window = Window(T0, T0 + 6 * H)
    report = build(journal.entries(since=T0 - 86400), journal.actions(since=T0), window)
    rows = {r.name: r for r in report.containers}
    assert sorted(rows) == ["embed-1", "llm-0", "llm-1"]

    llm0 = rows["llm-0"]
    assert llm0.restarts == 6 and llm0.restarts_per_hour == 1.0  # 6 in 6 h
    assert llm0.peak_restarts_in_an_hour == 6 and llm0.unstable
    assert llm0.by_cause == {"stopped": 6}
    assert llm0.recovery_p50_s == 12.0 and llm0.recovery_p95_s == 15.0  # nearest rank of 10..15
    down = sum(10.0 + i for i in range(6))  # 75 s
    assert llm0.availability_pct == round(100 * (1 - down / (6 * H)), 3)
    assert llm0.gpus == ["0"]

    llm1 = rows["llm-1"]
    assert llm1.restarts == 2 and llm1.peak_restarts_in_an_hour == 1 and not llm1.unstable
    assert llm1.by_cause == {"endpoint-failing": 1, "zero-vram": 1}
    assert llm1.recovery_p50_s == 30.0 and llm1.recovery_p95_s == 90.0
    assert llm1.availability_pct == round(100 * (1 - 120 / (6 * H)), 3)

    embed = rows["embed-1"]
    assert embed.breaker_trips == 1 and embed.recovery_p50_s is None
    assert embed.availability_pct == round(100 * (1 - H / (6 * H)), 3)  # open episode: down to the end

    gpus = {r.name: r for r in report.gpus}
    assert gpus["0"].restarts == 6 and gpus["0"].unstable
    assert gpus["1"].restarts == 3 and gpus["1"].by_cause == {"endpoint-failing": 1, "stopped": 1, "zero-vram": 1}
    assert report.fleet.restarts == 9 and report.fleet.faults == 9 and report.fleet.breaker_trips == 1


def test_an_episode_open_at_the_window_start_counts_from_the_start(journal: Journal) -> None:
    journal.record("detected", "x", ts=T0 + 10 * H - 100, container="late", fault="stopped")
    journal.record("recovered", "ok", ts=T0 + 10 * H + 50, container="late", duration=150.0)
    window = Window(T0 + 10 * H, T0 + 11 * H)
    report = build(journal.entries(since=window.start - 86400), journal.actions(since=window.start), window)
    late = {r.name: r for r in report.containers}["late"]
    assert late.availability_pct == round(100 * (1 - 50 / H), 3)


def test_helpers() -> None:
    assert percentile([], 0.5) is None and percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert peak_in_an_hour([0, 100, 3599, 3600, 7300]) == 3  # [0, 3599]: 3; 3600 starts a new span
    assert peak_in_an_hour([]) == 0


def test_formats(journal: Journal) -> None:
    window = Window(T0, T0 + 6 * H)
    report = build(journal.entries(since=T0 - 86400), journal.actions(since=T0), window)
    table = render(report, "table")
    assert "llm-0 UNSTABLE" in table and "more than 5 restarts in an hour" in table
    data = json.loads(render(report, "json"))
    assert data["fleet"]["restarts"] == 9 and data["containers"][1]["name"] == "llm-0"
    rows = list(csv.reader(io.StringIO(render(report, "csv"))))
    assert rows[0][:3] == ["scope", "name", "restarts"] and rows[2][:2] == ["containers", "llm-0 UNSTABLE"]
    markdown = render(report, "markdown")
    assert markdown.startswith("# restart report") and "| llm-1 | 2 |" in markdown


def test_cli_report_and_bad_input(journal: Journal, tmp_path: Path) -> None:
    journal.close()
    base = [sys.executable, "-m", "watchdog", "--state-dir", str(tmp_path), "report"]
    done = subprocess.run([*base, "--since", "30d", "--format", "json"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["fleet"]["restarts"] == 10  # the one two hours before T0 too
    out = tmp_path / "r.md"
    written = subprocess.run(
        [*base, "--since", "30d", "--format", "markdown", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert written.returncode == 0 and out.read_text().startswith("# restart report")
    bad = subprocess.run([*base, "--since", "yesterday"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--since 'yesterday'" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    wrong = subprocess.run([*base, "--format", "pdf"], capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 2 and "pdf" in wrong.stderr


# -- the HTTP endpoint's pure parts ------------------------------------------------------


def test_listen_and_health_helpers() -> None:
    from watchdog.config import ConfigError, parse_config, parse_listen
    from watchdog.ops.metrics import recent

    assert parse_listen("127.0.0.1:9108") == ("127.0.0.1", 9108)
    assert parse_listen("[::1]:9108") == ("::1", 9108)
    assert parse_listen("off") is None
    for bad in ("9108", "host:", "h:0", "h:70000", ":9108"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            parse_listen(bad)
    assert parse_config({"http": "off"}).http == "off"
    with pytest.raises(ConfigError, match=r"config: http='localhost'"):
        parse_config({"http": "localhost"})
    assert recent(None, 15, 100.0) == (False, "no cycle yet")
    assert recent(90.0, 15, 100.0)[0] is True
    hung = recent(80.0, 15, 100.0)
    assert hung[0] is False and "20.0 s ago" in hung[1]
