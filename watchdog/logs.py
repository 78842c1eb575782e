"""Logging set-up: loguru to stderr, text for people or JSON lines for collectors.

Every line carries the context bound at the call site (container, gpu, fault,
action_id), so an operator can grep one container's story.
"""

from __future__ import annotations

import sys
from typing import Any

from loguru import logger


def _text_format(record: Any) -> str:
    extra = " ".join(f"{k}={v}" for k, v in record["extra"].items() if v not in (None, ""))
    tail = f" <dim>[{extra}]</dim>" if extra else ""
    return (
        "<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> <level>{level: <8}</level> {message}"
        + tail.replace("{", "{{").replace("}", "}}")
        + "\n{exception}"
    )


def configure(level: str = "INFO", fmt: str = "text") -> None:
    logger.remove()
    if fmt == "json":
        logger.add(sys.stderr, level=level, serialize=True, backtrace=False, diagnose=False)
    else:
        logger.add(
            sys.stderr, level=level, format=_text_format, colorize=sys.stderr.isatty(), backtrace=False, diagnose=False
        )
