"""Lines an operator reads in more than one place, worded once. Pure.

"The engine does not answer" is said by the CLI's commands, the daemon while it waits for the
engine, `reset` and `doctor`: one wording, so the line an operator greps for is the same
wherever it comes from.
"""

from __future__ import annotations

ENGINE_FIX = "start it or set DOCKER_HOST"


def first_line(exc: BaseException) -> str:
    """An exception as a short phrase for a log line: its first line (at most 200 characters), else its type."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


def engine_unreachable(why: BaseException | str, then: str = ENGINE_FIX) -> str:
    """'Docker engine unreachable (why); then': after the semicolon what happens next, by default the fix."""
    reason = why if isinstance(why, str) else first_line(why)
    return f"Docker engine unreachable ({reason}); {then}"
