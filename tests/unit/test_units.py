"""watchdog.units: the value parsers behind every label and config key."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from watchdog.units import format_bytes, parse_bool, parse_bytes, parse_duration

GIB = 1024**3
MIB = 1024**2


@pytest.mark.parametrize("text", ["true", "TRUE", "True", "yes", "YES", "1", "on", "On", " true ", "\tyes\n"])
def test_parse_bool_accepts_true_spellings_case_insensitively(text: str) -> None:
    assert parse_bool(text) is True


@pytest.mark.parametrize("text", ["false", "FALSE", "False", "no", "NO", "0", "off", "OFF", " off "])
def test_parse_bool_accepts_false_spellings_case_insensitively(text: str) -> None:
    assert parse_bool(text) is False


@pytest.mark.parametrize("text", ["maybe", "", " ", "2", "enable", "y", "n", "t", "truee", "yes please"])
def test_parse_bool_rejects_garbage_with_a_message_listing_the_accepted_values(text: str) -> None:
    with pytest.raises(ValueError, match="true/yes/1/on or false/no/0/off"):
        parse_bool(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4g", 4 * GIB),
        ("4G", 4 * GIB),
        ("4gb", 4 * GIB),
        ("4GiB", 4 * GIB),
        ("4 GiB", 4 * GIB),
        ("1536m", 1536 * MIB),
        ("1536MiB", 1536 * MIB),
        ("512k", 512 * 1024),
        ("512KB", 512 * 1024),
        ("2t", 2 * 1024**4),
        ("1.5g", int(1.5 * GIB)),
        ("512", 512),
        ("512b", 512),
        ("0", 0),
        (" 8g ", 8 * GIB),
        (2048, 2048),
        (0, 0),
        (1.9, 1),
    ],
)
def test_parse_bytes_reads_docker_style_sizes(text: str | int | float, expected: int) -> None:
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["huge", "4x", "4 gigs", "-1g", "", "g", "1.2.3g", True, False, -1, -0.5])
def test_parse_bytes_rejects_bad_sizes_with_value_error(text: str | int | float) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_bytes(text)


@given(st.integers(min_value=0, max_value=2**30))  # 1 PiB is the largest size accepted
def test_parse_bytes_of_n_mebibytes_is_n_times_1024_squared(n: int) -> None:
    assert parse_bytes(f"{n}m") == n * 1024**2


@pytest.mark.parametrize("text", ["1" + "0" * 400, math.inf], ids=["400-digit-string", "inf"])
def test_parse_bytes_rejects_sizes_beyond_float_range_with_value_error(text: str | float) -> None:
    with pytest.raises(ValueError):
        parse_bytes(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("120", 120.0),
        ("120s", 120.0),
        ("2m", 120.0),
        ("500ms", 0.5),
        ("1h", 3600.0),
        ("7d", 604800.0),
        ("1.5s", 1.5),
        (" 2m ", 120.0),
        ("0", 0.0),
        (90, 90.0),
        (1.5, 1.5),
        (0, 0.0),
    ],
)
def test_parse_duration_reads_seconds_and_units(text: str | int | float, expected: float) -> None:
    assert parse_duration(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["soon", "2w", "-1", "-1s", "", "m", "2 minutes", "1h30m", True, -5, -0.1])
def test_parse_duration_rejects_bad_values_with_value_error(text: str | int | float) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("value", [math.nan, 10**400], ids=["nan", "10**400"])
def test_parse_duration_rejects_nan_and_out_of_range_numbers_with_value_error(value: float | int) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (1536 * MIB, "1.5 GiB"),
        (4 * GIB, "4.0 GiB"),
        (5 * 1024**4, "5.0 TiB"),
        (1024**5, "1024.0 TiB"),
    ],
)
def test_format_bytes_uses_binary_units(size: int, expected: str) -> None:
    assert format_bytes(size) == expected
