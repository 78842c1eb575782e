"""Serving-level liveness: the pure judging (progress, suspect) and the counter parsing, as tables."""

from __future__ import annotations

import pytest

from watchdog.config import Config, ConfigError
from watchdog.config.parse import parse_config
from watchdog.containers.diagnose import ProbeHistory, diagnose
from watchdog.containers.labels import parse_spec
from watchdog.model import ContainerSnapshot, ContainerSpec, ContainerState, FaultKind, ProbeResult, ProbeStatus
from watchdog.serving.counters import detect_kind, parse_counters
from watchdog.serving.progress import (
    CounterSample,
    ProgressBook,
    ProgressTrack,
    ServerKind,
    advance,
    reading_interval,
    wedged,
)
from watchdog.serving.suspect import overdue_after, suspect_reason

L = ServerKind.LLAMA_CPP
WINDOW = 30.0


def s(at: float, tokens: float, running: float = 0, waiting: float = 0) -> CounterSample:
    return CounterSample(at, L, tokens, running, waiting)


def fold(*samples: CounterSample) -> ProgressTrack:
    track = ProgressTrack()
    for sample in samples:
        track = advance(track, sample)
    return track


# (name, samples every 5 s, wedged at the last sample?)
PROGRESS_TABLE = [
    ("idle, counters frozen for minutes", [s(t, 100) for t in range(0, 120, 5)], False),
    ("busy (saturated, queue) with moving counters", [s(t, 100 + t, 4, 6) for t in range(0, 120, 5)], False),
    ("one long generation, slow but moving", [s(t, t // 10, 1) for t in range(0, 120, 5)], False),
    ("work running, counters frozen for the window", [s(t, 100, 1) for t in range(0, 35, 5)], True),
    ("work waiting only, frozen for the window", [s(t, 100, 0, 2) for t in range(0, 35, 5)], True),
    ("frozen with work, but shorter than the window", [s(t, 100, 1) for t in range(0, 30, 5)], False),
    (
        "busy, then idle in between: the stall restarts",
        [s(0, 5, 1), s(15, 5), *[s(t, 5, 1) for t in (20, 25, 45)]],
        False,
    ),
    ("moved 10 s ago, frozen since with work", [s(t, 100 + (t <= 20) * t, 1) for t in range(0, 50, 5)], False),
    ("moved long ago, frozen with work since", [s(t, 100 + min(t, 10), 1) for t in range(0, 50, 5)], True),
    (
        "counter reset (restart inside) then frozen short",
        [s(0, 500, 1), s(30, 500, 1), s(35, 3, 1), s(50, 3, 1)],
        False,
    ),
    ("counter reset, then frozen a full window", [s(0, 500, 1), s(5, 3, 1), s(20, 3, 1), s(40, 3, 1)], True),
]


@pytest.mark.parametrize(("name", "samples", "expected"), PROGRESS_TABLE, ids=[row[0] for row in PROGRESS_TABLE])
def test_progress_table(name: str, samples: list[CounterSample], expected: bool) -> None:
    track = fold(*samples)
    verdict = wedged(track, WINDOW, samples[-1].at, max_age=20)
    assert (verdict is not None) == expected, name
    if verdict is not None:
        assert verdict.evidence["tokens"] == samples[-1].tokens
        assert "no progress" in verdict.reason


def test_a_stale_sample_gives_no_verdict() -> None:
    track = fold(*[s(t, 100, 1) for t in range(0, 40, 5)])
    assert wedged(track, WINDOW, 35, max_age=20) is not None
    assert wedged(track, WINDOW, 100, max_age=20) is None  # /metrics stopped answering: the health probe judges


def test_a_repeated_or_older_sample_changes_nothing() -> None:
    track = fold(s(0, 1, 1), s(5, 2, 1))
    assert advance(track, s(5, 2, 1)) == track
    assert advance(track, s(3, 9, 1)) == track


def test_the_book_starts_a_fresh_track_for_a_new_life() -> None:
    book = ProgressBook()
    for t in range(0, 40, 5):
        book.observe({"c": s(t, 100, 1)}, {"c": 0.0})
    assert "c" in book.verdicts({"c": WINDOW}, 35, 20)
    book.observe({"c": s(40, 100, 1)}, {"c": 38.0})  # restarted: one sample is no evidence
    assert book.verdicts({"c": WINDOW}, 40, 20) == {}
    book.observe({}, {})  # gone
    assert book.track("c") == ProgressTrack()


LLAMA_TEXT = """# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total 3
# TYPE llamacpp:tokens_predicted_total counter
llamacpp:tokens_predicted_total 5
# TYPE llamacpp:n_decode_total counter
llamacpp:n_decode_total 7
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 1
# TYPE llamacpp:requests_deferred gauge
llamacpp:requests_deferred 2
"""
VLLM_TEXT = """# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 2.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 1.0
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="m"} 100.0
vllm:generation_tokens_created{engine="0",model_name="m"} 1.7e9
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{le="1.0",model_name="m"} 3.0
"""

COUNTER_TABLE = [
    ("llama.cpp: n_decode_total is the progress", LLAMA_TEXT, L, (7.0, 1.0, 2.0)),
    # tokens_predicted_total moves only when a request finishes: without n_decode_total, unmonitored
    ("llama.cpp without n_decode_total", LLAMA_TEXT.replace("llamacpp:n_decode_total 7\n", ""), L, None),
    ("vllm, labelled, with histograms", VLLM_TEXT, ServerKind.VLLM, (100.0, 2.0, 1.0)),
    ("llama.cpp names read as vllm", LLAMA_TEXT, ServerKind.VLLM, None),
    ("no token counter", "# TYPE llamacpp:requests_processing gauge\nllamacpp:requests_processing 1\n", L, None),
    ("empty", "", L, None),
    ("garbage", "llamacpp:tokens_predicted_total not-a-number\n", L, None),
    ("openai: nothing to read", LLAMA_TEXT, ServerKind.OPENAI, None),
]


@pytest.mark.parametrize(("name", "text", "kind", "expected"), COUNTER_TABLE, ids=[r[0] for r in COUNTER_TABLE])
def test_counter_table(name: str, text: str, kind: ServerKind, expected: tuple[float, float, float] | None) -> None:
    sample = parse_counters(text, kind, 1.0)
    assert (None if sample is None else (sample.tokens, sample.running, sample.waiting)) == expected


def test_the_kind_is_detected_from_the_metric_names() -> None:
    assert detect_kind(LLAMA_TEXT) == L
    assert detect_kind(VLLM_TEXT) == ServerKind.VLLM
    assert detect_kind("# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 1\n") is None


def ok(at: float, duration: float = 0.002) -> ProbeResult:
    return ProbeResult(at, ProbeStatus.OK, "HTTP 200", duration)


def failed(at: float) -> ProbeResult:
    return ProbeResult(at, ProbeStatus.FAILED, "timeout after 3 s", 3.0)


# (name, results, in flight since, now, suspect?)
SUSPECT_TABLE = [
    ("answers fast, nothing in flight", [ok(1), ok(2)], None, 3.0, False),
    ("last probe failed", [ok(1), failed(5)], None, 5.0, True),
    ("in flight 0.5 s, usually 2 ms: not yet (floor 1 s)", [ok(1), ok(2)], 3.0, 3.5, False),
    ("in flight 1.2 s, usually 2 ms: suspect", [ok(1), ok(2)], 3.0, 4.2, True),
    ("busy: usually 800 ms, in flight 2.5 s: within 5x", [ok(1, 0.8), ok(2, 0.5)], 3.0, 5.5, False),
    ("loading (503) is not a failure", [ProbeResult(1, ProbeStatus.LOADING, "HTTP 503", 0.01)], None, 2.0, False),
    ("recovered: failed, then ok", [failed(1), ok(2)], None, 3.0, False),
]


@pytest.mark.parametrize(
    ("name", "results", "since", "now", "expected"), SUSPECT_TABLE, ids=[r[0] for r in SUSPECT_TABLE]
)
def test_suspect_table(name: str, results: list[ProbeResult], since: float | None, now: float, expected: bool) -> None:
    assert (suspect_reason(results, since, now, floor=1.0, timeout=3.0) is not None) == expected


def test_overdue_is_bounded_by_the_floor_and_the_timeout() -> None:
    assert overdue_after([], 1.0, 3.0) == 1.0
    assert overdue_after([ok(1, 0.3)], 1.0, 3.0) == pytest.approx(1.5)
    assert overdue_after([ok(1, 2.0)], 1.0, 3.0) == 4.0  # a slow server is never suspect before its timeout


def running() -> ContainerSnapshot:
    return ContainerSnapshot(
        "c1", "llm-0", ContainerState.RUNNING, spec=ContainerSpec(), started_at=1.0, endpoint="http://x/health"
    )


def test_a_wedged_server_is_a_fault_even_while_health_answers() -> None:
    track = fold(*[s(t, 100, 1) for t in range(200, 240, 5)])
    verdict = wedged(track, WINDOW, 235, 20)
    assert verdict is not None
    history = ProbeHistory((ok(233), ok(234)), first_ok_at=10.0)
    diagnosis = diagnose([running()], {"c1": history}, {}, Config(), 235.0, wedged={"c1": verdict})
    (fault,) = diagnosis.faults
    assert fault.kind == FaultKind.WEDGED
    assert fault.evidence is not None and fault.evidence["running"] == 1
    assert diagnose([running()], {"c1": history}, {}, Config(), 235.0).faults == ()


LABEL_TABLE = [
    ({"server": "vLLM"}, "vllm", None),
    ({"server": "llama.cpp", "stall-window": "2m"}, "llama.cpp", None),
    ({"server": "tgi"}, None, "label gpu-watchdog.server='tgi': expected one of llama.cpp, vllm, openai"),
    ({"stall-window": "soon"}, None, "label gpu-watchdog.stall-window='soon'"),
]


@pytest.mark.parametrize(("labels", "server", "problem"), LABEL_TABLE)
def test_server_labels(labels: dict[str, str], server: str | None, problem: str | None) -> None:
    full = {"gpu-watchdog.enable": "true", **{f"gpu-watchdog.{k}": v for k, v in labels.items()}}
    spec, problems = parse_spec(full, "gpu-watchdog")
    if problem is None:
        assert spec is not None and spec.server == server and problems == ()
    else:
        assert spec is None and len(problems) == 1 and problems[0].startswith(problem)


def test_serving_config() -> None:
    config = parse_config({"serving": {"stall_window": "1m", "progress": False}, "probe_interval": "500ms"}, env={})
    assert config.serving.stall_window == 60 and not config.serving.progress and config.probe_interval == 0.5
    with pytest.raises(ConfigError, match=r"serving\.stall_windw"):
        parse_config({"serving": {"stall_windw": 30}}, env={})


def test_busy_servers_are_read_often_idle_ones_seldom() -> None:
    idle = CounterSample(1.0, ServerKind.LLAMA_CPP, tokens=5, running=0, waiting=0)
    queued = CounterSample(2.0, ServerKind.LLAMA_CPP, tokens=5, running=0, waiting=2)
    assert reading_interval(ProgressTrack(), 10.0, 2.0) == 10.0  # never read yet: nothing known
    assert reading_interval(advance(ProgressTrack(), idle), 10.0, 2.0) == 10.0
    assert reading_interval(advance(advance(ProgressTrack(), idle), queued), 10.0, 2.0) == 2.0
