"""`pip install .` into a clean venv gives a working `gpu-watchdog` command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_pip_install_into_a_clean_venv_gives_a_working_command(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", str(ROOT)], capture_output=True, text=True, timeout=600
    )
    assert install.returncode == 0, install.stderr[-2000:]
    version = subprocess.run([str(venv / "bin" / "gpu-watchdog"), "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and "gpu-watchdog, version" in version.stdout
    as_module = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "watchdog", "--help"], capture_output=True, text=True
    )
    assert as_module.returncode == 0 and "--daemon" in as_module.stdout
    bad = subprocess.run(
        [str(venv / "bin" / "gpu-watchdog"), "--config", str(tmp_path / "missing.yaml"), "status"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "cannot read" in bad.stderr
