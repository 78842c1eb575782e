"""What an operator may change by hand, from the CLI or the daemon's HTTP endpoint: one implementation.

Both write the journal through their own connection; the daemon's loop sees another connection's
write (SQLite's data_version) and reloads breakers, stop marks and GPU marks at its next cycle.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from watchdog.entries import EntryKind
from watchdog.journal import Journal


class NotFound(LookupError):
    """The container or GPU named is not one the watchdog knows; the message lists those it does."""


def reset_container(journal: Journal, name: str, managed: Sequence[str] | None, via: str, now: float) -> str:
    """Re-arm NAME's breaker and clear its deliberate-stop mark. `managed`: None when the engine is unreachable."""
    if managed is not None and name not in managed:
        raise NotFound(f"no managed container named {name!r}; managed: {', '.join(sorted(managed)) or 'none'}")
    journal.reset_breaker(name, ts=now)
    cleared = journal.clear_stops_named(name)
    journal.record(
        EntryKind.RESET,
        f"breaker re-armed by {via}{'; deliberate-stop mark cleared' if cleared else ''}",
        ts=now,
        container=name,
    )
    return f"{name}: breaker re-armed{', deliberate-stop mark cleared' if cleared else ''}; the watchdog heals it again"


def release_gpu(journal: Journal, uuid: str, via: str, now: float) -> str:
    """Put a quarantined or drained GPU back in service."""
    marks = journal.gpu_marks()
    match = [u for u in marks if u.lower() == uuid.strip().lower()]
    if not match:
        known = ", ".join(f"{u} ({m.condition.value})" for u, m in marks.items()) or "none"
        raise NotFound(f"GPU {uuid!r} is not quarantined or drained; marked GPUs: {known}")
    mark = marks[match[0]]
    journal.release_gpu(match[0])
    journal.record(
        EntryKind.GPU_RELEASED,
        f"released by {via} (was {mark.condition.value}: {mark.reason})",
        ts=now,
        gpus=(match[0],),
    )
    return f"{match[0]}: released (was {mark.condition.value}); its containers are healed again"


def drain_target(
    journal: Journal,
    target: str,
    known: Mapping[str, Sequence[str]] | None,
    via: str,
    now: float,
    *,
    end: bool = False,
) -> str:
    """Ask the daemon to drain a container (by name) or every container on a GPU (UUID or index), or end that.

    `known`: managed container name -> its GPUs; None when the engine is unreachable (not checked).
    """
    target = target.strip()
    if known is not None and target not in known and not any(target in gpus for gpus in known.values()):
        names = ", ".join(sorted(known)) or "none"
        raise NotFound(f"no managed container or GPU named {target!r}; managed: {names}")
    is_gpu = known is not None and target not in known
    container, gpus = (None, (target,)) if is_gpu else (target, ())
    if end:
        journal.record(EntryKind.DRAIN_ENDED, f"drain ended by {via}", ts=now, container=container, gpus=gpus)
        return f"{target}: drain ended; back in rotation at the daemon's next cycle"
    journal.record(EntryKind.DRAIN_REQUESTED, f"drain asked by {via}", ts=now, container=container, gpus=gpus)
    return (
        f"{target}: out of rotation at the daemon's next cycle, drained once its in-flight requests finish "
        "(`gpu-watchdog status` shows it); `gpu-watchdog drain --end " + target + "` puts it back"
    )
