"""A GPU's health score in the journal when it moves, and in the report and its timeline."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.report_scenario import T0, H, build_scenario
from watchdog.gpu.health_score import Contribution, HealthScore
from watchdog.gpu.score_journal import ScoreJournal, worth_recording
from watchdog.journal import Journal
from watchdog.reports.html import render_html
from watchdog.reports.restart_rates import Window, build, render
from watchdog.reports.timeline import build_timeline


@pytest.mark.parametrize(
    ("last", "score", "news"),
    [
        (None, 1.0, False),  # healthy from the start: nothing to say
        (None, 0.95, True),  # the first drop under 1
        (0.95, 0.9, False),  # a small move
        (0.95, 0.85, True),  # a step of 0.1
        (0.15, 0.09, True),  # under the eviction threshold (0.1), though a small move
        (0.09, 0.11, True),  # back over it
        (0.5, 1.0, True),  # healthy again
        (0.5, 0.5, False),
    ],
)
def test_a_score_is_journaled_when_it_moves(last: float | None, score: float, news: bool) -> None:
    assert worth_recording(last, score, evict_below=0.1) is news


def gpu_score(index: int, value: float) -> HealthScore:
    hits = () if value >= 1 else (Contribution("clock-events", value, f"clock events hw-slowdown -> {value}"),)
    return HealthScore(index, f"GPU-{index}", value, hits, ())


def test_the_score_journal_writes_only_the_moves(tmp_path: Path) -> None:
    journal = Journal.in_dir(tmp_path)
    book = ScoreJournal(journal)
    for at, value in enumerate([1.0, 1.0, 0.5, 0.48, 0.5, 0.3, 1.0]):
        book.see({"GPU-2": gpu_score(2, value)}, 0.1, 1000.0 + at)
    entries = journal.entries(kind="health-score")
    assert [e["detail"]["score"] for e in entries] == [0.5, 0.3, 1.0]
    assert entries[0]["reason"] == "GPU 2 health 0.50: clock events hw-slowdown -> 0.5"
    assert entries[0]["gpu"] == "GPU-2" and entries[0]["detail"]["index"] == 2


def test_the_report_and_its_timeline_show_the_gpu_scores(tmp_path: Path) -> None:
    journal = build_scenario(tmp_path)  # containers pinned to GPUs "0" and "1"
    book = ScoreJournal(journal)
    book.see({"GPU-1": gpu_score(1, 0.6)}, 0.1, T0 - 600)  # before the window: its level when it opens
    book.see({"GPU-1": gpu_score(1, 0.2)}, 0.1, T0 + H)
    book.see({"GPU-1": gpu_score(1, 1.0)}, 0.1, T0 + 2 * H)
    book.see({"GPU-5": gpu_score(5, 0.4)}, 0.1, T0 + 3 * H)  # no container of the report runs there
    window = Window(T0, T0 + 6 * H)
    entries, actions = journal.entries(since=T0 - 86400), journal.actions(since=T0)
    report = build(entries, actions, window)
    gpus = {r.name: r for r in report.gpus}
    assert (gpus["1"].health_low, gpus["1"].health_last) == (0.2, 1.0)
    assert (gpus["5"].health_low, gpus["5"].health_last) == (0.4, 0.4)
    assert gpus["0"].health_low is None
    assert "0.20/1.00" in render(report, "table")
    timeline = build_timeline(entries, actions, window)
    lane = timeline.lane("GPU-1", "gpu")
    assert lane is not None
    assert [m.kind for m in lane.marks] == ["health", "health"]
    assert "GPU 1 health 0.20" in lane.marks[0].label
    html = render_html(report, timeline)
    assert "GPU health score moved" in html and 'data-kind="health"' in html
