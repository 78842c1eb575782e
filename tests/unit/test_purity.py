"""The pure core does no I/O: importing it pulls in no client, socket or database module."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PURE = [
    "watchdog.containers.diagnose",
    "watchdog.containers.plan",
    "watchdog.containers.breaker",
    "watchdog.containers.labels",
    "watchdog.units",
    "watchdog.config",
    "watchdog.gpu.assignment",
    "watchdog.gpu.vram",
    "watchdog.gpu.marks",
    "watchdog.gpu.xid",
    "watchdog.router.capacity",
    "watchdog.router.litellm_config",
    "watchdog.reports.restart_rates",
    "watchdog.reports.timeline",
    "watchdog.reports.html",
    "watchdog.ops.notices",
    "watchdog.ops.messages",
]
FORBIDDEN = ["docker", "httpx", "sqlite3", "_sqlite3", "socket", "_socket", "requests", "urllib3", "ssl"]


def modules_after_import(module: str) -> set[str]:
    code = f"import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True, timeout=60)
    return set(json.loads(out.stdout))


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports_no_io_library(module: str) -> None:
    loaded = modules_after_import(module)
    assert module in loaded
    assert sorted(loaded & set(FORBIDDEN)) == []
    assert not any(name.startswith(("docker.", "httpx.", "requests.")) for name in loaded)


def test_the_check_itself_sees_io_libraries_when_they_are_imported() -> None:
    assert {"docker", "sqlite3"} <= modules_after_import("watchdog.journal") | modules_after_import(
        "watchdog.containers.engine"
    )
