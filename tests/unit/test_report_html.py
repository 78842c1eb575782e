"""The timeline behind the HTML report, and the HTML itself, from the known scenario (hand-computed)."""

from __future__ import annotations

import re
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.report_scenario import GPU1_UUID, T0, H, build_scenario, write_html_report
from watchdog.journal import Journal
from watchdog.reports.html import LABEL_W, PLOT_W, render_html
from watchdog.reports.restart_rates import Window, build
from watchdog.reports.timeline import build_timeline

WINDOW = Window(T0, T0 + 6 * H)


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    return build_scenario(tmp_path)


def scenario_timeline(journal: Journal, window: Window = WINDOW):  # type: ignore[no-untyped-def]
    entries, actions = journal.entries(since=window.start - 86400), journal.actions(since=window.start)
    return build(entries, actions, window), build_timeline(entries, actions, window)


def test_timeline_lanes_episodes_and_marks(journal: Journal) -> None:
    _, timeline = scenario_timeline(journal)
    assert [(lane.scope, lane.name) for lane in timeline.lanes] == [
        ("container", "embed-1"),
        ("container", "llm-0"),
        ("container", "llm-1"),
        ("gpu", "0"),
        ("gpu", "1"),
        ("gpu", GPU1_UUID),
        ("host", "host"),
    ]
    llm0 = timeline.lane("llm-0", "container")
    assert llm0 is not None
    # The restart at T0-2h is outside the window: 6 restarts, 6 closed episodes of 10..15 s.
    assert [m.ts for m in llm0.marks] == [T0 + 600 + i * 600 for i in range(6)]
    assert {m.kind for m in llm0.marks} == {"restart"}
    assert [(e.start - T0, e.end - e.start, e.outcome) for e in llm0.episodes] == [
        (600.0 + i * 600, 10.0 + i, "recovered") for i in range(6)
    ]
    llm1 = timeline.lane("llm-1", "container")
    assert llm1 is not None
    assert [m.kind for m in llm1.marks] == ["restart", "dry-run", "restart"]
    assert [e.fault for e in llm1.episodes] == ["endpoint-failing", "zero-vram"]
    embed = timeline.lane("embed-1", "container")
    assert embed is not None
    assert [m.kind for m in embed.marks] == ["restart", "give-up"]
    (open_episode,) = embed.episodes
    assert open_episode.outcome == "open" and open_episode.end == WINDOW.end  # drawn to the right edge
    gpu1 = timeline.lane("1", "gpu")
    assert gpu1 is not None
    assert len(gpu1.episodes) == 3 and [m.kind for m in gpu1.marks] == ["restart", "restart", "restart", "give-up"]
    uuid_lane = timeline.lane(GPU1_UUID, "gpu")
    assert uuid_lane is not None and [m.kind for m in uuid_lane.marks] == ["xid", "gpu-mark"]
    host = timeline.lane("host", "host")
    assert host is not None and [m.kind for m in host.marks] == ["driver"]


def test_an_episode_open_before_the_window_is_clipped_to_its_start(journal: Journal) -> None:
    journal.record("detected", "x", ts=T0 + 10 * H - 100, container="late", fault="stopped")
    journal.record("recovered", "ok", ts=T0 + 10 * H + 50, container="late", duration=150.0)
    window = Window(T0 + 10 * H, T0 + 11 * H)
    _, timeline = scenario_timeline(journal, window)
    late = timeline.lane("late", "container")
    assert late is not None
    assert [(e.start, e.end) for e in late.episodes] == [(window.start, T0 + 10 * H + 50)]


class Shapes(HTMLParser):
    """Collects the chart's lanes, marks and episodes, and whether anything loads from elsewhere."""

    def __init__(self) -> None:
        super().__init__()
        self.lane: str | None = None
        self.marks: list[tuple[str, str, int, float]] = []  # lane, kind, count, x
        self.episodes: list[tuple[str, str, float, float]] = []  # lane, state, x, width
        self.external: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.add(tag)
        for key in ("src", "href"):
            if key in a:
                self.external.append(a[key])
        if tag == "g" and a.get("class") == "lane":
            self.lane = a["data-lane"]
        elif a.get("class") == "mark":
            x = float(a.get("cx") or a.get("x") or re.findall(r"[\d.]+", a["d"])[0])
            self.marks.append((self.lane or "", a["data-kind"], int(a["data-count"]), x))
        elif a.get("class") == "episode":
            self.episodes.append((self.lane or "", a["data-state"], float(a["x"]), float(a["width"])))


def test_html_is_self_contained_and_draws_the_scenario(journal: Journal) -> None:
    report, timeline = scenario_timeline(journal)
    page = render_html(report, timeline, generated_at=WINDOW.end)
    shapes = Shapes()
    shapes.feed(page)
    assert shapes.external == [] and "script" not in shapes.tags  # one file, nothing fetched, no code
    llm0 = [m for m in shapes.marks if m[0] == "llm-0"]
    assert [(kind, count) for _, kind, count, _ in llm0] == [("restart", 1)] * 6
    # x is linear in time: restart i at T0 + 600 s * (i + 1) over a 6 h window.
    for i, (*_, x) in enumerate(llm0):
        expected = LABEL_W + (600 + i * 600) / (6 * H) * PLOT_W
        assert abs(x + 6 - expected) < 0.11  # a triangle's path starts 6 px left of its instant
    assert [e[1] for e in shapes.episodes if e[0] == "embed-1"] == ["open"]
    (_, _, x0, width) = next(e for e in shapes.episodes if e[0] == "embed-1")
    assert abs(x0 + width - (LABEL_W + PLOT_W)) < 0.11
    assert "llm-0 UNSTABLE" in page and 'data-row="llm-0"' in page
    assert re.search(r'data-card="restarts"><b>9</b>', page)


def test_marks_closer_than_a_pixel_merge_so_a_month_stays_small(tmp_path: Path) -> None:
    journal = Journal.in_dir(tmp_path)
    start = 1_700_000_000.0
    for i in range(2000):  # one restart a minute for 2000 minutes, on one lane of a 30-day chart
        action = journal.begin_action("restart", "busy", "id-busy", "stopped", "t", ts=start + 60 * i)
        journal.finish_action(action, "ok", ts=start + 60 * i + 1)
    window = Window(start, start + 30 * 86400)
    entries, actions = journal.entries(), journal.actions()
    page = render_html(build(entries, actions, window), build_timeline(entries, actions, window))
    shapes = Shapes()
    shapes.feed(page)
    counts = [count for lane, kind, count, _ in shapes.marks if lane == "busy"]
    assert sum(counts) == 2000  # nothing lost
    assert len(counts) <= 2000 * 60 / (30 * 86400) * PLOT_W + 2  # about one shape per pixel column
    assert len(page) < 200_000


def test_empty_window_and_names_are_escaped(tmp_path: Path) -> None:
    journal = Journal.in_dir(tmp_path)
    window = Window(time.time() - H, time.time())
    empty = render_html(build([], [], window), build_timeline([], [], window))
    assert "no faults, restarts or GPU events in this window" in empty and "nothing in this window" in empty
    journal.record("detected", "x", ts=window.start + 10, container="<b>evil</b>", fault="stopped")
    entries = journal.entries()
    page = render_html(build(entries, [], window), build_timeline(entries, [], window))
    assert "<b>evil</b>" not in page and "&lt;b&gt;evil&lt;/b&gt;" in page


def test_cli_writes_html(journal: Journal, tmp_path: Path) -> None:
    journal.close()
    out = tmp_path / "report.html"
    write_html_report(tmp_path, "30d", out)
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count('class="lane"') == 7
