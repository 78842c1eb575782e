"""Fixtures shared by the unit tests."""

from tests.fake_nvml.harness import fake_nvml, fake_nvml_lib

__all__ = ["fake_nvml", "fake_nvml_lib"]
