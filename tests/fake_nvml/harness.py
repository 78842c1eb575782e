"""Build the fake NVML library and run Python against it in a fresh subprocess.

pynvml loads the driver with ``CDLL("libnvidia-ml.so.1")``; the dynamic loader
searches ``LD_LIBRARY_PATH`` first, and reads it only when a process starts. So
each snippet runs in a new interpreter whose environment names the fake's build
directory and the scenario file (``FAKE_NVML_SCENARIO``). Nothing in pynvml is
patched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
BUILD_SCRIPT = HERE / "build.sh"
BUILD_DIR = HERE / "build"
LIBRARY = BUILD_DIR / "libnvidia-ml.so.1"
SCENARIOS = HERE / "scenarios"


def build() -> Path:
    """Build the library (a no-op when it is up to date) and return its directory."""
    done = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"building the fake NVML library failed:\n{done.stdout}{done.stderr}")
    return BUILD_DIR


def scenario(name: str) -> Path:
    """The path of a shipped scenario file, e.g. scenario("p106x8")."""
    path = SCENARIOS / f"{name}.txt"
    if not path.is_file():
        raise FileNotFoundError(path)
    return path


def environment(scenario_path: Path | str, base: dict[str, str] | None = None) -> dict[str, str]:
    """An environment in which a new process's pynvml loads the fake and reads scenario_path."""
    env = dict(os.environ if base is None else base)
    previous = env.get("LD_LIBRARY_PATH")
    env["LD_LIBRARY_PATH"] = str(BUILD_DIR) + (os.pathsep + previous if previous else "")
    env["FAKE_NVML_SCENARIO"] = str(scenario_path)
    return env


@dataclass
class FakeNvml:
    """Runs Python snippets under the fake driver; ``scenario_file`` is a private, editable copy."""

    scenario_file: Path

    def use(self, name_or_text: str) -> Path:
        """Replace the scenario with a shipped one (by name) or with literal text (if it has a newline)."""
        text = name_or_text if "\n" in name_or_text else scenario(name_or_text).read_text()
        self.write(text)
        return self.scenario_file

    def write(self, text: str) -> None:
        """Rewrite the scenario atomically, so a running process never reads half a file."""
        tmp = self.scenario_file.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.scenario_file)

    def env(self) -> dict[str, str]:
        return environment(self.scenario_file)

    def run(self, code: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run a Python snippet (dedented) in a fresh interpreter under the fake; raises on timeout."""
        return subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def popen(self, code: str) -> subprocess.Popen[str]:
        """Start a Python snippet under the fake and leave it running (stdout is a pipe)."""
        return subprocess.Popen(
            [sys.executable, "-u", "-c", textwrap.dedent(code)],
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


@pytest.fixture(scope="session")
def fake_nvml_lib() -> Path:
    """Build the fake library once per session; fails (never skips) naming the fix."""
    if shutil.which(os.environ.get("CC", "gcc")) is None:
        pytest.fail("gcc is needed to build the fake NVML library (apt-get install gcc)", pytrace=False)
    try:
        return build()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def fake_nvml(fake_nvml_lib: Path, tmp_path: Path) -> Iterator[FakeNvml]:
    """A FakeNvml on a private copy of the p106x8 scenario (call ``.use(...)`` to switch)."""
    fake = FakeNvml(tmp_path / "scenario.txt")
    fake.use("p106x8")
    yield fake
