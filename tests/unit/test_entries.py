"""Journal entry kinds: one enum, used by every writer, covering every kind the loop derives."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from watchdog.containers.diagnose import Recovery
from watchdog.entries import GPU_MARK_KINDS, VERDICT_KINDS, EntryKind, gpu_mark, restart_outcome, verdict
from watchdog.gpu.marks import GpuCondition
from watchdog.model import Verdict

PACKAGE = Path(__file__).resolve().parents[2] / "watchdog"


def test_values_are_the_strings_old_journals_hold() -> None:
    assert EntryKind.DETECTED == "detected" and EntryKind("give-up") is EntryKind.GIVE_UP
    assert restart_outcome("timed-out") is EntryKind.RESTART_TIMED_OUT
    assert len({k.value for k in EntryKind}) == len(EntryKind)


@pytest.mark.parametrize("state", [s for s in Recovery if s != Recovery.PENDING])
def test_every_settled_restart_has_an_entry_kind(state: Recovery) -> None:
    assert restart_outcome(state.value).value == f"restart-{state.value}"


@pytest.mark.parametrize("condition", list(GpuCondition))
def test_every_gpu_mark_has_an_entry_kind(condition: GpuCondition) -> None:
    assert gpu_mark(condition.value) in GPU_MARK_KINDS


@pytest.mark.parametrize("decision", [v for v in Verdict if v != Verdict.RESTART])
def test_every_verdict_but_restart_is_journaled_as_itself(decision: Verdict) -> None:
    assert verdict(decision.value) in VERDICT_KINDS


def test_a_restart_verdict_is_not_an_entry() -> None:
    with pytest.raises(ValueError, match="restart"):
        verdict(Verdict.RESTART.value)


def record_calls() -> list[tuple[str, ast.Call]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "record":
                found.append((f"{path.relative_to(PACKAGE)}:{node.lineno}", node))
    return found


def test_no_writer_spells_a_kind_as_a_string() -> None:
    calls = record_calls()
    assert len(calls) >= 30  # the scan sees the writers
    for where, call in calls:
        first = call.args[0] if call.args else None
        assert not isinstance(first, ast.Constant | ast.JoinedStr), f"{where}: use EntryKind, not a string"
