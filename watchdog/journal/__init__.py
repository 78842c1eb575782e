"""The journal: every detection, decision, action and outcome, in one SQLite file.

WAL mode, one short transaction per write, so a `kill -9` mid-action leaves a
consistent file; an action row without `finished_at` is an action that was in
flight and is reconciled at the next start. Reports, restart counts and the
breaker are read from here, never from the daemon's memory alone.

A write that fails (disk full, read-only) never stops the loop: it is logged
loudly and counted in `write_failures`.

Three rooms, one class: `store` (the file, its transactions and observers), `state` (breakers,
deliberate stops, GPU marks, meta), `history` (entries and actions); `Journal` is all three.
"""

from watchdog.journal.history import ActionRow, Journal
from watchdog.journal.state import JournalState
from watchdog.journal.store import JOURNAL_FILE, SCHEMA, JournalFile, Observer

__all__ = ["JOURNAL_FILE", "SCHEMA", "ActionRow", "Journal", "JournalFile", "JournalState", "Observer"]

# The modules here that do no I/O and read no clock (checked by tests/unit/test_purity.py).
PURE_MODULES: tuple[str, ...] = ()
