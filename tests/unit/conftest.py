"""Fixtures shared by the unit tests."""

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.fake_nvml.harness import fake_nvml, fake_nvml_lib
from watchdog.config import Config
from watchdog.containers.own_actions import OwnActionWindows
from watchdog.gpu.supervisor import GpuSupervisor
from watchdog.journal import Journal
from watchdog.subsystem import Services

__all__ = ["fake_nvml", "fake_nvml_lib"]


@pytest.fixture
def supervisor(tmp_path: Path) -> Any:
    """A GPU supervisor on a real journal; the test steers its NVML readings (`sup.monitor.reading`)."""
    journal = Journal.in_dir(tmp_path)
    config = replace(Config(), gpu=replace(Config().gpu, pid_mapping=False, kernel_log=None))
    executor = ThreadPoolExecutor(1)
    services = Services(journal, None, executor, OwnActionWindows(), time.time, lambda: None)  # type: ignore[arg-type]
    sup = GpuSupervisor(config, services)
    from tests.unit.test_gpu_supervisor import Readings, reading  # the fake reader those tests steer

    sup.monitor = Readings(reading())  # type: ignore[assignment]
    yield sup
    executor.shutdown()
    journal.close()
